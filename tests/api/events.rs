//! User events through the REST endpoint, applied in process: validation, idempotency, and
//! their visible effect on feeds.

use std::collections::HashMap;

use eaglerank::config::Settings;
use eaglerank::demo::Marketplace;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{DEMO_A_KEY, TestApp, metric_value, spawn_app_with};

const ANCHOR: f64 = 1_790_000_000.0;

async fn app() -> TestApp {
    spawn_app_with(&[("store.demo.anchor", ANCHOR.into())]).await
}

/// The demo catalog the test app was seeded with (same settings, same seed).
fn market() -> Marketplace {
    let settings = Settings::load_with(
        &[],
        &[
            ("store.demo.items", 1500.into()),
            ("store.demo.users", 300.into()),
        ],
    )
    .unwrap();
    Marketplace::generate(&settings.store.demo, "demo-a", ANCHOR)
}

fn event(id: &str, kind: &str, user: &str, item: &str) -> Value {
    json!({"event_id": id, "type": kind, "user_id": user, "item_id": item, "timestamp": eaglerank::ingest::now_rfc3339()})
}

async fn post(app: &TestApp, events: Vec<Value>) -> reqwest::Response {
    app.post_events(&Value::from(events)).await
}

async fn feed_items(app: &TestApp, user: &str, limit: usize) -> Vec<Value> {
    let res = app
        .feed(
            "demo-a",
            DEMO_A_KEY,
            &format!("user_id={user}&limit={limit}"),
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[actix_rt::test]
async fn an_invalid_event_rejects_the_whole_batch() {
    let app = app().await;
    let res = post(
        &app,
        vec![
            event("e1", "click", "u1", "i1"),
            event("e2", "like", "u1", "i1"),
            json!({"event_id": "e3", "type": "click", "user_id": "u1", "item_id": "i1", "timestamp": "yesterday"}),
            json!({"event_id": "e4", "type": "click", "user_id": "u1", "item_id": "i1", "timestamp": "2099-01-01T00:00:00Z"}),
            json!({"type": "click"}),
        ],
    )
    .await;
    let body = assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(
        details
            .iter()
            .map(|d| d["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let m = app.metrics().await;
    assert!(
        !m.contains("eaglerank_events_ingested_total{"),
        "nothing applied"
    );
    assert_eq!(
        metric_value(&m, r#"eaglerank_events_rejected_total{reason="invalid"}"#),
        Some(4.0)
    );

    let res = post(&app, vec![]).await;
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let many: Vec<Value> = (0..1001)
        .map(|i| event(&format!("m{i}"), "click", "u1", "i1"))
        .collect();
    let res = post(&app, many).await;
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
}

#[actix_rt::test]
async fn replayed_events_change_nothing() {
    let app = app().await;
    let batch: Vec<Value> = (0..5)
        .map(|i| event(&format!("ev-{i}"), "click", "u9", &format!("i{i}")))
        .collect();
    let res = post(&app, batch.clone()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"accepted": 5, "duplicates": 0, "unknown_items": 0})
    );
    let before = feed_items(&app, "u9", 50).await;

    let res = post(&app, batch).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["duplicates"], 5);
    assert_eq!(
        feed_items(&app, "u9", 50).await,
        before,
        "a replay changes no feature"
    );

    let m = app.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_events_ingested_total{source="http",tenant="demo-a",type="click"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        metric_value(&m, r#"eaglerank_events_duplicates_total{tenant="demo-a"}"#),
        Some(5.0)
    );
    assert_eq!(
        metric_value(&m, "eaglerank_feature_freshness_seconds_count"),
        Some(5.0)
    );
    assert!(metric_value(&m, "eaglerank_last_event_processed_timestamp_seconds").unwrap() > ANCHOR);
    assert_eq!(
        metric_value(&m, "eaglerank_event_apply_seconds_count"),
        Some(2.0)
    );

    // Events on items nobody listed are counted, not applied.
    let res = post(&app, vec![event("ev-x", "click", "u9", "no-such-item")]).await;
    assert_eq!(res.json::<Value>().await.unwrap()["unknown_items"], 1);
    let m = app.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_events_rejected_total{reason="unknown_item"}"#
        ),
        Some(1.0)
    );
}

#[actix_rt::test]
async fn clicks_on_a_category_make_the_next_feed_lean_towards_it() {
    let app = app().await;
    let market = market();
    let category_of: HashMap<String, String> = market
        .items
        .iter()
        .map(|i| (i.item_id.to_string(), i.category.clone()))
        .collect();
    let user = "u17";
    let share = |items: &[Value], category: &str| {
        items
            .iter()
            .filter(|i| category_of[i["item_id"].as_str().unwrap()] == category)
            .count()
    };
    let before = feed_items(&app, user, 50).await;
    // A category the user has shown no interest in so far.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for i in &before {
        *counts
            .entry(category_of[i["item_id"].as_str().unwrap()].as_str())
            .or_default() += 1;
    }
    let target = market
        .items
        .iter()
        .map(|i| i.category.as_str())
        .find(|c| !counts.contains_key(c))
        .expect("a category absent from the feed")
        .to_owned();
    let clicks: Vec<Value> = market
        .items
        .iter()
        .filter(|i| i.category == target)
        .take(30)
        .enumerate()
        .map(|(n, i)| event(&format!("lean-{n}"), "click", user, &i.item_id))
        .collect();
    assert_eq!(post(&app, clicks).await.status(), StatusCode::ACCEPTED);

    let after = feed_items(&app, user, 50).await;
    assert_eq!(share(&before, &target), 0);
    let leaning: Vec<&Value> = after
        .iter()
        .filter(|i| category_of[i["item_id"].as_str().unwrap()] == target)
        .collect();
    assert!(
        leaning.len() >= 3,
        "{} of 50 items now in {target}",
        leaning.len()
    );
    // They came through the user's new affinity.
    assert!(leaning.iter().all(|i| {
        i["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "affinity")
    }));
}

/// Trending follows events within `cache.list_ttl_ms`: the feeds of that time share one
/// sorted index, rebuilt once it is that old.
#[actix_rt::test]
async fn trending_reacts_to_a_burst_of_purchases_within_the_list_ttl() {
    const TTL: std::time::Duration = std::time::Duration::from_millis(1_000);
    let app = spawn_app_with(&[
        ("store.demo.anchor", ANCHOR.into()),
        ("cache.list_ttl_ms", (TTL.as_millis() as u64).into()),
    ])
    .await;
    let cold = "someone-new";
    let built = std::time::Instant::now();
    let before: Vec<String> = feed_items(&app, cold, 20)
        .await
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect();
    // An item nobody cared about: last in the catalog order, not in the cold-start feed.
    let market = market();
    let quiet = market
        .items
        .iter()
        .rev()
        .map(|i| i.item_id.to_string())
        .find(|id| !before.contains(id))
        .unwrap();
    let burst: Vec<Value> = (0..60)
        .flat_map(|n| {
            [
                event(
                    &format!("burst-c-{n}"),
                    "click",
                    &format!("buyer-{n}"),
                    &quiet,
                ),
                event(
                    &format!("burst-p-{n}"),
                    "purchase",
                    &format!("buyer-{n}"),
                    &quiet,
                ),
            ]
        })
        .collect();
    assert_eq!(post(&app, burst).await.status(), StatusCode::ACCEPTED);
    let from_trending = |feed: &[Value]| {
        feed.iter().any(|i| {
            i["item_id"] == quiet.as_str()
                && i["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "trending")
        })
    };
    // Within the TTL the trending list keeps its order (the unit tests of the index check
    // that); the records it lists are current, so the item may rank in at once already.
    actix_rt::time::sleep(TTL.saturating_sub(built.elapsed())).await;
    // The first feed past the TTL starts the index's rebuild and is served the stale one; the
    // rebuilt index serves the feeds after it.
    let mut after = Vec::new();
    for _ in 0..100 {
        after = feed_items(&app, cold, 20).await;
        if from_trending(&after) {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hit = after
        .iter()
        .find(|i| i["item_id"] == quiet.as_str())
        .expect("the bought item is in the cold-start feed");
    assert!(
        hit["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "trending"),
        "{hit}"
    );
}

#[actix_rt::test]
async fn the_simulator_emits_its_events_to_a_running_service() {
    let app = app().await;
    let settings = Settings::load_with(
        &[],
        &[
            ("store.demo.items", 1500.into()),
            ("store.demo.users", 300.into()),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = eaglerank::tools::simulate::SimulateArgs {
        tenant: "demo-a".into(),
        requests: 100,
        shown: 20,
        new_user_share: 0.1,
        policy: eaglerank::tools::simulate::Policy::Random,
        seed: 7,
        anchor: Some(ANCHOR),
        out: dir.path().join("log.jsonl"),
        emit_url: Some(app.address.clone()),
        emit_key: Some(DEMO_A_KEY.into()),
        emit_kafka: false,
        candidates_out: Some(dir.path().join("candidates.jsonl")),
        candidates_every: 10,
    };
    let report = eaglerank::tools::simulate::run(&settings, &args)
        .await
        .unwrap();
    assert!(
        report.emitted >= 2000,
        "100 feeds of 20 impressions: {}",
        report.emitted
    );
    let m = app.metrics().await;
    let ingested: f64 = ["impression", "click", "add_to_cart", "purchase"]
        .iter()
        .filter_map(|t| {
            metric_value(
                &m,
                &format!(
                    r#"eaglerank_events_ingested_total{{source="http",tenant="demo-a",type="{t}"}}"#
                ),
            )
        })
        .sum();
    assert_eq!(
        ingested, report.emitted as f64,
        "every simulated event reached the service"
    );

    // Every candidate of one request in ten, each with its row and relevance: what the first
    // ranking stage is distilled on.
    let text = std::fs::read_to_string(dir.path().join("candidates.jsonl")).unwrap();
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let schema = lines.next().unwrap();
    let width = schema["features"].as_array().unwrap().len();
    let groups: Vec<Value> = lines.collect();
    assert_eq!(groups.len(), 10);
    for (g, group) in groups.iter().enumerate() {
        assert_eq!(group["request"], g * 10);
        let ids = group["item_ids"].as_array().unwrap();
        assert!(
            ids.len() > 20,
            "all candidates, not the shown 20: {}",
            ids.len()
        );
        let rows = group["features"].as_array().unwrap();
        let relevance = group["p_click"].as_array().unwrap();
        assert_eq!((rows.len(), relevance.len()), (ids.len(), ids.len()));
        assert!(rows.iter().all(|r| r.as_array().unwrap().len() == width));
        assert!(
            relevance
                .iter()
                .all(|p| (0.0..1.0).contains(&p.as_f64().unwrap()))
        );
    }
}

/// `stats[path…]` as a number.
fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} in {v}"))
}

#[actix_rt::test]
async fn item_counts_over_time_windows_follow_events() {
    let app = app().await;
    let item = &market().items[7].item_id;
    let before = app.item_stats("demo-a", DEMO_A_KEY, item).await;
    let two_days_ago = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let mut old = event("w-old", "click", "u1", item);
    old["timestamp"] = json!(
        two_days_ago
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let res = post(
        &app,
        vec![
            event("w1", "impression", "u1", item),
            event("w2", "impression", "u2", item),
            event("w3", "click", "u1", item),
            event("w4", "click", "u2", item),
            event("w5", "click", "u3", item),
            old,
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let after = app.item_stats("demo-a", DEMO_A_KEY, item).await;
    let delta = |path: &[&str]| num(&after, path) - num(&before, path);
    assert_eq!(delta(&["all_time", "clicks"]), 4.0);
    assert_eq!(delta(&["all_time", "impressions"]), 2.0);
    // The windows count the three new clicks; the two-day-old one is outside 1 h and 24 h.
    // (Sliding windows are estimated from two buckets: allow for a bucket boundary passing
    // between the post and the read.)
    for window in ["1h", "24h"] {
        let clicks = delta(&["windows", window, "clicks"]);
        assert!((clicks - 3.0).abs() < 0.01, "{window}: {clicks} in {after}");
    }
    let week = delta(&["windows", "7d", "clicks"]);
    assert!((2.99..=4.0).contains(&week), "7d: {week}");
    assert!(delta(&["windows", "1h", "ctr"]) > 0.0, "{after}");

    let res = app.item("demo-a", DEMO_A_KEY, "no-such-item").await;
    assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.item("demo-a", DEMO_A_KEY, "bad%20id").await;
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let res = app.item("demo-b", DEMO_A_KEY, item).await;
    assert_error(res, StatusCode::FORBIDDEN, "permission_denied").await;
}
