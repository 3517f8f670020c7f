//! monitoring/ against real tools: promtool/amtool checks (monitoring/check.sh), and a real
//! Prometheus scraping two running EagleRank instances (embedded store and Redis) under
//! traffic, evaluating the recording rules and every dashboard query.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use helpers::{DEMO_A_KEY, DEMO_B_KEY, RedisServer, TestApp, spawn_app_with, spawn_app_with_files};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn promtool_amtool_and_structure_checks_pass() {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/monitoring/check.sh"))
        .output()
        .expect("bash runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "monitoring/check.sh failed (promtool/amtool: scripts/setup):\n{text}"
    );
    assert!(text.contains("checks passed"), "{text}");
}

fn queries() -> Value {
    let out = Command::new("python3")
        .arg(format!("{ROOT}/monitoring/queries.py"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(targets: &[String]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rules: Vec<String> = std::fs::read_dir(format!("{ROOT}/monitoring/prometheus/rules"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rules,
        "scrape_configs": [{"job_name": "eaglerank", "static_configs": [{"targets": targets}]}],
    });
    // JSON is YAML.
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // As every Prometheus of monitoring/ and deploy/ runs: keeps the feed latency's exemplars.
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; scripts/setup installs it)");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn query(client: &reqwest::Client, prom: &Prometheus, expr: &str) -> Vec<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("{}/api/v1/query", prom.url), &[("query", expr)])
            .unwrap();
    let res = client.get(url).send().await;
    let Ok(res) = res else { return Vec::new() };
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_ne!(body["status"], "error", "{expr}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn traffic(apps: &[&TestApp], round: usize) {
    for app in apps {
        for (tenant, key) in [("demo-a", DEMO_A_KEY), ("demo-b", DEMO_B_KEY)] {
            for u in 0..5 {
                app.feed(tenant, key, &format!("user_id=u{u}&limit=10"))
                    .await;
            }
            app.feed(tenant, key, "user_id=u1&limit=0").await;
            // A user without history: missing features for the invalid-values panel.
            app.feed(tenant, key, &format!("user_id=new-{round}")).await;
        }
        // Clicks joined with served feeds (live quality; users of both experiment arms), and
        // one that joins nothing.
        let mut joined = vec![
            json!({"event_id": format!("j{round}-gone"), "type": "click",
            "user_id": "u2", "item_id": "i1", "request_id": "gone",
            "timestamp": eaglerank::ingest::now_rfc3339()}),
        ];
        for u in 0..6 {
            let served: Value = app
                .feed("demo-a", DEMO_A_KEY, &format!("user_id=u{u}&limit=10"))
                .await
                .json()
                .await
                .unwrap();
            joined.push(json!({"event_id": format!("j{round}-{u}"), "type": "click",
                "user_id": format!("u{u}"), "item_id": served["items"][0]["item_id"],
                "request_id": served["request_id"], "timestamp": eaglerank::ingest::now_rfc3339()}));
        }
        app.post_events(&json!(joined)).await;
        // A model reload (the same files: loaded).
        app.client
            .post(app.url("/v1/admin/models/reload"))
            .bearer_auth("er_admin_demo_Wq4Zt8Kp2Nx6")
            .send()
            .await
            .unwrap();
        let events: Vec<Value> = (0..5)
            .map(|i| {
                json!({"event_id": format!("m{round}-{i}"), "type": "click", "user_id": "u1",
                            "item_id": format!("i{i}"), "timestamp": eaglerank::ingest::now_rfc3339()})
            })
            .collect();
        app.post_events(&json!(events)).await;
        // And one invalid batch, so rejections have a series.
        app.post_events(&json!([{"event_id": "x", "type": "like"}]))
            .await;
    }
}

#[actix_rt::test]
async fn every_metric_exists_and_every_dashboard_and_recording_query_returns_data() {
    trace_everything();
    let q = queries();
    let redis = RedisServer::start();
    // Drift windows small enough to be reported during the test.
    let drift = [
        ("model.watchdog_interval_ms", 200.into()),
        ("model.drift_min_samples", 50.into()),
    ];
    // The embedded instance also scores a shadow model for demo-a, runs an experiment (the
    // linear model as its second arm) and serves gRPC.
    let experiment = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(
        experiment.path(),
        "[tenants.demo-a.experiment]\nname = \"linear\"\n\
         arms = [{ name = \"control\", model = \"default\", share = 0.5 }, \
                 { name = \"linear\", model = \"linear\", share = 0.5 }]\n",
    )
    .unwrap();
    let memory = spawn_app_with_files(
        &[experiment.path().to_owned()],
        &[
            ("grpc.port", i64::from(helpers::free_port()).into()),
            drift[0].clone(),
            drift[1].clone(),
            ("models.linear.path", "models/ranker-linear.onnx".into()),
            ("models.linear.metadata", "models/ranker-linear.json".into()),
            ("tenants.demo-a.shadow_model", "linear".into()),
            ("tenants.demo-a.shadow_sample_rate", 1.0.into()),
            // Budgets export their series (and the budget panel has data).
            ("tenants.demo-a.budget.items", 100_000.into()),
            ("tenants.demo-a.budget.feed_log_entries", 100_000.into()),
            ("budgets.report_interval_ms", 200.into()),
        ],
    )
    .await;
    let on_redis = spawn_app_with(&[
        drift[0].clone(),
        drift[1].clone(),
        ("redis.url", redis.url().into()),
        ("redis.ping_interval_ms", 200.into()),
        ("redis.command_timeout_ms", 100.into()),
        ("server.request_deadline_ms", 2000.into()),
    ])
    .await;
    // Give the Redis instance data and wait for its watchdog.
    let mut demo = eaglerank::config::Settings::load(&[]).unwrap().store.demo;
    demo.items = 600;
    demo.users = 100;
    redis.load_demo(&demo, &["demo-a", "demo-b"], 1.79e9).await;
    on_redis.wait_ready(200).await;

    // A third instance fed through Kafka (librdkafka's mock cluster), for the streaming panels.
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("eaglerank-events", 2, 1).unwrap();
    let on_kafka = spawn_app_with(&[
        drift[0].clone(),
        drift[1].clone(),
        ("kafka.brokers", kafka.bootstrap_servers().into()),
        ("kafka.lag_interval_ms", 200.into()),
    ])
    .await;

    let targets: Vec<String> = [&memory, &on_redis, &on_kafka]
        .iter()
        .map(|a| a.address.trim_start_matches("http://").to_owned())
        .collect();
    let prom = start_prometheus(&targets);
    let client = reqwest::Client::new();
    for round in 0..6 {
        traffic(&[&memory, &on_redis, &on_kafka], round).await;
        actix_rt::time::sleep(Duration::from_millis(700)).await;
    }
    // A degraded episode, so the degradation panels have something to show.
    redis.pause();
    for _ in 0..5 {
        on_redis.feed("demo-a", DEMO_A_KEY, "user_id=u1").await;
    }
    redis.resume();
    for round in 6..9 {
        traffic(&[&memory, &on_redis, &on_kafka], round).await;
        actix_rt::time::sleep(Duration::from_millis(700)).await;
    }

    // 1. Every metric a rule or panel names exists in the services' /metrics.
    let exported: BTreeSet<String> = [
        memory.metrics().await,
        on_redis.metrics().await,
        on_kafka.metrics().await,
    ]
    .iter()
    .flat_map(|m| {
        m.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
            .collect::<Vec<_>>()
    })
    .collect();
    for name in q["metrics"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let found = exported.contains(name)
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|s| exported.contains(&format!("{name}{s}")));
        assert!(found, "{name} is used by monitoring/ but not exported");
    }

    // The experiment report reads the same counters from Prometheus (summed over replicas).
    let mut report = Value::Null;
    for _ in 0..20 {
        let out = helpers::cli(
            &[
                "experiment",
                "report",
                "--tenant",
                "demo-a",
                "--json",
                "--prometheus",
                &prom.url,
                "--window",
                "1h",
            ],
            &[],
        );
        if out.status.success() {
            report = serde_json::from_slice(&out.stdout).unwrap();
            if report["arms"][0]["feeds"].as_u64() > Some(0) {
                break;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    }
    let arms: Vec<&str> = report["arms"]
        .as_array()
        .map(|a| a.iter().filter_map(|a| a["arm"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(arms, ["control", "linear"], "{report}");
    assert!(
        report["arms"][1]["ctr_at_10_vs_control"]["z"].is_number(),
        "{report}"
    );

    // 2. Every recording rule and dashboard query returns data from the real Prometheus.
    let mut missing = Vec::new();
    for entry in q["queries"].as_array().unwrap() {
        let expr = entry["expr"].as_str().unwrap();
        let mut found = false;
        for _ in 0..40 {
            if !query(&client, &prom, expr).await.is_empty() {
                found = true;
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(250)).await;
        }
        if !found {
            missing.push(format!(
                "{}: {expr}",
                entry
                    .get("panel")
                    .or(entry.get("record"))
                    .unwrap_or(&entry["source"])
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "queries without data:\n{}",
        missing.join("\n")
    );

    // 3. The feeds' traces are sampled (the service's own provider, exporting to memory): the
    // latency histogram's exemplars reach Prometheus' exemplar storage with their trace ids.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query_exemplars", prom.url),
        &[
            ("query", "eaglerank_feed_latency_seconds_bucket"),
            ("start", "0"),
            ("end", "99999999999"),
        ],
    )
    .unwrap();
    let mut trace_ids = Vec::new();
    for _ in 0..40 {
        let body: Value = client
            .get(url.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        trace_ids = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
            .collect();
        if !trace_ids.is_empty() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!trace_ids.is_empty(), "no exemplar stored by Prometheus");
    assert!(trace_ids.iter().all(|t| t.len() == 32), "{trace_ids:?}");
}

/// Installs the service's tracer provider, sampling every feed and exporting to memory, so
/// that the instances' feeds carry exemplars.
fn trace_everything() {
    let mut settings = eaglerank::config::Settings::load(&[]).unwrap();
    settings.tracing.sample_ratio = 1.0;
    // Quiet: the log level no longer decides what is traced.
    settings.log.level = "off".into();
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = eaglerank::telemetry::otel::provider(exporter, &settings.tracing, "eaglerank");
    std::mem::forget(eaglerank::telemetry::otel::install(
        &settings.log,
        "eaglerank",
        Some(provider),
    ));
}
