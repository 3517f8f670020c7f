//! Live ranking quality: each served feed is logged for a while (its model and the items in
//! rank order, in the store's [`FeedLog`]), and clicks and purchases that carry its
//! `request_id` are joined with it. From the counters (`eaglerank_ranking_*`) PromQL derives
//! CTR@k and the mean reciprocal rank of the first click, per model version and tenant —
//! offline NDCG's live counterpart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::EventSettings;
use crate::domain::{EventKind, ItemId};
use crate::store::{FeedLog, ServedFeed, StoreError, by_deadline};
use crate::telemetry::events::{FeedInteraction, FeedLogFailed, FeedRanked, InteractionUnjoined};
use crate::telemetry::{InternalEvent, Metrics};

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
            window: settings.join_window,
            metrics,
        }
    }

    /// Logs a served feed, items in rank order, giving up at `deadline` (the request's: the
    /// feed must not wait past it for its log). A failure is counted and logged, never the
    /// request's: the feed was served, only its join is lost.
    pub async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        model: &str,
        version: &str,
        items: Vec<ItemId>,
        deadline: Instant,
    ) {
        FeedRanked {
            tenant,
            model,
            version,
        }
        .emit(&self.metrics);
        let feed = ServedFeed {
            model: model.to_owned(),
            version: version.to_owned(),
            items,
        };
        let write = self.log.record(tenant, request_id, &feed, self.window);
        if let Err(error) = by_deadline(deadline, "the served-feed log", write).await {
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
                kind: e.kind.as_str(),
                position,
                first_click: candidate && first.get(e.request_id).copied().unwrap_or(false),
            }
            .emit(&self.metrics);
        }
        Ok(())
    }
}
