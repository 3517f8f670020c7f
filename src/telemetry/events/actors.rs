//! Events of the actor system: an actor up or down, a panic, a restart.

use tracing::{error, warn};

use super::InternalEvent;
use crate::telemetry::Metrics;

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

/// A message's handler started: how long it waited in the actor's mailbox. Behind a busy lane
/// (a worker ranking other feeds) feeds wait here; it is where `unavailable` under overload
/// starts.
pub struct MessageDequeued {
    pub actor: &'static str,
    pub waited: std::time::Duration,
}

impl InternalEvent for MessageDequeued {
    fn emit(self, m: &Metrics) {
        m.actor_queue_seconds
            .with_label_values(&[self.actor])
            .observe(self.waited.as_secs_f64());
    }
}
