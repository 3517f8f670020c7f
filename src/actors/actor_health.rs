//! The supervisor's view of its actors: how many instances of each are running and how often
//! each was restarted. Readiness and the `eaglerank_actor_*` metrics read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::telemetry::events::{ActorPanicked, ActorRestarted, ActorUp};
use crate::telemetry::{InternalEvent, Metrics};

struct Entry {
    name: &'static str,
    instances: usize,
    running: AtomicUsize,
    /// Every start, first ones included: a restart is complete once this has moved.
    starts: AtomicU64,
    restarts: AtomicU64,
}

pub struct ActorHealth {
    metrics: Arc<Metrics>,
    entries: Vec<Entry>,
    shutting_down: AtomicBool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    pub name: &'static str,
    pub up: bool,
    pub instances: usize,
    pub running: usize,
    pub starts: u64,
    pub restarts: u64,
}

impl ActorHealth {
    /// `actors`: every supervised actor and how many instances of it should run.
    pub fn new(metrics: Arc<Metrics>, actors: &[(&'static str, usize)]) -> Self {
        let entries = actors
            .iter()
            .map(|&(name, instances)| {
                ActorUp {
                    actor: name,
                    up: false,
                }
                .emit(&metrics);
                Entry {
                    name,
                    instances,
                    running: AtomicUsize::new(0),
                    starts: AtomicU64::new(0),
                    restarts: AtomicU64::new(0),
                }
            })
            .collect();
        Self {
            metrics,
            entries,
            shutting_down: AtomicBool::new(false),
        }
    }

    fn entry(&self, name: &str) -> &Entry {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("actor {name:?} is not registered with the supervisor"))
    }

    pub fn started(&self, name: &'static str) {
        let e = self.entry(name);
        e.starts.fetch_add(1, Ordering::SeqCst);
        let running = e.running.fetch_add(1, Ordering::SeqCst) + 1;
        if running == e.instances {
            ActorUp {
                actor: name,
                up: true,
            }
            .emit(&self.metrics);
        }
    }

    pub fn stopped(&self, name: &'static str) {
        let e = self.entry(name);
        let _ = e
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        ActorUp {
            actor: name,
            up: false,
        }
        .emit(&self.metrics);
    }

    pub fn panicked(&self, name: &'static str, message: &str) {
        ActorPanicked {
            actor: name,
            message,
        }
        .emit(&self.metrics);
    }

    /// Called by the supervisor as it restarts a stopped actor. Stops during shutdown are
    /// not failures and are not counted.
    pub fn restarted(&self, name: &'static str) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let restarts = self.entry(name).restarts.fetch_add(1, Ordering::SeqCst) + 1;
        ActorRestarted {
            actor: name,
            restarts,
        }
        .emit(&self.metrics);
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Set by [`ActorHealth::begin_shutdown`]: actors stopped from now on are not to come back.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> Vec<ActorStatus> {
        self.entries
            .iter()
            .map(|e| {
                let running = e.running.load(Ordering::SeqCst);
                ActorStatus {
                    name: e.name,
                    up: running >= e.instances,
                    instances: e.instances,
                    running,
                    starts: e.starts.load(Ordering::SeqCst),
                    restarts: e.restarts.load(Ordering::SeqCst),
                }
            })
            .collect()
    }

    pub fn all_up(&self) -> bool {
        self.snapshot().iter().all(|s| s.up)
    }
}
