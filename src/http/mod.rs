//! The REST API: routes, the auth extractor, and the error mapping.

mod admin;
mod auth;
pub mod error;
mod events;
mod feed;
mod items;
pub mod methods;
mod probes;
pub mod request_span;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use crate::actors::ActorSystem;
use crate::domain::tenants::Tenants;
use crate::ranking::model::ModelRegistry;
use crate::store::{SharedStore, StoreHealth};
use crate::telemetry::Metrics;

pub use feed::{DEFAULT_LIMIT, MAX_LIMIT};
pub use items::MAX_ITEMS_PER_CALL;

/// What every handler may use.
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
}

/// Routes; each resource answers other methods with 405 in the API's error shape.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let not_allowed = || web::to(error::method_not_allowed);
    cfg.service(
        web::resource("/v1/tenants/{tenant}/feed")
            .route(web::get().to(feed::get_feed))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/items")
            .route(web::post().to(items::upsert_items))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/items/{item_id}")
            .route(web::get().to(items::get_item))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/events")
            .route(web::post().to(events::post_events))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/admin/models/reload")
            .route(web::post().to(admin::reload_model))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(probes::healthz))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(probes::readyz))
            .default_service(not_allowed()),
    );
}
