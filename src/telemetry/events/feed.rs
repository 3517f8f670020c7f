//! Events of the feed path: a feed served or failed, its stages, degradation.

use std::time::Duration;

use tracing::{error, info, warn};

use super::InternalEvent;
use crate::telemetry::Metrics;

pub struct FeedServed<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub request_id: &'a str,
    /// `http` or `grpc` (a bounded label).
    pub transport: &'static str,
    pub model: &'a str,
    pub num_candidates: usize,
    pub num_items: usize,
    pub latency: Duration,
    /// The degradation reason, when served from the fallback.
    pub degraded: Option<&'a str>,
    /// 1-based page of the feed session.
    pub page: u32,
    pub rules_version: u64,
    /// The trace id, when the request's trace is sampled: the latency's exemplar.
    pub trace_id: Option<&'a str>,
    /// The experiment and arm the user is in, if the tenant runs one.
    pub experiment: Option<&'a str>,
    pub arm: Option<&'a str>,
    /// Whether the feed went to the served-feature log.
    pub feature_logged: bool,
}

impl InternalEvent for FeedServed<'_> {
    fn emit(self, m: &Metrics) {
        m.feed_requests_total
            .with_label_values(&[self.tenant, self.transport, "ok"])
            .inc();
        m.feed_latency_seconds
            .with_label_values(&[self.tenant, self.transport])
            .observe(self.latency.as_secs_f64());
        if let Some(trace_id) = self.trace_id {
            m.feed_latency_exemplars.record(
                self.tenant,
                self.transport,
                self.latency.as_secs_f64(),
                trace_id,
            );
        }
        info!(
            event = "FeedServed",
            tenant = self.tenant,
            user = self.user,
            request_id = self.request_id,
            transport = self.transport,
            model = self.model,
            num_candidates = self.num_candidates as u64,
            num_items = self.num_items as u64,
            latency_ms = self.latency.as_secs_f64() * 1e3,
            degraded = self.degraded.is_some(),
            degraded_reason = self.degraded,
            page = self.page,
            rules_version = self.rules_version,
            experiment = self.experiment,
            arm = self.arm,
            feature_logged = self.feature_logged,
        );
    }
}

pub struct FeedFailed<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub request_id: &'a str,
    /// `http` or `grpc` (a bounded label).
    pub transport: &'static str,
    /// The API error code (a bounded label value).
    pub code: &'static str,
    pub error: &'a (dyn std::error::Error + 'static),
    pub latency: Duration,
}

impl InternalEvent for FeedFailed<'_> {
    fn emit(self, m: &Metrics) {
        // A client's mistake (a bad cursor) is not an operator's error.
        if !self.code.starts_with("invalid") {
            m.recent_errors
                .push("feed", self.tenant, self.code, self.error.to_string());
        }
        m.feed_requests_total
            .with_label_values(&[self.tenant, self.transport, self.code])
            .inc();
        m.feed_latency_seconds
            .with_label_values(&[self.tenant, self.transport])
            .observe(self.latency.as_secs_f64());
        let latency_ms = self.latency.as_secs_f64() * 1e3;
        // `internal` is our bug; `unavailable` is load or a dependency, worth a warning.
        if self.code == "internal" {
            error!(
                event = "FeedFailed",
                tenant = self.tenant,
                user = self.user,
                request_id = self.request_id,
                transport = self.transport,
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
                transport = self.transport,
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
