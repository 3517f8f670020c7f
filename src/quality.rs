//! Live ranking quality: each served feed is logged for a while (its model and the items in
//! rank order), and clicks and purchases that carry its `request_id` are joined with it.
//! From the counters (`eaglerank_ranking_*`) PromQL derives CTR@k and the mean reciprocal
//! rank of the first click, per model version and tenant — offline NDCG's live counterpart.
//!
//! The log lives where the features do: in process for the embedded store, in Redis otherwise
//! (one key per feed for the join window), so that with several replicas an event joins
//! whichever replica served the feed and whichever applies the event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::catalog::{EventKind, ItemId};
use crate::config::EventSettings;
use crate::model::ModelMetadata;
use crate::store::StoreError;
use crate::telemetry::events::{FeedInteraction, FeedLogFailed, FeedRanked, InteractionUnjoined};
use crate::telemetry::{InternalEvent, Metrics};

/// The ranks CTR@k is counted at.
pub const CUTOFFS: [usize; 4] = [1, 5, 10, 20];

/// One served feed, as the join needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedFeed {
    pub model: String,
    pub version: String,
    pub items: Vec<ItemId>,
}

/// Where served feeds are kept for the join window.
#[async_trait]
pub trait FeedLog: Send + Sync + 'static {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: &ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError>;

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
}

/// The embedded store's log: bounded, TTL'd, in process.
pub struct MemoryFeedLog {
    feeds: Cache<(String, String), Arc<ServedFeed>>,
    clicked: Cache<(String, String), ()>,
}

impl MemoryFeedLog {
    pub fn new(settings: &EventSettings) -> Self {
        let window = Duration::from_secs(settings.join_window_seconds);
        Self {
            feeds: Cache::builder()
                .max_capacity(settings.join_capacity)
                .time_to_live(window)
                .build(),
            clicked: Cache::builder()
                .max_capacity(settings.join_capacity)
                .time_to_live(window)
                .build(),
        }
    }
}

#[async_trait]
impl FeedLog for MemoryFeedLog {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: &ServedFeed,
        _: Duration,
    ) -> Result<(), StoreError> {
        let key = (tenant.to_owned(), request_id.to_owned());
        self.feeds.insert(key, Arc::new(feed.clone()));
        Ok(())
    }

    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        Ok(request_ids
            .iter()
            .map(|r| {
                let feed = self.feeds.get(&(tenant.to_owned(), (*r).to_owned()))?;
                Some((*feed).clone())
            })
            .collect())
    }

    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        _: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        Ok(request_ids
            .iter()
            .map(|r| {
                let entry = self
                    .clicked
                    .entry((tenant.to_owned(), (*r).to_owned()))
                    .or_insert(());
                entry.is_fresh()
            })
            .collect())
    }
}

/// An applied event the join looks at.
pub struct Outcome<'a> {
    pub request_id: &'a str,
    pub kind: EventKind,
    pub item_id: &'a str,
}

pub struct ServedFeeds {
    log: Arc<dyn FeedLog>,
    window: Duration,
    metrics: Arc<Metrics>,
}

impl ServedFeeds {
    pub fn new(log: Arc<dyn FeedLog>, settings: &EventSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            log,
            window: Duration::from_secs(settings.join_window_seconds),
            metrics,
        }
    }

    /// Logs a served feed, items in rank order. A failure is counted and logged, never the
    /// request's: the feed was served, only its join is lost.
    pub async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        model: &ModelMetadata,
        items: Vec<ItemId>,
    ) {
        FeedRanked { tenant, model }.emit(&self.metrics);
        let feed = ServedFeed {
            model: model.name.clone(),
            version: model.version.clone(),
            items,
        };
        if let Err(error) = self
            .log
            .record(tenant, request_id, &feed, self.window)
            .await
        {
            FeedLogFailed { error: &error }.emit(&self.metrics);
        }
    }

    /// Joins applied events with the feeds they name. Impressions and carts are not outcomes
    /// here.
    pub async fn join(&self, tenant: &str, events: &[Outcome<'_>]) {
        let outcomes: Vec<&Outcome<'_>> = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Click | EventKind::Purchase))
            .collect();
        if outcomes.is_empty() {
            return;
        }
        if let Err(error) = self.try_join(tenant, &outcomes).await {
            FeedLogFailed { error: &error }.emit(&self.metrics);
        }
    }

    async fn try_join(&self, tenant: &str, outcomes: &[&Outcome<'_>]) -> Result<(), StoreError> {
        let mut ids: Vec<&str> = outcomes.iter().map(|e| e.request_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let feeds: HashMap<&str, ServedFeed> = ids
            .iter()
            .copied()
            .zip(self.log.lookup(tenant, &ids).await?)
            .filter_map(|(id, feed)| Some((id, feed?)))
            .collect();
        // (event, position) of every joined one; the first click of each feed in this batch
        // is a candidate for the feed's first click overall.
        let mut joined = Vec::new();
        let mut candidates: Vec<&str> = Vec::new();
        for e in outcomes {
            let Some(feed) = feeds.get(e.request_id) else {
                InteractionUnjoined {
                    reason: "unknown_request",
                }
                .emit(&self.metrics);
                continue;
            };
            let Some(position) = feed.items.iter().position(|i| &**i == e.item_id) else {
                InteractionUnjoined {
                    reason: "not_in_feed",
                }
                .emit(&self.metrics);
                continue;
            };
            let candidate = e.kind == EventKind::Click && !candidates.contains(&e.request_id);
            if candidate {
                candidates.push(e.request_id);
            }
            joined.push((e, feed, position, candidate));
        }
        let first: HashMap<&str, bool> = candidates
            .iter()
            .copied()
            .zip(
                self.log
                    .claim_first_clicks(tenant, &candidates, self.window)
                    .await?,
            )
            .collect();
        for (e, feed, position, candidate) in joined {
            FeedInteraction {
                tenant,
                model: &feed.model,
                version: &feed.version,
                kind: e.kind,
                position,
                first_click: candidate && first.get(e.request_id).copied().unwrap_or(false),
            }
            .emit(&self.metrics);
        }
        Ok(())
    }
}
