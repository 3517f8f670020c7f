use std::sync::Arc;

use super::*;
use crate::domain::rules::{Boost, Diversity, Fatigue, Pin};
use crate::domain::{EventKind, ItemStats};
use crate::ranking::candidates::Sources;
use crate::ranking::pipeline;

const NOW: f64 = 1_800_000_000.0;

/// Candidate `i{n}` of `brand`/`category`, scored `score`.
fn candidate(n: usize, brand: &str, category: &str) -> Scorable {
    let item = Item {
        item_id: format!("i{n}").into(),
        category: category.into(),
        brand: brand.into(),
        price: 10.0,
        created_at: 0,
        attributes: Default::default(),
        available: true,
        seller_id: None,
    };
    Scorable {
        item_id: item.item_id.clone(),
        sources: Sources::default(),
        record: Arc::new(ItemRecord::new(item, ItemStats::default())),
    }
}

/// Ten candidates, i0 best … i9 worst, brands alternating a/a/b/b/…, one category.
fn ten() -> (Vec<Scorable>, Vec<f32>) {
    let c = (0..10)
        .map(|n| candidate(n, ["a", "b", "c", "d", "e"][n / 2], "c1"))
        .collect();
    let scores = (0..10).map(|n| 1.0 - n as f32 * 0.05).collect();
    (c, scores)
}

fn with(mut edit: impl FnMut(&mut Item), c: &mut Scorable) {
    let mut item = c.record.item.clone();
    edit(&mut item);
    c.record = Arc::new(ItemRecord::new(item, ItemStats::default()));
}

struct Run<'a> {
    rules: Rules,
    user: Option<&'a UserProfile>,
    seen: FastSet<ItemId>,
    page: u32,
    limit: usize,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Self {
            rules: Rules::default(),
            user: None,
            seen: FastSet::default(),
            page: 1,
            limit: 5,
        }
    }
}

impl Run<'_> {
    fn arrange(&self, c: &[Scorable], scores: &[f32]) -> (Vec<String>, Arranged) {
        let rules = TenantRules::new(1, self.rules.clone());
        let input = RulesInput {
            user_id: "u1",
            user: self.user,
            seen: &self.seen,
            page: self.page,
            now: NOW,
            limit: self.limit,
            explain: true,
        };
        let a = arrange(&rules, &input, c, scores);
        let ids = a.order.iter().map(|&i| c[i].item_id.to_string()).collect();
        (ids, a)
    }
}

fn removed(a: &Arranged, rule: Removal) -> u32 {
    a.removed.0[rule as usize]
}

#[test]
fn the_default_rules_keep_the_models_order() {
    let (c, s) = ten();
    for limit in [1, 5, 10, 20] {
        let run = Run {
            limit,
            ..Default::default()
        };
        let (_, a) = run.arrange(&c, &s);
        assert_eq!(a.order, pipeline::order(&s, &c, limit), "limit {limit}");
        assert_eq!(a.more, limit < 10);
        assert_eq!(a.removed.total(), 0);
    }
}

#[test]
fn each_removal_rule_alone() {
    let (mut c, s) = ten();
    with(|i| i.available = false, &mut c[0]);
    with(|i| i.seller_id = Some("u1".into()), &mut c[1]);
    with(|i| i.seller_id = Some("s9".into()), &mut c[2]);
    let mut user = UserProfile::default();
    user.record(EventKind::Purchase, &c[3].record.item, NOW - 100.0);
    for k in 0..5 {
        user.record(
            EventKind::Impression,
            &c[4].record.item,
            NOW - 3_600.0 * f64::from(k),
        );
    }
    // Four impressions inside the window: not yet fatigued.
    for k in 0..4 {
        user.record(
            EventKind::Impression,
            &c[5].record.item,
            NOW - 60.0 * f64::from(k),
        );
    }
    let mut run = Run {
        user: Some(&user),
        limit: 10,
        ..Default::default()
    };
    run.rules.fatigue = Some(Fatigue {
        max_impressions: 5,
        window_hours: 24,
    });
    run.rules.exclude.sellers = vec!["s9".into()];
    run.seen = [ItemId::from("i6")].into_iter().collect();
    let (ids, a) = run.arrange(&c, &s);
    assert_eq!(ids, ["i5", "i7", "i8", "i9"]);
    for rule in Removal::ALL {
        assert_eq!(removed(&a, rule), 1, "{rule:?}");
    }
    // Off, purchases and own items are served; fatigue outside its window is no fatigue.
    run.rules.exclude_purchased = false;
    run.rules.exclude_own_items = false;
    run.rules.fatigue = Some(Fatigue {
        max_impressions: 5,
        window_hours: 3,
    });
    let (ids, _) = run.arrange(&c, &s);
    assert_eq!(ids, ["i1", "i3", "i4", "i5", "i7", "i8", "i9"]);
    // A click ends fatigue.
    let mut clicked = user.clone();
    clicked.record(EventKind::Click, &c[4].record.item, NOW);
    run.user = Some(&clicked);
    run.rules.fatigue = Some(Fatigue {
        max_impressions: 1,
        window_hours: 24,
    });
    let (ids, _) = run.arrange(&c, &s);
    assert!(ids.contains(&"i4".to_string()) && !ids.contains(&"i5".to_string()));
}

#[test]
fn exclusions_by_item_category_and_brand() {
    let (mut c, s) = ten();
    with(|i| i.category = "c2".into(), &mut c[9]);
    let mut run = Run {
        limit: 10,
        ..Default::default()
    };
    run.rules.exclude.items = vec!["i0".into()];
    run.rules.exclude.brands = vec!["b".into()];
    run.rules.exclude.categories = vec!["c2".into()];
    let (ids, a) = run.arrange(&c, &s);
    assert_eq!(ids, ["i1", "i4", "i5", "i6", "i7", "i8"]);
    assert_eq!(removed(&a, Removal::Excluded), 4);
}

#[test]
fn boosts_multiply_in_order_and_never_bring_back_an_excluded_item() {
    let (mut c, s) = ten();
    with(
        |i| {
            i.attributes.insert("colour".into(), "red".into());
        },
        &mut c[8],
    );
    let mut run = Run {
        limit: 3,
        ..Default::default()
    };
    run.rules.boosts = vec![
        Boost {
            matches: serde_json::json!({"brand": "e"})
                .as_object()
                .unwrap()
                .clone(),
            factor: 1.5,
        },
        Boost {
            matches: serde_json::json!({"attributes.colour": "red"})
                .as_object()
                .unwrap()
                .clone(),
            factor: 2.0,
        },
    ];
    // i8 (0.6): × 1.5 × 2 = 1.8, first; i9 (0.55) × 1.5 = 0.825 < i1 (0.95).
    let (ids, a) = run.arrange(&c, &s);
    assert_eq!(ids, ["i8", "i0", "i1"]);
    assert!((a.scores[8] - 1.8).abs() < 1e-6);
    assert_eq!(
        a.notes[0],
        [
            Note::Boost {
                factor: 1.5,
                by: "brand=e".into()
            },
            Note::Boost {
                factor: 2.0,
                by: "attributes.colour=red".into()
            },
        ]
    );
    run.rules.exclude.items = vec!["i8".into()];
    let (ids, _) = run.arrange(&c, &s);
    assert_eq!(ids, ["i0", "i1", "i2"]);
    // A negative score is divided: a boost still moves it up.
    assert_eq!(boost(-1.0, 2.0), -0.5);
}

#[test]
fn pins_take_their_position_on_the_first_page_only_if_servable() {
    let (c, s) = ten();
    let until = time::OffsetDateTime::from_unix_timestamp(NOW as i64 + 60).unwrap();
    let mut run = Run {
        limit: 4,
        ..Default::default()
    };
    run.rules.pins = vec![
        Pin {
            item_id: "i9".into(),
            position: 2,
            until,
        },
        Pin {
            item_id: "i7".into(),
            position: 4,
            until,
        },
    ];
    let (ids, a) = run.arrange(&c, &s);
    assert_eq!(ids, ["i0", "i9", "i1", "i7"]);
    assert_eq!(a.pins, 2);
    assert_eq!(a.notes[1], [Note::Pin { position: 2 }]);
    // Expired, on a later page, or excluded: not pinned.
    run.rules.exclude.items = vec!["i9".into()];
    run.rules.pins[1].until = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 1).unwrap();
    let (ids, a) = run.arrange(&c, &s);
    assert_eq!(ids, ["i0", "i1", "i2", "i3"]);
    assert_eq!(a.pins, 0);
    run.rules.exclude.items.clear();
    run.page = 2;
    let (ids, _) = run.arrange(&c, &s);
    assert_eq!(ids, ["i0", "i1", "i2", "i3"]);
}

#[test]
fn diversity_limits_each_window_and_relaxes_only_when_nothing_else_fits() {
    let (c, s) = ten();
    let mut run = Run {
        limit: 6,
        ..Default::default()
    };
    run.rules.diversity = Some(Diversity {
        max_per_brand: Some(1),
        max_per_category: None,
        max_per_seller: None,
        window: 3,
    });
    let (ids, a) = run.arrange(&c, &s);
    // Brands a a b b c c d d e e: no brand twice within 3 positions.
    assert_eq!(ids, ["i0", "i2", "i4", "i1", "i3", "i5"]);
    assert_eq!(a.relaxations, 0);
    assert_eq!(a.notes[1], [Note::Diversity { from: 3 }]);
    // One category for all and at most 2 per window of 3: impossible from position 3 on.
    run.rules.diversity = Some(Diversity {
        max_per_brand: None,
        max_per_category: Some(2),
        max_per_seller: None,
        window: 3,
    });
    let (ids, a) = run.arrange(&c, &s);
    assert_eq!(ids.len(), 6, "never fewer items");
    assert_eq!(ids, ["i0", "i1", "i2", "i3", "i4", "i5"]);
    assert_eq!(a.relaxations, 4);
    assert!(a.notes[2].contains(&Note::DiversityRelaxed));
}

#[test]
fn all_rules_combined() {
    let (mut c, s) = ten();
    with(|i| i.available = false, &mut c[1]);
    let mut run = Run {
        limit: 4,
        ..Default::default()
    };
    run.rules = Rules::parse(
        serde_json::json!({
            "exclude": {"items": ["i0"]},
            "boosts": [{"match": {"brand": "d"}, "factor": 2}],
            "pins": [{"item_id": "i9", "position": 1, "until": "2100-01-01T00:00:00Z"}],
            "diversity": {"max_per_brand": 1, "window": 2}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let (ids, a) = run.arrange(&c, &s);
    // i9 pinned first; d-brand i6, i7 boosted (1.4, 1.3) but not adjacent; then b (i2).
    assert_eq!(ids, ["i9", "i6", "i2", "i7"]);
    assert_eq!(removed(&a, Removal::Unavailable), 1);
    assert_eq!(removed(&a, Removal::Excluded), 1);
    assert!(a.more);
}

/// The one-pass selection of a page's best gives what selecting and sorting all gives: the
/// same items in the same order, ties (equal scores, many of them) by item id, NaN last,
/// whatever order the candidates come in.
#[test]
fn the_best_few_in_one_pass_are_the_best_of_a_full_sort() {
    let candidates: Vec<Scorable> = (0..300).map(|n| candidate(n, "b", "c")).collect();
    // A fixed pseudo-random sequence: scores drawn from a few values, so ties abound.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..40 {
        let n = [0, 1, 5, 64, 65, 300][round % 6];
        let scores: Vec<f32> = (0..n)
            .map(|_| match next() % 10 {
                0 => f32::NAN,
                r => (r % 4) as f32 * 0.25,
            })
            .collect();
        let mut shuffled: Vec<(u64, usize)> = (0..n).map(|i| (next(), i)).collect();
        shuffled.sort_unstable();
        let indices: Vec<usize> = shuffled.into_iter().map(|(_, i)| i).collect();
        // Every candidate, fully sorted: the order the rules define.
        let all = select_by_score(&scores, &candidates, indices.iter().copied(), None, true);
        for k in [0, 1, 2, 20, SMALL_K, SMALL_K + 1, 400] {
            let best = best_by_score(&scores, &candidates, indices.iter().copied(), Some(k));
            assert_eq!(
                best,
                all[..k.min(n)],
                "round {round}, {n} candidates, k = {k}"
            );
        }
    }
}

/// The mask only turns away keys that were never inserted: every blocked key is found, keys
/// sharing a blocked key's low bits reach the map and are not blocked by it.
#[test]
fn blocked_keys_are_found_past_the_mask() {
    let mut blocked = Blocked::default();
    assert_eq!(blocked.get(7), None);
    for k in [3u64, 64 + 5, 1 << 40] {
        blocked.insert(k, Removal::Purchased);
    }
    blocked.insert(9, Removal::Fatigue);
    // Blocked again for another reason: the first stands (bought before tired of).
    blocked.insert(3, Removal::Fatigue);
    for k in [3u64, 64 + 5, 1 << 40] {
        assert_eq!(blocked.get(k), Some(Removal::Purchased), "{k}");
    }
    assert_eq!(blocked.get(9), Some(Removal::Fatigue));
    // Same low six bits as 3 and 5 (mask hit), not inserted: the map says no.
    assert_eq!(blocked.get(128 + 3), None);
    assert_eq!(blocked.get(5), None);
    // A bit never set: turned away by the mask.
    assert_eq!(blocked.get(11), None);
}
