use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{DEMO_A_KEY, TestApp, spawn_app_with};

async fn empty_catalog() -> TestApp {
    spawn_app_with(&[("store.demo.enabled", false.into())]).await
}

async fn upsert(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/tenants/demo-a/items"))
        .bearer_auth(DEMO_A_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn feed_ids(app: &TestApp) -> HashSet<String> {
    let res = app.feed("demo-a", DEMO_A_KEY, "user_id=u1&limit=100").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The feed's ids once they are `expected` (or as they are after 5 s): new items change the
/// candidate lists' members, which follow within `cache.list_ttl_ms` (1 s by default).
async fn feed_ids_within_the_list_ttl(
    app: &TestApp,
    expected: &HashSet<String>,
) -> HashSet<String> {
    let mut ids = feed_ids(app).await;
    for _ in 0..100 {
        if ids == *expected {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        ids = feed_ids(app).await;
    }
    ids
}

fn item(id: &str) -> Value {
    json!({
        "item_id": id, "category": "shoes", "brand": "acme", "price": 49.9,
        "created_at": "2026-11-01T10:00:00Z", "attributes": {"color": "red", "sizes": [40, 41]}
    })
}

#[actix_rt::test]
async fn upserted_items_become_candidates() {
    let app = empty_catalog().await;
    assert!(feed_ids(&app).await.is_empty(), "no catalog, empty feed");

    let res = upsert(
        &app,
        json!({"items": [item("sku-1"), item("sku-2"), item("sku-3")]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"upserted": 3}));
    let expected = HashSet::from(["sku-1".into(), "sku-2".into(), "sku-3".into()]);
    assert_eq!(
        feed_ids_within_the_list_ttl(&app, &expected).await,
        expected
    );

    // Upserting again replaces, never duplicates; created_at is optional.
    let res = upsert(
        &app,
        json!({"items": [{"item_id": "sku-1", "category": "bags", "brand": "acme", "price": 10}]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        feed_ids_within_the_list_ttl(&app, &expected).await,
        expected
    );

    // Other tenants do not see them.
    let res = app
        .feed("demo-b", crate::helpers::DEMO_B_KEY, "user_id=u1&limit=100")
        .await;
    let body: Value = res.json().await.unwrap();
    assert!(body["items"].as_array().unwrap().is_empty());
}

#[actix_rt::test]
async fn an_invalid_batch_lists_every_problem_and_writes_nothing() {
    let app = empty_catalog().await;
    let res = upsert(
        &app,
        json!({"items": [
            item("ok-1"),
            {"item_id": "bad id", "category": "x", "brand": "y", "price": 1},
            {"item_id": "p", "category": "x", "brand": "y", "price": -1},
            {"item_id": "q", "category": "", "brand": "y", "price": 1},
            {"item_id": "r", "category": "x", "brand": "y", "price": "cheap"},
            {"item_id": "s", "category": "x", "brand": "y", "price": 1, "created_at": "yesterday"},
            item("ok-1")
        ]}),
    )
    .await;
    let body = assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let indexes: Vec<u64> = body["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()));
            d["index"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(indexes, [1, 2, 3, 4, 5, 6]);
    assert!(
        feed_ids(&app).await.is_empty(),
        "nothing of a rejected batch is written"
    );
}

#[actix_rt::test]
async fn batches_hold_1_to_1000_items() {
    let app = empty_catalog().await;
    let res = upsert(&app, json!({"items": []})).await;
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let many: Vec<Value> = (0..1001).map(|i| item(&format!("i-{i}"))).collect();
    let res = upsert(&app, json!({ "items": many })).await;
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let ok: Vec<Value> = (0..1000).map(|i| item(&format!("i-{i}"))).collect();
    let res = upsert(&app, json!({ "items": ok })).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(feed_ids(&app).await.len(), 100);
}
