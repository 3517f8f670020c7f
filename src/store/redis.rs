//! The Redis backend (`deadpool-redis`), single node or cluster. Every operation is one
//! pipeline — one round trip — bounded by the command timeout. Key layout: `store::keys`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, FromRedisValue, Pipeline};
use deadpool_redis::{Runtime, Timeouts};
use thread_local::ThreadLocal;

use super::keys;
use super::{
    ApplyOutcome, CandidateLists, CandidateQuery, Dedup, FeatureStore, StoreError, TenantUsage,
    Usage,
};
use crate::config::RedisSettings;
use crate::domain::budget::{Budget, Component, room};
use crate::domain::{
    Event, History, HistoryBuilder, Item, ItemId, ItemPatch, ItemRecord, ItemStats, RECENT_ITEMS,
    UserProfile, key_hash,
};
use crate::store::sessions::{decode_page, encode_page};
use crate::store::{FeedSessions, Page, Pages, RulesStore, StoredRules};

mod apply;
mod connection;
mod feed_log;
mod profile;
use apply::{APPLY_EVENTS, EVENTS_PER_CALL, OldKeys, decode_stats};
use connection::ThreadConnection;

// One per thread: the single node's connection stays inline rather than behind a box.
#[allow(clippy::large_enum_variant)]
enum Pool {
    /// One multiplexed connection per thread, shared by its calls (`connection`).
    Single(ThreadConnection),
    Cluster(deadpool_redis::cluster::Pool),
}

/// Catalog entries a replica keeps for ingestion (a few hundred bytes each).
const CATALOG_CACHE_CAPACITY: u64 = 500_000;

pub struct RedisStore {
    /// One connection (single node) or pool (cluster) per thread that talks to Redis: see
    /// [`RedisStore::pool`].
    pools: ThreadLocal<Pool>,
    settings: RedisSettings,
    dedup: Dedup,
    /// Tenants' item and user budgets (absent: unlimited).
    budgets: HashMap<String, Budget>,
    /// The served-feed log's join window: which time buckets a lookup reads.
    feed_window: Duration,
    /// Per tenant, whether its users' old keys are known moved (`None`), or when the mark
    /// was last found missing: see [`RedisStore::move_old_layout`].
    /// Read by every feed (a read lock), written once per check.
    old_layout: std::sync::RwLock<crate::FastMap<String, Option<std::time::Instant>>>,
    /// (tenant, labels id) of served feeds' labels already in Redis (`feed_log`).
    labels_written: std::sync::Mutex<HashSet<(String, String)>>,
    /// (tenant, item id) → catalog entry, for event ingestion: saves a round trip per batch.
    catalog: Option<moka::sync::Cache<(String, ItemId), Arc<Item>, foldhash::fast::RandomState>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// A call that got no answer within `timeout` (`redis.command_timeout_ms`): the breaker counts
/// it as a failure, like a refused connection.
fn no_answer(timeout: Duration) -> StoreError {
    unavailable(format!("no answer within {timeout:?}"))
}

fn build_pool(settings: &RedisSettings) -> Result<Pool, StoreError> {
    let timeouts = Timeouts {
        wait: Some(settings.command_timeout),
        create: Some(settings.connect_timeout),
        recycle: Some(settings.command_timeout),
    };
    let urls = settings.urls();
    if settings.cluster {
        let mut cfg = deadpool_redis::cluster::Config::from_urls(urls);
        cfg.pool = Some(deadpool_redis::PoolConfig {
            max_size: settings.pool_size,
            timeouts,
            ..Default::default()
        });
        return Ok(Pool::Cluster(
            cfg.create_pool(Some(Runtime::Tokio1))
                .map_err(unavailable)?,
        ));
    }
    let [url] = urls.as_slice() else {
        return Err(unavailable(
            "redis.url must be one URL unless redis.cluster = true",
        ));
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout));
    let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
    Ok(Pool::Single(ThreadConnection::new(client, config)))
}

impl RedisStore {
    /// Builds the pool of the calling thread (checking the settings); connections are opened
    /// on first use, so a Redis that is down at start-up degrades the service instead of
    /// stopping it.
    pub fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let store = Self {
            pools: ThreadLocal::new(),
            settings: settings.clone(),
            dedup: Dedup::default(),
            budgets: HashMap::new(),
            feed_window: Duration::from_secs(1800),
            old_layout: Default::default(),
            labels_written: Default::default(),
            catalog: (!settings.catalog_cache.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(CATALOG_CACHE_CAPACITY)
                    .time_to_live(settings.catalog_cache)
                    // Looked up once per event's item: SipHash showed in the profile.
                    .build_with_hasher(Default::default())
            }),
        };
        store.pool()?;
        Ok(store)
    }

    /// The calling thread's connection (single node) or pool (cluster). A multiplexed
    /// connection's I/O runs as a task on the runtime of the thread that opened it; each HTTP
    /// worker runs its own runtime and, with its feed lane, ranks on it for a millisecond at a
    /// time. A connection shared across threads made every command wait for the opening thread
    /// to be free (seen: twice the CPU per feed, 2-4x the p99 at half load), so each thread
    /// opens and uses its own: one for a single node, up to `redis.pool_size` for a cluster.
    fn pool(&self) -> Result<&Pool, StoreError> {
        self.pools.get_or_try(|| build_pool(&self.settings))
    }

    /// The connections of every thread, summed.
    pub fn pool_status(&self) -> super::PoolStatus {
        self.pools
            .iter()
            .map(|pool| match pool {
                Pool::Single(c) => c.status(),
                Pool::Cluster(p) => {
                    let s = p.status();
                    super::PoolStatus {
                        connections: s.size,
                        idle: s.available,
                        waiting: s.waiting,
                    }
                }
            })
            .fold(super::PoolStatus::default(), |sum, s| super::PoolStatus {
                connections: sum.connections + s.connections,
                idle: sum.idle + s.idle,
                waiting: sum.waiting + s.waiting,
            })
    }

    pub fn with_dedup(self, dedup: Dedup) -> Self {
        Self { dedup, ..self }
    }

    /// The served-feed log's join window (`events.join_window_seconds`).
    pub fn with_feed_window(self, feed_window: Duration) -> Self {
        Self {
            feed_window,
            ..self
        }
    }

    /// Bounds each listed tenant's items and users by its budget. Checked against Redis's
    /// counts before a write: replicas writing at the same instant may each take the last
    /// room, so a budget can be passed by what they write concurrently (one batch each).
    pub fn with_budgets<'a>(self, budgets: impl IntoIterator<Item = (&'a str, Budget)>) -> Self {
        Self {
            budgets: budgets
                .into_iter()
                .map(|(t, b)| (t.to_owned(), b))
                .collect(),
            ..self
        }
    }

    fn limit(&self, tenant: &str, component: Component) -> Option<u64> {
        self.budgets.get(tenant).and_then(|b| b.limit(component))
    }

    /// Which of `events` come from users past the tenant's `users` budget: users Redis does
    /// not know, beyond the room left (the batch's first new users take it).
    async fn over_user_budget(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<HashSet<usize>, StoreError> {
        let Some(limit) = self.limit(tenant, Component::Users) else {
            return Ok(HashSet::new());
        };
        let users = distinct_users(events);
        let mut pipe = redis::pipe();
        pipe.cmd("SMISMEMBER")
            .arg(keys::users(tenant))
            .arg(&users)
            .scard(keys::users(tenant));
        let (known, held): (Vec<bool>, usize) = self.query(&pipe).await?;
        let mut room = room(Some(limit), held);
        let refused: HashSet<&str> = users
            .iter()
            .zip(known)
            .filter(|(_, known)| !known)
            .filter_map(|(u, _)| match room {
                0 => Some(*u),
                _ => {
                    room -= 1;
                    None
                }
            })
            .collect();
        Ok(events
            .iter()
            .enumerate()
            .filter(|(_, e)| refused.contains(&*e.user_id))
            .map(|(i, _)| i)
            .collect())
    }

    /// The catalog entries of the items `events` name (absent: unknown items), from the
    /// catalog cache, reading the misses in one round trip.
    async fn catalog_entries(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<HashMap<ItemId, Arc<Item>>, StoreError> {
        let mut found = HashMap::new();
        let mut missing: Vec<ItemId> = Vec::new();
        for id in events.iter().map(|e| &e.item_id).collect::<HashSet<_>>() {
            let key = (tenant.to_owned(), id.clone());
            match self.catalog.as_ref().and_then(|c| c.get(&key)) {
                Some(item) => {
                    found.insert(id.clone(), item);
                }
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut read = redis::pipe();
        for id in &missing {
            read.hget(keys::item(tenant, id), "item");
        }
        let answers: Vec<Option<String>> = self.query(&read).await?;
        for (id, json) in missing.into_iter().zip(answers) {
            let Some(item) = json.and_then(|j| serde_json::from_str::<Item>(&j).ok()) else {
                continue;
            };
            let item = Arc::new(item);
            if let Some(cache) = &self.catalog {
                cache.insert((tenant.to_owned(), id.clone()), item.clone());
            }
            found.insert(id, item);
        }
        Ok(found)
    }

    /// Runs one pipeline on a pooled connection. Getting the connection is bounded by the
    /// pool's timeouts (wait: the command timeout; a new connection: the connect timeout),
    /// the round trip by the command timeout.
    async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        self.run(pipe).await?.map_err(unavailable)
    }

    /// [`Self::query`] that leaves the server's own errors to the caller.
    async fn run<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<redis::RedisResult<T>, StoreError> {
        let timeout = self.settings.command_timeout;
        let answer = match self.pool()? {
            Pool::Single(connection) => connection.run(timeout, pipe).await?,
            Pool::Cluster(p) => {
                let mut c = p.get().await.map_err(unavailable)?;
                tokio::time::timeout(timeout, pipe.query_async(&mut *c)).await
            }
        };
        answer.map_err(|_| no_answer(timeout))
    }

    /// Loads the event script (on every primary of a cluster: the command is routed to all).
    async fn load_script(&self) -> Result<(), StoreError> {
        let timeout = self.settings.command_timeout;
        let answer = match self.pool()? {
            Pool::Single(_) => {
                let mut load = redis::pipe();
                load.cmd("SCRIPT").arg("LOAD").arg(&APPLY_EVENTS.0).ignore();
                return self.query(&load).await;
            }
            Pool::Cluster(p) => {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(&APPLY_EVENTS.0);
                let mut c = p.get().await.map_err(unavailable)?;
                tokio::time::timeout(timeout, load.query_async::<()>(&mut *c)).await
            }
        };
        answer.map_err(|_| no_answer(timeout))?.map_err(unavailable)
    }

    /// Deletes every key of `tenant` (used by `eaglerank load --replace`): on a cluster, the
    /// keys of the one node holding the tenant's slot ([`Self::scan_page`]).
    pub async fn clear_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let pattern = format!("er:{{{tenant}}}:*");
        let (mut cursor, mut deleted) = (0, 0);
        loop {
            let (next, keys) = self.scan_page(&pattern, cursor).await?;
            if !keys.is_empty() {
                let mut del = redis::pipe();
                del.cmd("UNLINK").arg(&keys).ignore();
                self.query::<()>(&del).await?;
                deleted += keys.len();
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// One page of the keys matching `pattern` from `cursor` (SCAN): the next cursor (0: the
    /// last page) and the keys. Every pattern here is one tenant's (`er:{t}:…`), so on a
    /// cluster the SCAN goes to the primary holding that hash tag's slot: a keyless command
    /// would be answered by whichever node the client picked, from that node's keys alone.
    async fn scan_page(
        &self,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let mut c = match self.pool()? {
            Pool::Single(_) => {
                let mut pipe = redis::pipe();
                pipe.add_command(scan);
                let (page,): ((u64, Vec<String>),) = self.query(&pipe).await?;
                return Ok(page);
            }
            Pool::Cluster(p) => p.get().await.map_err(unavailable)?,
        };
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let slot = Route::with_key(pattern, SlotAddr::Master);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(slot));
        let timeout = self.settings.command_timeout;
        let page = tokio::time::timeout(timeout, c.route_command(scan, route))
            .await
            .map_err(|_| no_answer(timeout))?
            .map_err(unavailable)?;
        redis::from_redis_value(page).map_err(|e| unavailable(e.to_string()))
    }

    /// Moves `tenant`'s users out of the hashes and lists their profiles and histories were
    /// kept in before the two strings (`keys::user`, `keys::recent`, `keys::legacy_history`;
    /// a user's next event moves them too), then marks the tenant moved (`keys::layout`):
    /// from then on feeds read the strings alone, where until then each read the three old
    /// keys beside them. Run it once every replica runs a version that writes the strings (an
    /// older one writes the old keys again, which would no longer be read). Returns the users
    /// moved. On a cluster as on a single node: a tenant's keys are all in its slot.
    pub async fn move_old_layout(&self, tenant: &str) -> Result<usize, StoreError> {
        let mut users: indexmap::IndexMap<String, OldKeys> = indexmap::IndexMap::new();
        for (prefix, history) in [
            (keys::user(tenant, ""), false),
            (keys::recent(tenant, ""), false),
            (keys::legacy_history(tenant, ""), true),
        ] {
            let (pattern, mut cursor) = (format!("{prefix}*"), 0);
            loop {
                let (next, keys) = self.scan_page(&pattern, cursor).await?;
                for key in keys {
                    if let Some(user) = key.strip_prefix(&prefix) {
                        let old = users.entry(user.to_owned()).or_default();
                        if history {
                            old.history = true;
                        } else {
                            old.profile = true;
                        }
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let users: Vec<(&str, OldKeys)> = users.iter().map(|(u, o)| (u.as_str(), *o)).collect();
        for chunk in users.chunks(100) {
            let mut pipe = redis::pipe();
            pipe.invoke_script(&apply::move_over(tenant, chunk))
                .ignore();
            self.script::<()>(&pipe).await?;
            // What the script left: the old keys of a user who already had a string (never
            // read, since the string is). Not in the script's pipeline: that one is sent
            // again whole when the server had to load the script first.
            let old: Vec<String> = chunk
                .iter()
                .flat_map(|(u, _)| {
                    [
                        keys::user(tenant, u),
                        keys::recent(tenant, u),
                        keys::legacy_history(tenant, u),
                    ]
                })
                .collect();
            let mut unlink = redis::pipe();
            unlink.cmd("UNLINK").arg(old).ignore();
            self.query::<()>(&unlink).await?;
        }
        let mut mark = redis::pipe();
        mark.set(keys::layout(tenant), LAYOUT).ignore();
        self.query::<()>(&mark).await?;
        self.old_layout_of(tenant, true);
        Ok(users.len())
    }

    /// Whether feeds of `tenant` must still read the old keys and, if so, whether this one
    /// should look for the mark ([`Self::move_old_layout`]) again: once every
    /// [`LAYOUT_RECHECK`] per tenant and replica.
    fn old_layout(&self, tenant: &str) -> (bool, bool) {
        let known = self.old_layout.read().unwrap_or_else(|e| e.into_inner());
        match known.get(tenant) {
            Some(None) => (false, false),
            Some(Some(checked)) => (true, checked.elapsed() >= LAYOUT_RECHECK),
            None => (true, true),
        }
    }

    fn old_layout_of(&self, tenant: &str, moved: bool) {
        let mut known = self.old_layout.write().unwrap_or_else(|e| e.into_inner());
        known.insert(tenant.to_owned(), (!moved).then(std::time::Instant::now));
    }

    /// [`Self::query`] for a pipeline that calls the event script: loaded first if the
    /// server lost it (a restart, a failover, `SCRIPT FLUSH`; nothing of the pipeline ran).
    async fn script<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        match self.run(pipe).await? {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_script().await?;
                self.query(pipe).await
            }
            other => other.map_err(unavailable),
        }
    }
}

/// `keys::layout`'s value once a tenant's old keys were moved.
const LAYOUT: &str = "2";
/// How long a replica goes on reading a tenant's old keys without looking for the mark again.
const LAYOUT_RECHECK: Duration = Duration::from_secs(10);

fn item_record(
    mut fields: HashMap<String, String>,
    stats: Option<Vec<u8>>,
    trending: Option<f64>,
) -> Option<ItemRecord> {
    // A hash without a parseable catalog entry is treated as missing (and counted as such).
    let item: Item = serde_json::from_str(&fields.remove("item")?).ok()?;
    let mut record = ItemRecord::new(
        item,
        ItemStats {
            trending: trending.unwrap_or(0.0),
            ..Default::default()
        },
    );
    decode_stats(stats.as_deref(), record.stats_mut());
    Some(record)
}

/// The events' users, each once, in first-seen order (a batch is mostly a few users' runs).
fn distinct_users<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<&'a str> {
    events
        .into_iter()
        .map(|e| &*e.user_id)
        .collect::<indexmap::IndexSet<_>>()
        .into_iter()
        .collect()
}

fn revrange(pipe: &mut Pipeline, key: String, n: usize) {
    pipe.cmd("ZREVRANGE").arg(key).arg(0).arg(n as isize - 1);
}

#[async_trait]
impl FeatureStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let (_pong,): (String,) = self.query(&pipe).await?;
        Ok(())
    }

    async fn user_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Arc<UserProfile>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.get(keys::profile(tenant, user_id))
            .get(keys::history(tenant, user_id));
        // Until the tenant is marked moved, the layouts before the two strings are read
        // beside them (empty replies, once a user's next events have moved them over).
        let (old, recheck) = self.old_layout(tenant);
        if old {
            pipe.hgetall(keys::user(tenant, user_id))
                .lrange(keys::recent(tenant, user_id), 0, RECENT_ITEMS as isize - 1)
                .hgetall(keys::legacy_history(tenant, user_id));
            if recheck {
                pipe.get(keys::layout(tenant));
            }
        }
        // The legacy history as pairs, not a map: it becomes the profile's map anyway, and a
        // SipHash map of up to 500 entries per feed only to be taken apart showed in the profile.
        type Strings = (Option<String>, Option<String>);
        type Old = (HashMap<String, String>, Vec<String>, Vec<(String, String)>);
        let ((packed, packed_history), (fields, recent, legacy)): (Strings, Old) =
            match (old, recheck) {
                (false, _) => (self.query(&pipe).await?, Old::default()),
                (true, false) => {
                    let (p, h, f, r, l) = self.query(&pipe).await?;
                    ((p, h), (f, r, l))
                }
                (true, true) => {
                    let (p, h, f, r, l, mark): (_, _, _, _, _, Option<String>) =
                        self.query(&pipe).await?;
                    self.old_layout_of(tenant, mark.as_deref() == Some(LAYOUT));
                    ((p, h), (f, r, l))
                }
            };
        // Impressions alone make a profile too (as in the embedded store): fatigue needs it.
        if packed.is_none() && fields.is_empty() && packed_history.is_none() && legacy.is_empty() {
            return Ok(None);
        }
        let history = match &packed_history {
            Some(p) => {
                let mut history = HistoryBuilder::default();
                // By the ids' hashes, as a served profile's history holds them: no id is
                // allocated (`ProfileItem`).
                keys::history_items(p, |item, bought, times| {
                    history.item(key_hash(item), bought, times.iter().copied())
                });
                history.build()
            }
            None => History::decode(legacy.iter().map(|(i, v)| (key_hash(i), v))),
        };
        Ok(Some(Arc::new(match &packed {
            Some(p) => profile::decode(p, history),
            None => profile::legacy(fields, recent, history),
        })))
    }

    async fn candidate_lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists, StoreError> {
        // ZREVRANGE 0 -1 would mean "everything": empty asks are answered without asking.
        let mut asks: Vec<Option<usize>> = Vec::new();
        let mut pipe = redis::pipe();
        let mut ask = |pipe: &mut Pipeline, key: String, n: usize| {
            if n == 0 {
                asks.push(None);
            } else {
                asks.push(Some(asks.iter().flatten().count()));
                revrange(pipe, key, n);
            }
        };
        ask(&mut pipe, keys::trending(tenant), query.trending);
        for (c, n) in &query.categories {
            ask(&mut pipe, keys::category(tenant, c), *n);
        }
        ask(&mut pipe, keys::new_arrivals(tenant), query.new_arrivals);
        let answers: Vec<Vec<String>> = if asks.iter().any(Option::is_some) {
            self.query(&pipe).await?
        } else {
            Vec::new()
        };
        // One list per ask, in order: trending, the categories, new arrivals.
        Ok(CandidateLists::from_ordered(asks.into_iter().map(|a| {
            a.map(|i| {
                answers[i]
                    .iter()
                    .map(|s| ItemId::from(s.as_str()))
                    .collect()
            })
            .unwrap_or_default()
        })))
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(keys::item(tenant, id));
        }
        pipe.cmd("ZMSCORE")
            .arg(keys::trending(tenant))
            .arg(ids.iter().map(|i| &**i).collect::<Vec<&str>>());
        let mut values: Vec<redis::Value> = self.query(&pipe).await?;
        let trending: Vec<Option<f64>> =
            redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))
                .map_err(unavailable)?;
        values
            .into_iter()
            .zip(trending)
            .map(|(v, t)| {
                let mut raw: HashMap<String, Vec<u8>> =
                    redis::from_redis_value(v).map_err(unavailable)?;
                // The one binary field; every other one is text.
                let stats = raw.remove(keys::STATS_FIELD);
                let fields = raw
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
                    .collect();
                Ok(item_record(fields, stats, t).map(Arc::new))
            })
            .collect()
    }

    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        if let Some(cache) = &self.catalog {
            for item in &items {
                cache.invalidate(&(tenant.to_owned(), item.item_id.clone()));
            }
        }
        // Read what is there: an item that changes category takes its engagement along.
        let mut read = redis::pipe();
        for item in &items {
            read.cmd("HMGET")
                .arg(keys::item(tenant, &item.item_id))
                .arg("item")
                .arg(keys::STATS_FIELD);
        }
        let existing: Vec<(Option<String>, Option<Vec<u8>>)> = self.query(&read).await?;
        if let Some(limit) = self.limit(tenant, Component::Items) {
            let new: HashSet<&str> = items
                .iter()
                .zip(&existing)
                .filter(|(_, (old, _))| old.is_none())
                .map(|(i, _)| &*i.item_id)
                .collect();
            // Every item is in the new-arrivals list: its size is the catalog's.
            let (held,): (usize,) = self
                .query(redis::pipe().zcard(keys::new_arrivals(tenant)))
                .await?;
            if new.len() > room(Some(limit), held) {
                return Err(StoreError::QuotaExceeded {
                    tenant: tenant.to_owned(),
                    component: Component::Items,
                    limit,
                    held,
                    adding: new.len(),
                });
            }
        }

        let mut write = redis::pipe();
        for (item, (old, raw_stats)) in items.iter().zip(existing) {
            let mut stats = ItemStats::default();
            decode_stats(raw_stats.as_deref(), &mut stats);
            let old_category = old
                .and_then(|json| serde_json::from_str::<Item>(&json).ok())
                .map(|i| i.category)
                .filter(|c| *c != item.category);
            if let Some(c) = old_category {
                write
                    .zrem(keys::category(tenant, &c), &*item.item_id)
                    .ignore();
            }
            let json = serde_json::to_string(item).map_err(unavailable)?;
            write
                .hset(keys::item(tenant, &item.item_id), "item", json)
                .ignore()
                .zadd(keys::new_arrivals(tenant), &*item.item_id, item.created_at)
                .ignore()
                .zadd(
                    keys::category(tenant, &item.category),
                    &*item.item_id,
                    stats.popularity(),
                )
                .ignore();
            write
                .cmd("ZADD")
                .arg(keys::trending(tenant))
                .arg("NX")
                .arg(0)
                .arg(&*item.item_id)
                .ignore();
        }
        self.query::<()>(&write).await
    }

    async fn patch_item(
        &self,
        tenant: &str,
        item_id: &str,
        patch: &ItemPatch,
    ) -> Result<Option<Item>, StoreError> {
        if let Some(cache) = &self.catalog {
            cache.invalidate(&(tenant.to_owned(), ItemId::from(item_id)));
        }
        let key = keys::item(tenant, item_id);
        // Optimistic: read, change, write back only if nobody wrote in between (a compare-and-
        // set script); a concurrent change of the same item makes this try again.
        for _ in 0..8 {
            let mut read = redis::pipe();
            read.hget(&key, "item");
            let (old,): (Option<String>,) = self.query(&read).await?;
            let Some(old) = old else { return Ok(None) };
            let mut item: Item = serde_json::from_str(&old).map_err(unavailable)?;
            patch.apply(&mut item);
            let new = serde_json::to_string(&item).map_err(unavailable)?;
            let mut cas = redis::pipe();
            cas.cmd("EVAL")
                .arg(COMPARE_AND_SET_LUA)
                .arg(1)
                .arg(&key)
                .arg(&old)
                .arg(&new);
            let (swapped,): (i64,) = self.query(&cas).await?;
            if swapped == 1 {
                return Ok(Some(item));
            }
        }
        Err(StoreError::Unavailable(format!(
            "redis: item {item_id:?} kept changing during the patch"
        )))
    }

    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError> {
        let mut outcome = ApplyOutcome::default();
        if events.is_empty() {
            return Ok(outcome);
        }
        let catalog = self.catalog_entries(tenant, events).await?;
        let over_budget = self.over_user_budget(tenant, events).await?;

        let dedup = (self.dedup.window > Duration::ZERO).then(|| {
            let now_ms = (crate::domain::unix_now() * 1000.0) as u64;
            apply::DedupBuckets::at(tenant, self.dedup.window, now_ms)
        });
        let mut known = Vec::with_capacity(events.len());
        let mut batch_ids = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            match catalog.get(&*e.item_id) {
                // The script checks ids against earlier batches; a repeat within this one
                // is settled here.
                Some(_)
                    if dedup.is_some()
                        && e.event_id.as_ref().is_some_and(|id| !batch_ids.insert(id)) =>
                {
                    outcome.duplicates.push(i);
                }
                Some(_) if over_budget.contains(&i) => outcome.over_budget.push(i),
                Some(item) => known.push((i, e, &**item)),
                None => outcome.unknown_items.push(i),
            }
        }
        // The user index: what the `users` budget counts (idempotent, so sent once even when
        // chunks go again).
        let mut index = redis::pipe();
        if !known.is_empty() {
            index
                .cmd("SADD")
                .arg(keys::users(tenant))
                .arg(distinct_users(known.iter().map(|(_, e, _)| *e)))
                .ignore();
        }
        // A chunk with a replayed id is written by none of its events: it comes back with
        // the duplicates' positions and goes again without them. Each round drops at least
        // one event per returned chunk, so this ends.
        let mut pending: Vec<Vec<(usize, &Event, &Item)>> =
            known.chunks(EVENTS_PER_CALL).map(<[_]>::to_vec).collect();
        while !pending.is_empty() {
            let mut write = std::mem::replace(&mut index, redis::pipe());
            for chunk in &pending {
                let events: Vec<(&Event, &Item)> = chunk.iter().map(|(_, e, i)| (*e, *i)).collect();
                write.invoke_script(&apply::invocation(tenant, &events, dedup.as_ref()));
            }
            let answers: Vec<Vec<usize>> = self.script(&write).await?;
            let mut again = Vec::new();
            for (chunk, duplicates) in pending.into_iter().zip(answers) {
                if duplicates.is_empty() {
                    continue;
                }
                // Positions count the events that carry an id (only those were checked).
                let with_id: Vec<usize> = (0..chunk.len())
                    .filter(|&j| chunk[j].1.event_id.is_some())
                    .collect();
                let dropped: HashSet<usize> = duplicates.iter().map(|&d| with_id[d - 1]).collect();
                let mut rest = Vec::with_capacity(chunk.len());
                for (j, entry) in chunk.into_iter().enumerate() {
                    if dropped.contains(&j) {
                        outcome.duplicates.push(entry.0);
                    } else {
                        rest.push(entry);
                    }
                }
                if !rest.is_empty() {
                    again.push(rest);
                }
            }
            pending = again;
        }
        outcome.duplicates.sort_unstable();
        Ok(outcome)
    }

    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        // Counted exactly; bytes from `MEMORY USAGE` of a few random entries (with their
        // companion keys), times the count.
        const SAMPLE: usize = 8;
        let mut pipe = redis::pipe();
        pipe.zcard(keys::new_arrivals(tenant))
            .scard(keys::users(tenant))
            .cmd("ZRANDMEMBER")
            .arg(keys::new_arrivals(tenant))
            .arg(SAMPLE)
            .cmd("SRANDMEMBER")
            .arg(keys::users(tenant))
            .arg(SAMPLE);
        let (items, users, some_items, some_users): (u64, u64, Vec<String>, Vec<String>) =
            self.query(&pipe).await?;
        let mut sizes = redis::pipe();
        for i in &some_items {
            sizes.cmd("MEMORY").arg("USAGE").arg(keys::item(tenant, i));
        }
        for u in &some_users {
            // The layouts before the profile string too, while users still hold them.
            for key in [
                keys::profile(tenant, u),
                keys::history(tenant, u),
                keys::user(tenant, u),
                keys::recent(tenant, u),
            ] {
                sizes.cmd("MEMORY").arg("USAGE").arg(key);
            }
        }
        let bytes: Vec<Option<u64>> = match sizes.is_empty() {
            true => Vec::new(),
            false => self.query(&sizes).await?,
        };
        let (item_bytes, user_bytes) = bytes.split_at(some_items.len());
        let mean = |b: &[Option<u64>], per: usize| {
            let n = (b.len() / per).max(1) as u64;
            b.iter().flatten().sum::<u64>() / n
        };
        // Beside each entry: its member in the lists (~2 × 64 bytes of zset/set entry).
        Ok(TenantUsage {
            items: Usage {
                entries: items,
                bytes: items * (mean(item_bytes, 1) + 128),
            },
            users: Usage {
                entries: users,
                bytes: users * (mean(user_bytes, 4) + 64),
            },
        })
    }
}

/// Sets an item's catalog field to ARGV[2] only if it still is ARGV[1].
const COMPARE_AND_SET_LUA: &str = "if redis.call('HGET', KEYS[1], 'item') == ARGV[1] then \
     redis.call('HSET', KEYS[1], 'item', ARGV[2]) return 1 else return 0 end";

#[async_trait]
impl RulesStore for RedisStore {
    async fn rules(&self, tenant: &str) -> Result<Option<StoredRules>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(keys::rules(tenant))
            .arg("version")
            .arg("doc");
        let ((version, document),): ((Option<u64>, Option<String>),) = self.query(&pipe).await?;
        Ok(version
            .zip(document)
            .map(|(version, document)| StoredRules { version, document }))
    }

    async fn put_rules(&self, tenant: &str, document: &str) -> Result<u64, StoreError> {
        let key = keys::rules(tenant);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hincr(&key, "version", 1)
            .hset(&key, "doc", document)
            .ignore();
        let (version,): (u64,) = self.query(&pipe).await?;
        Ok(version)
    }
}

#[async_trait]
impl FeedSessions for RedisStore {
    async fn pages(&self, tenant: &str, session: &str) -> Result<Pages, StoreError> {
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::session(tenant, session));
        let (pages,): (HashMap<u32, String>,) = self.query(&pipe).await?;
        Ok(pages
            .into_iter()
            .map(|(n, page)| (n, decode_page(&page)))
            .collect())
    }

    async fn put_page(
        &self,
        tenant: &str,
        session: &str,
        number: u32,
        page: &Page,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = keys::session(tenant, session);
        let mut pipe = redis::pipe();
        pipe.hset(&key, number, encode_page(page))
            .ignore()
            .expire(&key, ttl.as_secs().max(1) as i64)
            .ignore();
        self.query(&pipe).await
    }
}
