use super::*;

fn item(id: &str, category: &str) -> Item {
    Item {
        item_id: id.into(),
        category: category.into(),
        brand: "b".into(),
        price: 10.0,
        created_at: 0,
        attributes: Default::default(),
        available: true,
        seller_id: None,
    }
}

const T0: f64 = TRENDING_EPOCH + 300.0 * TRENDING_HALF_LIFE_SECONDS;

#[test]
fn trending_halves_after_one_half_life() {
    let mut s = ItemStats::default();
    s.record(EventKind::Purchase, T0);
    assert!((s.trending_score(T0) - 5.0).abs() < 1e-9);
    let later = s.trending_score(T0 + TRENDING_HALF_LIFE_SECONDS);
    assert!((later - 2.5).abs() < 1e-9, "{later}");
    assert_eq!(s.purchases, 1.0);
    assert_eq!(s.popularity(), 4.0);
}

#[test]
fn late_events_add_their_decayed_weight() {
    let mut s = ItemStats::default();
    s.record(EventKind::Click, T0 + TRENDING_HALF_LIFE_SECONDS);
    s.record(EventKind::Click, T0);
    let now = T0 + TRENDING_HALF_LIFE_SECONDS;
    assert!(
        (s.trending_score(now) - 1.5).abs() < 1e-9,
        "{}",
        s.trending_score(now)
    );
}

#[test]
fn profile_tracks_affinity_shares_and_recency() {
    let mut p = UserProfile::default();
    p.record(EventKind::Impression, &item("i0", "shoes"), T0);
    assert_eq!(p.interactions, 0.0);
    p.record(EventKind::Click, &item("i1", "shoes"), T0);
    p.record(EventKind::Purchase, &item("i2", "books"), T0);
    p.record(EventKind::Click, &item("i1", "shoes"), T0);
    assert_eq!(p.top_categories(2), vec!["books", "shoes"]);
    assert!((p.category_share("books") - 4.0 / 6.0).abs() < 1e-6);
    assert_eq!(p.category_share("toys"), 0.0);
    assert_eq!(
        p.recent_items.iter().map(|i| &**i).collect::<Vec<_>>(),
        ["i1", "i2"]
    );
    let seen = |id: &str| p.recent_items.iter().any(|r| &**r == id);
    assert!(seen("i2") && !seen("i0"));
}

#[test]
fn merging_a_batch_equals_recording_its_events() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let kinds = [
        EventKind::Impression,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::Purchase,
    ];
    let length = 3_600.0;
    for _ in 0..500 {
        // Events over a few buckets, in any order: late, early, far behind.
        let events = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<(EventKind, f64)> {
            (0..rng.random_range(0..6))
                .map(|_| {
                    let at = T0 + rng.random_range(0.0..4.0 * length);
                    (kinds[rng.random_range(0..4)], at)
                })
                .collect()
        };
        let stored = events(&mut rng);
        let batch = events(&mut rng);
        let mut sequential = WindowCounts::default();
        let mut merged = WindowCounts::default();
        let mut summed = WindowCounts::default();
        for &(kind, at) in &stored {
            sequential.record(kind, at, length);
            merged.record(kind, at, length);
        }
        for &(kind, at) in &batch {
            sequential.record(kind, at, length);
            summed.record(kind, at, length);
        }
        merged.merge(&summed);
        assert_eq!(merged, sequential, "stored {stored:?}, batch {batch:?}");
    }
}

#[test]
fn window_counts_slide_out_over_one_window_length() {
    const HOUR: f64 = 3_600.0;
    // T0 is a bucket boundary of every window.
    let start = (T0 / WINDOWS[2].1).floor() * WINDOWS[2].1;
    let mut s = ItemStats::default();
    for _ in 0..10 {
        s.record(EventKind::Click, start + 60.0);
    }
    s.record(EventKind::Impression, start + 120.0);
    let [hour, day, week] = s.windowed(start + 600.0);
    assert_eq!(hour, [1.0, 10.0, 0.0, 0.0]);
    assert_eq!(day, hour);
    assert_eq!(week, hour);
    // Next hour, a quarter in: the old bucket still covers three quarters of the window.
    s.record(EventKind::Purchase, start + HOUR + 900.0);
    let [hour, day, _] = s.windowed(start + HOUR + 900.0);
    assert_eq!(hour, [0.75, 7.5, 0.0, 1.0]);
    assert_eq!(day, [1.0, 10.0, 0.0, 1.0]);
    // Two hours on, the 1 h window has forgotten the clicks; the day has not.
    let [hour, day, week] = s.windowed(start + 3.0 * HOUR);
    assert_eq!(hour, [0.0; 4]);
    assert_eq!(day, [1.0, 10.0, 0.0, 1.0]);
    assert_eq!(week, day);
    // A late event lands in the previous bucket; one older than that is not counted.
    s.record(EventKind::Click, start + 30.0);
    s.record(EventKind::Click, start - 2.0 * HOUR);
    assert_eq!(s.windows[0].previous, [1.0, 11.0, 0.0, 0.0]);
    assert_eq!(s.clicks, 12.0);
}

#[test]
fn a_profile_records_history_and_taste_from_its_events() {
    let mut p = UserProfile::default();
    let shoe = item("i1", "shoes");
    for k in 0..3 {
        p.record(EventKind::Impression, &shoe, T0 + f64::from(k));
    }
    assert_eq!(p.impressions_since("i1", T0 as u32 + 1), 2);
    assert_eq!(p.interactions, 0.0, "impressions are not taste");
    // A click resets fatigue and counts as taste.
    p.record(EventKind::Click, &shoe, T0 + 10.0);
    assert_eq!(p.impressions_since("i1", 0), 0);
    p.record(EventKind::Purchase, &shoe, T0 + 50.0);
    p.record(EventKind::Click, &item("i2", "hats"), T0 + 60.0);
    assert!(p.purchased("i1") && !p.purchased("i2"));
    assert_eq!(p.interactions, 3.0);
    assert_eq!(p.category_affinity.len(), 2);
    assert!(p.category_share("shoes") > p.category_share("hats"));
    assert_eq!(p.top_categories(1), ["shoes"]);
    let recent: Vec<&str> = p.recent_items.iter().map(|i| &**i).collect();
    assert_eq!(recent, ["i2", "i1"]);
}
