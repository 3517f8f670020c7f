//! The local item-feature cache in front of a networked store: bounded, with a TTL. Items are
//! shared by every user of a tenant, so most of a request's item reads are hits; user profiles
//! are per request and always read through. Writes made through this process invalidate the
//! items they touch at once; writes by other replicas show after at most the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ApplyOutcome, CandidateLists, CandidateQuery, FeatureStore, SharedStore, StoreError};
use crate::catalog::{Event, Item, ItemId, ItemRecord, UserProfile};
use crate::config::CacheSettings;
use crate::telemetry::Metrics;

/// Items with the time they were fetched. `quick_cache` rather than `moka` (used elsewhere):
/// a feed looks up ~500 items, and moka's per-read bookkeeping was 13 % of a feed's CPU on
/// the Redis backend. quick_cache has no TTL, so a read checks the age itself.
type ItemCache = quick_cache::sync::Cache<ItemId, (Instant, Arc<ItemRecord>)>;

pub struct CachedStore {
    inner: SharedStore,
    /// One cache per tenant, so a lookup needs no key allocation.
    items: HashMap<String, ItemCache>,
    ttl: Duration,
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
                let capacity = usize::try_from(settings.item_capacity).unwrap_or(usize::MAX);
                (t.clone(), ItemCache::new(capacity.max(1)))
            })
            .collect();
        Self {
            inner,
            items,
            ttl: Duration::from_millis(settings.item_ttl_ms),
            metrics,
        }
    }

    fn cache(&self, tenant: &str) -> Result<&ItemCache, StoreError> {
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
        let now = Instant::now();
        let mut out: Vec<Option<Arc<ItemRecord>>> = ids
            .iter()
            .map(|id| {
                cache
                    .get(id)
                    .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
                    .map(|(_, record)| record)
            })
            .collect();
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
                cache.insert(ids[i].clone(), (now, r.clone()));
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
            cache.remove(&id);
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
            cache.remove(&e.item_id);
        }
        result
    }
}
