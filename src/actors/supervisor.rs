//! Starts every actor under supervision and stops them in order. Supervised actors
//! (`actix::Supervisor`) are restarted in place when they stop, keeping their address and
//! mailbox. The feed path's actors (gateway, candidates, ranker) come in lanes, one per HTTP
//! worker, started by the app factory on that worker's thread (`lanes`); the rest live on the
//! main arbiter (the Kafka consumer on its own).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::event_ingestor::{self, EventIngestor};
use super::kafka_consumer::{self, KafkaConsumer};
use super::lanes::Lanes;
use super::model_watchdog::{self, ModelWatchdog};
use super::redis_watchdog::{self, RedisWatchdog};
use super::usage_reporter::{self, UsageReporter};
use super::{ActorHealth, ActorStatus, Stop, candidate_fetcher, gateway, ranker};
use crate::config::Settings;
use crate::ingest::feed_join::ServedFeeds;
use crate::ranking::model::ModelRegistry;
use crate::store::StoreContext;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct ActorSystem {
    /// The feed lanes, filled in as the HTTP workers start.
    pub lanes: Arc<Lanes>,
    pub redis_watchdog: Option<Addr<RedisWatchdog>>,
    pub model_watchdog: Addr<ModelWatchdog>,
    pub ingestor: Addr<EventIngestor>,
    pub kafka_consumer: Option<Addr<KafkaConsumer>>,
    pub usage_reporter: Addr<UsageReporter>,
    pub health: Arc<ActorHealth>,
}

impl ActorSystem {
    /// Must run inside an actix system; actors live on the current arbiter. The lanes are
    /// started by the HTTP workers (`Lanes::start_here`): `lanes` of them are expected.
    pub fn start(
        settings: &Settings,
        store: &StoreContext,
        models: &Arc<ModelRegistry>,
        served: &Arc<ServedFeeds>,
        metrics: Arc<Metrics>,
        lanes: usize,
    ) -> Self {
        let mut actors = vec![
            (gateway::NAME, lanes),
            (candidate_fetcher::NAME, lanes),
            (ranker::NAME, lanes),
            (event_ingestor::NAME, 1),
            (model_watchdog::NAME, 1),
            (usage_reporter::NAME, 1),
        ];
        if store.watched {
            actors.push((redis_watchdog::NAME, 1));
        }
        if settings.kafka.enabled() {
            actors.push((kafka_consumer::NAME, 1));
        }
        let health = Arc::new(ActorHealth::new(metrics.clone(), &actors));

        let limits: Arc<HashMap<_, _>> = Arc::new(
            settings
                .tenants
                .keys()
                .map(|t| (t.clone(), settings.candidate_limits(t)))
                .collect(),
        );
        let redis_watchdog = store.watched.then(|| {
            // The fallback keeps as many trending items per tenant as a feed would fetch.
            let tenants = Arc::new(
                limits
                    .iter()
                    .map(|(t, l)| (t.clone(), l.trending.max(1)))
                    .collect::<Vec<_>>(),
            );
            let watchdog = RedisWatchdog::new(
                store.store.clone(),
                store.health.clone(),
                store.fallback.clone(),
                tenants,
                settings.redis.ping_interval,
                settings.redis.fallback_refresh,
                metrics.clone(),
                health.clone(),
                store.pool.clone(),
            );
            Supervisor::start(move |_| watchdog)
        });

        let model_watchdog = {
            let watchdog = ModelWatchdog::new(
                models.clone(),
                settings.model.watchdog_interval,
                settings.model.drift_min_samples,
                metrics.clone(),
                health.clone(),
            );
            Supervisor::start(move |_| watchdog)
        };

        // One Ingestor for both paths: in process (the actor) and from Kafka (the consumer).
        let events = Arc::new(crate::ingest::Ingestor::new(
            store.store.clone(),
            metrics.clone(),
            served.clone(),
        ));
        let ingestor = {
            let (events, health) = (events.clone(), health.clone());
            Supervisor::start(move |_| EventIngestor::new(events, health))
        };
        let kafka_consumer = settings.kafka.enabled().then(|| {
            metrics.register_kafka(&crate::ingest::kafka::Rejection::ALL.map(|r| r.as_str()));
            let consumer = KafkaConsumer::new(
                settings.kafka.clone(),
                settings.events.clone(),
                Arc::new(settings.tenants.keys().cloned().collect()),
                events.clone(),
                metrics.clone(),
                health.clone(),
            );
            // Its own thread: draining a backlog must not starve the watchdogs and the
            // event ingestor on the main arbiter.
            Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| consumer)
        });

        let usage_reporter = {
            let tenants = Arc::new(
                settings
                    .tenants
                    .iter()
                    .map(|(id, t)| usage_reporter::Tenant {
                        id: id.clone(),
                        budget: t.budget,
                        rules: t.rules.clone(),
                    })
                    .collect::<Vec<_>>(),
            );
            let reporter = UsageReporter::new(
                store.clone(),
                tenants,
                settings.budgets.report_interval,
                metrics.clone(),
                health.clone(),
            );
            Supervisor::start(move |_| reporter)
        };

        let lanes = Arc::new(Lanes::new(
            store.clone(),
            limits,
            models.clone(),
            metrics.clone(),
            health.clone(),
        ));

        Self {
            lanes,
            redis_watchdog,
            model_watchdog,
            ingestor,
            kafka_consumer,
            usage_reporter,
            health,
        }
    }

    /// Waits until every supervised actor has started. Actors start when their arbiter first
    /// polls them (the ranker's on their own threads), so right after `start` readiness would
    /// report them down; the server must not accept traffic before this returns.
    pub async fn wait_until_up(&self, timeout: Duration) -> Result<(), Vec<ActorStatus>> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.health.all_up() {
            if std::time::Instant::now() >= deadline {
                return Err(self
                    .health
                    .snapshot()
                    .into_iter()
                    .filter(|a| !a.up)
                    .collect());
            }
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Liveness: every lane's entry actor answers within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        self.lanes.ping(timeout).await
    }

    /// Stops the actors front to back: no new sessions, then their helpers. An actor stops
    /// for good once its last address is gone, so this consumes the handle.
    pub async fn shutdown(self) {
        self.health.begin_shutdown();
        let Self {
            lanes,
            redis_watchdog,
            model_watchdog,
            ingestor,
            kafka_consumer,
            usage_reporter,
            ..
        } = self;
        if let Some(consumer) = kafka_consumer {
            let _ = consumer.send(Stop).await;
        }
        // Events in flight are applied before the store's users go away.
        let _ = ingestor.send(Stop).await;
        drop(ingestor);
        if let Some(watchdog) = redis_watchdog {
            let _ = watchdog.send(Stop).await;
        }
        let _ = model_watchdog.send(Stop).await;
        let _ = usage_reporter.send(Stop).await;
        lanes.shutdown().await;
    }
}
