//! `Ranker`: a `SyncArbiter` pool, one ONNX session per thread. It assembles the feature
//! matrix (CPU work belongs here, off the async threads), scores it and keeps the top items.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{ActorHealth, FeedError, InjectPanic, panic_message};
use crate::candidates::Sources;
use crate::catalog::{ItemId, ItemRecord, UnixSeconds, UserProfile};
use crate::features::{FeatureContext, FeatureHealth, FeatureSpec};
use crate::model::OnnxScorer;
use crate::telemetry::events::{FeaturesInvalid, ModelScored};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "ranker";

pub struct Ranker {
    scorer: OnnxScorer,
    spec: Arc<FeatureSpec>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    /// Reused between requests: the matrix is the largest allocation of a request.
    matrix: Vec<f32>,
    feature_health: FeatureHealth,
}

impl Ranker {
    pub fn new(
        scorer: OnnxScorer,
        spec: Arc<FeatureSpec>,
        metrics: Arc<Metrics>,
        health: Arc<ActorHealth>,
    ) -> Self {
        Self {
            scorer,
            spec,
            metrics,
            health,
            matrix: Vec::new(),
            feature_health: FeatureHealth::default(),
        }
    }
}

impl Actor for Ranker {
    type Context = SyncContext<Self>;

    fn started(&mut self, _: &mut SyncContext<Self>) {
        self.health.started(NAME);
    }

    fn stopped(&mut self, _: &mut SyncContext<Self>) {
        self.health.stopped(NAME);
    }
}

/// Score `candidates` for `user` and return the best `limit`.
#[derive(Message)]
#[rtype(result = "Result<Ranking, FeedError>")]
pub struct Rank {
    /// The session's span: ranking (on a ranker thread) is its child.
    pub span: tracing::Span,
    pub user: Option<Arc<UserProfile>>,
    pub candidates: Vec<(ItemId, Sources, Arc<ItemRecord>)>,
    pub limit: usize,
    pub now: UnixSeconds,
    /// Return each item's feature values too.
    pub explain: bool,
}

#[derive(Debug)]
pub struct RankedCandidate {
    pub item_id: ItemId,
    pub sources: Sources,
    pub score: f32,
    pub features: Option<Vec<f32>>,
}

#[derive(Debug)]
pub struct Ranking {
    pub items: Vec<RankedCandidate>,
    pub assemble: Duration,
    pub inference: Duration,
}

impl Ranker {
    fn rank(&mut self, msg: Rank) -> Result<Ranking, FeedError> {
        let meta = self.scorer.metadata();
        let span = tracing::info_span!(
            parent: &msg.span,
            "ranker.rank",
            num_candidates = msg.candidates.len(),
            limit = msg.limit,
            model.name = %meta.name,
            model.version = %meta.version,
        );
        let _entered = span.enter();
        let started = Instant::now();
        let ctx = FeatureContext {
            now: msg.now,
            user: msg.user.as_deref(),
        };
        self.matrix.clear();
        tracing::info_span!("features.assemble", num_features = self.spec.len()).in_scope(|| {
            self.spec.assemble(
                &ctx,
                msg.candidates.iter().map(|(_, _, r)| &**r),
                &mut self.matrix,
                &mut self.feature_health,
            )
        });
        FeaturesInvalid {
            model: &self.scorer.metadata().name,
            features: self.spec.names(),
            health: &self.feature_health,
        }
        .emit(&self.metrics);
        let assembled = Instant::now();
        let scores = tracing::info_span!(
            "model.inference",
            model.name = %self.scorer.metadata().name,
            model.version = %self.scorer.metadata().version,
            batch_size = msg.candidates.len(),
        )
        .in_scope(|| self.scorer.score(&self.matrix, msg.candidates.len()))?;
        let inference = assembled.elapsed();
        ModelScored {
            model: &self.scorer.metadata().name,
            duration: inference,
            scores: &scores,
        }
        .emit(&self.metrics);

        let order = top_k(&scores, &msg.candidates, msg.limit);
        let width = self.spec.len();
        let mut candidates: Vec<Option<(ItemId, Sources)>> = msg
            .candidates
            .into_iter()
            .map(|(id, sources, _)| Some((id, sources)))
            .collect();
        let items = order
            .into_iter()
            .filter_map(|i| {
                let (item_id, sources) = candidates[i].take()?;
                Some(RankedCandidate {
                    item_id,
                    sources,
                    score: scores[i],
                    features: msg
                        .explain
                        .then(|| self.matrix[i * width..(i + 1) * width].to_vec()),
                })
            })
            .collect();
        Ok(Ranking {
            items,
            assemble: assembled - started,
            inference,
        })
    }
}

/// Indices of the `k` best scores, best first. NaN ranks last; ties go to the smaller item id
/// so that the same data always gives the same feed.
fn top_k(
    scores: &[f32],
    candidates: &[(ItemId, Sources, Arc<ItemRecord>)],
    k: usize,
) -> Vec<usize> {
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let better = |a: &usize, b: &usize| {
        key(*b)
            .total_cmp(&key(*a))
            .then_with(|| candidates[*a].0.cmp(&candidates[*b].0))
    };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_unstable_by(better);
    idx
}

impl Handler<Rank> for Ranker {
    type Result = Result<Ranking, FeedError>;

    fn handle(&mut self, msg: Rank, ctx: &mut SyncContext<Self>) -> Self::Result {
        self.guarded(ctx, |ranker| ranker.rank(msg))
    }
}

impl Handler<InjectPanic> for Ranker {
    type Result = Result<(), FeedError>;

    fn handle(&mut self, _: InjectPanic, ctx: &mut SyncContext<Self>) -> Self::Result {
        self.guarded(ctx, |_| panic!("injected panic"))
    }
}

impl Ranker {
    /// The sync twin of `actors::guarded`: a panic stops this actor, and `SyncArbiter`
    /// replaces a stopped actor with a fresh one from its factory (a new ONNX session).
    fn guarded<T>(
        &mut self,
        ctx: &mut SyncContext<Self>,
        work: impl FnOnce(&mut Self) -> Result<T, FeedError>,
    ) -> Result<T, FeedError> {
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(result) => result,
            Err(panic) => {
                self.health.panicked(NAME, &panic_message(&*panic));
                self.health.restarted(NAME);
                ctx.stop();
                Err(FeedError::Crashed(NAME))
            }
        }
    }
}
