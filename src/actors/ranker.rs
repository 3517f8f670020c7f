//! `Ranker`: a `SyncArbiter` pool, one ONNX session per thread. It assembles the feature
//! matrix (CPU work belongs here, off the async threads), scores it and keeps the top items.
//! Each request names the model to use: after a reload, a thread builds a session for the
//! new model on its first request with it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{ActorHealth, FeedError, InjectPanic, panic_message};
use crate::candidates::Sources;
use crate::catalog::{ItemId, ItemRecord, UnixSeconds, UserProfile};
use crate::features::{FeatureContext, FeatureHealth};
use crate::model::{LoadedModel, ModelError, ModelMetadata, OnnxScorer};
use crate::telemetry::events::{FeaturesInvalid, ModelScored};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "ranker";

pub struct Ranker {
    /// The session of the model this thread last ranked with, by model id.
    session: Option<(u64, OnnxScorer)>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    /// Reused between requests: the matrix is the largest allocation of a request.
    matrix: Vec<f32>,
    feature_health: FeatureHealth,
}

impl Ranker {
    /// `model`: the one served at start, whose session is built now rather than on the
    /// first request.
    pub fn new(model: &LoadedModel, metrics: Arc<Metrics>, health: Arc<ActorHealth>) -> Self {
        Self {
            session: model.scorer().ok().map(|s| (model.id, s)),
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
    pub model: Arc<LoadedModel>,
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
    /// The model that ranked: the one served when the request reached the ranker.
    pub model: Arc<ModelMetadata>,
    pub items: Vec<RankedCandidate>,
    pub assemble: Duration,
    pub inference: Duration,
}

impl Ranker {
    fn scorer(&mut self, model: &LoadedModel) -> Result<&mut OnnxScorer, ModelError> {
        if self.session.as_ref().is_none_or(|(id, _)| *id != model.id) {
            self.session = Some((model.id, model.scorer()?));
        }
        Ok(&mut self.session.as_mut().expect("just set").1)
    }

    fn rank(&mut self, msg: Rank) -> Result<Ranking, FeedError> {
        let model = msg.model.clone();
        let meta = &model.metadata;
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
        let spec = &model.spec;
        tracing::info_span!("features.assemble", num_features = spec.len()).in_scope(|| {
            spec.assemble(
                &ctx,
                msg.candidates.iter().map(|(_, _, r)| &**r),
                &mut self.matrix,
                &mut self.feature_health,
            )
        });
        FeaturesInvalid {
            model: &meta.name,
            features: spec.names(),
            health: &self.feature_health,
        }
        .emit(&self.metrics);
        let assembled = Instant::now();
        let rows = msg.candidates.len();
        let scores = tracing::info_span!(
            "model.inference",
            model.name = %meta.name,
            model.version = %meta.version,
            batch_size = rows,
        )
        .in_scope(|| {
            let matrix = std::mem::take(&mut self.matrix);
            let scored = self.scorer(&model).and_then(|s| s.score(&matrix, rows));
            self.matrix = matrix;
            scored
        })?;
        let inference = assembled.elapsed();
        ModelScored {
            model: &meta.name,
            duration: inference,
            scores: &scores,
        }
        .emit(&self.metrics);
        if let Some(drift) = &model.drift {
            drift.observe(&self.matrix, &scores);
        }

        let order = top_k(&scores, &msg.candidates, msg.limit);
        let width = spec.len();
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
            model: model.metadata.clone(),
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
