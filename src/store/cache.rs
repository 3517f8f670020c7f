//! The local item-feature cache in front of a networked store: bounded, with a TTL. Items are
//! shared by every user of a tenant, so most of a request's item reads are hits; user profiles
//! are per request and always read through. Writes made through this process invalidate the
//! items they touch at once; writes by other replicas show after at most the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    ApplyOutcome, CandidateLists, CandidateQuery, FeatureStore, SharedStore, StoreError,
    TenantUsage,
};
use crate::config::CacheSettings;
use crate::domain::{Event, Item, ItemId, ItemPatch, ItemRecord, UserProfile};
use crate::telemetry::events::CacheLookedUp;
use crate::telemetry::{InternalEvent, Metrics};

/// Items with the time they were fetched. `quick_cache` rather than `moka` (used elsewhere):
/// a feed looks up ~500 items, and moka's per-read bookkeeping was 13 % of a feed's CPU on
/// the Redis backend. quick_cache has no TTL, so a read checks the age itself.
type ItemCache = quick_cache::sync::Cache<ItemId, (Instant, Arc<ItemRecord>)>;

/// A candidate list (trending, a category's best, new arrivals) of a given length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ListKey {
    Trending(usize),
    Category(String, usize),
    NewArrivals(usize),
}

/// Candidate lists are per tenant, not per user: every feed of a second asks for the same
/// few, so they are kept briefly rather than read (and parsed) from Redis per request.
type ListCache = quick_cache::sync::Cache<ListKey, (Instant, Arc<Vec<ItemId>>)>;

/// Distinct lists a tenant keeps: trending, new arrivals and a few lengths of each category.
const LIST_CAPACITY: usize = 4_096;

/// The value under `key` unless older than `ttl` (quick_cache has no TTL of its own).
fn fresh<K, V>(
    cache: &quick_cache::sync::Cache<K, (Instant, V)>,
    key: &K,
    now: Instant,
    ttl: Duration,
) -> Option<V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    cache
        .get(key)
        .filter(|(at, _)| now.saturating_duration_since(*at) < ttl)
        .map(|(_, v)| v)
}

/// One tenant's caches: per tenant, so a lookup needs no key allocation.
struct TenantCache {
    items: ItemCache,
    lists: ListCache,
}

impl TenantCache {
    /// After a write through this process: the items it touched, and every list (an event
    /// moves trending and popularity, a catalog write categories and new arrivals).
    fn forget<'a>(&self, items: impl IntoIterator<Item = &'a ItemId>) {
        self.lists.clear();
        for id in items {
            self.items.remove(id);
        }
    }
}

pub struct CachedStore {
    inner: SharedStore,
    tenants: HashMap<String, TenantCache>,
    ttl: Duration,
    list_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl CachedStore {
    pub fn new<'a>(
        inner: SharedStore,
        tenants: impl IntoIterator<Item = &'a String>,
        settings: &CacheSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let capacity = usize::try_from(settings.item_capacity).unwrap_or(usize::MAX);
        let tenants = tenants
            .into_iter()
            .map(|t| {
                let cache = TenantCache {
                    items: ItemCache::new(capacity.max(1)),
                    lists: ListCache::new(LIST_CAPACITY),
                };
                (t.clone(), cache)
            })
            .collect();
        Self {
            inner,
            tenants,
            ttl: settings.item_ttl,
            list_ttl: settings.list_ttl,
            metrics,
        }
    }

    fn cache(&self, tenant: &str) -> Result<&TenantCache, StoreError> {
        self.tenants
            .get(tenant)
            .ok_or_else(|| StoreError::UnknownTenant(tenant.to_owned()))
    }

    fn count(&self, cache: &'static str, result: &'static str, count: usize) {
        CacheLookedUp {
            cache,
            result,
            count,
        }
        .emit(&self.metrics);
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
        let lists = self.tenants.get(tenant).map(|t| &t.lists);
        let Some(cache) = lists.filter(|_| !self.list_ttl.is_zero()) else {
            return self.inner.candidate_lists(tenant, query).await;
        };
        let now = Instant::now();
        let keys: Vec<ListKey> = std::iter::once(ListKey::Trending(query.trending))
            .chain(
                query
                    .categories
                    .iter()
                    .map(|(c, n)| ListKey::Category(c.clone(), *n)),
            )
            .chain(std::iter::once(ListKey::NewArrivals(query.new_arrivals)))
            .collect();
        let mut found: Vec<Option<Arc<Vec<ItemId>>>> = keys
            .iter()
            .map(|k| fresh(cache, k, now, self.list_ttl))
            .collect();
        let misses = found.iter().filter(|l| l.is_none()).count();
        self.count("list", "hit", found.len() - misses);
        self.count("list", "miss", misses);
        if misses > 0 {
            // One round trip for whatever is missing; a list found is asked with length 0.
            let missing = |i: usize| found[i].is_none();
            let last = keys.len() - 1;
            let ask = CandidateQuery {
                trending: if missing(0) { query.trending } else { 0 },
                categories: query
                    .categories
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| missing(i + 1))
                    .map(|(_, c)| c.clone())
                    .collect(),
                new_arrivals: if missing(last) { query.new_arrivals } else { 0 },
            };
            let mut answer = self.inner.candidate_lists(tenant, &ask).await?;
            let mut categories = std::mem::take(&mut answer.categories).into_iter();
            for (i, key) in keys.iter().enumerate() {
                if found[i].is_some() {
                    continue;
                }
                let list = match key {
                    ListKey::Trending(_) => std::mem::take(&mut answer.trending),
                    ListKey::Category(..) => categories.next().unwrap_or_default(),
                    ListKey::NewArrivals(_) => std::mem::take(&mut answer.new_arrivals),
                };
                let list = Arc::new(list);
                cache.insert(key.clone(), (now, list.clone()));
                found[i] = Some(list);
            }
        }
        let mut lists = found
            .into_iter()
            .map(|l| l.map(|l| (*l).clone()).unwrap_or_default());
        let trending = lists.next().unwrap_or_default();
        let mut rest: Vec<Vec<ItemId>> = lists.collect();
        let new_arrivals = rest.pop().unwrap_or_default();
        Ok(CandidateLists {
            trending,
            categories: rest,
            new_arrivals,
        })
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        let cache = &self.cache(tenant)?.items;
        let now = Instant::now();
        let mut out: Vec<Option<Arc<ItemRecord>>> = ids
            .iter()
            .map(|id| fresh(cache, id, now, self.ttl))
            .collect();
        let missing: Vec<usize> = (0..ids.len()).filter(|i| out[*i].is_none()).collect();
        self.count("item", "hit", ids.len() - missing.len());
        self.count("item", "miss", missing.len());
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
        self.cache(tenant)?.forget(&ids);
        result
    }

    async fn patch_item(
        &self,
        tenant: &str,
        item_id: &str,
        patch: &ItemPatch,
    ) -> Result<Option<Item>, StoreError> {
        let result = self.inner.patch_item(tenant, item_id, patch).await;
        self.cache(tenant)?.forget(&[ItemId::from(item_id)]);
        result
    }

    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError> {
        let result = self.inner.apply_events(tenant, events).await;
        self.cache(tenant)?
            .forget(events.iter().map(|e| &e.item_id));
        result
    }

    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        self.inner.usage(tenant).await
    }
}
