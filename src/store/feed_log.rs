//! The served-feed log: where feeds are kept for the join window, so that clicks and
//! purchases carrying a feed's `request_id` can be joined with it (`ingest::feed_join`). It
//! lives where the features do: in process for the embedded store, in Redis otherwise (a hash
//! per time bucket, `redis/feed_log.rs`; written a batch at a time, [`super::BatchedFeedLog`]),
//! so that with several replicas an event joins whichever replica served the feed and whichever
//! applies the event.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{StoreError, Usage};
use crate::config::EventSettings;
use crate::domain::ItemId;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::FeedLogSized;

/// One served feed, as the join needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedFeed {
    pub model: String,
    pub version: String,
    pub items: Vec<ItemId>,
    /// (experiment, arm) when the feed was served to an experiment's arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<(String, String)>,
}

/// A served feed with its tenant and request id: one of a batch written at once.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedFeed {
    pub tenant: String,
    pub request_id: String,
    pub feed: ServedFeed,
}

/// Where served feeds are kept for the join window.
#[async_trait]
pub trait FeedLog: Send + Sync + 'static {
    /// Takes the feed: a log that keeps it (queued, or interned) keeps it without a copy.
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Several feeds at once (a [`super::BatchedFeedLog`]'s flush). By default one
    /// [`Self::record`] each; a networked log writes them in one round trip.
    async fn record_many(&self, feeds: &[LoggedFeed], ttl: Duration) -> Result<(), StoreError> {
        for f in feeds {
            self.record(&f.tenant, &f.request_id, f.feed.clone(), ttl)
                .await?;
        }
        Ok(())
    }

    /// Writes what is queued for a later write (a stopping replica's): nothing by default,
    /// where every feed is written as it is recorded.
    async fn flush(&self) {}

    /// The feeds `request_ids` name; `None` where unknown or expired.
    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError>;

    /// For each feed, whether this is its first click (claimed once, atomically).
    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError>;

    /// The feeds `tenant` holds and their bytes (estimated); `None` where the log cannot tell.
    async fn held(&self, _tenant: &str) -> Result<Option<Usage>, StoreError> {
        Ok(None)
    }

    /// Drops `tenant`'s oldest feeds until at most about `max` remain; how many went. For a
    /// log that cannot bound a tenant as it records (Redis: feeds of every replica); the
    /// embedded log does so on every record and has nothing to do here.
    async fn trim(&self, _tenant: &str, _max: u64) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Fills the empty slots of `found` (one per id of `ids`, in order) whose id `pick` selects,
/// from one lookup in `log`: a second source behind a first one (the batched log's queue, or
/// an earlier lookup of the same log).
pub async fn fill_missing(
    log: &dyn FeedLog,
    tenant: &str,
    ids: &[&str],
    found: &mut [Option<ServedFeed>],
    pick: impl Fn(&str) -> bool,
) -> Result<(), StoreError> {
    let wanted: Vec<&str> = ids
        .iter()
        .zip(found.iter())
        .filter(|(id, f)| f.is_none() && pick(id))
        .map(|(id, _)| *id)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut stored = log.lookup(tenant, &wanted).await?.into_iter();
    for (slot, id) in found.iter_mut().zip(ids) {
        if slot.is_none() && pick(id) {
            *slot = stored.next().flatten();
        }
    }
    Ok(())
}

/// The embedded store's log: bounded, expiring, in process — and compact, because at a few
/// thousand feeds per second it holds hundreds of thousands of feeds. Per feed: its request id
/// as 128 bits (a UUID's own bits; any other id hashed), the tenant and the model version as
/// small interned numbers, its first-click flag, and its items as 4-byte indices into a
/// per-tenant table of the item ids served — ~120 bytes for a 20-item feed
/// ([`MemoryFeedLog::bytes`]), where owned strings and a vector of ids in a cache took ~1 KB.
/// Feeds live in time segments (a thirtieth of the window each): expired segments are dropped
/// whole, and past `join_capacity` feeds the oldest segment goes early (counted).
pub struct MemoryFeedLog {
    log: Mutex<Log>,
    metrics: Option<std::sync::Arc<crate::telemetry::Metrics>>,
    window: Duration,
    segment: Duration,
    capacity: usize,
    /// Tenants' `feed_log_entries` budgets: past its own, a tenant's oldest feeds go.
    budgets: HashMap<String, u64>,
}

/// One feed's entry.
#[derive(Clone, Copy)]
struct Entry {
    tenant: u16,
    model: u16,
    clicked: bool,
    len: u8,
    /// Where its items start in the segment's item arena.
    offset: u32,
}

struct Segment {
    started: Instant,
    feeds: HashMap<Key, Entry, foldhash::fast::FixedState>,
    items: Vec<u32>,
    /// Feeds per tenant (by interned id).
    per_tenant: Vec<u32>,
}

impl Segment {
    fn held_by(&self, tenant: u16) -> usize {
        self.per_tenant
            .get(tenant as usize)
            .map_or(0, |n| *n as usize)
    }
}

/// Strings (tenants, model versions, item ids) as small numbers, both ways.
#[derive(Default)]
struct Interner<T: std::hash::Hash + Eq + Clone> {
    ids: HashMap<T, u32, foldhash::fast::FixedState>,
    values: Vec<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    fn id(&mut self, value: &T) -> u32 {
        match self.ids.get(value) {
            Some(id) => *id,
            None => self.add(value.clone()),
        }
    }

    /// [`Self::id`] of a value the caller gives away: cloned only when new.
    fn id_of(&mut self, value: T) -> u32 {
        match self.ids.get(&value) {
            Some(id) => *id,
            None => self.add(value),
        }
    }

    fn add(&mut self, value: T) -> u32 {
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    fn get(&self, value: &T) -> Option<u32> {
        self.ids.get(value).copied()
    }
}

#[derive(Default)]
struct Log {
    /// Oldest first.
    segments: VecDeque<Segment>,
    entries: usize,
    tenants: Interner<String>,
    /// Model, version and experiment arm: few distinct values, one number per feed.
    models: Interner<Labels>,
    /// Per tenant (by its interned id).
    items: Vec<Interner<ItemId>>,
    /// Feeds held per tenant, and its budget (by interned id).
    held: Vec<usize>,
    limits: Vec<Option<u64>>,
    /// Feeds dropped before their window ended (the capacity was reached).
    evicted_early: u64,
}

/// What a feed was ranked by: model, version, (experiment, arm).
type Labels = (String, String, Option<(String, String)>);

/// A request id as 128 bits (two words: 8-byte aligned, so an entry packs into 28 bytes).
type Key = [u64; 2];

/// A request id's key: a UUID's own bits (what both transports generate), else a hash.
fn request_key(request_id: &str) -> Key {
    if let Ok(u) = uuid::Uuid::parse_str(request_id) {
        let (hi, lo) = u.as_u64_pair();
        return [hi, lo];
    }
    use std::hash::BuildHasher;
    let h = |seed| foldhash::fast::FixedState::with_seed(seed).hash_one(request_id);
    [h(1), h(2)]
}

impl MemoryFeedLog {
    pub fn new(settings: &EventSettings) -> Self {
        let window = settings.join_window;
        Self {
            log: Mutex::new(Log::default()),
            metrics: None,
            window,
            segment: (window / 30).max(Duration::from_secs(1)),
            capacity: settings.join_capacity as usize,
            budgets: HashMap::new(),
        }
    }

    /// Bounds each listed tenant's feeds by its `feed_log_entries` budget (0: only the log's
    /// `join_capacity`).
    pub fn with_budgets<'a>(
        mut self,
        budgets: impl IntoIterator<Item = (&'a str, crate::domain::budget::Budget)>,
    ) -> Self {
        self.budgets = budgets
            .into_iter()
            .filter(|(_, b)| b.feed_log_entries > 0)
            .map(|(t, b)| (t.to_owned(), b.feed_log_entries))
            .collect();
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the log holds (allocated capacity of its tables and arenas, and the interned
    /// strings): the figure `join_capacity` is sized from.
    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    /// Reports its size and early evictions (`FeedLogSized`) into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::telemetry::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl Log {
    fn bytes(&self) -> usize {
        let log = self;
        let entry = std::mem::size_of::<(Key, Entry)>() + 1;
        let segments: usize = log
            .segments
            .iter()
            // The table's buckets: its capacity is 7/8 of them.
            .map(|s| s.feeds.capacity() * 8 / 7 * entry + s.items.capacity() * 4)
            .sum();
        let strings = |n: usize, len: usize| n * (len + 16 + 4 + 8 + 1);
        let items: usize = log
            .items
            .iter()
            .map(|i| {
                i.values
                    .iter()
                    .map(|v| strings(1, v.len() + 16))
                    .sum::<usize>()
            })
            .sum();
        segments + items + strings(log.models.values.len(), 64)
    }
}

impl MemoryFeedLog {
    /// Feeds held now.
    pub fn len(&self) -> usize {
        self.lock().entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feeds dropped before their join window ended, because `join_capacity` was reached.
    pub fn evicted_early(&self) -> u64 {
        self.lock().evicted_early
    }

    fn find(log: &Log, tenant: u16, key: Key) -> Option<(usize, Entry)> {
        log.segments
            .iter()
            .enumerate()
            .rev()
            .find_map(|(s, seg)| seg.feeds.get(&key).map(|e| (s, *e)))
            .filter(|(_, e)| e.tenant == tenant)
    }
}

impl Log {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(oldest) = self.segments.front() {
            if now.duration_since(oldest.started) <= window + Duration::from_secs(1) {
                break;
            }
            self.drop_oldest();
        }
    }

    /// Drops the oldest segment whole; how many feeds went.
    fn drop_oldest(&mut self) -> usize {
        let Some(gone) = self.segments.pop_front() else {
            return 0;
        };
        self.entries -= gone.feeds.len();
        for (t, n) in gone.per_tenant.iter().enumerate() {
            self.held[t] -= *n as usize;
        }
        gone.feeds.len()
    }

    /// Drops `tenant`'s feeds from the oldest segment holding any (a thirtieth of the
    /// window's): its own, never another tenant's. How many went.
    fn drop_oldest_of(&mut self, tenant: u16) -> usize {
        let Some(segment) = self.segments.iter_mut().find(|s| s.held_by(tenant) > 0) else {
            return 0;
        };
        segment.feeds.retain(|_, e| e.tenant != tenant);
        let n = std::mem::take(&mut segment.per_tenant[tenant as usize]) as usize;
        self.entries -= n;
        self.held[tenant as usize] -= n;
        n
    }

    /// `tenant`'s interned id, its tables grown to hold it.
    fn tenant(&mut self, tenant: &str, budgets: &HashMap<String, u64>) -> u16 {
        let t = self.tenants.id(&tenant.to_owned()) as usize;
        if self.items.len() <= t {
            self.items.resize_with(t + 1, Interner::default);
            self.held.resize(t + 1, 0);
            self.limits.resize(t + 1, None);
            self.limits[t] = budgets.get(tenant).copied();
        }
        t as u16
    }
}

#[async_trait]
impl FeedLog for MemoryFeedLog {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: ServedFeed,
        _: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut log = self.lock();
        log.expire(now, self.window);
        let mut evicted = 0;
        while log.entries >= self.capacity.max(1) && !log.segments.is_empty() {
            evicted += log.drop_oldest();
        }
        let t = log.tenant(tenant, &self.budgets);
        if let Some(limit) = log.limits[t as usize] {
            while log.held[t as usize] as u64 >= limit.max(1) {
                match log.drop_oldest_of(t) {
                    0 => break,
                    n => evicted += n,
                }
            }
        }
        log.evicted_early += evicted as u64;
        let model = log.models.id_of((feed.model, feed.version, feed.arm));
        let ids: Vec<u32> = feed
            .items
            .iter()
            .take(u8::MAX as usize)
            .map(|id| log.items[t as usize].id(id))
            .collect();
        // A segment closes after its time or a thirtieth of the capacity, whichever comes
        // first: evicting the oldest one for room then drops at most that share of the log.
        let per_segment = (self.capacity / 30).max(1);
        let fresh = log.segments.back().is_none_or(|s| {
            now.duration_since(s.started) >= self.segment || s.feeds.len() >= per_segment
        });
        if fresh {
            // The closing segment takes no more feeds: its tables shrink to what they hold.
            if let Some(closing) = log.segments.back_mut() {
                closing.feeds.shrink_to_fit();
                closing.items.shrink_to_fit();
            }
            log.segments.push_back(Segment {
                started: now,
                feeds: HashMap::default(),
                items: Vec::new(),
                per_tenant: Vec::new(),
            });
        }
        let segment = log.segments.back_mut().expect("just ensured");
        let entry = Entry {
            tenant: t,
            model: model as u16,
            clicked: false,
            len: ids.len() as u8,
            offset: segment.items.len() as u32,
        };
        segment.items.extend_from_slice(&ids);
        if segment
            .feeds
            .insert(request_key(request_id), entry)
            .is_none()
        {
            if segment.per_tenant.len() <= t as usize {
                segment.per_tenant.resize(t as usize + 1, 0);
            }
            segment.per_tenant[t as usize] += 1;
            log.entries += 1;
            log.held[t as usize] += 1;
        }
        // Reported as a segment closes (and on an eviction): not per feed.
        let report = (fresh || evicted > 0).then(|| FeedLogSized {
            entries: log.entries,
            bytes: log.bytes(),
            evicted,
        });
        drop(log);
        if let (Some(event), Some(m)) = (report, &self.metrics) {
            event.emit(m);
        }
        Ok(())
    }

    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        let mut log = self.lock();
        log.expire(Instant::now(), self.window);
        let Some(t) = log.tenants.get(&tenant.to_owned()) else {
            return Ok(vec![None; request_ids.len()]);
        };
        Ok(request_ids
            .iter()
            .map(|r| {
                let (s, e) = Self::find(&log, t as u16, request_key(r))?;
                let (model, version, arm) = log.models.values[e.model as usize].clone();
                let arena = &log.segments[s].items;
                let names = &log.items[t as usize].values;
                let items = arena[e.offset as usize..e.offset as usize + e.len as usize]
                    .iter()
                    .map(|i| names[*i as usize].clone())
                    .collect();
                Some(ServedFeed {
                    model,
                    version,
                    items,
                    arm,
                })
            })
            .collect())
    }

    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        _: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let mut log = self.lock();
        let Some(t) = log.tenants.get(&tenant.to_owned()) else {
            return Ok(vec![false; request_ids.len()]);
        };
        Ok(request_ids
            .iter()
            .map(|r| {
                let key = request_key(r);
                let Some((s, e)) = Self::find(&log, t as u16, key) else {
                    return false;
                };
                let first = !e.clicked;
                if let Some(entry) = log.segments[s].feeds.get_mut(&key) {
                    entry.clicked = true;
                }
                first
            })
            .collect())
    }

    async fn held(&self, tenant: &str) -> Result<Option<Usage>, StoreError> {
        let log = self.lock();
        let held = log
            .tenants
            .get(&tenant.to_owned())
            .map_or(0, |t| log.held[t as usize]);
        // The log's bytes, shared by feeds: a tenant's share is its share of the feeds.
        let bytes = log.bytes() as u64 * held as u64 / log.entries.max(1) as u64;
        Ok(Some(Usage {
            entries: held as u64,
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(window_s: u64, capacity: u64) -> EventSettings {
        let mut s = crate::config::Settings::load(&[]).unwrap().events;
        s.join_window = Duration::from_secs(window_s);
        s.join_capacity = capacity;
        s
    }

    fn feed(n: usize) -> ServedFeed {
        ServedFeed {
            model: "m".into(),
            version: "v1".into(),
            items: (0..20)
                .map(|i| ItemId::from(format!("i{}", (n * 7 + i) % 5_000)))
                .collect(),
            arm: n.is_multiple_of(2).then(|| ("exp".into(), "b".into())),
        }
    }

    #[actix_rt::test]
    async fn feeds_are_found_by_tenant_and_clicked_once() {
        let log = MemoryFeedLog::new(&settings(1_800, 1_000));
        let id = uuid::Uuid::new_v4().to_string();
        log.record("a", &id, feed(1), Duration::ZERO).await.unwrap();
        log.record("a", "not-a-uuid", feed(2), Duration::ZERO)
            .await
            .unwrap();
        let found = log
            .lookup("a", &[&id, "not-a-uuid", "missing"])
            .await
            .unwrap();
        assert_eq!(found[0].as_ref(), Some(&feed(1)));
        assert_eq!(found[1].as_ref(), Some(&feed(2)));
        assert!(found[2].is_none());
        // Another tenant does not see it.
        assert_eq!(log.lookup("b", &[&id]).await.unwrap(), [None]);
        assert_eq!(
            log.claim_first_clicks("b", &[&id], Duration::ZERO)
                .await
                .unwrap(),
            [false]
        );
        assert_eq!(
            log.claim_first_clicks("a", &[&id], Duration::ZERO)
                .await
                .unwrap(),
            [true]
        );
        assert_eq!(
            log.claim_first_clicks("a", &[&id], Duration::ZERO)
                .await
                .unwrap(),
            [false]
        );
    }

    #[actix_rt::test]
    async fn past_its_capacity_the_oldest_feeds_go_and_are_counted() {
        let metrics = std::sync::Arc::new(crate::telemetry::Metrics::new());
        let log = MemoryFeedLog::new(&settings(1_800, 100)).with_metrics(metrics.clone());
        for n in 0..250 {
            log.record("a", &format!("r{n}"), feed(n), Duration::ZERO)
                .await
                .unwrap();
        }
        assert!(log.len() <= 100 && log.len() >= 90, "{}", log.len());
        assert!(log.evicted_early() >= 150);
        // Counted where an operator sees it, with the log's size.
        assert_eq!(metrics.feed_log_evicted_total.get(), log.evicted_early());
        assert!(metrics.feed_log_entries.get() > 0 && metrics.feed_log_bytes.get() > 0);
        assert!(log.lookup("a", &["r249"]).await.unwrap()[0].is_some());
    }

    #[actix_rt::test]
    async fn a_tenant_past_its_budget_loses_its_own_oldest_feeds_only() {
        let budget = crate::domain::budget::Budget {
            feed_log_entries: 60,
            ..Default::default()
        };
        let log = MemoryFeedLog::new(&settings(1_800, 10_000)).with_budgets([("a", budget)]);
        for n in 0..300 {
            log.record("a", &format!("a{n}"), feed(n), Duration::ZERO)
                .await
                .unwrap();
            if n < 100 {
                log.record("b", &format!("b{n}"), feed(n), Duration::ZERO)
                    .await
                    .unwrap();
            }
        }
        let a = log.held("a").await.unwrap().unwrap();
        let b = log.held("b").await.unwrap().unwrap();
        assert!(a.entries <= 60 && a.entries >= 50, "{a:?}");
        assert_eq!(b.entries, 100);
        assert_eq!(log.len(), (a.entries + b.entries) as usize);
        assert!(a.bytes > 0 && b.bytes > a.bytes);
        // b's oldest feed is still joined; a's newest is, its oldest are gone.
        assert!(log.lookup("b", &["b0"]).await.unwrap()[0].is_some());
        assert!(log.lookup("a", &["a299"]).await.unwrap()[0].is_some());
        assert!(log.lookup("a", &["a0"]).await.unwrap()[0].is_none());
        assert_eq!(log.evicted_early(), 300 - a.entries);
    }

    /// The in-process log's size per feed, as `bytes` counts it: 100 000 feeds of 20 items
    /// from a 5 000-item catalog (the demo's), one model.
    #[actix_rt::test]
    async fn a_feed_costs_at_most_160_bytes() {
        let log = MemoryFeedLog::new(&settings(1_800, 500_000));
        let n = 100_000;
        for i in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            log.record("demo-a", &id, feed(i), Duration::ZERO)
                .await
                .unwrap();
        }
        let per_feed = log.bytes() / n;
        println!("{per_feed} bytes per feed");
        assert!(per_feed <= 160, "{per_feed} bytes per feed");
    }
}
