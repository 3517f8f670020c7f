//! Every Prometheus metric of the service, registered in one registry per running app (so that
//! tests running several apps in one process never share counters). A metric is registered
//! where it is defined ([`Registrar`]): there is no list of collectors to forget one in. Only
//! internal events (`telemetry::events`) update them.

mod budget;
mod define;
mod exemplars;
mod learning;
mod ml;
pub mod openmetrics;
mod rules;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

pub use budget::{BudgetMetrics, COMPONENTS, REFUSED};
use define::Registrar;
pub use exemplars::{Exemplar, LatencyExemplars};
pub use learning::{EXPERIMENT_KINDS, FEATURE_LOG_DROP_REASONS, LearningMetrics};
pub use ml::MlMetrics;
pub use rules::{REMOVAL_RULES, RulesMetrics};

/// Feed latency from 0.5 ms to 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.25, 0.5, 1.0,
];
/// Stage timings inside a request: finer at the low end.
const STAGE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];
const CANDIDATE_COUNT_BUCKETS: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 750.0, 1000.0,
];
/// Model scores are unbounded log-odds-like values; this covers what the committed models emit.
const SCORE_BUCKETS: &[f64] = &[
    -6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
];

/// Why a request is refused: the error codes a client's request can earn before any work.
pub const REFUSAL_REASONS: [&str; 7] = [
    "unauthenticated",
    "permission_denied",
    "not_found",
    "rate_limited",
    "quota_exceeded",
    "invalid_argument",
    "payload_too_large",
];

/// Mailbox waits: from microseconds (an idle lane) to the request deadline and beyond.
const QUEUE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub feed_requests_total: IntCounterVec,
    pub feed_latency_seconds: HistogramVec,
    pub candidates_fetched: HistogramVec,
    pub candidate_fetch_seconds: HistogramVec,
    pub feature_fetch_seconds: HistogramVec,
    pub model_inference_seconds: HistogramVec,
    pub model_score: HistogramVec,
    pub actor_restarts_total: IntCounterVec,
    pub actor_up: IntGaugeVec,
    pub items_upserted_total: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub demo_seed_seconds: Histogram,
    pub feature_store_request_seconds: HistogramVec,
    pub feature_cache_requests_total: IntCounterVec,
    pub feature_missing_total: IntCounterVec,
    pub feed_degraded_total: IntCounterVec,
    pub events_ingested_total: IntCounterVec,
    pub events_rejected_total: IntCounterVec,
    pub events_duplicates_total: IntCounterVec,
    pub event_apply_seconds: Histogram,
    pub last_event_processed_timestamp_seconds: prometheus::Gauge,
    pub feature_freshness_seconds: Histogram,
    pub kafka_consumer_lag: IntGaugeVec,
    pub kafka_assigned_partitions: IntGauge,
    pub kafka_batch_retries_total: prometheus::IntCounter,
    pub kafka_commit_errors_total: prometheus::IntCounter,
    pub events_dead_lettered_total: IntCounterVec,
    pub redis_up: IntGauge,
    pub redis_circuit_open: IntGauge,
    pub redis_circuit_opened_total: prometheus::IntCounter,
    pub redis_ping_seconds: Histogram,
    pub redis_pool_connections: IntGaugeVec,
    pub redis_pool_waiters: IntGauge,
    pub feed_log_batch_feeds: Histogram,
    pub feed_log_write_seconds: Histogram,
    pub feed_log_evicted_total: prometheus::IntCounter,
    pub feed_log_entries: IntGauge,
    pub feed_log_bytes: IntGauge,
    pub grpc_server_handled_total: IntCounterVec,
    pub requests_refused_total: IntCounterVec,
    pub requests_in_flight: IntGaugeVec,
    pub actor_queue_seconds: HistogramVec,
    pub grpc_server_handling_seconds: HistogramVec,
    /// Model health: feature validity, drift, canary, live ranking quality.
    pub ml: MlMetrics,
    /// Business rules and feed sessions.
    pub rules: RulesMetrics,
    pub budget: BudgetMetrics,
    /// The served-feature log and the experiments.
    pub learning: LearningMetrics,
    /// The last few errors, for the ops page.
    pub recent_errors: super::recent::RecentErrors,
    /// Trace ids of sampled feeds, per latency bucket (OpenMetrics exemplars).
    pub feed_latency_exemplars: LatencyExemplars,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        for c in [
            Box::new(prometheus::process_collector::ProcessCollector::for_self())
                as Box<dyn prometheus::core::Collector>,
            Box::new(super::otel::SPANS_ENDED.clone()),
            Box::new(super::otel::SPANS_EXPORTED.clone()),
            Box::new(super::otel::SPANS_DROPPED.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        let m = Self {
            feed_requests_total: r.counter(
                "eaglerank_feed_requests_total",
                "Feed requests by tenant, transport (http, grpc) and outcome (ok or the error code).",
                &["tenant", "transport", "status"],
            ),
            feed_latency_seconds: r.histogram(
                "eaglerank_feed_latency_seconds",
                "Time to answer a feed request, from validated request to response, by transport.",
                LATENCY_BUCKETS,
                &["tenant", "transport"],
            ),
            requests_in_flight: r.gauge(
                "eaglerank_requests_in_flight",
                "Requests being served now, by transport and endpoint (the route pattern, or the gRPC method).",
                &["transport", "endpoint"],
            ),
            actor_queue_seconds: r.histogram(
                "eaglerank_actor_queue_seconds",
                "Time a message waited in an actor's mailbox before its handler started (gateway: a feed's wait for its lane), by actor.",
                QUEUE_BUCKETS,
                &["actor"],
            ),
            requests_refused_total: r.counter(
                "eaglerank_requests_refused_total",
                "Requests refused before any work, by tenant (configured ones; others `_unknown`), transport and reason (the error code: unauthenticated, permission_denied, not_found, rate_limited, invalid_argument, payload_too_large).",
                &["tenant", "transport", "reason"],
            ),
            // The go-grpc-prometheus names, prefixed: dashboards for gRPC services know them.
            grpc_server_handled_total: r.counter(
                "eaglerank_grpc_server_handled_total",
                "gRPC calls completed, by method and status code (OK or the gRPC code name).",
                &["grpc_service", "grpc_method", "grpc_code"],
            ),
            grpc_server_handling_seconds: r.histogram(
                "eaglerank_grpc_server_handling_seconds",
                "Time to answer a gRPC call, by method.",
                LATENCY_BUCKETS,
                &["grpc_service", "grpc_method"],
            ),
            candidates_fetched: r.histogram(
                "eaglerank_candidates_fetched",
                "Candidates per feed request after merging.",
                CANDIDATE_COUNT_BUCKETS,
                &["tenant"],
            ),
            candidate_fetch_seconds: r.histogram(
                "eaglerank_candidate_fetch_seconds",
                "Candidate generation time by stage (fetch from the store, merge).",
                STAGE_BUCKETS,
                &["tenant", "stage"],
            ),
            feature_fetch_seconds: r.histogram(
                "eaglerank_feature_fetch_seconds",
                "Time to read the user's and the candidates' features from the store.",
                STAGE_BUCKETS,
                &["tenant"],
            ),
            model_inference_seconds: r.histogram(
                "eaglerank_model_inference_seconds",
                "ONNX Runtime time to score one request's candidates.",
                STAGE_BUCKETS,
                &["model"],
            ),
            model_score: r.histogram(
                "eaglerank_model_score",
                "Distribution of model scores: a sample of up to 32 evenly spaced scores per scored batch.",
                SCORE_BUCKETS,
                &["model"],
            ),
            actor_restarts_total: r.counter(
                "eaglerank_actor_restarts_total",
                "Actor restarts by their supervisor after a failure.",
                &["actor"],
            ),
            actor_up: r.gauge(
                "eaglerank_actor_up",
                "1 while every instance of the actor is running.",
                &["actor"],
            ),
            items_upserted_total: r.counter(
                "eaglerank_items_upserted_total",
                "Catalog items inserted or updated through the API.",
                &["tenant"],
            ),
            build_info: r.gauge(
                "eaglerank_build_info",
                "Always 1; labels tell the running version and model.",
                &["version", "model", "model_version"],
            ),
            demo_seed_seconds: r.add(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "eaglerank_demo_seed_seconds",
                        "Time to seed the embedded store with the demo marketplace, per tenant.",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                )
                .expect("static metric definition"),
            ),
            feature_store_request_seconds: r.histogram(
                "eaglerank_feature_store_request_seconds",
                "Time of one call into the feature store backend, by operation.",
                STAGE_BUCKETS,
                &["backend", "op"],
            ),
            feature_cache_requests_total: r.counter(
                "eaglerank_feature_cache_requests_total",
                "Local feature cache lookups by result (hit or miss).",
                &["cache", "result"],
            ),
            feature_missing_total: r.counter(
                "eaglerank_feature_missing_total",
                "Keys a request expected in the store but did not find (stale lists or a bug).",
                &["tenant", "kind"],
            ),
            feed_degraded_total: r.counter(
                "eaglerank_feed_degraded_total",
                "Feeds served in degraded mode (popularity fallback), by reason.",
                &["tenant", "reason"],
            ),
            events_ingested_total: r.counter(
                "eaglerank_events_ingested_total",
                "User events applied to features, by tenant, type and source (http or kafka).",
                &["tenant", "type", "source"],
            ),
            events_rejected_total: r.counter(
                "eaglerank_events_rejected_total",
                "Events not applied, by reason (invalid, unknown_item, unparseable, \
                 quota_exceeded: users past the tenant's budget).",
                &["reason"],
            ),
            events_duplicates_total: r.counter(
                "eaglerank_events_duplicates_total",
                "Replayed events (same event_id within the dedup window), not applied again.",
                &["tenant"],
            ),
            event_apply_seconds: r.add(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "eaglerank_event_apply_seconds",
                        "Time to apply one batch of events to the store.",
                    )
                    .buckets(STAGE_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            last_event_processed_timestamp_seconds: r.add(
                prometheus::Gauge::new(
                    "eaglerank_last_event_processed_timestamp_seconds",
                    "Unix time at which the last batch of events was applied.",
                )
                .expect("static metric definition"),
            ),
            feature_freshness_seconds: r.add(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "eaglerank_feature_freshness_seconds",
                        "From an event's timestamp to its effect being written to the store.",
                    )
                    .buckets(vec![
                        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                        3600.0,
                    ]),
                )
                .expect("static metric definition"),
            ),
            // Registered by `register_kafka`, like the Redis series below.
            kafka_consumer_lag: IntGaugeVec::new(
                prometheus::Opts::new(
                    "eaglerank_kafka_consumer_lag",
                    "Messages between the group's committed offset and the partition's high \
                     watermark.",
                ),
                &["topic", "partition"],
            )
            .expect("static metric definition"),
            kafka_assigned_partitions: IntGauge::new(
                "eaglerank_kafka_assigned_partitions",
                "Partitions of the event topic assigned to this consumer.",
            )
            .expect("static metric definition"),
            kafka_commit_errors_total: prometheus::IntCounter::new(
                "eaglerank_kafka_commit_errors_total",
                "Failed offset commits (the next batch's commit covers them).",
            )
            .expect("static metric definition"),
            kafka_batch_retries_total: prometheus::IntCounter::new(
                "eaglerank_kafka_batch_retries_total",
                "Consumed batches retried because the store could not take them (lag grows).",
            )
            .expect("static metric definition"),
            events_dead_lettered_total: IntCounterVec::new(
                prometheus::Opts::new(
                    "eaglerank_events_dead_lettered_total",
                    "Kafka messages that can never apply, produced to the dead-letter topic, by \
                     reason.",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
            redis_up: IntGauge::new(
                "eaglerank_redis_up",
                "1 when the last watchdog PING to Redis succeeded.",
            )
            .expect("static metric definition"),
            redis_circuit_open: IntGauge::new(
                "eaglerank_redis_circuit_open",
                "1 while the circuit breaker refuses Redis calls (they fail at once).",
            )
            .expect("static metric definition"),
            redis_circuit_opened_total: prometheus::IntCounter::new(
                "eaglerank_redis_circuit_opened_total",
                "Times the Redis circuit breaker opened (failed calls in a row, or a failed PING).",
            )
            .expect("static metric definition"),
            redis_ping_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "eaglerank_redis_ping_seconds",
                    "Round trip of the watchdog's Redis PING.",
                )
                .buckets(STAGE_BUCKETS.to_vec()),
            )
            .expect("static metric definition"),
            redis_pool_connections: IntGaugeVec::new(
                prometheus::Opts::new(
                    "eaglerank_redis_pool_connections",
                    "Redis connections open, by state (in_use: a call in flight on it; idle), summed over every thread.",
                ),
                &["state"],
            )
            .expect("static metric definition"),
            redis_pool_waiters: IntGauge::new(
                "eaglerank_redis_pool_waiters",
                "Callers waiting for a Redis connection: one being opened, or a cluster's pool at redis.pool_size.",
            )
            .expect("static metric definition"),
            feed_log_batch_feeds: Histogram::with_opts(
                HistogramOpts::new(
                    "eaglerank_feed_log_batch_feeds",
                    "Served feeds per batch written to Redis's served-feed log \
                     (events.feed_log_flush_ms); _count is the batches written or tried.",
                )
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]),
            )
            .expect("static metric definition"),
            feed_log_write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "eaglerank_feed_log_write_seconds",
                    "Time to write one batch of served feeds to Redis's served-feed log, failed \
                     writes included (no feed waits for it).",
                )
                .buckets(STAGE_BUCKETS.to_vec()),
            )
            .expect("static metric definition"),
            feed_log_evicted_total: r.add(
                prometheus::IntCounter::new(
                    "eaglerank_feed_log_evicted_total",
                    "Served feeds dropped from the in-process log before their join window \
                     ended (events.join_capacity reached): their clicks cannot be joined.",
                )
                .expect("static metric definition"),
            ),
            feed_log_entries: r.add(
                IntGauge::new(
                    "eaglerank_feed_log_entries",
                    "Served feeds held by the in-process log (embedded store; Redis: 0).",
                )
                .expect("static metric definition"),
            ),
            feed_log_bytes: r.add(
                IntGauge::new(
                    "eaglerank_feed_log_bytes",
                    "Bytes the in-process served-feed log holds (its tables, arenas and \
                     interned strings; embedded store; Redis: 0).",
                )
                .expect("static metric definition"),
            ),
            ml: MlMetrics::new(&r),
            rules: RulesMetrics::new(&r),
            budget: BudgetMetrics::new(&r),
            learning: LearningMetrics::new(&r),
            recent_errors: Default::default(),
            feed_latency_exemplars: LatencyExemplars::new(LATENCY_BUCKETS),
            registry,
        };
        m.init_global();
        m
    }

    /// Series whose label values are known in advance start at 0: dashboards show 0, not
    /// "No data", and `rate()` and alerts work before the first occurrence.
    fn init_global(&self) {
        for reason in ["invalid", "unknown_item", "unparseable", "quota_exceeded"] {
            self.events_rejected_total.with_label_values(&[reason]);
        }
        for outcome in ["loaded", "rejected"] {
            self.ml.model_reloads_total.with_label_values(&[outcome]);
        }
        self.learning.init_global();
    }

    /// Registers the Redis series; only a Redis-backed service exports them (so that an
    /// embedded-store deployment never shows a "Redis down").
    pub fn register_redis(&self) {
        for c in [
            Box::new(self.redis_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.redis_ping_seconds.clone()),
            Box::new(self.redis_circuit_open.clone()),
            Box::new(self.redis_circuit_opened_total.clone()),
            Box::new(self.redis_pool_connections.clone()),
            Box::new(self.redis_pool_waiters.clone()),
            Box::new(self.feed_log_batch_feeds.clone()),
            Box::new(self.feed_log_write_seconds.clone()),
        ] {
            // A second registration (a second call) is harmless.
            let _ = self.registry.register(c);
        }
    }

    /// Registers the Kafka consumer's series; only a Kafka-fed service exports them.
    /// `dead_letter_reasons`: every reason a message can be dead-lettered for.
    pub fn register_kafka(&self, dead_letter_reasons: &[&str]) {
        for c in [
            Box::new(self.kafka_consumer_lag.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.kafka_assigned_partitions.clone()),
            Box::new(self.kafka_batch_retries_total.clone()),
            Box::new(self.kafka_commit_errors_total.clone()),
            Box::new(self.events_dead_lettered_total.clone()),
        ] {
            let _ = self.registry.register(c);
        }
        // Every reason from the first scrape: `rate()` and alerts work before the first one.
        for reason in dead_letter_reasons {
            self.events_dead_lettered_total.with_label_values(&[reason]);
        }
    }

    /// Creates the per-tenant series at zero, so that dashboards and rate() see every tenant
    /// from the first scrape rather than from its first request.
    /// The gRPC methods' success series at 0, so that panels and `rate()` see them before the
    /// first call (label values known in advance).
    pub fn init_grpc(&self, service: &str, methods: &[&str]) {
        for method in methods {
            self.grpc_server_handled_total
                .with_label_values(&[service, method, "OK"]);
            self.grpc_server_handling_seconds
                .with_label_values(&[service, method]);
        }
    }

    pub fn init_tenant(&self, tenant: &str) {
        for transport in ["http", "grpc"] {
            for status in ["ok", "unavailable", "deadline_exceeded", "internal"] {
                self.feed_requests_total
                    .with_label_values(&[tenant, transport, status]);
            }
        }
        self.items_upserted_total.with_label_values(&[tenant]);
        for transport in ["http", "grpc"] {
            for reason in REFUSAL_REASONS {
                self.requests_refused_total
                    .with_label_values(&[tenant, transport, reason]);
            }
        }
        self.feature_missing_total
            .with_label_values(&[tenant, "item"]);
        self.rules.init_tenant(tenant);
        self.budget.init_tenant(tenant);
        for reason in ["redis_down", "store_error", "session_unavailable"] {
            self.feed_degraded_total
                .with_label_values(&[tenant, reason]);
        }
        self.events_duplicates_total.with_label_values(&[tenant]);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
