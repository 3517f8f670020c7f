//! What the service knows of one user: affinities, price level, recent items. Every store
//! backend applies events through [`UserProfile::record`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::RECENT_ITEMS;
use super::event::EventKind;
use super::item::{Item, ItemId};
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
