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
    let records = if settings.kafka.enabled() {
        dataset::read_topic(
            &settings.kafka,
            &settings.feature_log.topic,
            Duration::from_secs(10),
        )?
    } else {
        dataset::read_files(&settings.feature_log.dir)?
    };
    let selection = Selection {
        tenant: args.tenant.clone(),
        since: args.since,
        until: args.until,
        join_window: args
            .join_window_seconds
            .map_or(settings.events.join_window, Duration::from_secs),
    };
    Ok(dataset::export(records, &selection, &args.out)?)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub tenant: String,
    /// The running service (its admin endpoint `GET /v1/admin/experiments`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin key.
    #[arg(long, env = "EAGLERANK_ADMIN_KEY")]
    pub key: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The tenant's running experiment, per arm, from the service's counters.
pub async fn report(args: &ReportArgs) -> anyhow::Result<String> {
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
    let view = views.into_iter().next().with_context(|| {
        format!(
            "tenant {:?} runs no experiment (see [tenants.<id>.experiment])",
            args.tenant
        )
    })?;
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
