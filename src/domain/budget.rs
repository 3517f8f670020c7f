//! A tenant's memory budget: how much of what it may keep, so that one tenant cannot take the
//! memory every tenant shares. Checked where the entries are written (the store, the
//! served-feed log, the rules API, event ingestion); reported per tenant and component
//! (`eaglerank_tenant_entries`, `eaglerank_tenant_memory_bytes`, `eaglerank_tenant_budget_entries`).

use serde::Deserialize;

/// `[tenants.<id>.budget]`; 0 = no limit (the default for each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Catalog items: an upsert that would add items past it is refused whole.
    pub items: u64,
    /// User profiles: events of users the store does not know yet are refused past it (the
    /// events of known users still apply).
    pub users: u64,
    /// Served feeds held for the click join: past it, the tenant's own oldest feeds are dropped
    /// early, never another tenant's (embedded: as it records; Redis: each usage round).
    pub feed_log_entries: u64,
    /// Entries of the business-rules document: excluded categories, brands, sellers and items,
    /// boosts and pins together. A larger document is refused.
    pub rules: u64,
    /// Events accepted per second (beside `rate_limit_per_second`, which counts requests).
    pub events_per_second: u32,
}

/// What a budget bounds: a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Items,
    Users,
    FeedLog,
    Rules,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Items,
        Component::Users,
        Component::FeedLog,
        Component::Rules,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Items => "items",
            Component::Users => "users",
            Component::FeedLog => "feed_log",
            Component::Rules => "rules",
        }
    }
}

impl Budget {
    /// The limit on `component`'s entries; `None`: unlimited.
    pub fn limit(&self, component: Component) -> Option<u64> {
        let n = match component {
            Component::Items => self.items,
            Component::Users => self.users,
            Component::FeedLog => self.feed_log_entries,
            Component::Rules => self.rules,
        };
        (n > 0).then_some(n)
    }
}

/// How many new entries fit beside `held` under `limit` (any number when unlimited).
pub fn room(limit: Option<u64>, held: usize) -> usize {
    limit.map_or(usize::MAX, |l| (l as usize).saturating_sub(held))
}
