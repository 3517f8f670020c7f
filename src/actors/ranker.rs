//! `Ranker`: one per feed lane (see `lanes`), with its own ONNX session. It assembles the
//! feature matrix, scores it and keeps the top items, synchronously, on its lane's thread: that
//! thread has nothing else to do meanwhile that would not also need the CPU, and a hop to a
//! separate ranker thread cost two wake-ups per feed and five runnable threads on two cores.
//! Each request names the model to use: after a reload, a ranker builds a session for the new
//! model on its first request with it.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::lifecycle::{Lifecycle, guarded_sync, supervised_actor};
use super::{ActorHealth, FeedError};
use crate::FastSet;
use crate::domain::{ItemId, UnixSeconds, UserProfile};
use crate::ranking::candidates::Sources;
use crate::ranking::features::FeatureHealth;
use crate::ranking::model::{LoadedModel, ModelError, ModelMetadata, ModelRegistry, OnnxScorer};
use crate::ranking::pipeline::{self, RankRequest, Scorable};
use crate::ranking::rules::{Note, Removed, TenantRules};
use crate::telemetry::events::{FeaturesInvalid, MessageDequeued, ModelScored, ShadowCompared};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "ranker";

/// Sessions a ranker keeps: every configured model and a reload in progress.
const MAX_SESSIONS: usize = 8;

pub struct Ranker {
    /// Sessions by model id. Ids only grow, so the smallest is the oldest load: the first to
    /// go when there are too many.
    sessions: BTreeMap<u64, OnnxScorer>,
    models: Arc<ModelRegistry>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    /// Reused between requests: the matrix is the largest allocation of a request.
    matrix: Vec<f32>,
    shadow_matrix: Vec<f32>,
    feature_health: FeatureHealth,
}

impl Ranker {
    /// The session of the model served now is built at start (and at every restart) rather
    /// than on the first request.
    pub fn new(
        models: Arc<ModelRegistry>,
        metrics: Arc<Metrics>,
        health: Arc<ActorHealth>,
    ) -> Self {
        let mut ranker = Self {
            sessions: BTreeMap::new(),
            models,
            metrics,
            health,
            matrix: Vec::new(),
            shadow_matrix: Vec::new(),
            feature_health: FeatureHealth::default(),
        };
        ranker.fresh_session();
        ranker
    }

    /// Drops every session and builds the served model's anew: what a restart after a panic
    /// needs, since a session may be what panicked.
    fn fresh_session(&mut self) {
        let model = self.models.current();
        self.sessions = model
            .scorer()
            .ok()
            .map(|s| (model.id, s))
            .into_iter()
            .collect();
    }
}

impl Lifecycle for Ranker {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.health
    }

    fn on_restarting(&mut self) {
        self.fresh_session();
    }

    fn on_stop(&mut self) {
        self.sessions.clear();
    }
}

supervised_actor!(Ranker, panics = sync);

/// Score `candidates` for `user` and return the best `limit`.
#[derive(Message)]
#[rtype(result = "Result<Ranking, FeedError>")]
pub struct Rank {
    /// The session's span: ranking is its child.
    pub span: tracing::Span,
    pub model: Arc<LoadedModel>,
    /// Scored too, never served: its top-k is compared with the live model's.
    pub shadow: Option<Arc<LoadedModel>>,
    pub user_id: Arc<str>,
    pub user: Option<Arc<UserProfile>>,
    pub candidates: Vec<Scorable>,
    pub limit: usize,
    pub now: UnixSeconds,
    pub rules: Arc<TenantRules>,
    /// Items of the session's earlier pages.
    pub seen: Arc<FastSet<ItemId>>,
    pub page: u32,
    /// Return each item's feature values and what the rules did to it too.
    pub explain: bool,
    /// Return each item's feature values and model score (for the served-feature log).
    pub keep_features: bool,
    /// When it was sent: its wait in the mailbox is measured from here.
    pub enqueued: std::time::Instant,
}

#[derive(Debug)]
pub struct RankedCandidate {
    pub item_id: ItemId,
    pub sources: Sources,
    /// After boosts: what the order follows.
    pub score: f32,
    /// The model's own score (explain only).
    pub model_score: Option<f32>,
    pub features: Option<Vec<f32>>,
    /// What the rules did to it (explain only).
    pub notes: Vec<Note>,
}

/// What the rules did to one request.
#[derive(Debug, Clone, Default)]
pub struct RulesReport {
    pub version: u64,
    pub removed: Removed,
    pub relaxations: u32,
    pub pins: u32,
    /// More candidates passed the rules than were served: a next page exists.
    pub more: bool,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct Ranking {
    /// The model that ranked: the one served when the request reached the ranker.
    pub model: Arc<ModelMetadata>,
    pub items: Vec<RankedCandidate>,
    pub assemble: Duration,
    pub inference: Duration,
    pub rules: RulesReport,
}

impl Ranker {
    fn scorer(&mut self, model: &LoadedModel) -> Result<&mut OnnxScorer, ModelError> {
        if let Entry::Vacant(e) = self.sessions.entry(model.id) {
            e.insert(model.scorer()?);
            // Never the one just built: a request may still hold an old model.
            while self.sessions.len() > MAX_SESSIONS {
                let oldest = self.sessions.keys().copied().find(|id| *id != model.id);
                oldest.map(|id| self.sessions.remove(&id));
            }
        }
        Ok(self.sessions.get_mut(&model.id).expect("just inserted"))
    }

    /// Scores `candidates` with `model` from `matrix` (its spec's columns), recording the
    /// scores and drift like the live model's.
    fn score(
        &mut self,
        model: &LoadedModel,
        matrix: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let started = Instant::now();
        let scores = tracing::info_span!(
            "model.inference",
            model.name = %model.metadata.name,
            model.version = %model.metadata.version,
            batch_size = rows,
        )
        .in_scope(|| self.scorer(model)?.score(matrix, rows))?;
        let inference = started.elapsed();
        ModelScored {
            model: &model.metadata.name,
            duration: inference,
            scores: &scores,
        }
        .emit(&self.metrics);
        if let Some(drift) = &model.drift {
            drift.observe(matrix, &scores);
        }
        Ok(scores)
    }

    /// Scores the shadow model on the same candidates and exports how much of the live top-k
    /// it would have shown. Its failures are logged, never the request's.
    fn shadow(&mut self, msg: &Rank, live_top: &[usize]) {
        let Some(shadow) = &msg.shadow else {
            return;
        };
        let live = &msg.model;
        let rows = msg.candidates.len();
        let mut matrix = std::mem::take(&mut self.shadow_matrix);
        let scored = if shadow.spec.names() == live.spec.names() {
            // The live rows are the shadow's too.
            let live_rows = std::mem::take(&mut self.matrix);
            let scored = self.score(shadow, &live_rows, rows);
            self.matrix = live_rows;
            scored.map(|scores| {
                // The same rules and session as the live ranking: what differs is the model.
                pipeline::arrange(&request(msg, &msg.seen, live_top.len()), &scores).order
            })
        } else {
            let request = request(msg, &msg.seen, live_top.len());
            pipeline::rank(
                &shadow.spec,
                &request,
                &mut matrix,
                &mut FeatureHealth::default(),
                |m, n| self.score(shadow, m, n),
            )
            .map(|ranked| ranked.arranged.order)
        };
        self.shadow_matrix = matrix;
        match scored {
            Ok(shadow_top) => {
                let shared = shadow_top.iter().filter(|i| live_top.contains(i)).count();
                ShadowCompared {
                    model: &live.metadata.name,
                    shadow: &shadow.metadata.name,
                    overlap: shared as f64 / live_top.len().max(1) as f64,
                }
                .emit(&self.metrics);
            }
            Err(e) => tracing::warn!(
                shadow = %shadow.metadata.name,
                error = %e,
                "the shadow model failed to score; the live ranking is unaffected"
            ),
        }
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
        let request = request(&msg, &msg.seen, msg.limit);
        let mut matrix = std::mem::take(&mut self.matrix);
        let mut feature_health = std::mem::take(&mut self.feature_health);
        let ranked = pipeline::rank(
            &model.spec,
            &request,
            &mut matrix,
            &mut feature_health,
            |rows, n| self.score(&model, rows, n),
        );
        FeaturesInvalid {
            model: &meta.name,
            features: model.spec.names(),
            missing: &feature_health.missing,
            nan: &feature_health.nan,
        }
        .emit(&self.metrics);
        self.matrix = matrix;
        self.feature_health = feature_health;
        let ranked = ranked?;
        if msg.shadow.is_some() {
            self.shadow(&msg, &ranked.arranged.order);
        }
        let width = model.spec.len();
        let arranged = ranked.arranged;
        let mut notes = arranged.notes.into_iter();
        let items = arranged
            .order
            .iter()
            .map(|&i| {
                let c = &msg.candidates[i];
                RankedCandidate {
                    item_id: c.item_id.clone(),
                    sources: c.sources,
                    score: arranged.scores[i],
                    model_score: (msg.explain || msg.keep_features).then(|| ranked.scores[i]),
                    features: (msg.explain || msg.keep_features)
                        .then(|| self.matrix[i * width..(i + 1) * width].to_vec()),
                    notes: notes.next().unwrap_or_default(),
                }
            })
            .collect();
        Ok(Ranking {
            model: model.metadata.clone(),
            items,
            assemble: ranked.assemble,
            inference: ranked.inference,
            rules: RulesReport {
                version: msg.rules.version,
                removed: arranged.removed,
                relaxations: arranged.relaxations,
                pins: arranged.pins,
                more: arranged.more,
                duration: ranked.rules,
            },
        })
    }
}

/// The pipeline's view of a `Rank` message, for `limit` items.
fn request<'a>(msg: &'a Rank, seen: &'a FastSet<ItemId>, limit: usize) -> RankRequest<'a> {
    RankRequest {
        now: msg.now,
        user_id: &msg.user_id,
        user: msg.user.as_deref(),
        candidates: &msg.candidates,
        limit,
        rules: &msg.rules,
        seen,
        page: msg.page,
        // The shadow's arrangement is compared, never shown.
        explain: msg.explain && limit == msg.limit,
    }
}

impl Handler<Rank> for Ranker {
    type Result = Result<Ranking, FeedError>;

    fn handle(&mut self, msg: Rank, ctx: &mut Context<Self>) -> Self::Result {
        MessageDequeued {
            actor: NAME,
            waited: msg.enqueued.elapsed(),
        }
        .emit(&self.metrics);
        guarded_sync(self, ctx, |ranker| ranker.rank(msg))
    }
}
