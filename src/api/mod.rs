//! What the API means, whatever the transport: who the caller is (`auth`), what a valid
//! request is and what it does (`feed`, `events`), whether the service is ready
//! (`readiness`), and the one error table (`error`). `http/` (REST) and `grpc/` are thin
//! transports over it: they decode, call these, and render — so a feed over gRPC is validated,
//! served, logged and counted exactly as over REST.

pub mod auth;
pub mod cursor;
pub mod error;
pub mod events;
pub mod experiments;
pub mod feed;
pub mod ops;
pub mod readiness;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use crate::actors::ActorSystem;
use crate::domain::tenants::Tenants;
use crate::ranking::model::ModelRegistry;
use crate::store::{SharedStore, StoreHealth};
use crate::telemetry::Metrics;

pub use error::{ApiError, Code, Detail};

/// What every request may use, on either transport.
pub struct AppState {
    pub actors: ActorSystem,
    pub store: SharedStore,
    pub store_health: Arc<StoreHealth>,
    pub tenants: Arc<Tenants>,
    pub models: Arc<ModelRegistry>,
    /// Served feeds, for joining clicks and purchases with them (live ranking quality).
    pub served: Arc<crate::ingest::feed_join::ServedFeeds>,
    pub metrics: Arc<Metrics>,
    pub events: crate::config::EventSettings,
    /// Set when Kafka is configured: events go to the topic instead of the in-process path.
    pub producer: Option<Arc<crate::ingest::kafka::EventProducer>>,
    pub request_deadline: Duration,
    pub ping_timeout: Duration,
    /// Each tenant's rules in force.
    pub rules: Arc<crate::ranking::rules_book::RulesBook>,
    /// Feed sessions' pages, for pagination without repeats.
    pub sessions: Arc<dyn crate::store::FeedSessions>,
    pub cursors: cursor::CursorKey,
    pub session_ttl: Duration,
    /// The ops page's counters over the last minute.
    pub ops: ops::OpsBoard,
    /// The served-feature log (sampled feeds with their features, for retraining).
    pub feature_log: Arc<crate::learning::FeatureLog>,
    /// Each tenant's running experiment.
    pub experiments: Arc<crate::learning::Experiments>,
    /// The settings in force, re-read by `POST /v1/admin/config/reload`.
    pub settings: std::sync::Mutex<crate::config::Settings>,
}

/// The transport a request came by: a bounded label of the feed metrics and a field of the
/// feed's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Http, Transport::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}
