//! Events of tenants' budgets: what a tenant keeps, measured, and writes a budget refused.

use tracing::info;

use super::InternalEvent;
use crate::telemetry::Metrics;

/// What one of a tenant's components holds, measured (the usage reporter, periodically).
pub struct TenantUsageMeasured<'a> {
    pub tenant: &'a str,
    /// `items`, `users`, `feed_log` or `rules`.
    pub component: &'static str,
    pub entries: u64,
    pub bytes: u64,
    /// The component's budget; `None`: unlimited.
    pub budget: Option<u64>,
}

impl InternalEvent for TenantUsageMeasured<'_> {
    fn emit(self, m: &Metrics) {
        let labels = [self.tenant, self.component];
        let b = &m.budget;
        b.entries
            .with_label_values(&labels)
            .set(self.entries as i64);
        b.memory_bytes
            .with_label_values(&labels)
            .set(self.bytes as i64);
        match self.budget {
            Some(limit) => b
                .budget_entries
                .with_label_values(&labels)
                .set(limit as i64),
            // Unlimited: no series, so that a usage ratio is never divided by zero.
            None => {
                let _ = b.budget_entries.remove_label_values(&labels);
            }
        }
    }
}

/// A write refused by a tenant's budget.
pub struct QuotaRefused<'a> {
    pub tenant: &'a str,
    /// `items`, `users`, `rules` or `events_per_second`.
    pub budget: &'static str,
    /// Elements refused: items, events, rules documents.
    pub count: usize,
    pub message: &'a str,
}

impl InternalEvent for QuotaRefused<'_> {
    fn emit(self, m: &Metrics) {
        m.budget
            .refused_total
            .with_label_values(&[self.tenant, self.budget])
            .inc_by(self.count as u64);
        info!(
            event = "QuotaRefused",
            tenant = self.tenant,
            budget = self.budget,
            count = self.count,
            message = self.message
        );
    }
}

/// A tenant's usage could not be measured (the store did not answer): its gauges keep their
/// last values.
pub struct StoreUsageFailed<'a> {
    pub tenant: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for StoreUsageFailed<'_> {
    fn emit(self, _m: &Metrics) {
        tracing::warn!(
            event = "TenantUsageFailed",
            tenant = self.tenant,
            error = %self.error
        );
    }
}

/// A tenant's served feeds past its `feed_log_entries` budget dropped from a shared log
/// (Redis), oldest first: their clicks can no longer be joined.
pub struct FeedLogTrimmed<'a> {
    pub tenant: &'a str,
    pub evicted: u64,
}

impl InternalEvent for FeedLogTrimmed<'_> {
    fn emit(self, m: &Metrics) {
        m.feed_log_evicted_total.inc_by(self.evicted);
        info!(
            event = "FeedLogTrimmed",
            tenant = self.tenant,
            evicted = self.evicted
        );
    }
}
