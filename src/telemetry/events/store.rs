//! Events of the feature store: calls and their time, the local caches, Redis up or down, the
//! popularity fallback refreshed.

use std::time::Duration;

use tracing::{info, warn};

use super::InternalEvent;
use crate::telemetry::Metrics;

pub struct RedisStateChanged<'a> {
    /// `None`: Redis answers again; `Some(reason)`: it does not.
    pub down: Option<&'a str>,
}

impl InternalEvent for RedisStateChanged<'_> {
    fn emit(self, m: &Metrics) {
        match self.down {
            Some(reason) => {
                m.recent_errors
                    .push("store", "", "redis_down", reason.to_owned());
                warn!(event = "RedisDown", reason)
            }
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

/// One call into the feature store backend returned.
pub struct StoreCalled<'a> {
    pub backend: &'a str,
    /// Bounded: the store operation's name.
    pub op: &'a str,
    pub duration: Duration,
}

impl InternalEvent for StoreCalled<'_> {
    fn emit(self, m: &Metrics) {
        m.feature_store_request_seconds
            .with_label_values(&[self.backend, self.op])
            .observe(self.duration.as_secs_f64());
    }
}

/// Lookups in a local feature cache: `count` of them with one result.
pub struct CacheLookedUp {
    /// `item` or `list`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
    pub count: usize,
}

impl InternalEvent for CacheLookedUp {
    fn emit(self, m: &Metrics) {
        if self.count > 0 {
            m.feature_cache_requests_total
                .with_label_values(&[self.cache, self.result])
                .inc_by(self.count as u64);
        }
    }
}

/// The watchdog's PING: its round trip when Redis answered.
pub struct RedisPinged {
    pub round_trip: Option<Duration>,
}

impl InternalEvent for RedisPinged {
    fn emit(self, m: &Metrics) {
        m.redis_up.set(i64::from(self.round_trip.is_some()));
        if let Some(rtt) = self.round_trip {
            m.redis_ping_seconds.observe(rtt.as_secs_f64());
        }
    }
}

/// The Redis circuit breaker opened (`opened` = why) or closed.
pub struct StoreCircuitChanged<'a> {
    pub opened: Option<&'a str>,
}

impl InternalEvent for StoreCircuitChanged<'_> {
    fn emit(self, m: &Metrics) {
        m.redis_circuit_open.set(i64::from(self.opened.is_some()));
        match self.opened {
            Some(reason) => {
                m.redis_circuit_opened_total.inc();
                m.recent_errors
                    .push("store", "", "circuit_open", reason.to_owned());
                warn!(event = "CircuitOpened", reason);
            }
            None => info!(event = "CircuitClosed"),
        }
    }
}

/// The Redis connection pools' state, sampled by the watchdog every interval.
pub struct RedisPoolSampled {
    pub connections: usize,
    pub idle: usize,
    pub waiting: usize,
}

impl InternalEvent for RedisPoolSampled {
    fn emit(self, m: &Metrics) {
        m.redis_pool_connections
            .with_label_values(&["idle"])
            .set(self.idle as i64);
        m.redis_pool_connections
            .with_label_values(&["in_use"])
            .set(self.connections.saturating_sub(self.idle) as i64);
        m.redis_pool_waiters.set(self.waiting as i64);
    }
}
