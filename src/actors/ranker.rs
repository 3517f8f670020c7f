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
use crate::ranking::features::FeatureSpec;
use crate::ranking::model::{
    FirstStage, LoadedModel, ModelError, ModelMetadata, ModelRegistry, Scorer,
};
use crate::ranking::pipeline::{self, RankRequest, Scorable, Stage};
use crate::ranking::rules::{Note, Removed, TenantRules};
use crate::telemetry::events::{FeaturesInvalid, MessageDequeued, ModelScored, ShadowCompared};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "ranker";

/// Sessions a ranker keeps: every configured model and a reload in progress.
const MAX_SESSIONS: usize = 8;

pub struct Ranker {
    /// Sessions by model id. Ids only grow, so the smallest is the oldest load: the first to
    /// go when there are too many.
    sessions: BTreeMap<u64, Scorer>,
    models: Arc<ModelRegistry>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    /// Reused between requests: the matrix is the largest allocation of a request.
    matrix: Vec<f32>,
    /// A cascade's second-stage rows (its kept candidates').
    kept_rows: Vec<f32>,
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
            kept_rows: Vec::new(),
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
    /// A cascade: this model scores every candidate, `model` only the best it keeps.
    pub first_stage: Option<FirstStage>,
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
    /// The model's own score (explain only; `None` when a cascade's first stage did not
    /// pass it on).
    pub model_score: Option<f32>,
    /// The cascade's first-stage score (explain only).
    pub first_stage_score: Option<f32>,
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
    /// A cascade's first stage.
    pub first_stage: Option<Arc<ModelMetadata>>,
    pub items: Vec<RankedCandidate>,
    pub assemble: Duration,
    pub inference: Duration,
    pub rules: RulesReport,
}

impl Ranker {
    fn scorer(&mut self, model: &LoadedModel) -> Result<&mut Scorer, ModelError> {
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
    /// scores and (with `drift`) their distribution like the live model's.
    fn score(
        &mut self,
        model: &LoadedModel,
        matrix: &[f32],
        rows: usize,
        drift: bool,
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
        if let Some(monitor) = model.drift.as_ref().filter(|_| drift) {
            monitor.observe(matrix, &scores);
        }
        Ok(scores)
    }

    /// Scores the shadow model on the same candidates and exports how much of the live top-k
    /// it would have shown. Its failures are logged, never the request's. `assembled`: the
    /// spec of the rows in `self.matrix` (every candidate's).
    fn shadow(&mut self, msg: &Rank, assembled: &FeatureSpec, live_top: &[usize]) {
        let Some(shadow) = &msg.shadow else {
            return;
        };
        let live = &msg.model;
        let rows = msg.candidates.len();
        let mut matrix = std::mem::take(&mut self.shadow_matrix);
        let scored = if shadow.spec.names() == assembled.names() {
            // The live rows are the shadow's too.
            let live_rows = std::mem::take(&mut self.matrix);
            let scored = self.score(shadow, &live_rows, rows, true);
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
                |m, n| self.score(shadow, m, n, true),
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
            first_stage.name = tracing::field::Empty,
            first_stage.keep = tracing::field::Empty,
        );
        let _entered = span.enter();
        let request = request(&msg, &msg.seen, msg.limit);
        let mut matrix = std::mem::take(&mut self.matrix);
        let mut kept_rows = std::mem::take(&mut self.kept_rows);
        let mut feature_health = std::mem::take(&mut self.feature_health);
        // The rows of every candidate are in the first stage's columns in a cascade.
        let assembled = msg
            .first_stage
            .as_ref()
            .map_or(&model, |f| &f.model)
            .clone();
        let ranked = match &msg.first_stage {
            None => pipeline::rank(
                &model.spec,
                &request,
                &mut matrix,
                &mut feature_health,
                |rows, n| self.score(&model, rows, n, true),
            ),
            Some(first) => {
                // Each stage's `model.inference` span is a child of this one.
                span.record("first_stage.name", &*first.model.metadata.name);
                span.record("first_stage.keep", first.keep);
                pipeline::rank_cascade(
                    &first.model.spec,
                    first.keep,
                    &model.spec,
                    &request,
                    &mut matrix,
                    &mut kept_rows,
                    &mut feature_health,
                    // The second stage sees the first's best, not the candidates its training
                    // reference describes: its drift is measured where it ranks alone. The
                    // features' drift is the first stage's, over every candidate.
                    |stage, rows, n| match stage {
                        Stage::First => self.score(&first.model, rows, n, true),
                        Stage::Second => self.score(&model, rows, n, false),
                    },
                )
            }
        };
        FeaturesInvalid {
            model: &assembled.metadata.name,
            features: assembled.spec.names(),
            missing: &feature_health.missing,
            nan: &feature_health.nan,
        }
        .emit(&self.metrics);
        self.matrix = matrix;
        self.kept_rows = kept_rows;
        self.feature_health = feature_health;
        let mut ranked = ranked?;
        if msg.shadow.is_some() {
            self.shadow(&msg, &assembled.spec, &ranked.arranged.order);
        }
        let detail = msg.explain || msg.keep_features;
        let width = model.spec.len();
        let row = |i: usize| -> Option<&[f32]> {
            match &ranked.first_stage {
                None => Some(&self.matrix[i * width..(i + 1) * width]),
                Some(first) => first.kept[i]
                    .map(|r| &self.kept_rows[r as usize * width..(r as usize + 1) * width]),
            }
        };
        let mut notes = std::mem::take(&mut ranked.arranged.notes).into_iter();
        let arranged = &ranked.arranged;
        let items = arranged
            .order
            .iter()
            .map(|&i| {
                let c = &msg.candidates[i];
                RankedCandidate {
                    item_id: c.item_id.clone(),
                    sources: c.sources,
                    score: arranged.scores[i],
                    model_score: ranked.model_score(i).filter(|_| detail),
                    first_stage_score: ranked
                        .first_stage
                        .as_ref()
                        .filter(|_| detail)
                        .map(|f| f.scores[i]),
                    features: row(i).filter(|_| detail).map(<[f32]>::to_vec),
                    notes: notes.next().unwrap_or_default(),
                }
            })
            .collect();
        let arranged = ranked.arranged;
        Ok(Ranking {
            model: model.metadata.clone(),
            first_stage: msg.first_stage.as_ref().map(|f| f.model.metadata.clone()),
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
