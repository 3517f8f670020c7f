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
