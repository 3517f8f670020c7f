//! The synthetic marketplace: demo data for the embedded store, and the simulator that
//! produces the model's training data.

pub mod marketplace;

use std::time::Instant;

use crate::config::DemoSettings;
use crate::domain::UnixSeconds;
use crate::store::{FeatureStore, StoreError};
use crate::telemetry::events::DemoSeeded;
use crate::telemetry::{InternalEvent, Metrics};

pub use marketplace::Marketplace;

pub use crate::domain::unix_now;

/// Writes a tenant's demo catalog and its browsing history into `store`.
pub async fn seed_tenant(
    store: &dyn FeatureStore,
    demo: &DemoSettings,
    tenant: &str,
    anchor: UnixSeconds,
    metrics: &Metrics,
) -> Result<Marketplace, StoreError> {
    let started = Instant::now();
    let market = Marketplace::generate(demo, tenant, anchor);
    store.upsert_items(tenant, market.items.clone()).await?;
    let history = market.history(demo.history_sessions_per_user, anchor);
    for chunk in history.chunks(10_000) {
        store.apply_events(tenant, chunk).await?;
    }
    DemoSeeded {
        tenant,
        items: market.items.len(),
        users: market.users.len(),
        events: history.len(),
        duration: started.elapsed(),
    }
    .emit(metrics);
    Ok(market)
}
