//! Feature vectors for (user, item) pairs. The code knows how to compute every feature in
//! [`Feature`]; which ones a model uses, and in which column order, comes from the model's
//! metadata file. Serving and the simulator (whose logs train the model) both assemble rows
//! through [`FeatureSpec::assemble`], so training sees exactly what serving computes.

use crate::FastMap;
use std::sync::Arc;

use crate::domain::{
    Affinities, ITEM_COLUMNS, ItemColumns, ItemRecord, UnixSeconds, UserProfile, growth, key_hash,
};

/// What a feature may look at besides the item: the request's clock and user, prepared once
/// per request so that each of the (typically 500) rows costs lookups, not computations.
pub struct FeatureContext<'a> {
    pub now: UnixSeconds,
    pub user: Option<&'a UserProfile>,
    /// What trending scores are divided by as of `now` in whole seconds (one `exp2` per
    /// request, not per row; whole seconds so that every feed of a second computes an item's
    /// trending feature alike, and the record keeps it for the second:
    /// [`ItemRecord::trending_at`]).
    growth: f64,
    /// `now` in whole seconds: the trending feature's clock.
    second: u32,
    user_side: Option<UserSide<'a>>,
}

/// The user's affinities keyed by [`key_hash`], as shares, and their recent items: a row then
/// hashes no string (the item's keys are hashed once per record, [`ItemRecord::derived`]);
/// the strings are compared only on a match, so a hash collision cannot mislead a feature.
struct UserSide<'a> {
    categories: KeyTable<'a, f32>,
    brands: KeyTable<'a, f32>,
    recent: KeyTable<'a, ()>,
    /// ln(1 + the mean price of what the user interacted with).
    log_mean_price: Option<f64>,
}

impl<'a> FeatureContext<'a> {
    pub fn new(now: UnixSeconds, user: Option<&'a UserProfile>) -> Self {
        // A whole-second clock moves a trending value by at most 8e-6 of itself (half-life
        // 24 h): less than a second of clock skew between replicas does.
        let second = now.clamp(0.0, f64::from(u32::MAX - 1)).floor();
        Self {
            now,
            user,
            growth: growth(second),
            second: second as u32,
            user_side: user.map(UserSide::new),
        }
    }
}

impl<'a> UserSide<'a> {
    fn new(u: &'a UserProfile) -> Self {
        let shares = |list: &'a Affinities<Arc<str>>| {
            KeyTable::new(list.iter().map(|(k, w)| (&**k, u.affinity_share(Some(w)))))
        };
        Self {
            categories: shares(&u.category_affinity),
            brands: shares(&u.brand_affinity),
            recent: KeyTable::new(u.recent_items.iter().map(|id| (&**id, ()))),
            log_mean_price: u.mean_price().map(f64::ln_1p),
        }
    }

    #[inline(always)]
    fn category_share(&self, item: &ItemRecord) -> f32 {
        let key = item.derived().category_key;
        self.categories
            .get(key, &item.item.category)
            .copied()
            .unwrap_or(0.0)
    }

    #[inline(always)]
    fn brand_share(&self, item: &ItemRecord) -> f32 {
        let key = item.derived().brand_key;
        self.brands
            .get(key, &item.item.brand)
            .copied()
            .unwrap_or(0.0)
    }

    #[inline(always)]
    fn has_seen(&self, item: &ItemRecord) -> bool {
        let key = item.derived().id_key;
        self.recent.get(key, &item.item.item_id).is_some()
    }
}

/// The few names of one user (categories, brands, recent items: tens, not thousands) by
/// [`key_hash`], for one lookup per candidate row: a direct-mapped table whose slot is picked
/// by the key's low bits answers with one compare, and a map holds the names that found their
/// slot taken. Built per request: a lookup in a hash map per row and name was ~40 % of the
/// feature assembly.
struct KeyTable<'a, V> {
    slots: [Slot<'a, V>; KEY_TABLE_SLOTS],
    spilled: FastMap<u64, (&'a str, V)>,
}

const KEY_TABLE_SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Slot<'a, V> {
    /// `None`: empty.
    entry: Option<(u64, &'a str, V)>,
    /// Another name with this slot is in the map.
    spilled: bool,
}

impl<'a, V: Copy> KeyTable<'a, V> {
    fn new(names: impl Iterator<Item = (&'a str, V)>) -> Self {
        let mut table = Self {
            slots: [Slot {
                entry: None,
                spilled: false,
            }; KEY_TABLE_SLOTS],
            spilled: Default::default(),
        };
        for (name, value) in names {
            let key = key_hash(name);
            let slot = &mut table.slots[key as usize % KEY_TABLE_SLOTS];
            if slot.entry.is_none() {
                slot.entry = Some((key, name, value));
            } else {
                slot.spilled = true;
                table.spilled.insert(key, (name, value));
            }
        }
        table
    }

    #[inline]
    fn get(&self, key: u64, name: &str) -> Option<&V> {
        let slot = &self.slots[key as usize % KEY_TABLE_SLOTS];
        let (found, value) = match &slot.entry {
            Some((k, n, v)) if *k == key => (n, v),
            _ if slot.spilled => {
                let (n, v) = self.spilled.get(&key)?;
                (n, v)
            }
            _ => return None,
        };
        (*found == name).then_some(value)
    }
}

/// What a missing or non-finite feature value is replaced with; training saw the same.
pub const DEFAULT_VALUE: f32 = 0.0;

// Beta prior for click-through rates: an item with no history starts at 2 %, and needs a few
// hundred impressions before its own rate dominates.
const CTR_PRIOR_CLICKS: f64 = 2.0;
const CTR_PRIOR_IMPRESSIONS: f64 = 100.0;

/// Click-through rate shrunk toward the prior (2 %) while impressions are few.
pub fn smoothed_ctr(clicks: f64, impressions: f64) -> f64 {
    (clicks + CTR_PRIOR_CLICKS) / (impressions + CTR_PRIOR_IMPRESSIONS)
}
const CONVERSION_PRIOR_PURCHASES: f64 = 1.0;
const CONVERSION_PRIOR_CLICKS: f64 = 20.0;

/// Counts below this take their logarithm from a table: three of a row's features are ln(1 +
/// a count), and most counts are small integers.
const LN1P_TABLE_SIZE: usize = 16_384;
static LN1P_TABLE: std::sync::LazyLock<Vec<f32>> = std::sync::LazyLock::new(|| {
    (0..LN1P_TABLE_SIZE)
        .map(|n| (n as f64).ln_1p() as f32)
        .collect()
});

/// ln(1 + x) of a count; negatives clamp to 0, NaN stays NaN (and gets counted). The table
/// holds the very values the formula gives, so training and serving still agree bit for bit.
fn ln1p(x: f64) -> Option<f32> {
    // In range first (NaN is not): then the conversion is one instruction, where a saturating
    // `as usize` of any f64 took ~20; the round trip is exact only for integers.
    if (0.0..LN1P_TABLE_SIZE as f64).contains(&x) {
        let n = x as u32;
        if f64::from(n) == x {
            return Some(LN1P_TABLE[n as usize]);
        }
    }
    Some(if x < 0.0 { 0.0 } else { x.ln_1p() as f32 })
}

/// Defines [`Feature`]: every feature the service can compute, with its name, a line of
/// documentation and its value — `None` when the input it needs is absent (an unknown user, no
/// price history); the value is then the default the model was trained with (0), and the
/// ranker counts it. Assembly runs [`Feature::fill_column`]: a loop per feature, with the
/// value's code inlined into it, instead of a call through a function pointer per value (500
/// rows × 14 features a feed).
macro_rules! catalog {
    ($( $variant:ident = $name:literal, $doc:literal, |$c:pat_param, $i:pat_param| $body:expr; )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Feature {
            $($variant),*
        }

        impl Feature {
            /// In catalog order: the simulator logs them all, in this order.
            pub const ALL: &'static [Feature] = &[$(Feature::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Feature::$variant => $name),*
                }
            }

            pub fn doc(self) -> &'static str {
                match self {
                    $(Feature::$variant => $doc),*
                }
            }

            /// This feature's value for one item.
            fn value(self, ctx: &FeatureContext<'_>, item: &ItemRecord) -> Option<f32> {
                match self {
                    $(Feature::$variant => {
                        let ($c, $i) = (ctx, item);
                        $body
                    }),*
                }
            }

            /// Writes this feature for every item into `column` of the row-major `rows`.
            fn fill_column<'a>(
                self,
                ctx: &FeatureContext<'_>,
                items: impl Iterator<Item = &'a ItemRecord>,
                rows: &mut [std::mem::MaybeUninit<f32>],
                column: usize,
                width: usize,
                health: (&mut u32, &mut u32),
            ) -> usize {
                match self {
                    $(Feature::$variant => fill(items, rows, column, width, health, |item| {
                        let ($c, $i) = (ctx, item);
                        $body
                    })),*
                }
            }
        }
    };
}

/// One column of an assembled matrix: missing and non-finite values become
/// [`DEFAULT_VALUE`], tallied in `(missing, nan)`. Returns the rows written.
#[inline(always)]
fn fill<'a>(
    items: impl Iterator<Item = &'a ItemRecord>,
    rows: &mut [std::mem::MaybeUninit<f32>],
    column: usize,
    width: usize,
    (missing, nan): (&mut u32, &mut u32),
    value: impl Fn(&'a ItemRecord) -> Option<f32>,
) -> usize {
    let mut written = 0;
    for (item, row) in items.zip(rows.chunks_exact_mut(width)) {
        written += 1;
        row[column].write(defaulted(value(item), missing, nan));
    }
    written
}

/// A value as a row holds it: a missing or non-finite one becomes [`DEFAULT_VALUE`], and
/// `missing` or `nan` counts it.
#[inline(always)]
fn defaulted(value: Option<f32>, missing: &mut u32, nan: &mut u32) -> f32 {
    match value {
        Some(v) if v.is_finite() => v,
        Some(_) => {
            *nan += 1;
            DEFAULT_VALUE
        }
        None => {
            *missing += 1;
            DEFAULT_VALUE
        }
    }
}

catalog! {
    ItemLogImpressions = "item_log_impressions", "ln(1 + impressions)",
        |_, i| ln1p(i.stats().impressions);
    ItemLogClicks = "item_log_clicks", "ln(1 + clicks)",
        |_, i| ln1p(i.stats().clicks);
    ItemLogPurchases = "item_log_purchases", "ln(1 + purchases)",
        |_, i| ln1p(i.stats().purchases);
    ItemCtr = "item_ctr", "click-through rate, smoothed with a Beta prior",
        |_, i| Some(smoothed_ctr(i.stats().clicks, i.stats().impressions) as f32);
    ItemConversion = "item_conversion", "purchases per click, smoothed",
        |_, i| Some(
            ((i.stats().purchases + CONVERSION_PRIOR_PURCHASES)
                / (i.stats().clicks + CONVERSION_PRIOR_CLICKS)) as f32,
        );
    ItemTrending = "item_trending", "ln(1 + decayed trending score)",
        |c, i| Some(i.trending_at(c.second, |s| {
            // (`ln1p` answers `Some` for every input; NaN stays NaN and is counted.)
            ln1p(s.trending_score_at(c.growth)).unwrap_or(f32::NAN)
        }));
    // ln1p's clamp of negative prices, from the value computed once per record.
    ItemLogPrice = "item_log_price", "ln(1 + price)",
        |_, i| Some(if i.item.price < 0.0 { 0.0 } else { i.derived().log_price as f32 });
    ItemAgeDays = "item_age_days", "days since the item was listed",
        |c, i| Some(((c.now - i.item.created_at as f64) / 86_400.0).max(0.0) as f32);
    UserKnown = "user_known", "1 when the user has history",
        |c, _| Some(f32::from(u8::from(c.user.is_some())));
    UserLogInteractions = "user_log_interactions",
        "ln(1 + the user's clicks, carts and purchases)",
        |c, _| c.user.and_then(|u| ln1p(u.interactions));
    UserCategoryAffinity = "user_category_affinity",
        "share of the user's activity in the item's category",
        |c, i| c.user_side.as_ref().map(|u| u.category_share(i));
    UserBrandAffinity = "user_brand_affinity", "share of the user's activity on the item's brand",
        |c, i| c.user_side.as_ref().map(|u| u.brand_share(i));
    UserPriceRatio = "user_price_ratio",
        "ln of item price over the user's mean price (0 when unknown)",
        |c, i| c
            .user_side
            .as_ref()
            .and_then(|u| u.log_mean_price)
            .map(|user| (i.derived().log_price - user) as f32);
    UserSeenItem = "user_seen_item", "1 when the user recently interacted with the item",
        |c, i| c.user_side.as_ref().map(|u| f32::from(u8::from(u.has_seen(i))));
}

/// The features that read the item's record alone — not the request's clock, not its user:
/// computed once per record (and again after its stats change) into the record's
/// [`ItemColumns`], and copied into each row from there. A test checks each gives the same
/// value whatever the context.
const ITEM_ONLY: [Feature; 6] = [
    Feature::ItemLogImpressions,
    Feature::ItemLogClicks,
    Feature::ItemLogPurchases,
    Feature::ItemCtr,
    Feature::ItemConversion,
    Feature::ItemLogPrice,
];
const _: () = assert!(ITEM_ONLY.len() <= ITEM_COLUMNS && ITEM_COLUMNS <= u8::BITS as usize);

/// The features that read the request alone — its user and clock, not the item: one value per
/// request, written down the column instead of computed per row. A test checks each gives the
/// same value whatever the item.
const REQUEST_ONLY: [Feature; 2] = [Feature::UserKnown, Feature::UserLogInteractions];

/// What an item-only feature is computed with: no clock, no user (they do not read it).
const NO_CONTEXT: FeatureContext<'static> = FeatureContext {
    now: 0.0,
    user: None,
    growth: 1.0,
    second: 0,
    user_side: None,
};

/// The record's [`ITEM_ONLY`] values, in that order, each as [`fill`] would write it.
fn item_columns(record: &ItemRecord) -> ItemColumns {
    let mut columns = ItemColumns::default();
    for (k, feature) in ITEM_ONLY.iter().enumerate() {
        let (mut missing, mut nan) = (0, 0);
        columns.values[k] = defaulted(feature.value(&NO_CONTEXT, record), &mut missing, &mut nan);
        columns.missing |= (missing as u8) << k;
        columns.nan |= (nan as u8) << k;
    }
    columns
}

#[derive(Debug, thiserror::Error)]
#[error("unknown feature {0:?}; known features: {1}")]
pub struct UnknownFeature(String, String);

/// The ordered list of features one model consumes.
pub struct FeatureSpec {
    names: Vec<String>,
    features: Vec<Feature>,
    /// (column, index in [`ITEM_ONLY`]) of the item-only features: copied from the record.
    cached: Vec<(usize, usize)>,
    /// (column, feature) of the [`REQUEST_ONLY`] features: one value per request.
    constant: Vec<(usize, Feature)>,
    /// (column, feature) of the rest: computed per request, a column at a time.
    computed: Vec<(usize, Feature)>,
}

impl FeatureSpec {
    pub fn from_names(names: &[String]) -> Result<Self, UnknownFeature> {
        let features = names
            .iter()
            .map(|name| {
                Feature::ALL
                    .iter()
                    .copied()
                    .find(|f| f.name() == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                        UnknownFeature(name.clone(), known.join(", "))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::of(names.to_vec(), features))
    }

    /// Every feature of the catalog, in catalog order: what the simulator logs.
    pub fn full_catalog() -> Self {
        Self::of(
            Feature::ALL.iter().map(|f| f.name().to_owned()).collect(),
            Feature::ALL.to_vec(),
        )
    }

    fn of(names: Vec<String>, features: Vec<Feature>) -> Self {
        let mut cached = Vec::new();
        let mut constant = Vec::new();
        let mut computed = Vec::new();
        for (column, &feature) in features.iter().enumerate() {
            match ITEM_ONLY.iter().position(|&f| f == feature) {
                Some(k) => cached.push((column, k)),
                None if REQUEST_ONLY.contains(&feature) => constant.push((column, feature)),
                None => computed.push((column, feature)),
            }
        }
        Self {
            names,
            features,
            cached,
            constant,
            computed,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Appends one row per item to `out` (row-major, `len()` columns), a column at a time.
    /// Missing and non-finite values become [`DEFAULT_VALUE`] and are tallied per column in
    /// `health`.
    pub fn assemble<'a, I>(
        &self,
        ctx: &FeatureContext<'_>,
        items: I,
        out: &mut Vec<f32>,
        health: &mut FeatureHealth,
    ) where
        I: IntoIterator<Item = &'a ItemRecord>,
        I::IntoIter: Clone + ExactSizeIterator,
    {
        health.reset(self.len());
        let items = items.into_iter();
        let width = self.len();
        if width == 0 {
            return;
        }
        let n = items.len();
        let values = n * width;
        out.reserve(values);
        // Written in place, not zeroed first: a memset of the whole matrix cost ~28 k
        // instructions a feed.
        let rows = &mut out.spare_capacity_mut()[..values];
        if !self.cached.is_empty() {
            let written = self.copy_cached(items.clone(), rows, health);
            // `len()` is a safe trait's word: what was written is checked, not trusted.
            assert_eq!(written, n, "an iterator shorter than its len()");
        }
        for &(j, feature) in &self.computed {
            let tally = (&mut health.missing[j], &mut health.nan[j]);
            let written = feature.fill_column(ctx, items.clone(), rows, j, width, tally);
            assert_eq!(written, n, "an iterator shorter than its len()");
        }
        if let Some(first) = items.clone().next() {
            for &(j, feature) in &self.constant {
                // Its value for the first item is its value for every item.
                let (mut missing, mut nan) = (0, 0);
                let value = defaulted(feature.value(ctx, first), &mut missing, &mut nan);
                (health.missing[j], health.nan[j]) = (missing * n as u32, nan * n as u32);
                for row in rows.chunks_exact_mut(width) {
                    row[j].write(value);
                }
            }
        }
        // SAFETY: the `values` slots past the length were just written: every column of all
        // `n` rows (the cached ones by `copy_cached`, the request's constants down theirs —
        // `rows` is exactly `n` rows, and with `n == 0` there is nothing to write —, the others
        // by a `fill_column` each), as the assertions checked.
        unsafe { out.set_len(out.len() + values) };
    }

    /// The item-only columns of every row, copied from each record's cache (computed there
    /// once per change of the record). Returns the rows written.
    fn copy_cached<'a>(
        &self,
        items: impl Iterator<Item = &'a ItemRecord>,
        rows: &mut [std::mem::MaybeUninit<f32>],
        health: &mut FeatureHealth,
    ) -> usize {
        let mut written = 0;
        for (item, row) in items.zip(rows.chunks_exact_mut(self.features.len())) {
            written += 1;
            let columns = item.columns(item_columns);
            for &(j, k) in &self.cached {
                row[j].write(columns.values[k]);
            }
            if columns.missing | columns.nan != 0 {
                for &(j, k) in &self.cached {
                    health.missing[j] += u32::from(columns.missing >> k & 1);
                    health.nan[j] += u32::from(columns.nan >> k & 1);
                }
            }
        }
        written
    }
}

/// Per column of one assembled matrix: how many values were missing, how many non-finite.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FeatureHealth {
    pub missing: Vec<u32>,
    pub nan: Vec<u32>,
}

impl FeatureHealth {
    fn reset(&mut self, width: usize) {
        self.missing.clear();
        self.missing.resize(width, 0);
        self.nan.clear();
        self.nan.resize(width, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Item, ItemStats};

    fn record() -> ItemRecord {
        ItemRecord::new(
            Item {
                item_id: "i1".into(),
                category: "shoes".into(),
                brand: "acme".into(),
                price: 99.0,
                created_at: 0,
                attributes: Default::default(),
                available: true,
                seller_id: None,
            },
            ItemStats {
                impressions: 100.0,
                clicks: 8.0,
                ..Default::default()
            },
        )
    }

    #[test]
    fn order_comes_from_the_names() {
        let names = vec![
            "item_ctr".to_string(),
            "user_known".into(),
            "item_age_days".into(),
        ];
        let spec = FeatureSpec::from_names(&names).unwrap();
        let mut out = Vec::new();
        let ctx = FeatureContext::new(2.0 * 86_400.0, None);
        let mut health = FeatureHealth::default();
        spec.assemble(&ctx, [&record(), &record()], &mut out, &mut health);
        assert_eq!(out, vec![0.05, 0.0, 2.0, 0.05, 0.0, 2.0]);
        assert_eq!(health.missing, [0, 0, 0]);
        assert_eq!(health.nan, [0, 0, 0]);
    }

    /// Whatever the order and selection of a model's features — the cached columns in runs,
    /// out of order, alone —, a row holds each feature's own value.
    #[test]
    fn any_order_of_features_assembles_each_value() {
        let (a, mut b) = (record(), record());
        b.item.item_id = "i2".into();
        b.item.price = 7.5;
        b.stats_mut().record(EventKind::Purchase, 0.0);
        let mut u = UserProfile::default();
        u.record(EventKind::Click, &a.item, 1.0e9);
        let ctx = FeatureContext::new(1.7e9, Some(&u));
        let all = Feature::ALL;
        let orders: Vec<Vec<Feature>> = vec![
            all.to_vec(),
            all.iter().rev().copied().collect(),
            all.iter().step_by(2).copied().collect(),
            [all[6], all[0], all[1], all[2], all[12], all[3]].to_vec(),
            vec![all[4]],
        ];
        for features in orders {
            let names: Vec<String> = features.iter().map(|f| f.name().to_owned()).collect();
            let spec = FeatureSpec::from_names(&names).unwrap();
            let mut out = Vec::new();
            spec.assemble(&ctx, [&a, &b], &mut out, &mut FeatureHealth::default());
            let want: Vec<f32> = [&a, &b]
                .iter()
                .flat_map(|r| {
                    features
                        .iter()
                        .map(|f| f.value(&ctx, r).unwrap_or(DEFAULT_VALUE))
                })
                .collect();
            assert_eq!(out, want, "{names:?}");
        }
    }

    #[test]
    fn tabled_logarithms_equal_the_formula() {
        for x in (0..20_000)
            .map(f64::from)
            .chain([0.5, 16_383.5, 1e12, -3.0])
        {
            let want = if x < 0.0 { 0.0 } else { x.ln_1p() as f32 };
            assert_eq!(ln1p(x).unwrap().to_bits(), want.to_bits(), "{x}");
        }
        assert!(ln1p(f64::NAN).unwrap().is_nan());
    }

    #[test]
    fn user_features_use_the_profile() {
        let r = record();
        let mut u = UserProfile::default();
        u.record(EventKind::Purchase, &r.item, 0.0);
        let spec = FeatureSpec::from_names(&[
            "user_category_affinity".into(),
            "user_seen_item".into(),
            "user_price_ratio".into(),
        ])
        .unwrap();
        let mut out = Vec::new();
        spec.assemble(
            &FeatureContext::new(0.0, Some(&u)),
            [&r],
            &mut out,
            &mut FeatureHealth::default(),
        );
        assert_eq!(out, vec![1.0, 1.0, 0.0]);
    }

    /// The per-request lookups by key hash give what the profile's own definitions give, for
    /// items the user knows and items they don't.
    #[test]
    fn prepared_lookups_agree_with_the_profile() {
        let item = |id: &str, category: &str, brand: &str, price: f64| {
            ItemRecord::new(
                Item {
                    item_id: id.into(),
                    category: category.into(),
                    brand: brand.into(),
                    price,
                    created_at: 0,
                    attributes: Default::default(),
                    available: true,
                    seller_id: None,
                },
                ItemStats::default(),
            )
        };
        let seen = [
            item("a", "shoes", "acme", 19.99),
            item("b", "hats", "zeta", 250.5),
            item("c", "shoes", "zeta", 3.0),
        ];
        let mut u = UserProfile::default();
        for (r, kind) in
            seen.iter()
                .zip([EventKind::Click, EventKind::Purchase, EventKind::AddToCart])
        {
            u.record(kind, &r.item, 0.0);
        }
        let unseen = [
            item("d", "bags", "acme", 77.7),
            item("e", "hats", "nova", 0.5),
        ];
        let spec = FeatureSpec::from_names(&[
            "user_category_affinity".into(),
            "user_brand_affinity".into(),
            "user_seen_item".into(),
            "user_price_ratio".into(),
            "item_log_price".into(),
        ])
        .unwrap();
        let records: Vec<&ItemRecord> = seen.iter().chain(&unseen).collect();
        let mut out = Vec::new();
        let ctx = FeatureContext::new(0.0, Some(&u));
        spec.assemble(
            &ctx,
            records.iter().copied(),
            &mut out,
            &mut FeatureHealth::default(),
        );
        let mean = u.mean_price().unwrap();
        for (row, r) in out.chunks(spec.len()).zip(&records) {
            let price_ratio = ((r.item.price + 1.0) / (mean + 1.0)).ln() as f32;
            let want = [
                u.category_share(&r.item.category),
                u.brand_share(&r.item.brand),
                f32::from(u8::from(u.recent_items.contains(&r.item.item_id))),
            ];
            assert_eq!(row[..3], want, "{}", r.item.item_id);
            assert!(
                (row[3] - price_ratio).abs() <= 1e-6,
                "{row:?} vs {price_ratio}"
            );
            assert_eq!(row[4], r.item.price.ln_1p() as f32);
        }
    }

    /// The features copied from a record's cache must not read the request: each gives the
    /// same value for a known user at one time as for nobody at another.
    #[test]
    fn item_only_features_ignore_the_context() {
        let r = record();
        let mut u = UserProfile::default();
        u.record(EventKind::Purchase, &r.item, 5.0e8);
        let contexts = [
            FeatureContext::new(0.0, None),
            FeatureContext::new(1.7e9, Some(&u)),
            NO_CONTEXT,
        ];
        for feature in ITEM_ONLY {
            let values: Vec<_> = contexts.iter().map(|c| feature.value(c, &r)).collect();
            assert!(
                values.iter().all(|v| *v == values[0]),
                "{feature:?}: {values:?}"
            );
        }
    }

    /// The features written once per request must not read the item: each gives the same
    /// value for any two items, with a user and without.
    #[test]
    fn request_only_features_ignore_the_item() {
        let (a, mut b) = (record(), record());
        b.item.item_id = "i2".into();
        b.item.category = "hats".into();
        b.item.price = 5.0;
        b.item.created_at = 1_000_000;
        b.stats_mut().record(EventKind::Purchase, 0.0);
        let mut u = UserProfile::default();
        u.record(EventKind::Purchase, &a.item, 5.0e8);
        for ctx in [
            FeatureContext::new(1.7e9, None),
            FeatureContext::new(1.7e9, Some(&u)),
        ] {
            for feature in REQUEST_ONLY {
                assert_eq!(
                    feature.value(&ctx, &a),
                    feature.value(&ctx, &b),
                    "{feature:?}"
                );
            }
        }
        // ... and they are assembled as the catalog computes them, with their health.
        let spec =
            FeatureSpec::from_names(&["user_log_interactions".into(), "item_ctr".into()]).unwrap();
        let mut out = Vec::new();
        let mut health = FeatureHealth::default();
        let ctx = FeatureContext::new(0.0, None);
        spec.assemble(&ctx, [&a, &b, &a], &mut out, &mut health);
        assert_eq!(out.len(), 6);
        assert_eq!([out[0], out[2], out[4]], [DEFAULT_VALUE; 3]);
        assert_eq!(health.missing, [3, 0]);
        let ctx = FeatureContext::new(0.0, Some(&u));
        out.clear();
        spec.assemble(&ctx, [&a, &b], &mut out, &mut health);
        assert_eq!([out[0], out[2]], [(u.interactions.ln_1p()) as f32; 2]);
        assert_eq!(health.missing, [0, 0]);
    }

    /// A record's cached columns follow its stats: changed in place (as the embedded store
    /// does, copy-on-write aside), the next assembly sees the new counts.
    #[test]
    fn cached_columns_follow_the_stats() {
        let spec = FeatureSpec::from_names(&["item_log_clicks".into(), "item_ctr".into()]).unwrap();
        let ctx = FeatureContext::new(0.0, None);
        let assemble = |r: &ItemRecord| {
            let mut out = Vec::new();
            spec.assemble(&ctx, [r], &mut out, &mut FeatureHealth::default());
            out
        };
        let mut r = record();
        let want = |clicks: f64| [clicks.ln_1p() as f32, ((clicks + 2.0) / 200.0) as f32];
        assert_eq!(assemble(&r), want(8.0));
        r.stats_mut().record(EventKind::Click, 0.0);
        assert_eq!(assemble(&r), want(9.0));
        // A clone starts without the cache, and computes the same.
        assert_eq!(assemble(&r.clone()), assemble(&r));
    }

    /// The trending feature is kept per record for its clock second: the formula's value at
    /// that whole second, the same for every feed of the second, new for the next second and
    /// after the stats change within one.
    #[test]
    fn trending_is_kept_for_its_second_and_follows_the_stats() {
        let spec = FeatureSpec::from_names(&["item_trending".into()]).unwrap();
        let value = |r: &ItemRecord, now: f64| {
            let mut out = Vec::new();
            let ctx = FeatureContext::new(now, None);
            spec.assemble(&ctx, [r], &mut out, &mut FeatureHealth::default());
            out[0]
        };
        let want =
            |r: &ItemRecord, second: f64| (r.stats().trending / growth(second)).ln_1p() as f32;
        let t = 1.8e9;
        let mut r = record();
        r.stats_mut().record(EventKind::Purchase, t - 7_200.0);
        let first = value(&r, t + 0.2);
        assert_eq!(first, want(&r, t));
        assert!(first > 0.0);
        // Later in the same second: the same value (computed at the whole second).
        assert_eq!(value(&r, t + 0.9), first);
        // The next seconds: decayed further.
        assert_eq!(value(&r, t + 1.0), want(&r, t + 1.0));
        assert!(value(&r, t + 3_600.0) < first);
        // An event within the second: the new score at once.
        r.stats_mut().record(EventKind::Purchase, t);
        assert_eq!(value(&r, t + 0.5), want(&r, t));
        assert!(value(&r, t + 0.5) > first);
        // A clone starts without the kept value, and computes the same.
        assert_eq!(value(&r.clone(), t + 0.5), value(&r, t + 0.5));
    }

    /// More names than slots: some share a slot and go to the map; every one is found with
    /// its value, and names not in the table are not.
    #[test]
    fn key_tables_find_every_name_and_no_other() {
        let names: Vec<String> = (0..3 * KEY_TABLE_SLOTS)
            .map(|i| format!("brand-{i}"))
            .collect();
        let table = KeyTable::new(names.iter().enumerate().map(|(i, n)| (&**n, i)));
        assert!(table.slots.iter().any(|s| s.spilled));
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table.get(key_hash(name), name), Some(&i), "{name}");
        }
        for absent in ["brand-x", "", "Brand-1"] {
            assert_eq!(table.get(key_hash(absent), absent), None);
        }
        // A key that matches a slot's with another name (a hash collision) finds nothing.
        assert_eq!(table.get(key_hash("brand-1"), "brand-2"), None);
    }

    #[test]
    fn missing_and_nan_values_are_defaulted_and_tallied() {
        let mut corrupt = record();
        corrupt.stats_mut().clicks = f64::NAN;
        let spec = FeatureSpec::from_names(&[
            "item_ctr".into(),
            "item_log_clicks".into(),
            "item_log_impressions".into(),
            "user_category_affinity".into(),
        ])
        .unwrap();
        let mut out = Vec::new();
        let mut health = FeatureHealth::default();
        let ctx = FeatureContext::new(0.0, None);
        spec.assemble(&ctx, [&corrupt, &record()], &mut out, &mut health);
        assert_eq!(health.nan, [1, 1, 0, 0]);
        assert_eq!(health.missing, [0, 0, 0, 2]);
        assert_eq!(
            out[..4],
            [DEFAULT_VALUE, DEFAULT_VALUE, 101f32.ln(), DEFAULT_VALUE]
        );
    }

    #[test]
    fn unknown_names_are_rejected_with_the_known_list() {
        let err = FeatureSpec::from_names(&["nope".into()]).err().unwrap();
        assert!(err.to_string().contains("item_ctr"), "{err}");
    }
}
