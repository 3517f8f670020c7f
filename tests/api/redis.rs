//! The Redis backend against a real `redis-server` started for each test.

use std::time::Duration;

use eaglerank::config::{DemoSettings, Settings};
use eaglerank::domain::{Event, EventKind, Item, ItemId, ItemRecord, UserProfile};
use eaglerank::store::{CandidateQuery, FeatureStore, MemoryStore, RedisStore};
use serde_json::Value;

use crate::helpers::{
    DEMO_A_KEY, DEMO_B_KEY, RedisCli, RedisCluster, RedisServer, TestApp, metric_sum, metric_value,
    poll_until, spawn_app_with,
};

/// Fixed, so that both backends get byte-identical demo data.
pub const ANCHOR: f64 = 1_790_000_000.0;

pub fn demo() -> DemoSettings {
    let mut d = Settings::load(&[]).unwrap().store.demo;
    d.items = 1500;
    d.users = 300;
    d.anchor = Some(ANCHOR);
    d
}

#[actix_rt::test]
async fn the_load_command_runs_from_any_directory() {
    let redis = RedisServer::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = crate::helpers::binary_command(&[
        ("EAGLERANK__REDIS__URL", &redis.url()),
        ("EAGLERANK__STORE__DEMO__ANCHOR", &ANCHOR.to_string()),
    ])
    .current_dir(elsewhere.path())
    .args(["load", "--tenant", "demo-a"])
    .output()
    .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the binary loaded is what the library seeds (the binary's demo size).
    let store = redis.store();
    let items = store
        .items("demo-a", &["i0".into(), "i999".into()])
        .await
        .unwrap();
    assert!(items.iter().all(Option::is_some), "{items:?}");
    let lists = store
        .candidate_lists(
            "demo-a",
            &CandidateQuery {
                trending: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(lists.trending.len(), 5);
}

/// `load`, `load --replace` and `migrate` through the binary on a 3-master Redis Cluster: the
/// replacing load starts from an empty tenant (an item's statistics are the first load's, not
/// twice them), and the tenant ends marked moved.
#[actix_rt::test]
async fn the_load_and_migrate_commands_work_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let run = |args: &[&str]| {
        let out = crate::helpers::binary_command(&[
            ("EAGLERANK__REDIS__URL", &cluster.urls()),
            ("EAGLERANK__REDIS__CLUSTER", "true"),
            ("EAGLERANK__STORE__DEMO__ANCHOR", &ANCHOR.to_string()),
            ("EAGLERANK__STORE__DEMO__ITEMS", "300"),
            ("EAGLERANK__STORE__DEMO__USERS", "60"),
        ])
        .args(args)
        .output()
        .expect("the binary runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let store = cluster.store();
    let impressions = || async {
        let items = store.items("demo-a", &["i3".into()]).await.unwrap();
        let item = items[0].clone().expect("a loaded item");
        item.stats().impressions
    };
    run(&["load", "--tenant", "demo-a"]);
    let first = impressions().await;
    assert!(first > 0.0, "the demo's history counted");
    run(&["load", "--tenant", "demo-a", "--replace"]);
    assert_eq!(impressions().await, first, "replaced, not added up");
    assert_eq!(cluster.command(&["GET", "er:{demo-a}:layout"]).trim(), "2");
    run(&["migrate", "--tenant", "demo-a"]);
}

/// An item of the loaded demo catalog.
fn market_item() -> String {
    eaglerank::demo::Marketplace::generate(&demo(), "demo-a", ANCHOR).items[3]
        .item_id
        .to_string()
}

pub async fn load_demo(redis: &RedisServer) {
    redis
        .load_demo(&demo(), &["demo-a", "demo-b"], ANCHOR)
        .await;
}

/// Generous timeouts: a loaded CI machine must not make a healthy Redis look down.
async fn spawn_redis_app(redis: &RedisServer) -> TestApp {
    spawn_redis_app_with(redis, &[]).await
}

pub async fn spawn_redis_app_with(
    redis: &RedisServer,
    overrides: &[(&'static str, config::Value)],
) -> TestApp {
    let mut all = vec![
        ("redis.url", redis.url().into()),
        ("redis.ping_interval_ms", 100.into()),
        ("redis.command_timeout_ms", 2000.into()),
        ("server.request_deadline_ms", 10_000.into()),
    ];
    all.extend(overrides.iter().cloned());
    spawn_app_with(&all).await
}

/// Two replicas of the service on one Redis, both ready.
async fn two_replicas(
    redis: &RedisServer,
    overrides: &[(&'static str, config::Value)],
) -> (TestApp, TestApp) {
    let a = spawn_redis_app_with(redis, overrides).await;
    let b = spawn_redis_app_with(redis, overrides).await;
    for app in [&a, &b] {
        app.wait_ready(200).await;
    }
    (a, b)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_same_record(a: &ItemRecord, b: &ItemRecord) {
    assert_eq!(a.item, b.item);
    let (x, y) = (a.stats(), b.stats());
    for (u, v) in [
        (x.impressions, y.impressions),
        (x.clicks, y.clicks),
        (x.add_to_carts, y.add_to_carts),
        (x.purchases, y.purchases),
        (x.trending, y.trending),
    ] {
        assert!(close(u, v), "{a:?} vs {b:?}");
    }
    // Window counts are small integers: the Lua rotation must match WindowCounts::record.
    assert_eq!(x.windows, y.windows);
}

fn assert_same_profile(a: &UserProfile, b: &UserProfile) {
    assert_eq!(a.category_affinity, b.category_affinity);
    assert_eq!(a.brand_affinity, b.brand_affinity);
    assert_eq!(a.recent_items, b.recent_items);
    assert_eq!(a.interactions, b.interactions);
    assert_eq!(a.affinity_total, b.affinity_total);
    // Redis adds a chunk's sum at once (the embedded store each price): equal up to rounding.
    assert!(
        close(a.price_sum, b.price_sum),
        "{} vs {}",
        a.price_sum,
        b.price_sum
    );
    assert_eq!(a.price_count, b.price_count);
    // The Lua's item history (purchases, impressions since the last engagement) matches
    // `History::record`.
    assert_eq!(a.history, b.history);
}

#[actix_rt::test]
async fn every_store_operation_round_trips_like_the_embedded_store() {
    let redis = RedisServer::start();
    let r = redis.store();
    assert_round_trips(&r).await;
    // 3 item hashes, trending, new arrivals, 2 categories, a profile and an item history per
    // user, the set of event ids of the current dedup bucket, and the user index.
    assert_eq!(r.clear_tenant("t").await.unwrap(), 11 + 2);
    assert!(r.user_profile("t", "u1").await.unwrap().is_none());
}

/// On a 3-master Redis Cluster: the tenant's hash tag keeps each pipeline on one node.
#[actix_rt::test]
async fn every_store_operation_round_trips_on_a_redis_cluster_too() {
    let cluster = RedisCluster::start();
    let r = cluster.store();
    assert_round_trips(&r).await;
    // `load --replace`: the tenant's keys are on the one node of its slot, and all go.
    assert_eq!(r.clear_tenant("t").await.unwrap(), 11 + 2);
    assert_eq!(cluster.count_keys("er:{t}:*"), 0);
    assert!(r.user_profile("t", "u1").await.unwrap().is_none());
    // Whichever node holds the tenant: one tenant on each.
    for t in cluster.one_tenant_per_node() {
        cluster.command(&["SET", &format!("er:{{{t}}}:layout"), "2"]);
        cluster.command(&["HSET", &format!("er:{{{t}}}:user:u1"), "interactions", "1"]);
        assert_eq!(r.clear_tenant(&t).await.unwrap(), 2, "{t}");
    }
}

async fn assert_round_trips(r: &RedisStore) {
    let m = MemoryStore::new(["t".to_string()]);
    let item = |id: &str, category: &str, created_at| Item {
        item_id: id.into(),
        category: category.into(),
        brand: "acme".into(),
        price: 19.99,
        created_at,
        attributes: serde_json::from_str(r#"{"color":"red","sizes":[40,41]}"#).unwrap(),
        available: true,
        seller_id: None,
    };
    let event = |kind, user: &str, item: &str, at| Event {
        event_id: Some(format!("{user}-{item}-{at}").into()),
        kind,
        user_id: user.into(),
        item_id: item.into(),
        timestamp: ANCHOR + at,
    };
    let items = vec![
        item("a", "shoes", 10),
        item("b", "shoes", 30),
        item("c", "bags", 20),
    ];
    let events = [
        event(EventKind::Impression, "u1", "a", 0.0),
        event(EventKind::Click, "u1", "a", 1.0),
        event(EventKind::Purchase, "u1", "c", 2.0),
        event(EventKind::AddToCart, "u2", "b", 3.0),
        event(EventKind::Click, "u2", "nope", 4.0),
        // A replay of the click (same id): applied once.
        event(EventKind::Click, "u1", "a", 1.0),
        // Late events: one in each window's previous bucket or before, one too old to count
        // in the hour or day.
        event(EventKind::Click, "u2", "b", -3_700.0),
        event(EventKind::Purchase, "u2", "b", -2.5 * 86_400.0),
        Event {
            event_id: None,
            ..event(EventKind::Click, "u2", "c", 5.0)
        },
    ];
    // The next hour and beyond: the windows rotate. A replayed id among new ones: the new
    // ones are applied, once.
    let later = [
        event(EventKind::Impression, "u1", "a", 3_600.0),
        events[2].clone(),
        event(EventKind::Click, "u1", "a", 3.0 * 86_400.0),
    ];
    for s in [r as &dyn FeatureStore, &m] {
        s.ping().await.unwrap();
        s.upsert_items("t", items.clone()).await.unwrap();
        let outcome = s.apply_events("t", &events).await.unwrap();
        assert_eq!(outcome.unknown_items, [4], "unknown item skipped");
        assert_eq!(outcome.duplicates, [5], "replayed id skipped");
        let replay = s.apply_events("t", &events).await.unwrap();
        assert_eq!(replay.duplicates, [0, 1, 2, 3, 5, 6, 7], "{replay:?}");
        assert_eq!(replay.applied(events.len()), 1, "no id: applied again");
        let outcome = s.apply_events("t", &later).await.unwrap();
        assert_eq!(outcome.duplicates, [1], "{outcome:?}");
        assert_eq!(outcome.applied(later.len()), 2);
        // "a" moves to bags, keeping its statistics and its engagement.
        s.upsert_items("t", vec![item("a", "bags", 10)])
            .await
            .unwrap();
    }
    let query = CandidateQuery {
        trending: 10,
        categories: vec![
            ("bags".into(), 10),
            ("shoes".into(), 10),
            ("none".into(), 5),
        ],
        new_arrivals: 2,
    };
    let (lr, lm) = (
        r.candidate_lists("t", &query).await.unwrap(),
        m.candidate_lists("t", &query).await.unwrap(),
    );
    assert_eq!(lr, lm);
    assert_eq!(
        lm.categories[0].iter().map(|i| &**i).collect::<Vec<_>>(),
        ["c", "a"]
    );
    assert_eq!(
        lm.categories[1].iter().map(|i| &**i).collect::<Vec<_>>(),
        ["b"]
    );

    let ids = ["a".into(), "b".into(), "c".into(), "zz".into()];
    let (ir, im) = (
        r.items("t", &ids).await.unwrap(),
        m.items("t", &ids).await.unwrap(),
    );
    for (x, y) in ir.iter().zip(&im).take(3) {
        assert_same_record(x.as_ref().unwrap(), y.as_ref().unwrap());
    }
    assert!(ir[3].is_none() && im[3].is_none());
    assert_eq!(im[0].as_ref().unwrap().stats().clicks, 2.0);
    assert_eq!(im[2].as_ref().unwrap().stats().clicks, 2.0);
    assert_eq!(im[1].as_ref().unwrap().stats().clicks, 1.0);

    for user in ["u1", "u2"] {
        let (pr, pm) = (
            r.user_profile("t", user).await.unwrap(),
            m.user_profile("t", user).await.unwrap(),
        );
        assert_same_profile(&pr.unwrap(), &pm.unwrap());
    }
    assert!(r.user_profile("t", "nobody").await.unwrap().is_none());

    // Empty asks never turn into "the whole list".
    let empty = CandidateQuery::default();
    assert_eq!(
        r.candidate_lists("t", &empty).await.unwrap(),
        m.candidate_lists("t", &empty).await.unwrap()
    );
    assert!(r.items("t", &[]).await.unwrap().is_empty());
}

#[actix_rt::test]
async fn the_same_seed_data_gives_the_same_feeds_on_both_backends() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let memory = spawn_app_with(&[("store.demo.anchor", ANCHOR.into())]).await;
    let on_redis = spawn_redis_app(&redis).await;
    on_redis.wait_ready(200).await;
    for (tenant, key) in [("demo-a", DEMO_A_KEY), ("demo-b", DEMO_B_KEY)] {
        for user in ["u1", "u42", "u299", "someone-new"] {
            let query = format!("user_id={user}&limit=50");
            let a: Value = memory.feed(tenant, key, &query).await.json().await.unwrap();
            let b: Value = on_redis
                .feed(tenant, key, &query)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(b["degraded"], false);
            let (ia, ib) = (
                a["items"].as_array().unwrap(),
                b["items"].as_array().unwrap(),
            );
            assert_eq!(ia.len(), 50);
            let ids = |v: &[Value]| v.iter().map(|i| i["item_id"].clone()).collect::<Vec<_>>();
            assert_eq!(ids(ia), ids(ib), "{tenant}/{user}");
            for (x, y) in ia.iter().zip(ib) {
                let (sx, sy) = (x["score"].as_f64().unwrap(), y["score"].as_f64().unwrap());
                assert!((sx - sy).abs() < 1e-4, "{tenant}/{user}: {sx} vs {sy}");
                assert_eq!(x["sources"], y["sources"]);
            }
        }
    }
}

#[actix_rt::test]
async fn the_item_cache_counts_misses_then_hits() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let app = spawn_redis_app(&redis).await;
    let counter = |m: &str, cache: &str, result: &str| {
        metric_value(
            m,
            &format!(
                r#"eaglerank_feature_cache_requests_total{{cache="{cache}",result="{result}"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    let count = |m: &str, result: &str| counter(m, "item", result);
    // The watchdog's first fallback refresh reads items through the cache too.
    wait_for(&app, |m| metric_value(m, "eaglerank_redis_up") == Some(1.0)).await;
    let before = app.metrics().await;
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u5").await.status(),
        200
    );
    let first = app.metrics().await;
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u5").await.status(),
        200
    );
    let second = app.metrics().await;
    let candidates = metric_value(
        &first,
        r#"eaglerank_candidates_fetched_sum{tenant="demo-a"}"#,
    )
    .unwrap();
    let lookups = |m: &str| count(m, "hit") + count(m, "miss");
    // Every listed item (the candidates, and those the merge's cap left out) is looked up
    // once, to keep the lists as records.
    assert!(lookups(&first) - lookups(&before) >= candidates);
    assert!(
        count(&first, "miss") > count(&before, "miss"),
        "a new user's categories miss"
    );
    // The same feed again within list_ttl_ms: the lists are cached with their records, so
    // no item is looked up at all.
    assert_eq!(lookups(&second), lookups(&first));
    let lists = |m: &str, result: &str| counter(m, "list", result);
    assert!(lists(&first, "miss") > lists(&before, "miss"));
    assert!(lists(&second, "hit") > lists(&first, "hit"));
    assert_eq!(lists(&second, "miss"), lists(&first, "miss"));
    assert!(
        second.contains(
            r#"eaglerank_feature_store_request_seconds_count{backend="redis",op="items"}"#
        )
    );
}

async fn wait_for(app: &TestApp, ok: impl Fn(&str) -> bool) {
    for _ in 0..250 {
        if ok(&app.metrics().await) {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached: {}", app.metrics().await);
}

#[actix_rt::test]
async fn killing_redis_degrades_feeds_visibly_and_it_recovers_without_restart() {
    let mut redis = RedisServer::start();
    load_demo(&redis).await;
    let app = spawn_redis_app(&redis).await;
    app.wait_ready(200).await;
    let healthy: Value = app
        .feed("demo-a", DEMO_A_KEY, "user_id=u1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(healthy["degraded"], false);

    redis.kill();
    // Requests keep being answered, from the fallback, flagged.
    for i in 0..20 {
        let res = app
            .feed("demo-a", DEMO_A_KEY, &format!("user_id=u{i}&limit=10"))
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["degraded"], true, "{body}");
        assert!(["redis_down", "store_error"].contains(&body["degraded_reason"].as_str().unwrap()));
        assert_eq!(
            body["items"].as_array().unwrap().len(),
            10,
            "the fallback serves trending items"
        );
        for item in body["items"].as_array().unwrap() {
            assert_eq!(item["sources"], serde_json::json!(["trending"]));
        }
    }
    let body = app.wait_ready(503).await;
    assert_eq!(body["components"]["store"]["ok"], false);
    assert!(
        body["components"]["store"]["reason"]
            .as_str()
            .unwrap()
            .contains("redis")
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on Redis");
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "eaglerank_redis_up"), Some(0.0));
    let degraded = metric_value(
        &m,
        r#"eaglerank_feed_degraded_total{reason="redis_down",tenant="demo-a"}"#,
    )
    .unwrap_or(0.0)
        + metric_value(
            &m,
            r#"eaglerank_feed_degraded_total{reason="store_error",tenant="demo-a"}"#,
        )
        .unwrap_or(0.0);
    assert_eq!(degraded, 20.0);

    redis.restart();
    app.wait_ready(200).await;
    let recovered: Value = app
        .feed("demo-a", DEMO_A_KEY, "user_id=u1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recovered["degraded"], false);
    assert!(recovered.get("degraded_reason").is_none());
    assert_eq!(
        recovered["items"], healthy["items"],
        "same data, same feed, no restart"
    );
    assert_eq!(
        metric_value(&app.metrics().await, "eaglerank_redis_up"),
        Some(1.0)
    );
}

#[actix_rt::test]
async fn a_hanging_redis_never_holds_a_request_past_its_deadline() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    // A slow watchdog, so the request itself meets the hang; the command timeout (100 ms)
    // well inside the request's deadline, so the fallback has time to answer.
    let app = spawn_app_with(&[
        ("redis.url", redis.url().into()),
        ("redis.ping_interval_ms", 60_000.into()),
        ("redis.fallback_refresh_seconds", 60.into()),
        ("redis.command_timeout_ms", 100.into()),
        ("server.request_deadline_ms", 2_000.into()),
    ])
    .await;
    app.wait_ready(200).await;
    redis.pause();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for attempt in 0..3 {
        let res = client
            .get(app.url("/v1/tenants/demo-a/feed?user_id=u3"))
            .bearer_auth(DEMO_A_KEY)
            .send()
            .await
            .expect("answered while Redis hangs, not timed out by the client");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        // The first request meets the hang itself; its failed calls (the rules' refresh, the
        // user's profile) count toward the breaker, which may open for the later ones.
        let reason = body["degraded_reason"].as_str().unwrap_or_default();
        if attempt == 0 {
            assert_eq!(reason, "store_error", "{body}");
        } else {
            assert!(["store_error", "redis_down"].contains(&reason), "{body}");
        }
    }
    redis.resume();
}

#[actix_rt::test]
async fn redis_down_at_start_up_means_not_ready_but_alive() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let app = spawn_app_with(&[
        ("redis.url", url.into()),
        ("redis.ping_interval_ms", 100.into()),
    ])
    .await;
    let body = app.wait_ready(503).await;
    assert_eq!(body["components"]["store"]["backend"], "redis");
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = app.feed("demo-a", DEMO_A_KEY, "user_id=u1").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["degraded"], true);
    assert!(
        body["items"].as_array().unwrap().is_empty(),
        "nothing to fall back on yet"
    );
}

/// Deduplication lives in Redis, not in a replica: a batch replayed to another replica (a
/// Kafka rebalance, a client retrying against another pod) is applied once.
#[actix_rt::test]
async fn an_event_replayed_to_another_replica_is_applied_once() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let (a, b) = two_replicas(&redis, &[]).await;
    let item = market_item();
    let before = b.item_stats("demo-a", DEMO_A_KEY, &item).await;
    let events: Vec<Value> = (0..3)
        .map(|i| {
            serde_json::json!({"event_id": format!("r{i}"), "type": "click", "user_id": "u1",
                               "item_id": item, "timestamp": eaglerank::ingest::now_rfc3339()})
        })
        .collect();
    let events = Value::from(events);
    let first: Value = a.post_events(&events).await.json().await.unwrap();
    assert_eq!(first["accepted"], 3, "{first}");
    assert_eq!(first["duplicates"], 0, "{first}");
    let replay: Value = b.post_events(&events).await.json().await.unwrap();
    assert_eq!(replay["duplicates"], 3, "{replay}");
    let after = b.item_stats("demo-a", DEMO_A_KEY, &item).await;
    assert_eq!(
        after["all_time"]["clicks"].as_f64().unwrap()
            - before["all_time"]["clicks"].as_f64().unwrap(),
        3.0
    );
}

/// Each replica caches the catalog it needs for ingestion. A replica whose cache still has an
/// item's old category must not put the item back into that category's list.
#[actix_rt::test]
async fn a_stale_catalog_cache_never_puts_a_moved_item_back_in_its_old_category() {
    let redis = RedisServer::start();
    let (a, b) = (redis.store(), redis.store());
    let item = |category: &str| Item {
        item_id: "x".into(),
        category: category.into(),
        brand: "acme".into(),
        price: 10.0,
        created_at: 1,
        attributes: Default::default(),
        available: true,
        seller_id: None,
    };
    let click = |id: &str| Event {
        event_id: Some(id.into()),
        kind: EventKind::Click,
        user_id: "u".into(),
        item_id: "x".into(),
        timestamp: ANCHOR,
    };
    a.upsert_items("t", vec![item("shoes")]).await.unwrap();
    a.apply_events("t", &[click("c1")]).await.unwrap();
    // Another replica moves the item; a's cache still says "shoes".
    b.upsert_items("t", vec![item("bags")]).await.unwrap();
    a.apply_events("t", &[click("c2")]).await.unwrap();

    let query = CandidateQuery {
        categories: vec![("shoes".into(), 10), ("bags".into(), 10)],
        ..Default::default()
    };
    let lists = b.candidate_lists("t", &query).await.unwrap();
    assert!(lists.categories[0].is_empty(), "{lists:?}");
    assert_eq!(&*lists.categories[1][0], "x");
    let stats = b.items("t", &["x".into()]).await.unwrap();
    assert_eq!(stats[0].as_ref().unwrap().stats().clicks, 2.0);
}

/// With Redis, the served-feed log is shared: a click posted to another replica than the one
/// that served the feed is joined all the same.
#[actix_rt::test]
async fn a_click_joins_its_feed_whichever_replica_served_it() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let (a, b) = two_replicas(&redis, &[]).await;
    let res = a.feed("demo-a", DEMO_A_KEY, "user_id=u1&limit=10").await;
    assert_eq!(res.status(), 200);
    let feed: Value = res.json().await.unwrap();
    let click = |n: usize, rank: usize| {
        serde_json::json!({"event_id": format!("x{n}"), "type": "click", "user_id": "u1",
            "item_id": feed["items"][rank - 1]["item_id"], "request_id": feed["request_id"],
            "timestamp": eaglerank::ingest::now_rfc3339()})
    };
    // Two clicks on b, one more on a: only the first click of the feed counts for MRR.
    for (app, events) in [
        (&b, vec![click(1, 2), click(2, 1)]),
        (&a, vec![click(3, 3)]),
    ] {
        assert_eq!(app.post_events(&Value::from(events)).await.status(), 202);
    }
    let sum = |m: &str, name: &str, filter: &str| metric_sum(m, name, &[filter]);
    let clicks = |m: &str| sum(m, "eaglerank_ranking_interactions_total{", r#"k="20""#);
    // A click that reached b before a's batch was written is joined again after the lag
    // (`events.feed_log_flush_ms`), in a task of its own: waited for, as a user would.
    let (ma, mb) = poll_until(
        || async { (a.metrics().await, b.metrics().await) },
        |(ma, mb)| (clicks(mb), clicks(ma)) == (2.0, 1.0),
    )
    .await;
    assert_eq!(sum(&ma, "eaglerank_ranking_feeds_total{", "demo-a"), 1.0);
    assert_eq!((clicks(&mb), clicks(&ma)), (2.0, 1.0), "every click joined");
    let rr = |m: &str| sum(m, "eaglerank_ranking_reciprocal_rank_sum{", "demo-a");
    assert_eq!(rr(&mb) + rr(&ma), 0.5, "the first click (rank 2) only");
    assert_eq!(sum(&mb, "eaglerank_ranking_unjoined_total{", ""), 0.0);
}

/// Candidate lists are cached per replica for `cache.list_ttl_ms`: a burst of sales shows in
/// trending once a replica's lists are older than the TTL — the replica that took the events
/// too (events leave the lists cached: clearing them at every batch made every feed under
/// event traffic read them again), as the embedded store's index follows events.
#[actix_rt::test]
async fn a_burst_reaches_every_replicas_trending_after_the_list_ttl() {
    const TTL_MS: u64 = 5_000;
    let redis = RedisServer::start();
    load_demo(&redis).await;
    // Item records no older than the lists that bring them.
    let ttl = [
        ("cache.list_ttl_ms", TTL_MS.into()),
        ("cache.item_ttl_ms", 1.into()),
    ];
    let (a, b) = two_replicas(&redis, &ttl).await;
    let trending = |feed: &Value| -> Vec<String> {
        feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| {
                i["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "trending")
            })
            .map(|i| i["item_id"].as_str().unwrap().to_owned())
            .collect()
    };
    async fn feed(app: &TestApp) -> Value {
        let res = app
            .feed("demo-a", DEMO_A_KEY, "user_id=someone-new&limit=50")
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
    // Both replicas cache the lists as they are now.
    let warmed = std::time::Instant::now();
    let before = trending(&feed(&a).await);
    feed(&b).await;
    // The least trending item: in no replica's cached trending list.
    let everything = CandidateQuery {
        trending: 100_000,
        categories: Vec::new(),
        new_arrivals: 0,
    };
    let order = redis
        .store()
        .candidate_lists("demo-a", &everything)
        .await
        .unwrap()
        .trending;
    let quiet = order.last().unwrap().to_string();
    assert!(!before.contains(&quiet));
    // Clicks and purchases: trending moves, and the model (which weighs the click rate) ranks
    // the item into the feed.
    let burst: Vec<Value> = (0..60)
        .flat_map(|n| {
            ["click", "purchase"].map(|kind| {
                serde_json::json!({"event_id": format!("burst-{kind}-{n}"), "type": kind,
                                   "user_id": format!("buyer-{n}"), "item_id": quiet,
                                   "timestamp": eaglerank::ingest::now_rfc3339()})
            })
        })
        .collect();
    assert_eq!(b.post_events(&Value::from(burst)).await.status(), 202);

    let stale = [trending(&feed(&b).await), trending(&feed(&a).await)];
    if warmed.elapsed() < Duration::from_millis(TTL_MS) {
        assert!(
            !stale.iter().any(|t| t.contains(&quiet)),
            "within the TTL both replicas serve their cached lists"
        );
    }
    let ttl = Duration::from_millis(TTL_MS);
    actix_rt::time::sleep(ttl.saturating_sub(warmed.elapsed()) + Duration::from_millis(200)).await;
    for (replica, name) in [(&a, "the other replica"), (&b, "the writer")] {
        assert!(
            trending(&feed(replica).await).contains(&quiet),
            "{name}, after the TTL"
        );
    }
}

/// Calls the feed path made to the store (the watchdog's PINGs excluded).
fn feed_store_calls(metrics: &str) -> f64 {
    ["user_profile", "candidate_lists", "items"]
        .iter()
        .map(|op| {
            metric_sum(
                metrics,
                "eaglerank_feature_store_request_seconds_count",
                &[&format!(r#"op="{op}""#)],
            )
        })
        .sum()
}

#[actix_rt::test]
async fn a_hung_redis_opens_the_breaker_and_no_feed_waits_on_it_until_it_answers() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let app = spawn_app_with(&[
        ("redis.url", redis.url().into()),
        ("redis.ping_interval_ms", 500.into()),
        ("redis.command_timeout_ms", 300.into()),
        // No probe by a request during the test: only the watchdog closes it.
        ("redis.breaker_open_ms", 600_000.into()),
        ("server.request_deadline_ms", 5_000.into()),
    ])
    .await;
    app.wait_ready(200).await;
    let healthy: Value = app
        .feed("demo-a", DEMO_A_KEY, "user_id=u3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(healthy["degraded"], false);

    redis.pause();
    // Every feed is answered, from the fallback; the first ones meet the hang and open the
    // breaker (or the watchdog's failed PING does).
    for _ in 0..10 {
        let res = app.feed("demo-a", DEMO_A_KEY, "user_id=u3").await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["degraded"], true, "{body}");
    }
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "eaglerank_redis_circuit_open"), Some(1.0));
    assert!(metric_value(&m, "eaglerank_redis_circuit_opened_total") >= Some(1.0));
    // Open: no feed touches Redis any more.
    let calls = feed_store_calls(&m);
    for _ in 0..20 {
        let res = app.feed("demo-a", DEMO_A_KEY, "user_id=u3").await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["degraded_reason"], "redis_down", "{body}");
    }
    assert_eq!(feed_store_calls(&app.metrics().await), calls);
    // Readiness follows the watchdog's PING.
    let body = app.wait_ready(503).await;
    assert_eq!(body["components"]["store"]["ok"], false, "{body}");
    // Writes fail at once with the one error shape, not after a timeout per call.
    let res = app
        .post_events(&serde_json::json!([{"event_id": "hung-1", "type": "click",
            "user_id": "u3", "item_id": market_item(),
            "timestamp": eaglerank::ingest::now_rfc3339()}]))
        .await;
    assert_eq!(res.status(), 503);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unavailable");

    redis.resume();
    // The watchdog's next PING closes the breaker: whole feeds again, no restart.
    app.wait_ready(200).await;
    let recovered: Value = app
        .feed("demo-a", DEMO_A_KEY, "user_id=u3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recovered["degraded"], false);
    assert_eq!(recovered["items"], healthy["items"]);
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "eaglerank_redis_circuit_open"), Some(0.0));
}

#[actix_rt::test]
async fn the_redis_pools_state_is_exported_by_the_watchdog() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let app = spawn_redis_app(&redis).await;
    app.wait_ready(200).await;
    for u in 0..5 {
        let res = app
            .feed("demo-a", DEMO_A_KEY, &format!("user_id=u{u}"))
            .await;
        assert_eq!(res.status(), 200);
    }
    // The watchdog samples every redis.ping_interval_ms (100 ms here).
    let mut m = String::new();
    for _ in 0..50 {
        m = app.metrics().await;
        let open = crate::helpers::metric_sum(&m, "eaglerank_redis_pool_connections{", &[]);
        if open >= 1.0 {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let idle =
        crate::helpers::metric_value(&m, r#"eaglerank_redis_pool_connections{state="idle"}"#);
    let in_use =
        crate::helpers::metric_value(&m, r#"eaglerank_redis_pool_connections{state="in_use"}"#);
    assert!(idle.unwrap() + in_use.unwrap() >= 1.0, "{m}");
    // Nobody waits for a connection at this load: a sample may catch one acquisition in
    // flight (the watchdog's own PING, a rules refresh), so the idle figure is read until it
    // settles — it must reach 0.
    let mut waiters = None;
    for _ in 0..50 {
        waiters =
            crate::helpers::metric_value(&app.metrics().await, "eaglerank_redis_pool_waiters");
        if waiters == Some(0.0) {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(waiters, Some(0.0));
}

/// The ids of the connections open on `redis` but `redis-cli`'s own.
fn client_ids(redis: &RedisServer) -> Vec<u64> {
    redis
        .command(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

#[actix_rt::test]
async fn a_threads_concurrent_calls_share_one_connection() {
    let redis = RedisServer::start();
    let store = redis.store_with_timeout(Duration::from_secs(5));
    // 64 calls in flight at once on this thread: one connection carries them all (a pool
    // opened up to redis.pool_size = 16 for them).
    let users: Vec<String> = (0..64).map(|u| format!("u{u}")).collect();
    let calls = users.iter().map(|u| store.user_profile("t", u));
    for profile in futures::future::join_all(calls).await {
        assert!(profile.unwrap().is_none());
    }
    assert_eq!(
        client_ids(&redis).len(),
        1,
        "{}",
        redis.command(&["CLIENT", "LIST"])
    );
    let status = store.pool_status();
    assert_eq!((status.connections, status.idle, status.waiting), (1, 1, 0));
}

#[actix_rt::test]
async fn a_call_that_timed_out_replaces_the_connection_and_an_error_reply_does_not() {
    let redis = RedisServer::start();
    let store = redis.store_with_timeout(Duration::from_millis(300));
    store.user_profile("t", "u1").await.unwrap();
    let first = client_ids(&redis);
    assert_eq!(first.len(), 1);

    // Redis's own error (a profile key of the wrong type) is the caller's: same connection.
    redis.command(&["RPUSH", &eaglerank::store::keys::profile("t", "u2"), "x"]);
    assert!(store.user_profile("t", "u2").await.is_err());
    store.user_profile("t", "u1").await.unwrap();
    assert_eq!(client_ids(&redis), first);

    // A hung server: the call times out and its connection is forgotten, so that a server
    // that never answers again (a failover's old primary) is not waited on forever.
    redis.pause();
    assert!(store.user_profile("t", "u1").await.is_err());
    redis.resume();
    store.user_profile("t", "u1").await.unwrap();
    // The old connection closes once its last call is done; the new one serves.
    let mut now = Vec::new();
    for _ in 0..50 {
        now = client_ids(&redis);
        if now.len() == 1 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        now[0] > first[0],
        "a new connection: {now:?} after {first:?}"
    );
}

/// An item of category `c` and brand `b` at price 1: for tests about users' histories.
fn plain_item(id: &str) -> Item {
    Item {
        item_id: id.into(),
        category: "c".into(),
        brand: "b".into(),
        price: 1.0,
        created_at: 0,
        attributes: Default::default(),
        available: true,
        seller_id: None,
    }
}

/// A user's item history in Redis is bounded: past twice the embedded store's bound, the items
/// seen longest ago go, down to that bound; the newest stay.
#[actix_rt::test]
async fn a_users_item_history_in_redis_stays_bounded() {
    use eaglerank::domain::HISTORY_ITEMS;
    let redis = RedisServer::start();
    let r = redis.store();
    let n = 2 * HISTORY_ITEMS + 1;
    let items: Vec<Item> = (0..n).map(|i| plain_item(&format!("h{i}"))).collect();
    r.upsert_items("t", items).await.unwrap();
    let events: Vec<Event> = (0..n)
        .map(|i| Event {
            event_id: None,
            kind: EventKind::Impression,
            user_id: "u1".into(),
            item_id: format!("h{i}").into(),
            timestamp: ANCHOR + i as f64,
        })
        .collect();
    for chunk in events.chunks(300) {
        r.apply_events("t", chunk).await.unwrap();
    }
    let profile = r.user_profile("t", "u1").await.unwrap().expect("a profile");
    assert_eq!(profile.history.seen().len(), HISTORY_ITEMS);
    let seen = |id: &str| profile.impressions_since(id, 0);
    assert_eq!(seen(&format!("h{}", n - 1)), 1);
    assert_eq!(seen("h0"), 0);
}

/// A user acting across a whole catalog: past `AFFINITY_NAMES` category and brand names the
/// profile tracks no new one, alike on Redis (the event script) and the embedded store — the
/// same names kept, in batches that split anywhere, a kept name still adding up.
#[actix_rt::test]
async fn a_users_affinity_names_stay_bounded_alike_on_both_backends() {
    use eaglerank::domain::AFFINITY_NAMES;
    let redis = RedisServer::start();
    let r = redis.store();
    let m = MemoryStore::new(["t".to_string()]);
    // Each item its own category and brand: twice the bound's names, and some more.
    let n = AFFINITY_NAMES + 40;
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            category: format!("cat{i}"),
            brand: format!("brand{i}"),
            ..plain_item(&format!("a{i}"))
        })
        .collect();
    let click = |i: usize, at: usize| Event {
        event_id: None,
        kind: EventKind::Click,
        user_id: "u1".into(),
        item_id: format!("a{i}").into(),
        timestamp: ANCHOR + at as f64,
    };
    // In order, then the first item again (kept: it adds up) and the last (never kept).
    let mut events: Vec<Event> = (0..n).map(|i| click(i, i)).collect();
    events.extend([click(0, n), click(n - 1, n + 1)]);
    for s in [&r as &dyn FeatureStore, &m] {
        s.upsert_items("t", items.clone()).await.unwrap();
        // Batches that straddle the point where the bound fills (event 128).
        for batch in events.chunks(57) {
            s.apply_events("t", batch).await.unwrap();
        }
    }
    let (pr, pm) = (
        r.user_profile("t", "u1").await.unwrap().unwrap(),
        m.user_profile("t", "u1").await.unwrap().unwrap(),
    );
    assert_same_profile(&pr, &pm);
    assert_eq!(
        pr.category_affinity.len() + pr.brand_affinity.len(),
        AFFINITY_NAMES
    );
    let kept = AFFINITY_NAMES / 2;
    let click = EventKind::Click.affinity_weight();
    assert_eq!(pr.category_affinity.get("cat0"), Some(2.0 * click));
    assert!(
        pr.brand_affinity
            .get(&*format!("brand{}", kept - 1))
            .is_some()
    );
    assert!(pr.category_affinity.get(&*format!("cat{kept}")).is_none());
    assert!(pr.brand_affinity.get(&*format!("brand{}", n - 1)).is_none());
    // Every click counts in the total the shares divide by.
    assert_eq!(pr.affinity_total, events.len() as f32 * click);
}

/// The event script groups a chunk's changes per key (a user's history read and written once,
/// a zset's increments in one `ZMSCORE` + `ZADD XX`): random chunks of interleaved users —
/// runs of impressions past `HISTORY_IMPRESSIONS` on one item, clicks and purchases between
/// them, gaps past the horizon, late events — leave every item, list and profile as the
/// embedded store's event-by-event application does.
#[actix_rt::test]
async fn random_chunks_grouped_per_key_match_the_embedded_store_event_by_event() {
    use eaglerank::domain::HISTORY_IMPRESSIONS;
    use rand::{Rng, SeedableRng};
    let redis = RedisServer::start();
    let r = redis.store();
    let m = MemoryStore::new(["t".to_string()]);
    let categories = ["shoes", "bags", "hats"];
    let items: Vec<Item> = (0..24)
        .map(|i| Item {
            category: categories[i % 3].into(),
            ..plain_item(&format!("g{i}"))
        })
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    let mut at = ANCHOR;
    let events: Vec<Event> = (0..1_500)
        .map(|n| {
            // Mostly seconds apart; now and then more than the 168 h horizon.
            at += if rng.random_bool(0.01) {
                8.0 * 86_400.0
            } else {
                rng.random_range(0.0..30.0)
            };
            // Some arrive late (up to two hours: into the windows' previous buckets, and out
            // of order among an item's impressions).
            let late = if rng.random_bool(0.1) {
                rng.random_range(0.0..7_200.0)
            } else {
                0.0
            };
            let kind = match rng.random_range(0..100) {
                0..80 => EventKind::Impression,
                80..92 => EventKind::Click,
                92..97 => EventKind::AddToCart,
                _ => EventKind::Purchase,
            };
            Event {
                event_id: Some(format!("e{n}").into()),
                kind,
                user_id: format!("u{}", rng.random_range(0..4)),
                // Few items, so that one chunk touches an item many times.
                item_id: format!("g{}", rng.random_range(0..items.len())).into(),
                timestamp: at - late,
            }
        })
        .collect();
    for s in [&r as &dyn FeatureStore, &m] {
        s.upsert_items("t", items.clone()).await.unwrap();
    }
    let mut rest = &events[..];
    while !rest.is_empty() {
        // Chunks of one event to a full one: a chunk of a few late events has older window
        // buckets than the item's stored ones.
        let size = if rng.random_bool(0.5) {
            rng.random_range(1..=4)
        } else {
            rng.random_range(5..=250)
        };
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        for s in [&r as &dyn FeatureStore, &m] {
            let outcome = s.apply_events("t", chunk).await.unwrap();
            assert_eq!(outcome.applied(chunk.len()), chunk.len());
        }
        rest = tail;
    }
    // One item's impressions past `HISTORY_IMPRESSIONS`, the last to arrive the oldest: it
    // is the one that goes (times are kept in order, not in arrival order).
    let impression = |n: usize, t: f64| Event {
        event_id: Some(format!("late{n}").into()),
        kind: EventKind::Impression,
        user_id: "u9".into(),
        item_id: "g0".into(),
        timestamp: t,
    };
    let mut run: Vec<Event> = (0..HISTORY_IMPRESSIONS)
        .map(|n| impression(n, at + n as f64))
        .collect();
    run.push(impression(HISTORY_IMPRESSIONS, at - 60.0));
    for chunk in [&run[..9], &run[9..]] {
        for s in [&r as &dyn FeatureStore, &m] {
            s.apply_events("t", chunk).await.unwrap();
        }
    }
    let ids: Vec<_> = items.iter().map(|i| i.item_id.clone()).collect();
    let (ir, im) = (
        r.items("t", &ids).await.unwrap(),
        m.items("t", &ids).await.unwrap(),
    );
    for (x, y) in ir.iter().zip(&im) {
        assert_same_record(x.as_ref().unwrap(), y.as_ref().unwrap());
    }
    let query = CandidateQuery {
        trending: 24,
        categories: categories.iter().map(|c| ((*c).into(), 8)).collect(),
        new_arrivals: 0,
    };
    let (lr, lm) = (
        r.candidate_lists("t", &query).await.unwrap(),
        m.candidate_lists("t", &query).await.unwrap(),
    );
    assert_eq!(lr, lm);
    assert_eq!(lm.trending.len(), 24, "every item trends: {lm:?}");
    for user in ["u0", "u1", "u2", "u3", "u9"] {
        let (pr, pm) = (
            r.user_profile("t", user).await.unwrap().unwrap(),
            m.user_profile("t", user).await.unwrap().unwrap(),
        );
        assert_same_profile(&pr, &pm);
        assert!(!pm.history.seen().is_empty(), "{user}: {pm:?}");
    }
    let late = m.user_profile("t", "u9").await.unwrap().unwrap();
    assert_eq!(late.impressions_since("g0", 0), HISTORY_IMPRESSIONS);
    assert_eq!(late.impressions_since("g0", at as u32), HISTORY_IMPRESSIONS);
}

/// Items whose impressions are all more than the horizon (168 h) behind the user's newest are
/// swept from the Redis hash each time it reaches a multiple of 32 items, purchases stay, and
/// the history read back is the embedded store's.
#[actix_rt::test]
async fn stale_items_are_swept_from_a_users_history_in_redis() {
    let redis = RedisServer::start();
    let r = redis.store();
    let m = MemoryStore::new(["t".to_string()]);
    let items: Vec<Item> = (0..80).map(|i| plain_item(&format!("s{i}"))).collect();
    r.upsert_items("t", items.clone()).await.unwrap();
    m.upsert_items("t", items).await.unwrap();
    let event = |kind, i: usize, at: f64| Event {
        event_id: None,
        kind,
        user_id: "u1".into(),
        item_id: format!("s{i}").into(),
        timestamp: at,
    };
    let week = 8.0 * 86_400.0;
    let mut events: Vec<Event> = (0..40)
        .map(|i| event(EventKind::Impression, i, ANCHOR + i as f64))
        .collect();
    events.push(event(EventKind::Purchase, 0, ANCHOR + 50.0));
    events.extend((40..80).map(|i| event(EventKind::Impression, i, ANCHOR + week + i as f64)));
    for chunk in events.chunks(25) {
        r.apply_events("t", chunk).await.unwrap();
        m.apply_events("t", chunk).await.unwrap();
    }
    let packed = redis.command(&["GET", "er:{t}:history:u1"]);
    let held = packed.trim().split(';').count();
    assert_eq!(held, 41, "the 40 items of the last week and the purchase");
    let (a, b) = (
        r.user_profile("t", "u1").await.unwrap().unwrap(),
        m.user_profile("t", "u1").await.unwrap().unwrap(),
    );
    assert_eq!(a.history, b.history);
    assert_eq!(a.history.seen().len(), 40);
    assert!(a.purchased("s0"));
}

/// A history kept as a hash (the layout before it was one string) is still read, and the
/// user's next event moves it into the string and deletes the hash.
#[actix_rt::test]
async fn a_history_in_the_old_hash_layout_is_read_and_moved_over() {
    let redis = RedisServer::start();
    let r = redis.store();
    let items: Vec<Item> = ["g1", "g2", "g3"].map(plain_item).into();
    r.upsert_items("t", items).await.unwrap();
    let (t1, t2) = (ANCHOR as u32 + 10, ANCHOR as u32 + 20);
    redis.command(&[
        "HSET",
        "er:{t}:hist:u7",
        "g1",
        "p",
        "g2",
        &format!("{t1},{t2}"),
    ]);
    let before = r.user_profile("t", "u7").await.unwrap().expect("a profile");
    assert!(before.purchased("g1"));
    assert_eq!(before.impressions_since("g2", 0), 2);

    let impression = Event {
        event_id: None,
        kind: EventKind::Impression,
        user_id: "u7".into(),
        item_id: "g3".into(),
        timestamp: ANCHOR + 30.0,
    };
    r.apply_events("t", &[impression]).await.unwrap();
    assert_eq!(redis.command(&["EXISTS", "er:{t}:hist:u7"]).trim(), "0");
    let after = r.user_profile("t", "u7").await.unwrap().unwrap();
    assert!(after.purchased("g1"));
    assert_eq!(after.impressions_since("g2", 0), 2);
    assert_eq!(after.impressions_since("g3", 0), 1);
    assert_eq!(
        redis.command(&["GET", "er:{t}:history:u7"]).trim(),
        format!("g1 p;g2 {t1},{t2};g3 {}", t2 + 10)
    );
}

/// A profile kept as a hash and a list (the layout before the profile string) is read as it
/// was, and the user's next engagement moves it into the string and deletes the old keys.
/// Names of any character (the string holds them by length) survive the script's round trips.
#[actix_rt::test]
async fn a_profile_in_the_old_hash_and_list_layout_is_read_and_moved_over() {
    let redis = RedisServer::start();
    let r = redis.store();
    let odd = "home; garden\nand: more é";
    let items = vec![
        plain_item("k1"),
        Item {
            category: odd.into(),
            brand: "b;2".into(),
            price: 10.0,
            ..plain_item("k2")
        },
    ];
    r.upsert_items("t", items).await.unwrap();
    redis.command(&[
        "HSET",
        "er:{t}:user:u7",
        "interactions",
        "2",
        "price_count",
        "2",
        "affinity_total",
        "4.5",
        "price_sum",
        "3.25",
        "c:c",
        "4.5",
        "b:b",
        "4.5",
        "b:old brand;50%",
        "1",
    ]);
    redis.command(&["RPUSH", "er:{t}:recent:u7", "k1", "k0"]);
    let before = r.user_profile("t", "u7").await.unwrap().expect("a profile");
    assert_eq!((before.interactions, before.price_sum), (2.0, 3.25));
    assert_eq!(before.category_affinity.get("c"), Some(4.5));
    assert_eq!(before.recent_items, ["k1", "k0"].map(ItemId::from));

    let click = |item: &str, at: f64| Event {
        event_id: None,
        kind: EventKind::Click,
        user_id: "u7".into(),
        item_id: item.into(),
        timestamp: ANCHOR + at,
    };
    r.apply_events("t", &[click("k2", 1.0)]).await.unwrap();
    for old in ["er:{t}:user:u7", "er:{t}:recent:u7"] {
        assert_eq!(redis.command(&["EXISTS", old]).trim(), "0", "{old}");
    }
    // Twice more through the string: the odd names are parsed back by the script.
    r.apply_events("t", &[click("k2", 2.0)]).await.unwrap();
    r.apply_events("t", &[click("k1", 3.0)]).await.unwrap();
    let w = EventKind::Click.affinity_weight();
    let after = r.user_profile("t", "u7").await.unwrap().unwrap();
    assert_eq!((after.interactions, after.price_count), (5.0, 5.0));
    assert_eq!(after.price_sum, 3.25 + 10.0 + 10.0 + 1.0);
    assert_eq!(after.affinity_total, 4.5 + 3.0 * w);
    assert_eq!(after.category_affinity.get("c"), Some(4.5 + w));
    assert_eq!(after.category_affinity.get(odd), Some(2.0 * w));
    assert_eq!(after.brand_affinity.get("b;2"), Some(2.0 * w));
    assert_eq!(after.brand_affinity.get("old brand;50%"), Some(1.0));
    assert_eq!(
        after.category_affinity.len() + after.brand_affinity.len(),
        5
    );
    assert_eq!(after.recent_items, ["k1", "k2", "k0"].map(ItemId::from));
    assert!(
        redis
            .command(&["GET", "er:{t}:profile:u7"])
            .starts_with(&format!("5 5 {} 24.25 3 5\nk1 k2 k0\n;", 4.5 + 3.0 * w)),
    );
}

/// The served-feed log in Redis, as `INFO memory` counts it: 20 000 feeds of 20 items from a
/// 5 000-item catalog (the demo's shape), half of them in an experiment arm.
#[actix_rt::test]
async fn a_served_feed_costs_redis_at_most_250_bytes_and_is_found_again() {
    use eaglerank::store::{FeedLog, ServedFeed};
    let redis = RedisServer::start();
    let log = redis.store().with_feed_window(Duration::from_secs(1800));
    let feed = |n: usize| ServedFeed {
        model: "default".into(),
        version: "2026.12.03-ad0a177d3133".into(),
        items: (0..20)
            .map(|i| format!("i{}", (n * 7 + i * 13) % 5_000).into())
            .collect(),
        arm: n.is_multiple_of(2).then(|| ("exp".into(), "b".into())),
    };
    let n = 20_000;
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let before = redis.used_memory();
    for (i, id) in ids.iter().enumerate() {
        log.record("demo-a", id, feed(i), Duration::from_secs(1800))
            .await
            .unwrap();
    }
    let per_feed = (redis.used_memory() - before) / n as u64;
    println!("{per_feed} bytes per feed in Redis");
    assert!(per_feed <= 250, "{per_feed} bytes per feed");

    let found = log
        .lookup(
            "demo-a",
            &[&ids[0], &ids[n - 1], "not-logged", "free-form-id"],
        )
        .await
        .unwrap();
    assert_eq!(found[0], Some(feed(0)));
    assert_eq!(found[1], Some(feed(n - 1)));
    assert_eq!(found[2], None);
    // Any request id, not only UUIDs; and another tenant does not see the feeds.
    log.record("demo-a", "free-form-id", feed(3), Duration::from_secs(1800))
        .await
        .unwrap();
    assert_eq!(
        log.lookup("demo-a", &["free-form-id"]).await.unwrap(),
        [Some(feed(3))]
    );
    assert_eq!(log.lookup("demo-b", &[&ids[0]]).await.unwrap(), [None]);
}

/// A tenant past its `feed_log_entries` budget in Redis loses its own oldest buckets of feeds
/// (what the usage reporter does each round), never another tenant's.
#[actix_rt::test]
async fn trimming_the_redis_feed_log_drops_a_tenant_s_oldest_feeds_only() {
    use eaglerank::store::{FeedLog, ServedFeed};
    let redis = RedisServer::start();
    // A 30 s window: 1 s buckets.
    let window = Duration::from_secs(30);
    let log = redis.store().with_feed_window(window);
    let feed = ServedFeed {
        model: "m".into(),
        version: "v".into(),
        items: vec!["i1".into(), "i2".into()],
        arm: None,
    };
    for round in 0..3 {
        for n in 0..10 {
            for tenant in ["a", "b"] {
                log.record(tenant, &format!("{round}-{n}"), feed.clone(), window)
                    .await
                    .unwrap();
            }
        }
        actix_rt::time::sleep(Duration::from_millis(1_100)).await;
    }
    let entries = |usage: Option<eaglerank::store::Usage>| usage.unwrap().entries;
    assert_eq!(entries(log.held("a").await.unwrap()), 30);
    assert!(log.held("a").await.unwrap().unwrap().bytes > 0);
    // Whole buckets go, oldest first, until 15 or fewer remain (20 with the rounds each in a
    // bucket of its own; a busy machine may split a round over two).
    let evicted = log.trim("a", 15).await.unwrap();
    let held = entries(log.held("a").await.unwrap());
    assert!((1..=15).contains(&held), "{held}");
    assert_eq!(evicted + held, 30);
    assert_eq!(entries(log.held("b").await.unwrap()), 30);
    let found = log.lookup("a", &["0-0", "2-9"]).await.unwrap();
    assert_eq!(found, [None, Some(feed.clone())]);
    assert_eq!(log.lookup("b", &["0-0"]).await.unwrap(), [Some(feed)]);
    assert_eq!(log.trim("a", 15).await.unwrap(), 0, "within the budget");
}

/// `eaglerank migrate` (and `load`): every user's old keys moved into the two strings, the
/// same profiles read before and after, the tenant marked; from then on its feeds read the
/// strings alone, on this replica and on one that only finds the mark.
#[actix_rt::test]
async fn moving_the_old_layout_keeps_every_profile_and_ends_the_old_keys_reads() {
    assert_old_layout_moves(&RedisServer::start(), "t", "s").await;
}

/// The same on a 3-master cluster: the SCANs that find the old keys go to the node of the
/// tenant's slot (sent anywhere else, they find none of them). One tenant on each node, so a
/// store that asked one node, or any node, for them all would miss some.
#[actix_rt::test]
async fn moving_the_old_layout_works_on_a_redis_cluster_too() {
    let cluster = RedisCluster::start();
    let tenants = cluster.one_tenant_per_node();
    for t in &tenants {
        assert_old_layout_moves(&cluster, t, &format!("{t}-not-moved")).await;
    }
}

/// Tenant `t`'s old keys moved; tenant `other`'s, not moved, still read.
async fn assert_old_layout_moves(redis: &impl RedisCli, t: &str, other: &str) {
    let r = redis.store();
    // u1: a profile hash and its recent list; u2: a history hash alone; u3: all three.
    let (t1, t2) = (ANCHOR as u32 + 10, ANCHOR as u32 + 20);
    for user in ["u1", "u3"] {
        redis.command(&[
            "HSET",
            &format!("er:{{{t}}}:user:{user}"),
            "interactions",
            "2",
            "price_count",
            "1",
            "affinity_total",
            "4.5",
            "price_sum",
            "3.25",
            "c:shoes; red",
            "4.5",
            "b:acme",
            "1",
        ]);
        redis.command(&["RPUSH", &format!("er:{{{t}}}:recent:{user}"), "k1", "k0"]);
    }
    for user in ["u2", "u3"] {
        redis.command(&[
            "HSET",
            &format!("er:{{{t}}}:hist:{user}"),
            "g1",
            "p",
            "g2",
            &format!("{t1},{t2}"),
        ]);
    }
    let mut before = Vec::new();
    for user in ["u1", "u2", "u3"] {
        before.push(r.user_profile(t, user).await.unwrap().expect("a profile"));
    }
    assert_eq!(before[0].recent_items, ["k1", "k0"].map(ItemId::from));
    assert!(before[1].purchased("g1"));

    assert_eq!(r.move_old_layout(t).await.unwrap(), 3);
    for kind in ["user", "recent", "hist"] {
        let pattern = format!("er:{{{t}}}:{kind}:*");
        assert_eq!(redis.count_keys(&pattern), 0, "{pattern}");
    }
    assert_eq!(
        redis
            .command(&["GET", &format!("er:{{{t}}}:layout")])
            .trim(),
        "2"
    );
    let replica = redis.store();
    for (user, was) in ["u1", "u2", "u3"].iter().zip(&before) {
        for store in [&r, &replica] {
            let now = store
                .user_profile(t, user)
                .await
                .unwrap()
                .expect("a profile");
            assert_same_profile(&now, was);
        }
    }
    // An old key written now is no longer read: not by this replica, which moved the tenant,
    // nor by the other, which found the mark on its first read.
    redis.command(&["HSET", &format!("er:{{{t}}}:user:u9"), "interactions", "1"]);
    redis.command(&["HSET", &format!("er:{{{t}}}:hist:u9"), "g1", "p"]);
    for store in [&r, &replica] {
        assert!(store.user_profile(t, "u9").await.unwrap().is_none());
    }
    // A tenant not moved still reads them.
    redis.command(&[
        "HSET",
        &format!("er:{{{other}}}:user:u9"),
        "interactions",
        "1",
    ]);
    assert!(replica.user_profile(other, "u9").await.unwrap().is_some());
    // Moving again finds nothing to move (the stray keys of a moved tenant are dropped).
    assert_eq!(r.move_old_layout(t).await.unwrap(), 1);
    assert_eq!(
        redis.count_keys(&format!("er:{{{t}}}:user:*"))
            + redis.count_keys(&format!("er:{{{t}}}:hist:*")),
        0
    );
}

/// `events.feed_log_flush_ms`: feeds are queued and written a batch per interval, one `HSET`
/// and one `EXPIRE` per tenant whatever the number of feeds; until then this replica finds them
/// in its queue. A batch that cannot be written is counted as unjoined per feed, and `record`
/// never waits for Redis (a hung one included).
#[actix_rt::test]
async fn served_feeds_are_written_a_batch_per_interval_and_read_here_before() {
    use eaglerank::store::{BatchedFeedLog, FeedLog, ServedFeed};
    use std::sync::Arc;
    let redis = RedisServer::start();
    let window = Duration::from_secs(1800);
    let metrics = Arc::new(eaglerank::telemetry::Metrics::new());
    // Long enough that every check before the flush runs well inside it.
    let every = Duration::from_millis(1000);
    let store: Arc<dyn FeedLog> = Arc::new(
        redis
            .store_with_timeout(Duration::from_millis(200))
            .with_feed_window(window),
    );
    let log = BatchedFeedLog::new(store.clone(), every, metrics.clone());
    let feed = |n: usize| ServedFeed {
        model: "default".into(),
        version: "v1".into(),
        items: vec![format!("i{n}").into(), format!("j{n}").into()],
        arm: (n == 3).then(|| ("exp".into(), "b".into())),
    };
    let ids: Vec<String> = (0..15).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let tenant = |n: usize| if n < 10 { "a" } else { "b" };
    let (hset, expire) = (redis.calls("hset"), redis.calls("expire"));
    let started = std::time::Instant::now();
    for (n, id) in ids.iter().enumerate() {
        log.record(tenant(n), id, feed(n), window).await.unwrap();
    }
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let here = log.lookup("a", &all[..10]).await.unwrap();
    let in_redis = store.lookup("a", &all[..10]).await.unwrap();
    assert!(started.elapsed() < every, "the checks ran before the flush");
    assert_eq!(here, (0..10).map(|n| Some(feed(n))).collect::<Vec<_>>());
    assert_eq!(
        in_redis,
        vec![None; 10],
        "nothing written before the interval"
    );
    assert_eq!(log.lookup("a", &[&ids[12]]).await.unwrap(), [None], "b's");

    redis.wait_for_feeds("a", 10).await;
    redis.wait_for_feeds("b", 5).await;
    assert_eq!(
        (redis.calls("hset") - hset, redis.calls("expire") - expire),
        (2, 2),
        "one HSET and one EXPIRE per tenant"
    );
    let stored = store.lookup("b", &all[10..]).await.unwrap();
    assert_eq!(stored, (10..15).map(|n| Some(feed(n))).collect::<Vec<_>>());
    // Found in Redis once written, through the batched log too.
    assert_eq!(log.lookup("a", &[&ids[3]]).await.unwrap(), [Some(feed(3))]);

    // Flushed (a stopping replica's last feeds): in Redis at once, in one more HSET.
    let last: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let hset = redis.calls("hset");
    let flushed = std::time::Instant::now();
    for id in &last {
        log.record("a", id, feed(7), window).await.unwrap();
    }
    log.flush().await;
    let stored = store.lookup("a", &[&last[0], &last[1]]).await.unwrap();
    assert!(
        flushed.elapsed() < every,
        "written by the flush, not the interval"
    );
    assert_eq!(stored, [Some(feed(7)), Some(feed(7))]);
    assert_eq!(redis.calls("hset") - hset, 1);

    // A hung Redis: record returns at once, and the batch's three feeds are counted lost.
    redis.pause();
    let unjoined = || {
        metrics
            .ml
            .ranking_unjoined_total
            .with_label_values(&["feed_log_unavailable"])
            .get()
    };
    let paused = std::time::Instant::now();
    for n in 0..3 {
        log.record("a", &uuid::Uuid::new_v4().to_string(), feed(n), window)
            .await
            .unwrap();
    }
    assert!(paused.elapsed() < Duration::from_millis(200), "never waits");
    poll_until(|| std::future::ready(unjoined()), |n| *n == 3).await;
    redis.resume();
    assert_eq!(unjoined(), 3);
    // Three batches written or tried, the failed one too: 15 feeds, the 2 flushed, the 3 lost.
    let batches = &metrics.feed_log_batch_feeds;
    assert_eq!(
        (batches.get_sample_count(), batches.get_sample_sum()),
        (3, 20.0)
    );
    assert_eq!(metrics.feed_log_write_seconds.get_sample_count(), 3);
}

/// A replica that misses a feed another replica served a moment ago (its batch not written
/// yet) looks again after the flush: a click on it is joined (later, off the events' path),
/// and the feed's next page excludes its first page's items.
#[actix_rt::test]
async fn a_replica_finds_a_feed_another_served_a_moment_ago() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let slow = [
        ("events.feed_log_flush_ms", 1000.into()),
        ("feed.cursor_secret", "a shared test secret".into()),
    ];
    let (a, b) = two_replicas(&redis, &slow).await;
    let res = a.feed("demo-a", DEMO_A_KEY, "user_id=u1&limit=10").await;
    assert_eq!(res.status(), 200);
    let feed: Value = res.json().await.unwrap();
    assert_eq!(
        redis.count_keys("er:{demo-a}:feeds:*"),
        0,
        "not written yet"
    );
    let click = serde_json::json!([{"event_id": "late-1", "type": "click", "user_id": "u1",
        "item_id": feed["items"][1]["item_id"], "request_id": feed["request_id"],
        "timestamp": eaglerank::ingest::now_rfc3339()}]);
    assert_eq!(b.post_events(&click).await.status(), 202);
    let clicks = |m: &str| metric_sum(m, "eaglerank_ranking_interactions_total{", &[r#"k="20""#]);
    // Joined again after the lag (2 × 1000 + 20 ms) in a task of its own: the batch (and the
    // batches behind it) did not wait for it.
    assert_eq!(clicks(&b.metrics().await), 0.0, "not joined while posted");
    let mb = poll_until(|| b.metrics(), |m| clicks(m) == 1.0).await;
    assert_eq!(clicks(&mb), 1.0, "joined on b: {mb}");
    assert_eq!(
        metric_sum(&mb, "eaglerank_ranking_unjoined_total{", &[]),
        0.0
    );

    let first = a.feed("demo-a", DEMO_A_KEY, "user_id=u2&limit=10").await;
    let first: Value = first.json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let next = b
        .feed(
            "demo-a",
            DEMO_A_KEY,
            &format!("user_id=u2&limit=10&cursor={cursor}"),
        )
        .await;
    assert_eq!(next.status(), 200);
    let next: Value = next.json().await.unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let earlier = ids(&first);
    assert!(ids(&next).iter().all(|i| !earlier.contains(i)), "{next}");
    assert_eq!(next["degraded"], false);
}

/// A replica stopped by SIGTERM writes the feeds still queued for the log before it exits:
/// their clicks join on the other replicas.
#[actix_rt::test]
async fn a_stopping_replica_writes_its_last_feeds_to_the_log() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let url = redis.url();
    // The longest interval: the process exits before it ends.
    let mut bin = crate::helpers::spawn_binary(&[
        ("EAGLERANK__REDIS__URL", &url),
        ("EAGLERANK__EVENTS__FEED_LOG_FLUSH_MS", "1000"),
    ]);
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let ready = client.get(format!("{}/readyz", bin.address)).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = std::time::Instant::now();
    for user in ["u1", "u2", "u3"] {
        let url = format!("{}/v1/tenants/demo-a/feed?user_id={user}", bin.address);
        let res = client
            .get(url)
            .bearer_auth(DEMO_A_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let feed: Value = res.json().await.unwrap();
        assert_eq!(feed["degraded"], false);
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(bin.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = bin.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    println!("stopped {:?} after the first feed", stopping.elapsed());
    assert_eq!(redis.feeds_held("demo-a"), 3);
}
