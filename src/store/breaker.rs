//! The circuit breaker in front of Redis. A Redis that stops answering (a failover, a network
//! partition, a fork stall, a slow script) costs every call its full command timeout, and
//! feeds queue behind those calls. After `redis.breaker_failures` failures in a row the breaker
//! opens: calls fail at once, without touching the pool, so feeds go straight to the fallback
//! (visibly degraded) and writes answer 503 at once. After `redis.breaker_open_ms` one call is
//! let through as a probe (half-open): its success closes the breaker, its failure opens it
//! again. The Redis watchdog's PINGs count too (`StoreHealth`): a failed PING opens it, a
//! successful one closes it, so the breaker and readiness share one view of Redis.
//!
//! [`CircuitBreaker`] is the state machine alone (no I/O, no clock of its own beyond
//! `Instant`); [`Guarded`] puts it in front of a store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    ApplyOutcome, CandidateLists, CandidateQuery, FeatureStore, FeedLog, FeedSessions, LoggedFeed,
    Page, Pages, RulesStore, ServedFeed, StoreError, StoreHealth, StoredRules, TenantUsage, Usage,
};
use crate::domain::{Event, Item, ItemId, ItemPatch, ItemRecord, UserProfile};
use crate::telemetry::events::StoreCircuitChanged;
use crate::telemetry::{InternalEvent, Metrics};

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        reason: String,
    },
    /// One probe call is in flight; everything else is refused meanwhile.
    HalfOpen {
        reason: String,
    },
}

/// A change of the breaker's state, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Opened(String),
    Closed,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: a panic while it was held cannot have left it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a call go to Redis now? `Err(reason)`: no, the breaker is open. The first call after
    /// the open period is admitted as the probe.
    pub fn admit(&self) -> Result<(), String> {
        let mut state = self.state();
        match &*state {
            State::Closed { .. } => Ok(()),
            State::Open { until, reason } if Instant::now() < *until => Err(reason.clone()),
            State::Open { reason, .. } => {
                *state = State::HalfOpen {
                    reason: reason.clone(),
                };
                Ok(())
            }
            State::HalfOpen { reason } => Err(reason.clone()),
        }
    }

    /// A call (or PING) succeeded.
    pub fn succeeded(&self) -> Option<Transition> {
        let mut state = self.state();
        let was_closed = matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        (!was_closed).then_some(Transition::Closed)
    }

    /// A call failed with `reason`: counted, and the breaker opens at the threshold (or at
    /// once, when it was probing).
    pub fn failed(&self, reason: &str) -> Option<Transition> {
        let mut state = self.state();
        let open = match &*state {
            State::Closed { failures } if failures + 1 < self.failures_to_open => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::HalfOpen { .. } => true,
            // Calls admitted before it opened, failing now: already open.
            State::Open { .. } => false,
        };
        open.then(|| self.open(&mut state, reason))
    }

    /// Opens the breaker now, whatever its count (the watchdog's PING failed).
    pub fn trip(&self, reason: &str) -> Option<Transition> {
        let mut state = self.state();
        (!matches!(*state, State::Open { .. })).then(|| self.open(&mut state, reason))
    }

    fn open(&self, state: &mut State, reason: &str) -> Transition {
        let reason = format!("circuit open: {reason}");
        *state = State::Open {
            until: Instant::now() + self.open_for,
            reason: reason.clone(),
        };
        Transition::Opened(reason)
    }

    /// Why calls are refused, while they are.
    pub fn open_reason(&self) -> Option<String> {
        match &*self.state() {
            State::Closed { .. } => None,
            State::Open { reason, .. } | State::HalfOpen { reason } => Some(reason.clone()),
        }
    }
}

/// A store (Redis) behind the breaker of its [`StoreHealth`]: every call is admitted first and
/// its outcome recorded. `ping` is never refused: it is how the watchdog looks.
pub struct Guarded<S> {
    inner: Arc<S>,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
}

impl<S> Guarded<S> {
    pub fn new(inner: Arc<S>, health: Arc<StoreHealth>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            health,
            metrics,
        }
    }

    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if let Err(reason) = self.health.admit() {
            return Err(StoreError::Unavailable(reason));
        }
        let result = call.await;
        let transition = match &result {
            Err(StoreError::Unavailable(reason)) => self.health.call_failed(reason),
            // An unknown tenant or a full budget is the caller's problem, not Redis's.
            Ok(_) | Err(StoreError::UnknownTenant(_) | StoreError::QuotaExceeded { .. }) => {
                self.health.call_succeeded()
            }
        };
        report(transition, &self.metrics);
        result
    }
}

/// Logs and counts a change of the breaker's state.
pub fn report(transition: Option<Transition>, metrics: &Metrics) {
    if let Some(t) = transition {
        StoreCircuitChanged {
            opened: match &t {
                Transition::Opened(reason) => Some(reason),
                Transition::Closed => None,
            },
        }
        .emit(metrics);
    }
}

#[async_trait]
impl<S: FeatureStore> FeatureStore for Guarded<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn user_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Arc<UserProfile>>, StoreError> {
        self.call(self.inner.user_profile(tenant, user_id)).await
    }

    async fn candidate_lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists, StoreError> {
        self.call(self.inner.candidate_lists(tenant, query)).await
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        self.call(self.inner.items(tenant, ids)).await
    }

    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError> {
        self.call(self.inner.upsert_items(tenant, items)).await
    }

    async fn patch_item(
        &self,
        tenant: &str,
        item_id: &str,
        patch: &ItemPatch,
    ) -> Result<Option<Item>, StoreError> {
        self.call(self.inner.patch_item(tenant, item_id, patch))
            .await
    }

    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError> {
        self.call(self.inner.apply_events(tenant, events)).await
    }

    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        self.call(self.inner.usage(tenant)).await
    }
}

#[async_trait]
impl<S: RulesStore> RulesStore for Guarded<S> {
    async fn rules(&self, tenant: &str) -> Result<Option<StoredRules>, StoreError> {
        self.call(self.inner.rules(tenant)).await
    }

    async fn put_rules(&self, tenant: &str, document: &str) -> Result<u64, StoreError> {
        self.call(self.inner.put_rules(tenant, document)).await
    }
}

#[async_trait]
impl<S: FeedSessions> FeedSessions for Guarded<S> {
    async fn pages(&self, tenant: &str, session: &str) -> Result<Pages, StoreError> {
        self.call(self.inner.pages(tenant, session)).await
    }

    async fn put_page(
        &self,
        tenant: &str,
        session: &str,
        number: u32,
        page: &Page,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.call(self.inner.put_page(tenant, session, number, page, ttl))
            .await
    }
}

#[async_trait]
impl<S: FeedLog> FeedLog for Guarded<S> {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.call(self.inner.record(tenant, request_id, feed, ttl))
            .await
    }

    async fn record_many(&self, feeds: &[LoggedFeed], ttl: Duration) -> Result<(), StoreError> {
        self.call(self.inner.record_many(feeds, ttl)).await
    }

    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        self.call(self.inner.lookup(tenant, request_ids)).await
    }

    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        self.call(self.inner.claim_first_clicks(tenant, request_ids, ttl))
            .await
    }

    async fn held(&self, tenant: &str) -> Result<Option<Usage>, StoreError> {
        self.call(self.inner.held(tenant)).await
    }

    async fn trim(&self, tenant: &str, max: u64) -> Result<u64, StoreError> {
        self.call(self.inner.trim(tenant, max)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = CircuitBreaker::new(3, Duration::from_secs(60));
        assert_eq!(b.failed("timeout"), None);
        assert_eq!(b.failed("timeout"), None);
        assert_eq!(b.succeeded(), None, "closed stays closed");
        assert_eq!(b.failed("timeout"), None);
        assert_eq!(b.failed("timeout"), None);
        assert!(b.admit().is_ok());
        assert_eq!(
            b.failed("timeout"),
            Some(Transition::Opened("circuit open: timeout".into()))
        );
        assert_eq!(b.admit(), Err("circuit open: timeout".into()));
        assert_eq!(b.open_reason().as_deref(), Some("circuit open: timeout"));
        // A late failure of a call admitted before: still open, no second transition.
        assert_eq!(b.failed("timeout"), None);
    }

    #[test]
    fn after_the_open_period_one_probe_decides() {
        let b = CircuitBreaker::new(1, Duration::from_millis(20));
        assert!(b.failed("refused").is_some());
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admit().is_ok(), "the probe");
        assert!(b.admit().is_err(), "one probe at a time");
        assert!(b.failed("refused").is_some(), "a failed probe opens again");
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admit().is_ok());
        assert_eq!(b.succeeded(), Some(Transition::Closed));
        assert!(b.admit().is_ok() && b.admit().is_ok());
        assert_eq!(b.open_reason(), None);
    }

    #[test]
    fn a_trip_opens_at_once_and_a_success_closes() {
        let b = CircuitBreaker::new(5, Duration::from_secs(60));
        assert!(b.trip("ping failed").is_some());
        assert_eq!(b.trip("ping failed"), None, "already open");
        assert!(b.admit().is_err());
        assert_eq!(b.succeeded(), Some(Transition::Closed));
        assert!(b.admit().is_ok());
    }
}
