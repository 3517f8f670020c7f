//! Live ranking quality: each served feed is logged for a while (its model, experiment arm and
//! the items in rank order, in the store's [`FeedLog`]), and clicks, carts and purchases that
//! carry its `request_id` are joined with it. From the counters (`eaglerank_ranking_*`,
//! `eaglerank_experiment_*`) PromQL derives CTR@k and the mean reciprocal rank of the first
//! click, per model version and tenant, and per experiment arm — offline NDCG's live
//! counterpart. Events naming a feed of the served-feature log's sample are logged there too
//! (the outcomes a training set is labelled with).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::EventSettings;
use crate::domain::{EventKind, UnixSeconds};
use crate::learning::{FeatureLog, OutcomeRecord, Record};
use crate::store::{FeedLog, ServedFeed, StoreError, by_deadline};
use crate::telemetry::events::{
    ExperimentFeedServed, ExperimentInteraction, FeedInteraction, FeedLogFailed, FeedRanked,
    InteractionUnjoined,
};
use crate::telemetry::{InternalEvent, Metrics};

/// An applied event the join looks at.
pub struct Outcome<'a> {
    pub request_id: &'a str,
    pub kind: EventKind,
    pub item_id: &'a str,
    pub user_id: &'a str,
    pub timestamp: UnixSeconds,
}

pub struct ServedFeeds {
    log: Arc<dyn FeedLog>,
    window: Duration,
    metrics: Arc<Metrics>,
    features: Arc<FeatureLog>,
}

impl ServedFeeds {
    pub fn new(
        log: Arc<dyn FeedLog>,
        settings: &EventSettings,
        metrics: Arc<Metrics>,
        features: Arc<FeatureLog>,
    ) -> Self {
        Self {
            log,
            window: settings.join_window,
            metrics,
            features,
        }
    }

    /// Logs a served feed, items in rank order, giving up at `deadline` (the request's: the
    /// feed must not wait past it for its log). A failure is counted and logged, never the
    /// request's: the feed was served, only its join is lost.
    pub async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: ServedFeed,
        deadline: Instant,
    ) {
        FeedRanked {
            tenant,
            model: &feed.model,
            version: &feed.version,
        }
        .emit(&self.metrics);
        if let Some((experiment, arm)) = &feed.arm {
            ExperimentFeedServed {
                tenant,
                experiment,
                arm,
            }
            .emit(&self.metrics);
        }
        let write = self.log.record(tenant, request_id, &feed, self.window);
        if let Err(error) = by_deadline(deadline, "the served-feed log", write).await {
            FeedLogFailed { error: &error }.emit(&self.metrics);
        }
    }

    /// The feed served as `request_id`, while it is in the log (a feed session's first page).
    pub async fn lookup(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<ServedFeed>, StoreError> {
        Ok(self
            .log
            .lookup(tenant, &[request_id])
            .await?
            .pop()
            .flatten())
    }

    /// Joins applied events with the feeds they name (impressions are not outcomes here), and
    /// logs those of the served-feature log's feeds there.
    pub async fn join(&self, tenant: &str, events: &[Outcome<'_>]) {
        for e in events {
            if self.features.sampled(tenant, e.request_id) {
                self.features.log(Record::Outcome(OutcomeRecord {
                    request_id: e.request_id.to_owned(),
                    tenant: tenant.to_owned(),
                    user_id: e.user_id.to_owned(),
                    item_id: e.item_id.to_owned(),
                    event: e.kind.as_str().to_owned(),
                    ts: e.timestamp,
                }));
            }
        }
        let outcomes: Vec<&Outcome<'_>> = events
            .iter()
            .filter(|e| e.kind != EventKind::Impression)
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
            let first_click = candidate && first.get(e.request_id).copied().unwrap_or(false);
            if let Some((experiment, arm)) = &feed.arm {
                ExperimentInteraction {
                    tenant,
                    experiment,
                    arm,
                    kind: e.kind.as_str(),
                    position,
                    first_click,
                }
                .emit(&self.metrics);
            }
            // The model-quality counters keep their two kinds.
            if e.kind == EventKind::AddToCart {
                continue;
            }
            FeedInteraction {
                tenant,
                model: &feed.model,
                version: &feed.version,
                kind: e.kind.as_str(),
                position,
                first_click,
            }
            .emit(&self.metrics);
        }
        Ok(())
    }
}
