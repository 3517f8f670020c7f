//! User interaction events and what each kind weighs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::UnixSeconds;
use super::item::{ItemId, growth};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Impression,
    Click,
    AddToCart,
    Purchase,
}

impl EventKind {
    /// The wire name (`add_to_cart`), also the metrics' label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
        }
    }

    /// Weight of the event in a user's affinities: a purchase says more than a click.
    pub fn affinity_weight(self) -> f32 {
        match self {
            EventKind::Impression => 0.0,
            EventKind::Click => 1.0,
            EventKind::AddToCart => 2.0,
            EventKind::Purchase => 4.0,
        }
    }

    pub(super) fn trending_weight(self) -> f64 {
        match self {
            EventKind::Impression => 0.0,
            EventKind::Click => 1.0,
            EventKind::AddToCart => 2.0,
            EventKind::Purchase => 5.0,
        }
    }

    /// Weight in an item's all-time engagement, the order of category candidate lists.
    pub fn popularity_weight(self) -> f64 {
        match self {
            EventKind::Impression => 0.0,
            EventKind::Click => 1.0,
            EventKind::AddToCart => 2.0,
            EventKind::Purchase => 4.0,
        }
    }

    /// What an event at `at` adds to an item's epoch-relative trending score.
    pub fn trending_increment(self, at: UnixSeconds) -> f64 {
        self.trending_weight() * growth(at)
    }
}

/// One user interaction with one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The client's id: a store applies an event id once within its dedup window. Events
    /// without one (demo seeding, the simulator's offline log) are not deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Arc<str>>,
    pub kind: EventKind,
    pub user_id: String,
    pub item_id: ItemId,
    pub timestamp: UnixSeconds,
}
