//! The rules stage of the feed pipeline, after scoring: a tenant's [`Rules`] compiled once per
//! version ([`TenantRules`]), then applied to one request's scored candidates ([`arrange`]):
//! removals (unavailable, earlier pages, exclusions, own items, purchases, fatigue), boosts,
//! pins, and the diversity re-rank. Plain code: serving, the simulator and the benchmark call
//! it through `pipeline::rank`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::pipeline::Scorable;
use crate::FastSet;
use crate::domain::rules::Rules;
use crate::domain::{Item, ItemId, ItemRecord, UnixSeconds, UserProfile, key_hash};

/// Why a candidate was not served, in the order the checks run (the first that applies
/// counts). The label values of `eaglerank_rules_candidates_removed_total{rule}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Unavailable,
    /// On an earlier page of the same feed session.
    Seen,
    Excluded,
    OwnItem,
    Purchased,
    Fatigue,
}

impl Removal {
    pub const ALL: [Removal; 6] = [
        Removal::Unavailable,
        Removal::Seen,
        Removal::Excluded,
        Removal::OwnItem,
        Removal::Purchased,
        Removal::Fatigue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Unavailable => "unavailable",
            Removal::Seen => "seen",
            Removal::Excluded => "excluded",
            Removal::OwnItem => "own_item",
            Removal::Purchased => "purchased",
            Removal::Fatigue => "fatigue",
        }
    }
}

/// How many candidates each rule removed, in [`Removal::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed(pub [u32; 6]);

impl Removed {
    pub fn iter(&self) -> impl Iterator<Item = (Removal, u32)> + '_ {
        Removal::ALL.into_iter().zip(self.0)
    }

    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }
}

/// What a rule did to one served item (explain).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Note {
    /// Its score was multiplied by `factor` (divided, if negative) because it matched.
    Boost { factor: f64, by: String },
    /// Placed here by a pin.
    Pin { position: u32 },
    /// Without diversity it would have been at `from` (1-based).
    Diversity { from: usize },
    /// Placed although it breaks a diversity limit: no candidate left would keep them all.
    DiversityRelaxed,
}

struct Matcher {
    category: Option<String>,
    brand: Option<String>,
    seller: Option<String>,
    new_arrival: Option<bool>,
    attributes: Vec<(String, Value)>,
    factor: f64,
    /// `category=shoes, brand=acme`, for explain.
    label: String,
}

impl Matcher {
    fn new(boost: &crate::domain::rules::Boost) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let mut m = Matcher {
            category: None,
            brand: None,
            seller: None,
            new_arrival: None,
            attributes: Vec::new(),
            factor: boost.factor,
            label: boost
                .matches
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        for (key, value) in &boost.matches {
            match key.as_str() {
                "category" => m.category = text(value),
                "brand" => m.brand = text(value),
                "seller_id" => m.seller = text(value),
                "new_arrival" => m.new_arrival = value.as_bool(),
                k => {
                    if let Some(a) = k.strip_prefix("attributes.") {
                        m.attributes.push((a.to_owned(), value.clone()));
                    }
                }
            }
        }
        m
    }

    fn matches(&self, item: &Item, new_since: i64) -> bool {
        self.category.as_ref().is_none_or(|c| *c == item.category)
            && self.brand.as_ref().is_none_or(|b| *b == item.brand)
            && self
                .seller
                .as_ref()
                .is_none_or(|s| item.seller_id.as_ref() == Some(s))
            && self
                .new_arrival
                .is_none_or(|n| (item.created_at >= new_since) == n)
            && self
                .attributes
                .iter()
                .all(|(k, v)| item.attributes.get(k) == Some(v))
    }
}

/// A tenant's rules at one version, compiled for the request path.
pub struct TenantRules {
    /// 0: the configured defaults, never edited through the API.
    pub version: u64,
    pub rules: Rules,
    categories: FastSet<String>,
    brands: FastSet<String>,
    sellers: FastSet<String>,
    items: FastSet<String>,
    boosts: Vec<Matcher>,
}

impl TenantRules {
    pub fn new(version: u64, rules: Rules) -> Self {
        let set = |v: &[String]| v.iter().cloned().collect::<FastSet<String>>();
        Self {
            version,
            categories: set(&rules.exclude.categories),
            brands: set(&rules.exclude.brands),
            sellers: set(&rules.exclude.sellers),
            items: set(&rules.exclude.items),
            boosts: rules.boosts.iter().map(Matcher::new).collect(),
            rules,
        }
    }

    /// The ids of the pins in force at `now`: a first page's candidates must include them.
    pub fn pinned_items(&self, now: UnixSeconds) -> Vec<ItemId> {
        self.rules
            .active_pins(now as i64)
            .map(|p| ItemId::from(p.item_id.as_str()))
            .collect()
    }

    /// The items the user's history removes (bought, or shown to tiredness), by
    /// [`key_hash`] of their id with the reason: computed once per request from the history
    /// (usually far shorter than the candidate list), so that a candidate costs one integer
    /// test, not a string hash, and a map lookup only when its bit is in [`Blocked::mask`].
    fn blocked_by_history(&self, request: &RulesInput<'_>) -> Blocked {
        let mut blocked = Blocked::default();
        let Some(user) = request.user else {
            return blocked;
        };
        let fatigue = self.rules.fatigue.as_ref().map(|f| {
            let since = (request.now as i64 - i64::from(f.window_hours) * 3_600).max(0) as u32;
            (since, f.max_impressions as usize)
        });
        if !self.rules.exclude_purchased && fatigue.is_none() {
            return blocked;
        }
        if self.rules.exclude_purchased {
            for key in user.history.bought() {
                blocked.insert(*key, Removal::Purchased);
            }
        }
        if let Some((since, max)) = fatigue {
            for key in user.history.fatigued(since, max) {
                // Bought and tired of: counted as bought (the first reason stands).
                blocked.insert(*key, Removal::Fatigue);
            }
        }
        blocked
    }

    fn removal(
        &self,
        r: &ItemRecord,
        request: &RulesInput<'_>,
        blocked: &Blocked,
    ) -> Option<Removal> {
        let item = &r.item;
        if !item.available {
            return Some(Removal::Unavailable);
        }
        if !request.seen.is_empty() && request.seen.contains(&item.item_id) {
            return Some(Removal::Seen);
        }
        let excluded = (!self.items.is_empty() && self.items.contains(&*item.item_id))
            || (!self.categories.is_empty() && self.categories.contains(&item.category))
            || (!self.brands.is_empty() && self.brands.contains(&item.brand))
            || (!self.sellers.is_empty()
                && item
                    .seller_id
                    .as_ref()
                    .is_some_and(|s| self.sellers.contains(s)));
        if excluded {
            return Some(Removal::Excluded);
        }
        if self.rules.exclude_own_items && item.seller_id.as_deref() == Some(request.user_id) {
            return Some(Removal::OwnItem);
        }
        blocked.get(r.derived().id_key)
    }

    fn boosted(&self, item: &Item, score: f32, new_since: i64) -> f32 {
        let mut s = score;
        for b in &self.boosts {
            if b.matches(item, new_since) {
                s = boost(s, b.factor);
            }
        }
        s
    }

    fn new_since(&self, now: UnixSeconds) -> i64 {
        now as i64 - i64::from(self.rules.new_arrival_hours) * 3_600
    }
}

/// A factor moves a score away from zero in the right direction: up for factor > 1.
fn boost(score: f32, factor: f64) -> f32 {
    if score >= 0.0 {
        (f64::from(score) * factor) as f32
    } else {
        (f64::from(score) / factor) as f32
    }
}

/// What the rules need of one request besides the candidates.
pub struct RulesInput<'a> {
    pub user_id: &'a str,
    pub user: Option<&'a UserProfile>,
    /// Items served on earlier pages of this feed session.
    pub seen: &'a FastSet<ItemId>,
    /// 1-based: pins apply to the first page only.
    pub page: u32,
    pub now: UnixSeconds,
    pub limit: usize,
    pub explain: bool,
}

/// The rules' result for one request.
#[derive(Debug, Default)]
pub struct Arranged {
    /// Indices into the candidates, in the order served.
    pub order: Vec<usize>,
    /// Each candidate's score after boosts (what the order follows).
    pub scores: Vec<f32>,
    /// Per served item (same order), what the rules did to it; empty without explain.
    pub notes: Vec<Vec<Note>>,
    pub removed: Removed,
    /// Positions filled breaking a diversity limit.
    pub relaxations: u32,
    pub pins: u32,
    /// Candidates that passed the rules but were not served: there is a next page.
    pub more: bool,
}

/// Diversity limits in force: the window and the per-key maxima.
struct Limits {
    window: usize,
    brand: Option<u32>,
    category: Option<u32>,
    seller: Option<u32>,
}

fn seller_key(r: &ItemRecord) -> Option<u64> {
    r.item.seller_id.as_deref().map(key_hash)
}

impl Limits {
    /// Whether `r` may follow `placed` (the items before it on the page).
    fn allows(&self, placed: &[&ItemRecord], r: &ItemRecord) -> bool {
        let recent = &placed[placed.len().saturating_sub(self.window - 1)..];
        let d = r.derived();
        let count = |f: &dyn Fn(&ItemRecord) -> bool| recent.iter().filter(|p| f(p)).count() as u32;
        self.brand
            .is_none_or(|m| count(&|p| p.derived().brand_key == d.brand_key) < m)
            && self
                .category
                .is_none_or(|m| count(&|p| p.derived().category_key == d.category_key) < m)
            && self.seller.is_none_or(|m| match seller_key(r) {
                None => true,
                Some(s) => count(&|p| seller_key(p) == Some(s)) < m,
            })
    }
}

/// The items a user's history removes, by id key. Most candidates are not among them: the mask
/// of the keys' low six bits turns those away with one test (a user with 10 such items lets
/// ~15 % through to the map), where a map lookup each was ~25 instructions a candidate.
#[derive(Default)]
struct Blocked {
    mask: u64,
    by_key: crate::FastMap<u64, Removal>,
}

impl Blocked {
    /// Blocks `key` for `why`, unless it is blocked already: the first reason stands.
    fn insert(&mut self, key: u64, why: Removal) {
        self.mask |= 1 << (key & 63);
        self.by_key.entry(key).or_insert(why);
    }

    #[inline]
    fn get(&self, key: u64) -> Option<Removal> {
        if self.mask & 1 << (key & 63) == 0 {
            return None;
        }
        self.by_key.get(&key).copied()
    }
}

/// The best `k` (all when `None`) of the candidates at `indices`, best first, by score: NaN
/// ranks last and ties go to the smaller item id, so the same data always gives the same feed.
/// The one ordering rule of a feed: the rules' arrangement and the cascade's first stage.
pub fn best_by_score(
    scores: &[f32],
    candidates: &[Scorable],
    indices: impl Iterator<Item = usize>,
    k: Option<usize>,
) -> Vec<usize> {
    select_by_score(scores, candidates, indices, k, true)
}

/// As [`best_by_score`], in no particular order unless `sorted`: which are the best is all a
/// cascade's first stage needs to know.
pub fn select_by_score(
    scores: &[f32],
    candidates: &[Scorable],
    indices: impl Iterator<Item = usize>,
    k: Option<usize>,
    sorted: bool,
) -> Vec<usize> {
    // Compared as (sort key, index) pairs: the comparisons read no score through an index and
    // map no NaN.
    let keyed = indices.map(|i| {
        let s = scores[i];
        (if s.is_nan() { f32::NEG_INFINITY } else { s }, i as u32)
    });
    let better = |a: &(f32, u32), b: &(f32, u32)| {
        b.0.total_cmp(&a.0).then_with(|| {
            candidates[a.1 as usize]
                .item_id
                .cmp(&candidates[b.1 as usize].item_id)
        })
    };
    if let Some(k) = k.filter(|k| sorted && *k <= SMALL_K) {
        return best_few(keyed, k, better);
    }
    let mut keyed: Vec<(f32, u32)> = keyed.collect();
    if let Some(k) = k.filter(|k| *k < keyed.len()) {
        if k > 0 {
            keyed.select_nth_unstable_by(k - 1, better);
        }
        keyed.truncate(k);
    }
    if sorted {
        keyed.sort_unstable_by(better);
    }
    keyed.into_iter().map(|k| k.1 as usize).collect()
}

/// Up to this many (a page: 20 by default), the best are kept in one pass over the
/// candidates instead of a selection and a sort: most candidates then cost one comparison with
/// the worst kept (~6 k instructions a feed less than `select_nth_unstable` and a sort over
/// 500 candidates, counted); past it, a sorted run's insertions would cost more than they
/// save.
const SMALL_K: usize = 64;

/// The best `k` of `keyed`, best first under `better` (a total order), in one pass: a sorted
/// run of at most `k`, which a newcomer enters only when it beats the worst kept.
fn best_few(
    keyed: impl Iterator<Item = (f32, u32)>,
    k: usize,
    better: impl Fn(&(f32, u32), &(f32, u32)) -> std::cmp::Ordering,
) -> Vec<usize> {
    use std::cmp::Ordering::Less;
    if k == 0 {
        return Vec::new();
    }
    // A newcomer is inserted only after the worst kept was popped: never more than `k`.
    let mut run: Vec<(f32, u32)> = Vec::with_capacity(k);
    for entry in keyed {
        if run.len() == k {
            if better(&entry, &run[k - 1]) != Less {
                continue;
            }
            run.pop();
        }
        let at = run.partition_point(|kept| better(kept, &entry) == Less);
        run.insert(at, entry);
    }
    run.into_iter().map(|e| e.1 as usize).collect()
}

/// The rules applied to scored candidates: removals, boosts, pins (first page) and the
/// diversity re-rank, for the best `limit`. Deterministic: ties go to the smaller item id, as
/// in `pipeline::order`.
///
/// Diversity keeps the best-scored order and, at each position, takes the best remaining
/// candidate that keeps every limit within the window of the positions before it; when no
/// remaining candidate does, the limits relax for that position only — the best remaining
/// candidate is placed and the relaxation counted — so a page is never shorter for them.
pub fn arrange(
    rules: &TenantRules,
    input: &RulesInput<'_>,
    candidates: &[Scorable],
    model_scores: &[f32],
) -> Arranged {
    let mut removed = Removed::default();
    let new_since = rules.new_since(input.now);
    let has_boosts = !rules.boosts.is_empty();
    let mut scores = model_scores.to_vec();
    let pins: Vec<(&str, u32)> = if input.page == 1 {
        rules
            .rules
            .active_pins(input.now as i64)
            .filter(|p| p.position as usize <= input.limit)
            .map(|p| (p.item_id.as_str(), p.position))
            .collect()
    } else {
        Vec::new()
    };
    let mut eligible = Vec::with_capacity(candidates.len());
    let mut pinned: Vec<(u32, usize)> = Vec::new();
    let blocked = rules.blocked_by_history(input);
    for (i, c) in candidates.iter().enumerate() {
        if let Some(why) = rules.removal(&c.record, input, &blocked) {
            removed.0[why as usize] += 1;
            continue;
        }
        if has_boosts {
            scores[i] = rules.boosted(&c.record.item, scores[i], new_since);
        }
        let pin = match pins.is_empty() {
            true => None,
            false => pins.iter().find(|(id, _)| *id == &*c.item_id),
        };
        match pin {
            // A candidate list may hold an item twice only if merged wrongly; pin it once.
            Some(&(_, position))
                if !pinned
                    .iter()
                    .any(|(_, j)| candidates[*j].item_id == c.item_id) =>
            {
                pinned.push((position, i))
            }
            _ => eligible.push(i),
        }
    }
    pinned.sort_unstable();
    let diversity = rules.rules.diversity.as_ref().map(|d| Limits {
        window: d.window as usize,
        brand: d.max_per_brand,
        category: d.max_per_category,
        seller: d.max_per_seller,
    });
    let passed = eligible.len();
    let wanted = input.limit.saturating_sub(pinned.len());
    // Without diversity only the best `wanted` matter; with it, the re-rank may reach further.
    let eligible = best_by_score(
        &scores,
        candidates,
        eligible.iter().copied(),
        diversity.is_none().then_some(wanted),
    );
    let fill = |limits: Option<&Limits>| fill(candidates, &eligible, &pinned, limits, input.limit);
    let (order, relaxed) = fill(diversity.as_ref());
    let more = order.len() < passed + pinned.len();
    let notes = if input.explain {
        let baseline = diversity.as_ref().map(|_| fill(None).0);
        order
            .iter()
            .enumerate()
            .map(|(position, &i)| {
                let mut notes = Vec::new();
                let item = &candidates[i].record.item;
                for b in rules.boosts.iter().filter(|b| b.matches(item, new_since)) {
                    notes.push(Note::Boost {
                        factor: b.factor,
                        by: b.label.clone(),
                    });
                }
                if let Some((p, _)) = pinned.iter().find(|(_, j)| *j == i) {
                    notes.push(Note::Pin { position: *p });
                }
                if relaxed.contains(&position) {
                    notes.push(Note::DiversityRelaxed);
                }
                let from = baseline.as_ref().map(|b| {
                    b.iter()
                        .position(|j| *j == i)
                        .map_or(b.len() + 1, |p| p + 1)
                });
                if let Some(from) = from.filter(|f| *f != position + 1) {
                    notes.push(Note::Diversity { from });
                }
                notes
            })
            .collect()
    } else {
        Vec::new()
    };
    Arranged {
        pins: order
            .iter()
            .filter(|i| pinned.iter().any(|(_, j)| j == *i))
            .count() as u32,
        relaxations: relaxed.len() as u32,
        order,
        scores,
        notes,
        removed,
        more,
    }
}

/// Fills positions 1..=limit: pins at theirs, the rest from `eligible` (best first) under
/// `limits`. Returns the order and the positions (0-based) where the limits were relaxed.
fn fill(
    candidates: &[Scorable],
    eligible: &[usize],
    pinned: &[(u32, usize)],
    limits: Option<&Limits>,
    limit: usize,
) -> (Vec<usize>, Vec<usize>) {
    let total = limit.min(eligible.len() + pinned.len());
    let mut order = Vec::with_capacity(total);
    let mut placed: Vec<&ItemRecord> = Vec::with_capacity(total);
    let mut used = vec![false; eligible.len()];
    let mut next = 0;
    let mut pins = pinned.iter().peekable();
    let mut relaxed = Vec::new();
    while order.len() < total {
        let position = order.len() as u32 + 1;
        // A pin takes its position; once the other candidates run out, the remaining pins
        // close up behind the last item.
        let pin_due = pins
            .peek()
            .is_some_and(|(p, _)| *p == position || next >= eligible.len());
        if pin_due {
            let (_, i) = pins.next().expect("peeked");
            order.push(*i);
            placed.push(&candidates[*i].record);
            continue;
        }
        while next < eligible.len() && used[next] {
            next += 1;
        }
        if next >= eligible.len() {
            continue;
        }
        let pick = match limits {
            None => next,
            Some(l) => (next..eligible.len())
                .find(|&j| !used[j] && l.allows(&placed, &candidates[eligible[j]].record))
                .unwrap_or_else(|| {
                    relaxed.push(order.len());
                    next
                }),
        };
        used[pick] = true;
        order.push(eligible[pick]);
        placed.push(&candidates[eligible[pick]].record);
    }
    (order, relaxed)
}

/// The rules of every tenant without rules of its own: the defaults.
pub fn defaults() -> Arc<TenantRules> {
    Arc::new(TenantRules::new(0, Rules::default()))
}

#[cfg(test)]
mod tests;
