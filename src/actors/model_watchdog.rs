//! `ModelWatchdog`: on an interval, (1) reloads the model when its files changed — the new
//! one is loaded and canary-checked beside the serving one and swapped in only if it passes —,
//! (2) re-runs the canary on the served model (its probe rows must still score as training
//! recorded, and not degenerately), and (3) turns the drift monitor's window into PSI gauges.
//! It runs on the main arbiter, so that it stops with the actor system (a thread of its own
//! outlived the system and ran ONNX Runtime while the process exited: a crash at exit). The
//! canary reuses one session per model, so a tick costs a fraction of a millisecond. A reload
//! (parse, session, probe: tens of milliseconds) runs on the runtime's blocking pool, so that
//! the feed sessions sharing this arbiter do not wait for it; the runtime waits for it at
//! shutdown.
//! `POST /v1/admin/models/reload` sends it [`ReloadModel`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::ActorHealth;
use super::lifecycle::{Lifecycle, supervised_actor};
use crate::ranking::model::{ModelRegistry, ReloadOutcome, Scorer, Slot};
use crate::telemetry::events::{ModelCanaryChecked, ModelDriftMeasured, ModelReloaded};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "model_watchdog";

pub struct ModelWatchdog {
    models: Arc<ModelRegistry>,
    interval: Duration,
    drift_min_samples: u64,
    metrics: Arc<Metrics>,
    actors: Arc<ActorHealth>,
    /// The canary's sessions, by model id (only the served models').
    sessions: HashMap<u64, Scorer>,
    /// A reload is running on the blocking pool: ticks do not start another.
    reloading: bool,
}

impl ModelWatchdog {
    pub fn new(
        models: Arc<ModelRegistry>,
        interval: Duration,
        drift_min_samples: u64,
        metrics: Arc<Metrics>,
        actors: Arc<ActorHealth>,
    ) -> Self {
        Self {
            models,
            interval,
            drift_min_samples,
            metrics,
            actors,
            sessions: HashMap::new(),
            reloading: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let models = self.models.clone();
        let changed: Vec<usize> = (0..models.slots().len())
            .filter(|&i| models.slots()[i].files_changed())
            .collect();
        if !changed.is_empty() && !self.reloading {
            ctx.spawn(self.reload(changed).map(|_, _, _| ()));
        }
        for slot in models.slots() {
            self.canary(slot);
            self.drift(slot);
        }
        let served: Vec<u64> = models.slots().iter().map(|s| s.current().id).collect();
        self.sessions.retain(|id, _| served.contains(id));
    }

    /// Reloads the slots at `indices` on the blocking pool.
    fn reload(
        &mut self,
        indices: Vec<usize>,
    ) -> impl ActorFuture<Self, Output = Result<Vec<ReloadReport>, ReloadPanicked>> + use<> {
        self.reloading = true;
        let (models, metrics) = (self.models.clone(), self.metrics.clone());
        let load = tokio::task::spawn_blocking(move || {
            indices
                .into_iter()
                .map(|i| reload_slot(&models, &models.slots()[i], &metrics))
                .collect()
        });
        load.into_actor(self).map(|reports, act, _| {
            act.reloading = false;
            reports.map_err(|e| {
                // The slots keep the models they had: a swap is the load's last step.
                tracing::error!(event = "ModelReloadPanicked", error = %e);
                ReloadPanicked(e.to_string())
            })
        })
    }

    /// Checks the slot's model against its probe and publishes the verdict (gauge,
    /// readiness, log).
    fn canary(&mut self, slot: &Slot) {
        let model = slot.current();
        let result = match self.sessions.entry(model.id) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().check_probe(),
            std::collections::hash_map::Entry::Vacant(e) => {
                model.scorer().and_then(|s| e.insert(s).check_probe())
            }
        };
        slot.set_canary(result.is_ok());
        ModelCanaryChecked {
            model: &model.metadata.name,
            error: result
                .as_ref()
                .err()
                .map(|e| e as &(dyn std::error::Error + 'static)),
        }
        .emit(&self.metrics);
    }

    fn drift(&self, slot: &Slot) {
        let model = slot.current();
        let Some(report) = model
            .drift
            .as_ref()
            .and_then(|d| d.report(self.drift_min_samples))
        else {
            return;
        };
        ModelDriftMeasured {
            model: &model.metadata.name,
            features: &report.features,
            score: report.score,
            samples: report.samples,
        }
        .emit(&self.metrics);
    }
}

fn reload_slot(models: &ModelRegistry, slot: &Slot, metrics: &Metrics) -> ReloadReport {
    let previous = slot.current();
    let outcome = slot.reload(&models.names_besides(&slot.name));
    let serving = slot.current();
    ModelReloaded {
        slot: &slot.name,
        previous: (&previous.metadata.name, &previous.metadata.version),
        serving: (&serving.metadata.name, &serving.metadata.version),
        rejected: match &outcome {
            ReloadOutcome::Rejected(e) => Some(e as &(dyn std::error::Error + 'static)),
            ReloadOutcome::Loaded(_) => None,
        },
    }
    .emit(metrics);
    ReloadReport {
        slot: slot.name.clone(),
        loaded: matches!(outcome, ReloadOutcome::Loaded(_)),
        model: serving.metadata.name.clone(),
        version: serving.metadata.version.clone(),
        engine: serving.engine.name(),
        error: match outcome {
            ReloadOutcome::Rejected(e) => Some(e.to_string()),
            ReloadOutcome::Loaded(_) => None,
        },
    }
}

impl Lifecycle for ModelWatchdog {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.actors
    }

    fn on_started(&mut self, ctx: &mut Context<Self>) {
        // The canary's first verdict (and the gauge) at once, not one interval later.
        self.tick(ctx);
        ctx.run_interval(self.interval, Self::tick);
    }

    fn on_stop(&mut self) {
        self.sessions.clear();
    }
}

supervised_actor!(ModelWatchdog);

/// Reload every model's files now, whether or not they changed.
#[derive(Message)]
#[rtype(result = "Result<Vec<ReloadReport>, ReloadPanicked>")]
pub struct ReloadModel;

/// Loading panicked (on the blocking pool); no slot changed.
#[derive(Debug, thiserror::Error)]
#[error("the model reload panicked: {0}")]
pub struct ReloadPanicked(String);

/// What a reload did to one model slot, for the admin API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// `default`, or the name of a `[models.<name>]`.
    pub slot: String,
    pub loaded: bool,
    /// The model serving after the reload (the new one, or the old one kept).
    pub model: String,
    pub version: String,
    /// What scores the serving model: `native_trees`, `native_linear` or `onnxruntime`.
    pub engine: &'static str,
    /// Why the new files were rejected.
    pub error: Option<String>,
}

impl Handler<ReloadModel> for ModelWatchdog {
    type Result = ResponseActFuture<Self, Result<Vec<ReloadReport>, ReloadPanicked>>;

    fn handle(&mut self, _: ReloadModel, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.reload((0..self.models.slots().len()).collect()))
    }
}
