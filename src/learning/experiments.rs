//! Experiments: per tenant at most one, its users split between arms by a stable hash of
//! (tenant, experiment, user_id) — the same user always gets the same arm, on every replica
//! and after restarts — each arm ranked by its own model. Replaced whole by a config reload.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::feature_log::{stable_hash, unit};
use crate::config::{ExperimentSettings, Settings};

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub name: Arc<str>,
    pub arms: Vec<Arm>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub name: Arc<str>,
    /// The model slot that ranks it.
    pub model: Arc<str>,
    pub share: f64,
    /// The rules preset that arranges its feeds, if not the tenant's rules.
    pub rules: Option<Arc<str>>,
}

/// The arm a request is in.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub experiment: Arc<str>,
    pub arm: Arc<str>,
    pub model: Arc<str>,
    pub rules: Option<Arc<str>>,
}

impl Experiment {
    pub fn new(settings: &ExperimentSettings) -> Self {
        Self {
            name: settings.name.as_str().into(),
            arms: settings
                .arms
                .iter()
                .map(|a| Arm {
                    name: a.name.as_str().into(),
                    model: a.model.as_str().into(),
                    share: a.share,
                    rules: a.rules.as_deref().map(Into::into),
                })
                .collect(),
        }
    }

    /// The user's arm: the point `hash(tenant, experiment, user)` of [0, 1) falls in one arm's
    /// share of the line.
    pub fn assign(&self, tenant: &str, user_id: &str) -> Assignment {
        let x = unit(stable_hash(&[tenant, &self.name, user_id]));
        let mut edge = 0.0;
        let arm = self
            .arms
            .iter()
            .find(|a| {
                edge += a.share;
                x < edge
            })
            // Rounding may leave the very top of the line past the last edge.
            .unwrap_or_else(|| self.arms.last().expect("validated: at least one arm"));
        Assignment {
            experiment: self.name.clone(),
            arm: arm.name.clone(),
            model: arm.model.clone(),
            rules: arm.rules.clone(),
        }
    }
}

/// Every tenant's running experiment.
#[derive(Default)]
pub struct Experiments {
    by_tenant: RwLock<HashMap<String, Arc<Experiment>>>,
}

/// What a reconfiguration changed for one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub tenant: String,
    /// The experiment running before, if any.
    pub before: Option<Arc<Experiment>>,
    /// The experiment running now, if any.
    pub after: Option<Arc<Experiment>>,
}

impl Experiments {
    pub fn new(settings: &Settings) -> Self {
        let this = Self::default();
        this.configure(settings);
        this
    }

    /// The experiments `settings` describe replace the running ones; returns what changed
    /// (an experiment whose arms changed counts as changed).
    pub fn configure(&self, settings: &Settings) -> Vec<Change> {
        let next: HashMap<String, Arc<Experiment>> = settings
            .tenants
            .iter()
            .filter_map(|(t, s)| {
                Some((t.clone(), Arc::new(Experiment::new(s.experiment.as_ref()?))))
            })
            .collect();
        let mut current = self.by_tenant.write().unwrap_or_else(|e| e.into_inner());
        let mut tenants: Vec<&String> = current.keys().chain(next.keys()).collect();
        tenants.sort();
        tenants.dedup();
        let changes = tenants
            .into_iter()
            .filter_map(|t| {
                let (before, after) = (current.get(t).cloned(), next.get(t).cloned());
                (before != after).then(|| Change {
                    tenant: t.clone(),
                    before,
                    after,
                })
            })
            .collect();
        *current = next;
        changes
    }

    /// The arm of `user_id` in `tenant`'s running experiment, if it runs one.
    pub fn assign(&self, tenant: &str, user_id: &str) -> Option<Assignment> {
        let by_tenant = self.by_tenant.read().unwrap_or_else(|e| e.into_inner());
        Some(by_tenant.get(tenant)?.assign(tenant, user_id))
    }

    pub fn get(&self, tenant: &str) -> Option<Arc<Experiment>> {
        self.by_tenant
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    /// Every running experiment, by tenant.
    pub fn all(&self) -> Vec<(String, Arc<Experiment>)> {
        let mut all: Vec<_> = self
            .by_tenant
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ArmSettings;

    fn experiment(shares: &[f64]) -> Experiment {
        Experiment::new(&ExperimentSettings {
            name: "exp-1".into(),
            arms: shares
                .iter()
                .enumerate()
                .map(|(i, s)| ArmSettings {
                    name: format!("arm-{i}"),
                    model: "default".into(),
                    share: *s,
                    rules: None,
                })
                .collect(),
        })
    }

    #[test]
    fn shares_hold_within_two_percent_over_ten_thousand_users() {
        for shares in [vec![0.5, 0.5], vec![0.1, 0.9], vec![0.2, 0.3, 0.5]] {
            let e = experiment(&shares);
            let mut counts = vec![0usize; shares.len()];
            for u in 0..10_000 {
                let a = e.assign("demo-a", &format!("user-{u}"));
                let i = e.arms.iter().position(|arm| arm.name == a.arm).unwrap();
                counts[i] += 1;
            }
            for (count, share) in counts.iter().zip(&shares) {
                let observed = *count as f64 / 10_000.0;
                assert!(
                    (observed - share).abs() <= 0.02,
                    "share {share}: observed {observed} ({counts:?})"
                );
            }
        }
    }

    #[test]
    fn a_user_keeps_their_arm_and_tenants_and_experiments_split_independently() {
        let e = experiment(&[0.5, 0.5]);
        for u in 0..100 {
            let user = format!("user-{u}");
            assert_eq!(e.assign("demo-a", &user), e.assign("demo-a", &user));
        }
        // The same user in another tenant is not bound to the same arm: the hash includes the
        // tenant (and the experiment), so experiments do not correlate.
        let same = (0..1000)
            .filter(|u| {
                let user = format!("user-{u}");
                e.assign("demo-a", &user).arm == e.assign("demo-b", &user).arm
            })
            .count();
        assert!((400..=600).contains(&same), "{same} of 1000 agree");
    }
}
