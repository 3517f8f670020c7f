//! `Gateway`: runs one feed session per `Feed` message — user profile, candidates, features,
//! ranking — under the request's deadline. Sessions run concurrently on the gateway's arbiter
//! (its lane's HTTP worker); the CPU-heavy part (features and inference) is the ranker's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::candidate_fetcher::{self, CandidateFetcher, FetchCandidates};
use super::lifecycle::{Lifecycle, guarded, supervised_actor};
use super::ranker::{self, Rank, RankedCandidate, Ranker, RulesReport};
use super::{ActorHealth, FeedError, ask};
use crate::FastSet;
use crate::domain::ItemId;
use crate::domain::unix_now;
use crate::ranking::candidates::Candidate;
use crate::ranking::candidates::{Source, Sources};
use crate::ranking::model::{ModelMetadata, ModelRegistry};
use crate::ranking::pipeline::{self, Scorable};
use crate::ranking::rules::TenantRules;
use crate::store::{PopularityFallback, SharedStore, StoreError, StoreHealth, by_deadline};
use crate::telemetry::events::{FeaturesFetched, FeaturesMissing, FeedDegraded, MessageDequeued};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "gateway";

pub type RankedItem = RankedCandidate;

pub struct Gateway {
    deps: Arc<Deps>,
}

pub struct Deps {
    pub store: SharedStore,
    pub store_health: Arc<StoreHealth>,
    pub fallback: Arc<PopularityFallback>,
    pub candidates: Addr<CandidateFetcher>,
    pub ranker: Addr<Ranker>,
    pub models: Arc<ModelRegistry>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<ActorHealth>,
}

impl Gateway {
    pub fn new(deps: Deps) -> Self {
        Self {
            deps: Arc::new(deps),
        }
    }
}

impl Lifecycle for Gateway {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.deps.health
    }

    fn on_started(&mut self, ctx: &mut Context<Self>) {
        // Sessions wait on other actors; a burst must queue here rather than bounce.
        ctx.set_mailbox_capacity(1024);
    }
}

supervised_actor!(Gateway, panics = async);

/// One feed request, already authenticated and validated.
#[derive(Message)]
#[rtype(result = "Result<FeedOutcome, FeedError>")]
pub struct Feed {
    pub tenant: Arc<str>,
    pub user_id: String,
    pub limit: usize,
    pub explain: bool,
    /// Keep each served item's feature vector and model score (explain, or the served-feature
    /// log).
    pub keep_features: bool,
    /// The model slot of the user's experiment arm; `None`: the tenant's model.
    pub model: Option<Arc<str>>,
    /// The tenant's rules at the version this feed uses.
    pub rules: Arc<TenantRules>,
    /// Items served on the feed session's earlier pages: never again.
    pub seen: Arc<FastSet<ItemId>>,
    /// 1-based page of the feed session (pins apply to the first).
    pub page: u32,
    /// The session gives up at this instant.
    pub deadline: Instant,
    /// The HTTP request's span: the session's span is its child.
    pub span: tracing::Span,
    /// When it was sent: its wait in the mailbox is measured from here.
    pub enqueued: Instant,
}

/// Time spent in each stage of a session.
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    pub user: Duration,
    pub candidates: Duration,
    pub features: Duration,
    pub assemble: Duration,
    pub inference: Duration,
    pub ranking: Duration,
    pub rules: Duration,
}

#[derive(Debug)]
pub struct FeedOutcome {
    /// The model that ranked these items.
    pub model: Arc<ModelMetadata>,
    /// The cascade's first stage, when the tenant has one.
    pub first_stage: Option<Arc<ModelMetadata>>,
    pub items: Vec<RankedItem>,
    pub num_candidates: usize,
    pub timings: StageTimings,
    /// Why the feed was served from the popularity fallback, if it was.
    pub degraded: Option<&'static str>,
    /// What the rules did.
    pub rules: RulesReport,
}

impl Handler<Feed> for Gateway {
    type Result = ResponseActFuture<Self, Result<FeedOutcome, FeedError>>;

    fn handle(&mut self, msg: Feed, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        MessageDequeued {
            actor: NAME,
            waited: msg.enqueued.elapsed(),
        }
        .emit(&deps.metrics);
        let span = tracing::info_span!(
            parent: &msg.span,
            "feed.session",
            tenant = %msg.tenant,
            limit = msg.limit,
            num_candidates = tracing::field::Empty,
            degraded = false,
            degraded_reason = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        guarded(self, span, async move {
            let deadline = msg.deadline;
            let budget = deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::time::timeout_at(
                tokio::time::Instant::from_std(deadline),
                serve(&deps, msg),
            )
            .await
            .map_err(|_| FeedError::DeadlineExceeded(budget))?;
            // The timer interrupts waits, not work: the ranker runs on this thread, and a
            // session that overran its deadline while it ranked is caught here.
            if Instant::now() > deadline {
                return Err(FeedError::DeadlineExceeded(budget));
            }
            outcome
        })
    }
}

/// The share of a request's budget its store calls may use: the rest is kept for the fallback,
/// so that a store that stops answering gets a degraded feed in time, not a 503.
const STORE_SHARE: f64 = 0.8;

/// The full session while the store is healthy; the popularity fallback, visibly degraded,
/// while it is not (known down or its breaker open, or a call just failed or ran out of time).
async fn serve(deps: &Deps, msg: Feed) -> Result<FeedOutcome, FeedError> {
    if let Some(cause) = deps.store_health.avoid_reason() {
        return degraded(deps, msg, "redis_down", &cause).await;
    }
    let now = Instant::now();
    let store_deadline = now
        + msg
            .deadline
            .saturating_duration_since(now)
            .mul_f64(STORE_SHARE);
    match session(deps, &msg, store_deadline).await {
        Err(FeedError::Store(StoreError::Unavailable(cause))) => {
            degraded(deps, msg, "store_error", &cause).await
        }
        other => other,
    }
}

async fn degraded(
    deps: &Deps,
    msg: Feed,
    reason: &'static str,
    cause: &str,
) -> Result<FeedOutcome, FeedError> {
    let span = tracing::Span::current();
    span.record("degraded", true);
    span.record("degraded_reason", reason);
    FeedDegraded {
        tenant: &msg.tenant,
        user: &msg.user_id,
        reason,
        cause: Some(cause),
    }
    .emit(&deps.metrics);
    let mut trending = Sources::default();
    trending.insert(Source::Trending);
    let candidates: Vec<_> = deps
        .fallback
        .items(&msg.tenant)
        .iter()
        .map(|(id, record)| Scorable {
            item_id: id.clone(),
            sources: trending,
            record: record.clone(),
        })
        .collect();
    let num_candidates = candidates.len();
    span.record("num_candidates", num_candidates);
    let t = Instant::now();
    let models = deps.models.for_feed(&msg.tenant, msg.model.as_deref());
    let rank = Rank {
        span,
        model: models.model,
        shadow: models.shadow,
        first_stage: models.first_stage,
        user_id: msg.user_id.as_str().into(),
        user: None,
        candidates,
        limit: msg.limit,
        now: unix_now(),
        rules: msg.rules.clone(),
        seen: msg.seen.clone(),
        page: msg.page,
        explain: msg.explain,
        keep_features: msg.keep_features,
        enqueued: Instant::now(),
    };
    let ranking = ask(ranker::NAME, &deps.ranker, rank).await?;
    Ok(FeedOutcome {
        model: ranking.model,
        first_stage: ranking.first_stage,
        items: ranking.items,
        num_candidates,
        timings: StageTimings {
            ranking: t.elapsed(),
            assemble: ranking.assemble,
            inference: ranking.inference,
            rules: ranking.rules.duration,
            ..Default::default()
        },
        degraded: Some(reason),
        rules: ranking.rules,
    })
}

/// A store stage, bounded by the session's store deadline: past it, the stage counts as a store
/// failure (and the feed is served from the fallback).
async fn within<T>(
    deadline: Instant,
    stage: impl std::future::Future<Output = Result<T, FeedError>>,
) -> Result<T, FeedError> {
    by_deadline(deadline, "the store (within the feed's store share)", stage).await
}

async fn session(
    deps: &Deps,
    msg: &Feed,
    store_deadline: Instant,
) -> Result<FeedOutcome, FeedError> {
    let mut timings = StageTimings::default();
    let t = Instant::now();
    let user = within(store_deadline, async {
        Ok(pipeline::user_profile(&*deps.store, &msg.tenant, &msg.user_id).await?)
    })
    .await?;
    timings.user = t.elapsed();

    let t = Instant::now();
    let fetch = FetchCandidates {
        tenant: msg.tenant.clone(),
        user: user.clone(),
        span: tracing::Span::current(),
        enqueued: Instant::now(),
    };
    let mut candidates = within(
        store_deadline,
        ask(candidate_fetcher::NAME, &deps.candidates, fetch),
    )
    .await?;
    if msg.page == 1 {
        add_pinned(&mut candidates, &msg.rules);
    }
    timings.candidates = t.elapsed();

    let t = Instant::now();
    let (scorable, missing) = within(store_deadline, async {
        Ok(pipeline::item_records(&*deps.store, &msg.tenant, candidates).await?)
    })
    .await?;
    timings.features = t.elapsed();
    FeaturesFetched {
        tenant: &msg.tenant,
        duration: timings.user + timings.features,
    }
    .emit(&deps.metrics);
    let num_candidates = scorable.len();
    tracing::Span::current().record("num_candidates", num_candidates);
    FeaturesMissing {
        tenant: &msg.tenant,
        kind: "item",
        count: missing,
    }
    .emit(&deps.metrics);

    let t = Instant::now();
    let models = deps.models.for_feed(&msg.tenant, msg.model.as_deref());
    let rank = Rank {
        span: tracing::Span::current(),
        model: models.model,
        shadow: models.shadow,
        first_stage: models.first_stage,
        user_id: msg.user_id.as_str().into(),
        user,
        candidates: scorable,
        limit: msg.limit,
        now: unix_now(),
        rules: msg.rules.clone(),
        seen: msg.seen.clone(),
        page: msg.page,
        explain: msg.explain,
        keep_features: msg.keep_features,
        enqueued: Instant::now(),
    };
    let ranking = ask(ranker::NAME, &deps.ranker, rank).await?;
    timings.ranking = t.elapsed();
    timings.assemble = ranking.assemble;
    timings.inference = ranking.inference;
    timings.rules = ranking.rules.duration;
    Ok(FeedOutcome {
        model: ranking.model,
        first_stage: ranking.first_stage,
        items: ranking.items,
        num_candidates,
        timings,
        degraded: None,
        rules: ranking.rules,
    })
}

/// A first page's pins are served whether or not a candidate source proposed them: the pinned
/// items join the candidates (with no source), to be scored, checked by the rules and placed.
fn add_pinned(candidates: &mut Vec<Candidate>, rules: &TenantRules) {
    for id in rules.pinned_items(unix_now()) {
        if !candidates.iter().any(|c| c.item_id == id) {
            candidates.push(Candidate {
                item_id: id,
                sources: Sources::default(),
                record: None,
            });
        }
    }
}
