use reqwest::StatusCode;

use crate::errors::assert_error;
use crate::helpers::{DEMO_A_KEY, DEMO_B_KEY, spawn_app};

#[actix_rt::test]
async fn missing_or_invalid_keys_are_401() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/v1/tenants/demo-a/feed?user_id=u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_error(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app.feed("demo-a", "wrong-key", "user_id=u1").await;
    assert_error(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app
        .client
        .get(app.url("/v1/tenants/demo-a/feed?user_id=u1"))
        .header("authorization", format!("Basic {DEMO_A_KEY}"))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Without a valid key, an unknown tenant is indistinguishable from a known one.
    let res = app.feed("no-such-tenant", "wrong-key", "user_id=u1").await;
    assert_error(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[actix_rt::test]
async fn another_tenants_key_is_403_and_unknown_tenant_404() {
    let app = spawn_app().await;
    let res = app.feed("demo-b", DEMO_A_KEY, "user_id=u1").await;
    assert_error(res, StatusCode::FORBIDDEN, "permission_denied").await;
    let res = app.feed("demo-a", DEMO_B_KEY, "user_id=u1").await;
    assert_error(res, StatusCode::FORBIDDEN, "permission_denied").await;
    let res = app.feed("no-such-tenant", DEMO_A_KEY, "user_id=u1").await;
    assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .client
        .post(app.url("/v1/tenants/demo-b/items"))
        .bearer_auth(DEMO_A_KEY)
        .json(&serde_json::json!({"items": []}))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::FORBIDDEN, "permission_denied").await;
}
