//! `grpc.health.v1.Health`: `""` (the whole server) and `eaglerank.v1.FeedService` report
//! SERVING exactly when `/readyz` says ready (`api::readiness`: store up, model canary
//! passing, every actor running), NOT_SERVING otherwise; `Watch` streams each change.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::AppState;
use crate::api::readiness::readiness;
use crate::telemetry::events::grpc_serving_changed;

pub const SERVICE_NAME: &str = "eaglerank.v1.FeedService";

/// How often readiness is re-read: its inputs change at the watchdogs' pace (Redis PINGs every
/// 500 ms by default), and reading it costs a few atomic loads.
const POLL: Duration = Duration::from_millis(200);

/// How long `Watch` streams get to deliver the final NOT_SERVING before they are closed.
const LAST_WORD: Duration = Duration::from_millis(100);

/// Mirrors readiness into the reporter until `stop`; then reports NOT_SERVING, and closes the
/// `Watch` streams (they never end by themselves, and a graceful stop waits for every call).
pub(super) async fn follow_readiness(
    state: Arc<AppState>,
    mut reporter: HealthReporter,
    mut stop: oneshot::Receiver<()>,
) {
    let mut last = None;
    loop {
        let ready = readiness(&state).ready;
        if last != Some(ready) {
            set(&reporter, ready).await;
            last = Some(ready);
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    set(&reporter, false).await;
    tokio::time::sleep(LAST_WORD).await;
    for service in ["", SERVICE_NAME] {
        reporter.clear_service_status(service).await;
    }
}

async fn set(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in ["", SERVICE_NAME] {
        reporter.set_service_status(service, status).await;
    }
    grpc_serving_changed(SERVICE_NAME, serving);
}
