//! Events of the learning loop: the served-feature log's records and drops, experiment feeds and
//! their joined outcomes, experiments (re)configured.

use super::InternalEvent;
use crate::telemetry::Metrics;

/// Records written by the served-feature log's writer (a batch of them).
pub struct FeatureLogWritten {
    pub feeds: u64,
    pub outcomes: u64,
}

impl InternalEvent for FeatureLogWritten {
    fn emit(self, m: &Metrics) {
        let c = &m.learning.feature_log_records_total;
        if self.feeds > 0 {
            c.with_label_values(&["feed"]).inc_by(self.feeds);
        }
        if self.outcomes > 0 {
            c.with_label_values(&["outcome"]).inc_by(self.outcomes);
        }
    }
}

/// A served-feature record not written: `queue_full` (the writer is behind; the feed did not
/// wait) or `sink_error` (the file or topic refused it, `error` says why).
pub struct FeatureLogDropped<'a> {
    pub reason: &'static str,
    pub error: Option<&'a (dyn std::error::Error + 'static)>,
}

impl InternalEvent for FeatureLogDropped<'_> {
    fn emit(self, m: &Metrics) {
        m.learning
            .feature_log_dropped_total
            .with_label_values(&[self.reason])
            .inc();
        if let Some(error) = self.error {
            tracing::warn!(event = "FeatureLogDropped", reason = self.reason, error = %error);
        }
    }
}

/// A feed of an experiment's arm, served (not degraded) and recorded for the join.
pub struct ExperimentFeedServed<'a> {
    pub tenant: &'a str,
    pub experiment: &'a str,
    pub arm: &'a str,
}

impl InternalEvent for ExperimentFeedServed<'_> {
    fn emit(self, m: &Metrics) {
        m.learning
            .experiment_feeds_total
            .with_label_values(&[self.tenant, self.experiment, self.arm])
            .inc();
    }
}

/// An interaction joined with an arm's feed; `position` 0-based.
pub struct ExperimentInteraction<'a> {
    pub tenant: &'a str,
    pub experiment: &'a str,
    pub arm: &'a str,
    /// `click`, `add_to_cart` or `purchase`.
    pub kind: &'static str,
    pub position: usize,
    pub first_click: bool,
}

impl InternalEvent for ExperimentInteraction<'_> {
    fn emit(self, m: &Metrics) {
        let labels = [self.tenant, self.experiment, self.arm];
        let l = &m.learning;
        l.experiment_interactions_total
            .with_label_values(&[self.tenant, self.experiment, self.arm, self.kind])
            .inc();
        if self.kind == "click" && self.position < 10 {
            l.experiment_clicks_at_10_total
                .with_label_values(&labels)
                .inc();
        }
        if self.first_click {
            l.experiment_reciprocal_rank_total
                .with_label_values(&labels)
                .inc_by(1.0 / (self.position + 1) as f64);
        }
    }
}

/// A tenant's experiment as configured now (at start or by a reload): `arms` as (name, model,
/// share), the control first. `stopped` names the experiment it replaces, if any.
pub struct ExperimentConfigured<'a> {
    pub tenant: &'a str,
    pub experiment: Option<&'a str>,
    pub arms: &'a [(&'a str, &'a str, f64)],
    pub stopped: Option<(&'a str, &'a [&'a str])>,
}

impl InternalEvent for ExperimentConfigured<'_> {
    fn emit(self, m: &Metrics) {
        if let Some((name, arms)) = self.stopped {
            m.learning.remove_experiment(self.tenant, name, arms);
            tracing::info!(
                event = "ExperimentStopped",
                tenant = self.tenant,
                experiment = name
            );
        }
        if let Some(name) = self.experiment {
            let shares: Vec<(&str, f64)> = self.arms.iter().map(|(a, _, s)| (*a, *s)).collect();
            m.learning.init_experiment(self.tenant, name, &shares);
            let arms: Vec<String> = self
                .arms
                .iter()
                .map(|(a, model, s)| format!("{a}={model}:{s}"))
                .collect();
            tracing::info!(
                event = "ExperimentConfigured",
                tenant = self.tenant,
                experiment = name,
                arms = %arms.join(","),
            );
        }
    }
}
