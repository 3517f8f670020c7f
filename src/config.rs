//! Layered configuration: the defaults (`config/default.toml`, embedded in the binary), then an
//! optional files (`--config`, repeatable / `EAGLERANK_CONFIG`, colon-separated), then `EAGLERANK__SECTION__KEY` environment
//! variables. Every value has exactly one home here; a key the settings do not know is refused
//! at start-up, naming where it came from; times are `Duration`s from here on (the keys keep
//! their unit: `_ms`, `_seconds`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::tenants::TenantSpec;

/// The defaults, compiled in: the binary runs from any directory. `config/default.toml` is
/// this very text, kept as the documented reference (a test checks they are identical).
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The checkout the binary was built from: relative file paths of the defaults (the model, ONNX
/// Runtime) that do not exist from the working directory are looked up there.
const BUILD_ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `_ms` keys as `Duration`s.
mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `_seconds` keys as `Duration`s.
mod seconds {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub service_name: String,
    pub server: ServerSettings,
    pub grpc: GrpcSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    pub model: ModelSettings,
    pub actors: ActorSettings,
    pub candidates: CandidateLimits,
    pub store: StoreSettings,
    pub redis: RedisSettings,
    pub cache: CacheSettings,
    pub events: EventSettings,
    pub kafka: KafkaSettings,
    pub admin: AdminSettings,
    pub feed: FeedSettings,
    pub ops: OpsSettings,
    pub budgets: BudgetSettings,
    pub feature_log: FeatureLogSettings,
    /// Models besides the default one (`[model]`), by name: `[models.<name>]`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelFiles>,
    pub tenants: BTreeMap<String, TenantSettings>,
    /// Named rules documents an experiment arm may rank with instead of its tenant's rules:
    /// `[rules_presets.<name>]`.
    #[serde(default)]
    pub rules_presets: BTreeMap<String, crate::domain::rules::Rules>,
    /// Where these settings came from (the `--config` files and the overrides on top of the
    /// environment): `POST /v1/admin/config/reload` reads the same sources again.
    #[serde(skip)]
    pub sources: Sources,
}

#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    pub overrides: Vec<(String, config::Value)>,
}

/// The served-feature log (`learning::feature_log`): what retraining reads.
#[derive(Debug, Clone, Deserialize)]
pub struct FeatureLogSettings {
    /// Share of served feeds logged, for tenants that do not set their own.
    pub sample_rate: f64,
    /// The files' directory when Kafka is not configured.
    pub dir: PathBuf,
    /// The topic when Kafka is configured.
    pub topic: String,
    pub max_file_bytes: u64,
    #[serde(
        rename = "max_file_age_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub max_file_age: Duration,
    pub max_total_bytes: u64,
    pub queue_capacity: usize,
}

/// A running experiment: its users split between arms, each ranked by its own model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSettings {
    pub name: String,
    /// The first arm is the control the others are compared with.
    pub arms: Vec<ArmSettings>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSettings {
    pub name: String,
    /// `default` or a `[models.<name>]`.
    pub model: String,
    /// Share of the tenant's users (the arms' shares sum to 1).
    pub share: f64,
    /// A `[rules_presets.<name>]` the arm's feeds are arranged by instead of the tenant's rules.
    #[serde(default)]
    pub rules: Option<String>,
}

/// The gRPC server (`grpc/`): its own port beside the HTTP one; `port = 0` turns it off.
#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    pub host: String,
    pub port: u16,
}

impl GrpcSettings {
    pub fn enabled(&self) -> bool {
        self.port != 0
    }
}

/// The files of one model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelFiles {
    pub path: PathBuf,
    pub metadata: PathBuf,
}

/// The name of the `[model]` section's model in `tenants.<id>.model`.
pub const DEFAULT_MODEL: &str = "default";

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}

fn default_shadow_sample_rate() -> f64 {
    0.1
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// Hex SHA-256 digests of the admin API keys.
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_body_bytes: usize,
    #[serde(
        rename = "request_deadline_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub request_deadline: Duration,
    #[serde(
        rename = "shutdown_grace_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub shutdown_grace: Duration,
    pub max_connections_per_worker: usize,
    /// A request's head must arrive within this.
    #[serde(
        rename = "client_request_timeout_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub client_request_timeout: Duration,
    #[serde(
        rename = "keep_alive_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TracingSettings {
    pub otlp_endpoint: String,
    pub sample_ratio: f64,
    pub max_queue_size: usize,
    #[serde(rename = "export_delay_ms", deserialize_with = "millis::deserialize")]
    pub export_delay: Duration,
}

impl TracingSettings {
    /// `None`: tracing off. `Some(None)`: on, endpoint from the standard `OTEL_*` variables.
    pub fn endpoint(&self) -> Option<Option<String>> {
        if !self.otlp_endpoint.trim().is_empty() {
            return Some(Some(self.otlp_endpoint.trim().to_owned()));
        }
        [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
        .then_some(None)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelSettings {
    pub path: PathBuf,
    pub metadata: PathBuf,
    pub onnxruntime_library: PathBuf,
    #[serde(
        rename = "watchdog_interval_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub watchdog_interval: Duration,
    pub drift_min_samples: u64,
    pub engine: ModelEngine,
}

/// What scores a model: `auto` evaluates tree ensembles natively (when they agree with
/// ONNX Runtime on the probe rows) and everything else with ONNX Runtime; `onnxruntime`
/// scores every model with ONNX Runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelEngine {
    #[default]
    Auto,
    Onnxruntime,
}

fn is_digest(hex_digest: &str) -> bool {
    hex_digest.len() == 64 && hex::decode(hex_digest).is_ok()
}

impl ModelSettings {
    /// These settings for another model's files.
    pub fn with_files(&self, files: &ModelFiles) -> Self {
        Self {
            path: files.path.clone(),
            metadata: files.metadata.clone(),
            ..self.clone()
        }
    }

    /// `ORT_DYLIB_PATH` is the variable `ort` users already know; it wins over the file setting.
    pub fn onnxruntime_library(&self) -> PathBuf {
        std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.onnxruntime_library.clone())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActorSettings {
    #[serde(rename = "ping_timeout_ms", deserialize_with = "millis::deserialize")]
    pub ping_timeout: Duration,
}

/// How many candidates each source contributes, and the cap after merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CandidateLimits {
    pub max_candidates: usize,
    pub trending: usize,
    pub affinity: usize,
    pub affinity_categories: usize,
    pub new_arrivals: usize,
}

/// A tenant's partial override of [`CandidateLimits`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CandidateOverrides {
    pub max_candidates: Option<usize>,
    pub trending: Option<usize>,
    pub affinity: Option<usize>,
    pub affinity_categories: Option<usize>,
    pub new_arrivals: Option<usize>,
}

impl CandidateLimits {
    pub fn with_overrides(self, o: &CandidateOverrides) -> Self {
        Self {
            max_candidates: o.max_candidates.unwrap_or(self.max_candidates),
            trending: o.trending.unwrap_or(self.trending),
            affinity: o.affinity.unwrap_or(self.affinity),
            affinity_categories: o.affinity_categories.unwrap_or(self.affinity_categories),
            new_arrivals: o.new_arrivals.unwrap_or(self.new_arrivals),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    pub demo: DemoSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: String,
    pub cluster: bool,
    pub pool_size: usize,
    #[serde(
        rename = "connect_timeout_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub connect_timeout: Duration,
    #[serde(
        rename = "command_timeout_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub command_timeout: Duration,
    #[serde(rename = "ping_interval_ms", deserialize_with = "millis::deserialize")]
    pub ping_interval: Duration,
    #[serde(
        rename = "fallback_refresh_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub fallback_refresh: Duration,
    #[serde(rename = "catalog_cache_ms", deserialize_with = "millis::deserialize")]
    pub catalog_cache: Duration,
    /// Failed calls in a row that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker refuses calls before it lets one probe through.
    #[serde(rename = "breaker_open_ms", deserialize_with = "millis::deserialize")]
    pub breaker_open: Duration,
}

impl RedisSettings {
    /// Redis is used when a URL is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The node URLs (one unless clustered).
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    /// A replayed `event_id` within this window changes nothing.
    #[serde(
        rename = "dedup_window_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub dedup_window: Duration,
    /// Event ids the embedded store remembers at most (Redis is bounded by the window).
    pub dedup_capacity: u64,
    /// Timestamps further in the future than this are rejected (clock skew allowance).
    #[serde(
        rename = "max_future_skew_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub max_future_skew: Duration,
    pub max_batch: usize,
    /// How long a served feed can be joined with clicks and purchases that name its
    /// `request_id` (live ranking quality), and how many feeds are remembered at most.
    #[serde(
        rename = "join_window_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub join_window: Duration,
    pub join_capacity: u64,
    /// Redis: served feeds are written to the log in one batch per interval instead of one
    /// awaited write per feed (0: each feed's write awaited before its response).
    #[serde(rename = "feed_log_flush_ms", deserialize_with = "millis::deserialize")]
    pub feed_log_flush: Duration,
}

impl EventSettings {
    /// How long after its response another replica may not find a feed in the log yet: the
    /// flush interval and a write's usual time (a join or a next page that misses a feed this
    /// recent looks again after it).
    pub fn feed_log_lag(&self) -> Duration {
        match self.feed_log_flush.is_zero() {
            true => Duration::ZERO,
            false => 2 * self.feed_log_flush + Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    /// Empty: events are applied in process. Set: the REST endpoint produces to `topic` and a
    /// consumer (group `group_id`) applies them.
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    /// Messages applied per store write, at most.
    pub max_batch: usize,
    #[serde(rename = "lag_interval_ms", deserialize_with = "millis::deserialize")]
    pub lag_interval: Duration,
    #[serde(
        rename = "produce_timeout_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub produce_timeout: Duration,
    /// Where messages that can never be applied go; empty: `<topic>.dlq`.
    pub dead_letter_topic: String,
    /// Larger messages are dead-lettered without being parsed.
    pub max_message_bytes: usize,
    /// A consumer with messages waiting that received and retried nothing for this long is
    /// rebuilt (restarted).
    #[serde(
        rename = "stall_timeout_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub stall_timeout: Duration,
    /// The longest wait between two attempts at a batch the store could not take.
    #[serde(
        rename = "retry_backoff_max_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub retry_backoff_max: Duration,
    /// Extra librdkafka settings (security.protocol, sasl.*, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// The librdkafka settings every client shares (event producer and consumer, the
    /// served-feature log), plus any `[kafka.properties]`.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

impl KafkaSettings {
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    pub fn dead_letter_topic(&self) -> String {
        match self.dead_letter_topic.trim() {
            "" => format!("{}.dlq", self.topic),
            topic => topic.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    pub item_capacity: u64,
    #[serde(rename = "item_ttl_ms", deserialize_with = "millis::deserialize")]
    pub item_ttl: Duration,
    /// How long a replica reuses a tenant's candidate lists (0: read them per request).
    #[serde(rename = "list_ttl_ms", deserialize_with = "millis::deserialize")]
    pub list_ttl: Duration,
}

/// The built-in ops page (`/ops`, `/ops/data`).
#[derive(Debug, Clone, Deserialize)]
pub struct OpsSettings {
    pub enabled: bool,
}

/// Tenants' budgets (each in `[tenants.<id>.budget]`) and how often their usage is measured.
#[derive(Debug, Clone, Deserialize)]
pub struct BudgetSettings {
    /// How often each tenant's entries and bytes are measured (`eaglerank_tenant_*`).
    #[serde(
        rename = "report_interval_ms",
        deserialize_with = "millis::deserialize"
    )]
    pub report_interval: Duration,
}

/// Feed sessions (pagination) and business rules.
#[derive(Debug, Clone, Deserialize)]
pub struct FeedSettings {
    /// How long a feed session's pages are kept: its cursors expire with it.
    #[serde(
        rename = "session_ttl_seconds",
        deserialize_with = "seconds::deserialize"
    )]
    pub session_ttl: Duration,
    /// The embedded store's bound on sessions kept per tenant (Redis uses the TTL alone).
    pub session_capacity: u64,
    /// Signs cursors (HMAC-SHA256). Empty: a random key per process, so a cursor works only on
    /// the replica that issued it; give every replica the same secret.
    pub cursor_secret: String,
    /// How often a replica re-reads a tenant's rules from the store: a `PUT …/rules` on one
    /// replica is served by every replica within this time.
    #[serde(rename = "rules_refresh_ms", deserialize_with = "millis::deserialize")]
    pub rules_refresh: Duration,
}

/// Size and seed of the synthetic marketplace (see `demo::marketplace`).
#[derive(Debug, Clone, Deserialize)]
pub struct DemoSettings {
    pub enabled: bool,
    pub seed: u64,
    pub items: usize,
    pub users: usize,
    pub categories: usize,
    pub brands: usize,
    pub history_sessions_per_user: usize,
    /// Unix seconds the history is anchored at; `None` = now.
    pub anchor: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TenantSettings {
    pub display_name: String,
    pub api_key_sha256: Vec<String>,
    #[serde(default)]
    pub rate_limit_per_second: u32,
    #[serde(default)]
    pub candidates: CandidateOverrides,
    /// The model that ranks this tenant's feeds: `default` or a `[models.<name>]`.
    #[serde(default = "default_model")]
    pub model: String,
    /// A model scored beside the live one on a sample of requests, never served: its top-k
    /// overlap with the live model is exported.
    #[serde(default)]
    pub shadow_model: Option<String>,
    /// Share of the tenant's feeds the shadow model also scores (0–1).
    #[serde(default = "default_shadow_sample_rate")]
    pub shadow_sample_rate: f64,
    /// The tenant's business rules until one is stored through the API (`PUT …/rules`).
    #[serde(default)]
    pub rules: crate::domain::rules::Rules,
    /// This tenant's share of feeds in the served-feature log (default: `feature_log.sample_rate`).
    #[serde(default)]
    pub feature_log_sample_rate: Option<f64>,
    /// The tenant's running experiment, if any.
    #[serde(default)]
    pub experiment: Option<ExperimentSettings>,
    /// Two-stage ranking: this cheap model scores every candidate and the feed's model
    /// re-scores only its best `first_stage_keep`. `""` (what a layered file can set to turn
    /// a cascade off): none.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub first_stage_model: Option<String>,
    #[serde(default = "default_first_stage_keep")]
    pub first_stage_keep: usize,
    /// What the tenant may keep (items, users, served feeds, rules) and its events per second.
    #[serde(default)]
    pub budget: crate::domain::budget::Budget,
}

fn default_first_stage_keep() -> usize {
    100
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(
        "unknown configuration key {key:?} (from {origin}); see config/default.toml for every key"
    )]
    UnknownKey { key: String, origin: String },
}

impl Settings {
    /// Every model to load, by name: `default` (`[model]`) first, then `[models.*]`.
    pub fn model_slots(&self) -> Vec<(String, ModelSettings)> {
        std::iter::once((DEFAULT_MODEL.to_owned(), self.model.clone()))
            .chain(
                self.models
                    .iter()
                    .map(|(name, files)| (name.clone(), self.model.with_files(files))),
            )
            .collect()
    }

    /// Loads the layered configuration. `extra_files` are the `--config` files, in order
    /// (later wins): e.g. a ConfigMap's settings, then a Secret's tenant keys.
    pub fn load(extra_files: &[PathBuf]) -> Result<Self, ConfigError> {
        Self::load_with(extra_files, &[])
    }

    /// As [`Settings::load`], with final `key = value` overrides (dotted keys) on top of the
    /// environment; tests and CLI flags use them.
    pub fn load_with(
        extra_files: &[PathBuf],
        overrides: &[(&str, config::Value)],
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        for file in extra_files {
            builder = builder.add_source(config::File::from(file.as_path()));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("EAGLERANK")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.clone())?;
        }
        let config = builder.build()?;
        // serde would silently drop a key no setting reads (a typo, a removed setting):
        // collect them, and refuse the first with where it came from.
        let mut unknown = Vec::new();
        let mut settings: Settings =
            serde_ignored::deserialize(config.clone(), |path| unknown.push(path.to_string()))?;
        if let Some(key) = unknown.into_iter().next() {
            let origin = match origin_of(&config, &key) {
                Some(file) if file != "the environment" => {
                    // The file's path as the user gave it (the library shows it relative to
                    // the working directory).
                    let given = extra_files.iter().find(|given| {
                        given.canonicalize().ok() == Path::new(&file).canonicalize().ok()
                    });
                    format!("file {}", given.map_or(file, |g| g.display().to_string()))
                }
                Some(_) => format!(
                    "environment variable EAGLERANK__{}",
                    key.to_uppercase().replace('.', "__")
                ),
                None => "an override".to_owned(),
            };
            return Err(ConfigError::UnknownKey { key, origin });
        }
        settings.resolve_build_paths();
        settings.validate()?;
        settings.sources = Sources {
            files: extra_files.to_vec(),
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        Ok(settings)
    }

    /// The same sources read again (a config reload): files edited since, the environment as
    /// it is now, the same overrides.
    pub fn reload(&self) -> Result<Self, ConfigError> {
        let overrides: Vec<(&str, config::Value)> = self
            .sources
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        Self::load_with(&self.sources.files, &overrides)
    }

    /// A relative model or ONNX Runtime path that does not exist from the working directory
    /// is taken from the checkout the binary was built from, where the defaults point
    /// (`models/`, `.local/lib/`): `target/release/eaglerank serve` works from any directory.
    /// A deployment sets absolute paths.
    fn resolve_build_paths(&mut self) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.exists() {
                let built = Path::new(BUILD_ROOT).join(&*path);
                if built.exists() {
                    *path = built;
                }
            }
        };
        resolve(&mut self.model.path);
        resolve(&mut self.model.metadata);
        resolve(&mut self.model.onnxruntime_library);
        for files in self.models.values_mut() {
            resolve(&mut files.path);
            resolve(&mut files.metadata);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (name, rules) in &self.rules_presets {
            if let Err(problems) = rules.validate() {
                let list: Vec<String> = problems
                    .iter()
                    .map(|(field, reason)| format!("rules_presets.{name}.{field}: {reason}"))
                    .collect();
                return invalid(list.join("; "));
            }
        }
        for (id, t) in &self.tenants {
            if let Err(problems) = t.rules.validate() {
                let list: Vec<String> = problems
                    .iter()
                    .map(|(field, reason)| format!("tenants.{id}.rules.{field}: {reason}"))
                    .collect();
                return invalid(list.join("; "));
            }
        }
        if self.budgets.report_interval.is_zero() {
            return invalid("budgets.report_interval_ms must be > 0".into());
        }
        if self.feed.session_ttl.is_zero() {
            return invalid("feed.session_ttl_seconds must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return invalid("tracing.sample_ratio must be within 0.0..=1.0".into());
        }
        if self.events.feed_log_flush > Duration::from_secs(1) {
            return invalid("events.feed_log_flush_ms must be at most 1000".into());
        }
        if self.server.request_deadline.is_zero() {
            return invalid("server.request_deadline_ms must be > 0".into());
        }
        if self.redis.enabled()
            && (self.redis.command_timeout.is_zero() || self.redis.pool_size == 0)
        {
            return invalid("redis.command_timeout_ms and redis.pool_size must be > 0".into());
        }
        for (id, tenant) in &self.tenants {
            if let Err(e) = crate::domain::ids::check_id("tenant id", id) {
                return invalid(format!("{e}: {id:?}"));
            }
            if !tenant.api_key_sha256.iter().all(|d| is_digest(d)) {
                return invalid(format!(
                    "tenants.{id}.api_key_sha256 must hold 64-char hex SHA-256 digests"
                ));
            }
        }
        if !self.admin.api_key_sha256.iter().all(|d| is_digest(d)) {
            return invalid("admin.api_key_sha256 must hold 64-char hex SHA-256 digests".into());
        }
        for (id, t) in &self.tenants {
            let models = [&t.shadow_model, &t.first_stage_model];
            for name in std::iter::once(&t.model).chain(models.into_iter().flatten()) {
                if name != DEFAULT_MODEL && !self.models.contains_key(name) {
                    return invalid(format!(
                        "tenants.{id} names model {name:?}: not \"default\" nor a [models.<name>]"
                    ));
                }
            }
            if t.shadow_model.as_ref() == Some(&t.model) {
                return invalid(format!("tenants.{id}.shadow_model is its live model"));
            }
            if !(0.0..=1.0).contains(&t.shadow_sample_rate) {
                return invalid(format!("tenants.{id}.shadow_sample_rate must be in [0, 1]"));
            }
            if t.first_stage_model.is_some() && t.first_stage_keep == 0 {
                return invalid(format!("tenants.{id}.first_stage_keep must be at least 1"));
            }
        }
        for (id, t) in &self.tenants {
            if let Some(rate) = t.feature_log_sample_rate
                && !(0.0..=1.0).contains(&rate)
            {
                return invalid(format!(
                    "tenants.{id}.feature_log_sample_rate must be in [0, 1]"
                ));
            }
            if let Some(e) = &t.experiment {
                self.validate_experiment(e)
                    .or_else(|m| invalid(format!("tenants.{id}.experiment.{m}")))?;
            }
        }
        if !(0.0..=1.0).contains(&self.feature_log.sample_rate) {
            return invalid("feature_log.sample_rate must be in [0, 1]".into());
        }
        if self.feature_log.queue_capacity == 0 || self.feature_log.max_file_bytes == 0 {
            return invalid(
                "feature_log.queue_capacity and feature_log.max_file_bytes must be > 0".into(),
            );
        }
        if self.model.watchdog_interval.is_zero() {
            return invalid("model.watchdog_interval_ms must be > 0".into());
        }
        Ok(())
    }

    /// An experiment's problem as `<field>: <reason>` (the caller prefixes the tenant).
    fn validate_experiment(&self, e: &ExperimentSettings) -> Result<(), String> {
        crate::domain::ids::check_id("name", &e.name)?;
        if e.name.len() > 64 {
            return Err("name: at most 64 characters (it labels metrics)".into());
        }
        if !(1..=8).contains(&e.arms.len()) {
            return Err("arms: between 1 and 8 arms".into());
        }
        for (i, arm) in e.arms.iter().enumerate() {
            let at = |r: String| format!("arms[{i}].{r}");
            crate::domain::ids::check_id("name", &arm.name).map_err(at)?;
            if arm.name.len() > 64 {
                return Err(at("name: at most 64 characters (it labels metrics)".into()));
            }
            if e.arms[..i].iter().any(|a| a.name == arm.name) {
                return Err(at(format!("name: {:?} names two arms", arm.name)));
            }
            if arm.model != DEFAULT_MODEL && !self.models.contains_key(&arm.model) {
                return Err(at(format!(
                    "model: {:?} is not \"default\" nor a [models.<name>]",
                    arm.model
                )));
            }
            if let Some(preset) = &arm.rules
                && !self.rules_presets.contains_key(preset)
            {
                return Err(at(format!(
                    "rules: {preset:?} is not a [rules_presets.<name>]"
                )));
            }
            if !(arm.share > 0.0 && arm.share <= 1.0) {
                return Err(at("share: must be in (0, 1]".into()));
            }
        }
        let total: f64 = e.arms.iter().map(|a| a.share).sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(format!("arms: the shares sum to {total}, not 1"));
        }
        Ok(())
    }

    /// The share of `tenant`'s feeds the served-feature log takes.
    pub fn feature_log_rate(&self, tenant: &str) -> f64 {
        self.tenants
            .get(tenant)
            .and_then(|t| t.feature_log_sample_rate)
            .unwrap_or(self.feature_log.sample_rate)
    }

    /// The tenant registry's input: every configured tenant.
    pub fn tenant_specs(&self) -> impl Iterator<Item = TenantSpec<'_>> {
        self.tenants.iter().map(|(id, t)| TenantSpec {
            id,
            display_name: &t.display_name,
            api_key_sha256: &t.api_key_sha256,
            rate_limit_per_second: t.rate_limit_per_second,
            budget: t.budget,
        })
    }

    /// Each tenant's budget.
    pub fn budgets(&self) -> impl Iterator<Item = (&str, crate::domain::budget::Budget)> {
        self.tenants.iter().map(|(id, t)| (id.as_str(), t.budget))
    }

    /// Candidate limits for one tenant: the global defaults with the tenant's overrides.
    /// The configured rules of `tenant` (the defaults for an unknown one).
    pub fn rules(&self, tenant: &str) -> crate::domain::rules::Rules {
        self.tenants
            .get(tenant)
            .map(|t| t.rules.clone())
            .unwrap_or_default()
    }

    pub fn candidate_limits(&self, tenant: &str) -> CandidateLimits {
        match self.tenants.get(tenant) {
            Some(t) => self.candidates.with_overrides(&t.candidates),
            None => self.candidates,
        }
    }
}

/// Where the value at dotted `key` came from: a file's path, "the environment", or `None` for
/// an override set in code. (`Config::get` would deserialize the value and lose its origin; a
/// table's entries keep theirs.)
fn origin_of(config: &config::Config, key: &str) -> Option<String> {
    let (table, last) = match key.rsplit_once('.') {
        Some((parent, last)) => (config.get_table(parent).ok()?, last),
        None => (config::Source::collect(config).ok()?, key),
    };
    table.get(last)?.origin().map(str::to_owned)
}

/// Number of threads for a `0 = one per core` setting.
pub fn threads_or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_are_the_compiled_in_ones() {
        let file = std::fs::read_to_string(Path::new(BUILD_ROOT).join("config/default.toml"))
            .expect("config/default.toml is readable");
        assert_eq!(file, DEFAULTS);
        let settings = Settings::load(&[]).expect("the defaults load");
        assert_eq!(settings.cache.item_ttl, Duration::from_millis(5_000));
        assert_eq!(settings.events.dedup_window, Duration::from_secs(3_600));
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_path() {
        let err = Settings::load_with(&[], &[("server.prot", 8080.into())]).unwrap_err();
        match err {
            ConfigError::UnknownKey { key, origin } => {
                assert_eq!(key, "server.prot");
                assert_eq!(origin, "an override");
            }
            other => panic!("expected UnknownKey, got {other}"),
        }
        // Free-form maps stay free-form.
        Settings::load_with(&[], &[("kafka.properties.debug", "all".into())])
            .expect("kafka.properties takes any librdkafka key");
    }

    /// The served-feed log's batch interval: 2 ms by default, 0 for the awaited write, a
    /// second at most (a longer one would hold joins and next pages on other replicas).
    #[test]
    fn the_feed_log_flush_is_bounded_and_its_lag_follows_it() {
        let settings = Settings::load(&[]).unwrap();
        assert_eq!(settings.events.feed_log_flush, Duration::from_millis(2));
        assert_eq!(settings.events.feed_log_lag(), Duration::from_millis(24));
        let flush = |ms: i64| Settings::load_with(&[], &[("events.feed_log_flush_ms", ms.into())]);
        assert_eq!(flush(0).unwrap().events.feed_log_lag(), Duration::ZERO);
        match flush(1001).unwrap_err() {
            ConfigError::Invalid(m) => assert!(m.contains("events.feed_log_flush_ms"), "{m}"),
            other => panic!("expected Invalid, got {other}"),
        }
    }
}
