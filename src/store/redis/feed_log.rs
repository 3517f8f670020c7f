//! The served-feed log in Redis, packed: feeds live in one hash per time bucket (a thirtieth
//! of the join window) rather than a key per feed, so a feed costs a hash field, not a key with
//! its own expiry and JSON.
//!
//! - `er:{t}:feeds:<bucket>`: field = the request id (a UUID's 16 bytes; another id as its
//!   text after a `#`), value = `<labels>\n<item id>\n<item id>…`, items in rank order. The
//!   hash expires the window and two buckets after its last feed: every feed in it is kept for
//!   at least the window.
//! - `er:{t}:feedlabels`: labels id (8 hex digits of a hash) → `model\nversion[\nexperiment\narm]`;
//!   a handful of entries, written once per process and label set.
//!
//! A lookup does not know when a feed was served (request ids carry no time), so it asks every
//! bucket of the window for all the requested ids: one `HMGET` per bucket, ~32 commands in one
//! round trip whatever the number of ids. Feeds logged before this layout (`er:{t}:feed:<id>`,
//! JSON) are still read, until they expire.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;

use super::{RedisStore, unavailable};
use crate::store::keys;
use crate::store::{FeedLog, LoggedFeed, ServedFeed, StoreError, Usage};

/// Buckets per join window.
const BUCKETS_PER_WINDOW: u64 = 30;

/// The bucket length for a join window: a thirtieth of it, at least a second.
fn bucket_seconds(window: Duration) -> u64 {
    (window.as_secs() / BUCKETS_PER_WINDOW).max(1)
}

/// A request id as a hash field: a UUID's 16 bytes, any other id as `#<id>` (never 16 bytes
/// that could be a UUID's: ids are ASCII and `#` is not a UUID byte pattern we produce).
pub(super) fn field(request_id: &str) -> Vec<u8> {
    match uuid::Uuid::parse_str(request_id) {
        Ok(u) => u.as_bytes().to_vec(),
        Err(_) => [b"#", request_id.as_bytes()].concat(),
    }
}

/// The labels of a feed (model, version, experiment arm) as stored, and their id.
fn labels(feed: &ServedFeed) -> (String, String) {
    let mut text = format!("{}\n{}", feed.model, feed.version);
    if let Some((experiment, arm)) = &feed.arm {
        text.push('\n');
        text.push_str(experiment);
        text.push('\n');
        text.push_str(arm);
    }
    // FNV-1a: stable across processes and releases (every replica must name a label set alike).
    let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (format!("{hash:08x}"), text)
}

/// A feed's value: its labels id, then its items, a line each.
fn encode(labels_id: &str, feed: &ServedFeed) -> String {
    let mut value =
        String::with_capacity(9 + feed.items.iter().map(|i| i.len() + 1).sum::<usize>());
    value.push_str(labels_id);
    for item in &feed.items {
        value.push('\n');
        value.push_str(item);
    }
    value
}

fn decode(value: &str, labels: &std::collections::HashMap<String, String>) -> Option<ServedFeed> {
    let mut lines = value.split('\n');
    let text = labels.get(lines.next()?)?;
    let mut parts = text.split('\n');
    let (model, version) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let arm = match (parts.next(), parts.next()) {
        (Some(e), Some(a)) => Some((e.to_owned(), a.to_owned())),
        _ => None,
    };
    Some(ServedFeed {
        model,
        version,
        items: lines.map(Into::into).collect(),
        arm,
    })
}

impl RedisStore {
    fn now_seconds() -> u64 {
        crate::domain::unix_now() as u64
    }

    /// The tenant's bucket keys that can hold feeds now, oldest first.
    fn live_buckets(&self, tenant: &str) -> Vec<String> {
        let length = bucket_seconds(self.feed_window);
        let now = Self::now_seconds() / length;
        (now.saturating_sub(BUCKETS_PER_WINDOW + 2)..=now)
            .map(|b| keys::feed_bucket(tenant, b))
            .collect()
    }

    /// Feeds per live bucket, oldest first.
    async fn bucket_sizes(&self, tenant: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let buckets = self.live_buckets(tenant);
        let mut pipe = redis::pipe();
        for b in &buckets {
            pipe.hlen(b);
        }
        let sizes: Vec<u64> = self.query(&pipe).await?;
        Ok(buckets.into_iter().zip(sizes).collect())
    }
}

impl RedisStore {
    /// One tenant's feeds in one pipeline (a cluster routes a pipeline to one slot, and a
    /// tenant's keys share one): the label sets not written yet, one `HSET` of every feed into
    /// the bucket of now, and one `EXPIRE`.
    async fn write_feeds(
        &self,
        tenant: &str,
        feeds: &[(&str, &ServedFeed)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let length = bucket_seconds(ttl);
        let key = keys::feed_bucket(tenant, Self::now_seconds() / length);
        let mut pipe = redis::pipe();
        let mut new_labels: Vec<(String, String)> = Vec::new();
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        {
            let written = self
                .labels_written
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (request_id, feed) in feeds {
                let (labels_id, labels_text) = labels(feed);
                let label_key = (tenant.to_owned(), labels_id);
                if !written.contains(&label_key) && !new_labels.contains(&label_key) {
                    pipe.cmd("HSETNX")
                        .arg(keys::feed_labels(tenant))
                        .arg(&label_key.1)
                        .arg(labels_text)
                        .ignore();
                    new_labels.push(label_key.clone());
                }
                hset.arg(field(request_id)).arg(encode(&label_key.1, feed));
            }
        }
        pipe.add_command(hset)
            .ignore()
            // Pushed back by every write (EXPIRE's NX would need Redis 7): the bucket goes a
            // window and two buckets after its last feed.
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl.as_secs() + 2 * length)
            .ignore();
        self.query::<()>(&pipe).await?;
        // Only once written: a failed write is tried again by the next feed.
        self.labels_written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(new_labels);
        Ok(())
    }
}

#[async_trait]
impl FeedLog for RedisStore {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write_feeds(tenant, &[(request_id, &feed)], ttl).await
    }

    /// A pipeline per tenant, all at once.
    async fn record_many(&self, feeds: &[LoggedFeed], ttl: Duration) -> Result<(), StoreError> {
        let mut tenants: Vec<(&str, Vec<(&str, &ServedFeed)>)> = Vec::new();
        for f in feeds {
            let entry = (f.request_id.as_str(), &f.feed);
            match tenants.iter_mut().find(|(t, _)| *t == f.tenant) {
                Some((_, list)) => list.push(entry),
                None => tenants.push((&f.tenant, vec![entry])),
            }
        }
        let writes = tenants
            .iter()
            .map(|(tenant, list)| self.write_feeds(tenant, list, ttl));
        futures::future::join_all(writes)
            .await
            .into_iter()
            .collect()
    }

    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<Vec<u8>> = request_ids.iter().map(|r| field(r)).collect();
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::feed_labels(tenant));
        for bucket in self.live_buckets(tenant) {
            pipe.cmd("HMGET").arg(bucket).arg(&fields);
        }
        for r in request_ids {
            pipe.get(keys::feed(tenant, r));
        }
        let mut answers: Vec<redis::Value> = self.query(&pipe).await?;
        let legacy = answers.split_off(answers.len() - request_ids.len());
        let mut answers = answers.into_iter();
        let labels: std::collections::HashMap<String, String> =
            redis::from_redis_value(answers.next().expect("the labels")).map_err(unavailable)?;
        let mut found: Vec<Option<ServedFeed>> = vec![None; request_ids.len()];
        // Newest bucket last: a request id logged twice (a retried record) reads its last.
        for bucket in answers {
            let values: Vec<Option<String>> =
                redis::from_redis_value(bucket).map_err(unavailable)?;
            for (slot, value) in found.iter_mut().zip(values) {
                if let Some(feed) = value.and_then(|v| decode(&v, &labels)) {
                    *slot = Some(feed);
                }
            }
        }
        for (slot, old) in found.iter_mut().zip(legacy) {
            if slot.is_none() {
                let json: Option<String> = redis::from_redis_value(old).map_err(unavailable)?;
                *slot = json.and_then(|j| serde_json::from_str(&j).ok());
            }
        }
        Ok(found)
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

    async fn held(&self, tenant: &str) -> Result<Option<Usage>, StoreError> {
        let sizes = self.bucket_sizes(tenant).await?;
        let held: Vec<&String> = sizes
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(b, _)| b)
            .collect();
        let mut pipe = redis::pipe();
        for bucket in &held {
            // MEMORY USAGE samples a few fields of a large hash: an estimate, cheaply.
            pipe.cmd("MEMORY").arg("USAGE").arg(*bucket);
        }
        let bytes: Vec<Option<u64>> = match held.is_empty() {
            true => Vec::new(),
            false => self.query(&pipe).await?,
        };
        Ok(Some(Usage {
            entries: sizes.iter().map(|(_, n)| n).sum(),
            bytes: bytes.into_iter().flatten().sum(),
        }))
    }

    async fn trim(&self, tenant: &str, max: u64) -> Result<u64, StoreError> {
        let sizes = self.bucket_sizes(tenant).await?;
        let mut held: u64 = sizes.iter().map(|(_, n)| n).sum();
        // Whole buckets, oldest first: a thirtieth of the window's feeds at a time.
        let mut gone = Vec::new();
        for (bucket, n) in sizes {
            if held <= max {
                break;
            }
            if n > 0 {
                held -= n;
                gone.push((bucket, n));
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (bucket, _) in &gone {
            pipe.cmd("UNLINK").arg(bucket).ignore();
        }
        self.query::<()>(&pipe).await?;
        Ok(gone.iter().map(|(_, n)| n).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_survives_its_encoding() {
        for arm in [None, Some(("exp".to_owned(), "b".to_owned()))] {
            let feed = ServedFeed {
                model: "default".into(),
                version: "2026.12.03-ad0a".into(),
                items: vec!["i1".into(), "sku:9-x".into()],
                arm,
            };
            let (id, text) = labels(&feed);
            let labels = std::collections::HashMap::from([(id.clone(), text)]);
            assert_eq!(decode(&encode(&id, &feed), &labels), Some(feed));
        }
    }

    #[test]
    fn request_ids_become_compact_distinct_fields() {
        let uuid = "5f0c0d2e-8d5b-4b8e-9c1e-2f6a7b8c9d0e";
        assert_eq!(field(uuid).len(), 16);
        assert_eq!(field("req-1"), b"#req-1");
    }
}
