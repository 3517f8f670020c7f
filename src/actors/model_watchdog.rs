//! `ModelWatchdog`: on an interval, (1) reloads the model when its files changed — the new
//! one is loaded and canary-checked beside the serving one and swapped in only if it passes —,
//! (2) re-runs the canary on the served model (its probe rows must still score as training
//! recorded, and not degenerately), and (3) turns the drift monitor's window into PSI gauges.
//! It runs on its own arbiter: loading a model takes milliseconds the feed sessions on the
//! main arbiter must not wait for. `POST /v1/admin/models/reload` sends it [`ReloadModel`].

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::ActorHealth;
use crate::model::{LoadedModel, ModelRegistry, ReloadOutcome};
use crate::telemetry::events::{ModelCanaryChecked, ModelDriftMeasured, ModelReloaded};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "model_watchdog";

pub struct ModelWatchdog {
    models: Arc<ModelRegistry>,
    interval: Duration,
    drift_min_samples: u64,
    metrics: Arc<Metrics>,
    actors: Arc<ActorHealth>,
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
        }
    }

    fn tick(&mut self, _: &mut Context<Self>) {
        if self.models.files_changed() {
            self.reload();
        }
        self.canary(&self.models.current());
        self.drift(&self.models.current());
    }

    fn reload(&self) -> ReloadOutcome {
        let outcome = self.models.reload();
        ModelReloaded {
            outcome: &outcome,
            serving: &self.models.current(),
        }
        .emit(&self.metrics);
        outcome
    }

    /// Checks `model` against its probe and publishes the verdict (gauge, readiness, log).
    pub fn canary(&self, model: &LoadedModel) {
        let result = model.canary();
        self.models.set_canary(result.is_ok());
        ModelCanaryChecked {
            model: &model.metadata.name,
            error: result.err().as_ref(),
        }
        .emit(&self.metrics);
    }

    fn drift(&self, model: &LoadedModel) {
        let Some(report) = model
            .drift
            .as_ref()
            .and_then(|d| d.report(self.drift_min_samples))
        else {
            return;
        };
        ModelDriftMeasured {
            model: &model.metadata.name,
            report: &report,
        }
        .emit(&self.metrics);
    }
}

impl Actor for ModelWatchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.actors.started(NAME);
        // The canary's first verdict (and the gauge) at once, not one interval later.
        self.tick(ctx);
        ctx.run_interval(self.interval, Self::tick);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.actors.stopped(NAME);
    }
}

impl Supervised for ModelWatchdog {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.actors.restarted(NAME);
    }
}

/// Reload the model files now, whether or not they changed.
#[derive(Message)]
#[rtype(result = "Result<ReloadReport, ()>")]
pub struct ReloadModel;

/// What a reload did, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub loaded: bool,
    /// The model serving after the reload (the new one, or the old one kept).
    pub model: String,
    pub version: String,
    /// Why the new files were rejected.
    pub error: Option<String>,
}

impl Handler<ReloadModel> for ModelWatchdog {
    type Result = Result<ReloadReport, ()>;

    fn handle(&mut self, _: ReloadModel, _: &mut Context<Self>) -> Self::Result {
        let outcome = self.reload();
        let serving = self.models.current();
        Ok(ReloadReport {
            loaded: matches!(outcome, ReloadOutcome::Loaded(_)),
            model: serving.metadata.name.clone(),
            version: serving.metadata.version.clone(),
            error: match outcome {
                ReloadOutcome::Rejected(e) => Some(e.to_string()),
                ReloadOutcome::Loaded(_) => None,
            },
        })
    }
}

impl Handler<super::Ping> for ModelWatchdog {
    type Result = ();

    fn handle(&mut self, _: super::Ping, _: &mut Context<Self>) {}
}

impl Handler<super::Stop> for ModelWatchdog {
    type Result = ();

    fn handle(&mut self, _: super::Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
