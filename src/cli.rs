//! The `eaglerank` command line: `serve` (the default), `simulate`, `drive`, `load`,
//! `dataset export`, `experiment report`, the benchmarks, `hash-key`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use anyhow::Context as _;

use crate::config::Settings;
use crate::startup::Application;
use crate::store::RedisStore;
use crate::telemetry;
use crate::telemetry::Metrics;
use crate::tools::simulate::{self, SimulateArgs};

/// EagleRank: real-time feed ranking for marketplaces.
///
/// Configuration comes from config/default.toml, then the --config files, then
/// EAGLERANK__SECTION__KEY environment variables (e.g. EAGLERANK__SERVER__PORT=9090).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Extra configuration files, layered over config/default.toml in order (later wins).
    /// Repeatable; in EAGLERANK_CONFIG, separated by colons (a ConfigMap's file, then a
    /// Secret's tenant keys).
    #[arg(long, global = true, env = "EAGLERANK_CONFIG", value_delimiter = ':')]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (the default).
    Serve,
    /// Simulate users on the demo marketplace and log served feature vectors for training.
    Simulate(SimulateArgs),
    /// Drive a running service with simulated users: feeds requested, the click model's
    /// reactions posted back as events with the feed's request_id (live quality moves).
    /// `--shift` rotates the users' preferences. Prints JSON.
    Drive(crate::tools::drive::DriveArgs),
    /// Load the demo marketplace (catalog, statistics, user profiles) into Redis (`redis.url`),
    /// so that serving from Redis gives the same feeds as the embedded store.
    Load(LoadArgs),
    /// Move every user's profile and history out of the Redis layouts before the two strings
    /// (hashes and a list per user), then mark the tenant moved: its feeds stop reading the
    /// old keys (three commands a feed). Once, after every replica runs this version; `load`
    /// does it for the tenants it loads. Prints the users moved per tenant as JSON.
    Migrate(MigrateArgs),
    /// Measure each part of a feed alone: model inference per batch, feature assembly, the
    /// store reads of one request (memory, and Redis when `redis.url` is set). Prints JSON.
    BenchComponents(crate::tools::bench::BenchArgs),
    /// Measure event ingestion end to end: events produced to a topic on librdkafka's mock
    /// cluster, consumed and applied to the store (Redis when `redis.url` is set). Prints JSON.
    BenchIngest(crate::tools::bench::IngestBenchArgs),
    /// Run one in-process fault scenario under feed load (Kafka brokers down, poison
    /// messages, actor panics; librdkafka's mock cluster as the broker) and print its figures
    /// as JSON. `loadtest/chaos` runs them all.
    Chaos(crate::tools::chaos::ChaosArgs),
    /// The served-feature log as a training set (`dataset export --out FILE`).
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// A running experiment's arms compared (`experiment report --tenant T`).
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Print the SHA-256 digest of an API key read from stdin, for `api_key_sha256`.
    HashKey,
    /// Print the REST API's OpenAPI 3.1 document (as served at /openapi.json and committed
    /// as openapi.json).
    Openapi,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Join the served-feature log (feature_log.dir, or feature_log.topic with Kafka) with the
    /// outcomes that name its feeds, into a training set for `training/train.py`: one row per
    /// shown item, graded label (purchase 3, add to cart 2, click 1, none 0). Prints its size,
    /// label counts and time range as JSON.
    Export(crate::tools::learning::ExportArgs),
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Per arm of the tenant's running experiment: CTR@10, add-to-cart and purchase rates per
    /// feed with 95 % intervals, MRR, and each arm's difference to the first (the control)
    /// with its test, from the service's admin endpoint.
    Report(crate::tools::learning::ReportArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Load only this tenant (default: every configured tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// Delete the tenant's existing keys first (otherwise statistics add up).
    #[arg(long)]
    replace: bool,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// Only this tenant (default: every configured tenant).
    #[arg(long)]
    tenant: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(event = "Exited", error = %format!("{e:#}"));
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::HashKey = command {
        let mut key = String::new();
        std::io::stdin().read_to_string(&mut key)?;
        println!(
            "{}",
            hex::encode(crate::domain::tenants::key_digest(
                key.trim_end_matches(['\r', '\n'])
            ))
        );
        return Ok(());
    }
    if let Command::Openapi = command {
        print!("{}", crate::http::openapi::document());
        return Ok(());
    }
    let settings = Settings::load(&cli.config)?;
    // Kept until the end: dropping it flushes the spans still queued for export.
    let _tracing = telemetry::otel::init(&settings.log, &settings.tracing, &settings.service_name);
    let system = actix_web::rt::System::new();
    match command {
        Command::Serve => system.block_on(async move {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }),
        Command::Simulate(args) => system.block_on(async move {
            let report = simulate::run(&settings, &args).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }),
        Command::Drive(args) => system.block_on(async move {
            let report = crate::tools::drive::run(&settings, &args).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }),
        Command::Load(args) => system.block_on(load(&settings, &args)),
        Command::Migrate(args) => system.block_on(async move {
            let store = bulk_store(&settings)?;
            let mut moved = serde_json::Map::new();
            for tenant in tenants(&settings, args.tenant.as_deref())? {
                let users = store.move_old_layout(tenant).await?;
                moved.insert(tenant.clone(), users.into());
            }
            println!("{}", serde_json::json!({ "users_moved": moved }));
            Ok(())
        }),
        Command::BenchComponents(args) => system.block_on(async move {
            let costs = crate::tools::bench::run(&settings, &args).await?;
            println!("{}", serde_json::to_string_pretty(&costs)?);
            Ok(())
        }),
        Command::BenchIngest(args) => system.block_on(async move {
            let costs = crate::tools::bench::run_ingest(settings, &args).await?;
            println!("{}", serde_json::to_string_pretty(&costs)?);
            Ok(())
        }),
        Command::Chaos(args) => system.block_on(async move {
            let report = crate::tools::chaos::run(settings, &args).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }),
        Command::Dataset(DatasetCommand::Export(args)) => {
            let summary = crate::tools::learning::export(&settings, &args)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Experiment(ExperimentCommand::Report(args)) => system.block_on(async move {
            print!("{}", crate::tools::learning::report(&args).await?);
            Ok(())
        }),
        Command::HashKey | Command::Openapi => unreachable!("handled above"),
    }
}

/// A store on `redis.url` for bulk work: its pipelines take longer than a feed's reads.
fn bulk_store(settings: &Settings) -> anyhow::Result<RedisStore> {
    anyhow::ensure!(
        settings.redis.enabled(),
        "set redis.url (e.g. EAGLERANK__REDIS__URL=redis://127.0.0.1:6379): this command works on Redis"
    );
    let mut redis = settings.redis.clone();
    redis.command_timeout = redis
        .command_timeout
        .max(std::time::Duration::from_secs(30));
    Ok(RedisStore::connect(&redis)?)
}

/// The configured tenant `only` names (it must be one), else every configured tenant.
fn tenants<'a>(settings: &'a Settings, only: Option<&str>) -> anyhow::Result<Vec<&'a String>> {
    Ok(match only {
        Some(t) => vec![
            settings
                .tenants
                .get_key_value(t)
                .with_context(|| format!("unknown tenant {t:?}"))?
                .0,
        ],
        None => settings.tenants.keys().collect(),
    })
}

async fn load(settings: &Settings, args: &LoadArgs) -> anyhow::Result<()> {
    let store = bulk_store(settings)?;
    let metrics = Metrics::new();
    let anchor = settings
        .store
        .demo
        .anchor
        .unwrap_or_else(crate::domain::unix_now);
    for tenant in tenants(settings, args.tenant.as_deref())? {
        if args.replace {
            store.clear_tenant(tenant).await?;
        }
        crate::demo::seed_tenant(&store, &settings.store.demo, tenant, anchor, &metrics)
            .await
            .with_context(|| format!("loading {tenant} into Redis"))?;
        // Whatever an older version left in the layouts before: moved, and the tenant marked.
        store
            .move_old_layout(tenant)
            .await
            .with_context(|| format!("moving {tenant}'s old layout"))?;
    }
    Ok(())
}
