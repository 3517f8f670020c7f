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
use crate::store::{FeedLog, ServedFeed, StoreError, by_deadline, fill_missing};
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

/// When the feed `request_id` was served, if the id tells: request ids are v7 UUIDs (their
/// first 48 bits are the milliseconds they were made at); a client's own id does not tell.
fn served_at(request_id: &str) -> Option<crate::domain::UnixSeconds> {
    let id = uuid::Uuid::parse_str(request_id).ok()?;
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    (id.get_version_num() == 7).then(|| seconds as f64 + f64::from(nanos) * 1e-9)
}

pub struct ServedFeeds {
    log: Arc<dyn FeedLog>,
    /// How long after its response another replica may not find a feed in the log yet.
    lag: Duration,
    window: Duration,
    metrics: Arc<Metrics>,
    features: Arc<FeatureLog>,
}

impl ServedFeeds {
    pub fn new(
        log: Arc<dyn FeedLog>,
        lag: Duration,
        settings: &EventSettings,
        metrics: Arc<Metrics>,
        features: Arc<FeatureLog>,
    ) -> Self {
        Self {
            log,
            lag,
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
        let write = self.log.record(tenant, request_id, feed, self.window);
        if let Err(error) = by_deadline(deadline, "the served-feed log", write).await {
            FeedLogFailed {
                error: &error,
                feeds: 1,
            }
            .emit(&self.metrics);
        }
    }

    /// The feed served as `request_id`, while it is in the log (a feed session's first page).
    pub async fn lookup(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<ServedFeed>, StoreError> {
        Ok(self
            .settled_lookup(tenant, &[request_id])
            .await?
            .pop()
            .flatten())
    }

    /// Whether the feed `request_id` was served less than the lag ago: another replica may not
    /// have written it yet (this one finds its own at once). A person's click or next page
    /// comes later than that; this is for clients that ask at once.
    fn moment_ago(&self, request_id: &str) -> bool {
        !self.lag.is_zero()
            && served_at(request_id)
                .is_some_and(|t| crate::domain::unix_now() - t < self.lag.as_secs_f64())
    }

    /// The log's feeds for `ids`; those it misses that were served a moment ago asked again
    /// once their batch has been written: one wait per call at most, the caller's own (a next
    /// page's request, within its deadline).
    async fn settled_lookup(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        let mut found = self.log.lookup(tenant, ids).await?;
        let again: Vec<&str> = ids
            .iter()
            .zip(&found)
            .filter(|(id, f)| f.is_none() && self.moment_ago(id))
            .map(|(id, _)| *id)
            .collect();
        if again.is_empty() {
            return Ok(found);
        }
        tokio::time::sleep(self.lag).await;
        fill_missing(&*self.log, tenant, ids, &mut found, |id| {
            again.contains(&id)
        })
        .await?;
        Ok(found)
    }

    /// Joins applied events with the feeds they name (impressions are not outcomes here), and
    /// logs those of the served-feature log's feeds there.
    pub async fn join(self: &Arc<Self>, tenant: &str, events: &[Outcome<'_>]) {
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
        if let Err(error) = self.try_join(tenant, &outcomes, true).await {
            FeedLogFailed {
                error: &error,
                feeds: 1,
            }
            .emit(&self.metrics);
        }
    }

    /// `retry`: events naming a feed served a moment ago that the log misses are joined again
    /// after the lag, in a task of their own — never while the batch's sender (and the events
    /// queued behind it: batches apply one at a time) waits.
    async fn try_join(
        self: &Arc<Self>,
        tenant: &str,
        outcomes: &[&Outcome<'_>],
        retry: bool,
    ) -> Result<(), StoreError> {
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
        let mut later: Vec<OwnedOutcome> = Vec::new();
        for e in outcomes {
            let Some(feed) = feeds.get(e.request_id) else {
                if retry && self.moment_ago(e.request_id) {
                    later.push(OwnedOutcome::from(*e));
                    continue;
                }
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
        if !later.is_empty() {
            self.join_later(tenant, later);
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

impl ServedFeeds {
    /// Joins `outcomes` again after the lag (once: what is still missing then is unknown).
    fn join_later(self: &Arc<Self>, tenant: &str, outcomes: Vec<OwnedOutcome>) {
        let this = self.clone();
        let tenant = tenant.to_owned();
        // Boxed: the task runs `try_join`, which spawns it.
        let task: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            tokio::time::sleep(this.lag).await;
            let outcomes: Vec<Outcome<'_>> = outcomes.iter().map(OwnedOutcome::outcome).collect();
            let refs: Vec<&Outcome<'_>> = outcomes.iter().collect();
            if let Err(error) = this.try_join(&tenant, &refs, false).await {
                FeedLogFailed {
                    error: &error,
                    feeds: 1,
                }
                .emit(&this.metrics);
            }
        });
        tokio::spawn(task);
    }
}

/// An [`Outcome`] kept for a join after the lag.
struct OwnedOutcome {
    request_id: String,
    kind: EventKind,
    item_id: String,
    user_id: String,
    timestamp: UnixSeconds,
}

impl From<&Outcome<'_>> for OwnedOutcome {
    fn from(e: &Outcome<'_>) -> Self {
        Self {
            request_id: e.request_id.to_owned(),
            kind: e.kind,
            item_id: e.item_id.to_owned(),
            user_id: e.user_id.to_owned(),
            timestamp: e.timestamp,
        }
    }
}

impl OwnedOutcome {
    fn outcome(&self) -> Outcome<'_> {
        Outcome {
            request_id: &self.request_id,
            kind: self.kind,
            item_id: &self.item_id,
            user_id: &self.user_id,
            timestamp: self.timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::served_at;

    #[test]
    fn a_v7_request_id_tells_when_its_feed_was_served_and_others_do_not() {
        let now = crate::domain::unix_now();
        let at = served_at(&uuid::Uuid::now_v7().to_string()).unwrap();
        assert!((at - now).abs() < 1.0, "{at} vs {now}");
        assert_eq!(served_at(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(served_at("a-client-s-own-id"), None);
    }
}
