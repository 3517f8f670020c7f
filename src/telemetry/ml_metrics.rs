//! The model-health metrics: what the ranker is fed, how far served traffic drifts from the
//! training reference, whether the model still answers its canary, and how well it ranks live.
//! Label values are bounded: models come from the config, features from the model metadata.

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use super::metrics::{counter, gauge};

pub struct MlMetrics {
    pub feature_invalid_total: IntCounterVec,
    pub feature_drift_psi: GaugeVec,
    pub score_drift_psi: GaugeVec,
    pub drift_samples_total: IntCounterVec,
    pub model_canary_ok: IntGaugeVec,
    pub model_reloads_total: IntCounterVec,
    pub ranking_feeds_total: IntCounterVec,
    pub ranking_interactions_total: IntCounterVec,
    pub ranking_reciprocal_rank_sum: prometheus::CounterVec,
    pub ranking_unjoined_total: IntCounterVec,
    pub shadow_topk_overlap_ratio: prometheus::HistogramVec,
}

fn float_gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
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
            feature_drift_psi: float_gauge(
                "eaglerank_feature_drift_psi",
                "Population stability index of served feature values against the training \
                 reference, over the last drift window.",
                &["model", "feature"],
            ),
            score_drift_psi: float_gauge(
                "eaglerank_score_drift_psi",
                "Population stability index of served scores against the training reference.",
                &["model"],
            ),
            drift_samples_total: counter(
                "eaglerank_drift_samples_total",
                "Scored rows the drift monitor sampled (a strided sample of each request).",
                &["model"],
            ),
            model_canary_ok: gauge(
                "eaglerank_model_canary_ok",
                "1 while the served model scores its probe rows as training recorded.",
                &["model"],
            ),
            model_reloads_total: counter(
                "eaglerank_model_reloads_total",
                "Model reload attempts: loaded (now serving) or rejected (the old one kept).",
                &["outcome"],
            ),
            ranking_feeds_total: counter(
                "eaglerank_ranking_feeds_total",
                "Feeds served and remembered for joining with clicks and purchases.",
                &["model", "version", "tenant"],
            ),
            ranking_interactions_total: counter(
                "eaglerank_ranking_interactions_total",
                "Clicks and purchases joined with the feed they came from, counted at each \
                 cutoff k their item's rank is within (CTR@k = clicks{k} / (k * feeds)).",
                &["model", "version", "tenant", "type", "k"],
            ),
            ranking_reciprocal_rank_sum: prometheus::CounterVec::new(
                Opts::new(
                    "eaglerank_ranking_reciprocal_rank_sum",
                    "Sum of 1/rank of each feed's first click (MRR = this / feeds).",
                ),
                &["model", "version", "tenant"],
            )
            .expect("static metric definition"),
            ranking_unjoined_total: counter(
                "eaglerank_ranking_unjoined_total",
                "Clicks and purchases with a request_id that joined no served feed (and \
                 feed-log failures: reason feed_log_unavailable).",
                &["reason"],
            ),
            shadow_topk_overlap_ratio: super::metrics::histogram(
                "eaglerank_shadow_topk_overlap_ratio",
                "Share of the live model's top-k that the shadow model also ranks in its top-k, \
                 per sampled request.",
                &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                &["model", "shadow"],
            ),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.feature_invalid_total.clone()),
            Box::new(self.feature_drift_psi.clone()),
            Box::new(self.score_drift_psi.clone()),
            Box::new(self.drift_samples_total.clone()),
            Box::new(self.model_canary_ok.clone()),
            Box::new(self.model_reloads_total.clone()),
            Box::new(self.ranking_feeds_total.clone()),
            Box::new(self.ranking_interactions_total.clone()),
            Box::new(self.ranking_reciprocal_rank_sum.clone()),
            Box::new(self.ranking_unjoined_total.clone()),
            Box::new(self.shadow_topk_overlap_ratio.clone()),
        ]
    }
}

impl Default for MlMetrics {
    fn default() -> Self {
        Self::new()
    }
}
