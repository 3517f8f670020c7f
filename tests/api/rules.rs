//! The marketplace feed through the API: business rules (read, replaced, validated, served),
//! item availability, and pagination without repeats — on one replica, and on two sharing
//! Redis.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{DEMO_A_KEY, RedisServer, TestApp, metric_value, spawn_app, spawn_app_with};
use crate::redis::{load_demo, spawn_redis_app_with};

impl TestApp {
    async fn put_rules(&self, rules: &Value) -> reqwest::Response {
        self.client
            .put(self.url("/v1/tenants/demo-a/rules"))
            .bearer_auth(DEMO_A_KEY)
            .json(rules)
            .send()
            .await
            .unwrap()
    }

    async fn get_rules(&self) -> Value {
        let res = self
            .client
            .get(self.url("/v1/tenants/demo-a/rules"))
            .bearer_auth(DEMO_A_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn patch_item(&self, id: &str, patch: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/v1/tenants/demo-a/items/{id}")))
            .bearer_auth(DEMO_A_KEY)
            .json(patch)
            .send()
            .await
            .unwrap()
    }

    /// A feed page of demo-a as JSON (status 200 asserted).
    async fn page(&self, query: &str) -> Value {
        let res = self.feed("demo-a", DEMO_A_KEY, query).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

fn ids(feed: &Value) -> Vec<String> {
    feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

fn cursor(feed: &Value) -> &str {
    feed["next_cursor"].as_str().expect("a next page")
}

#[actix_rt::test]
async fn rules_are_read_validated_replaced_and_served() {
    let app = spawn_app().await;
    let start = app.get_rules().await;
    assert_eq!(start["version"], 0);
    assert_eq!(start["rules"]["exclude_purchased"], true);

    // Every problem listed by field; nothing changes.
    let bad = json!({
        "boosts": [{"match": {"colour": "red"}, "factor": 11}],
        "pins": [{"item_id": "i1", "position": 1, "until": "2100-01-01T00:00:00Z"},
                 {"item_id": "i2", "position": 1, "until": "2100-01-01T00:00:00Z"}]
    });
    let body = assert_error(
        app.put_rules(&bad).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "boosts[0].factor",
            "boosts[0].match.colour",
            "pins[1].position"
        ]
    );
    let unknown = json!({"diversity": {"window": 5, "max_per_colour": 1}});
    let body = assert_error(
        app.put_rules(&unknown).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert!(body.to_string().contains("max_per_colour"), "{body}");
    assert_eq!(app.get_rules().await["version"], 0);

    // Excluding the category of the user's best item removes it, and explain says so.
    let before = app.page("user_id=u7&limit=10").await;
    let top = ids(&before)[0].clone();
    let category = app.item_stats_item(&top).await["category"].clone();
    let res = app
        .put_rules(&json!({"exclude": {"categories": [category]}}))
        .await;
    assert_eq!(res.status(), 200);
    let put: Value = res.json().await.unwrap();
    assert_eq!(put["version"], 1);
    assert_eq!(
        app.get_rules().await["rules"]["exclude"]["categories"][0],
        category
    );
    let after = app.page("user_id=u7&limit=10&explain=true").await;
    assert_eq!(after["rules_version"], 1);
    assert!(!ids(&after).contains(&top));
    assert!(
        after["rules_removed"]["excluded"].as_u64().unwrap() > 0,
        "{after}"
    );

    // A pin shows an item the sources did not propose, first, on the first page only.
    let pinned = "i1499";
    assert!(!ids(&after).contains(&pinned.to_string()));
    let rules = json!({
        "pins": [{"item_id": pinned, "position": 1, "until": "2100-01-01T00:00:00Z"}],
        "boosts": [{"match": {"category": category}, "factor": 2.0}]
    });
    assert_eq!(app.put_rules(&rules).await.status(), 200);
    let first = app.page("user_id=u7&limit=10&explain=true").await;
    assert_eq!(first["rules_version"], 2);
    assert_eq!(first["items"][0]["item_id"], pinned);
    assert_eq!(
        first["items"][0]["rules"][0],
        json!({"rule": "pin", "position": 1})
    );
    let boosted = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule"] == "boost")
        })
        .expect("a boosted item");
    assert!(boosted["score"].as_f64().unwrap() > boosted["model_score"].as_f64().unwrap());
    let second = app
        .page(&format!("user_id=u7&limit=10&cursor={}", cursor(&first)))
        .await;
    assert!(!ids(&second).contains(&pinned.to_string()));

    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"eaglerank_rules_version{tenant="demo-a"}"#),
        Some(2.0)
    );
    assert!(
        metric_value(
            &metrics,
            r#"eaglerank_rules_candidates_removed_total{rule="excluded",tenant="demo-a"}"#
        )
        .unwrap()
            > 0.0
    );
    assert!(
        metric_value(
            &metrics,
            r#"eaglerank_rules_pins_served_total{tenant="demo-a"}"#
        )
        .unwrap()
            >= 1.0
    );
}

impl TestApp {
    async fn item_stats_item(&self, id: &str) -> Value {
        let res = self.item("demo-a", DEMO_A_KEY, id).await;
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["item"].clone()
    }
}

#[actix_rt::test]
async fn an_unavailable_item_is_never_served_and_a_patch_changes_only_what_it_names() {
    let app = spawn_app().await;
    let feed = app.page("user_id=u3&limit=5").await;
    let top = ids(&feed)[0].clone();
    let before = app.item_stats_item(&top).await;
    let stats_before = app.item_stats("demo-a", DEMO_A_KEY, &top).await;
    let res = app
        .patch_item(&top, &json!({"available": false, "price": 12.5}))
        .await;
    assert_eq!(res.status(), 200);
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["available"], false);
    assert_eq!(patched["price"], 12.5);
    assert_eq!(patched["category"], before["category"]);
    assert_eq!(patched["brand"], before["brand"]);
    // Its statistics stay.
    assert_eq!(
        app.item_stats("demo-a", DEMO_A_KEY, &top).await["all_time"],
        stats_before["all_time"]
    );
    for user in ["u3", "u4", "u5", "new-user"] {
        let f = app.page(&format!("user_id={user}&limit=100")).await;
        assert!(!ids(&f).contains(&top), "{user}");
    }
    assert_eq!(
        app.patch_item(&top, &json!({"available": true}))
            .await
            .status(),
        200
    );
    assert!(ids(&app.page("user_id=u3&limit=5").await).contains(&top));

    assert_error(
        app.patch_item("no-such-item", &json!({"available": false}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.patch_item(&top, &json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert_error(
        app.patch_item(&top, &json!({"category": "x"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert_error(
        app.patch_item(&top, &json!({"price": -1})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
}

#[actix_rt::test]
async fn five_pages_never_repeat_an_item_and_a_cursor_gives_the_same_page_again() {
    let app = spawn_app().await;
    let mut seen = HashSet::new();
    let mut query = "user_id=u11&limit=20".to_owned();
    let mut cursors = Vec::new();
    for page in 1..=5 {
        let feed = app.page(&query).await;
        assert_eq!(feed["page"], page);
        let items = ids(&feed);
        assert_eq!(items.len(), 20, "page {page}");
        for id in items {
            assert!(seen.insert(id.clone()), "{id} repeated on page {page}");
        }
        let next = cursor(&feed).to_owned();
        query = format!("user_id=u11&limit=20&cursor={next}");
        cursors.push((next, feed));
    }
    // The same cursor twice: the same page.
    let (third, _) = &cursors[1];
    let again = app
        .page(&format!("user_id=u11&limit=20&cursor={third}"))
        .await;
    assert_eq!(ids(&again), ids(&cursors[2].1));
    assert_eq!(again["page"], 3);

    // Tampered, another user's, or garbage: 400.
    let mut tampered = third.clone().into_bytes();
    tampered[3] = if tampered[3] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    for query in [
        format!("user_id=u11&cursor={tampered}"),
        format!("user_id=u12&cursor={third}"),
        "user_id=u11&cursor=nonsense".to_owned(),
    ] {
        assert_error(
            app.feed("demo-a", DEMO_A_KEY, &query).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }

    // Paging on until the candidates run out: the last page has no next_cursor.
    let mut query = "user_id=u11&limit=100".to_owned();
    let mut all = HashSet::new();
    for _ in 0..20 {
        let feed = app.page(&query).await;
        for id in ids(&feed) {
            assert!(all.insert(id));
        }
        match feed["next_cursor"].as_str() {
            Some(c) => query = format!("user_id=u11&limit=100&cursor={c}"),
            None => break,
        }
    }
    let metrics = app.metrics().await;
    assert!(
        metric_value(
            &metrics,
            r#"eaglerank_feed_session_page_count{tenant="demo-a"}"#
        )
        .unwrap()
            >= 10.0
    );
    assert!(all.len() >= 100, "{}", all.len());
}

#[actix_rt::test]
async fn an_expired_cursor_is_refused() {
    let app = spawn_app_with(&[("feed.session_ttl_seconds", 1.into())]).await;
    let first = app.page("user_id=u2&limit=5").await;
    let next = cursor(&first).to_owned();
    actix_rt::time::sleep(Duration::from_millis(2_200)).await;
    let body = assert_error(
        app.feed("demo-a", DEMO_A_KEY, &format!("user_id=u2&cursor={next}"))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[actix_rt::test]
async fn two_replicas_on_one_redis_share_rules_availability_and_sessions() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let shared = [
        ("feed.cursor_secret", "a shared test secret".into()),
        ("feed.rules_refresh_ms", 200.into()),
        ("cache.item_ttl_ms", 300.into()),
    ];
    let a = spawn_redis_app_with(&redis, &shared).await;
    let b = spawn_redis_app_with(&redis, &shared).await;
    for app in [&a, &b] {
        app.wait_ready(200).await;
    }
    // A PUT on A is served by B within the refresh interval.
    let top = ids(&b.page("user_id=u5&limit=10").await)[0].clone();
    let res = a.put_rules(&json!({"exclude": {"items": [top]}})).await;
    assert_eq!(res.status(), 200);
    let version = res.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let on_b = b.page("user_id=u5&limit=10").await;
    assert_eq!(on_b["rules_version"], version);
    assert!(!ids(&on_b).contains(&top));
    assert_eq!(b.get_rules().await["version"], version);

    // An item made unavailable on A is not served by B after the item TTL.
    let second = ids(&on_b)[0].clone();
    assert_eq!(
        a.patch_item(&second, &json!({"available": false}))
            .await
            .status(),
        200
    );
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        assert!(!ids(&b.page("user_id=u5&limit=50").await).contains(&second));
    }

    // A session started on A continues on B without repeats. Its first page is kept only in
    // the served-feed log (no session in Redis until a second page is served).
    let sessions = "er:{demo-a}:session:*";
    let p1 = a.page("user_id=u8&limit=20").await;
    assert_eq!(redis.count_keys(sessions), 0);
    let p2 = b
        .page(&format!("user_id=u8&limit=20&cursor={}", cursor(&p1)))
        .await;
    assert_eq!(redis.count_keys(sessions), 1);
    let p3 = a
        .page(&format!("user_id=u8&limit=20&cursor={}", cursor(&p2)))
        .await;
    let mut all = HashSet::new();
    for page in [&p1, &p2, &p3] {
        for id in ids(page) {
            assert!(all.insert(id.clone()), "{id} repeated");
        }
    }
    assert_eq!(p3["page"], 3);
}

/// The events a user's history is made of, posted for demo-a.
async fn post(app: &TestApp, user: &str, item: &str, kinds: &[&str]) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let events: Vec<Value> = kinds
        .iter()
        .map(|k| {
            let id = format!("rules-{}", uuid::Uuid::new_v4());
            json!({"event_id": id, "type": k, "user_id": user, "item_id": item, "timestamp": now})
        })
        .collect();
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
}

#[actix_rt::test]
async fn purchases_and_fatigue_come_from_the_users_events() {
    let app = spawn_app().await;
    let feed = app.page("user_id=u20&limit=10").await;
    let (bought, seen) = (ids(&feed)[0].clone(), ids(&feed)[1].clone());
    post(&app, "u20", &bought, &["click", "purchase"]).await;
    let after = app.page("user_id=u20&limit=10&explain=true").await;
    assert!(!ids(&after).contains(&bought));
    assert!(
        after["rules_removed"]["purchased"].as_u64().unwrap() >= 1,
        "{after}"
    );

    assert_eq!(
        app.put_rules(&json!({"fatigue": {"max_impressions": 2, "window_hours": 24}}))
            .await
            .status(),
        200
    );
    post(&app, "u20", &seen, &["impression"]).await;
    assert!(
        ids(&app.page("user_id=u20&limit=10").await).contains(&seen),
        "one impression: still served"
    );
    post(&app, "u20", &seen, &["impression"]).await;
    let tired = app.page("user_id=u20&limit=10&explain=true").await;
    assert!(!ids(&tired).contains(&seen));
    assert_eq!(tired["rules_removed"]["fatigue"], 1, "{tired}");
    // Another user is not tired of it; a click ends this one's fatigue.
    assert_eq!(
        app.page("user_id=u21&limit=10&explain=true").await["rules_removed"]["fatigue"],
        0
    );
    post(&app, "u20", &seen, &["click"]).await;
    assert_eq!(
        app.page("user_id=u20&limit=10&explain=true").await["rules_removed"]["fatigue"],
        0
    );
}

#[actix_rt::test]
async fn availability_flips_under_load_are_never_served_after_the_patch_answered() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let app = Arc::new(spawn_app().await);
    // The item every cold-start user gets first.
    let item = ids(&app.page("user_id=fresh-0&limit=5").await)[0].clone();
    // (unavailable from, unavailable until) of each flip, as the client saw the PATCHes answer.
    type Windows = Vec<(Instant, Option<Instant>)>;
    let windows: Arc<Mutex<Windows>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (app, item, windows, stop) = (app.clone(), item.clone(), windows.clone(), stop.clone());
        load.push(actix_rt::spawn(async move {
            let (mut feeds, mut violations) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                let f = app
                    .page(&format!("user_id=load-{worker}-{feeds}&limit=20"))
                    .await;
                let answered = Instant::now();
                feeds += 1;
                if ids(&f).contains(&item) {
                    // Served: it must not have been sent entirely inside an unavailable window.
                    let inside =
                        windows.lock().unwrap().iter().any(|(from, until)| {
                            *from <= sent && until.is_none_or(|u| answered <= u)
                        });
                    if inside {
                        violations.push(feeds);
                    }
                }
            }
            (feeds, violations)
        }));
    }
    for _ in 0..10 {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            app.patch_item(&item, &json!({"available": false}))
                .await
                .status(),
            200
        );
        windows.lock().unwrap().push((Instant::now(), None));
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let reopening = Instant::now();
        windows.lock().unwrap().last_mut().unwrap().1 = Some(reopening);
        assert_eq!(
            app.patch_item(&item, &json!({"available": true}))
                .await
                .status(),
            200
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (feeds, violations) = task.await.unwrap();
        assert!(
            violations.is_empty(),
            "served while unavailable: {violations:?}"
        );
        total += feeds;
    }
    assert!(total > 20, "the load ran: {total} feeds");
}

#[actix_rt::test]
async fn a_degraded_feed_honours_availability() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let app = spawn_redis_app_with(
        &redis,
        &[
            ("redis.fallback_refresh_seconds", 1.into()),
            ("cache.item_ttl_ms", 200.into()),
            ("redis.command_timeout_ms", 200.into()),
            ("server.request_deadline_ms", 2_000.into()),
        ],
    )
    .await;
    app.wait_ready(200).await;
    let degraded_feed = || async {
        redis.pause();
        app.wait_ready(503).await;
        let f = app.page("user_id=u1&limit=20").await;
        redis.resume();
        app.wait_ready(200).await;
        assert_eq!(f["degraded"], true, "{f}");
        ids(&f)
    };
    let before = degraded_feed().await;
    let gone = before[0].clone();
    assert_eq!(
        app.patch_item(&gone, &json!({"available": false}))
            .await
            .status(),
        200
    );
    // One fallback refresh (1 s) after the item cache (200 ms) let the change through.
    actix_rt::time::sleep(Duration::from_millis(2_500)).await;
    let after = degraded_feed().await;
    assert!(
        !after.contains(&gone),
        "{gone} served degraded after it became unavailable"
    );
    assert_eq!(after.len(), 20);
}
