//! The marketplace's data: items, their interaction statistics, user profiles, and how one
//! interaction event changes them. Plain data and pure functions: every store backend, the
//! demo seeder and the simulator apply events through [`ItemStats::record`] and
//! [`UserProfile::record`], so features mean the same thing everywhere.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::FastMap;

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
    /// The client's id: a store applies an event id once within its dedup window. Events
    /// without one (demo seeding, the simulator's offline log) are not deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Arc<str>>,
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
    /// Counts per [`WINDOWS`] entry, in that order.
    #[serde(default)]
    pub windows: [WindowCounts; 3],
}

/// The sliding windows item counts are kept over, besides all-time: (label, length in s).
pub const WINDOWS: [(&str, f64); 3] = [("1h", 3_600.0), ("24h", 86_400.0), ("7d", 604_800.0)];

/// An item's event counts (in [`EventKind`] order) within one sliding window, estimated the
/// way sliding-window rate limiters do: two fixed buckets as long as the window, the previous
/// one weighted by the share of it the window still covers. Constant memory per window and
/// an atomic update in Redis; exact when events arrive evenly, never off by more than the
/// previous bucket's count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    /// `floor(t / length)` of the current bucket (0: nothing recorded yet).
    pub bucket: i64,
    pub current: [f64; 4],
    pub previous: [f64; 4],
}

impl WindowCounts {
    /// Must match the Lua in `store::redis` that does the same inside Redis.
    pub fn record(&mut self, kind: EventKind, at: UnixSeconds, length: f64) {
        let bucket = (at / length).floor() as i64;
        let k = kind as usize;
        match bucket - self.bucket {
            0 => self.current[k] += 1.0,
            1.. => {
                self.previous = if bucket - self.bucket == 1 {
                    self.current
                } else {
                    [0.0; 4]
                };
                self.current = [0.0; 4];
                self.current[k] = 1.0;
                self.bucket = bucket;
            }
            -1 => self.previous[k] += 1.0,
            // Older than any window position can show: nothing to count it in.
            _ => {}
        }
    }

    /// Adds counts recorded separately, as if their events had been recorded here: the
    /// outcome of `record` does not depend on the order of events, so a batch can be summed
    /// first and merged once. The Redis store does this merge in Lua (`store::redis::apply`).
    pub fn merge(&mut self, other: &WindowCounts) {
        let bucket = self.bucket.max(other.bucket);
        // A side's counts as of `bucket`: current and previous.
        let at = |w: &WindowCounts| match bucket - w.bucket {
            0 => (w.current, w.previous),
            1 => ([0.0; 4], w.current),
            _ => ([0.0; 4], [0.0; 4]),
        };
        let ((c1, p1), (c2, p2)) = (at(self), at(other));
        self.current = std::array::from_fn(|k| c1[k] + c2[k]);
        self.previous = std::array::from_fn(|k| p1[k] + p2[k]);
        self.bucket = bucket;
    }

    /// The estimated counts of the window ending at `now`.
    pub fn estimate(&self, now: UnixSeconds, length: f64) -> [f64; 4] {
        let position = now / length;
        let now_bucket = position.floor() as i64;
        // The share of the previous bucket the window still covers.
        let overlap = 1.0 - (position - now_bucket as f64);
        std::array::from_fn(|k| match now_bucket - self.bucket {
            // Events stamped slightly ahead of this clock (allowed skew) count in full.
            ..=0 => self.current[k] + self.previous[k] * overlap,
            1 => self.current[k] * overlap,
            _ => 0.0,
        })
    }
}

pub fn growth(at: UnixSeconds) -> f64 {
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
        for (w, (_, length)) in self.windows.iter_mut().zip(WINDOWS) {
            w.record(kind, at, length);
        }
    }

    /// Counts per window as of `now`, in [`WINDOWS`] order.
    pub fn windowed(&self, now: UnixSeconds) -> [[f64; 4]; 3] {
        let mut out = [[0.0; 4]; 3];
        for ((o, w), (_, length)) in out.iter_mut().zip(&self.windows).zip(WINDOWS) {
            *o = w.estimate(now, length);
        }
        out
    }

    /// The trending score as of `now`: each event's weight halved once per half-life since.
    pub fn trending_score(&self, now: UnixSeconds) -> f64 {
        self.trending_score_at(growth(now))
    }

    /// [`Self::trending_score`] with `growth(now)` taken by the caller, once for many items.
    pub fn trending_score_at(&self, growth: f64) -> f64 {
        self.trending / growth
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
    /// What features derive from `item` alone, computed on first use. Never serialized, and
    /// not carried by a clone: a record's `item` is replaced, never edited, after a ranker saw
    /// it (a catalog update builds a new record); only `stats` change in place.
    #[serde(skip)]
    derived: DerivedCell,
}

impl ItemRecord {
    pub fn new(item: Item, stats: ItemStats) -> Self {
        Self {
            item,
            stats,
            derived: DerivedCell::default(),
        }
    }

    /// Computed once per record, then read by every request that scores the item: a feed
    /// scores 500 items, and hashing their strings and taking logarithms of their prices per
    /// request was most of the feature assembly's cost.
    pub fn derived(&self) -> &ItemDerived {
        self.derived.0.get_or_init(|| ItemDerived {
            log_price: self.item.price.ln_1p(),
            id_key: key_hash(&self.item.item_id),
            category_key: key_hash(&self.item.category),
            brand_key: key_hash(&self.item.brand),
        })
    }
}

/// Values derived from an [`Item`] alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemDerived {
    /// ln(1 + price)
    pub log_price: f64,
    /// [`key_hash`] of the item id, category and brand: a request looks the item up in its
    /// user's affinities by these, and compares the strings only on a match.
    pub id_key: u64,
    pub category_key: u64,
    pub brand_key: u64,
}

#[derive(Default)]
struct DerivedCell(std::sync::OnceLock<ItemDerived>);

impl Clone for DerivedCell {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Equality of records is equality of their data; a cache is not data.
impl PartialEq for DerivedCell {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for DerivedCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// A stable 64-bit hash of an id, category or brand (fixed seed: the same in every thread and
/// for every map, so that a key computed with an item can be looked up in a per-request map).
pub fn key_hash(s: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15).hash_one(s)
}

/// What the service knows of one user of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    /// Clicks, carts and purchases seen (impressions excluded).
    pub interactions: f64,
    pub category_affinity: FastMap<String, f32>,
    pub brand_affinity: FastMap<String, f32>,
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
        self.affinity_share(self.category_affinity.get(category).copied())
    }

    pub fn brand_share(&self, brand: &str) -> f32 {
        self.affinity_share(self.brand_affinity.get(brand).copied())
    }

    /// The share of the user's affinity that an entry of weight `weight` holds.
    pub fn affinity_share(&self, weight: Option<f32>) -> f32 {
        if self.affinity_total <= 0.0 {
            return 0.0;
        }
        weight.unwrap_or(0.0) / self.affinity_total
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
        let seen = |id: &str| p.recent_items.iter().any(|r| &**r == id);
        assert!(seen("i2") && !seen("i0"));
    }

    #[test]
    fn merging_a_batch_equals_recording_its_events() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let kinds = [
            EventKind::Impression,
            EventKind::Click,
            EventKind::AddToCart,
            EventKind::Purchase,
        ];
        let length = 3_600.0;
        for _ in 0..500 {
            // Events over a few buckets, in any order: late, early, far behind.
            let events = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<(EventKind, f64)> {
                (0..rng.random_range(0..6))
                    .map(|_| {
                        let at = T0 + rng.random_range(0.0..4.0 * length);
                        (kinds[rng.random_range(0..4)], at)
                    })
                    .collect()
            };
            let stored = events(&mut rng);
            let batch = events(&mut rng);
            let mut sequential = WindowCounts::default();
            let mut merged = WindowCounts::default();
            let mut summed = WindowCounts::default();
            for &(kind, at) in &stored {
                sequential.record(kind, at, length);
                merged.record(kind, at, length);
            }
            for &(kind, at) in &batch {
                sequential.record(kind, at, length);
                summed.record(kind, at, length);
            }
            merged.merge(&summed);
            assert_eq!(merged, sequential, "stored {stored:?}, batch {batch:?}");
        }
    }

    #[test]
    fn window_counts_slide_out_over_one_window_length() {
        const HOUR: f64 = 3_600.0;
        // T0 is a bucket boundary of every window.
        let start = (T0 / WINDOWS[2].1).floor() * WINDOWS[2].1;
        let mut s = ItemStats::default();
        for _ in 0..10 {
            s.record(EventKind::Click, start + 60.0);
        }
        s.record(EventKind::Impression, start + 120.0);
        let [hour, day, week] = s.windowed(start + 600.0);
        assert_eq!(hour, [1.0, 10.0, 0.0, 0.0]);
        assert_eq!(day, hour);
        assert_eq!(week, hour);
        // Next hour, a quarter in: the old bucket still covers three quarters of the window.
        s.record(EventKind::Purchase, start + HOUR + 900.0);
        let [hour, day, _] = s.windowed(start + HOUR + 900.0);
        assert_eq!(hour, [0.75, 7.5, 0.0, 1.0]);
        assert_eq!(day, [1.0, 10.0, 0.0, 1.0]);
        // Two hours on, the 1 h window has forgotten the clicks; the day has not.
        let [hour, day, week] = s.windowed(start + 3.0 * HOUR);
        assert_eq!(hour, [0.0; 4]);
        assert_eq!(day, [1.0, 10.0, 0.0, 1.0]);
        assert_eq!(week, day);
        // A late event lands in the previous bucket; one older than that is not counted.
        s.record(EventKind::Click, start + 30.0);
        s.record(EventKind::Click, start - 2.0 * HOUR);
        assert_eq!(s.windows[0].previous, [1.0, 11.0, 0.0, 0.0]);
        assert_eq!(s.clicks, 12.0);
    }
}
