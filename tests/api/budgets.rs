//! Per-tenant budgets through the API, on the embedded store and on a real Redis: one tenant
//! fills its budgets (items, users, rules, events per second, served feeds held for the join)
//! and is refused with `quota_exceeded` (507) or `rate_limited` (429) — nothing it already
//! stored is lost — while the other tenant's writes, feeds and joins go on unaffected.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{
    DEMO_A_KEY, DEMO_B_KEY, RedisServer, TestApp, metric_sum, metric_value, spawn_app_with,
};
use crate::redis::{load_demo, spawn_redis_app_with};

/// The test demo holds 1 500 items and 282 user profiles (of its 300 users, those with
/// events) per tenant; demo-a may add 2 of each.
const BUDGET: [(&str, i64); 6] = [
    ("tenants.demo-a.budget.items", 1502),
    ("tenants.demo-a.budget.users", 284),
    ("tenants.demo-a.budget.rules", 3),
    ("tenants.demo-a.budget.events_per_second", 500),
    ("tenants.demo-a.budget.feed_log_entries", 20),
    ("budgets.report_interval_ms", 100),
];

fn overrides() -> Vec<(&'static str, config::Value)> {
    BUDGET.iter().map(|(k, v)| (*k, (*v).into())).collect()
}

fn key(tenant: &str) -> &'static str {
    match tenant {
        "demo-a" => DEMO_A_KEY,
        _ => DEMO_B_KEY,
    }
}

fn item(id: &str) -> Value {
    json!({"item_id": id, "category": "shoes", "brand": "acme", "price": 49.9})
}

fn event(id: &str, user: &str, item: &str) -> Value {
    json!({"event_id": id, "type": "click", "user_id": user, "item_id": item,
           "timestamp": eaglerank::ingest::now_rfc3339()})
}

impl TestApp {
    async fn send(
        &self,
        method: reqwest::Method,
        tenant: &str,
        path: &str,
        body: Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(&format!("/v1/tenants/{tenant}/{path}")))
            .bearer_auth(key(tenant))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn upsert(&self, tenant: &str, ids: &[&str]) -> reqwest::Response {
        let items: Vec<Value> = ids.iter().map(|i| item(i)).collect();
        self.send(
            reqwest::Method::POST,
            tenant,
            "items",
            json!({ "items": items }),
        )
        .await
    }

    async fn events(&self, tenant: &str, events: Vec<Value>) -> reqwest::Response {
        self.send(
            reqwest::Method::POST,
            tenant,
            "events",
            json!({ "events": events }),
        )
        .await
    }

    /// A tenant's usage gauge, once the reporter has measured a value `done` accepts.
    async fn usage(&self, tenant: &str, component: &str, done: impl Fn(f64) -> bool) -> f64 {
        let series =
            format!(r#"eaglerank_tenant_entries{{component="{component}",tenant="{tenant}"}}"#);
        let mut last = None;
        for _ in 0..100 {
            last = metric_value(&self.metrics().await, &series);
            if let Some(v) = last.filter(|v| done(*v)) {
                return v;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{series} = {last:?}");
    }
}

async fn budgets_bound_one_tenant_only(app: &TestApp, embedded_feed_log: bool) {
    app.wait_ready(200).await;
    // What the demo holds, measured and exported with the budgets.
    assert_eq!(app.usage("demo-a", "items", |v| v == 1500.0).await, 1500.0);
    assert_eq!(app.usage("demo-a", "users", |v| v == 282.0).await, 282.0);
    let m = app.metrics().await;
    let budget = |tenant: &str, component: &str| {
        metric_value(
            &m,
            &format!(
                r#"eaglerank_tenant_budget_entries{{component="{component}",tenant="{tenant}"}}"#
            ),
        )
    };
    assert_eq!(budget("demo-a", "items"), Some(1502.0));
    assert_eq!(budget("demo-a", "users"), Some(284.0));
    // Unlimited: no budget series (a usage ratio never divides by zero).
    assert_eq!(budget("demo-b", "items"), None);
    assert!(
        metric_value(
            &m,
            r#"eaglerank_tenant_memory_bytes{component="items",tenant="demo-a"}"#
        )
        .unwrap()
            > 1500.0 * 100.0
    );

    // Items: three new ones do not fit in a room of two; refused whole.
    let body = assert_error(
        app.upsert("demo-a", &["new-1", "new-2", "new-3"]).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("items"),
        "{body}"
    );
    for id in ["new-1", "new-2", "new-3"] {
        assert_eq!(app.item("demo-a", DEMO_A_KEY, id).await.status(), 404);
    }
    // Two do; then none; changing a stored item is no new entry.
    assert_eq!(
        app.upsert("demo-a", &["new-1", "new-2"]).await.status(),
        200
    );
    assert_error(
        app.upsert("demo-a", &["new-3"]).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert_eq!(app.upsert("demo-a", &["new-1", "i7"]).await.status(), 200);
    // The other tenant is not bounded by it.
    assert_eq!(
        app.upsert("demo-b", &["new-1", "new-2", "new-3", "new-4"])
            .await
            .status(),
        200
    );

    // Users: two new users fit; a third is refused, the known user's event beside it applies.
    let clicks_before = app.item_stats("demo-a", DEMO_A_KEY, "i3").await["all_time"]["clicks"]
        .as_f64()
        .unwrap();
    let res = app
        .events(
            "demo-a",
            vec![
                event("e1", "new-user-1", "i3"),
                event("e2", "new-user-2", "i3"),
            ],
        )
        .await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let body = assert_error(
        app.events(
            "demo-a",
            vec![event("e3", "new-user-3", "i3"), event("e4", "u1", "i3")],
        )
        .await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    assert_eq!(body["error"]["details"][0]["index"], 0, "{body}");
    let clicks = app.item_stats("demo-a", DEMO_A_KEY, "i3").await["all_time"]["clicks"]
        .as_f64()
        .unwrap();
    assert_eq!(clicks, clicks_before + 3.0);
    assert_eq!(app.usage("demo-a", "users", |v| v == 284.0).await, 284.0);
    let res = app
        .events(
            "demo-b",
            vec![
                event("e1", "new-user-1", "i3"),
                event("e3", "new-user-3", "i3"),
            ],
        )
        .await;
    assert_eq!(res.status(), 202);

    // Events per second: a batch larger than a second's budget is refused, nothing applied.
    let batch: Vec<Value> = (0..600)
        .map(|n| event(&format!("burst-{n}"), "u1", "i3"))
        .collect();
    let body = assert_error(
        app.events("demo-a", batch.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events/s"),
        "{body}"
    );
    assert_eq!(app.events("demo-b", batch).await.status(), 202);

    // Rules: a document of four entries does not fit in three; the rules in force stay.
    let rules = |excluded: &[&str]| json!({"exclude": {"items": excluded}});
    assert_error(
        app.send(
            reqwest::Method::PUT,
            "demo-a",
            "rules",
            rules(&["i1", "i2", "i3", "i4"]),
        )
        .await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await;
    let res = app
        .send(
            reqwest::Method::PUT,
            "demo-a",
            "rules",
            rules(&["i1", "i2", "i3"]),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.usage("demo-a", "rules", |v| v == 3.0).await, 3.0);
    let res = app
        .send(
            reqwest::Method::PUT,
            "demo-b",
            "rules",
            rules(&["i1", "i2", "i3", "i4"]),
        )
        .await;
    assert_eq!(res.status(), 200);

    if embedded_feed_log {
        // Served feeds: demo-a's own oldest go past its 20; demo-b's stay and join.
        let first_b = app.feed("demo-b", DEMO_B_KEY, "user_id=u5&limit=5").await;
        let first_b: Value = first_b.json().await.unwrap();
        for n in 0..40 {
            let res = app
                .feed("demo-a", DEMO_A_KEY, &format!("user_id=u{n}&limit=5"))
                .await;
            assert_eq!(res.status(), 200);
        }
        // Waits for a report taken after the feeds (an earlier one says 0); one over 20
        // never satisfies it and fails the test with the value.
        app.usage("demo-a", "feed_log", |held| (1.0..=20.0).contains(&held))
            .await;
        assert_eq!(app.usage("demo-b", "feed_log", |v| v == 1.0).await, 1.0);
        let clicked = first_b["items"][0]["item_id"].as_str().unwrap();
        let mut click = event("join-1", "u5", clicked);
        click["request_id"] = first_b["request_id"].clone();
        assert_eq!(app.events("demo-b", vec![click]).await.status(), 202);
        let joined = metric_sum(
            &app.metrics().await,
            "eaglerank_ranking_interactions_total",
            &[r#"tenant="demo-b""#, r#"type="click""#],
        );
        assert!(joined > 0.0, "demo-b's click joined its feed");
    }

    // Every refusal counted, for the tenant that ran into its budget only.
    let m = app.metrics().await;
    let refused = |tenant: &str, budget: &str| {
        metric_value(
            &m,
            &format!(
                r#"eaglerank_tenant_quota_refused_total{{budget="{budget}",tenant="{tenant}"}}"#
            ),
        )
        .unwrap()
    };
    assert_eq!(refused("demo-a", "items"), 4.0);
    assert_eq!(refused("demo-a", "users"), 1.0);
    assert_eq!(refused("demo-a", "rules"), 1.0);
    assert_eq!(refused("demo-a", "events_per_second"), 600.0);
    for budget in ["items", "users", "rules", "events_per_second"] {
        assert_eq!(refused("demo-b", budget), 0.0, "{budget}");
    }
}

#[actix_rt::test]
async fn budgets_bound_one_tenant_only_on_the_embedded_store() {
    let app = spawn_app_with(&overrides()).await;
    budgets_bound_one_tenant_only(&app, true).await;
}

#[actix_rt::test]
async fn budgets_bound_one_tenant_only_on_redis() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    let app = spawn_redis_app_with(&redis, &overrides()).await;
    budgets_bound_one_tenant_only(&app, false).await;
}

#[actix_rt::test]
async fn a_demo_larger_than_its_budget_does_not_start() {
    let err = eaglerank::startup::Application::build(
        eaglerank::config::Settings::load_with(
            &[],
            &[
                ("server.port", 0.into()),
                ("grpc.port", 0.into()),
                ("store.demo.items", 100.into()),
                ("store.demo.users", 10.into()),
                ("tenants.demo-a.budget.items", 50.into()),
            ],
        )
        .unwrap(),
    )
    .await
    .err()
    .expect("refused");
    let chain = format!("{err:#}");
    assert!(
        chain.contains("items budget of tenant \"demo-a\" is 50"),
        "{chain}"
    );
}
