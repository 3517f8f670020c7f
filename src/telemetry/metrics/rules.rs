//! The business-rules metrics: what the rules stage removed and rearranged, the version of
//! each tenant's rules, and how deep users page. Labels are bounded: tenants come from the
//! config, rules are a fixed list.

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

use super::define::Registrar;

/// The rules that remove candidates (`ranking::rules::Removal`), as label values.
pub const REMOVAL_RULES: [&str; 6] = [
    "unavailable",
    "seen",
    "excluded",
    "own_item",
    "purchased",
    "fatigue",
];

pub struct RulesMetrics {
    pub candidates_removed_total: IntCounterVec,
    pub diversity_relaxations_total: IntCounterVec,
    pub pins_served_total: IntCounterVec,
    pub feed_page: HistogramVec,
    pub version: IntGaugeVec,
    pub refresh_failures_total: IntCounterVec,
    pub session_write_failures_total: IntCounterVec,
}

impl RulesMetrics {
    pub fn new(r: &Registrar<'_>) -> Self {
        Self {
            candidates_removed_total: r.counter(
                "eaglerank_rules_candidates_removed_total",
                "Candidates the rules kept out of a feed, by tenant and rule (the first that \
                 applied).",
                &["tenant", "rule"],
            ),
            diversity_relaxations_total: r.counter(
                "eaglerank_rules_diversity_relaxations_total",
                "Feed positions filled breaking a diversity limit, because no candidate left \
                 would keep them all.",
                &["tenant"],
            ),
            pins_served_total: r.counter(
                "eaglerank_rules_pins_served_total",
                "Pinned items served at their position.",
                &["tenant"],
            ),
            feed_page: r.histogram(
                "eaglerank_feed_session_page",
                "The page number of each served feed page: how deep users page through a feed \
                 session (the count above n is the sessions that reached page n + 1).",
                &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0],
                &["tenant"],
            ),
            version: r.gauge(
                "eaglerank_rules_version",
                "The version of the tenant's rules this replica serves (0: the configured rules).",
                &["tenant"],
            ),
            refresh_failures_total: r.counter(
                "eaglerank_rules_refresh_failures_total",
                "Failed re-reads of a tenant's rules from the store (the last version stays).",
                &["tenant"],
            ),
            session_write_failures_total: r.counter(
                "eaglerank_feed_session_write_failures_total",
                "Feed pages that could not be stored for their session (its next page may \
                 repeat their items).",
                &["tenant"],
            ),
        }
    }

    /// Every tenant's series at 0.
    pub fn init_tenant(&self, tenant: &str) {
        for rule in REMOVAL_RULES {
            self.candidates_removed_total
                .with_label_values(&[tenant, rule]);
        }
        self.diversity_relaxations_total
            .with_label_values(&[tenant]);
        self.pins_served_total.with_label_values(&[tenant]);
        self.feed_page.with_label_values(&[tenant]);
        self.version.with_label_values(&[tenant]);
        self.refresh_failures_total.with_label_values(&[tenant]);
        self.session_write_failures_total
            .with_label_values(&[tenant]);
    }
}
