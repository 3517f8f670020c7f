//! The model-health metrics: what the ranker is fed, how far served traffic drifts from the
//! training reference, whether the model still answers its canary, and how well it ranks live.
//! Label values are bounded: models come from the config, features from the model metadata.

use prometheus::IntCounterVec;
use prometheus::core::Collector;

use super::metrics::counter;

pub struct MlMetrics {
    pub feature_invalid_total: IntCounterVec,
}

impl MlMetrics {
    pub fn new() -> Self {
        Self {
            feature_invalid_total: counter(
                "eaglerank_feature_invalid_total",
                "Feature values the ranker was fed missing (default-filled) or non-finite (NaN, \
                 replaced by the default), per model and feature.",
                &["model", "feature", "kind"],
            ),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.feature_invalid_total.clone())]
    }
}

impl Default for MlMetrics {
    fn default() -> Self {
        Self::new()
    }
}
