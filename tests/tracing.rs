//! OpenTelemetry tracing, in its own test binary (and so its own process): the tracer is
//! global. In-process tests use the SDK's in-memory exporter through the service's real
//! provider (sampler, bounded queue, batch processor); the wire tests run the real binary
//! against a real OTLP/HTTP receiver started here.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use eaglerank::config::Settings;
use eaglerank::telemetry;
use helpers::{DEMO_A_KEY, RedisServer, spawn_app_with, spawn_binary};
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use prost::Message;
use serde_json::Value;

static TRACER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();

/// The service's own provider, sampling everything, exporting to memory.
fn tracer() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    TRACER.get_or_init(|| {
        let mut settings = Settings::load(&[]).unwrap();
        settings.tracing.sample_ratio = 1.0;
        settings.tracing.export_delay = std::time::Duration::from_millis(10);
        let exporter = InMemorySpanExporter::default();
        let provider = telemetry::otel::provider(exporter.clone(), &settings.tracing, "eaglerank");
        std::mem::forget(telemetry::otel::install(
            &settings.log,
            "eaglerank",
            Some(provider.clone()),
        ));
        (exporter, provider)
    })
}

fn finished() -> Vec<SpanData> {
    let (exporter, provider) = tracer();
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[actix_rt::test]
async fn one_trace_per_feed_across_every_actor_hop_joined_to_the_callers_trace() {
    tracer();
    let redis = RedisServer::start();
    let app = spawn_app_with(&[
        ("redis.url", redis.url().into()),
        ("redis.command_timeout_ms", 2000.into()),
        ("server.request_deadline_ms", 10_000.into()),
    ])
    .await;
    let mut demo = Settings::load(&[]).unwrap().store.demo;
    demo.items = 800;
    demo.users = 100;
    redis.load_demo(&demo, &["demo-a"], 1.79e9).await;
    // Wait for the watchdog's first PING, so the feed is whole (not degraded).
    app.wait_ready(200).await;

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let res = app
        .client
        .get(app.url("/v1/tenants/demo-a/feed?user_id=u3&limit=5"))
        .bearer_auth(DEMO_A_KEY)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-trace-id"], caller_trace);
    let traceresponse = res.headers()["traceresponse"].to_str().unwrap().to_owned();
    assert!(
        traceresponse.starts_with(&format!("00-{caller_trace}-")) && traceresponse.ends_with("-01")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["degraded"], false);

    let trace_id = TraceId::from_hex(caller_trace).unwrap();
    let mut spans: Vec<SpanData> = Vec::new();
    for _ in 0..100 {
        spans = finished()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        if spans
            .iter()
            .any(|s| s.name == "GET /v1/tenants/{tenant}/feed")
        {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let by_name: HashMap<&str, &SpanData> = spans.iter().map(|s| (&*s.name, s)).collect();
    let span = |name: &str| {
        *by_name
            .get(name)
            .unwrap_or_else(|| panic!("no {name} span in {:?}", by_name.keys()))
    };
    let parent_of = |child: &str, parent: &str| {
        assert_eq!(
            span(child).parent_span_id,
            span(parent).span_context.span_id(),
            "{child} should be a child of {parent}"
        );
    };

    let root = span("GET /v1/tenants/{tenant}/feed");
    assert_eq!(
        root.parent_span_id,
        SpanId::from_hex(caller_span).unwrap(),
        "the caller's span is the root's parent"
    );
    assert!(root.parent_span_is_remote);
    assert_eq!(
        attr(root, "http.route").as_deref(),
        Some("/v1/tenants/{tenant}/feed")
    );
    assert_eq!(attr(root, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(root, "tenant").as_deref(), Some("demo-a"));
    assert_eq!(root.span_kind, opentelemetry::trace::SpanKind::Server);
    assert_eq!(
        traceresponse,
        format!("00-{caller_trace}-{}-01", root.span_context.span_id())
    );

    parent_of("feed.session", "GET /v1/tenants/{tenant}/feed");
    parent_of("store.user_profile", "feed.session");
    parent_of("candidates.fetch", "feed.session");
    parent_of("store.candidate_lists", "candidates.fetch");
    parent_of("candidates.merge", "candidates.fetch");
    // The first feed fills the lists' cache: the items are read under the lists' span (later
    // feeds get the records with the cached lists, and read none).
    parent_of("features.fetch", "store.candidate_lists");
    // Across the SyncArbiter: the ranker runs on its own thread.
    parent_of("ranker.rank", "feed.session");
    parent_of("features.assemble", "ranker.rank");
    parent_of("model.inference", "ranker.rank");

    let session = span("feed.session");
    assert_eq!(attr(session, "tenant").as_deref(), Some("demo-a"));
    assert_eq!(attr(session, "degraded").as_deref(), Some("false"));
    let n: usize = attr(session, "num_candidates").unwrap().parse().unwrap();
    assert!(n > 5);
    assert_eq!(
        attr(span("ranker.rank"), "num_candidates"),
        Some(n.to_string())
    );
    let inference = span("model.inference");
    assert_eq!(
        attr(inference, "model.name").as_deref(),
        Some("eaglerank-lgbm-lambdarank")
    );
    assert!(attr(inference, "model.version").is_some());
    let fetch = span("features.fetch");
    let hits: usize = attr(fetch, "cache.hits").unwrap().parse().unwrap();
    let misses: usize = attr(fetch, "cache.misses").unwrap().parse().unwrap();
    let listed: usize = attr(fetch, "num_items").unwrap().parse().unwrap();
    assert_eq!(hits + misses, listed);
    assert!(
        misses > 0 && listed >= n,
        "{misses} misses, {listed} listed, {n} served"
    );
    assert_eq!(attr(fetch, "backend").as_deref(), Some("redis"));
    assert!(attr(span("store.candidate_lists"), "source.trending").is_some());
}

#[actix_rt::test]
async fn a_grpc_call_continues_the_callers_trace_with_rpc_attributes() {
    use eaglerank::grpc::proto::GetFeedRequest;
    use eaglerank::grpc::proto::feed_service_client::FeedServiceClient;
    tracer();
    let port = helpers::free_port();
    let app = spawn_app_with(&[("grpc.port", i64::from(port).into())]).await;
    let mut client = FeedServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let mut req = tonic::Request::new(GetFeedRequest {
        tenant: "demo-a".into(),
        user_id: "u3".into(),
        limit: 5,
        explain: false,
        cursor: String::new(),
    });
    let md = req.metadata_mut();
    md.insert(
        "authorization",
        format!("Bearer {DEMO_A_KEY}").parse().unwrap(),
    );
    md.insert(
        "traceparent",
        format!("00-{caller_trace}-{caller_span}-01")
            .parse()
            .unwrap(),
    );
    let res = client.get_feed(req).await.unwrap();
    assert_eq!(res.metadata().get("x-trace-id").unwrap(), caller_trace);
    assert_eq!(res.into_inner().items.len(), 5);
    drop(app);

    let trace_id = TraceId::from_hex(caller_trace).unwrap();
    let name = "eaglerank.v1.FeedService/GetFeed";
    let mut spans: Vec<SpanData> = Vec::new();
    for _ in 0..100 {
        spans = finished()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        if spans.iter().any(|s| s.name == name) && spans.iter().any(|s| s.name == "feed.session") {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let root = spans.iter().find(|s| s.name == name).expect("the RPC span");
    assert_eq!(root.parent_span_id, SpanId::from_hex(caller_span).unwrap());
    assert!(root.parent_span_is_remote);
    assert_eq!(root.span_kind, opentelemetry::trace::SpanKind::Server);
    assert_eq!(attr(root, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(root, "rpc.service").as_deref(),
        Some("eaglerank.v1.FeedService")
    );
    assert_eq!(attr(root, "rpc.method").as_deref(), Some("GetFeed"));
    assert_eq!(attr(root, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr(root, "tenant").as_deref(), Some("demo-a"));
    // The same session as REST's, under the RPC span, across the lane's thread.
    let session = spans.iter().find(|s| s.name == "feed.session").unwrap();
    assert_eq!(session.parent_span_id, root.span_context.span_id());
}

#[actix_rt::test]
async fn probes_and_scrapes_create_no_spans_and_failures_mark_the_span() {
    tracer();
    let app = spawn_app_with(&[]).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert!(res.headers().get("x-trace-id").is_none(), "{path}");
    }
    let res = app.feed("demo-a", DEMO_A_KEY, "user_id=u1&limit=500").await;
    assert_eq!(res.status(), 400);
    let trace = res.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let trace_id = TraceId::from_hex(&trace).unwrap();
    let mut root = None;
    for _ in 0..100 {
        let spans = finished();
        assert!(
            !spans
                .iter()
                .any(|s| ["GET /healthz", "GET /readyz", "GET /metrics"].contains(&&*s.name)),
            "probes are not traced"
        );
        root = spans
            .into_iter()
            .find(|s| s.span_context.trace_id() == trace_id);
        if root.is_some() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let root = root.expect("the failed request's root span");
    assert_eq!(
        attr(&root, "http.response.status_code").as_deref(),
        Some("400")
    );
    // A client error is not the server's failure (OpenTelemetry HTTP conventions).
    assert!(!matches!(root.status, Status::Error { .. }));
}

#[actix_rt::test]
async fn the_latency_histogram_carries_the_trace_ids_of_sampled_feeds_as_exemplars() {
    tracer();
    let app = spawn_app_with(&[]).await;
    let res = app.feed("demo-a", DEMO_A_KEY, "user_id=u5&limit=10").await;
    assert_eq!(res.status(), 200);
    let trace = res.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let scrape = |accept: &'static str| {
        let req = app.client.get(app.url("/metrics")).header("accept", accept);
        async move {
            let res = req.send().await.unwrap();
            let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
            (kind, res.text().await.unwrap())
        }
    };
    // What Prometheus asks for: OpenMetrics, with the exemplar on the feed's bucket.
    let (kind, om) =
        scrape("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5").await;
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(om.ends_with("# EOF\n"));
    let exemplar = format!("# {{trace_id=\"{trace}\"}}");
    let line = om
        .lines()
        .find(|l| l.contains(&exemplar))
        .unwrap_or_else(|| panic!("no exemplar for {trace}"));
    assert!(
        line.starts_with(
            r#"eaglerank_feed_latency_seconds_bucket{tenant="demo-a",transport="http",le=""#
        ),
        "{line}"
    );
    // `… <count> # {trace_id="…"} <seconds> <unix time>`: the value is the feed's latency.
    let parts: Vec<&str> = line.split_whitespace().collect();
    let latency: f64 = parts[parts.len() - 2].parse().unwrap();
    let upper: f64 = line
        .split("le=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(latency > 0.0 && latency <= upper, "{line}");
    // A counter's family is named without `_total`; its samples keep it.
    assert!(om.contains("# TYPE eaglerank_feed_requests counter\n"));
    assert!(om.contains("eaglerank_feed_requests_total{"));
    // Any other scraper: the classic text format, the same series, no exemplars.
    let (kind, text) = scrape("text/plain").await;
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    assert!(!text.contains("# {") && !text.contains("# EOF"));
    assert!(text.contains("# TYPE eaglerank_feed_requests_total counter"));
}

/// An OTLP/HTTP receiver: decodes every export and keeps the spans.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

async fn receiver() -> Receiver {
    let spans: Arc<Mutex<Vec<_>>> = Arc::default();
    let kept = spans.clone();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in request.resource_spans {
                        for ss in rs.scope_spans {
                            kept.lock().unwrap().extend(ss.spans);
                        }
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .body(Vec::<u8>::new())
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    Receiver {
        url: format!("http://127.0.0.1:{port}/v1/traces"),
        spans,
    }
}

/// Runs the binary exporting to `receiver` at `ratio`, sends `n` feeds, stops it with SIGTERM
/// (which must flush) and returns the feeds' JSON log lines.
async fn run_binary(receiver: &Receiver, ratio: &str, n: usize) -> Vec<Value> {
    let mut bin = spawn_binary(&[
        ("EAGLERANK__TRACING__OTLP_ENDPOINT", &receiver.url),
        ("EAGLERANK__TRACING__SAMPLE_RATIO", ratio),
        // A long delay: only the shutdown flush can deliver the spans in time.
        ("EAGLERANK__TRACING__EXPORT_DELAY_MS", "60000"),
    ]);
    let client = reqwest::Client::new();
    for i in 0..n {
        let res = client
            .get(format!(
                "{}/v1/tenants/demo-a/feed?user_id=u{i}",
                bin.address
            ))
            .bearer_auth(DEMO_A_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(bin.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = actix_rt::task::spawn_blocking(move || {
        let status = bin.child.wait().unwrap();
        (status, bin.drain_logs(Duration::from_millis(200)))
    })
    .await
    .unwrap();
    assert!(status.0.success());
    status
        .1
        .into_iter()
        .filter(|l| l["event"] == "FeedServed")
        .collect()
}

#[actix_rt::test]
async fn the_binary_exports_sampled_traces_over_otlp_and_logs_join_them() {
    let all = receiver().await;
    let served = run_binary(&all, "1.0", 3).await;
    assert_eq!(served.len(), 3);
    let spans = all.spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for line in &served {
        let trace_id = line["trace_id"].as_str().expect("log lines carry trace_id");
        assert!(line["span_id"].as_str().is_some_and(|s| s.len() == 16));
        let names: Vec<&str> = spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .map(|s| s.name.as_str())
            .collect();
        for expected in [
            "GET /v1/tenants/{tenant}/feed",
            "feed.session",
            "candidates.fetch",
            "ranker.rank",
            "model.inference",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from trace {trace_id}: {names:?}"
            );
        }
    }

    let none = receiver().await;
    let served = run_binary(&none, "0.0", 3).await;
    assert_eq!(served.len(), 3);
    assert!(
        none.spans.lock().unwrap().is_empty(),
        "ratio 0.0 exports nothing"
    );
}
