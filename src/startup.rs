//! Builds and runs the service: model, store, actors, the HTTP server and the gRPC server.
//! Tests build it the same way on port 0 (see `tests/api/helpers.rs`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use actix_web_prom::PrometheusMetricsBuilder;
use anyhow::Context as _;
use tracing_actix_web::TracingLogger;

use crate::actors::ActorSystem;
use crate::api::AppState;
use crate::api::cursor::CursorKey;
use crate::config::Settings;
use crate::domain::tenants::Tenants;
use crate::grpc::GrpcServer;
use crate::http::{self, error};
use crate::ingest::feed_join::ServedFeeds;
use crate::ranking::model::ModelRegistry;
use crate::ranking::rules_book::RulesBook;
use crate::store::{BatchedFeedLog, FeedLog, MemoryFeedLog, MemoryRules, MemorySessions};
use crate::store::{
    CachedStore, Dedup, Guarded, Instrumented, MemoryStore, PoolProbe, PopularityFallback,
    RedisStore, SharedStore, StoreContext, StoreHealth,
};
use crate::telemetry::events::{self, ModelLoaded};
use crate::telemetry::{InternalEvent, Metrics};

/// Generous: actors start in microseconds; only a wedged machine takes longer.
const ACTOR_START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Application {
    port: u16,
    server: Server,
    grpc: Option<GrpcServer>,
    shutdown_grace: Duration,
    signals: ShutdownSignals,
    actors: ActorSystem,
    metrics: Arc<Metrics>,
    store: SharedStore,
    /// Written out once the servers have stopped (its last batch).
    feed_log: Arc<dyn FeedLog>,
}

/// Redis when `redis.url` is set (behind the local item cache), else the embedded store
/// seeded with the demo marketplace.
async fn build_store(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<StoreContext> {
    if settings.redis.enabled() {
        metrics.register_redis();
        let health = Arc::new(StoreHealth::with_breaker(
            "redis",
            settings.redis.breaker_failures,
            settings.redis.breaker_open,
        ));
        let store = Arc::new(
            RedisStore::connect(&settings.redis)?
                .with_dedup(Dedup::from(&settings.events))
                .with_feed_window(settings.events.join_window)
                .with_budgets(settings.budgets()),
        );
        let pool: PoolProbe = {
            let store = store.clone();
            Arc::new(move || store.pool_status())
        };
        let redis = Arc::new(Guarded::new(store, health.clone(), metrics.clone()));
        let feed_log: Arc<dyn FeedLog> = match settings.events.feed_log_flush {
            Duration::ZERO => redis.clone(),
            every => Arc::new(BatchedFeedLog::new(redis.clone(), every, metrics.clone())),
        };
        let rules_and_sessions = redis.clone();
        let timed: SharedStore = Arc::new(Instrumented::new(redis, metrics.clone()));
        let redis = rules_and_sessions;
        let cached = CachedStore::new(
            timed,
            settings.tenants.keys(),
            &settings.cache,
            metrics.clone(),
        );
        return Ok(StoreContext {
            store: Arc::new(cached),
            pool: Some(pool),
            health,
            fallback: Arc::new(PopularityFallback::default()),
            watched: true,
            feed_log,
            feed_log_lag: settings.events.feed_log_lag(),
            rules: redis.clone(),
            sessions: redis,
        });
    }
    let store = MemoryStore::with_dedup(
        settings.tenants.keys().cloned(),
        Dedup::from(&settings.events),
    )
    .with_budgets(settings.budgets())
    .with_list_ttl(settings.cache.list_ttl);
    if settings.store.demo.enabled {
        let anchor = settings
            .store
            .demo
            .anchor
            .unwrap_or_else(crate::domain::unix_now);
        for tenant in settings.tenants.keys() {
            crate::demo::seed_tenant(&store, &settings.store.demo, tenant, anchor, metrics)
                .await
                .with_context(|| format!("seeding the demo data of {tenant}"))?;
            // Sorts the tenant's candidate index now, while nothing is served: the first feed
            // would otherwise build it under the tenant's write lock (~150 ms at 200 000
            // items, every feed of the tenant waiting). Later changes rebuild it off the
            // request path.
            let all = crate::store::CandidateQuery::default();
            crate::store::FeatureStore::candidate_lists(&store, tenant, &all).await?;
        }
    }
    Ok(StoreContext {
        store: Arc::new(Instrumented::new(Arc::new(store), metrics.clone())),
        pool: None,
        health: Arc::new(StoreHealth::new("memory")),
        fallback: Arc::new(PopularityFallback::default()),
        watched: false,
        feed_log_lag: Duration::ZERO,
        feed_log: Arc::new(
            MemoryFeedLog::new(&settings.events)
                .with_budgets(settings.budgets())
                .with_metrics(metrics.clone()),
        ),
        rules: Arc::new(MemoryRules::default()),
        sessions: Arc::new(MemorySessions::new(
            settings.tenants.keys(),
            settings.feed.session_capacity,
            settings.feed.session_ttl,
        )),
    })
}

impl Application {
    /// Loads everything and binds the listener; must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let models =
            Arc::new(ModelRegistry::load(&settings).context("loading the ranking models")?);
        for slot in models.slots() {
            let model = slot.current();
            ModelLoaded {
                name: &model.metadata.name,
                version: &model.metadata.version,
                features: model.spec.names(),
                engine: model.engine.name(),
            }
            .emit(&metrics);
        }
        let store = build_store(&settings, &metrics).await?;
        let tenants = Arc::new(Tenants::new(
            settings.tenant_specs(),
            &settings.admin.api_key_sha256,
        ));
        for id in tenants.ids() {
            metrics.init_tenant(id);
            let (model, _) = models.for_tenant(id);
            metrics.ml.init_quality(
                &model.metadata.name,
                &model.metadata.version,
                id,
                &crate::telemetry::events::CUTOFFS,
            );
        }
        let feature_log = Arc::new(
            crate::learning::FeatureLog::start(&settings, metrics.clone())
                .context("starting the served-feature log")?,
        );
        let experiments = Arc::new(crate::learning::Experiments::new(&settings));
        for (tenant, experiment) in experiments.all() {
            crate::api::experiments::configured(
                &metrics,
                &models,
                &tenant,
                None,
                Some(&experiment),
            );
        }
        let served = Arc::new(ServedFeeds::new(
            store.feed_log.clone(),
            store.feed_log_lag,
            &settings.events,
            metrics.clone(),
            feature_log.clone(),
        ));
        let rules_book = Arc::new(RulesBook::new(
            store.rules.clone(),
            settings
                .tenants
                .iter()
                .map(|(id, t)| (id.clone(), t.rules.clone())),
            settings.feed.rules_refresh,
        ));
        rules_book.set_presets(settings.rules_presets.clone());
        if settings.feed.cursor_secret.is_empty() && settings.redis.enabled() {
            tracing::warn!(
                "feed.cursor_secret is empty: cursors are valid only on the replica that issued them; give every replica the same secret"
            );
        }
        let workers = crate::config::threads_or_cores(settings.server.workers);
        // One feed lane per HTTP worker (actors::lanes): started by the app factory below.
        let actors = ActorSystem::start(
            &settings,
            &store,
            &models,
            &served,
            metrics.clone(),
            workers,
        );

        let prometheus = PrometheusMetricsBuilder::new("eaglerank")
            .registry(metrics.registry.clone())
            .mask_unmatched_patterns("UNKNOWN")
            .build()
            .map_err(|e| anyhow::anyhow!("building the metrics middleware: {e}"))?;
        let producer = match settings.kafka.enabled() {
            true => Some(Arc::new(
                crate::ingest::kafka::EventProducer::new(&settings.kafka)
                    .context("creating the Kafka producer")?,
            )),
            false => None,
        };
        let state = Arc::new(AppState {
            actors: actors.clone(),
            store: store.store.clone(),
            store_health: store.health.clone(),
            tenants,
            models,
            served,
            metrics: metrics.clone(),
            events: settings.events.clone(),
            producer,
            request_deadline: settings.server.request_deadline,
            ping_timeout: settings.actors.ping_timeout,
            rules: rules_book,
            sessions: store.sessions.clone(),
            cursors: CursorKey::new(
                &settings.feed.cursor_secret,
                settings.feed.session_ttl.as_secs(),
            ),
            session_ttl: settings.feed.session_ttl,
            ops: Default::default(),
            feature_log,
            experiments,
            settings: std::sync::Mutex::new(settings.clone()),
        });
        let max_body = settings.server.max_body_bytes;
        let ops_enabled = settings.ops.enabled;
        // Bound before anything serves: a busy port fails the start, not the first call.
        let grpc_listener = match settings.grpc.enabled() {
            true => Some(
                TcpListener::bind((settings.grpc.host.as_str(), settings.grpc.port)).with_context(
                    || format!("binding gRPC {}:{}", settings.grpc.host, settings.grpc.port),
                )?,
            ),
            false => None,
        };
        let grpc_state = state.clone();
        let state = web::Data::from(state);

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!("binding {}:{}", settings.server.host, settings.server.port)
            })?;
        let address = listener.local_addr()?;
        let lanes = actors.lanes.clone();
        let mut server = HttpServer::new(move || {
            // Runs on each worker's thread: its feeds are served there, by its own lane.
            let lane = web::Data::new(lanes.start_here());
            App::new()
                // Innermost first: trace headers need the root span TracingLogger creates.
                .wrap(actix_web::middleware::from_fn(
                    http::request_span::trace_headers,
                ))
                .wrap(TracingLogger::<http::request_span::RootSpans>::new())
                .wrap(actix_web::middleware::from_fn(
                    http::in_flight::count_in_flight,
                ))
                .wrap(prometheus.clone())
                // Outermost: the metrics and the span see a bounded method.
                .wrap(actix_web::middleware::from_fn(http::methods::bound_methods))
                .app_data(state.clone())
                .app_data(lane)
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(error::json_error),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .configure(http::routes)
                .configure(|cfg| http::ops_routes(cfg, ops_enabled))
                .default_service(web::to(error::not_found))
        })
        .workers(workers)
        .max_connections(settings.server.max_connections_per_worker)
        .client_request_timeout(settings.server.client_request_timeout)
        .keep_alive(settings.server.keep_alive)
        .shutdown_timeout(settings.server.shutdown_grace.as_secs())
        // Our own handlers, installed below before "ServerStarted" is announced: actix's
        // are installed only once the server task is first polled, and a SIGTERM arriving
        // before that would kill the process without a graceful stop.
        .disable_signals()
        .listen(listener)?
        .run();
        // The workers start (and with them their lanes) once the server future is polled;
        // nothing is announced, and tests get no app, until every actor runs, so readiness
        // never reports a start-up as an outage.
        tokio::select! {
            up = actors.wait_until_up(ACTOR_START_TIMEOUT) => if let Err(down) = up {
                server.handle().stop(false).await;
                let names: Vec<&str> = down.iter().map(|a| a.name).collect();
                anyhow::bail!("actors did not start within {ACTOR_START_TIMEOUT:?}: {names:?}");
            },
            stopped = &mut server => anyhow::bail!("the HTTP server stopped while starting: {stopped:?}"),
        }
        // After the lanes run: gRPC feeds are ranked on them.
        let grpc = match grpc_listener {
            Some(listener) => {
                let grpc = crate::grpc::start(listener, grpc_state, max_body)?;
                events::grpc_server_started(grpc.port());
                Some(grpc)
            }
            None => None,
        };
        let signals = ShutdownSignals::install()?;
        events::server_started(&address.to_string(), workers, store.health.backend());
        Ok(Self {
            port: address.port(),
            server,
            grpc,
            shutdown_grace: settings.server.shutdown_grace,
            signals,
            actors,
            metrics,
            feed_log: store.feed_log,
            store: store.store,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gRPC port, when `grpc.port` is not 0.
    pub fn grpc_port(&self) -> Option<u16> {
        self.grpc.as_ref().map(GrpcServer::port)
    }

    pub fn actors(&self) -> &ActorSystem {
        &self.actors
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or `handle().stop()`): gRPC health turns NOT_SERVING and
    /// in-flight gRPC calls drain, then in-flight HTTP requests get the grace period (gRPC
    /// feeds are ranked on the HTTP workers' lanes, so those stop last), then the actors stop
    /// front to back.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut signals = self.signals;
        let grace = self.shutdown_grace;
        // Taken by whichever stops it first: the signal, or the HTTP server having stopped
        // another way (a test's handle).
        let grpc = Arc::new(std::sync::Mutex::new(self.grpc));
        let take_grpc = move || grpc.lock().unwrap_or_else(|e| e.into_inner()).take();
        let take = take_grpc.clone();
        let stopper = actix_web::rt::spawn(async move {
            let signal = signals.recv().await;
            events::shutdown_requested(signal);
            if let Some(grpc) = take() {
                grpc.stop(grace).await;
            }
            handle.stop(true).await;
        });
        self.server.await?;
        stopper.abort();
        if let Some(grpc) = take_grpc() {
            grpc.stop(grace).await;
        }
        // The feeds served last, still queued for the log (`events.feed_log_flush_ms`).
        self.feed_log.flush().await;
        self.actors.shutdown().await;
        events::server_stopped();
        Ok(())
    }
}

/// SIGTERM (orchestrators) and SIGINT (Ctrl-C), registered when created.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
