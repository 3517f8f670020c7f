//! The popularity fallback: per tenant, the most trending items with their records, held in
//! memory and refreshed while the store is healthy, so that a feed can still be served (marked
//! degraded) while it is not.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{CandidateQuery, FeatureStore, StoreError};
use crate::domain::{ItemId, ItemRecord};

pub type FallbackItems = Arc<Vec<(ItemId, Arc<ItemRecord>)>>;

#[derive(Default)]
pub struct PopularityFallback {
    tenants: RwLock<HashMap<String, FallbackItems>>,
}

impl PopularityFallback {
    /// Re-reads the `n` most trending items of `tenant` from `store`.
    pub async fn refresh(
        &self,
        store: &dyn FeatureStore,
        tenant: &str,
        n: usize,
    ) -> Result<usize, StoreError> {
        let query = CandidateQuery {
            trending: n,
            ..Default::default()
        };
        let ids = store.candidate_lists(tenant, &query).await?.trending;
        let records = store.items(tenant, &ids).await?;
        let items: Vec<_> = ids
            .into_iter()
            .zip(records)
            .filter_map(|(id, r)| Some((id, r?)))
            .collect();
        let count = items.len();
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_owned(), Arc::new(items));
        Ok(count)
    }

    /// The last snapshot of `tenant` (empty before the first refresh).
    pub fn items(&self, tenant: &str) -> FallbackItems {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }
}
