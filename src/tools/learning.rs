//! `eaglerank dataset export` and `eaglerank experiment report`: the learning loop's commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Settings;
use crate::learning::dataset::{self, Selection, Summary};
use crate::learning::report::{self, ExperimentCounts};

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Where the training set goes (JSON Lines: a schema line, then one row per shown item).
    #[arg(long)]
    pub out: PathBuf,
    /// Only feeds served at or after this time (RFC 3339, or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<f64>,
    /// Only feeds served before this time (RFC 3339, or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<f64>,
    /// Only this tenant's feeds.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Outcomes count this long after their feed (default: events.join_window_seconds).
    #[arg(long)]
    pub join_window_seconds: Option<u64>,
}

fn parse_time(text: &str) -> Result<f64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .map_err(|e| format!("not RFC 3339 nor Unix seconds: {e}"))
}

/// Reads the log the settings name (the topic with Kafka configured, else the files) and
/// writes the training set.
pub fn export(settings: &Settings, args: &ExportArgs) -> anyhow::Result<Summary> {
    let selection = Selection {
        tenant: args.tenant.clone(),
        since: args.since,
        until: args.until,
        join_window: args
            .join_window_seconds
            .map_or(settings.events.join_window, Duration::from_secs),
    };
    let ends = std::cell::RefCell::new(None);
    let read = |visit: &mut dyn FnMut(crate::learning::Record)| {
        if settings.kafka.enabled() {
            dataset::read_topic(
                &settings.kafka,
                &settings.feature_log.topic,
                Duration::from_secs(10),
                &mut ends.borrow_mut(),
                visit,
            )
        } else {
            dataset::read_files(&settings.feature_log.dir, visit)
        }
    };
    Ok(dataset::export(read, &selection, &args.out)?)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub tenant: String,
    /// The running service (its admin endpoint `GET /v1/admin/experiments`: that replica's
    /// counters since it started).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin key (for --url).
    #[arg(long, env = "EAGLERANK_ADMIN_KEY", default_value = "")]
    pub key: String,
    /// Read the counters from this Prometheus instead, summed over every replica (e.g.
    /// http://prometheus:9090).
    #[arg(long)]
    pub prometheus: Option<String>,
    /// With --prometheus: the counters' increase over this range (PromQL duration).
    #[arg(long, default_value = "7d")]
    pub window: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The tenant's running experiment, per arm, from the service's counters or Prometheus.
pub async fn report(args: &ReportArgs) -> anyhow::Result<String> {
    let view = match &args.prometheus {
        Some(prometheus) => from_prometheus(prometheus, &args.tenant, &args.window).await?,
        None => from_service(args).await?,
    };
    let reports = report::report(&view.arms);
    Ok(if args.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "tenant": view.tenant,
            "experiment": view.experiment,
            "arms": reports,
        }))?
    } else {
        report::render(&view.tenant, &view.experiment, &reports)
    })
}

async fn from_service(args: &ReportArgs) -> anyhow::Result<ExperimentCounts> {
    anyhow::ensure!(
        !args.key.is_empty(),
        "an admin key is needed: --key or EAGLERANK_ADMIN_KEY"
    );
    let url = format!(
        "{}/v1/admin/experiments?tenant={}",
        args.url.trim_end_matches('/'),
        args.tenant
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&args.key)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status}: {body}");
    let views: Vec<ExperimentCounts> =
        serde_json::from_str(&body).with_context(|| format!("GET {url}: {body}"))?;
    views.into_iter().next().with_context(|| {
        format!(
            "tenant {:?} runs no experiment (see [tenants.<id>.experiment])",
            args.tenant
        )
    })
}

/// One PromQL instant query's samples as (labels, value).
async fn query(
    client: &reqwest::Client,
    prometheus: &str,
    expr: &str,
) -> anyhow::Result<Vec<(serde_json::Value, f64)>> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", prometheus.trim_end_matches('/')),
        &[("query", expr)],
    )
    .with_context(|| format!("--prometheus {prometheus:?}"))?;
    let body: serde_json::Value = client
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await?;
    anyhow::ensure!(body["status"] == "success", "{expr}: {body}");
    Ok(body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let value = s["value"][1].as_str().and_then(|v| v.parse().ok());
            (s["metric"].clone(), value.unwrap_or(0.0))
        })
        .collect())
}

type ByArm = std::collections::HashMap<(String, String), f64>;

/// The samples of `expr` by (arm, kind).
async fn by_arm(client: &reqwest::Client, prometheus: &str, expr: &str) -> anyhow::Result<ByArm> {
    Ok(query(client, prometheus, expr)
        .await?
        .into_iter()
        .map(|(m, v)| {
            let arm = m["arm"].as_str().unwrap_or_default().to_owned();
            let kind = m["kind"].as_str().unwrap_or_default().to_owned();
            ((arm, kind), v)
        })
        .collect())
}

/// The arms from `eaglerank_experiment_arm_share` (control first), their counters' increase
/// over `window` summed over every replica.
async fn from_prometheus(
    prometheus: &str,
    tenant: &str,
    window: &str,
) -> anyhow::Result<ExperimentCounts> {
    let client = reqwest::Client::new();
    let shares = query(
        &client,
        prometheus,
        &format!(
            "max by (experiment, arm, role) (eaglerank_experiment_arm_share{{tenant={tenant:?}}})"
        ),
    )
    .await?;
    let experiment = shares
        .first()
        .and_then(|(m, _)| m["experiment"].as_str())
        .with_context(|| format!("Prometheus shows no running experiment of tenant {tenant:?}"))?
        .to_owned();
    let mut arms: Vec<(String, bool, f64)> = shares
        .iter()
        .filter(|(m, _)| m["experiment"] == experiment.as_str())
        .map(|(m, v)| {
            let arm = m["arm"].as_str().unwrap_or_default().to_owned();
            (arm, m["role"] == "control", *v)
        })
        .collect();
    arms.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let sel = format!("tenant={tenant:?},experiment={experiment:?}");
    // Each counter's increase over the window, summed over replicas, by arm (and kind).
    let fetch = |metric: &str, by: &str| {
        let expr = format!("sum by ({by}) (increase({metric}{{{sel}}}[{window}]))");
        let client = &client;
        async move { by_arm(client, prometheus, &expr).await }
    };
    let feeds = fetch("eaglerank_experiment_feeds_total", "arm").await?;
    let clicks10 = fetch("eaglerank_experiment_clicks_at_10_total", "arm").await?;
    let kinds = fetch("eaglerank_experiment_interactions_total", "arm, kind").await?;
    let rr = fetch("eaglerank_experiment_reciprocal_rank_total", "arm").await?;
    let count = |m: &ByArm, arm: &str, kind: &str| {
        m.get(&(arm.to_owned(), kind.to_owned()))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(ExperimentCounts {
        tenant: tenant.to_owned(),
        experiment,
        arms: arms
            .into_iter()
            .map(|(arm, _, share)| report::ArmCounts {
                feeds: count(&feeds, &arm, "").round() as u64,
                clicks_at_10: count(&clicks10, &arm, "").round() as u64,
                clicks: count(&kinds, &arm, "click").round() as u64,
                add_to_cart: count(&kinds, &arm, "add_to_cart").round() as u64,
                purchases: count(&kinds, &arm, "purchase").round() as u64,
                reciprocal_rank: count(&rr, &arm, ""),
                model: String::new(),
                share,
                arm,
            })
            .collect(),
    })
}
