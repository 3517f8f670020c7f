//! What the service knows of one user: affinities, price level, recent items. Every store
//! backend applies events through [`UserProfile::record`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::event::EventKind;
use super::item::{Item, ItemId};
use super::{RECENT_ITEMS, UnixSeconds};
use crate::FastMap;

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
    /// What the user did with each item they saw or acted on: what the purchase exclusion and
    /// impression fatigue rules read. At most [`HISTORY_ITEMS`] items.
    #[serde(default)]
    pub history: FastMap<ItemId, ItemHistory>,
}

/// Items a profile keeps a history of; beyond it, the one seen longest ago goes.
pub const HISTORY_ITEMS: usize = 500;
/// Impressions kept per item: fatigue can count up to this many.
pub const HISTORY_IMPRESSIONS: usize = 16;

/// One user's history with one item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemHistory {
    /// Bought at least once (within the history's lifetime).
    pub purchased: bool,
    /// Unix seconds of the impressions since the user last clicked, carted or bought it,
    /// oldest first, the last [`HISTORY_IMPRESSIONS`].
    /// Up to four inline (no heap block of their own: most items were seen once or twice).
    pub impressions: smallvec::SmallVec<[u32; 4]>,
}

impl ItemHistory {
    /// Applies one event, as the Redis store's Lua does (`store::redis::apply`).
    pub fn record(&mut self, kind: EventKind, at: UnixSeconds) {
        match kind {
            EventKind::Impression => {
                self.impressions.push(at.max(0.0) as u32);
                if self.impressions.len() > HISTORY_IMPRESSIONS {
                    self.impressions.remove(0);
                }
            }
            EventKind::Click | EventKind::AddToCart => self.impressions.clear(),
            EventKind::Purchase => {
                self.impressions.clear();
                self.purchased = true;
            }
        }
    }

    /// Impressions since the last engagement that are younger than `window` seconds.
    pub fn impressions_since(&self, since: u32) -> usize {
        self.impressions.iter().filter(|t| **t >= since).count()
    }

    fn last_seen(&self) -> u32 {
        self.impressions.last().copied().unwrap_or(0)
    }

    /// The Redis hash value: `p` when purchased, then the impressions, comma-separated.
    pub fn encode(&self) -> String {
        let mut s = String::from(if self.purchased { "p" } else { "" });
        for (i, t) in self.impressions.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&t.to_string());
        }
        s
    }

    pub fn decode(s: &str) -> Self {
        let (purchased, rest) = match s.strip_prefix('p') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        Self {
            purchased,
            impressions: rest.split(',').filter_map(|t| t.parse().ok()).collect(),
        }
    }

    /// Nothing left to remember.
    pub fn is_empty(&self) -> bool {
        !self.purchased && self.impressions.is_empty()
    }
}

impl UserProfile {
    /// Bytes this profile holds, estimated (its allocation, affinity tables, recent items and
    /// history): what a tenant's `users` memory is reported from.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let strings = |m: &FastMap<String, f32>| m.keys().map(String::capacity).sum::<usize>();
        let spilled: usize = self
            .history
            .values()
            .filter(|h| h.impressions.spilled())
            .map(|h| h.impressions.capacity() * 4)
            .sum();
        16 + size_of::<Self>()
            + super::item::table_bytes(self.category_affinity.capacity(), size_of::<(String, f32)>())
            + strings(&self.category_affinity)
            + super::item::table_bytes(self.brand_affinity.capacity(), size_of::<(String, f32)>())
            + strings(&self.brand_affinity)
            // Item ids are shared with the catalog (`Arc<str>`): a pointer each.
            + self.recent_items.capacity() * size_of::<ItemId>()
            + super::item::table_bytes(
                self.history.capacity(),
                size_of::<(ItemId, ItemHistory)>(),
            )
            + spilled
    }

    /// Updates the profile for an event on `item` at `at`. Impressions change only the
    /// history: a user's taste shows in what they act on.
    pub fn record(&mut self, kind: EventKind, item: &Item, at: UnixSeconds) {
        self.record_history(kind, &item.item_id, at);
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

    /// The item history part of [`Self::record`].
    pub fn record_history(&mut self, kind: EventKind, item_id: &ItemId, at: UnixSeconds) {
        if !self.history.contains_key(item_id) && self.history.len() >= HISTORY_ITEMS {
            // Bounded: the item seen longest ago goes (purchases without impressions first).
            if let Some(oldest) = self
                .history
                .iter()
                .min_by_key(|(id, h)| (h.last_seen(), (*id).clone()))
                .map(|(id, _)| id.clone())
            {
                self.history.remove(&oldest);
            }
        }
        let entry = self.history.entry(item_id.clone()).or_default();
        entry.record(kind, at);
        if entry.is_empty() {
            self.history.remove(item_id);
        }
    }

    /// Whether the user bought `item_id` (within the history).
    pub fn purchased(&self, item_id: &str) -> bool {
        self.history.get(item_id).is_some_and(|h| h.purchased)
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
