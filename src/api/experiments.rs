//! Experiments and the configuration reload that starts, changes and stops them without a
//! restart; the per-arm counters `eaglerank experiment report` reads.

use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::learning::experiments::{Change, Experiment};
use crate::learning::report::{ArmCounts, ExperimentCounts as ExperimentView};
use crate::ranking::model::ModelRegistry;
use crate::telemetry::events::{CUTOFFS, ExperimentConfigured};
use crate::telemetry::{InternalEvent, Metrics};

/// Reports a tenant's experiment change: log line, arm shares, its series at 0.
pub fn configured(
    metrics: &Metrics,
    models: &ModelRegistry,
    tenant: &str,
    before: Option<&Experiment>,
    after: Option<&Experiment>,
) {
    let arms: Vec<(&str, &str, f64)> = after
        .map(|e| {
            e.arms
                .iter()
                .map(|a| (&*a.name, &*a.model, a.share))
                .collect()
        })
        .unwrap_or_default();
    let stopped_arms: Vec<&str> = before
        .map(|e| e.arms.iter().map(|a| &*a.name).collect())
        .unwrap_or_default();
    ExperimentConfigured {
        tenant,
        experiment: after.map(|e| &*e.name),
        arms: &arms,
        stopped: before.map(|e| (&*e.name, stopped_arms.as_slice())),
    }
    .emit(metrics);
    // The arms' models' live-quality series start at 0 too.
    for (_, slot, _) in &arms {
        let model = models.for_feed(tenant, Some(slot)).model;
        metrics.ml.init_quality(
            &model.metadata.name,
            &model.metadata.version,
            tenant,
            &CUTOFFS,
        );
    }
}

/// What a reload changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigReloaded {
    /// Tenants whose experiment started, changed or stopped: `{tenant, before, after}`
    /// (experiment names, null for none).
    pub experiments: Vec<ExperimentChange>,
    /// Each tenant's served-feature log sample rate now.
    pub feature_log_sample_rates: std::collections::BTreeMap<String, f64>,
    /// What a reload does not apply.
    pub note: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperimentChange {
    pub tenant: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Reads the configuration's sources again and applies what can change while serving: the
/// experiments, the rules presets their arms name, and the served-feature log's sample rates. An invalid configuration, or one
/// whose experiments name a model this process did not load, changes nothing.
pub fn reload(state: &AppState) -> Result<ConfigReloaded, ApiError> {
    let mut current = state.settings.lock().unwrap_or_else(|e| e.into_inner());
    let next = current
        .reload()
        .map_err(|e| ApiError::ConfigRejected(e.to_string()))?;
    let loaded: Vec<&str> = state
        .models
        .slots()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for (tenant, t) in &next.tenants {
        for arm in t.experiment.iter().flat_map(|e| &e.arms) {
            if !loaded.contains(&arm.model.as_str()) {
                return Err(ApiError::ConfigRejected(format!(
                    "tenants.{tenant}.experiment: model {:?} is not loaded; new [models.*] \
                     need a restart",
                    arm.model
                )));
            }
        }
    }
    let changes: Vec<Change> = state.experiments.configure(&next);
    for c in &changes {
        configured(
            &state.metrics,
            &state.models,
            &c.tenant,
            c.before.as_deref(),
            c.after.as_deref(),
        );
    }
    state.feature_log.configure(&next);
    state.rules.set_presets(next.rules_presets.clone());
    let rates = next
        .tenants
        .keys()
        .map(|t| (t.clone(), next.feature_log_rate(t)))
        .collect();
    *current = next;
    Ok(ConfigReloaded {
        experiments: changes
            .into_iter()
            .map(|c| ExperimentChange {
                tenant: c.tenant,
                before: c.before.map(|e| e.name.to_string()),
                after: c.after.map(|e| e.name.to_string()),
            })
            .collect(),
        feature_log_sample_rates: rates,
        note: "a reload applies [tenants.<id>.experiment], [rules_presets.*] and the \
               feature_log sample rates; every other change needs a restart",
    })
}

/// Every running experiment (or `tenant`'s), with the counters this replica has.
pub fn overview(state: &AppState, tenant: Option<&str>) -> Vec<ExperimentView> {
    let l = &state.metrics.learning;
    state
        .experiments
        .all()
        .into_iter()
        .filter(|(t, _)| tenant.is_none_or(|only| only == t))
        .map(|(t, e)| {
            let arms = e
                .arms
                .iter()
                .map(|a| {
                    let labels = [t.as_str(), &*e.name, &*a.name];
                    let kind = |k: &str| {
                        l.experiment_interactions_total
                            .with_label_values(&[t.as_str(), &*e.name, &*a.name, k])
                            .get()
                    };
                    ArmCounts {
                        arm: a.name.to_string(),
                        model: a.model.to_string(),
                        share: a.share,
                        feeds: l.experiment_feeds_total.with_label_values(&labels).get(),
                        clicks_at_10: l
                            .experiment_clicks_at_10_total
                            .with_label_values(&labels)
                            .get(),
                        clicks: kind("click"),
                        add_to_cart: kind("add_to_cart"),
                        purchases: kind("purchase"),
                        reciprocal_rank: l
                            .experiment_reciprocal_rank_total
                            .with_label_values(&labels)
                            .get(),
                    }
                })
                .collect();
            ExperimentView {
                tenant: t.clone(),
                experiment: e.name.to_string(),
                arms,
            }
        })
        .collect()
}
