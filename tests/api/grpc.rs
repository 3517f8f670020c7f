//! The gRPC API against the running server, with a real tonic client over a real socket: the
//! contract (the REST feed, the REST batch semantics), every error code of the table, the
//! client's deadline, health following readiness (a real Redis killed and restarted),
//! reflection, the metrics and the drain on SIGTERM.

use std::time::Duration;

use eaglerank::grpc::proto::feed_service_client::FeedServiceClient;
use eaglerank::grpc::proto::{Event, GetFeedRequest, GetFeedResponse, IngestEventsRequest};
use futures::StreamExt as _;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{
    DEMO_A_KEY, DEMO_B_KEY, RedisServer, TestApp, binary_command, free_port, metric_value,
    spawn_app_with, spawn_command,
};

async fn grpc_app(extra: &[(&'static str, config::Value)]) -> TestApp {
    let mut all = vec![("grpc.port", i64::from(free_port()).into())];
    all.extend(extra.iter().cloned());
    spawn_app_with(&all).await
}

async fn channel(app: &TestApp) -> Channel {
    let url = app.grpc.clone().expect("gRPC is on");
    Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects")
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

fn feed_request(tenant: &str, user: &str, limit: u32) -> GetFeedRequest {
    GetFeedRequest {
        tenant: tenant.into(),
        user_id: user.into(),
        limit,
        explain: false,
        cursor: String::new(),
    }
}

async fn grpc_feed(
    client: &mut FeedServiceClient<Channel>,
    req: Request<GetFeedRequest>,
) -> Result<GetFeedResponse, tonic::Status> {
    client.get_feed(req).await.map(|r| r.into_inner())
}

#[actix_rt::test]
async fn a_grpc_feed_is_the_rest_feed() {
    let app = grpc_app(&[]).await;
    let mut client = FeedServiceClient::new(channel(&app).await);
    let rest: Value = app
        .feed("demo-a", DEMO_A_KEY, "user_id=u42&limit=10")
        .await
        .json()
        .await
        .unwrap();
    let mut req = feed_request("demo-a", "u42", 10);
    req.explain = true;
    let response = client
        .get_feed(with_key(req, DEMO_A_KEY))
        .await
        .expect("the feed is served");
    let request_id = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let feed = response.into_inner();
    assert_eq!(feed.request_id, request_id);
    assert_eq!(feed.tenant, "demo-a");
    assert_eq!(feed.user_id, "u42");
    assert!(!feed.degraded);
    let model = feed.model.as_ref().unwrap();
    assert_eq!(model.name, rest["model"]["name"]);
    assert_eq!(model.version, rest["model"]["version"]);
    // The demo's two-stage cascade, named as REST names it.
    let first_stage = feed
        .first_stage
        .as_ref()
        .expect("the cascade's first stage");
    assert_eq!(first_stage.name, rest["first_stage"]["name"]);
    assert_eq!(first_stage.name, "eaglerank-first-stage");
    // The same user, store and model a moment apart: the same items in the same order, from
    // the same sources, with the same ranks.
    let rest_items = rest["items"].as_array().unwrap();
    assert_eq!(feed.items.len(), 10);
    assert_eq!(feed.items.len(), rest_items.len());
    for (g, r) in feed.items.iter().zip(rest_items) {
        assert_eq!(g.item_id, r["item_id"]);
        assert_eq!(u64::from(g.rank), r["rank"].as_u64().unwrap());
        assert_eq!(
            g.sources,
            serde_json::from_value::<Vec<String>>(r["sources"].clone()).unwrap()
        );
        assert!((f64::from(g.score) - r["score"].as_f64().unwrap()).abs() < 1e-3);
        // explain: the model's input by name, and both stages' scores.
        assert!(g.features.len() > 5, "{:?}", g.features);
        assert!(g.first_stage_score.is_some_and(f32::is_finite), "{g:?}");
        assert!(
            g.model_score.is_some(),
            "page 1 of 10 comes from the kept 100: {g:?}"
        );
    }
    assert!(
        feed.timings_ms.contains_key("total"),
        "{:?}",
        feed.timings_ms
    );

    // limit unset (0) means the default, as a missing query parameter does.
    let feed = grpc_feed(
        &mut client,
        with_key(feed_request("demo-a", "u42", 0), DEMO_A_KEY),
    )
    .await
    .unwrap();
    assert_eq!(feed.items.len(), 20);
    assert!(feed.timings_ms.is_empty() && feed.items[0].features.is_empty());
    assert!(feed.items[0].model_score.is_none() && feed.items[0].first_stage_score.is_none());

    // Counted beside REST, by transport; the gRPC call itself by method and code.
    let m = app.metrics().await;
    for transport in ["http", "grpc"] {
        let series = format!(
            r#"eaglerank_feed_requests_total{{status="ok",tenant="demo-a",transport="{transport}"}}"#
        );
        let expected = if transport == "grpc" { 2.0 } else { 1.0 };
        assert_eq!(metric_value(&m, &series), Some(expected), "{series}\n{m}");
    }
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_grpc_server_handled_total{grpc_code="OK",grpc_method="GetFeed",grpc_service="eaglerank.v1.FeedService"}"#
        ),
        Some(2.0),
        "{m}"
    );
}

/// The code, and the REST code in the metadata, of a failed call.
fn codes(status: &tonic::Status) -> (Code, String) {
    let rest = status
        .metadata()
        .get("eaglerank-error-code")
        .unwrap_or_else(|| panic!("no eaglerank-error-code: {status:?}"))
        .to_str()
        .unwrap()
        .to_owned();
    (status.code(), rest)
}

#[actix_rt::test]
async fn grpc_pages_follow_the_cursor_without_repeats_and_share_rest_sessions() {
    let app = grpc_app(&[]).await;
    let mut client = FeedServiceClient::new(channel(&app).await);
    let first = grpc_feed(
        &mut client,
        with_key(feed_request("demo-a", "u9", 10), DEMO_A_KEY),
    )
    .await
    .unwrap();
    assert_eq!(first.page, 1);
    assert!(!first.next_cursor.is_empty());
    let mut req = feed_request("demo-a", "u9", 10);
    req.cursor = first.next_cursor.clone();
    let second = grpc_feed(&mut client, with_key(req, DEMO_A_KEY))
        .await
        .unwrap();
    assert_eq!(second.page, 2);
    // The third page over REST, with the gRPC page's cursor: one session, either transport.
    let third: Value = app
        .feed(
            "demo-a",
            DEMO_A_KEY,
            &format!("user_id=u9&limit=10&cursor={}", second.next_cursor),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["page"], 3);
    let mut all: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|i| i.item_id.clone())
        .collect();
    all.extend(
        third["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap().to_owned()),
    );
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (30, 30));
    // An altered cursor: INVALID_ARGUMENT.
    let mut req = feed_request("demo-a", "u9", 10);
    req.cursor = format!("{}0", second.next_cursor);
    let status = grpc_feed(&mut client, with_key(req, DEMO_A_KEY))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[actix_rt::test]
async fn every_error_of_the_table_has_its_grpc_code() {
    let app = grpc_app(&[("tenants.demo-b.rate_limit_per_second", 1.into())]).await;
    let mut client = FeedServiceClient::new(channel(&app).await);
    let feed = |tenant: &str, user: &str, limit: u32, key: Option<&str>| {
        let req = feed_request(tenant, user, limit);
        match key {
            Some(k) => with_key(req, k),
            None => Request::new(req),
        }
    };
    let cases = [
        (
            feed("demo-a", "u1", 5, None),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        (
            feed("demo-a", "u1", 5, Some("not-a-key")),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        (
            feed("demo-a", "u1", 5, Some(DEMO_B_KEY)),
            Code::PermissionDenied,
            "permission_denied",
        ),
        (
            feed("no-such-shop", "u1", 5, Some(DEMO_A_KEY)),
            Code::NotFound,
            "not_found",
        ),
        (
            feed("demo-a", "", 5, Some(DEMO_A_KEY)),
            Code::InvalidArgument,
            "invalid_argument",
        ),
        (
            feed("demo-a", "u1", 101, Some(DEMO_A_KEY)),
            Code::InvalidArgument,
            "invalid_argument",
        ),
        (
            feed("demo-a", "bad id!", 5, Some(DEMO_A_KEY)),
            Code::InvalidArgument,
            "invalid_argument",
        ),
    ];
    for (req, code, rest) in cases {
        let status = grpc_feed(&mut client, req).await.unwrap_err();
        assert_eq!(codes(&status), (code, rest.to_owned()), "{status:?}");
        assert!(!status.message().is_empty());
    }
    // The same messages as REST's.
    let status = grpc_feed(&mut client, feed("demo-a", "u1", 101, Some(DEMO_A_KEY)))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "limit must be between 1 and 100");

    // demo-b admits one request per second.
    let first = grpc_feed(&mut client, feed("demo-b", "u1", 5, Some(DEMO_B_KEY))).await;
    assert!(first.is_ok(), "{first:?}");
    let status = grpc_feed(&mut client, feed("demo-b", "u1", 5, Some(DEMO_B_KEY)))
        .await
        .unwrap_err();
    assert_eq!(
        codes(&status),
        (Code::ResourceExhausted, "rate_limited".into())
    );

    // A client's deadline shorter than the service's: 5 ms leave nothing once the answer's
    // margin is kept, so the service says so at once, in its own words (not tonic's
    // CANCELLED at the client's deadline). On a loaded machine (CI: two cores, the suite in
    // parallel) tonic's own 5 ms timer, the client's or the server's, may still fire before
    // that answer is through: CANCELLED "Timeout expired", which says nothing of the service.
    // Such an attempt is made again, a few times at most.
    let mut attempts = 0;
    let status = loop {
        attempts += 1;
        let mut req = feed("demo-a", "u42", 20, Some(DEMO_A_KEY));
        req.set_timeout(Duration::from_millis(5));
        let status = grpc_feed(&mut client, req).await.unwrap_err();
        if status.code() != Code::Cancelled || attempts == 5 {
            break status;
        }
    };
    assert_eq!(
        codes(&status),
        (Code::DeadlineExceeded, "deadline_exceeded".into())
    );
    assert!(status.message().contains("deadline"), "{status:?}");
    // A generous one changes nothing.
    let mut req = feed("demo-a", "u42", 20, Some(DEMO_A_KEY));
    req.set_timeout(Duration::from_secs(30));
    assert!(grpc_feed(&mut client, req).await.is_ok());

    let m = app.metrics().await;
    let handled = |code: &str| {
        let series = format!(
            r#"eaglerank_grpc_server_handled_total{{grpc_code="{code}",grpc_method="GetFeed",grpc_service="eaglerank.v1.FeedService"}}"#
        );
        metric_value(&m, &series)
    };
    assert_eq!(handled("UNAUTHENTICATED"), Some(2.0));
    assert_eq!(handled("INVALID_ARGUMENT"), Some(4.0));
    // The attempt answered, and any the timer beat that the service answered all the same.
    let within_attempts = |n: Option<f64>| n.is_some_and(|n| n >= 1.0 && n <= attempts as f64);
    assert!(
        within_attempts(handled("DEADLINE_EXCEEDED")),
        "{attempts} attempts\n{m}"
    );
    let refused = metric_value(
        &m,
        r#"eaglerank_feed_requests_total{status="deadline_exceeded",tenant="demo-a",transport="grpc"}"#,
    );
    assert!(within_attempts(refused), "{attempts} attempts\n{m}");
}

fn event(id: &str, kind: &str, user: &str, item: &str) -> Event {
    Event {
        event_id: id.into(),
        r#type: kind.into(),
        user_id: user.into(),
        item_id: item.into(),
        timestamp: eaglerank::ingest::now_rfc3339(),
        request_id: None,
    }
}

#[actix_rt::test]
async fn ingest_events_has_the_rest_batch_semantics() {
    let app = grpc_app(&[]).await;
    let mut client = FeedServiceClient::new(channel(&app).await);
    let feed = grpc_feed(
        &mut client,
        with_key(feed_request("demo-a", "u7", 3), DEMO_A_KEY),
    )
    .await
    .unwrap();
    let item = feed.items[0].item_id.clone();
    let before = app.item_stats("demo-a", DEMO_A_KEY, &item).await;

    let mut click = event("g-1", "click", "u7", &item);
    click.request_id = Some(feed.request_id.clone());
    let batch = |events: Vec<Event>| {
        with_key(
            IngestEventsRequest {
                tenant: "demo-a".into(),
                events,
            },
            DEMO_A_KEY,
        )
    };
    let ok = client
        .ingest_events(batch(vec![click.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ok.accepted, ok.duplicates, ok.unknown_items),
        (1, Some(0), Some(0))
    );
    // A replay is accepted and changes nothing.
    let again = client
        .ingest_events(batch(vec![click]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.accepted, again.duplicates), (1, Some(1)));

    // One bad event rejects the batch, every problem listed by index, nothing applied.
    let status = client
        .ingest_events(batch(vec![
            event("g-2", "click", "u7", &item),
            event("g-3", "stare", "u7", &item),
            event("", "click", "u7", &item),
        ]))
        .await
        .unwrap_err();
    assert_eq!(
        codes(&status),
        (Code::InvalidArgument, "invalid_argument".into())
    );
    assert!(
        status
            .message()
            .starts_with("2 invalid event(s); nothing of this batch was applied")
            && status.message().contains("event 1:")
            && status.message().contains("event 2:")
            && !status.message().contains("event 0:"),
        "{}",
        status.message()
    );
    let status = client.ingest_events(batch(vec![])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let after = app.item_stats("demo-a", DEMO_A_KEY, &item).await;
    let clicks = |v: &Value| v["all_time"]["clicks"].as_f64().unwrap();
    assert_eq!(
        clicks(&after) - clicks(&before),
        1.0,
        "one click applied: {after}"
    );
    // g-2 was not applied with its rejected batch: sent alone it is new, not a duplicate.
    let g2 = client
        .ingest_events(batch(vec![event("g-2", "click", "u7", &item)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g2.duplicates, Some(0));
    let m = app.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("eaglerank_events_ingested_total{")
                && l.contains(r#"source="grpc""#)),
        "{m}"
    );
}

async fn status_of(
    health: &mut HealthClient<Channel>,
    service: &str,
) -> Result<i32, tonic::Status> {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[actix_rt::test]
async fn health_follows_readiness_and_watch_streams_the_changes() {
    let mut redis = RedisServer::start();
    let app = grpc_app(&[
        ("redis.url", redis.url().into()),
        ("redis.ping_interval_ms", 100.into()),
        ("redis.command_timeout_ms", 500.into()),
    ])
    .await;
    app.wait_ready(200).await;
    let ch = channel(&app).await;
    let mut health = HealthClient::new(ch.clone());
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    // Health follows readiness within its poll (200 ms).
    for service in ["", "eaglerank.v1.FeedService"] {
        let mut status = None;
        for _ in 0..50 {
            status = Some(status_of(&mut health, service).await.unwrap());
            if status == Some(serving) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, Some(serving), "{service:?}");
    }
    let unknown = status_of(&mut health, "no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "eaglerank.v1.FeedService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .expect("a change within 15 s")
            .expect("the stream stays open")
            .expect("a status")
            .status
    };
    assert_eq!(
        next().await,
        serving,
        "Watch starts with the current status"
    );

    redis.kill();
    assert_eq!(next().await, not_serving);
    assert_eq!(status_of(&mut health, "").await.unwrap(), not_serving);
    app.wait_ready(503).await;
    // Writes need the store: UNAVAILABLE at once, as REST's 503.
    let status = FeedServiceClient::new(ch.clone())
        .ingest_events(with_key(
            IngestEventsRequest {
                tenant: "demo-a".into(),
                events: vec![event("h-1", "click", "u1", "i1")],
            },
            DEMO_A_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(codes(&status), (Code::Unavailable, "unavailable".into()));
    // Feeds degrade visibly instead.
    let feed = grpc_feed(
        &mut FeedServiceClient::new(ch.clone()),
        with_key(feed_request("demo-a", "u1", 5), DEMO_A_KEY),
    )
    .await
    .unwrap();
    assert!(
        feed.degraded && !feed.degraded_reason.is_empty(),
        "{feed:?}"
    );

    redis.restart();
    assert_eq!(next().await, serving);
    app.wait_ready(200).await;
}

#[actix_rt::test]
async fn reflection_lists_the_services_in_both_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = grpc_app(&[]).await;
    let ch = channel(&app).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("{response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["eaglerank.v1.FeedService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }

    // The descriptor of the service, so a client needs no .proto.
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "eaglerank.v1.FeedService".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    assert!(
        matches!(
            response.message_response,
            Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f))
                if !f.file_descriptor_proto.is_empty()
        ),
        "{response:?}"
    );

    let mut old = v1alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let response = old
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert!(format!("{response:?}").contains("eaglerank.v1.FeedService"));
}

#[actix_rt::test]
async fn sigterm_reports_not_serving_then_stops_cleanly() {
    let port = free_port();
    let mut bin = spawn_command(binary_command(&[(
        "EAGLERANK__GRPC__PORT",
        &port.to_string(),
    )]));
    let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("the binary serves gRPC");
    let mut client = FeedServiceClient::new(ch.clone());
    let feed = grpc_feed(
        &mut client,
        with_key(feed_request("demo-a", "u1", 5), DEMO_A_KEY),
    )
    .await
    .unwrap();
    assert_eq!(feed.items.len(), 5);
    let mut watch = HealthClient::new(ch)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap().status;
    assert_eq!(first, ServingStatus::Serving as i32);

    // SAFETY: signalling our own child process.
    unsafe { libc::kill(bin.child.id() as i32, libc::SIGTERM) };
    let mut saw_not_serving = false;
    while let Ok(Some(Ok(update))) =
        tokio::time::timeout(Duration::from_secs(10), watch.next()).await
    {
        if update.status == ServingStatus::NotServing as i32 {
            saw_not_serving = true;
            break;
        }
    }
    assert!(
        saw_not_serving,
        "Watch saw NOT_SERVING before the server went"
    );
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Some(status) = bin.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap()
    .expect("the binary stops within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}
