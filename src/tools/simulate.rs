//! `eaglerank simulate`: users with hidden tastes request feeds; the real candidate and
//! feature code builds them; a ranking policy orders them; the click model reacts; the events
//! flow back into the store. Every shown item is logged with the exact feature vector that
//! serving computes, which is what `training/train.py` learns from.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::FastSet;
use crate::config::Settings;
use crate::demo::seed_tenant;
use crate::domain::{Event, EventKind, ItemId, UnixSeconds};
use crate::ranking::features::{FeatureContext, FeatureHealth, FeatureSpec};
use crate::ranking::model::{LoadedModel, Scorer};
use crate::ranking::pipeline::{self, RankRequest};
use crate::ranking::rules::TenantRules;
use crate::store::{FeatureStore, MemoryStore};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Uniformly random order: unbiased logs, the right data to train a first model on.
    Random,
    /// The configured model's order: what users of the live service see.
    Model,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Tenant whose demo marketplace is simulated.
    #[arg(long, default_value = "demo-a")]
    pub tenant: String,
    /// Number of feed requests.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Items shown per feed (the rest of the candidates are not logged).
    #[arg(long, default_value_t = 20)]
    pub shown: usize,
    /// Share of requests from users the store has never seen.
    #[arg(long, default_value_t = 0.1)]
    pub new_user_share: f64,
    #[arg(long, value_enum, default_value_t = Policy::Random)]
    pub policy: Policy,
    /// Seed of the simulated users' behaviour (the marketplace uses the configured seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated start time (Unix seconds); defaults to now. Fix it to reproduce a log exactly.
    #[arg(long)]
    pub anchor: Option<f64>,
    /// Where to write the impression log (JSON lines; the first line is the schema).
    #[arg(long, default_value = "training/data/impressions.jsonl")]
    pub out: PathBuf,
    /// Also send the simulated events, as they happen, to a running EagleRank's REST endpoint
    /// (base URL, e.g. http://127.0.0.1:8080), to watch features move under live traffic.
    #[arg(long)]
    pub emit_url: Option<String>,
    /// The tenant's API key for --emit-url.
    #[arg(long, env = "EAGLERANK_API_KEY")]
    pub emit_key: Option<String>,
    /// Also produce the simulated events to Kafka (the [kafka] brokers and topic of the config).
    #[arg(long)]
    pub emit_kafka: bool,
    /// Also write every candidate of one request in `candidates_every` (all ~500, not only the
    /// shown ones) with its feature row and the click model's position-free probability: what
    /// a first ranking stage is trained and judged on (`train.py --model first-stage`).
    #[arg(long)]
    pub candidates_out: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub candidates_every: usize,
}

/// Where the simulated events go besides the simulator's own store.
enum Emitter {
    Http {
        client: reqwest::Client,
        url: String,
        key: String,
    },
    Kafka(crate::ingest::kafka::EventProducer),
}

impl Emitter {
    fn from_args(settings: &Settings, args: &SimulateArgs) -> anyhow::Result<Vec<Emitter>> {
        let mut out = Vec::new();
        if let Some(url) = &args.emit_url {
            let key = args
                .emit_key
                .clone()
                .context("--emit-url needs --emit-key (or EAGLERANK_API_KEY)")?;
            out.push(Emitter::Http {
                client: reqwest::Client::new(),
                url: format!(
                    "{}/v1/tenants/{}/events",
                    url.trim_end_matches('/'),
                    args.tenant
                ),
                key,
            });
        }
        if args.emit_kafka {
            anyhow::ensure!(settings.kafka.enabled(), "--emit-kafka needs kafka.brokers");
            out.push(Emitter::Kafka(crate::ingest::kafka::EventProducer::new(
                &settings.kafka,
            )?));
        }
        Ok(out)
    }

    async fn send(&self, tenant: &str, events: &[crate::ingest::EventInput]) -> anyhow::Result<()> {
        match self {
            Emitter::Http { client, url, key } => {
                for chunk in events.chunks(1000) {
                    let res = client
                        .post(url)
                        .bearer_auth(key)
                        .json(&serde_json::json!({ "events": chunk }))
                        .send()
                        .await?;
                    anyhow::ensure!(res.status().is_success(), "{url}: {}", res.text().await?);
                }
            }
            Emitter::Kafka(producer) => producer.send(tenant, events).await?,
        }
        Ok(())
    }
}

/// The wire form of simulated events. They happen now, on the wall clock (the service rejects
/// timestamps in the future, and the simulated clock runs ahead).
fn wire_events(events: &[Event], seed: u64, counter: &mut u64) -> Vec<crate::ingest::EventInput> {
    let now = crate::ingest::now_rfc3339();
    events
        .iter()
        .map(|e| {
            *counter += 1;
            crate::ingest::EventInput {
                event_id: format!("sim-{seed}-{counter}"),
                kind: e.kind,
                user_id: e.user_id.clone(),
                item_id: e.item_id.to_string(),
                timestamp: now.clone(),
                request_id: None,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct Schema<'a> {
    features: &'a [String],
    tenant: &'a str,
    policy: String,
    requests: usize,
}

#[derive(Serialize)]
struct Row<'a> {
    request: usize,
    user_id: &'a str,
    item_id: &'a str,
    position: usize,
    /// 0 impression only, 1 clicked, 2 purchased.
    label: u8,
    /// The click model's true probability, for diagnostics.
    p_click: f64,
    features: &'a [f32],
}

/// One request's every candidate, for `--candidates-out`.
#[derive(Serialize)]
struct CandidateGroup<'a> {
    request: usize,
    user_id: &'a str,
    item_ids: Vec<&'a str>,
    /// The click model's probability at position 0: the candidate's relevance to this user.
    p_click: Vec<f64>,
    features: Vec<&'a [f32]>,
}

#[derive(Serialize)]
struct CandidateSchema<'a> {
    features: &'a [String],
    tenant: &'a str,
    requests: usize,
    every: usize,
}

/// A JSON Lines file whose first line is `schema`.
fn jsonl(
    path: &std::path::Path,
    schema: &impl Serialize,
) -> anyhow::Result<BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut out = BufWriter::new(file);
    writeln!(out, "{}", serde_json::to_string(schema)?)?;
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct SimulationReport {
    pub requests: usize,
    /// Events sent to each --emit-* target.
    pub emitted: u64,
    pub impressions: usize,
    pub clicks: usize,
    pub purchases: usize,
}

/// Events are written back in batches: the store re-sorts its lists after each write.
const APPLY_EVERY: usize = 50;
/// Simulated seconds between two requests.
const REQUEST_INTERVAL: f64 = 2.0;

/// The model policy's order: the pipeline's ranking with the bare model (no metrics, drift or
/// shadow), exactly what serving computes for the same store state, user and clock.
fn model_order(
    scorer: &mut Scorer,
    spec: &FeatureSpec,
    request: &RankRequest<'_>,
    matrix: &mut Vec<f32>,
) -> anyhow::Result<Vec<usize>> {
    let ranked = pipeline::rank(
        spec,
        request,
        matrix,
        &mut FeatureHealth::default(),
        |m, rows| scorer.score(m, rows),
    )?;
    Ok(ranked.arranged.order)
}

/// The feed the model policy shows `user_id` at `now`: its first `shown` items, best first.
pub async fn model_feed(
    settings: &Settings,
    store: &dyn FeatureStore,
    model: &LoadedModel,
    tenant: &str,
    user_id: &str,
    now: UnixSeconds,
    shown: usize,
) -> anyhow::Result<Vec<ItemId>> {
    let limits = settings.candidate_limits(tenant);
    let (profile, candidates) = pipeline::gather(store, tenant, user_id, &limits).await?;
    let rules = TenantRules::new(0, settings.rules(tenant));
    let request = RankRequest {
        now,
        user_id,
        user: profile.as_deref(),
        candidates: &candidates,
        limit: shown,
        rules: &rules,
        seen: &FastSet::default(),
        page: 1,
        explain: false,
    };
    let order = model_order(&mut model.scorer()?, &model.spec, &request, &mut Vec::new())?;
    Ok(order
        .into_iter()
        .map(|i| candidates[i].item_id.clone())
        .collect())
}

pub async fn run(settings: &Settings, args: &SimulateArgs) -> anyhow::Result<SimulationReport> {
    let limits = settings.candidate_limits(&args.tenant);
    let metrics = Metrics::new();
    let store = MemoryStore::new([args.tenant.clone()]);
    let anchor = args.anchor.unwrap_or_else(crate::domain::unix_now);
    let market = seed_tenant(&store, &settings.store.demo, &args.tenant, anchor, &metrics).await?;
    let mut scorer = match args.policy {
        Policy::Random => None,
        Policy::Model => {
            let model = LoadedModel::load(&settings.model)?;
            Some((model.scorer()?, model.spec.clone()))
        }
    };
    let logged = FeatureSpec::full_catalog();
    // The tenant's configured rules, as serving applies them to a first page.
    let rules = TenantRules::new(0, settings.rules(&args.tenant));
    let no_pages = FastSet::default();

    let schema = Schema {
        features: logged.names(),
        tenant: &args.tenant,
        policy: format!("{:?}", args.policy).to_lowercase(),
        requests: args.requests,
    };
    let mut out = jsonl(&args.out, &schema)?;
    let every = args.candidates_every.max(1);
    let mut candidates_out = match &args.candidates_out {
        Some(path) => Some(jsonl(
            path,
            &CandidateSchema {
                features: logged.names(),
                tenant: &args.tenant,
                requests: args.requests,
                every,
            },
        )?),
        None => None,
    };

    let emitters = Emitter::from_args(settings, args)?;
    let mut emitted = 0u64;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut report = SimulationReport::default();
    let mut pending: Vec<Event> = Vec::new();
    // The logged rows (every feature) and the model's own rows.
    let (mut matrix, mut own) = (Vec::new(), Vec::new());
    for request in 0..args.requests {
        let now = anchor + request as f64 * REQUEST_INTERVAL;
        let (user_id, taste) = if rng.random_bool(args.new_user_share) {
            (format!("sim-new-{request}"), market.new_taste(&mut rng))
        } else {
            market
                .users
                .choose(&mut rng)
                .cloned()
                .context("the demo has no users")?
        };

        // The same stages as a served feed, through the same pipeline functions.
        let (profile, candidates) =
            pipeline::gather(&store, &args.tenant, &user_id, &limits).await?;
        let ctx = FeatureContext::new(now, profile.as_deref());
        pipeline::feature_rows(
            &logged,
            &ctx,
            &candidates,
            &mut matrix,
            &mut FeatureHealth::default(),
        );

        let order: Vec<usize> = match &mut scorer {
            None => {
                let mut order: Vec<usize> = (0..candidates.len()).collect();
                order.shuffle(&mut rng);
                order
            }
            Some((scorer, spec)) => model_order(
                scorer,
                spec,
                &RankRequest {
                    now,
                    user_id: &user_id,
                    user: profile.as_deref(),
                    candidates: &candidates,
                    limit: args.shown,
                    rules: &rules,
                    seen: &no_pages,
                    page: 1,
                    explain: false,
                },
                &mut own,
            )?,
        };

        report.requests += 1;
        let width = logged.len();
        if let Some(file) = candidates_out.as_mut().filter(|_| request % every == 0) {
            let group = CandidateGroup {
                request,
                user_id: &user_id,
                item_ids: candidates.iter().map(|c| &*c.item_id).collect(),
                p_click: candidates
                    .iter()
                    .map(|c| {
                        market
                            .index_of(&c.item_id)
                            .map_or(0.0, |i| market.click_probability(&taste, i, 0))
                    })
                    .collect(),
                features: matrix.chunks(width).collect(),
            };
            writeln!(file, "{}", serde_json::to_string(&group)?)?;
        }
        for (position, &row) in order.iter().take(args.shown).enumerate() {
            let item_id = &candidates[row].item_id;
            let Some(i) = market.index_of(item_id) else {
                continue;
            };
            let events = market.react(&mut rng, &user_id, &taste, i, position, now);
            let clicked = events.iter().any(|e| e.kind == EventKind::Click);
            let purchased = events.iter().any(|e| e.kind == EventKind::Purchase);
            report.impressions += 1;
            report.clicks += usize::from(clicked);
            report.purchases += usize::from(purchased);
            let line = Row {
                request,
                user_id: &user_id,
                item_id,
                position,
                label: u8::from(clicked) + u8::from(purchased),
                p_click: market.click_probability(&taste, i, position),
                features: &matrix[row * width..(row + 1) * width],
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
            pending.extend(events);
        }
        if request % APPLY_EVERY == APPLY_EVERY - 1 {
            store.apply_events(&args.tenant, &pending).await?;
            if !emitters.is_empty() {
                let wire = wire_events(&pending, args.seed, &mut emitted);
                for emitter in &emitters {
                    emitter.send(&args.tenant, &wire).await?;
                }
            }
            pending.clear();
        }
    }
    out.flush()?;
    if let Some(file) = candidates_out.as_mut() {
        file.flush()?;
    }
    report.emitted = emitted;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use crate::demo::Marketplace;

    #[test]
    fn marketplace_ids_round_trip() {
        let settings = crate::config::DemoSettings {
            enabled: true,
            seed: 1,
            items: 10,
            users: 2,
            categories: 2,
            brands: 2,
            history_sessions_per_user: 1,
            anchor: None,
        };
        let m = Marketplace::generate(&settings, "t", 0.0);
        assert_eq!(m.index_of("i7"), Some(7));
        assert_eq!(m.index_of("i10"), None);
        assert_eq!(m.index_of("x1"), None);
    }
}
