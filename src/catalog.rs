//! The marketplace's data: items, their interaction statistics, user profiles, and how one
//! interaction event changes them. Plain data and pure functions: every store backend, the
//! demo seeder and the simulator apply events through [`ItemStats::record`] and
//! [`UserProfile::record`], so features mean the same thing everywhere.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Item identifiers are shared between indexes, candidates and responses without copying.
pub type ItemId = Arc<str>;

/// Seconds since the Unix epoch, as the model's time features use them.
pub type UnixSeconds = f64;

/// The wall clock, in the unit every timestamp of the domain uses.
pub fn unix_now() -> UnixSeconds {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Trending scores halve every day: yesterday's purchases count half as much as today's.
pub const TRENDING_HALF_LIFE_SECONDS: f64 = 86_400.0;
/// Trending scores are stored relative to this instant (2026-01-01T00:00:00Z): an event at
/// time t adds `weight * 2^((t - epoch) / half-life)`, so scores only ever grow by addition
/// (an atomic ZINCRBY in Redis), and their order never depends on the time of reading.
/// f64 holds 2^1023: the epoch must be moved forward (all scores rescaled) before 1023
/// half-lives pass, i.e. before 2028-10.
pub const TRENDING_EPOCH: UnixSeconds = 1_767_225_600.0;
/// How many recently interacted items a profile remembers.
pub const RECENT_ITEMS: usize = 50;

/// A catalog item as the API accepts it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub item_id: ItemId,
    pub category: String,
    pub brand: String,
    pub price: f64,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Impression,
    Click,
    AddToCart,
    Purchase,
}

impl EventKind {
    /// Weight of the event in a user's affinities: a purchase says more than a click.
    pub fn affinity_weight(self) -> f32 {
        match self {
            EventKind::Impression => 0.0,
            EventKind::Click => 1.0,
            EventKind::AddToCart => 2.0,
            EventKind::Purchase => 4.0,
        }
    }

    fn trending_weight(self) -> f64 {
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
    pub kind: EventKind,
    pub user_id: String,
    pub item_id: ItemId,
    pub timestamp: UnixSeconds,
}

/// Interaction counts of one item, and its trending score (relative to [`TRENDING_EPOCH`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemStats {
    pub impressions: f64,
    pub clicks: f64,
    pub add_to_carts: f64,
    pub purchases: f64,
    pub trending: f64,
}

fn growth(at: UnixSeconds) -> f64 {
    ((at - TRENDING_EPOCH) / TRENDING_HALF_LIFE_SECONDS).exp2()
}

impl ItemStats {
    pub fn record(&mut self, kind: EventKind, at: UnixSeconds) {
        match kind {
            EventKind::Impression => self.impressions += 1.0,
            EventKind::Click => self.clicks += 1.0,
            EventKind::AddToCart => self.add_to_carts += 1.0,
            EventKind::Purchase => self.purchases += 1.0,
        }
        if kind.trending_weight() > 0.0 {
            self.trending += kind.trending_increment(at);
        }
    }

    /// The trending score as of `now`: each event's weight halved once per half-life since.
    pub fn trending_score(&self, now: UnixSeconds) -> f64 {
        self.trending / growth(now)
    }

    /// All-time engagement (the sum of the events' popularity weights).
    pub fn popularity(&self) -> f64 {
        self.clicks * EventKind::Click.popularity_weight()
            + self.add_to_carts * EventKind::AddToCart.popularity_weight()
            + self.purchases * EventKind::Purchase.popularity_weight()
    }
}

/// An item with its statistics: everything the item features are computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub item: Item,
    pub stats: ItemStats,
}

/// What the service knows of one user of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    /// Clicks, carts and purchases seen (impressions excluded).
    pub interactions: f64,
    pub category_affinity: HashMap<String, f32>,
    pub brand_affinity: HashMap<String, f32>,
    /// Sum of affinity weights, to normalise the maps into shares.
    pub affinity_total: f32,
    pub price_sum: f64,
    pub price_count: f64,
    /// Most recent first.
    pub recent_items: VecDeque<ItemId>,
}

impl UserProfile {
    /// Updates the profile for an event on `item`. Impressions change nothing: a user's
    /// taste shows in what they act on.
    pub fn record(&mut self, kind: EventKind, item: &Item) {
        let w = kind.affinity_weight();
        if w == 0.0 {
            return;
        }
        self.interactions += 1.0;
        *self
            .category_affinity
            .entry(item.category.clone())
            .or_default() += w;
        *self.brand_affinity.entry(item.brand.clone()).or_default() += w;
        self.affinity_total += w;
        self.price_sum += item.price;
        self.price_count += 1.0;
        self.recent_items.retain(|id| *id != item.item_id);
        self.recent_items.push_front(item.item_id.clone());
        self.recent_items.truncate(RECENT_ITEMS);
    }

    /// Share of the user's affinity that falls on `category` (0 when unknown).
    pub fn category_share(&self, category: &str) -> f32 {
        share(&self.category_affinity, category, self.affinity_total)
    }

    pub fn brand_share(&self, brand: &str) -> f32 {
        share(&self.brand_affinity, brand, self.affinity_total)
    }

    pub fn mean_price(&self) -> Option<f64> {
        (self.price_count > 0.0).then(|| self.price_sum / self.price_count)
    }

    /// The user's strongest categories, strongest first (ties by name, for determinism).
    pub fn top_categories(&self, n: usize) -> Vec<&str> {
        let mut cats: Vec<(&str, f32)> = self
            .category_affinity
            .iter()
            .map(|(c, w)| (c.as_str(), *w))
            .collect();
        cats.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        cats.into_iter().take(n).map(|(c, _)| c).collect()
    }

    pub fn has_seen(&self, item_id: &str) -> bool {
        self.recent_items.iter().any(|id| &**id == item_id)
    }
}

fn share(map: &HashMap<String, f32>, key: &str, total: f32) -> f32 {
    if total <= 0.0 {
        return 0.0;
    }
    map.get(key).copied().unwrap_or(0.0) / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, category: &str) -> Item {
        Item {
            item_id: id.into(),
            category: category.into(),
            brand: "b".into(),
            price: 10.0,
            created_at: 0,
            attributes: Default::default(),
        }
    }

    const T0: f64 = TRENDING_EPOCH + 300.0 * TRENDING_HALF_LIFE_SECONDS;

    #[test]
    fn trending_halves_after_one_half_life() {
        let mut s = ItemStats::default();
        s.record(EventKind::Purchase, T0);
        assert!((s.trending_score(T0) - 5.0).abs() < 1e-9);
        let later = s.trending_score(T0 + TRENDING_HALF_LIFE_SECONDS);
        assert!((later - 2.5).abs() < 1e-9, "{later}");
        assert_eq!(s.purchases, 1.0);
        assert_eq!(s.popularity(), 4.0);
    }

    #[test]
    fn late_events_add_their_decayed_weight() {
        let mut s = ItemStats::default();
        s.record(EventKind::Click, T0 + TRENDING_HALF_LIFE_SECONDS);
        s.record(EventKind::Click, T0);
        let now = T0 + TRENDING_HALF_LIFE_SECONDS;
        assert!(
            (s.trending_score(now) - 1.5).abs() < 1e-9,
            "{}",
            s.trending_score(now)
        );
    }

    #[test]
    fn profile_tracks_affinity_shares_and_recency() {
        let mut p = UserProfile::default();
        p.record(EventKind::Impression, &item("i0", "shoes"));
        assert_eq!(p.interactions, 0.0);
        p.record(EventKind::Click, &item("i1", "shoes"));
        p.record(EventKind::Purchase, &item("i2", "books"));
        p.record(EventKind::Click, &item("i1", "shoes"));
        assert_eq!(p.top_categories(2), vec!["books", "shoes"]);
        assert!((p.category_share("books") - 4.0 / 6.0).abs() < 1e-6);
        assert_eq!(p.category_share("toys"), 0.0);
        assert_eq!(
            p.recent_items.iter().map(|i| &**i).collect::<Vec<_>>(),
            ["i1", "i2"]
        );
        assert!(p.has_seen("i2") && !p.has_seen("i0"));
    }
}
