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
use crate::store::{CandidateLists, FeatureStore, StoreError, features_fetch_span};

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

/// What the store listed: the records where it has them at hand, else the ids.
enum Lists {
    Records(CandidateLists<Arc<ItemRecord>>),
    Ids(CandidateLists),
}

/// Stages 2–4: the candidate plan for this user, its lists from the store (all sources in one
/// call: one pipelined round trip for Redis), merged into one deduplicated, capped list. A
/// store that has the records at hand (the embedded one) lists them, and the candidates carry
/// them to stage 5.
pub async fn candidates(
    store: &dyn FeatureStore,
    tenant: &str,
    limits: &CandidateLimits,
    user: Option<&UserProfile>,
) -> Result<(Vec<Candidate>, CandidateStats), StoreError> {
    let started = Instant::now();
    let query = candidates::plan(limits, user);
    let span = tracing::info_span!(
        "store.candidate_lists",
        source.trending = query.trending,
        source.affinity = query.categories.iter().map(|(_, n)| n).sum::<usize>(),
        source.affinity_categories = query.categories.len(),
        source.new_arrivals = query.new_arrivals,
    );
    let lists = match store
        .candidate_records(tenant, &query)
        .instrument(span.clone())
        .await?
    {
        Some(records) => Lists::Records(records),
        None => Lists::Ids(
            store
                .candidate_lists(tenant, &query)
                .instrument(span)
                .await?,
        ),
    };
    let fetched = Instant::now();
    let merged = tracing::info_span!("candidates.merge").in_scope(|| match lists {
        Lists::Records(records) => candidates::merge(records, limits.max_candidates),
        Lists::Ids(ids) => candidates::merge(ids, limits.max_candidates),
    });
    Ok((
        merged,
        CandidateStats {
            fetch: fetched - started,
            merge: fetched.elapsed(),
        },
    ))
}

/// Stage 5: the candidates' item records: those the lists brought, and the others read from
/// the store (its local cache first) in one call — none when the lists brought them all. A
/// listed item without a record (deleted meanwhile) cannot be scored: it is dropped, and the
/// second value says how many were.
pub async fn item_records(
    store: &dyn FeatureStore,
    tenant: &str,
    candidates: Vec<Candidate>,
) -> Result<(Vec<Scorable>, usize), StoreError> {
    let ids: Vec<ItemId> = candidates
        .iter()
        .filter(|c| c.record.is_none())
        .map(|c| c.item_id.clone())
        .collect();
    let mut read = if ids.is_empty() {
        Vec::new()
    } else {
        store
            .items(tenant, &ids)
            .instrument(features_fetch_span(store.backend(), ids.len()))
            .await?
    }
    .into_iter();
    let listed = candidates.len();
    let joined: Vec<Scorable> = candidates
        .into_iter()
        .filter_map(|c| {
            // In order: the n-th candidate without a record takes the n-th answer.
            let record = match c.record {
                Some(record) => Some(record),
                None => read.next().flatten(),
            };
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

/// Indices of the `k` best scores, best first, by the model alone (no rules): the oracle the
/// default rules must reproduce, for tests.
#[cfg(test)]
pub(crate) fn order(scores: &[f32], candidates: &[Scorable], k: usize) -> Vec<usize> {
    rules::best_by_score(scores, candidates, 0..scores.len(), Some(k))
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
    /// The score per candidate the rules arranged (before boosts): the model's — in a
    /// cascade, the second stage's for the kept candidates, and for the others a score below
    /// every kept one, in the first stage's order.
    pub scores: Vec<f32>,
    /// What a cascade's first stage did (`None`: one stage).
    pub first_stage: Option<FirstStageRanked>,
    pub arranged: Arranged,
    pub assemble: Duration,
    /// Both stages' inference in a cascade.
    pub inference: Duration,
    pub rules: Duration,
}

/// A cascade's first stage: its score for every candidate, and which it kept.
#[derive(Debug)]
pub struct FirstStageRanked {
    pub scores: Vec<f32>,
    /// Per candidate, its row in the second stage's batch (`None`: not kept, the second stage
    /// never scored it).
    pub kept: Vec<Option<u32>>,
    pub inference: Duration,
}

impl Ranked {
    /// The served model's own score of candidate `i` (`None`: a cascade did not pass it on).
    pub fn model_score(&self, i: usize) -> Option<f32> {
        match &self.first_stage {
            Some(first) if first.kept[i].is_none() => None,
            _ => Some(self.scores[i]),
        }
    }
}

/// Which model a cascade's `score` call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    First,
    Second,
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
        first_stage: None,
        arranged,
        assemble: assembled - started,
        inference: scored - assembled,
        rules: scored.elapsed(),
    })
}

/// Stages 6–9 with two models: the first (`first_spec`'s rows, into `matrix`) scores every
/// candidate; its best `keep` (by [`rules::best_by_score`]) are scored again by the second —
/// their rows copied out of `matrix` when both models read the same features, assembled in
/// `spec`'s columns otherwise, into `kept_rows` (which keeps them for explain and the
/// served-feature log) — and the rules arrange the result. Candidates the first stage did not
/// keep still take part, after every kept one: the rules may remove kept ones, and pages go
/// deeper than `keep`. With `keep` ≥ the candidates, the order is the second model's alone.
#[allow(clippy::too_many_arguments)]
pub fn rank_cascade(
    first_spec: &FeatureSpec,
    keep: usize,
    spec: &FeatureSpec,
    request: &RankRequest<'_>,
    matrix: &mut Vec<f32>,
    kept_rows: &mut Vec<f32>,
    health: &mut FeatureHealth,
    mut score: impl FnMut(Stage, &[f32], usize) -> Result<Vec<f32>, ModelError>,
) -> Result<Ranked, ModelError> {
    let started = Instant::now();
    let ctx = FeatureContext::new(request.now, request.user);
    let candidates = request.candidates;
    let n = candidates.len();
    feature_rows(first_spec, &ctx, candidates, matrix, health);
    let assembled = Instant::now();
    let first_scores = score(Stage::First, matrix, n)?;
    let first_scored = Instant::now();

    let best = rules::select_by_score(&first_scores, candidates, 0..n, Some(keep), false);
    let mut kept = vec![None; n];
    for (row, &i) in best.iter().enumerate() {
        kept[i] = Some(row as u32);
    }
    kept_rows.clear();
    if spec.names() == first_spec.names() {
        let width = spec.len();
        for &i in &best {
            kept_rows.extend_from_slice(&matrix[i * width..(i + 1) * width]);
        }
    } else {
        let chosen: Vec<Scorable> = best.iter().map(|&i| candidates[i].clone()).collect();
        // Invalid values are tallied once, on the first stage's rows of every candidate
        // (`health` is sized for those columns).
        feature_rows(
            spec,
            &ctx,
            &chosen,
            kept_rows,
            &mut FeatureHealth::default(),
        );
    }
    let copied = Instant::now();
    let second_scores = score(Stage::Second, kept_rows, best.len())?;
    let scored = Instant::now();

    // The rest rank below the lowest kept score, in the first stage's order: its scores
    // mapped linearly into [floor - 1, floor - 1/2] (no sort; a NaN stays NaN, last).
    let lowest = |scores: &mut dyn Iterator<Item = f32>| {
        scores
            .filter(|s| !s.is_nan())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s), hi.max(s))
            })
    };
    let (floor, _) = lowest(&mut second_scores.iter().copied());
    let floor = if floor.is_finite() { floor } else { 0.0 };
    let (lo, hi) = lowest(
        &mut (0..n)
            .filter(|&i| kept[i].is_none())
            .map(|i| first_scores[i]),
    );
    let span = if hi > lo { hi - lo } else { 1.0 };
    let scores: Vec<f32> = (0..n)
        .map(|i| match kept[i] {
            Some(row) => second_scores[row as usize],
            None => floor - 1.0 + 0.5 * (first_scores[i] - lo) / span,
        })
        .collect();
    let arranged = arrange(request, &scores);
    Ok(Ranked {
        scores,
        first_stage: Some(FirstStageRanked {
            scores: first_scores,
            kept,
            inference: first_scored - assembled,
        }),
        arranged,
        assemble: (assembled - started) + (copied - first_scored),
        inference: (first_scored - assembled) + (scored - copied),
        rules: scored.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Item, ItemStats};

    fn scorable(id: &str) -> Scorable {
        let item = Item::example(id);
        Scorable {
            item_id: id.into(),
            sources: Sources::default(),
            record: Arc::new(ItemRecord::new(item, ItemStats::default())),
        }
    }

    /// The embedded store lists records: the candidates and their records are what listing ids
    /// and reading each by id gives, item for item; candidates without a record (pins) are
    /// read by id, in order, and an unknown one is dropped and counted.
    #[actix_rt::test]
    async fn listed_records_give_what_ids_read_one_by_one_give() {
        use crate::domain::{Event, EventKind};
        use crate::store::MemoryStore;
        let store = MemoryStore::new(["t".to_string()]);
        let items: Vec<Item> = (0..40)
            .map(|i| Item {
                category: ["shoes", "hats", "bags"][i % 3].into(),
                created_at: i as i64,
                ..Item::example(&format!("i{i}"))
            })
            .collect();
        store.upsert_items("t", items).await.unwrap();
        let events: Vec<Event> = (0..60)
            .map(|n| Event {
                event_id: None,
                kind: [EventKind::Impression, EventKind::Click, EventKind::Purchase][n % 3],
                user_id: "u".into(),
                item_id: format!("i{}", n * 7 % 40).into(),
                timestamp: 1.7e9 + n as f64,
            })
            .collect();
        store.apply_events("t", &events).await.unwrap();
        let limits = CandidateLimits {
            max_candidates: 18,
            trending: 12,
            affinity: 12,
            affinity_categories: 2,
            new_arrivals: 8,
        };
        let user = user_profile(&store, "t", "u").await.unwrap().unwrap();

        let (mut listed, _) = candidates(&store, "t", &limits, Some(&user)).await.unwrap();
        assert!(listed.iter().all(|c| c.record.is_some()));
        let query = candidates::plan(&limits, Some(&user));
        let by_id = candidates::merge(
            store.candidate_lists("t", &query).await.unwrap(),
            limits.max_candidates,
        );
        assert!(by_id.iter().all(|c| c.record.is_none()));
        let key = |c: &Candidate| (c.item_id.clone(), c.sources);
        assert_eq!(
            listed.iter().map(key).collect::<Vec<_>>(),
            by_id.iter().map(key).collect::<Vec<_>>()
        );
        assert_eq!(listed.len(), 18, "capped, after dedup");

        let pinned = (0..40)
            .map(|i| format!("i{i}"))
            .find(|id| listed.iter().all(|c| *c.item_id != **id))
            .unwrap();
        for id in [&*pinned, "gone"] {
            listed.push(Candidate {
                item_id: id.into(),
                sources: Sources::default(),
                record: None,
            });
        }
        let (a, missing) = item_records(&store, "t", listed).await.unwrap();
        let (b, _) = item_records(&store, "t", by_id).await.unwrap();
        assert_eq!(missing, 1, "the unknown item");
        assert_eq!(a.len(), b.len() + 1);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.item_id, x.sources), (&y.item_id, y.sources));
            assert_eq!(*x.record, *y.record);
        }
        assert_eq!(*a.last().unwrap().record.item.item_id, *pinned);
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

    /// Deterministic pseudo-random scores, one per row, from the row's first feature values.
    fn scores_of(matrix: &[f32], rows: usize, salt: u32) -> Vec<f32> {
        let width = matrix.len() / rows.max(1);
        (0..rows)
            .map(|r| {
                let x = matrix[r * width..(r + 1) * width]
                    .iter()
                    .fold(salt, |h, v| h.wrapping_mul(31).wrapping_add(v.to_bits()));
                (x.wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0
            })
            .collect()
    }

    /// A first page of `limit` for an unknown user, under `rules`.
    fn first_page<'a>(
        candidates: &'a [Scorable],
        limit: usize,
        rules: &'a TenantRules,
        seen: &'a FastSet<ItemId>,
    ) -> RankRequest<'a> {
        RankRequest {
            now: 86_400.0,
            user_id: "u",
            user: None,
            candidates,
            limit,
            rules,
            seen,
            page: 1,
            explain: false,
        }
    }

    fn distinct(n: usize) -> Vec<Scorable> {
        (0..n)
            .map(|i| {
                let mut c = scorable(&format!("i{i:03}"));
                Arc::get_mut(&mut c.record).unwrap().item.price = 1.0 + i as f64;
                c
            })
            .collect()
    }

    #[test]
    fn a_cascade_keeping_every_candidate_serves_what_the_second_model_alone_serves() {
        let c = distinct(60);
        let spec = FeatureSpec::full_catalog();
        let (rules, seen) = (rules::defaults(), FastSet::default());
        let request = first_page(&c, 20, &rules, &seen);
        let (mut m1, mut m2, mut kept_rows) = (Vec::new(), Vec::new(), Vec::new());
        let mut health = FeatureHealth::default();
        let alone = rank(&spec, &request, &mut m1, &mut health, |m, n| {
            Ok(scores_of(m, n, 2))
        })
        .unwrap();
        let second = |m: &[f32], n: usize| scores_of(m, n, 2);
        let cascade = |keep: usize, m2: &mut Vec<f32>, kept_rows: &mut Vec<f32>| {
            rank_cascade(
                &spec,
                keep,
                &spec,
                &request,
                m2,
                kept_rows,
                &mut FeatureHealth::default(),
                |stage, m, n| {
                    Ok(match stage {
                        Stage::First => scores_of(m, n, 1),
                        Stage::Second => second(m, n),
                    })
                },
            )
            .unwrap()
        };
        let all = cascade(60, &mut m2, &mut kept_rows);
        assert_eq!(all.arranged.order, alone.arranged.order);
        assert_eq!(all.arranged.order.len(), 20);
        assert_eq!(kept_rows.len(), 60 * spec.len());
        for i in 0..60 {
            assert_eq!(all.model_score(i), Some(alone.scores[i]));
        }

        // Keeping 25: the served 20 are the second model's best among the first's best 25.
        let some = cascade(25, &mut m2, &mut kept_rows);
        let first = some.first_stage.as_ref().unwrap();
        let kept: Vec<usize> = (0..60).filter(|&i| first.kept[i].is_some()).collect();
        assert_eq!(kept.len(), 25);
        let by_first = order(&first.scores, &c, 25);
        assert_eq!(kept, {
            let mut k = by_first.clone();
            k.sort();
            k
        });
        let scores = second(&m1, 60);
        let mut expected: Vec<usize> = kept.clone();
        expected.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        expected.truncate(20);
        assert_eq!(some.arranged.order, expected);
        assert!(some.model_score(*by_first.last().unwrap()).is_some());
        let dropped = (0..60).find(|i| first.kept[*i].is_none()).unwrap();
        assert_eq!(some.model_score(dropped), None);

        // Past the kept ones (a deep page, rules removing kept items), the rest follow in the
        // first model's order.
        let wide = RankRequest {
            limit: 60,
            ..request
        };
        let deep = rank_cascade(
            &spec,
            25,
            &spec,
            &wide,
            &mut m2,
            &mut kept_rows,
            &mut FeatureHealth::default(),
            |stage, m, n| {
                Ok(match stage {
                    Stage::First => scores_of(m, n, 1),
                    Stage::Second => second(m, n),
                })
            },
        )
        .unwrap();
        assert_eq!(deep.arranged.order.len(), 60);
        assert_eq!(
            &deep.arranged.order[25..],
            &order(&first.scores, &c, 60)[25..]
        );
    }

    #[test]
    fn a_first_stage_on_other_features_assembles_the_second_stages_rows_for_the_kept_only() {
        let c = distinct(30);
        let first = FeatureSpec::from_names(&["item_log_price".into()]).unwrap();
        let second = FeatureSpec::full_catalog();
        let (rules, seen) = (rules::defaults(), FastSet::default());
        let request = first_page(&c, 5, &rules, &seen);
        let (mut matrix, mut kept_rows, mut health) =
            (Vec::new(), Vec::new(), FeatureHealth::default());
        let ranked = rank_cascade(
            &first,
            10,
            &second,
            &request,
            &mut matrix,
            &mut kept_rows,
            &mut health,
            |stage, m, n| {
                Ok(match stage {
                    // The first stage ranks by price (its one column); the second inverts it.
                    Stage::First => m.to_vec(),
                    Stage::Second => {
                        let price = second.names().iter().position(|n| n == "item_log_price");
                        let w = second.len();
                        (0..n).map(|r| -m[r * w + price.unwrap()]).collect()
                    }
                })
            },
        )
        .unwrap();
        assert_eq!(
            matrix.len(),
            30,
            "the first stage's one column, every candidate"
        );
        assert_eq!(
            kept_rows.len(),
            10 * second.len(),
            "the second's rows, kept only"
        );
        assert_eq!(
            health.missing.len(),
            1,
            "tallied on the first stage's columns"
        );
        // Kept: the 10 most expensive (i020..i029); served: the cheapest 5 of those.
        assert_eq!(ranked.arranged.order, [20, 21, 22, 23, 24]);
    }
}
