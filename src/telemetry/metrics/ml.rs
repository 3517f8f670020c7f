//! The model-health metrics: what the ranker is fed, how far served traffic drifts from the
//! training reference, whether the model still answers its canary, and how well it ranks live.
//! Label values are bounded: models come from the config, features from the model metadata.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use super::define::Registrar;

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

impl MlMetrics {
    pub fn new(r: &Registrar<'_>) -> Self {
        Self {
            feature_invalid_total: r.counter(
                "eaglerank_feature_invalid_total",
                "Feature values the ranker was fed missing (default-filled) or non-finite (NaN, \
                 replaced by the default), per model and feature.",
                &["model", "feature", "kind"],
            ),
            feature_drift_psi: r.float_gauge(
                "eaglerank_feature_drift_psi",
                "Population stability index of served feature values against the training \
                 reference, over the last drift window.",
                &["model", "feature"],
            ),
            score_drift_psi: r.float_gauge(
                "eaglerank_score_drift_psi",
                "Population stability index of served scores against the training reference.",
                &["model"],
            ),
            drift_samples_total: r.counter(
                "eaglerank_drift_samples_total",
                "Scored rows the drift monitor sampled (a strided sample of each request).",
                &["model"],
            ),
            model_canary_ok: r.gauge(
                "eaglerank_model_canary_ok",
                "1 while the served model scores its probe rows as training recorded.",
                &["model"],
            ),
            model_reloads_total: r.counter(
                "eaglerank_model_reloads_total",
                "Model reload attempts: loaded (now serving) or rejected (the old one kept).",
                &["outcome"],
            ),
            ranking_feeds_total: r.counter(
                "eaglerank_ranking_feeds_total",
                "Feeds served and remembered for joining with clicks and purchases.",
                &["model", "version", "tenant"],
            ),
            ranking_interactions_total: r.counter(
                "eaglerank_ranking_interactions_total",
                "Clicks and purchases joined with the feed they came from, counted at each \
                 cutoff k their item's rank is within (CTR@k = clicks{k} / (k * feeds)).",
                &["model", "version", "tenant", "type", "k"],
            ),
            ranking_reciprocal_rank_sum: r.add(
                prometheus::CounterVec::new(
                    Opts::new(
                        "eaglerank_ranking_reciprocal_rank_sum",
                        "Sum of 1/rank of each feed's first click (MRR = this / feeds).",
                    ),
                    &["model", "version", "tenant"],
                )
                .expect("static metric definition"),
            ),
            ranking_unjoined_total: r.counter(
                "eaglerank_ranking_unjoined_total",
                "Clicks and purchases with a request_id that joined no served feed (and \
                 feed-log failures: reason feed_log_unavailable).",
                &["reason"],
            ),
            shadow_topk_overlap_ratio: r.histogram(
                "eaglerank_shadow_topk_overlap_ratio",
                "Share of the live model's top-k that the shadow model also ranks in its top-k, \
                 per sampled request.",
                &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                &["model", "shadow"],
            ),
        }
    }

    /// A model's drift series at 0 from its load: the panels show its features before the
    /// first drift window closes (`drift_samples_total` tells whether one has).
    pub fn init_model(&self, model: &str, features: &[String]) {
        for feature in features {
            self.feature_drift_psi.with_label_values(&[model, feature]);
        }
        self.score_drift_psi.with_label_values(&[model]);
        self.drift_samples_total.with_label_values(&[model]);
    }

    /// The live-quality series of a tenant's model at 0: CTR@k and MRR panels and `rate()`
    /// work from the first feed, not from the first click.
    pub fn init_quality(&self, model: &str, version: &str, tenant: &str, cutoffs: &[usize]) {
        self.ranking_feeds_total
            .with_label_values(&[model, version, tenant]);
        self.ranking_reciprocal_rank_sum
            .with_label_values(&[model, version, tenant]);
        for kind in ["click", "purchase"] {
            for k in cutoffs {
                self.ranking_interactions_total.with_label_values(&[
                    model,
                    version,
                    tenant,
                    kind,
                    &k.to_string(),
                ]);
            }
        }
    }
}
