//! Every error status of the API, each with the one JSON error shape.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{DEMO_A_KEY, spawn_app};

pub async fn assert_error(res: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "error bodies are JSON"
    );
    let body: Value = res.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[actix_rt::test]
async fn invalid_feed_queries_are_400() {
    let app = spawn_app().await;
    for query in [
        "",
        "limit=5",
        "user_id=",
        "user_id=has%20space",
        "user_id=a/b",
        &format!("user_id={}", "x".repeat(129)),
        "user_id=u1&limit=0",
        "user_id=u1&limit=101",
        "user_id=u1&limit=abc",
        "user_id=u1&limit=-1",
        "user_id=u1&explain=maybe",
    ] {
        let res = app.feed("demo-a", DEMO_A_KEY, query).await;
        let body = assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{query}"
        );
    }
    // The longest valid id is fine.
    let res = app
        .feed(
            "demo-a",
            DEMO_A_KEY,
            &format!("user_id={}", "x".repeat(128)),
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_rt::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .client
        .get(app.url("/v1/tenants/demo-a/unknown"))
        .bearer_auth(DEMO_A_KEY)
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::NOT_FOUND, "not_found").await;

    let res = app
        .client
        .post(app.url("/v1/tenants/demo-a/feed?user_id=u1"))
        .bearer_auth(DEMO_A_KEY)
        .send()
        .await
        .unwrap();
    // The methods the resource has (RFC 9110).
    assert_eq!(res.headers()["allow"], "GET");
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let res = app
        .client
        .get(app.url("/v1/tenants/demo-a/items"))
        .bearer_auth(DEMO_A_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let res = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[actix_rt::test]
async fn malformed_json_is_400_and_oversized_bodies_413() {
    let app = spawn_app_small_body().await;
    let post = |body: String, ct: &'static str| {
        app.client
            .post(app.url("/v1/tenants/demo-a/items"))
            .bearer_auth(DEMO_A_KEY)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = post("{not json".into(), "application/json").await.unwrap();
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let res = post(r#"{"items": 5}"#.into(), "application/json")
        .await
        .unwrap();
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let res = post(r#"{"items": []}"#.into(), "text/plain").await.unwrap();
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let big = format!(r#"{{"items": [], "pad": "{}"}}"#, "x".repeat(20_000));
    let res = post(big, "application/json").await.unwrap();
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

async fn spawn_app_small_body() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&[("server.max_body_bytes", 10_000.into())]).await
}

#[actix_rt::test]
async fn rate_limited_tenants_get_429() {
    let app =
        crate::helpers::spawn_app_with(&[("tenants.demo-a.rate_limit_per_second", 2.into())]).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.feed("demo-a", DEMO_A_KEY, "user_id=u1&limit=1").await);
    }
    let mut limited = 0;
    for res in statuses {
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
            assert_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
            limited += 1;
        } else {
            assert_eq!(res.status(), StatusCode::OK);
        }
    }
    assert!(
        limited >= 1,
        "6 requests at a 2/s limit: some must be refused"
    );
    // Another tenant's budget is its own.
    let res = app
        .feed("demo-b", crate::helpers::DEMO_B_KEY, "user_id=u1&limit=1")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_rt::test]
async fn a_request_past_its_deadline_is_503_deadline_exceeded() {
    // A 1 ms budget cannot cover 500 candidates through three actors.
    let app = crate::helpers::spawn_app_with(&[("server.request_deadline_ms", 1.into())]).await;
    let mut saw_503 = false;
    for _ in 0..5 {
        let res = app
            .feed("demo-a", DEMO_A_KEY, "user_id=u42&limit=100")
            .await;
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body =
                assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded").await;
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("deadline"),
                "{body}"
            );
            saw_503 = true;
        }
    }
    assert!(saw_503);
}
