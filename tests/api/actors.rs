//! Supervision: a panic inside a real actor's handler becomes a restart, counted, and the
//! service keeps serving.

use eaglerank::actors::{Feed, FeedError, InjectPanic};

use crate::helpers::{DEMO_A_KEY, TestApp, metric_value, spawn_app};

async fn restarts(app: &TestApp, actor: &str) -> Option<f64> {
    metric_value(
        &app.metrics().await,
        &format!(r#"eaglerank_actor_restarts_total{{actor="{actor}"}}"#),
    )
}

/// Waits until `actor` has been started again after a failure (a restart completes a moment
/// after the failed request has been answered) and everything is up.
async fn wait_for_restart(app: &TestApp, actor: &str) {
    let starts = |app: &TestApp| {
        let s = app.actors.health.snapshot();
        let a = s.iter().find(|a| a.name == actor).unwrap();
        (a.starts, a.instances as u64)
    };
    for _ in 0..250 {
        let (started, instances) = starts(app);
        if started > instances && app.actors.health.all_up() {
            return;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "{actor} did not come back: {:?}",
        app.actors.health.snapshot()
    );
}

#[actix_rt::test]
async fn a_panicking_candidate_fetcher_is_restarted_and_the_next_request_served() {
    let app = spawn_app().await;
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u1").await.status(),
        200
    );
    assert_eq!(restarts(&app, "candidates").await, Some(0.0));

    let reply = app
        .lane()
        .candidates
        .send(InjectPanic)
        .await
        .expect("mailbox open");
    assert!(
        matches!(reply, Err(FeedError::Crashed("candidates"))),
        "{reply:?}"
    );
    wait_for_restart(&app, "candidates").await;

    assert_eq!(restarts(&app, "candidates").await, Some(1.0));
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u1").await.status(),
        200
    );
    let snapshot = app.actors.health.snapshot();
    let c = snapshot.iter().find(|a| a.name == "candidates").unwrap();
    assert_eq!((c.up, c.restarts), (true, 1));
}

#[actix_rt::test]
async fn a_panicking_ranker_gets_a_fresh_session() {
    let app = spawn_app().await;
    let reply = app
        .lane()
        .ranker
        .send(InjectPanic)
        .await
        .expect("mailbox open");
    assert!(
        matches!(reply, Err(FeedError::Crashed("ranker"))),
        "{reply:?}"
    );
    wait_for_restart(&app, "ranker").await;
    assert_eq!(restarts(&app, "ranker").await, Some(1.0));
    let m = app.metrics().await;
    assert_eq!(
        metric_value(&m, r#"eaglerank_actor_up{actor="ranker"}"#),
        Some(1.0)
    );
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u1").await.status(),
        200
    );
}

#[actix_rt::test]
async fn a_panicking_gateway_keeps_its_address_and_serves_on() {
    let app = spawn_app().await;
    let reply = app
        .lane()
        .gateway
        .send(InjectPanic)
        .await
        .expect("mailbox open");
    assert!(matches!(reply, Err(FeedError::Crashed("gateway"))));
    wait_for_restart(&app, "gateway").await;
    assert_eq!(restarts(&app, "gateway").await, Some(1.0));
    assert_eq!(
        app.feed("demo-a", DEMO_A_KEY, "user_id=u1").await.status(),
        200
    );
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

/// The feed path runs as one lane (gateway, candidate fetcher, ranker) per HTTP worker; each
/// actor is counted once per lane, and all of them are up before the app is handed out.
#[actix_rt::test]
async fn every_http_worker_gets_its_own_supervised_feed_lane() {
    let app = spawn_app().await; // two workers (tests/api/helpers.rs)
    let lanes = app.actors.lanes.all();
    assert_eq!(lanes.len(), 2);
    let snapshot = app.actors.health.snapshot();
    for name in ["gateway", "candidates", "ranker"] {
        let a = snapshot.iter().find(|a| a.name == name).unwrap();
        assert_eq!((a.instances, a.running, a.up), (2, 2, true), "{a:?}");
    }
    // Each lane serves a whole feed on its own.
    for lane in &lanes {
        let feed = Feed {
            tenant: "demo-a".into(),
            user_id: "u1".into(),
            limit: 5,
            explain: false,
            keep_features: false,
            model: None,
            rules: eaglerank::ranking::rules::defaults(),
            seen: Default::default(),
            page: 1,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(30),
            span: tracing::Span::none(),
            enqueued: std::time::Instant::now(),
        };
        let outcome = lane.gateway.send(feed).await.expect("mailbox open");
        let outcome = outcome.expect("feed served");
        assert_eq!(outcome.items.len(), 5);
        assert!(outcome.num_candidates > 5 && outcome.degraded.is_none());
    }
}
