//! Internal events: one type per thing that happens, each emitting its log line and updating
//! its metrics in one place, so that the two never drift apart.

use std::time::Duration;

use tracing::{error, info, warn};

use super::Metrics;

pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

pub struct FeedServed<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub request_id: &'a str,
    pub model: &'a str,
    pub num_candidates: usize,
    pub num_items: usize,
    pub latency: Duration,
    /// The degradation reason, when served from the fallback.
    pub degraded: Option<&'a str>,
}

impl InternalEvent for FeedServed<'_> {
    fn emit(self, m: &Metrics) {
        m.feed_requests_total
            .with_label_values(&[self.tenant, "ok"])
            .inc();
        m.feed_latency_seconds
            .with_label_values(&[self.tenant])
            .observe(self.latency.as_secs_f64());
        info!(
            event = "FeedServed",
            tenant = self.tenant,
            user = self.user,
            request_id = self.request_id,
            model = self.model,
            num_candidates = self.num_candidates as u64,
            num_items = self.num_items as u64,
            latency_ms = self.latency.as_secs_f64() * 1e3,
            degraded = self.degraded.is_some(),
            degraded_reason = self.degraded,
        );
    }
}

pub struct FeedFailed<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub request_id: &'a str,
    /// The API error code (a bounded label value).
    pub code: &'static str,
    pub error: &'a (dyn std::error::Error + 'static),
    pub latency: Duration,
}

impl InternalEvent for FeedFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.feed_requests_total
            .with_label_values(&[self.tenant, self.code])
            .inc();
        m.feed_latency_seconds
            .with_label_values(&[self.tenant])
            .observe(self.latency.as_secs_f64());
        let latency_ms = self.latency.as_secs_f64() * 1e3;
        // `internal` is our bug; `unavailable` is load or a dependency, worth a warning.
        if self.code == "internal" {
            error!(
                event = "FeedFailed",
                tenant = self.tenant,
                user = self.user,
                request_id = self.request_id,
                code = self.code,
                error = self.error,
                latency_ms
            );
        } else {
            warn!(
                event = "FeedFailed",
                tenant = self.tenant,
                user = self.user,
                request_id = self.request_id,
                code = self.code,
                error = self.error,
                latency_ms
            );
        }
    }
}

pub struct CandidatesFetched<'a> {
    pub tenant: &'a str,
    pub count: usize,
    pub fetch: Duration,
    pub merge: Duration,
}

impl InternalEvent for CandidatesFetched<'_> {
    fn emit(self, m: &Metrics) {
        m.candidates_fetched
            .with_label_values(&[self.tenant])
            .observe(self.count as f64);
        m.candidate_fetch_seconds
            .with_label_values(&[self.tenant, "fetch"])
            .observe(self.fetch.as_secs_f64());
        m.candidate_fetch_seconds
            .with_label_values(&[self.tenant, "merge"])
            .observe(self.merge.as_secs_f64());
    }
}

pub struct FeaturesFetched<'a> {
    pub tenant: &'a str,
    pub duration: Duration,
}

impl InternalEvent for FeaturesFetched<'_> {
    fn emit(self, m: &Metrics) {
        m.feature_fetch_seconds
            .with_label_values(&[self.tenant])
            .observe(self.duration.as_secs_f64());
    }
}

pub struct ModelScored<'a> {
    pub model: &'a str,
    pub duration: Duration,
    pub scores: &'a [f32],
}

impl InternalEvent for ModelScored<'_> {
    fn emit(self, m: &Metrics) {
        m.model_inference_seconds
            .with_label_values(&[self.model])
            .observe(self.duration.as_secs_f64());
        // Hundreds of scores per request: accumulate locally, one atomic flush.
        let h = m.model_score.with_label_values(&[self.model]).local();
        for s in self.scores {
            h.observe(f64::from(*s));
        }
        h.flush();
    }
}

/// The missing and non-finite values of one assembled feature matrix.
pub struct FeaturesInvalid<'a> {
    pub model: &'a str,
    pub features: &'a [String],
    pub health: &'a crate::features::FeatureHealth,
}

impl InternalEvent for FeaturesInvalid<'_> {
    fn emit(self, m: &Metrics) {
        let kinds = [("missing", &self.health.missing), ("nan", &self.health.nan)];
        for (kind, counts) in kinds {
            for (feature, &n) in self.features.iter().zip(counts.iter()) {
                if n > 0 {
                    m.ml.feature_invalid_total
                        .with_label_values(&[self.model, feature.as_str(), kind])
                        .inc_by(u64::from(n));
                }
            }
        }
    }
}

/// A reload attempt and the model serving after it.
pub struct ModelReloaded<'a> {
    pub slot: &'a str,
    /// The model the slot served before.
    pub previous: &'a crate::model::LoadedModel,
    pub outcome: &'a crate::model::ReloadOutcome,
    pub serving: &'a crate::model::LoadedModel,
}

impl InternalEvent for ModelReloaded<'_> {
    fn emit(self, m: &Metrics) {
        use crate::model::ReloadOutcome;
        let serving = &self.serving.metadata;
        match self.outcome {
            ReloadOutcome::Loaded(_) => {
                m.ml.model_reloads_total
                    .with_label_values(&["loaded"])
                    .inc();
                // build_info names the models serving: the previous one's series goes.
                let old = &self.previous.metadata;
                let _ = m.build_info.remove_label_values(&[
                    env!("CARGO_PKG_VERSION"),
                    &old.name,
                    &old.version,
                ]);
                m.build_info
                    .with_label_values(&[
                        env!("CARGO_PKG_VERSION"),
                        &serving.name,
                        &serving.version,
                    ])
                    .set(1);
                info!(
                    event = "ModelReloaded",
                    slot = self.slot,
                    model = %serving.name,
                    model_version = %serving.version,
                );
            }
            ReloadOutcome::Rejected(error) => {
                m.ml.model_reloads_total
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::error!(
                    event = "ModelReloadRejected",
                    slot = self.slot,
                    error = %error,
                    model = %serving.name,
                    model_version = %serving.version,
                    "the new model files were rejected; the old model keeps serving"
                );
            }
        }
    }
}

/// The canary's verdict on the served model.
pub struct ModelCanaryChecked<'a> {
    pub model: &'a str,
    pub error: Option<&'a crate::model::ModelError>,
}

impl InternalEvent for ModelCanaryChecked<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.model_canary_ok
            .with_label_values(&[self.model])
            .set(i64::from(self.error.is_none()));
        if let Some(error) = self.error {
            tracing::error!(
                event = "ModelCanaryFailed",
                model = %self.model,
                error = %error,
                "the served model no longer scores its probe rows as training recorded"
            );
        }
    }
}

/// One drift window of the served model.
pub struct ModelDriftMeasured<'a> {
    pub model: &'a str,
    pub report: &'a crate::model::DriftReport,
}

impl InternalEvent for ModelDriftMeasured<'_> {
    fn emit(self, m: &Metrics) {
        for (feature, psi) in &self.report.features {
            m.ml.feature_drift_psi
                .with_label_values(&[self.model, feature.as_str()])
                .set(*psi);
        }
        m.ml.score_drift_psi
            .with_label_values(&[self.model])
            .set(self.report.score);
        m.ml.drift_samples_total
            .with_label_values(&[self.model])
            .inc_by(self.report.samples);
    }
}

/// A shadow model scored beside the live one: the share of the live top-k it also ranks
/// top-k.
pub struct ShadowCompared<'a> {
    pub model: &'a str,
    pub shadow: &'a str,
    pub overlap: f64,
}

impl InternalEvent for ShadowCompared<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.shadow_topk_overlap_ratio
            .with_label_values(&[self.model, self.shadow])
            .observe(self.overlap);
    }
}

/// A feed remembered for the live-quality join.
pub struct FeedRanked<'a> {
    pub tenant: &'a str,
    pub model: &'a crate::model::ModelMetadata,
}

impl InternalEvent for FeedRanked<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.ranking_feeds_total
            .with_label_values(&[&self.model.name, &self.model.version, self.tenant])
            .inc();
    }
}

/// A click or purchase joined with the feed it came from, `position` 0-based.
pub struct FeedInteraction<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub version: &'a str,
    pub kind: crate::catalog::EventKind,
    pub position: usize,
    pub first_click: bool,
}

impl InternalEvent for FeedInteraction<'_> {
    fn emit(self, m: &Metrics) {
        let (name, version) = (self.model, self.version);
        let kind = match self.kind {
            crate::catalog::EventKind::Purchase => "purchase",
            _ => "click",
        };
        for k in crate::quality::CUTOFFS {
            if self.position < k {
                m.ml.ranking_interactions_total
                    .with_label_values(&[name, version, self.tenant, kind, &k.to_string()])
                    .inc();
            }
        }
        if self.first_click {
            m.ml.ranking_reciprocal_rank_sum
                .with_label_values(&[name, version, self.tenant])
                .inc_by(1.0 / (self.position + 1) as f64);
        }
    }
}

/// The served-feed log could not be written or read (Redis down): those feeds and events are
/// not joined, and the live quality figures undercount until it recovers.
pub struct FeedLogFailed<'a> {
    pub error: &'a crate::store::StoreError,
}

impl InternalEvent for FeedLogFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.ranking_unjoined_total
            .with_label_values(&["feed_log_unavailable"])
            .inc();
        tracing::warn!(event = "FeedLogFailed", error = %self.error);
    }
}

pub struct InteractionUnjoined {
    pub reason: &'static str,
}

impl InternalEvent for InteractionUnjoined {
    fn emit(self, m: &Metrics) {
        m.ml.ranking_unjoined_total
            .with_label_values(&[self.reason])
            .inc();
    }
}

pub struct ActorUp<'a> {
    pub actor: &'a str,
    pub up: bool,
}

impl InternalEvent for ActorUp<'_> {
    fn emit(self, m: &Metrics) {
        m.actor_up
            .with_label_values(&[self.actor])
            .set(i64::from(self.up));
        if self.up {
            m.actor_restarts_total.with_label_values(&[self.actor]);
        }
        tracing::debug!(
            event = "ActorStateChanged",
            actor = self.actor,
            up = self.up
        );
    }
}

pub struct ActorPanicked<'a> {
    pub actor: &'a str,
    pub message: &'a str,
}

impl InternalEvent for ActorPanicked<'_> {
    fn emit(self, _m: &Metrics) {
        error!(
            event = "ActorPanicked",
            actor = self.actor,
            panic = self.message
        );
    }
}

pub struct ActorRestarted<'a> {
    pub actor: &'a str,
    pub restarts: u64,
}

impl InternalEvent for ActorRestarted<'_> {
    fn emit(self, m: &Metrics) {
        m.actor_restarts_total
            .with_label_values(&[self.actor])
            .inc();
        // Logged inside whatever span is current, so the restart shows on that trace too.
        warn!(
            event = "ActorRestarted",
            actor = self.actor,
            restarts = self.restarts
        );
    }
}

pub struct ItemsUpserted<'a> {
    pub tenant: &'a str,
    pub count: usize,
}

impl InternalEvent for ItemsUpserted<'_> {
    fn emit(self, m: &Metrics) {
        m.items_upserted_total
            .with_label_values(&[self.tenant])
            .inc_by(self.count as u64);
        info!(
            event = "ItemsUpserted",
            tenant = self.tenant,
            count = self.count as u64
        );
    }
}

pub struct DemoSeeded<'a> {
    pub tenant: &'a str,
    pub items: usize,
    pub users: usize,
    pub events: usize,
    pub duration: Duration,
}

impl InternalEvent for DemoSeeded<'_> {
    fn emit(self, m: &Metrics) {
        m.demo_seed_seconds.observe(self.duration.as_secs_f64());
        info!(
            event = "DemoSeeded",
            tenant = self.tenant,
            items = self.items as u64,
            users = self.users as u64,
            events = self.events as u64,
            duration_ms = self.duration.as_secs_f64() * 1e3,
        );
    }
}

pub struct ModelLoaded<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub features: usize,
}

impl InternalEvent for ModelLoaded<'_> {
    fn emit(self, m: &Metrics) {
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), self.name, self.version])
            .set(1);
        info!(
            event = "ModelLoaded",
            model = self.name,
            model_version = self.version,
            features = self.features as u64
        );
    }
}

/// Lines with no metric: server lifecycle.
pub fn server_started(address: &str, workers: usize, backend: &str) {
    info!(
        event = "ServerStarted",
        address,
        workers = workers as u64,
        store = backend
    );
}

pub fn shutdown_requested(signal: &str) {
    info!(event = "ShutdownRequested", signal);
}

pub fn server_stopped() {
    info!(event = "ServerStopped");
}

/// A 5xx outside the feed path (the feed has its own [`FeedFailed`]).
pub fn request_failed(code: &'static str, error: &(dyn std::error::Error + 'static)) {
    error!(event = "RequestFailed", code, error);
}

pub struct RedisStateChanged<'a> {
    /// `None`: Redis answers again; `Some(reason)`: it does not.
    pub down: Option<&'a str>,
}

impl InternalEvent for RedisStateChanged<'_> {
    fn emit(self, _m: &Metrics) {
        match self.down {
            Some(reason) => warn!(event = "RedisDown", reason),
            None => info!(event = "RedisUp"),
        }
    }
}

pub struct FallbackRefreshed<'a> {
    pub items: usize,
    pub error: Option<&'a crate::store::StoreError>,
}

impl InternalEvent for FallbackRefreshed<'_> {
    fn emit(self, _m: &Metrics) {
        match self.error {
            None => tracing::debug!(event = "FallbackRefreshed", items = self.items as u64),
            Some(e) => warn!(
                event = "FallbackRefreshFailed",
                items = self.items as u64,
                error = e as &dyn std::error::Error
            ),
        }
    }
}

pub struct FeedDegraded<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    /// Bounded: `redis_down` (the watchdog says so) or `store_error` (a call failed).
    pub reason: &'static str,
    pub cause: Option<&'a str>,
}

impl InternalEvent for FeedDegraded<'_> {
    fn emit(self, m: &Metrics) {
        m.feed_degraded_total
            .with_label_values(&[self.tenant, self.reason])
            .inc();
        warn!(
            event = "FeedDegraded",
            tenant = self.tenant,
            user = self.user,
            reason = self.reason,
            cause = self.cause
        );
    }
}

pub struct FeaturesMissing<'a> {
    pub tenant: &'a str,
    pub kind: &'static str,
    pub count: usize,
}

impl InternalEvent for FeaturesMissing<'_> {
    fn emit(self, m: &Metrics) {
        if self.count > 0 {
            m.feature_missing_total
                .with_label_values(&[self.tenant, self.kind])
                .inc_by(self.count as u64);
            tracing::debug!(
                event = "FeaturesMissing",
                tenant = self.tenant,
                kind = self.kind,
                count = self.count as u64
            );
        }
    }
}

pub struct EventsApplied<'a> {
    pub tenant: &'a str,
    pub source: &'static str,
    /// The events written (duplicates excluded).
    pub events: &'a [crate::catalog::Event],
    pub outcome: &'a crate::ingest::Applied,
    pub duration: Duration,
}

impl InternalEvent for EventsApplied<'_> {
    fn emit(self, m: &Metrics) {
        let now = crate::catalog::unix_now();
        let mut by_kind = std::collections::HashMap::new();
        for e in self.events {
            *by_kind.entry(e.kind).or_insert(0u64) += 1;
            m.feature_freshness_seconds
                .observe((now - e.timestamp).max(0.0));
        }
        for (kind, n) in by_kind {
            let kind = serde_json::to_value(kind).ok();
            let kind = kind.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown");
            m.events_ingested_total
                .with_label_values(&[self.tenant, kind, self.source])
                .inc_by(n);
        }
        m.events_duplicates_total
            .with_label_values(&[self.tenant])
            .inc_by(self.outcome.duplicates as u64);
        m.event_apply_seconds.observe(self.duration.as_secs_f64());
        m.last_event_processed_timestamp_seconds.set(now);
        tracing::debug!(
            event = "EventsApplied",
            tenant = self.tenant,
            source = self.source,
            applied = self.outcome.applied as u64,
            duplicates = self.outcome.duplicates as u64,
            unknown_items = self.outcome.unknown_items as u64,
            duration_ms = self.duration.as_secs_f64() * 1e3
        );
    }
}

pub struct EventsRejected {
    /// Bounded: `invalid`, `unknown_item`, `unparseable`.
    pub reason: &'static str,
    pub count: usize,
}

impl InternalEvent for EventsRejected {
    fn emit(self, m: &Metrics) {
        m.events_rejected_total
            .with_label_values(&[self.reason])
            .inc_by(self.count as u64);
        if self.count > 0 {
            tracing::info!(
                event = "EventsRejected",
                reason = self.reason,
                count = self.count as u64
            );
        }
    }
}

pub struct KafkaConsumerFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for KafkaConsumerFailed<'_> {
    fn emit(self, _m: &Metrics) {
        error!(event = "KafkaConsumerFailed", error = %self.error);
    }
}
