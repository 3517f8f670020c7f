//! `eaglerank chaos`: the faults whose peer runs inside this process, under feed load. Kafka has
//! no broker that can run on the build machines, so its faults are played against librdkafka's
//! mock cluster (in process, like `bench-ingest`); actor panics have no outside trigger. The
//! service is the real one (`startup::Application`, embedded store), loaded by HTTP clients
//! here; `loadtest/chaos` runs these scenarios beside its Redis and model ones and prints them
//! in one table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::actors::InjectPanic;
use crate::config::Settings;
use crate::startup::Application;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every Kafka broker down while clients post events and read feeds.
    KafkaDown,
    /// Poison messages (unknown tenant, unparseable, invalid) interleaved with valid events.
    KafkaPoison,
    /// Panics injected into every feed lane's gateway and ranker, over and over.
    ActorPanics,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// How long the fault lasts (and the baseline before it).
    #[arg(long, default_value_t = 5)]
    pub fault_seconds: u64,
    /// Concurrent feed clients.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
}

#[derive(Debug, Serialize)]
pub struct ChaosReport {
    pub scenario: Scenario,
    /// Feed requests during the fault.
    pub requests: u64,
    /// Answers other than 200 during the fault, by status (0: no answer).
    pub non_200: BTreeMap<u16, u64>,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub baseline_rps: f64,
    pub throughput_vs_baseline: f64,
    /// Events the API accepted (202), and how many of them were applied in the end.
    pub events_accepted: u64,
    pub events_applied: u64,
    /// Event batches the API refused (503) during the fault.
    pub event_batches_refused: u64,
    pub events_dead_lettered: u64,
    pub actor_restarts: u64,
    pub kafka_consumer_restarts: u64,
}

/// Feed answers of one phase.
#[derive(Default)]
struct Load {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    elapsed: Duration,
}

const KEY: &str = "er_demo_a_7Qk2mV9xLp4sT8wZ";

/// `connections` clients reading demo-a feeds as fast as answered, for `seconds`.
async fn feed_load(base: String, connections: usize, seconds: u64) -> Load {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (client, base) = (client.clone(), base.clone());
            actix_rt::spawn(async move {
                let mut out = Vec::new();
                let mut n = c;
                while Instant::now() < until {
                    n += connections;
                    let t = Instant::now();
                    let status = client
                        .get(format!(
                            "{base}/v1/tenants/demo-a/feed?user_id=u{}",
                            n % 2000
                        ))
                        .bearer_auth(KEY)
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    out.push((status, t.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut load = Load::default();
    for task in tasks {
        for (status, latency) in task.await.unwrap_or_default() {
            *load.statuses.entry(status).or_default() += 1;
            load.latencies.push(latency);
        }
    }
    load.elapsed = started.elapsed();
    load
}

impl Load {
    fn requests(&self) -> u64 {
        self.latencies.len() as u64
    }

    fn rps(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    fn quantile_ms(&mut self, q: f64) -> f64 {
        self.latencies.sort();
        self.latencies
            .get(((self.latencies.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

fn counter_sum(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().value() as u64)
        })
        .sum()
}

fn kafka_applied(metrics: &Metrics) -> u64 {
    ["impression", "click", "add_to_cart", "purchase"]
        .iter()
        .map(|t| {
            metrics
                .events_ingested_total
                .with_label_values(&["demo-a", t, "kafka"])
                .get()
        })
        .sum()
}

fn event(id: &str, user: u64, item: u64) -> serde_json::Value {
    serde_json::json!({"event_id": id, "type": "click", "user_id": format!("u{user}"),
        "item_id": format!("i{item}"), "timestamp": crate::ingest::now_rfc3339()})
}

/// Waits (up to a minute) until `done` holds.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        anyhow::ensure!(Instant::now() < until, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn run(mut settings: Settings, args: &ChaosArgs) -> anyhow::Result<ChaosReport> {
    settings.server.port = 0;
    settings.server.host = "127.0.0.1".into();
    let kafka = match args.scenario {
        Scenario::KafkaDown | Scenario::KafkaPoison => {
            let mock = MockCluster::new(3)?;
            mock.create_topic(&settings.kafka.topic, 2, 1)?;
            settings.kafka.brokers = mock.bootstrap_servers();
            // A consumer stuck after the outage is rebuilt within seconds, not half a minute.
            settings.kafka.stall_timeout = Duration::from_secs(5);
            // The rebuilt consumer rejoins its group once the old member's session has expired:
            // librdkafka's default of 45 s left the scenario 15 s from its one-minute wait.
            settings
                .kafka
                .properties
                .insert("session.timeout.ms".into(), "6000".into());
            Some(mock)
        }
        Scenario::ActorPanics => None,
    };
    let app = Application::build(settings.clone()).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (metrics, actors, handle) = (app.metrics().clone(), app.actors().clone(), app.handle());
    actix_rt::spawn(app.run_until_stopped());

    let baseline_rps = feed_load(base.clone(), args.connections, args.fault_seconds)
        .await
        .rps();
    let restarts_before = counter_sum(&metrics, "eaglerank_actor_restarts_total");
    let client = reqwest::Client::new();
    let (mut accepted, mut refused) = (0u64, 0u64);
    let load = actix_rt::spawn(feed_load(
        base.clone(),
        args.connections,
        args.fault_seconds,
    ));
    let fault_until = Instant::now() + Duration::from_secs(args.fault_seconds);
    match args.scenario {
        Scenario::KafkaDown => {
            let mock = kafka.as_ref().context("the mock cluster")?;
            for broker in 1..=3 {
                mock.broker_down(broker)?;
            }
            let mut n = 0u64;
            let post = async |n: u64| -> anyhow::Result<bool> {
                let batch: Vec<_> = (0..10)
                    .map(|k| event(&format!("down-{n}-{k}"), n, k))
                    .collect();
                let res = client
                    .post(format!("{base}/v1/tenants/demo-a/events"))
                    .bearer_auth(KEY)
                    .json(&serde_json::json!({ "events": batch }))
                    .send()
                    .await?;
                Ok(res.status() == 202)
            };
            while Instant::now() < fault_until {
                n += 1;
                if post(n).await? {
                    accepted += 10;
                } else {
                    refused += 1;
                }
            }
            for broker in 1..=3 {
                mock.broker_up(broker)?;
            }
            // Clients retry what was refused; the API accepts again once the brokers are back.
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                n += 1;
                if post(n).await? {
                    accepted += 10;
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < until,
                    "events still refused after the outage"
                );
                actix_rt::time::sleep(Duration::from_millis(100)).await;
            }
            wait_for("every accepted event applied", || {
                kafka_applied(&metrics) >= accepted
            })
            .await?;
        }
        Scenario::KafkaPoison => {
            let mock = kafka.as_ref().context("the mock cluster")?;
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", mock.bootstrap_servers())
                .create()?;
            let mut valid = 0u64;
            let mut i = 0u64;
            while Instant::now() < fault_until {
                i += 1;
                let payload = match i % 4 {
                    // A tenant this service does not have, an unparseable one, an invalid one.
                    0 => serde_json::json!({"tenant": "no-such-shop", "event": event(&format!("p{i}"), i, 1)}).to_string(),
                    1 => "{not json".to_owned(),
                    2 => serde_json::json!({"tenant": "demo-a", "event": event("bad id", i, 1)}).to_string(),
                    _ => {
                        valid += 1;
                        serde_json::json!({"tenant": "demo-a", "event": event(&format!("v{i}"), i % 2000, i % 1000)}).to_string()
                    }
                };
                let key = format!("demo-a:u{}", i % 2000);
                producer
                    .send(
                        FutureRecord::to(&settings.kafka.topic)
                            .key(&key)
                            .payload(&payload),
                        Duration::from_secs(5),
                    )
                    .await
                    .map_err(|(e, _)| e)?;
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            accepted = valid;
            let poison = i - valid;
            wait_for("every valid event applied", || {
                kafka_applied(&metrics) >= valid
            })
            .await?;
            wait_for("every poison message dead-lettered", || {
                counter_sum(&metrics, "eaglerank_events_dead_lettered_total") >= poison
            })
            .await?;
        }
        Scenario::ActorPanics => {
            while Instant::now() < fault_until {
                for lane in actors.lanes.all() {
                    let _ = lane.gateway.send(InjectPanic).await;
                    let _ = lane.ranker.send(InjectPanic).await;
                }
                actix_rt::time::sleep(Duration::from_millis(250)).await;
            }
            let health = actors.health.clone();
            wait_for("every actor up again", || {
                health.snapshot().iter().all(|a| a.up)
            })
            .await?;
        }
    }
    let mut during = load.await?;
    let restarts = counter_sum(&metrics, "eaglerank_actor_restarts_total") - restarts_before;
    let kafka_consumer_restarts = metrics
        .actor_restarts_total
        .with_label_values(&["kafka_consumer"])
        .get();
    let report = ChaosReport {
        scenario: args.scenario,
        requests: during.requests(),
        non_200: during
            .statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(s, n)| (*s, *n))
            .collect(),
        p99_ms: during.quantile_ms(0.99),
        max_ms: during.quantile_ms(1.0),
        baseline_rps,
        throughput_vs_baseline: during.rps() / baseline_rps.max(1e-9),
        events_accepted: accepted,
        events_applied: kafka_applied(&metrics),
        event_batches_refused: refused,
        events_dead_lettered: counter_sum(&metrics, "eaglerank_events_dead_lettered_total"),
        actor_restarts: restarts,
        kafka_consumer_restarts,
    };
    handle.stop(true).await;
    drop(kafka);
    Ok(report)
}
