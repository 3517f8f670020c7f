//! Model health on the real request path: what the ranker is fed, drift against the training
//! reference, the canary, live ranking quality, and model reloads.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{DEMO_A_KEY, RedisServer, TestApp, metric_value};
use crate::redis::{load_demo, spawn_redis_app_with};

const USER_FEATURES: [&str; 5] = [
    "user_log_interactions",
    "user_category_affinity",
    "user_brand_affinity",
    "user_price_ratio",
    "user_seen_item",
];

fn invalid(metrics: &str, feature: &str, kind: &str) -> f64 {
    metric_value(
        metrics,
        &format!(
            r#"eaglerank_feature_invalid_total{{feature="{feature}",kind="{kind}",model="eaglerank-lgbm-lambdarank"}}"#
        ),
    )
    .unwrap_or(0.0)
}

async fn feed(app: &TestApp, user: &str) -> Value {
    let res = app
        .feed("demo-a", DEMO_A_KEY, &format!("user_id={user}&limit=20"))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A cold-start user's features are missing (default-filled); a corrupt value written into
/// Redis by some other writer reaches the ranker as NaN. Both are counted per feature, and the
/// feed is still served with finite scores.
#[actix_rt::test]
async fn missing_and_nan_features_are_counted_per_feature() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    // Item cache off in effect: the corrupted value must be read on the next request.
    let app = spawn_redis_app_with(&redis, &[("cache.item_ttl_ms", 1.into())]).await;
    app.wait_ready(200).await;

    let first = feed(&app, "nobody-knows-me").await;
    let m = app.metrics().await;
    let scored = invalid(&m, "user_category_affinity", "missing");
    assert!(
        scored >= 20.0,
        "every candidate lacks user features: {scored}"
    );
    for f in USER_FEATURES {
        assert_eq!(invalid(&m, f, "missing"), scored, "{f}");
    }
    assert_eq!(invalid(&m, "item_ctr", "missing"), 0.0);
    assert_eq!(invalid(&m, "item_ctr", "nan"), 0.0);

    let victim = first["items"][0]["item_id"].as_str().unwrap().to_owned();
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "HSET"])
        .arg(format!("er:{{demo-a}}:item:{victim}"))
        .args(["clicks", "nan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(20));

    let second = feed(&app, "nobody-knows-me").await;
    let m = app.metrics().await;
    // clicks feeds three features; each saw one NaN (the victim is still a candidate).
    for f in ["item_ctr", "item_log_clicks", "item_conversion"] {
        assert_eq!(invalid(&m, f, "nan"), 1.0, "{f}");
    }
    assert_eq!(invalid(&m, "item_log_impressions", "nan"), 0.0);
    for item in second["items"].as_array().unwrap() {
        assert!(item["score"].as_f64().unwrap().is_finite(), "{item}");
    }
}
