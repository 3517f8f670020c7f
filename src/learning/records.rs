//! The served-feature log's records, one JSON object per line (files) or message (Kafka):
//! a logged feed, or an outcome naming a logged feed's request_id. Both carry tenant and
//! user, the key that keeps a user's records in order on one partition.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Feed(FeedRecord),
    Outcome(OutcomeRecord),
}

/// A served feed as the model saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRecord {
    pub request_id: String,
    pub tenant: String,
    pub user_id: String,
    /// Unix seconds it was served.
    pub ts: f64,
    pub model: String,
    pub version: String,
    pub experiment: Option<String>,
    pub arm: Option<String>,
    /// 1-based page of the feed session.
    pub page: u32,
    /// The model's feature names: each item's `features` in this order.
    pub features: Vec<String>,
    pub items: Vec<LoggedItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedItem {
    pub item_id: String,
    /// 0-based position in the served page.
    pub position: u32,
    /// The model's own score (before the rules' boosts).
    pub score: f32,
    pub features: Vec<f32>,
}

/// An event carrying a logged feed's request_id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub request_id: String,
    pub tenant: String,
    pub user_id: String,
    pub item_id: String,
    /// `impression`, `click`, `add_to_cart` or `purchase`.
    pub event: String,
    /// Unix seconds of the event.
    pub ts: f64,
}

impl Record {
    /// The partition key: a user's feeds and outcomes stay in order on one partition.
    pub fn key(&self) -> String {
        let (t, u) = match self {
            Record::Feed(f) => (&f.tenant, &f.user_id),
            Record::Outcome(o) => (&o.tenant, &o.user_id),
        };
        format!("{t}:{u}")
    }
}

/// The training label of an outcome: purchase 3 > add_to_cart 2 > click 1 > shown 0.
pub fn grade(event: &str) -> u8 {
    match event {
        "purchase" => 3,
        "add_to_cart" => 2,
        "click" => 1,
        _ => 0,
    }
}
