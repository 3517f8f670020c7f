//! The local item-feature cache in front of a networked store: bounded, with a TTL. Items are
//! shared by every user of a tenant, so most of a request's item reads are hits; user profiles
//! are per request and always read through. Writes made through this process invalidate the
//! items they touch at once; writes by other replicas show after at most the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

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

/// The same lists as records, for [`FeatureStore::candidate_records`]: a feed then looks
/// none of its candidates up in the item cache (500 lookups, ~0.1 M instructions a feed).
/// Filled from the id lists and the item cache; kept until `list_ttl` after the fill or until
/// its oldest record is `item_ttl` old, whichever comes first (the instant stored): a served
/// record is never older than the item cache would serve it.
type RecordListCache = quick_cache::sync::Cache<ListKey, (Instant, Arc<Vec<Arc<ItemRecord>>>)>;

/// Distinct lists a tenant keeps: trending, new arrivals and a few lengths of each category.
const LIST_CAPACITY: usize = 4_096;

/// The lists a query asks for, in [`CandidateLists::in_order`]'s order.
fn list_keys(query: &CandidateQuery) -> Vec<ListKey> {
    std::iter::once(ListKey::Trending(query.trending))
        .chain(
            query
                .categories
                .iter()
                .map(|(c, n)| ListKey::Category(c.clone(), *n)),
        )
        .chain(std::iter::once(ListKey::NewArrivals(query.new_arrivals)))
        .collect()
}

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
    fresh_entry(cache, key, now, ttl).map(|(_, v)| v)
}

/// [`fresh`], with the instant the value was stored with.
fn fresh_entry<K, V>(
    cache: &quick_cache::sync::Cache<K, (Instant, V)>,
    key: &K,
    now: Instant,
    ttl: Duration,
) -> Option<(Instant, V)>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    cache
        .get(key)
        .filter(|(at, _)| now.saturating_duration_since(*at) < ttl)
}

/// One tenant's caches: per tenant, so a lookup needs no key allocation.
struct TenantCache {
    items: ItemCache,
    lists: ListCache,
    record_lists: RecordListCache,
}

impl TenantCache {
    /// After a catalog write through this process: the items it touched, and every list (an
    /// item made unavailable must not be listed a moment longer).
    fn forget<'a>(&self, items: impl IntoIterator<Item = &'a ItemId>) {
        self.lists.clear();
        self.record_lists.clear();
        self.forget_items(items);
    }

    /// After events through this process: the items they touched. The lists stay until their
    /// TTL, as the embedded store's do: clearing them at every batch made every feed under
    /// event traffic read its lists again.
    fn forget_items<'a>(&self, items: impl IntoIterator<Item = &'a ItemId>) {
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
                    record_lists: RecordListCache::new(LIST_CAPACITY),
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

    /// The records of `ids` (the cache's, then one call for the misses), each with the instant
    /// it was read from the store.
    async fn read(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<(Instant, Arc<ItemRecord>)>>, StoreError> {
        let cache = &self.cache(tenant)?.items;
        let now = Instant::now();
        let mut out: Vec<Option<(Instant, Arc<ItemRecord>)>> = ids
            .iter()
            .map(|id| fresh_entry(cache, id, now, self.ttl))
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
            out[i] = record.map(|r| {
                cache.insert(ids[i].clone(), (now, r.clone()));
                (now, r)
            });
        }
        Ok(out)
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
        let keys = list_keys(query);
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
        Ok(CandidateLists::from_ordered(
            found
                .into_iter()
                .map(|l| l.map(|l| (*l).clone()).unwrap_or_default()),
        ))
    }

    /// The lists as records, while every one the query asks for is cached as records; else
    /// built from the id lists and the items (each through its own cache, one round trip for
    /// whatever either misses), and kept for `list_ttl`. An id without a record is left out.
    /// Without a list or item cache (a TTL of 0): `None`, the feed reads ids then items.
    async fn candidate_records(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<Option<CandidateLists<Arc<ItemRecord>>>, StoreError> {
        let cache = self.cache(tenant)?;
        if self.list_ttl.is_zero() || self.ttl.is_zero() {
            return Ok(None);
        }
        let now = Instant::now();
        let keys = list_keys(query);
        // Stored with the instant they expire at.
        let found: Option<Vec<Arc<Vec<Arc<ItemRecord>>>>> = keys
            .iter()
            .map(|k| {
                let (until, list) = cache.record_lists.get(k)?;
                (now < until).then_some(list)
            })
            .collect();
        if let Some(found) = found {
            self.count("list", "hit", found.len());
            return Ok(Some(CandidateLists::from_ordered(
                found.iter().map(|l| (**l).clone()),
            )));
        }
        // Counted by the id lists' and the items' own lookups.
        let lists = self.candidate_lists(tenant, query).await?;
        let all: Vec<&[ItemId]> = lists.in_order().collect();
        let mut unique: crate::FastMap<&str, Option<(Instant, Arc<ItemRecord>)>> = all
            .iter()
            .flat_map(|l| l.iter())
            .map(|id| (&**id, None))
            .collect();
        let ids: Vec<ItemId> = unique.keys().map(|id| ItemId::from(*id)).collect();
        // The span a feed's item reads have (`pipeline::item_records`), here inside the lists'.
        let records = self
            .read(tenant, &ids)
            .instrument(super::features_fetch_span(self.backend(), ids.len()))
            .await?;
        for (id, record) in ids.iter().zip(records) {
            unique.insert(id, record);
        }
        let mut built: Vec<Vec<Arc<ItemRecord>>> = Vec::with_capacity(all.len());
        for (key, list) in keys.into_iter().zip(&all) {
            let mut until = now + self.list_ttl;
            let records: Vec<Arc<ItemRecord>> = list
                .iter()
                .filter_map(|id| {
                    let (read, record) = unique[&**id].clone()?;
                    until = until.min(read + self.ttl);
                    Some(record)
                })
                .collect();
            cache
                .record_lists
                .insert(key, (until, Arc::new(records.clone())));
            built.push(records);
        }
        Ok(Some(CandidateLists::from_ordered(built)))
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        Ok(self
            .read(tenant, ids)
            .await?
            .into_iter()
            .map(|r| r.map(|(_, record)| record))
            .collect())
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
            .forget_items(events.iter().map(|e| &e.item_id));
        result
    }

    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        self.inner.usage(tenant).await
    }
}
