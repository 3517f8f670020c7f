//! The Redis backend (`deadpool-redis`), single node or cluster. Every operation is one
//! pipeline — one round trip — bounded by the command timeout. Key layout: `store::keys`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, FromRedisValue, Pipeline};
use deadpool_redis::{Runtime, Timeouts};

use super::keys::{self, BRAND_PREFIX, CATEGORY_PREFIX, ITEM_COUNTERS};
use super::{ApplyOutcome, CandidateLists, CandidateQuery, Dedup, FeatureStore, StoreError};
use crate::catalog::{
    Event, Item, ItemId, ItemRecord, ItemStats, RECENT_ITEMS, UserProfile, WINDOWS, WindowCounts,
};
use crate::config::RedisSettings;
use crate::quality::{FeedLog, ServedFeed};

enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

pub struct RedisStore {
    pool: Pool,
    timeout: Duration,
    dedup: Dedup,
    /// (tenant, item id) → catalog entry, for event ingestion: saves a round trip per batch.
    catalog: Option<moka::sync::Cache<(String, ItemId), Arc<Item>>>,
}

/// Applies a chunk of events, each atomically with its deduplication: `SET NX PX` on the
/// event id, and only if that took, the same updates as `ItemStats::record` and
/// `UserProfile::record`. The updates of the applied events are summed in Lua and written
/// once per key (calls from Lua into Redis are what a chunk costs); window counts rotate as
/// `WindowCounts::record` does (the two must stay in step; the backend equivalence tests
/// compare them). Every key carries the tenant's hash tag, so a chunk is one slot. Returns,
/// per event, 1 if applied and 0 for a duplicate.
///
/// KEYS: trending, then 5 per event (seen, item, category, user, recent).
/// ARGV: dedup ms, window lengths (JSON array), then 11 per event (see
/// [`apply_events_invocation`]).
const APPLY_EVENTS_LUA: &str = r"
local dedup_ms = tonumber(ARGV[1])
local lengths = cjson.decode(ARGV[2])
local function add(t, key, field, delta)
  local h = t[key]
  if not h then h = {}; t[key] = h; t[#t + 1] = key end
  h[field] = (h[field] or 0) + delta
end
local hashes, zsets, windows, recents, applied = {}, {}, {}, {}, {}
for e = 0, (#KEYS - 1) / 5 - 1 do
  local K, A = 1 + e * 5, 2 + e * 11
  if ARGV[A + 1] == '1' and dedup_ms > 0
      and not redis.call('SET', KEYS[K + 1], '1', 'NX', 'PX', dedup_ms) then
    applied[e + 1] = 0
  else
    applied[e + 1] = 1
    local item, id = KEYS[K + 2], ARGV[A + 3]
    add(hashes, item, ARGV[A + 2], 1)
    local k, at = tonumber(ARGV[A + 9]) + 1, tonumber(ARGV[A + 10])
    -- Per window 9 numbers: bucket, current[4], previous[4] (offsets o+1, o+2.., o+6..).
    local ws = windows[item]
    if not ws then
      local raw = redis.call('HGET', item, 'windows')
      if raw and #raw == WINDOW_BYTES then
        ws = {struct.unpack(WINDOW_FORMAT, raw)}
      else
        ws = {}
        for i = 1, 9 * #lengths do ws[i] = 0 end
      end
      windows[item] = ws
      windows[#windows + 1] = item
    end
    for i, length in ipairs(lengths) do
      local o = (i - 1) * 9
      local bucket = math.floor(at / length)
      local d = bucket - ws[o + 1]
      if d == 0 then
        ws[o + 1 + k] = ws[o + 1 + k] + 1
      elseif d > 0 then
        for j = 2, 5 do
          ws[o + 4 + j] = (d == 1) and ws[o + j] or 0
          ws[o + j] = 0
        end
        ws[o + 1 + k] = 1
        ws[o + 1] = bucket
      elseif d == -1 then
        ws[o + 5 + k] = ws[o + 5 + k] + 1
      end
    end
    local trending, popularity = tonumber(ARGV[A + 4]), tonumber(ARGV[A + 5])
    if trending > 0 then add(zsets, KEYS[1], id, trending) end
    if popularity > 0 then add(zsets, KEYS[K + 3], id, popularity) end
    local aw = tonumber(ARGV[A + 6])
    if aw > 0 then
      local user = KEYS[K + 4]
      add(hashes, user, 'interactions', 1)
      add(hashes, user, 'affinity_total', aw)
      add(hashes, user, 'price_sum', tonumber(ARGV[A + 7]))
      add(hashes, user, 'price_count', 1)
      add(hashes, user, ARGV[A + 8], aw)
      add(hashes, user, ARGV[A + 11], aw)
      local r = recents[KEYS[K + 5]]
      if not r then r = {}; recents[KEYS[K + 5]] = r; recents[#recents + 1] = KEYS[K + 5] end
      r[#r + 1] = id
    end
  end
end
local function num(x) return string.format('%.17g', x) end
for _, key in ipairs(hashes) do
  for field, delta in pairs(hashes[key]) do redis.call('HINCRBYFLOAT', key, field, num(delta)) end
end
-- XX: only members already listed. An item moved to another category was removed from the
-- old one; a replica whose catalog cache still says the old category must not put it back.
for _, key in ipairs(zsets) do
  for member, delta in pairs(zsets[key]) do
    redis.call('ZADD', key, 'XX', 'INCR', num(delta), member)
  end
end
for _, item in ipairs(windows) do
  redis.call('HSET', item, 'windows', struct.pack(WINDOW_FORMAT, unpack(windows[item], 1, WINDOW_VALUES)))
end
for _, key in ipairs(recents) do
  -- Newest last in r: push each item once, at its latest position.
  local r, last, push = recents[key], {}, {}
  for i, id in ipairs(r) do last[id] = i end
  for i, id in ipairs(r) do
    if last[id] == i then
      redis.call('LREM', key, 0, id)
      push[#push + 1] = id
    end
  end
  redis.call('LPUSH', key, unpack(push))
  redis.call('LTRIM', key, 0, RECENT_LIMIT)
end
return applied
";
/// The `windows` field of an item: per window (in `WINDOWS` order) its bucket, current[4] and
/// previous[4] counts, as little-endian f64 (Lua's `struct` packs them at C speed; JSON
/// through `cjson` cost more than all the event's other writes together).
const WINDOW_VALUES: usize = 9 * WINDOWS.len();

fn decode_windows(raw: &[u8]) -> Option<[WindowCounts; 3]> {
    if raw.len() != WINDOW_VALUES * 8 {
        return None;
    }
    let v: Vec<f64> = raw
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Some(std::array::from_fn(|w| {
        let o = w * 9;
        WindowCounts {
            bucket: v[o] as i64,
            current: std::array::from_fn(|k| v[o + 1 + k]),
            previous: std::array::from_fn(|k| v[o + 5 + k]),
        }
    }))
}

/// Catalog entries a replica keeps for ingestion (a few hundred bytes each).
const CATALOG_CACHE_CAPACITY: u64 = 500_000;

/// Events per script call: amortizes the call and sums repeated keys, while keeping each
/// call (which blocks the Redis thread) around a millisecond.
const EVENTS_PER_CALL: usize = 200;

static APPLY_EVENTS: LazyLock<(String, redis::Script)> = LazyLock::new(|| {
    let code = APPLY_EVENTS_LUA
        .replace("RECENT_LIMIT", &(RECENT_ITEMS - 1).to_string())
        .replace(
            "WINDOW_FORMAT",
            &format!("'<{}'", "d".repeat(WINDOW_VALUES)),
        )
        .replace("WINDOW_BYTES", &(WINDOW_VALUES * 8).to_string())
        .replace("WINDOW_VALUES", &WINDOW_VALUES.to_string());
    let script = redis::Script::new(&code);
    (code, script)
});

/// One script call for `events` (each with its catalog item).
fn apply_events_invocation(
    tenant: &str,
    events: &[(&Event, &Item)],
    dedup_ms: &str,
) -> redis::ScriptInvocation<'static> {
    let mut call = APPLY_EVENTS.1.prepare_invoke();
    let lengths: Vec<f64> = WINDOWS.iter().map(|(_, length)| *length).collect();
    call.key(keys::trending(tenant))
        .arg(dedup_ms)
        .arg(serde_json::to_string(&lengths).expect("numbers serialize"));
    for (e, item) in events {
        call.key(keys::seen(tenant, e.event_id.as_deref().unwrap_or("")))
            .key(keys::item(tenant, &e.item_id))
            .key(keys::category(tenant, &item.category))
            .key(keys::user(tenant, &e.user_id))
            .key(keys::recent(tenant, &e.user_id))
            .arg(if e.event_id.is_some() { "1" } else { "0" })
            // ITEM_COUNTERS lists the counters in EventKind order.
            .arg(ITEM_COUNTERS[e.kind as usize])
            .arg(&*e.item_id)
            .arg(e.kind.trending_increment(e.timestamp))
            .arg(e.kind.popularity_weight())
            .arg(e.kind.affinity_weight())
            .arg(item.price)
            .arg(format!("{CATEGORY_PREFIX}{}", item.category))
            .arg(e.kind as usize)
            .arg(e.timestamp)
            .arg(format!("{BRAND_PREFIX}{}", item.brand));
    }
    call
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Builds the pool; connections are opened on first use, so a Redis that is down at
    /// start-up degrades the service instead of stopping it.
    pub fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let timeouts = Timeouts {
            wait: Some(settings.command_timeout()),
            create: Some(settings.connect_timeout()),
            recycle: Some(settings.command_timeout()),
        };
        let urls = settings.urls();
        let pool = if settings.cluster {
            let mut cfg = deadpool_redis::cluster::Config::from_urls(urls);
            cfg.pool = Some(deadpool_redis::PoolConfig {
                max_size: settings.pool_size,
                timeouts,
                ..Default::default()
            });
            Pool::Cluster(
                cfg.create_pool(Some(Runtime::Tokio1))
                    .map_err(unavailable)?,
            )
        } else {
            let [url] = urls.as_slice() else {
                return Err(unavailable(
                    "redis.url must be one URL unless redis.cluster = true",
                ));
            };
            let connection = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout()))
                .set_response_timeout(Some(settings.command_timeout()));
            let manager = deadpool_redis::Manager::new_with_config(url.as_str(), connection)
                .map_err(unavailable)?;
            Pool::Single(
                deadpool_redis::Pool::builder(manager)
                    .max_size(settings.pool_size)
                    .timeouts(timeouts)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(unavailable)?,
            )
        };
        Ok(Self {
            pool,
            timeout: settings.command_timeout(),
            dedup: Dedup::default(),
            catalog: (settings.catalog_cache_ms > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(CATALOG_CACHE_CAPACITY)
                    .time_to_live(Duration::from_millis(settings.catalog_cache_ms))
                    .build()
            }),
        })
    }

    pub fn with_dedup(self, dedup: Dedup) -> Self {
        Self { dedup, ..self }
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
        let answer = match &self.pool {
            Pool::Single(p) => {
                let mut c = p.get().await.map_err(unavailable)?;
                tokio::time::timeout(self.timeout, pipe.query_async(&mut *c)).await
            }
            Pool::Cluster(p) => {
                let mut c = p.get().await.map_err(unavailable)?;
                tokio::time::timeout(self.timeout, pipe.query_async(&mut *c)).await
            }
        };
        answer.map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))
    }

    /// Loads the event script (on every primary of a cluster: the command is routed to all).
    async fn load_script(&self) -> Result<(), StoreError> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(&APPLY_EVENTS.0);
        let answer = match &self.pool {
            Pool::Single(p) => {
                let mut c = p.get().await.map_err(unavailable)?;
                tokio::time::timeout(self.timeout, load.query_async::<()>(&mut *c)).await
            }
            Pool::Cluster(p) => {
                let mut c = p.get().await.map_err(unavailable)?;
                tokio::time::timeout(self.timeout, load.query_async::<()>(&mut *c)).await
            }
        };
        answer
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
            .map_err(unavailable)
    }

    /// Deletes every key of `tenant` (used by `eaglerank load --replace`). Single node only:
    /// on a cluster, SCAN would visit one arbitrary node.
    pub async fn clear_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        if matches!(self.pool, Pool::Cluster(_)) {
            return Err(unavailable(
                "clearing a tenant is not supported on a cluster: load into an empty cluster",
            ));
        }
        let pattern = format!("er:{{{tenant}}}:*");
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, keys),): ((u64, Vec<String>),) = self.query(&pipe).await?;
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
}

fn parse_f64(fields: &HashMap<String, String>, name: &str) -> f64 {
    fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn item_record(
    mut fields: HashMap<String, String>,
    windows: Option<Vec<u8>>,
    trending: Option<f64>,
) -> Option<ItemRecord> {
    // A hash without a parseable catalog entry is treated as missing (and counted as such).
    let item: Item = serde_json::from_str(&fields.remove("item")?).ok()?;
    let [impressions, clicks, add_to_carts, purchases] =
        ITEM_COUNTERS.map(|f| parse_f64(&fields, f));
    let windows = windows
        .as_deref()
        .and_then(decode_windows)
        .unwrap_or_default();
    Some(ItemRecord {
        item,
        stats: ItemStats {
            impressions,
            clicks,
            add_to_carts,
            purchases,
            trending: trending.unwrap_or(0.0),
            windows,
        },
    })
}

fn user_profile(fields: HashMap<String, String>, recent: Vec<String>) -> UserProfile {
    let mut p = UserProfile {
        interactions: parse_f64(&fields, "interactions"),
        affinity_total: parse_f64(&fields, "affinity_total") as f32,
        price_sum: parse_f64(&fields, "price_sum"),
        price_count: parse_f64(&fields, "price_count"),
        recent_items: recent.into_iter().map(ItemId::from).collect(),
        ..Default::default()
    };
    for (field, value) in fields {
        let value: f32 = value.parse().unwrap_or(0.0);
        if let Some(c) = field.strip_prefix(CATEGORY_PREFIX) {
            p.category_affinity.insert(c.to_owned(), value);
        } else if let Some(b) = field.strip_prefix(BRAND_PREFIX) {
            p.brand_affinity.insert(b.to_owned(), value);
        }
    }
    p
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
        pipe.hgetall(keys::user(tenant, user_id)).lrange(
            keys::recent(tenant, user_id),
            0,
            RECENT_ITEMS as isize - 1,
        );
        let (fields, recent): (HashMap<String, String>, Vec<String>) = self.query(&pipe).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(user_profile(fields, recent))))
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
        let mut lists = asks.into_iter().map(|a| {
            a.map(|i| {
                answers[i]
                    .iter()
                    .map(|s| ItemId::from(s.as_str()))
                    .collect()
            })
            .unwrap_or_default()
        });
        let trending = lists.next().unwrap_or_default();
        let categories = (0..query.categories.len())
            .map(|_| lists.next().unwrap_or_default())
            .collect();
        Ok(CandidateLists {
            trending,
            categories,
            new_arrivals: lists.next().unwrap_or_default(),
        })
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
                let windows = raw.remove(keys::WINDOWS_FIELD);
                let fields = raw
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
                    .collect();
                Ok(item_record(fields, windows, t).map(Arc::new))
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
                .arg(&ITEM_COUNTERS[..]);
        }
        let existing: Vec<(
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        )> = self.query(&read).await?;

        let mut write = redis::pipe();
        for (item, (old, _impressions, clicks, carts, purchases)) in items.iter().zip(existing) {
            let stats = ItemStats {
                clicks: clicks.unwrap_or(0.0),
                add_to_carts: carts.unwrap_or(0.0),
                purchases: purchases.unwrap_or(0.0),
                ..Default::default()
            };
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

        let dedup_ms = self.dedup.window.as_millis().to_string();
        let mut sent = Vec::with_capacity(events.len());
        let mut known = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            match catalog.get(&*e.item_id) {
                Some(item) => {
                    sent.push(i);
                    known.push((e, &**item));
                }
                None => outcome.unknown_items.push(i),
            }
        }
        if sent.is_empty() {
            return Ok(outcome);
        }
        let mut write = redis::pipe();
        for chunk in known.chunks(EVENTS_PER_CALL) {
            write.invoke_script(&apply_events_invocation(tenant, chunk, &dedup_ms));
        }
        let answers: Vec<Vec<i64>> = match self.run(&write).await? {
            // The server lost its scripts (restart, failover, SCRIPT FLUSH): no event of the
            // batch ran, load and send again.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_script().await?;
                self.query(&write).await?
            }
            other => other.map_err(unavailable)?,
        };
        let applied = answers.into_iter().flatten();
        outcome.duplicates = sent
            .into_iter()
            .zip(applied)
            .filter_map(|(i, a)| (a == 0).then_some(i))
            .collect();
        Ok(outcome)
    }
}

/// The served-feed log of live ranking quality, shared by every replica.
#[async_trait]
impl FeedLog for RedisStore {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: &ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(feed).map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::feed(tenant, request_id))
            .arg(json)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .ignore();
        self.query(&pipe).await
    }

    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for r in request_ids {
            pipe.get(keys::feed(tenant, r));
        }
        let found: Vec<Option<String>> = self.query(&pipe).await?;
        Ok(found
            .into_iter()
            .map(|json| serde_json::from_str(&json?).ok())
            .collect())
    }

    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for r in request_ids {
            pipe.cmd("SET")
                .arg(keys::feed_click(tenant, r))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(ttl.as_secs().max(1));
        }
        let set: Vec<Option<String>> = self.query(&pipe).await?;
        Ok(set.into_iter().map(|s| s.is_some()).collect())
    }
}
