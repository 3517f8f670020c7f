use eaglerank::telemetry::events::SCORES_SAMPLED;

use crate::helpers::{DEMO_A_KEY, DEMO_B_KEY, metric_value, spawn_app, spawn_app_with};

#[actix_rt::test]
async fn every_documented_metric_is_exported_after_a_request() {
    let app = spawn_app().await;
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u42").await.status(),
        200
    );
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u42&limit=0")
            .await
            .status(),
        400
    );
    let m = app.metrics().await;
    for name in [
        "eaglerank_feed_requests_total",
        "eaglerank_feed_latency_seconds_bucket",
        "eaglerank_candidates_fetched_bucket",
        "eaglerank_candidate_fetch_seconds_bucket",
        "eaglerank_feature_fetch_seconds_bucket",
        "eaglerank_model_inference_seconds_bucket",
        "eaglerank_model_score_bucket",
        "eaglerank_actor_restarts_total",
        "eaglerank_actor_up",
        "eaglerank_build_info",
        "eaglerank_http_requests_total",
        "eaglerank_http_requests_duration_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics"
        );
    }
    let ok = metric_value(
        &m,
        r#"eaglerank_feed_requests_total{status="ok",tenant="demo-a",transport="http"}"#,
    );
    assert_eq!(ok, Some(1.0), "{m}");
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_feed_latency_seconds_count{tenant="demo-a",transport="http"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_model_inference_seconds_count{model="eaglerank-lgbm-lambdarank"}"#
        ),
        Some(1.0)
    );
    for stage in ["fetch", "merge"] {
        let series = format!(
            r#"eaglerank_candidate_fetch_seconds_count{{stage="{stage}",tenant="demo-a"}}"#
        );
        assert_eq!(metric_value(&m, &series), Some(1.0), "{series}");
    }
    // The demo's two-stage cascade: the first stage scores every candidate, the ranker its
    // best 100; the score histogram takes up to 32 evenly spaced scores of each batch.
    let sampled = |rows: usize| rows.div_ceil(rows.div_ceil(SCORES_SAMPLED)) as f64;
    let candidates =
        metric_value(&m, r#"eaglerank_candidates_fetched_sum{tenant="demo-a"}"#).unwrap();
    let scored = |model: &str| {
        metric_value(
            &m,
            &format!(r#"eaglerank_model_score_count{{model="{model}"}}"#),
        )
        .unwrap()
    };
    assert!(candidates > 100.0, "{candidates}");
    assert_eq!(
        scored("eaglerank-first-stage"),
        sampled(candidates as usize)
    );
    assert_eq!(scored("eaglerank-lgbm-lambdarank"), sampled(100));
    for actor in [
        "gateway",
        "candidates",
        "ranker",
        "ingestor",
        "model_watchdog",
        "usage_reporter",
    ] {
        assert_eq!(
            metric_value(&m, &format!(r#"eaglerank_actor_up{{actor="{actor}"}}"#)),
            Some(1.0)
        );
        assert_eq!(
            metric_value(
                &m,
                &format!(r#"eaglerank_actor_restarts_total{{actor="{actor}"}}"#)
            ),
            Some(0.0)
        );
    }
    // The HTTP middleware labels by route pattern, never by raw path.
    assert!(m.contains(r#"endpoint="/v1/tenants/{tenant}/feed""#), "{m}");
}

#[actix_rt::test]
async fn unknown_tenants_and_paths_create_no_series() {
    let app = spawn_app().await;
    app.feed("tenant-x1", DEMO_A_KEY, "user_id=u1").await;
    app.feed("tenant-x2", "bad", "user_id=u1").await;
    app.client
        .get(app.url("/random/path/123"))
        .send()
        .await
        .unwrap();
    let m = app.metrics().await;
    assert!(!m.contains("tenant-x1") && !m.contains("tenant-x2"), "{m}");
    assert!(!m.contains("/random/path/123"));
    assert!(m.contains(r#"endpoint="UNKNOWN""#));
}

/// Series of `name` on the metrics page.
fn series(metrics: &str, name: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .count()
}

#[actix_rt::test]
async fn invented_methods_and_random_paths_add_a_bounded_number_of_series() {
    let app = spawn_app().await;
    let before = series(&app.metrics().await, "eaglerank_http_requests_total");
    for i in 0..100 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let res = app
            .client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        // Answered as before: a known path, a method it does not take.
        assert_eq!(res.status(), 405);
        let res = app
            .client
            .get(app.url(&format!("/no/such/path/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let method = reqwest::Method::from_bytes(format!("BAR{i}").as_bytes()).unwrap();
        app.client
            .request(method, app.url(&format!("/x{i}")))
            .send()
            .await
            .unwrap();
    }
    let m = app.metrics().await;
    let added = series(&m, "eaglerank_http_requests_total") - before;
    // (/healthz, _OTHER, 405), (UNKNOWN, GET, 404), (UNKNOWN, _OTHER, 404), and the scrapes'.
    assert!(added <= 5, "{added} new series:\n{m}");
    assert!(!m.contains("FOO") && !m.contains("BAR") && !m.contains("/no/such"));
    assert!(m.contains(r#"method="_OTHER""#), "{m}");
}

#[actix_rt::test]
async fn refused_requests_are_counted_per_tenant_and_reason_with_bounded_labels() {
    let app = spawn_app_with(&[("tenants.demo-b.rate_limit_per_second", 1.into())]).await;
    let refused = |m: &str, tenant: &str, reason: &str| {
        metric_value(
            m,
            &format!(
                r#"eaglerank_requests_refused_total{{reason="{reason}",tenant="{tenant}",transport="http"}}"#
            ),
        )
    };
    // Every configured tenant's series exist from the start, at 0.
    let m = app.metrics().await;
    for reason in [
        "unauthenticated",
        "permission_denied",
        "rate_limited",
        "invalid_argument",
    ] {
        assert_eq!(refused(&m, "demo-b", reason), Some(0.0), "{reason}");
    }

    let get = |path: &str, key: Option<&str>| {
        let mut req = app.client.get(app.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    assert_eq!(
        get("/v1/tenants/demo-a/feed?user_id=u1", None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/v1/tenants/demo-a/feed?user_id=u1", Some("not-a-key"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/v1/tenants/demo-a/feed?user_id=u1", Some(DEMO_B_KEY))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get(
            "/v1/tenants/demo-a/feed?user_id=u1&limit=1000",
            Some(DEMO_A_KEY)
        )
        .await
        .unwrap()
        .status(),
        400
    );
    // Invented tenants share one label, whatever their number.
    for t in ["shop-x", "shop-y", "shop-z"] {
        let status = get(
            &format!("/v1/tenants/{t}/feed?user_id=u1"),
            Some(DEMO_A_KEY),
        )
        .await
        .unwrap()
        .status();
        assert_eq!(status, 404);
    }
    let mut limited = 0;
    for _ in 0..3 {
        let res = get(
            "/v1/tenants/demo-b/feed?user_id=u1&limit=1",
            Some(DEMO_B_KEY),
        )
        .await
        .unwrap();
        limited += usize::from(res.status() == 429);
    }
    assert!(limited >= 1);
    let bad_batch = app
        .post_events(&serde_json::json!([{"event_id": "e1", "type": "stare"}]))
        .await;
    assert_eq!(bad_batch.status(), 400);

    let m = app.metrics().await;
    assert_eq!(refused(&m, "demo-a", "unauthenticated"), Some(2.0));
    assert_eq!(refused(&m, "demo-a", "permission_denied"), Some(1.0));
    // The feed's bad limit and the bad event batch.
    assert_eq!(refused(&m, "demo-a", "invalid_argument"), Some(2.0));
    assert_eq!(refused(&m, "_unknown", "not_found"), Some(3.0));
    assert_eq!(refused(&m, "demo-b", "rate_limited"), Some(limited as f64));
    assert!(
        !m.contains("shop-x"),
        "client-sent tenants never become labels"
    );
}

#[actix_rt::test]
async fn saturation_signals_in_flight_requests_and_mailbox_waits() {
    let app = spawn_app().await;
    // Feeds in parallel: both lanes busy, some wait for their lane.
    let queries: Vec<String> = (0..8).map(|i| format!("user_id=u{i}")).collect();
    let feeds = queries.iter().map(|q| app.feed("demo-a", DEMO_A_KEY, q));
    for res in futures::future::join_all(feeds).await {
        assert_eq!(res.status(), 200);
    }
    let _ = app.client.get(app.url("/no/such/path/7")).send().await;
    let m = app.metrics().await;
    // Every answered request left the gauge; endpoints are route patterns, never raw paths.
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_requests_in_flight{endpoint="/v1/tenants/{tenant}/feed",transport="http"}"#
        ),
        Some(0.0),
        "{m}"
    );
    assert!(!m.contains("/no/such/path"), "{m}");
    for actor in ["gateway", "candidates", "ranker"] {
        let count = metric_value(
            &m,
            &format!(r#"eaglerank_actor_queue_seconds_count{{actor="{actor}"}}"#),
        );
        assert!(count.is_some_and(|n| n >= 8.0), "{actor}: {count:?}");
    }
}

#[actix_rt::test]
async fn series_known_in_advance_start_at_zero() {
    let app = spawn_app().await;
    let m = app.metrics().await;
    for series in [
        r#"eaglerank_feed_degraded_total{reason="redis_down",tenant="demo-b"}"#,
        r#"eaglerank_feed_degraded_total{reason="store_error",tenant="demo-a"}"#,
        r#"eaglerank_feed_requests_total{status="deadline_exceeded",tenant="demo-a",transport="grpc"}"#,
        r#"eaglerank_events_duplicates_total{tenant="demo-b"}"#,
        r#"eaglerank_events_rejected_total{reason="unparseable"}"#,
        r#"eaglerank_model_reloads_total{outcome="rejected"}"#,
        r#"eaglerank_requests_refused_total{reason="rate_limited",tenant="demo-a",transport="grpc"}"#,
    ] {
        assert_eq!(metric_value(&m, series), Some(0.0), "{series}");
    }
}
