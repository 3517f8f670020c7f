//! The feature store: where catalog, item statistics and user profiles live. One trait, one
//! implementation per backend; everything above it (candidates, features, the actors) is
//! backend-agnostic. A read for one feed request is a handful of batched calls, so that a
//! networked backend costs a handful of round trips.

mod availability;
mod batched_feed_log;
mod breaker;
mod cache;
mod fallback;
mod feed_log;
mod instrumented;
pub mod keys;
mod memory;
mod redis;
mod rules;
mod sessions;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Event, Item, ItemId, ItemPatch, ItemRecord, UserProfile};

pub use availability::StoreHealth;
pub use batched_feed_log::BatchedFeedLog;
pub use breaker::{CircuitBreaker, Guarded, Transition, report as report_breaker};
pub use cache::CachedStore;
pub use fallback::{FallbackItems, PopularityFallback};
pub use feed_log::{FeedLog, LoggedFeed, MemoryFeedLog, ServedFeed, fill_missing};
pub use instrumented::Instrumented;
pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use rules::{MemoryRules, RulesStore, StoredRules};
pub use sessions::{FeedSessions, MemorySessions, Page, PageItem, Pages};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("feature store unavailable: {0}")]
    Unavailable(String),
    /// A write past one of the tenant's budgets: refused whole, nothing written.
    #[error(
        "the {} budget of tenant {tenant:?} is {limit}: {held} held, {adding} more refused; nothing was written",
        component.as_str()
    )]
    QuotaExceeded {
        tenant: String,
        component: crate::domain::budget::Component,
        limit: u64,
        held: usize,
        adding: usize,
    },
}

/// The span of one read of item records (`features.fetch`): the item cache records its hits
/// and misses on it. A feed's stage 5 opens it, and the list cache when it fills.
pub fn features_fetch_span(backend: &str, num_items: usize) -> tracing::Span {
    tracing::info_span!(
        "features.fetch",
        backend,
        num_items,
        cache.hits = tracing::field::Empty,
        cache.misses = tracing::field::Empty,
    )
}

/// What the candidate sources ask of the store in one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateQuery {
    pub trending: usize,
    /// (category, how many of its most popular items)
    pub categories: Vec<(String, usize)>,
    pub new_arrivals: usize,
}

/// The store's answer to a [`CandidateQuery`], each list best first: of ids, or (from
/// [`FeatureStore::candidate_records`]) of the items' records.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateLists<T = ItemId> {
    pub trending: Vec<T>,
    pub categories: Vec<Vec<T>>,
    pub new_arrivals: Vec<T>,
}

impl<T> CandidateLists<T> {
    /// The lists in order: trending, each category's, new arrivals.
    pub fn in_order(&self) -> impl Iterator<Item = &[T]> {
        std::iter::once(&self.trending[..])
            .chain(self.categories.iter().map(|l| &l[..]))
            .chain(std::iter::once(&self.new_arrivals[..]))
    }

    /// Lists in [`in_order`](Self::in_order)'s order (trending first, new arrivals last).
    pub fn from_ordered(lists: impl IntoIterator<Item = Vec<T>>) -> Self {
        let mut lists = lists.into_iter();
        let trending = lists.next().unwrap_or_default();
        let mut categories: Vec<Vec<T>> = lists.collect();
        let new_arrivals = categories.pop().unwrap_or_default();
        Self {
            trending,
            categories,
            new_arrivals,
        }
    }

    /// Each list turned into another.
    pub fn map<U>(self, mut f: impl FnMut(Vec<T>) -> Vec<U>) -> CandidateLists<U> {
        CandidateLists {
            trending: f(self.trending),
            categories: self.categories.into_iter().map(&mut f).collect(),
            new_arrivals: f(self.new_arrivals),
        }
    }
}

impl<T> Default for CandidateLists<T> {
    fn default() -> Self {
        Self {
            trending: Vec::new(),
            categories: Vec::new(),
            new_arrivals: Vec::new(),
        }
    }
}

#[async_trait]
pub trait FeatureStore: Send + Sync + 'static {
    /// Bounded label value for metrics and readiness ("memory", …).
    fn backend(&self) -> &'static str;

    async fn ping(&self) -> Result<(), StoreError>;

    async fn user_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Arc<UserProfile>>, StoreError>;

    async fn candidate_lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists, StoreError>;

    /// The same lists as [`candidate_lists`](Self::candidate_lists), of the items' records,
    /// from a store that holds them at hand (the embedded store: its index is of records): a
    /// feed then neither looks each candidate up again by id nor dedups by string. `None`
    /// (the default, and Redis's answer): read the ids, then [`items`](Self::items). A
    /// wrapper forwards it (`Instrumented` does), or the feed takes the slower path.
    async fn candidate_records(
        &self,
        _tenant: &str,
        _query: &CandidateQuery,
    ) -> Result<Option<CandidateLists<Arc<ItemRecord>>>, StoreError> {
        Ok(None)
    }

    /// Records for `ids`, in the same order; `None` where the store has no such item.
    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError>;

    /// Inserts or replaces catalog fields; an existing item keeps its statistics.
    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError>;

    /// Changes some fields of one item without resending it (statistics and lists stay);
    /// `None`: no such item. Atomic per item.
    async fn patch_item(
        &self,
        tenant: &str,
        item_id: &str,
        patch: &ItemPatch,
    ) -> Result<Option<Item>, StoreError>;

    /// Applies interaction events to item statistics and user profiles, each atomically with
    /// its deduplication: an `event_id` applied within the store's dedup window is skipped,
    /// so a batch retried after a failure (or replayed from Kafka, by any replica) changes
    /// nothing twice. Events on items the store does not know are skipped too.
    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError>;

    /// What `tenant` keeps: its items and users, counted, their bytes estimated (the
    /// embedded store from its tables; Redis from a sample of `MEMORY USAGE`). Read
    /// periodically for the per-tenant memory metrics, never by a feed.
    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError>;
}

/// How long, and for how many events, a store remembers applied event ids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dedup {
    pub window: Duration,
    /// Bounds the embedded store's memory; Redis keeps ids in sets per time bucket.
    pub capacity: u64,
}

impl Default for Dedup {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3_600),
            capacity: 2_000_000,
        }
    }
}

impl From<&crate::config::EventSettings> for Dedup {
    fn from(s: &crate::config::EventSettings) -> Self {
        Self {
            window: s.dedup_window,
            capacity: s.dedup_capacity,
        }
    }
}

/// Which events of a batch were not applied, by index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyOutcome {
    pub unknown_items: Vec<usize>,
    pub duplicates: Vec<usize>,
    /// Events of users the store did not know, past the tenant's `users` budget: not applied.
    pub over_budget: Vec<usize>,
}

impl ApplyOutcome {
    pub fn applied(&self, total: usize) -> usize {
        total - self.unknown_items.len() - self.duplicates.len() - self.over_budget.len()
    }
}

/// What one of a tenant's components holds: entries, and their bytes (estimated).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

/// What a tenant keeps in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantUsage {
    pub items: Usage,
    pub users: Usage,
}

pub type SharedStore = Arc<dyn FeatureStore>;

/// Awaits a store call, giving up at `deadline`: past it, the call counts as the store being
/// unavailable (`what` did not answer in time). For callers whose budget is shorter than the
/// store's own command timeout: a feed's stages, the served-feed log write after a feed.
pub async fn by_deadline<T, E: From<StoreError>>(
    deadline: std::time::Instant,
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{what} did not answer within the request's deadline"
            ))
            .into())
        })
}

/// The connections' state, summed over every thread that talks to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open.
    pub connections: usize,
    /// Of those, idle: no call in flight on it.
    pub idle: usize,
    /// Callers waiting for a connection: one being opened (a single node), or a cluster pool
    /// at `redis.pool_size`.
    pub waiting: usize,
}

/// Reads a store's pool state (the Redis backend's).
pub type PoolProbe = Arc<dyn Fn() -> PoolStatus + Send + Sync>;

/// The store as the rest of the service uses it: the (layered) store, its health as the
/// watchdog sees it, and the popularity fallback for when it is down.
#[derive(Clone)]
pub struct StoreContext {
    pub store: SharedStore,
    /// The connection pools' state, for the watchdog to export (networked stores only).
    pub pool: Option<PoolProbe>,
    pub health: Arc<StoreHealth>,
    pub fallback: Arc<PopularityFallback>,
    /// A networked store, watched by the Redis watchdog (the embedded one needs none).
    pub watched: bool,
    /// Where served feeds are kept for the live-quality join (beside the features).
    pub feed_log: Arc<dyn crate::store::FeedLog>,
    /// How long after its response another replica may not find a feed in the log yet
    /// (zero: at once; `events.feed_log_flush_ms` batches Redis's writes).
    pub feed_log_lag: Duration,
    /// Each tenant's rules as edited through the API.
    pub rules: Arc<dyn RulesStore>,
    /// Feed sessions' pages (pagination without repeats).
    pub sessions: Arc<dyn FeedSessions>,
}
