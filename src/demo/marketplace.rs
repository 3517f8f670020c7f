//! A synthetic marketplace with hidden user preferences: the embedded store's demo data and
//! the simulator's world. Fully determined by (seed, tenant, anchor time), so every run and
//! every backend sees the same catalog and history.

use rand::distr::weighted::WeightedIndex;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

use crate::config::DemoSettings;
use crate::domain::{Event, EventKind, Item, UnixSeconds};

const DAY: f64 = 86_400.0;

/// What a simulated user really likes; the service only ever sees their events.
#[derive(Debug, Clone)]
pub struct HiddenTaste {
    /// Weight per category index (sums to 1 over a few favourites).
    pub category: Vec<f64>,
    /// Favourite brand indices.
    pub brands: Vec<usize>,
    /// Preferred ln(price).
    pub log_price: f64,
}

pub struct Marketplace {
    pub tenant: String,
    pub items: Vec<Item>,
    /// Hidden item quality, standard normal.
    pub quality: Vec<f64>,
    item_category: Vec<usize>,
    item_brand: Vec<usize>,
    /// ln(price + 1) per item, once: the click model reads it per impression.
    item_log_price: Vec<f64>,
    by_category: Vec<Vec<usize>>,
    pub users: Vec<(String, HiddenTaste)>,
    categories: usize,
    brands: usize,
}

/// A stable per-tenant seed: the same tenant gets the same world from the same seed.
fn tenant_seed(seed: u64, tenant: &str) -> u64 {
    // FNV-1a, because std's hasher is not guaranteed stable across releases.
    tenant
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64 ^ seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// How many positions above an item the click model looks at for monotony.
pub const MONOTONY_WINDOW: usize = 5;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Marketplace {
    pub fn generate(demo: &DemoSettings, tenant: &str, anchor: UnixSeconds) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(tenant_seed(demo.seed, tenant));
        let categories = demo.categories.max(1);
        let brands = demo.brands.max(1);
        let category_price: Vec<f64> = (0..categories)
            .map(|_| rng.random_range(10f64.ln()..300f64.ln()))
            .collect();
        let quality_dist = Normal::new(0.0, 1.0).expect("valid normal");
        let mut items = Vec::with_capacity(demo.items);
        let (mut quality, mut item_category, mut item_brand) = (vec![], vec![], vec![]);
        let mut item_log_price = Vec::with_capacity(demo.items);
        let mut by_category = vec![Vec::new(); categories];
        for i in 0..demo.items {
            let c = rng.random_range(0..categories);
            // Brands specialise: each category draws from its own slice of the brand list.
            let b = (c * 7 + rng.random_range(0..brands.min(12))) % brands;
            let price = LogNormal::new(category_price[c], 0.5)
                .expect("valid lognormal")
                .sample(&mut rng);
            // A long tail of old items and a steady flow of new ones.
            let age_days = if rng.random_bool(0.15) {
                rng.random_range(0.0..7.0)
            } else {
                rng.random_range(7.0..365.0)
            };
            items.push(Item {
                item_id: format!("i{i}").into(),
                category: format!("cat-{c:02}"),
                brand: format!("brand-{b:03}"),
                price: (price * 100.0).round() / 100.0,
                created_at: (anchor - age_days * DAY) as i64,
                attributes: Default::default(),
                available: true,
                // Every tenth item is sold by a demo user (`exclude_own_items`); chosen without
                // the generator, so that the rest of the demo is what it always was.
                seller_id: (i % 10 == 0 && demo.users > 0)
                    .then(|| format!("u{}", (i / 10) % demo.users)),
            });
            quality.push(quality_dist.sample(&mut rng));
            item_log_price.push((items[i].price + 1.0).ln());
            item_category.push(c);
            item_brand.push(b);
            by_category[c].push(i);
        }
        let users = (0..demo.users)
            .map(|u| (format!("u{u}"), random_taste(&mut rng, categories, brands)))
            .collect();
        Self {
            tenant: tenant.to_owned(),
            items,
            quality,
            item_category,
            item_brand,
            item_log_price,
            by_category,
            users,
            categories,
            brands,
        }
    }

    /// A new user, unknown to the store, with a taste drawn like everyone else's.
    pub fn new_taste(&self, rng: &mut impl Rng) -> HiddenTaste {
        random_taste(rng, self.categories, self.brands)
    }

    /// The click model: probability that a user with `taste` clicks item `i` shown at
    /// `position` (0-based).
    pub fn click_probability(&self, taste: &HiddenTaste, i: usize, position: usize) -> f64 {
        let category = taste.category[self.item_category[i]];
        let brand = if taste.brands.contains(&self.item_brand[i]) {
            1.0
        } else {
            0.0
        };
        let price_gap = (self.item_log_price[i] - taste.log_price).abs();
        sigmoid(
            -3.4 + 4.0 * category + 0.9 * brand + 0.7 * self.quality[i]
                - 0.6 * price_gap
                - 0.02 * position as f64,
        )
    }

    /// [`Self::click_probability`] for an item in the context a real feed shows it in: users
    /// tire of items they have been shown again and again without acting on them (`repeats`:
    /// earlier impressions of it), and of a feed that keeps showing the same brand or category
    /// (the items among the [`MONOTONY_WINDOW`] positions above it that share them). Used by
    /// `eaglerank drive`, where a user sees many feeds; the simulator's log, which trains the
    /// model, keeps the context-free model.
    pub fn click_probability_in_feed(
        &self,
        taste: &HiddenTaste,
        i: usize,
        position: usize,
        repeats: u32,
        above: &[usize],
    ) -> f64 {
        let base = self.click_probability(taste, i, position);
        let recent = &above[above.len().saturating_sub(MONOTONY_WINDOW)..];
        let same_brand = recent
            .iter()
            .filter(|j| self.item_brand[**j] == self.item_brand[i])
            .count() as f64;
        let same_category = recent
            .iter()
            .filter(|j| self.item_category[**j] == self.item_category[i])
            .count() as f64;
        let logit = (base / (1.0 - base)).ln()
            - 0.35 * f64::from(repeats.min(10))
            - 0.5 * same_brand
            - 0.2 * same_category;
        sigmoid(logit)
    }

    /// The index of item `i`'s brand, for a driver's bookkeeping.
    pub fn brand_of(&self, i: usize) -> usize {
        self.item_brand[i]
    }

    /// Probability that a click on item `i` ends in a purchase.
    pub fn purchase_probability(&self, taste: &HiddenTaste, i: usize) -> f64 {
        sigmoid(-1.8 + 0.6 * self.quality[i] + 2.0 * taste.category[self.item_category[i]])
    }

    /// Events for one impression of item `i`: the impression and whatever follows from it.
    pub fn react(
        &self,
        rng: &mut impl Rng,
        user: &str,
        taste: &HiddenTaste,
        i: usize,
        position: usize,
        at: UnixSeconds,
    ) -> Vec<Event> {
        let event = |kind, dt: f64| Event {
            event_id: None,
            kind,
            user_id: user.to_owned(),
            item_id: self.items[i].item_id.clone(),
            timestamp: at + dt,
        };
        let mut out = vec![event(EventKind::Impression, 0.0)];
        if rng.random_bool(self.click_probability(taste, i, position)) {
            out.push(event(EventKind::Click, 5.0));
            if rng.random_bool(self.purchase_probability(taste, i)) {
                out.push(event(EventKind::AddToCart, 30.0));
                out.push(event(EventKind::Purchase, 90.0));
            }
        }
        out
    }

    /// Past browsing of every user over the 30 days before `anchor`, shown by a naive
    /// recommender (half from the user's favourite categories, half anything), in time order.
    pub fn history(&self, sessions_per_user: usize, anchor: UnixSeconds) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .history_by_user(sessions_per_user, anchor)
            .flatten()
            .collect();
        // Stable: the same order as generating every user's events first and sorting once.
        events.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        events
    }

    /// The same events as [`Self::history`], one user at a time, each user's in time order:
    /// what seeding streams (a user's profile depends only on the order of their own events,
    /// and an item's statistics on none), so it never holds the whole history at once.
    pub fn history_by_user(
        &self,
        sessions_per_user: usize,
        anchor: UnixSeconds,
    ) -> impl Iterator<Item = Vec<Event>> + '_ {
        let mut rng = ChaCha8Rng::seed_from_u64(tenant_seed(0x5eed, &self.tenant));
        let users = if self.items.is_empty() {
            &self.users[..0]
        } else {
            &self.users[..]
        };
        users.iter().map(move |(user, taste)| {
            let favourites = favourites(taste);
            let mut events = Vec::new();
            let sessions = rng.random_range(0..=sessions_per_user * 2);
            for _ in 0..sessions {
                let at = anchor - rng.random_range(0.0..30.0 * DAY);
                for position in 0..20 {
                    let i = self.browse_from(&mut rng, favourites.as_ref());
                    events.extend(self.react(&mut rng, user, taste, i, position, at));
                }
            }
            events.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
            events
        })
    }

    /// An item a naive recommender shows: half the time from one of the user's favourite
    /// categories (`favourites`, built once per user), else anything.
    fn browse_from(&self, rng: &mut impl Rng, favourites: Option<&WeightedIndex<f64>>) -> usize {
        if rng.random_bool(0.5) {
            let favourite = favourites.map_or(0, |f| f.sample(rng));
            if let Some(i) = self.by_category[favourite].choose(rng) {
                return *i;
            }
        }
        rng.random_range(0..self.items.len())
    }

    /// Index of an item by id, for items of this marketplace.
    pub fn index_of(&self, item_id: &str) -> Option<usize> {
        item_id
            .strip_prefix('i')?
            .parse()
            .ok()
            .filter(|i| *i < self.items.len())
    }
}

/// A user's favourite categories as a distribution (what `choose_weighted` builds per call:
/// sampling it draws the same numbers).
fn favourites(taste: &HiddenTaste) -> Option<WeightedIndex<f64>> {
    WeightedIndex::new(&taste.category).ok()
}

fn random_taste(rng: &mut impl Rng, categories: usize, brands: usize) -> HiddenTaste {
    let mut order: Vec<usize> = (0..categories).collect();
    order.shuffle(rng);
    let mut category = vec![0.0; categories];
    let weights = [0.55, 0.3, 0.15];
    for (c, w) in order.iter().zip(weights) {
        category[*c] = w;
    }
    let favourite_brands = (0..4).map(|_| rng.random_range(0..brands)).collect();
    HiddenTaste {
        category,
        brands: favourite_brands,
        log_price: Normal::new(50f64.ln(), 0.8)
            .expect("valid normal")
            .sample(rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> DemoSettings {
        DemoSettings {
            enabled: true,
            seed: 7,
            items: 300,
            users: 50,
            categories: 6,
            brands: 20,
            history_sessions_per_user: 3,
            anchor: None,
        }
    }

    #[test]
    fn same_seed_same_world_and_tenants_differ() {
        let a = Marketplace::generate(&demo(), "t1", 1e9);
        let b = Marketplace::generate(&demo(), "t1", 1e9);
        let c = Marketplace::generate(&demo(), "t2", 1e9);
        assert_eq!(a.items, b.items);
        assert_ne!(a.items, c.items);
        assert_eq!(a.history(3, 1e9), b.history(3, 1e9));
    }

    #[test]
    fn taste_drives_clicks() {
        let m = Marketplace::generate(&demo(), "t", 1e9);
        let taste = &m.users[0].1;
        let fav = taste
            .category
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        let mean = |pick: &dyn Fn(usize) -> bool| {
            let idx: Vec<usize> = (0..m.items.len()).filter(|i| pick(*i)).collect();
            idx.iter()
                .map(|i| m.click_probability(taste, *i, 0))
                .sum::<f64>()
                / idx.len() as f64
        };
        let liked = mean(&|i| m.item_category[i] == fav);
        let other = mean(&|i| taste.category[m.item_category[i]] == 0.0);
        assert!(liked > 3.0 * other, "liked {liked} other {other}");
    }
}
