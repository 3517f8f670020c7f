//! Catalog items, their interaction statistics (all-time, sliding windows, trending) and the
//! values derived once per record. Plain data and pure functions: every store backend, the
//! demo seeder and the simulator apply events through [`ItemStats::record`], so item
//! features mean the same thing everywhere.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::event::EventKind;
use super::{TRENDING_EPOCH, TRENDING_HALF_LIFE_SECONDS, UnixSeconds};

/// Item identifiers are shared between indexes, candidates and responses without copying.
pub type ItemId = Arc<str>;

/// A catalog item as the API accepts it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    #[schema(value_type = String)]
    pub item_id: ItemId,
    pub category: String,
    pub brand: String,
    pub price: f64,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Sold out or withdrawn: never served (kept, with its statistics, for when it returns).
    #[serde(default = "available")]
    pub available: bool,
    /// The seller's user id, on a marketplace where users sell (`exclude_own_items`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<String>,
}

fn available() -> bool {
    true
}

#[cfg(test)]
impl Item {
    /// An available item in category "c", brand "b", price 1, listed at time 0: for tests
    /// that need an item and care about few of its fields (`Item { category, ..example(id) }`).
    pub fn example(id: &str) -> Self {
        Self {
            item_id: id.into(),
            category: "c".into(),
            brand: "b".into(),
            price: 1.0,
            created_at: 0,
            attributes: Default::default(),
            available: true,
            seller_id: None,
        }
    }
}

/// What `PATCH …/items/{item_id}` may change of an item without resending it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Replaces the item's attributes as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ItemPatch {
    pub fn is_empty(&self) -> bool {
        self.available.is_none() && self.price.is_none() && self.attributes.is_none()
    }

    pub fn apply(&self, item: &mut Item) {
        if let Some(a) = self.available {
            item.available = a;
        }
        if let Some(p) = self.price {
            item.price = p;
        }
        if let Some(attributes) = &self.attributes {
            item.attributes = attributes.clone();
        }
    }
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
    /// Read with [`ItemRecord::stats`], changed with [`ItemRecord::stats_mut`] (which empties
    /// the columns cached from them).
    stats: ItemStats,
    /// What features derive from `item` alone, computed on first use. Never serialized, and
    /// not carried by a clone: a record's `item` is replaced, never edited, after a ranker saw
    /// it (a catalog update builds a new record); only `stats` change in place.
    #[serde(skip)]
    derived: Cache<OnceLock<ItemDerived>>,
    /// The item-only feature values, as the ranker computes them from `item` and `stats`
    /// ([`ItemRecord::columns`]): computed on first use after each change of `stats`.
    #[serde(skip)]
    columns: Cache<OnceLock<ItemColumns>>,
    /// The trending feature's value for one clock second ([`ItemRecord::trending_at`]).
    #[serde(skip)]
    trending: Cache<SecondCache>,
}

/// How many item-only feature values [`ItemColumns`] holds at most.
pub const ITEM_COLUMNS: usize = 8;

/// Feature values that depend on an item's record alone (counts, rates, price), computed once
/// per change of the record instead of once per request and row: 500 rows a feed. What they
/// are is the ranking layer's business (`ranking::features`); the record only keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ItemColumns {
    /// Ready to copy into a feature row: a missing or non-finite value is already replaced
    /// by the default, and flagged below.
    pub values: [f32; ITEM_COLUMNS],
    /// Bit `k`: value `k` was missing.
    pub missing: u8,
    /// Bit `k`: value `k` was NaN or infinite.
    pub nan: u8,
}

/// The heap a hash table of `capacity` entries of `entry` bytes holds (hashbrown: buckets are a
/// power of two, at most 7/8 full, one control byte each).
pub fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (entry + 1)
}

impl ItemRecord {
    /// Bytes this record holds, estimated (its allocation and its strings; the derived
    /// features once computed): what a tenant's `items` memory is reported from.
    pub fn approx_bytes(&self) -> usize {
        let i = &self.item;
        // An `Arc`'s two counters precede the record.
        16 + std::mem::size_of::<Self>()
            + i.item_id.len()
            + 16
            + i.category.capacity()
            + i.brand.capacity()
            + i.seller_id.as_ref().map_or(0, String::capacity)
            // serde_json's map: a B-tree of keys and values; ~64 bytes an entry beside its text.
            + i.attributes
                .iter()
                .map(|(k, v)| 64 + k.len() + v.to_string().len())
                .sum::<usize>()
    }

    pub fn new(item: Item, stats: ItemStats) -> Self {
        Self {
            item,
            stats,
            derived: Cache::default(),
            columns: Cache::default(),
            trending: Cache::default(),
        }
    }

    pub fn stats(&self) -> &ItemStats {
        &self.stats
    }

    /// The statistics, to change in place: the columns computed from them are dropped, and
    /// computed again on next use.
    pub fn stats_mut(&mut self) -> &mut ItemStats {
        self.columns = Cache::default();
        self.trending = Cache::default();
        &mut self.stats
    }

    /// A value of the statistics that changes with the clock (the decayed trending score's
    /// feature), for one clock `second`: `compute` runs on the first call for that second
    /// after the record was built or its stats changed; later calls for the same second
    /// return what it gave. Every feed of a second scores with the same clock (the trending
    /// feature's clock is whole seconds), so the item's logarithm is taken once a second, not
    /// once per feed that scores it (~30 k instructions a feed).
    #[inline(always)]
    pub fn trending_at(&self, second: u32, compute: impl FnOnce(&ItemStats) -> f32) -> f32 {
        self.trending.0.get_or(second, || compute(&self.stats))
    }

    /// The item-only feature values: `compute` runs on the first call after the record was
    /// built or its stats changed; later calls return what it gave. One function computes
    /// them (`ranking::features`): a cache shared by every request that scores the item.
    pub fn columns(&self, compute: impl FnOnce(&ItemRecord) -> ItemColumns) -> &ItemColumns {
        self.columns.0.get_or_init(|| compute(self))
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

/// Values computed from a record when first asked (a `OnceLock`, or a [`SecondCache`]): a
/// cache, not data — not carried by a clone, not compared, not serialized.
#[derive(Default)]
struct Cache<T>(T);

impl<T: Default> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Equality of records is equality of their data.
impl<T> PartialEq for Cache<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// One f32 kept for one clock second, in one atomic word (second + 1 in the high half, the
/// value's bits in the low half; 0 is empty): readers on every ranker thread share it without
/// a lock, and a race only computes the same value twice.
#[derive(Default)]
struct SecondCache(std::sync::atomic::AtomicU64);

impl SecondCache {
    // Inlined into the feature assembly's loop: a call per row cost as much as the check.
    #[inline(always)]
    fn get_or(&self, second: u32, compute: impl FnOnce() -> f32) -> f32 {
        use std::sync::atomic::Ordering::Relaxed;
        let key = u64::from(second.saturating_add(1)) << 32;
        let held = self.0.load(Relaxed);
        if held & !u64::from(u32::MAX) == key {
            return f32::from_bits(held as u32);
        }
        let value = compute();
        self.0.store(key | u64::from(value.to_bits()), Relaxed);
        value
    }
}

/// A stable 64-bit hash of an id, category or brand (fixed seed: the same in every thread and
/// for every map, so that a key computed with an item can be looked up in a per-request map).
pub fn key_hash(s: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15).hash_one(s)
}
