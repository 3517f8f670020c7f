//! `eaglerank bench-components`: the cost of each part of a feed on its own, through the
//! service's own code but without the service around it — ONNX inference of one batch,
//! feature assembly, and the store reads of one request. `loadtest/bench` puts these next to
//! the service's measured throughput to show where the time goes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::Settings;
use crate::ranking::features::{FeatureContext, FeatureHealth};
use crate::ranking::model::LoadedModel;
use crate::ranking::pipeline::{self, Scorable};
use crate::store::{FeatureStore, MemoryStore, RedisStore};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Timed repetitions of each measurement (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 300)]
    pub iterations: usize,
    /// Tenant whose demo data is used.
    #[arg(long, default_value = "demo-a")]
    pub tenant: String,
}

/// Milliseconds, from a sorted sample.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub samples: usize,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    Summary {
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        mean_ms: samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64,
        samples: samples.len(),
    }
}

async fn time_async<F, Fut, T>(iterations: usize, mut f: F) -> anyhow::Result<Summary>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    for _ in 0..iterations / 10 {
        f().await?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        f().await?;
        samples.push(t.elapsed());
    }
    Ok(summarize(samples))
}

#[derive(Debug, Serialize)]
pub struct ComponentCosts {
    pub model: String,
    pub model_version: String,
    pub batch_rows: usize,
    pub inference: Summary,
    pub feature_assembly: Summary,
    /// The store reads of one feed request: user profile, candidate lists, item features.
    pub store_fetch: std::collections::BTreeMap<&'static str, Summary>,
}

/// One request's reads, through the pipeline's store stages as a feed session runs them.
async fn fetch_once(
    store: &dyn FeatureStore,
    settings: &Settings,
    tenant: &str,
    user: &str,
) -> anyhow::Result<Vec<Scorable>> {
    let limits = settings.candidate_limits(tenant);
    Ok(pipeline::gather(store, tenant, user, &limits).await?.1)
}

pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<ComponentCosts> {
    let model = LoadedModel::load(&settings.model)?;
    let metrics = Metrics::new();
    let memory = MemoryStore::new([args.tenant.clone()]);
    let anchor = settings
        .store
        .demo
        .anchor
        .unwrap_or_else(crate::domain::unix_now);
    crate::demo::seed_tenant(
        &memory,
        &settings.store.demo,
        &args.tenant,
        anchor,
        &metrics,
    )
    .await?;

    let user = "u42";
    let records = fetch_once(&memory, settings, &args.tenant, user).await?;
    anyhow::ensure!(!records.is_empty(), "the demo tenant has no candidates");
    let profile = memory.user_profile(&args.tenant, user).await?;
    let ctx = FeatureContext::new(crate::domain::unix_now(), profile.as_deref());

    let mut matrix = Vec::new();
    let mut health = FeatureHealth::default();
    let assembly = time_async(args.iterations, || {
        pipeline::feature_rows(&model.spec, &ctx, &records, &mut matrix, &mut health);
        std::future::ready(Ok(()))
    })
    .await?;
    pipeline::feature_rows(&model.spec, &ctx, &records, &mut matrix, &mut health);

    let mut scorer = model.scorer()?;
    let rows = records.len();
    let inference = time_async(args.iterations, || {
        std::future::ready(scorer.score(&matrix, rows).map_err(anyhow::Error::from))
    })
    .await?;

    let mut store_fetch = std::collections::BTreeMap::new();
    store_fetch.insert(
        "memory",
        time_async(args.iterations, || {
            fetch_once(&memory, settings, &args.tenant, user)
        })
        .await?,
    );
    if settings.redis.enabled() {
        let redis = RedisStore::connect(&settings.redis).context("connecting to Redis")?;
        store_fetch.insert(
            "redis",
            time_async(args.iterations, || {
                fetch_once(&redis, settings, &args.tenant, user)
            })
            .await?,
        );
    }
    Ok(ComponentCosts {
        model: model.metadata.name.clone(),
        model_version: model.metadata.version.clone(),
        batch_rows: rows,
        inference,
        feature_assembly: assembly,
        store_fetch,
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct IngestBenchArgs {
    /// Events to push through Kafka into the store.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Partitions of the event topic, at least: raised so that no partition holds more than
    /// the mock cluster keeps (it drops a partition's oldest messages past 5 MB).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Tenant whose demo catalog the events refer to.
    #[arg(long, default_value = "demo-a")]
    pub tenant: String,
}

#[derive(Debug, Serialize)]
pub struct IngestCosts {
    pub events: usize,
    pub partitions: i32,
    pub backend: &'static str,
    pub broker: &'static str,
    pub produce_seconds: f64,
    /// From the first applied event to the last: the consumer's sustained rate.
    pub apply_seconds: f64,
    pub events_per_second: f64,
}

/// Events from Kafka through the consumer actor into the store, end to end: the demo's
/// history is produced to a topic on librdkafka's mock cluster (the broker that runs here;
/// in process, so its cost is on these cores too), then a service built from `settings`
/// consumes it. With `redis.url` set, the store is Redis (load the demo into it first).
pub async fn run_ingest(
    mut settings: Settings,
    args: &IngestBenchArgs,
) -> anyhow::Result<IngestCosts> {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    settings.server.port = 0;

    let anchor = settings
        .store
        .demo
        .anchor
        .unwrap_or_else(crate::domain::unix_now);
    let market = crate::demo::Marketplace::generate(&settings.store.demo, &args.tenant, anchor);
    let history = market.history(settings.store.demo.history_sessions_per_user, anchor);
    anyhow::ensure!(!history.is_empty(), "the demo marketplace has no events");
    let now = crate::ingest::now_rfc3339();
    // Ids unique to this run: a rerun within the dedup window must measure fresh events.
    let run = format!("{:x}", (crate::domain::unix_now() * 1e3) as u64);
    let payloads: Vec<(String, Vec<u8>)> = history
        .iter()
        .cycle()
        .take(args.events)
        .enumerate()
        .map(|(n, e)| {
            let msg = crate::ingest::kafka::EventMessage {
                tenant: args.tenant.clone(),
                event: crate::ingest::EventInput {
                    event_id: format!("bench-{run}-{n}"),
                    kind: e.kind,
                    user_id: e.user_id.clone(),
                    item_id: e.item_id.to_string(),
                    timestamp: now.clone(),
                    request_id: None,
                },
            };
            Ok((
                format!("{}:{}", args.tenant, e.user_id),
                serde_json::to_vec(&msg)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;

    // librdkafka's mock cluster keeps 5 MB per partition (rdkafka_mock.c, `max_size`) and
    // silently drops older messages: produced all at once, a larger run would lose its first
    // events (it was seen to stall at 110 000 of 200 000 on 4 partitions).
    const MOCK_PARTITION_BYTES: usize = 4 << 20;
    let bytes: usize = payloads.iter().map(|(k, p)| k.len() + p.len() + 64).sum();
    let partitions = args
        .partitions
        .max(i32::try_from(bytes.div_ceil(MOCK_PARTITION_BYTES)).unwrap_or(i32::MAX));
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic(&settings.kafka.topic, partitions, 1)?;
    settings.kafka.brokers = mock.bootstrap_servers();

    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    let started = Instant::now();
    let deliveries = payloads.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(&settings.kafka.topic)
                .key(key)
                .payload(payload),
            Duration::from_secs(30),
        )
    });
    for d in futures::future::join_all(deliveries).await {
        d.map_err(|(e, _)| e)?;
    }
    let produce_seconds = started.elapsed().as_secs_f64();

    let backend = if settings.redis.enabled() {
        "redis"
    } else {
        "memory"
    };
    let app = crate::startup::Application::build(settings).await?;
    let metrics = app.metrics().clone();
    // Every event ends up counted once: applied, a duplicate, or rejected for a reason.
    let outcomes = || -> [(&str, u64); 5] {
        let applied = ["impression", "click", "add_to_cart", "purchase"]
            .iter()
            .map(|t| {
                metrics
                    .events_ingested_total
                    .with_label_values(&[args.tenant.as_str(), t, "kafka"])
                    .get()
            })
            .sum();
        let rejected = |reason| {
            metrics
                .events_rejected_total
                .with_label_values(&[reason])
                .get()
        };
        [
            ("applied", applied),
            (
                "duplicates",
                metrics
                    .events_duplicates_total
                    .with_label_values(&[args.tenant.as_str()])
                    .get(),
            ),
            ("unknown_item", rejected("unknown_item")),
            ("invalid", rejected("invalid")),
            ("unparseable", rejected("unparseable")),
        ]
    };
    let done = || outcomes().iter().map(|(_, n)| n).sum::<u64>() as usize;
    // Fails when nothing moves for a while rather than after a fixed time: a slow machine
    // still finishes, a stall says where the events went.
    const STALL: Duration = Duration::from_secs(60);
    let mut first = None;
    let (mut last, mut moved) = (0, Instant::now());
    loop {
        let now_done = done();
        if now_done != last {
            (last, moved) = (now_done, Instant::now());
            first.get_or_insert_with(Instant::now);
        }
        if now_done >= args.events {
            break;
        }
        anyhow::ensure!(
            moved.elapsed() < STALL,
            "ingestion stalled at {now_done} of {} events for {STALL:?}: {:?}",
            args.events,
            outcomes()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let apply_seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64()).max(1e-3);
    // The server was never run: dropping `app` at exit is the whole shutdown.
    Ok(IngestCosts {
        events: args.events,
        partitions,
        backend,
        broker: "librdkafka mock cluster (in process)",
        produce_seconds,
        apply_seconds,
        events_per_second: args.events as f64 / apply_seconds,
    })
}
