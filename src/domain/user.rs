//! What the service knows of one user: affinities, price level, recent items, item history.
//! Every store backend applies events through [`Profile::record_touch`]; the embedded store
//! keeps profiles over its interned ids (`Profile<u32, u32>`), everything else reads them
//! over names ([`UserProfile`]).

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::sync::Arc;

use super::event::EventKind;
use super::history::History;
use super::item::{Item, ItemId, key_hash};
use super::{RECENT_ITEMS, UnixSeconds};

/// What the service knows of one user of one tenant, over item ids `I` and category and
/// brand names `N`.
#[derive(Debug, Clone)]
pub struct Profile<I: ProfileItem, N> {
    /// Clicks, carts and purchases seen (impressions excluded).
    pub interactions: f64,
    pub category_affinity: Affinities<N>,
    pub brand_affinity: Affinities<N>,
    /// Sum of affinity weights, to normalise the affinities into shares.
    pub affinity_total: f32,
    pub price_sum: f64,
    pub price_count: f64,
    /// Most recent first.
    pub recent_items: VecDeque<I>,
    /// What the user did with the items they saw or acted on: what the purchase exclusion
    /// and impression fatigue rules read, by each item's [`ProfileItem::Key`].
    pub history: History<I::Key>,
}

/// How a profile's history holds an item: by what the rules compare, not the id itself. The
/// embedded store's slots are their own key. A served profile ([`UserProfile`]) holds each
/// item's [`key_hash`], which is all `rules::blocked_by_history` reads: a Redis-backed feed
/// decodes its user's history (tens of items) per request, and an `Arc<str>` for each was
/// most of the allocations such a feed makes beyond an embedded one. Two ids of one hash
/// would count as one item: at 64 bits, as likely as in the rules' own table.
pub trait ProfileItem: Clone + Eq {
    type Key: Copy + Ord + std::hash::Hash + std::fmt::Debug;
    fn key(&self) -> Self::Key;
}

/// The embedded store's interned item slots.
impl ProfileItem for u32 {
    type Key = u32;
    fn key(&self) -> u32 {
        *self
    }
}

impl ProfileItem for ItemId {
    type Key = u64;
    fn key(&self) -> u64 {
        key_hash(self)
    }
}

impl<I: ProfileItem + Ord, N: Ord + Clone> PartialEq for Profile<I, N> {
    fn eq(&self, other: &Self) -> bool {
        self.interactions == other.interactions
            && self.category_affinity == other.category_affinity
            && self.brand_affinity == other.brand_affinity
            && self.affinity_total == other.affinity_total
            && self.price_sum == other.price_sum
            && self.price_count == other.price_count
            && self.recent_items == other.recent_items
            && self.history == other.history
    }
}

/// A profile as the ranker reads it: item ids and names.
pub type UserProfile = Profile<ItemId, Arc<str>>;

impl<I: ProfileItem, N> Default for Profile<I, N> {
    fn default() -> Self {
        Self {
            interactions: 0.0,
            category_affinity: Affinities::default(),
            brand_affinity: Affinities::default(),
            affinity_total: 0.0,
            price_sum: 0.0,
            price_count: 0.0,
            recent_items: VecDeque::new(),
            history: History::default(),
        }
    }
}

/// Impressions a history keeps in all, and purchases: beyond it, the oldest go.
pub const HISTORY_ITEMS: usize = 500;
/// Impressions kept per item: fatigue can count up to this many.
pub const HISTORY_IMPRESSIONS: usize = 16;

/// Category and brand names a profile tracks, the two together. A user's names only grow (no
/// decay), and every feed reads them all — on Redis as fields of the user's hash, parsed per
/// feed — so a bot clicking across a whole catalog must not grow them without end. Past the
/// bound a new name is not tracked (its share reads 0); the names already kept go on
/// accumulating, and `affinity_total` counts every event, so kept shares stay shares of all
/// the user's activity. First come, first kept: the rule needs no order between names, so the
/// embedded store and Redis's event script keep the same ones. The demo's 24 categories and
/// 120 brands never reach it.
pub const AFFINITY_NAMES: usize = 256;

/// Weights per name, in first-seen order: a user acts on a handful of categories and brands,
/// so a short list beats a hash table (no buckets, no hashing).
#[derive(Debug, Clone)]
pub struct Affinities<N>(Vec<(N, f32)>);

impl<N> Default for Affinities<N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Equal when they hold the same weights, in whatever order.
impl<N: Ord + Clone> PartialEq for Affinities<N> {
    fn eq(&self, other: &Self) -> bool {
        let sorted = |a: &Self| {
            let mut v = a.0.clone();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        sorted(self) == sorted(other)
    }
}

impl<N> Affinities<N> {
    pub fn get<Q: ?Sized + PartialEq>(&self, name: &Q) -> Option<f32>
    where
        N: Borrow<Q>,
    {
        self.0
            .iter()
            .find(|(n, _)| n.borrow() == name)
            .map(|(_, w)| *w)
    }

    /// Appends `name` with weight `w`, without looking for it: for a list read back from a
    /// store's own encoding, which holds each name once. [`Self::add`] compares with every
    /// name kept, so reading a list of k names that way (Redis, whole, every feed) made
    /// k²/2 string compares: up to ~32 000 for a user at [`AFFINITY_NAMES`].
    pub fn push_new(&mut self, name: N, w: f32) {
        self.0.push((name, w));
    }

    /// Adds `w` to `name`'s weight (`make` builds the name when it is new).
    pub fn add<Q: ?Sized + PartialEq>(&mut self, name: &Q, w: f32, make: impl FnOnce() -> N)
    where
        N: Borrow<Q>,
    {
        self.add_within(name, w, make, true);
    }

    /// [`Self::add`], but a new name only when `room`: a name already kept always adds.
    pub fn add_within<Q: ?Sized + PartialEq>(
        &mut self,
        name: &Q,
        w: f32,
        make: impl FnOnce() -> N,
        room: bool,
    ) where
        N: Borrow<Q>,
    {
        match self.0.iter_mut().find(|(n, _)| (*n).borrow() == name) {
            Some((_, weight)) => *weight += w,
            None if room => self.0.push((make(), w)),
            None => {}
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&N, f32)> {
        self.0.iter().map(|(n, w)| (n, *w))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn map<M>(&self, mut f: impl FnMut(&N) -> M) -> Affinities<M> {
        Affinities(self.0.iter().map(|(n, w)| (f(n), *w)).collect())
    }

    fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<(N, f32)>()
    }
}

impl Affinities<Arc<str>> {
    /// `name` as this list holds it (shared), or a new one.
    fn name(&self, name: &str) -> Arc<str> {
        self.0
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or_else(|| Arc::from(name), |(n, _)| n.clone())
    }
}

/// What one event says about its item, in the profile's own ids.
pub struct Touched<'a, I, N> {
    pub item: &'a I,
    pub category: &'a N,
    pub brand: &'a N,
    pub price: f64,
}

impl<I: ProfileItem, N: Clone + Eq> Profile<I, N> {
    /// Updates the profile for an event on an item at `at`. Impressions change only the
    /// history: a user's taste shows in what they act on.
    pub fn record_touch(&mut self, kind: EventKind, touched: Touched<'_, I, N>, at: UnixSeconds) {
        let Touched {
            item,
            category,
            brand,
            price,
        } = touched;
        self.history.record(kind, &item.key(), at);
        let w = kind.affinity_weight();
        if w == 0.0 {
            return;
        }
        // The category first, then the brand: Redis's event script admits them in that order.
        let room = |p: &Self| p.category_affinity.len() + p.brand_affinity.len() < AFFINITY_NAMES;
        let fits = room(self);
        self.category_affinity
            .add_within(category, w, || category.clone(), fits);
        let fits = room(self);
        self.brand_affinity
            .add_within(brand, w, || brand.clone(), fits);
        self.record_engagement(w, item, price);
    }

    /// What an engagement (an event of affinity weight `w` > 0) adds besides the history and
    /// the names: the counts, sums and recent items. Apart, because Redis's event script
    /// takes the history and the names from the events themselves and needs only these sums
    /// of a chunk (`store::redis::apply`).
    pub fn record_engagement(&mut self, w: f32, item: &I, price: f64) {
        self.interactions += 1.0;
        self.affinity_total += w;
        self.price_sum += price;
        self.price_count += 1.0;
        self.recent_items.retain(|id| id != item);
        self.recent_items.push_front(item.clone());
        self.recent_items.truncate(RECENT_ITEMS);
    }

    /// The same profile over other ids and names (the embedded store's interned ids
    /// resolved).
    pub fn map<J: ProfileItem, M>(
        &self,
        mut item: impl FnMut(&I) -> J,
        history: impl FnMut(&I::Key) -> J::Key,
        mut name: impl FnMut(&N) -> M,
    ) -> Profile<J, M> {
        Profile {
            interactions: self.interactions,
            category_affinity: self.category_affinity.map(&mut name),
            brand_affinity: self.brand_affinity.map(&mut name),
            affinity_total: self.affinity_total,
            price_sum: self.price_sum,
            price_count: self.price_count,
            recent_items: self.recent_items.iter().map(&mut item).collect(),
            history: self.history.map(history),
        }
    }

    /// Bytes this profile holds beside itself, estimated (its affinity lists, recent items
    /// and history, at capacity): with the table holding it, what a tenant's `users` memory is
    /// reported from. Ids and names count as what the profile holds of them (interned or
    /// shared elsewhere).
    pub fn heap_bytes(&self) -> usize {
        self.category_affinity.heap_bytes()
            + self.brand_affinity.heap_bytes()
            + self.recent_items.capacity() * std::mem::size_of::<I>()
            + self.history.heap_bytes()
    }
}

impl UserProfile {
    /// [`Profile::record_touch`] for an event on `item`.
    pub fn record(&mut self, kind: EventKind, item: &Item, at: UnixSeconds) {
        if kind.affinity_weight() == 0.0 {
            self.history.record(kind, &item.item_id.key(), at);
            return;
        }
        // Names are allocated only when new to this profile.
        let category = self.category_affinity.name(&item.category);
        let brand = self.brand_affinity.name(&item.brand);
        self.record_touch(
            kind,
            Touched {
                item: &item.item_id,
                category: &category,
                brand: &brand,
                price: item.price,
            },
            at,
        );
    }

    /// Whether the user bought `item_id` (within the history).
    pub fn purchased(&self, item_id: &str) -> bool {
        self.history.purchased(&key_hash(item_id))
    }

    /// Impressions of `item_id` at or after `since` (Unix seconds) since its last engagement.
    pub fn impressions_since(&self, item_id: &str, since: u32) -> usize {
        self.history.impressions_since(&key_hash(item_id), since)
    }

    /// Share of the user's affinity that falls on `category` (0 when unknown).
    pub fn category_share(&self, category: &str) -> f32 {
        self.affinity_share(self.category_affinity.get(category))
    }

    pub fn brand_share(&self, brand: &str) -> f32 {
        self.affinity_share(self.brand_affinity.get(brand))
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
            .map(|(c, w)| (&**c, w))
            .collect();
        cats.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        cats.into_iter().take(n).map(|(c, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Item;

    fn item(i: usize) -> Item {
        Item {
            category: format!("cat{i}"),
            brand: format!("brand{i}"),
            ..Item::example(&format!("i{i}"))
        }
    }

    #[test]
    fn affinity_names_stop_growing_at_the_bound_first_come_first_kept() {
        let mut p = UserProfile::default();
        let n = AFFINITY_NAMES; // twice the bound's names: a category and a brand each
        for i in 0..n {
            p.record(EventKind::Click, &item(i), 1_000.0 + i as f64);
        }
        assert_eq!(
            p.category_affinity.len() + p.brand_affinity.len(),
            AFFINITY_NAMES
        );
        // Each event its category, then its brand: the first half of the events fill it.
        let kept = AFFINITY_NAMES / 2;
        assert!(p.category_affinity.get("cat0").is_some());
        assert!(
            p.brand_affinity
                .get(&*format!("brand{}", kept - 1))
                .is_some()
        );
        assert!(p.category_affinity.get(&*format!("cat{kept}")).is_none());
        assert!(p.brand_affinity.get(&*format!("brand{kept}")).is_none());
        // Every event counts in the total; a kept name goes on accumulating, a dropped one
        // stays out.
        let click = EventKind::Click.affinity_weight();
        assert_eq!(p.affinity_total, n as f32 * click);
        p.record(EventKind::Purchase, &item(0), 5_000.0);
        p.record(EventKind::Purchase, &item(kept), 5_001.0);
        let purchase = EventKind::Purchase.affinity_weight();
        assert_eq!(p.category_affinity.get("cat0"), Some(click + purchase));
        assert!(p.category_affinity.get(&*format!("cat{kept}")).is_none());
        assert_eq!(p.affinity_total, n as f32 * click + 2.0 * purchase);
        assert_eq!(
            p.category_affinity.len() + p.brand_affinity.len(),
            AFFINITY_NAMES
        );
    }
}
