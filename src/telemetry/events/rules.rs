//! Events of the business rules and feed sessions.

use tracing::{info, warn};

use super::InternalEvent;
use crate::telemetry::Metrics;

/// What the rules did to one served feed page.
pub struct RulesApplied<'a, R: Iterator<Item = (&'static str, u32)>> {
    pub tenant: &'a str,
    /// (rule, candidates it removed)
    pub removed: R,
    pub relaxations: u32,
    pub pins: u32,
    pub page: u32,
}

impl<R: Iterator<Item = (&'static str, u32)>> InternalEvent for RulesApplied<'_, R> {
    fn emit(self, m: &Metrics) {
        let r = &m.rules;
        for (rule, n) in self.removed.filter(|(_, n)| *n > 0) {
            r.candidates_removed_total
                .with_label_values(&[self.tenant, rule])
                .inc_by(u64::from(n));
        }
        if self.relaxations > 0 {
            r.diversity_relaxations_total
                .with_label_values(&[self.tenant])
                .inc_by(u64::from(self.relaxations));
        }
        if self.pins > 0 {
            r.pins_served_total
                .with_label_values(&[self.tenant])
                .inc_by(u64::from(self.pins));
        }
        r.feed_page
            .with_label_values(&[self.tenant])
            .observe(f64::from(self.page));
    }
}

/// A tenant's rules in force here changed version (a `PUT` here or on another replica).
pub struct RulesChanged<'a> {
    pub tenant: &'a str,
    pub version: u64,
}

impl InternalEvent for RulesChanged<'_> {
    fn emit(self, m: &Metrics) {
        m.rules
            .version
            .with_label_values(&[self.tenant])
            .set(self.version as i64);
        info!(
            event = "RulesChanged",
            tenant = self.tenant,
            rules_version = self.version
        );
    }
}

pub struct RulesRefreshFailed<'a> {
    pub tenant: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for RulesRefreshFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.rules
            .refresh_failures_total
            .with_label_values(&[self.tenant])
            .inc();
        m.recent_errors.push(
            "rules",
            self.tenant,
            "refresh_failed",
            self.error.to_string(),
        );
        warn!(
            event = "RulesRefreshFailed",
            tenant = self.tenant,
            error = self.error,
            "could not re-read the tenant's rules; the last version stays in force"
        );
    }
}

pub struct SessionWriteFailed<'a> {
    pub tenant: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for SessionWriteFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.rules
            .session_write_failures_total
            .with_label_values(&[self.tenant])
            .inc();
        m.recent_errors.push(
            "sessions",
            self.tenant,
            "write_failed",
            self.error.to_string(),
        );
        warn!(
            event = "SessionWriteFailed",
            tenant = self.tenant,
            error = self.error,
            "a feed page was not stored: the session's next page may repeat its items"
        );
    }
}
