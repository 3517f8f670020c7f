//! The learning loop's metrics: the served-feature log (records written, dropped) and the
//! experiments' per-arm outcomes. Labels are bounded: tenants, experiments and arms come from
//! the config; kinds and reasons are fixed lists.

use prometheus::{CounterVec, GaugeVec, IntCounterVec};

use super::define::Registrar;

/// Why a served-feature record was not written.
pub const FEATURE_LOG_DROP_REASONS: [&str; 2] = ["queue_full", "sink_error"];
/// The outcomes counted per arm, at any position.
pub const EXPERIMENT_KINDS: [&str; 3] = ["click", "add_to_cart", "purchase"];

pub struct LearningMetrics {
    pub feature_log_records_total: IntCounterVec,
    pub feature_log_dropped_total: IntCounterVec,
    pub experiment_arm_share: GaugeVec,
    pub experiment_feeds_total: IntCounterVec,
    pub experiment_clicks_at_10_total: IntCounterVec,
    pub experiment_interactions_total: IntCounterVec,
    pub experiment_reciprocal_rank_total: CounterVec,
}

impl LearningMetrics {
    pub fn new(r: &Registrar<'_>) -> Self {
        Self {
            feature_log_records_total: r.counter(
                "eaglerank_feature_log_records_total",
                "Records written to the served-feature log, by kind (feed: a sampled feed with \
                 its feature vectors; outcome: an event carrying a logged feed's request_id).",
                &["kind"],
            ),
            feature_log_dropped_total: r.counter(
                "eaglerank_feature_log_dropped_total",
                "Served-feature records not written: the writer's queue was full (never \
                 waited for), or the file or topic refused them.",
                &["reason"],
            ),
            experiment_arm_share: r.float_gauge(
                "eaglerank_experiment_arm_share",
                "The configured share of the tenant's users in each arm of its running \
                 experiment; role is control for the first arm.",
                &["tenant", "experiment", "arm", "role"],
            ),
            experiment_feeds_total: r.counter(
                "eaglerank_experiment_feeds_total",
                "Feeds served to each arm of a running experiment (not degraded ones).",
                &["tenant", "experiment", "arm"],
            ),
            experiment_clicks_at_10_total: r.counter(
                "eaglerank_experiment_clicks_at_10_total",
                "Clicks joined with an arm's feed at positions 1-10 (CTR@10 = this / 10 \
                 feeds).",
                &["tenant", "experiment", "arm"],
            ),
            experiment_interactions_total: r.counter(
                "eaglerank_experiment_interactions_total",
                "Clicks, add-to-carts and purchases joined with an arm's feeds, any position.",
                &["tenant", "experiment", "arm", "kind"],
            ),
            experiment_reciprocal_rank_total: r.add(
                CounterVec::new(
                    prometheus::Opts::new(
                        "eaglerank_experiment_reciprocal_rank_total",
                        "Sum over an arm's feeds of 1/rank of the feed's first click (MRR = \
                         this / feeds).",
                    ),
                    &["tenant", "experiment", "arm"],
                )
                .expect("static metric definition"),
            ),
        }
    }

    pub fn init_global(&self) {
        for kind in ["feed", "outcome"] {
            self.feature_log_records_total.with_label_values(&[kind]);
        }
        for reason in FEATURE_LOG_DROP_REASONS {
            self.feature_log_dropped_total.with_label_values(&[reason]);
        }
    }

    /// An experiment's arms at 0, and their shares; `arms` as (name, share), control first.
    pub fn init_experiment(&self, tenant: &str, experiment: &str, arms: &[(&str, f64)]) {
        for (i, (arm, share)) in arms.iter().enumerate() {
            let role = if i == 0 { "control" } else { "treatment" };
            self.experiment_arm_share
                .with_label_values(&[tenant, experiment, arm, role])
                .set(*share);
            let labels = [tenant, experiment, arm];
            self.experiment_feeds_total.with_label_values(&labels);
            self.experiment_clicks_at_10_total
                .with_label_values(&labels);
            self.experiment_reciprocal_rank_total
                .with_label_values(&labels);
            for kind in EXPERIMENT_KINDS {
                self.experiment_interactions_total
                    .with_label_values(&[tenant, experiment, arm, kind]);
            }
        }
    }

    /// A stopped experiment's shares disappear (its counters stay until the process ends: a
    /// counter that vanished would read as a reset).
    pub fn remove_experiment(&self, tenant: &str, experiment: &str, arms: &[&str]) {
        for (i, arm) in arms.iter().enumerate() {
            let role = if i == 0 { "control" } else { "treatment" };
            let _ = self
                .experiment_arm_share
                .remove_label_values(&[tenant, experiment, arm, role]);
        }
    }
}
