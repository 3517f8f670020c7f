//! The feed pipeline, as plain functions: user profile → candidate plan → lists → merge →
//! item records → feature rows → score → rules (removals, boosts, pins, diversity) → order. This is the one place a feed is assembled:
//! the actors (`actors::gateway`, `actors::candidate_fetcher`, `actors::ranker`) run these
//! stages under their deadlines and supervision, the simulator (`tools::simulate`, whose log
//! trains the model) and the component benchmark (`tools::bench`) call the very same ones, so
//! what the model is trained on is what is served.
//!
//! The store stages are async (one batched call each: a networked store costs a round trip
//! per stage); [`rank`] is synchronous CPU work. Each stage opens the span the trace of a feed
//! shows for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::candidates::{self, Candidate, Sources};
use super::features::{FeatureContext, FeatureHealth, FeatureSpec};
use super::model::ModelError;
use super::rules::{self, Arranged, RulesInput, TenantRules};
use crate::FastSet;
use crate::config::CandidateLimits;
use crate::domain::{ItemId, ItemRecord, UnixSeconds, UserProfile};
use crate::store::{FeatureStore, StoreError};

/// A candidate with the record it is scored from.
#[derive(Debug, Clone)]
pub struct Scorable {
    pub item_id: ItemId,
    /// The candidate sources that proposed it.
    pub sources: Sources,
    pub record: Arc<ItemRecord>,
}

/// Stage 1: what the store knows of the user (`None`: a new user, cold start).
pub async fn user_profile(
    store: &dyn FeatureStore,
    tenant: &str,
    user_id: &str,
) -> Result<Option<Arc<UserProfile>>, StoreError> {
    let span = tracing::info_span!("store.user_profile", user.known = tracing::field::Empty);
    let user = store
        .user_profile(tenant, user_id)
        .instrument(span.clone())
        .await?;
    span.record("user.known", user.is_some());
    Ok(user)
}

/// What [`candidates`] took: the store call and the merge, and how many it kept.
#[derive(Debug, Clone, Copy)]
pub struct CandidateStats {
    pub fetch: Duration,
    pub merge: Duration,
}

/// Stages 2–4: the candidate plan for this user, its lists from the store (all sources in one
/// call: one pipelined round trip for Redis), merged into one deduplicated, capped list.
pub async fn candidates(
    store: &dyn FeatureStore,
    tenant: &str,
    limits: &CandidateLimits,
    user: Option<&UserProfile>,
) -> Result<(Vec<Candidate>, CandidateStats), StoreError> {
    let started = Instant::now();
    let query = candidates::plan(limits, user);
    let lists = store
        .candidate_lists(tenant, &query)
        .instrument(tracing::info_span!(
            "store.candidate_lists",
            source.trending = query.trending,
            source.affinity = query.categories.iter().map(|(_, n)| n).sum::<usize>(),
            source.affinity_categories = query.categories.len(),
            source.new_arrivals = query.new_arrivals,
        ))
        .await?;
    let fetched = Instant::now();
    let merged = tracing::info_span!("candidates.merge")
        .in_scope(|| candidates::merge(lists, limits.max_candidates));
    Ok((
        merged,
        CandidateStats {
            fetch: fetched - started,
            merge: fetched.elapsed(),
        },
    ))
}

/// Stage 5: the candidates' item records (the store's local cache first). A listed item
/// without a record (deleted meanwhile) cannot be scored: it is dropped, and the second value
/// says how many were.
pub async fn item_records(
    store: &dyn FeatureStore,
    tenant: &str,
    candidates: Vec<Candidate>,
) -> Result<(Vec<Scorable>, usize), StoreError> {
    let ids: Vec<ItemId> = candidates.iter().map(|c| c.item_id.clone()).collect();
    // The cache layer records its hits and misses on this span.
    let records = store
        .items(tenant, &ids)
        .instrument(tracing::info_span!(
            "features.fetch",
            backend = store.backend(),
            num_items = ids.len(),
            cache.hits = tracing::field::Empty,
            cache.misses = tracing::field::Empty,
        ))
        .await?;
    let listed = candidates.len();
    let joined: Vec<Scorable> = candidates
        .into_iter()
        .zip(records)
        .filter_map(|(c, record)| {
            Some(Scorable {
                item_id: c.item_id,
                sources: c.sources,
                record: record?,
            })
        })
        .collect();
    let missing = listed - joined.len();
    Ok((joined, missing))
}

/// Stages 1–5 in one call, for code without actors (the simulator, the benchmark): the user's
/// profile and the scorable candidates.
pub async fn gather(
    store: &dyn FeatureStore,
    tenant: &str,
    user_id: &str,
    limits: &CandidateLimits,
) -> Result<(Option<Arc<UserProfile>>, Vec<Scorable>), StoreError> {
    let user = user_profile(store, tenant, user_id).await?;
    let (merged, _) = candidates(store, tenant, limits, user.as_deref()).await?;
    let (scorable, _) = item_records(store, tenant, merged).await?;
    Ok((user, scorable))
}

/// Stage 6: one feature row per candidate, in `spec`'s column order, appended to `matrix`
/// (cleared first); missing and non-finite values are tallied in `health`.
pub fn feature_rows(
    spec: &FeatureSpec,
    ctx: &FeatureContext<'_>,
    candidates: &[Scorable],
    matrix: &mut Vec<f32>,
    health: &mut FeatureHealth,
) {
    matrix.clear();
    tracing::info_span!("features.assemble", num_features = spec.len())
        .in_scope(|| spec.assemble(ctx, candidates.iter().map(|c| &*c.record), matrix, health));
}

/// Indices of the `k` best scores, best first, by the model alone (no rules). NaN ranks last;
/// ties go to the smaller item id, so that the same data always gives the same feed.
/// Serving orders in the rules stage (`rules::arrange`); this plain top-k is kept for tests
/// only, as the oracle the default rules must reproduce.
#[cfg(test)]
pub(crate) fn order(scores: &[f32], candidates: &[Scorable], k: usize) -> Vec<usize> {
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let better = |a: &usize, b: &usize| {
        key(*b)
            .total_cmp(&key(*a))
            .then_with(|| candidates[*a].item_id.cmp(&candidates[*b].item_id))
    };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_unstable_by(better);
    idx
}

/// One request's ranking input.
pub struct RankRequest<'a> {
    pub now: UnixSeconds,
    pub user_id: &'a str,
    pub user: Option<&'a UserProfile>,
    pub candidates: &'a [Scorable],
    pub limit: usize,
    /// The tenant's rules at the version this request uses.
    pub rules: &'a TenantRules,
    /// Items served on earlier pages of the feed session.
    pub seen: &'a FastSet<ItemId>,
    /// 1-based page of the feed session.
    pub page: u32,
    /// Keep what each rule did to each served item.
    pub explain: bool,
}

/// What [`rank`] produced: the model's scores, the rules' arrangement of the best `limit`
/// (indices into the candidates), and the time each part took.
#[derive(Debug)]
pub struct Ranked {
    /// The model's score per candidate (before boosts).
    pub scores: Vec<f32>,
    pub arranged: Arranged,
    pub assemble: Duration,
    pub inference: Duration,
    pub rules: Duration,
}

/// Stage 9: the rules on scored candidates — what is served, in which order.
pub fn arrange(request: &RankRequest<'_>, scores: &[f32]) -> Arranged {
    let input = RulesInput {
        user_id: request.user_id,
        user: request.user,
        seen: request.seen,
        page: request.page,
        now: request.now,
        limit: request.limit,
        explain: request.explain,
    };
    tracing::info_span!("rules.apply", rules.version = request.rules.version)
        .in_scope(|| rules::arrange(request.rules, &input, request.candidates, scores))
}

/// Stages 6–9: feature rows (into `matrix`, which keeps them for explain and a shadow model),
/// scores from `score` (the model: `(matrix, rows) → one score per row`), and the rules.
/// Serving passes a `score` that also records metrics and drift; the simulator passes the
/// bare model. A second ranking stage belongs here, between scoring and the rules.
pub fn rank(
    spec: &FeatureSpec,
    request: &RankRequest<'_>,
    matrix: &mut Vec<f32>,
    health: &mut FeatureHealth,
    score: impl FnOnce(&[f32], usize) -> Result<Vec<f32>, ModelError>,
) -> Result<Ranked, ModelError> {
    let started = Instant::now();
    let ctx = FeatureContext::new(request.now, request.user);
    feature_rows(spec, &ctx, request.candidates, matrix, health);
    let assembled = Instant::now();
    let scores = score(matrix, request.candidates.len())?;
    let scored = Instant::now();
    let arranged = arrange(request, &scores);
    Ok(Ranked {
        scores,
        arranged,
        assemble: assembled - started,
        inference: scored - assembled,
        rules: scored.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Item, ItemStats};

    fn scorable(id: &str) -> Scorable {
        let item = Item {
            item_id: id.into(),
            category: "c".into(),
            brand: "b".into(),
            price: 1.0,
            created_at: 0,
            attributes: Default::default(),
            available: true,
            seller_id: None,
        };
        Scorable {
            item_id: id.into(),
            sources: Sources::default(),
            record: Arc::new(ItemRecord::new(item, ItemStats::default())),
        }
    }

    #[test]
    fn order_puts_nan_last_and_breaks_ties_by_item_id() {
        let c: Vec<_> = ["d", "c", "b", "a"].into_iter().map(scorable).collect();
        let scores = [f32::NAN, 1.0, 2.0, 1.0];
        // "a" and "c" tie: "a" first; NaN after every number, even a negative one.
        assert_eq!(order(&scores, &c, 4), [2, 3, 1, 0]);
        assert_eq!(order(&scores, &c, 2), [2, 3]);
        assert_eq!(order(&[f32::NAN, -5.0], &c[..2], 2), [1, 0]);
        assert!(order(&scores, &c, 0).is_empty());
    }

    #[test]
    fn rank_scores_the_assembled_rows_and_orders_them() {
        let c: Vec<_> = ["x", "y", "z"].into_iter().map(scorable).collect();
        let spec = FeatureSpec::full_catalog();
        let width = spec.len();
        let (mut matrix, mut health) = (Vec::new(), FeatureHealth::default());
        let rules = rules::defaults();
        let request = RankRequest {
            now: 86_400.0,
            user_id: "u",
            user: None,
            candidates: &c,
            limit: 2,
            rules: &rules,
            seen: &FastSet::default(),
            page: 1,
            explain: false,
        };
        let ranked = rank(&spec, &request, &mut matrix, &mut health, |m, rows| {
            assert_eq!(m.len(), rows * width);
            Ok(vec![0.1, 0.9, 0.5])
        })
        .unwrap();
        assert_eq!(ranked.arranged.order, [1, 2]);
        assert_eq!(matrix.len(), 3 * width);
    }
}
