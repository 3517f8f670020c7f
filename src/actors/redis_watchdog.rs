//! `RedisWatchdog`: PINGs the store on an interval, publishes up/down (metrics, logs,
//! `StoreHealth`), and refreshes the in-memory popularity fallback while Redis is up. A
//! recovery is seen within one interval, with no restart of anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::ActorHealth;
use super::lifecycle::{Lifecycle, supervised_actor};
use crate::store::{PoolProbe, PopularityFallback, SharedStore, StoreHealth};
use crate::telemetry::events::{
    FallbackRefreshed, RedisPinged, RedisPoolSampled, RedisStateChanged,
};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "redis_watchdog";

pub struct RedisWatchdog {
    pub store: SharedStore,
    pub health: Arc<StoreHealth>,
    pub fallback: Arc<PopularityFallback>,
    /// (tenant, how many trending items to keep for it)
    pub tenants: Arc<Vec<(String, usize)>>,
    pub interval: Duration,
    pub refresh_every: Duration,
    pub metrics: Arc<Metrics>,
    pub actors: Arc<ActorHealth>,
    /// The connection pools' state, exported every tick.
    pub pool: Option<PoolProbe>,
    last_refresh: Option<Instant>,
    in_flight: bool,
}

impl RedisWatchdog {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: SharedStore,
        health: Arc<StoreHealth>,
        fallback: Arc<PopularityFallback>,
        tenants: Arc<Vec<(String, usize)>>,
        interval: Duration,
        refresh_every: Duration,
        metrics: Arc<Metrics>,
        actors: Arc<ActorHealth>,
        pool: Option<PoolProbe>,
    ) -> Self {
        Self {
            pool,
            store,
            health,
            fallback,
            tenants,
            interval,
            refresh_every,
            metrics,
            actors,
            last_refresh: None,
            in_flight: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // A PING slower than the interval must not pile up behind itself.
        if self.in_flight {
            return;
        }
        self.in_flight = true;
        let store = self.store.clone();
        let refresh_due = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= self.refresh_every);
        let (fallback, tenants) = (self.fallback.clone(), self.tenants.clone());
        let check = async move {
            let started = Instant::now();
            let ping = store.ping().await;
            let rtt = started.elapsed();
            let mut refreshed = None;
            if ping.is_ok() && refresh_due {
                let mut items = 0;
                let mut failure = None;
                for (tenant, n) in tenants.iter() {
                    match fallback.refresh(&*store, tenant, *n).await {
                        Ok(k) => items += k,
                        Err(e) => failure = Some(e),
                    }
                }
                refreshed = Some((items, failure));
            }
            (ping, rtt, refreshed)
        };
        ctx.spawn(
            check
                .into_actor(self)
                .map(|(ping, rtt, refreshed), act, _| {
                    act.in_flight = false;
                    if let Some(pool) = &act.pool {
                        let s = pool();
                        RedisPoolSampled {
                            connections: s.connections,
                            idle: s.idle,
                            waiting: s.waiting,
                        }
                        .emit(&act.metrics);
                    }
                    let down = ping.err().map(|e| e.to_string());
                    RedisPinged {
                        round_trip: down.is_none().then_some(rtt),
                    }
                    .emit(&act.metrics);
                    let (changed, breaker) = act.health.set(down.clone());
                    crate::store::report_breaker(breaker, &act.metrics);
                    if changed {
                        RedisStateChanged {
                            down: down.as_deref(),
                        }
                        .emit(&act.metrics);
                    }
                    if let Some((items, failure)) = refreshed {
                        if failure.is_none() {
                            act.last_refresh = Some(Instant::now());
                        }
                        FallbackRefreshed {
                            items,
                            error: failure
                                .as_ref()
                                .map(|e| e as &(dyn std::error::Error + 'static)),
                        }
                        .emit(&act.metrics);
                    }
                }),
        );
    }
}

impl Lifecycle for RedisWatchdog {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.actors
    }

    fn on_started(&mut self, ctx: &mut Context<Self>) {
        self.in_flight = false;
        self.tick(ctx);
        ctx.run_interval(self.interval, Self::tick);
    }
}

supervised_actor!(RedisWatchdog);
