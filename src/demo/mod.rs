//! The synthetic marketplace: demo data for the embedded store, and the simulator that
//! produces the model's training data.

pub mod marketplace;

use std::sync::Arc;
use std::time::Instant;

use crate::config::DemoSettings;
use crate::domain::{Event, UnixSeconds};
use crate::store::{FeatureStore, StoreError};
use crate::telemetry::events::DemoSeeded;
use crate::telemetry::{InternalEvent, Metrics};

pub use marketplace::Marketplace;

pub use crate::domain::unix_now;

/// Events per store write while seeding.
const CHUNK: usize = 10_000;

/// Writes a tenant's demo catalog and its browsing history into `store`.
pub async fn seed_tenant(
    store: &dyn FeatureStore,
    demo: &DemoSettings,
    tenant: &str,
    anchor: UnixSeconds,
    metrics: &Metrics,
) -> Result<Arc<Marketplace>, StoreError> {
    let started = Instant::now();
    let market = Arc::new(Marketplace::generate(demo, tenant, anchor));
    store.upsert_items(tenant, market.items.clone()).await?;
    // The history is generated on a thread of its own while the store applies it (half the
    // time each), a few users at a time: the whole of it (16 M events for 100 000 users)
    // would take gigabytes, which the allocator keeps once it held them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Event>>(4);
    let generator = {
        let (market, sessions) = (market.clone(), demo.history_sessions_per_user);
        std::thread::spawn(move || {
            // Room for the last user's events past the chunk's size.
            let fresh = || Vec::with_capacity(CHUNK * 11 / 10);
            let mut chunk = fresh();
            for user in market.history_by_user(sessions, anchor) {
                chunk.extend(user);
                if chunk.len() >= CHUNK {
                    let full = std::mem::replace(&mut chunk, fresh());
                    if tx.blocking_send(full).is_err() {
                        return; // the store failed: nobody is listening
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.blocking_send(chunk);
            }
        })
    };
    let mut events = 0;
    while let Some(chunk) = rx.recv().await {
        store.apply_events(tenant, &chunk).await?;
        events += chunk.len();
    }
    // Finished: the channel closed. A panic in it is a bug in the generator; re-raise it.
    if let Err(panic) = generator.join() {
        std::panic::resume_unwind(panic);
    }
    DemoSeeded {
        tenant,
        items: market.items.len(),
        users: market.users.len(),
        events,
        duration: started.elapsed(),
    }
    .emit(metrics);
    Ok(market)
}
