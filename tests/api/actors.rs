//! Supervision: a panic inside a real actor's handler becomes a restart, counted, and the
//! service keeps serving.

use eaglerank::actors::{FeedError, InjectPanic};

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
        .actors
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
async fn a_panicking_ranker_thread_gets_a_fresh_session() {
    let app = spawn_app().await;
    let reply = app
        .actors
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
        .actors
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
