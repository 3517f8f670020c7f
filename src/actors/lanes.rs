//! Feed lanes: one per HTTP worker thread, each a `Gateway`, a `CandidateFetcher` and a
//! `Ranker` started on that worker's arbiter and supervised there. A feed is served by the lane
//! of the worker that received it: the actors still talk by messages, but no message of a feed
//! crosses a thread. (Gateway and fetcher on the main arbiter with a pool of ranker threads
//! cost four cross-thread wake-ups per feed and kept five busy threads on two cores; profiles
//! put the kernel's scheduling at ~9 % of the service's CPU: loadtest/README.md.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;

use super::candidate_fetcher::CandidateFetcher;
use super::gateway::{Deps, Gateway};
use super::ranker::Ranker;
use super::{ActorHealth, Ping, Stop};
use crate::config::CandidateLimits;
use crate::ranking::model::ModelRegistry;
use crate::store::StoreContext;
use crate::telemetry::Metrics;

/// The actors of one lane.
#[derive(Clone)]
pub struct Lane {
    pub gateway: Addr<Gateway>,
    pub candidates: Addr<CandidateFetcher>,
    pub ranker: Addr<Ranker>,
}

/// What every lane is built from, and the lanes started so far.
pub struct Lanes {
    store: StoreContext,
    limits: Arc<HashMap<String, CandidateLimits>>,
    models: Arc<ModelRegistry>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    started: Mutex<Vec<Lane>>,
    /// Round robin for callers without a lane of their own (gRPC).
    turn: AtomicUsize,
}

impl Lanes {
    pub(super) fn new(
        store: StoreContext,
        limits: Arc<HashMap<String, CandidateLimits>>,
        models: Arc<ModelRegistry>,
        metrics: Arc<Metrics>,
        health: Arc<ActorHealth>,
    ) -> Self {
        Self {
            store,
            limits,
            models,
            metrics,
            health,
            started: Mutex::default(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Starts a lane on the current thread's arbiter (an HTTP worker's, from the app factory).
    pub fn start_here(&self) -> Lane {
        let (store, metrics, health) = (
            self.store.store.clone(),
            self.metrics.clone(),
            self.health.clone(),
        );
        let limits = self.limits.clone();
        let candidates =
            Supervisor::start(move |_| CandidateFetcher::new(store, limits, metrics, health));
        let (models, metrics, health) = (
            self.models.clone(),
            self.metrics.clone(),
            self.health.clone(),
        );
        let ranker = Supervisor::start(move |_| Ranker::new(models, metrics, health));
        let deps = Deps {
            store: self.store.store.clone(),
            store_health: self.store.health.clone(),
            fallback: self.store.fallback.clone(),
            candidates: candidates.clone(),
            ranker: ranker.clone(),
            models: self.models.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        };
        let gateway = Supervisor::start(move |_| Gateway::new(deps));
        let lane = Lane {
            gateway,
            candidates,
            ranker,
        };
        self.lock().push(lane.clone());
        lane
    }

    /// The lanes started so far, in start order.
    pub fn all(&self) -> Vec<Lane> {
        self.lock().clone()
    }

    /// The next lane in turn, for a caller on no HTTP worker (the gRPC server, on the main
    /// arbiter): its feed is ranked on that lane's worker thread. None before any lane runs.
    pub fn next(&self) -> Option<Lane> {
        let lanes = self.lock();
        let n = lanes.len();
        (n > 0).then(|| lanes[self.turn.fetch_add(1, Ordering::Relaxed) % n].clone())
    }

    /// Liveness: every lane's gateway answers within `timeout` (and there is one).
    pub(super) async fn ping(&self, timeout: std::time::Duration) -> bool {
        let lanes = self.all();
        let answers =
            futures::future::join_all(lanes.iter().map(|l| l.gateway.send(Ping).timeout(timeout)))
                .await;
        !answers.is_empty() && answers.iter().all(Result::is_ok)
    }

    /// Stops every lane front to back (gateway, fetcher, ranker) and forgets it: an actor
    /// stops for good once its last address is gone. Lanes whose worker has already stopped
    /// answer nothing, which is fine.
    pub(super) async fn shutdown(&self) {
        let lanes = std::mem::take(&mut *self.lock());
        for lane in lanes {
            let _ = lane.gateway.send(Stop).await;
            let _ = lane.candidates.send(Stop).await;
            let _ = lane.ranker.send(Stop).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Lane>> {
        // Holds plain addresses: a panic while it was held cannot have left it half-written.
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }
}
