//! The Redis backend (`deadpool-redis`), single node or cluster. Every operation is one
//! pipeline — one round trip — bounded by the command timeout. Key layout: `store::keys`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, FromRedisValue, Pipeline};
use deadpool_redis::{Runtime, Timeouts};

use super::keys::{self, BRAND_PREFIX, CATEGORY_PREFIX, ITEM_COUNTERS};
use super::{CandidateLists, CandidateQuery, FeatureStore, StoreError};
use crate::catalog::{Event, Item, ItemId, ItemRecord, ItemStats, RECENT_ITEMS, UserProfile};
use crate::config::RedisSettings;

enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

pub struct RedisStore {
    pool: Pool,
    timeout: Duration,
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
        })
    }

    /// Runs one pipeline on a pooled connection. Getting the connection is bounded by the
    /// pool's timeouts (wait: the command timeout; a new connection: the connect timeout),
    /// the round trip by the command timeout.
    async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
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

fn item_record(mut fields: HashMap<String, String>, trending: Option<f64>) -> Option<ItemRecord> {
    // A hash without a parseable catalog entry is treated as missing (and counted as such).
    let item: Item = serde_json::from_str(&fields.remove("item")?).ok()?;
    let [impressions, clicks, add_to_carts, purchases] =
        ITEM_COUNTERS.map(|f| parse_f64(&fields, f));
    Some(ItemRecord {
        item,
        stats: ItemStats {
            impressions,
            clicks,
            add_to_carts,
            purchases,
            trending: trending.unwrap_or(0.0),
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
                let fields: HashMap<String, String> =
                    redis::from_redis_value(v).map_err(unavailable)?;
                Ok(item_record(fields, t).map(Arc::new))
            })
            .collect()
    }

    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
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

    async fn apply_events(&self, tenant: &str, events: &[Event]) -> Result<Vec<usize>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = events
            .iter()
            .map(|e| &*e.item_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut read = redis::pipe();
        for id in &ids {
            read.hget(keys::item(tenant, id), "item");
        }
        let found: Vec<Option<String>> = self.query(&read).await?;
        let catalog: HashMap<&str, Item> = ids
            .iter()
            .zip(found)
            .filter_map(|(id, json)| Some((*id, serde_json::from_str(&json?).ok()?)))
            .collect();

        // The same updates as ItemStats::record and UserProfile::record, as atomic increments.
        let mut write = redis::pipe();
        let mut skipped = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let Some(item) = catalog.get(&*e.item_id) else {
                skipped.push(i);
                continue;
            };
            // ITEM_COUNTERS lists the counters in EventKind order.
            let counter = ITEM_COUNTERS[e.kind as usize];
            let item_key = keys::item(tenant, &e.item_id);
            write
                .cmd("HINCRBYFLOAT")
                .arg(&item_key)
                .arg(counter)
                .arg(1)
                .ignore();
            let trending = e.kind.trending_increment(e.timestamp);
            if trending > 0.0 {
                write
                    .zincr(keys::trending(tenant), &*e.item_id, trending)
                    .ignore();
            }
            let popularity = e.kind.popularity_weight();
            if popularity > 0.0 {
                write
                    .zincr(
                        keys::category(tenant, &item.category),
                        &*e.item_id,
                        popularity,
                    )
                    .ignore();
            }
            let w = e.kind.affinity_weight();
            if w > 0.0 {
                let user = keys::user(tenant, &e.user_id);
                for (field, delta) in [
                    ("interactions".to_owned(), 1.0),
                    ("affinity_total".to_owned(), f64::from(w)),
                    ("price_sum".to_owned(), item.price),
                    ("price_count".to_owned(), 1.0),
                    (format!("{CATEGORY_PREFIX}{}", item.category), f64::from(w)),
                    (format!("{BRAND_PREFIX}{}", item.brand), f64::from(w)),
                ] {
                    write
                        .cmd("HINCRBYFLOAT")
                        .arg(&user)
                        .arg(field)
                        .arg(delta)
                        .ignore();
                }
                let recent = keys::recent(tenant, &e.user_id);
                write
                    .lrem(&recent, 0, &*e.item_id)
                    .ignore()
                    .lpush(&recent, &*e.item_id)
                    .ignore()
                    .ltrim(&recent, 0, RECENT_ITEMS as isize - 1)
                    .ignore();
            }
        }
        self.query::<()>(&write).await?;
        Ok(skipped)
    }
}
