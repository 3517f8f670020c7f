//! The local item-feature cache in front of a networked store: bounded, with a TTL. Items are
//! shared by every user of a tenant, so most of a request's item reads are hits; user profiles
//! are per request and always read through. Writes made through this process invalidate the
//! items they touch at once; writes by other replicas show after at most the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use super::{ApplyOutcome, CandidateLists, CandidateQuery, FeatureStore, SharedStore, StoreError};
use crate::catalog::{Event, Item, ItemId, ItemRecord, UserProfile};
use crate::config::CacheSettings;
use crate::telemetry::Metrics;

pub struct CachedStore {
    inner: SharedStore,
    /// One cache per tenant, so a lookup needs no key allocation.
    items: HashMap<String, Cache<ItemId, Arc<ItemRecord>>>,
    metrics: Arc<Metrics>,
}

impl CachedStore {
    pub fn new<'a>(
        inner: SharedStore,
        tenants: impl IntoIterator<Item = &'a String>,
        settings: &CacheSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let items = tenants
            .into_iter()
            .map(|t| {
                let cache = Cache::builder()
                    .max_capacity(settings.item_capacity)
                    .time_to_live(Duration::from_millis(settings.item_ttl_ms))
                    .build();
                (t.clone(), cache)
            })
            .collect();
        Self {
            inner,
            items,
            metrics,
        }
    }

    fn cache(&self, tenant: &str) -> Result<&Cache<ItemId, Arc<ItemRecord>>, StoreError> {
        self.items
            .get(tenant)
            .ok_or_else(|| StoreError::UnknownTenant(tenant.to_owned()))
    }

    fn count(&self, result: &str, n: usize) {
        if n > 0 {
            self.metrics
                .feature_cache_requests_total
                .with_label_values(&["item", result])
                .inc_by(n as u64);
        }
    }
}

#[async_trait]
impl FeatureStore for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn user_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Arc<UserProfile>>, StoreError> {
        self.inner.user_profile(tenant, user_id).await
    }

    async fn candidate_lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists, StoreError> {
        self.inner.candidate_lists(tenant, query).await
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        let cache = self.cache(tenant)?;
        let mut out: Vec<Option<Arc<ItemRecord>>> = ids.iter().map(|id| cache.get(id)).collect();
        let missing: Vec<usize> = (0..ids.len()).filter(|i| out[*i].is_none()).collect();
        self.count("hit", ids.len() - missing.len());
        self.count("miss", missing.len());
        // Declared by the caller's `features.fetch` span, when there is one.
        let span = tracing::Span::current();
        span.record("cache.hits", ids.len() - missing.len());
        span.record("cache.misses", missing.len());
        if missing.is_empty() {
            return Ok(out);
        }
        let missing_ids: Vec<ItemId> = missing.iter().map(|i| ids[*i].clone()).collect();
        let fetched = self.inner.items(tenant, &missing_ids).await?;
        for (i, record) in missing.into_iter().zip(fetched) {
            if let Some(r) = &record {
                cache.insert(ids[i].clone(), r.clone());
            }
            out[i] = record;
        }
        Ok(out)
    }

    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError> {
        let ids: Vec<ItemId> = items.iter().map(|i| i.item_id.clone()).collect();
        let result = self.inner.upsert_items(tenant, items).await;
        // Invalidate even on error: a timed-out write may still have landed.
        let cache = self.cache(tenant)?;
        for id in ids {
            cache.invalidate(&id);
        }
        result
    }

    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError> {
        let result = self.inner.apply_events(tenant, events).await;
        let cache = self.cache(tenant)?;
        for e in events {
            cache.invalidate(&e.item_id);
        }
        result
    }
}
