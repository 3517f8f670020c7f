//! Events of the process: start-up, demo seeding, shutdown, and 5xx outside the feed path.

use std::time::Duration;

use tracing::{error, info};

use super::InternalEvent;
use crate::telemetry::Metrics;

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

/// Lines with no metric: server lifecycle.
pub fn server_started(address: &str, workers: usize, backend: &str) {
    info!(
        event = "ServerStarted",
        address,
        workers = workers as u64,
        store = backend
    );
}

pub fn grpc_server_started(port: u16) {
    info!(event = "GrpcServerStarted", port);
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

/// A gRPC call answered (the feed itself is also a `FeedServed` / `FeedFailed`).
pub struct GrpcCallFinished<'a> {
    pub service: &'static str,
    pub method: &'static str,
    /// The gRPC status code's name (`OK`, `INVALID_ARGUMENT`, ...).
    pub code: &'static str,
    pub message: &'a str,
    pub duration: Duration,
}

impl InternalEvent for GrpcCallFinished<'_> {
    fn emit(self, m: &Metrics) {
        m.grpc_server_handled_total
            .with_label_values(&[self.service, self.method, self.code])
            .inc();
        m.grpc_server_handling_seconds
            .with_label_values(&[self.service, self.method])
            .observe(self.duration.as_secs_f64());
        tracing::debug!(
            event = "GrpcCallFinished",
            service = self.service,
            method = self.method,
            code = self.code,
            message = self.message,
            duration_ms = self.duration.as_secs_f64() * 1e3,
        );
    }
}

pub fn grpc_serving_changed(service: &str, serving: bool) {
    info!(event = "GrpcHealthChanged", service, serving);
}

/// A request refused before any work: bad key, another tenant's key, unknown tenant, rate
/// limit, invalid request. Counted per tenant, so that a broken client or key shows as refusals
/// instead of only as less traffic. Not logged above debug: a flood of them must not flood the
/// logs.
pub struct RequestRefused<'a> {
    /// A configured tenant, or `_unknown` (bounded).
    pub tenant: &'a str,
    pub transport: &'static str,
    /// The error code.
    pub reason: &'static str,
}

impl InternalEvent for RequestRefused<'_> {
    fn emit(self, m: &Metrics) {
        m.requests_refused_total
            .with_label_values(&[self.tenant, self.transport, self.reason])
            .inc();
        tracing::debug!(
            event = "RequestRefused",
            tenant = self.tenant,
            transport = self.transport,
            reason = self.reason,
        );
    }
}

/// A request being served: counted in `eaglerank_requests_in_flight` from [`InFlight::start`]
/// until the guard is dropped (answered, failed or cancelled alike).
pub struct InFlight {
    gauge: prometheus::IntGauge,
}

impl InFlight {
    /// `endpoint`: a bounded value (a route pattern, a gRPC method).
    pub fn start(m: &Metrics, transport: &str, endpoint: &str) -> Self {
        let gauge = m
            .requests_in_flight
            .with_label_values(&[transport, endpoint]);
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
