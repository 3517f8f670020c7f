//! Per-tenant memory and budgets: what each tenant keeps, per component (`items`, `users`,
//! `feed_log`, `rules`), against its budget, and the writes a budget refused. Labels are
//! bounded: tenants come from the config, components are a fixed list.

use prometheus::{IntCounterVec, IntGaugeVec};

use super::define::Registrar;

/// What a budget bounds, as label values (`domain::budget::Component`).
pub const COMPONENTS: [&str; 4] = ["items", "users", "feed_log", "rules"];
/// What a refused write ran into: a component's budget, or the events per second.
pub const REFUSED: [&str; 4] = ["items", "users", "rules", "events_per_second"];

pub struct BudgetMetrics {
    pub memory_bytes: IntGaugeVec,
    pub entries: IntGaugeVec,
    pub budget_entries: IntGaugeVec,
    pub refused_total: IntCounterVec,
}

impl BudgetMetrics {
    pub fn new(r: &Registrar<'_>) -> Self {
        Self {
            memory_bytes: r.gauge(
                "eaglerank_tenant_memory_bytes",
                "Bytes a tenant's entries take, estimated, by component (embedded store: from \
                 its tables; Redis: MEMORY USAGE of a sample times the count; feed_log: the \
                 embedded log's share, or Redis's buckets). Measured every \
                 budgets.report_interval_ms.",
                &["tenant", "component"],
            ),
            entries: r.gauge(
                "eaglerank_tenant_entries",
                "Entries a tenant keeps, by component: items, users (profiles), feed_log \
                 (served feeds held for the click join), rules (entries of its rules \
                 document).",
                &["tenant", "component"],
            ),
            budget_entries: r.gauge(
                "eaglerank_tenant_budget_entries",
                "A tenant's budget of entries, by component ([tenants.<id>.budget]); absent \
                 where unlimited.",
                &["tenant", "component"],
            ),
            refused_total: r.counter(
                "eaglerank_tenant_quota_refused_total",
                "Writes refused by a tenant's budget, by what they ran into (items, users, \
                 rules, events_per_second), counted in elements (items, events, documents).",
                &["tenant", "budget"],
            ),
        }
    }

    pub fn init_tenant(&self, tenant: &str) {
        for budget in REFUSED {
            self.refused_total.with_label_values(&[tenant, budget]);
        }
    }
}
