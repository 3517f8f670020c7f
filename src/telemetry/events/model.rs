//! Events of the models: loads, reloads, the canary, scoring, invalid features, drift, the shadow.

use std::time::Duration;

use tracing::info;

use super::InternalEvent;
use crate::telemetry::Metrics;

/// Scores per scored batch that reach the score histogram: a distribution needs a sample, and
/// observing all 500 cost ~35 k instructions per feed.
pub const SCORES_SAMPLED: usize = 32;

pub struct ModelScored<'a> {
    pub model: &'a str,
    pub duration: Duration,
    pub scores: &'a [f32],
}

impl InternalEvent for ModelScored<'_> {
    fn emit(self, m: &Metrics) {
        m.model_inference_seconds
            .with_label_values(&[self.model])
            .observe(self.duration.as_secs_f64());
        // Evenly spaced over the batch (candidates arrive in no score order); accumulated
        // locally, one atomic flush.
        let h = m.model_score.with_label_values(&[self.model]).local();
        let stride = self.scores.len().div_ceil(SCORES_SAMPLED).max(1);
        for s in self.scores.iter().step_by(stride) {
            h.observe(f64::from(*s));
        }
        h.flush();
    }
}

/// The missing and non-finite values of one assembled feature matrix.
pub struct FeaturesInvalid<'a> {
    pub model: &'a str,
    pub features: &'a [String],
    /// Per column, in `features` order.
    pub missing: &'a [u32],
    pub nan: &'a [u32],
}

impl InternalEvent for FeaturesInvalid<'_> {
    fn emit(self, m: &Metrics) {
        let kinds = [("missing", self.missing), ("nan", self.nan)];
        for (kind, counts) in kinds {
            for (feature, &n) in self.features.iter().zip(counts.iter()) {
                if n > 0 {
                    m.ml.feature_invalid_total
                        .with_label_values(&[self.model, feature.as_str(), kind])
                        .inc_by(u64::from(n));
                }
            }
        }
    }
}

/// A reload attempt and the model serving after it.
pub struct ModelReloaded<'a> {
    pub slot: &'a str,
    /// The model (name, version) the slot served before.
    pub previous: (&'a str, &'a str),
    /// The model (name, version) serving now.
    pub serving: (&'a str, &'a str),
    /// Why the new files were rejected (the previous model keeps serving), if they were.
    pub rejected: Option<&'a (dyn std::error::Error + 'static)>,
}

impl InternalEvent for ModelReloaded<'_> {
    fn emit(self, m: &Metrics) {
        let (name, version) = self.serving;
        match self.rejected {
            None => {
                m.ml.model_reloads_total
                    .with_label_values(&["loaded"])
                    .inc();
                // build_info names the models serving: the previous one's series goes.
                let (old_name, old_version) = self.previous;
                let _ = m.build_info.remove_label_values(&[
                    env!("CARGO_PKG_VERSION"),
                    old_name,
                    old_version,
                ]);
                m.build_info
                    .with_label_values(&[env!("CARGO_PKG_VERSION"), name, version])
                    .set(1);
                info!(
                    event = "ModelReloaded",
                    slot = self.slot,
                    model = name,
                    model_version = version,
                );
            }
            Some(error) => {
                m.ml.model_reloads_total
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::error!(
                    event = "ModelReloadRejected",
                    slot = self.slot,
                    error = %error,
                    model = name,
                    model_version = version,
                    "the new model files were rejected; the old model keeps serving"
                );
            }
        }
    }
}

/// The canary's verdict on the served model.
pub struct ModelCanaryChecked<'a> {
    pub model: &'a str,
    pub error: Option<&'a (dyn std::error::Error + 'static)>,
}

impl InternalEvent for ModelCanaryChecked<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.model_canary_ok
            .with_label_values(&[self.model])
            .set(i64::from(self.error.is_none()));
        if let Some(error) = self.error {
            tracing::error!(
                event = "ModelCanaryFailed",
                model = %self.model,
                error = %error,
                "the served model no longer scores its probe rows as training recorded"
            );
        }
    }
}

/// One drift window of the served model.
pub struct ModelDriftMeasured<'a> {
    pub model: &'a str,
    /// PSI of each feature, by name.
    pub features: &'a [(String, f64)],
    /// PSI of the scores.
    pub score: f64,
    pub samples: u64,
}

impl InternalEvent for ModelDriftMeasured<'_> {
    fn emit(self, m: &Metrics) {
        for (feature, psi) in self.features {
            m.ml.feature_drift_psi
                .with_label_values(&[self.model, feature.as_str()])
                .set(*psi);
        }
        m.ml.score_drift_psi
            .with_label_values(&[self.model])
            .set(self.score);
        m.ml.drift_samples_total
            .with_label_values(&[self.model])
            .inc_by(self.samples);
    }
}

/// A shadow model scored beside the live one: the share of the live top-k it also ranks
/// top-k.
pub struct ShadowCompared<'a> {
    pub model: &'a str,
    pub shadow: &'a str,
    pub overlap: f64,
}

impl InternalEvent for ShadowCompared<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.shadow_topk_overlap_ratio
            .with_label_values(&[self.model, self.shadow])
            .observe(self.overlap);
    }
}

pub struct ModelLoaded<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// Its input, by name.
    pub features: &'a [String],
    /// What scores it (`native_trees`, `native_linear`, `onnxruntime`).
    pub engine: &'a str,
}

impl InternalEvent for ModelLoaded<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.init_model(self.name, self.features);
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), self.name, self.version])
            .set(1);
        info!(
            event = "ModelLoaded",
            model = self.name,
            model_version = self.version,
            features = self.features.len() as u64,
            engine = self.engine
        );
    }
}
