//! Whether the store is reachable: the Redis watchdog's last PING, and the circuit breaker
//! that every Redis call goes through (`breaker`). One view: a failed PING opens the breaker,
//! a successful one closes it. Readiness follows the watchdog (a PING a second, not one failed
//! call); feeds skip the store while either says it is down. The embedded store is always up.
//! Nothing here does I/O.

use std::sync::RwLock;
use std::time::Duration;

use super::breaker::{CircuitBreaker, Transition};

pub struct StoreHealth {
    backend: &'static str,
    /// `None` while up; the reason while down (as the watchdog last saw it).
    down: RwLock<Option<String>>,
    /// Only for a networked store.
    breaker: Option<CircuitBreaker>,
}

impl StoreHealth {
    /// A store that is always there (the embedded one).
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            down: RwLock::new(None),
            breaker: None,
        }
    }

    /// A networked store, behind a breaker that opens after `failures_to_open` failed calls in
    /// a row and probes again after `open_for`. Down (not ready) until the watchdog's first
    /// PING answers; the breaker starts closed, so that the first PING's refresh of the
    /// fallback goes through.
    pub fn with_breaker(backend: &'static str, failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            backend,
            down: RwLock::new(Some("not checked yet".into())),
            breaker: Some(CircuitBreaker::new(failures_to_open, open_for)),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Why the store is down, as the watchdog last saw it: what readiness reports.
    pub fn down_reason(&self) -> Option<String> {
        self.down.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why a feed should not wait on the store now: the watchdog's reason, else the open
    /// breaker's.
    pub fn avoid_reason(&self) -> Option<String> {
        self.down_reason()
            .or_else(|| self.breaker.as_ref()?.open_reason())
    }

    /// Records the watchdog's latest observation; returns whether its view changed, and what
    /// the observation did to the breaker.
    pub fn set(&self, down: Option<String>) -> (bool, Option<Transition>) {
        let transition = self.breaker.as_ref().and_then(|b| match &down {
            None => b.succeeded(),
            Some(reason) => b.trip(reason),
        });
        let mut state = self.down.write().unwrap_or_else(|e| e.into_inner());
        let changed = state.is_some() != down.is_some();
        *state = down;
        (changed, transition)
    }

    /// May a call go to the store now? `Err(reason)` while the breaker is open.
    pub fn admit(&self) -> Result<(), String> {
        self.breaker.as_ref().map_or(Ok(()), CircuitBreaker::admit)
    }

    pub fn call_succeeded(&self) -> Option<Transition> {
        self.breaker.as_ref()?.succeeded()
    }

    pub fn call_failed(&self, reason: &str) -> Option<Transition> {
        self.breaker.as_ref()?.failed(reason)
    }
}
