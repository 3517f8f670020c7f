//! Events of the feature store: Redis up or down, the popularity fallback refreshed.

use tracing::{info, warn};

use super::InternalEvent;
use crate::telemetry::Metrics;

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
    pub error: Option<&'a (dyn std::error::Error + 'static)>,
}

impl InternalEvent for FallbackRefreshed<'_> {
    fn emit(self, _m: &Metrics) {
        match self.error {
            None => tracing::debug!(event = "FallbackRefreshed", items = self.items as u64),
            Some(e) => warn!(
                event = "FallbackRefreshFailed",
                items = self.items as u64,
                error = e
            ),
        }
    }
}
