//! The REST transport: routes, the auth extractor, and the JSON rendering of the API
//! (`api/`).

mod admin;
mod auth;
pub mod error;
mod events;
mod feed;
pub mod in_flight;
mod items;
pub mod methods;
mod metrics;
pub mod openapi;
mod ops;
mod probes;
pub mod request_span;
mod rules;

use actix_web::web;

pub use crate::api::AppState;
pub use crate::api::feed::{DEFAULT_LIMIT, MAX_LIMIT};
pub use items::MAX_ITEMS_PER_CALL;

/// The ops page and its data, when `ops.enabled`.
pub fn ops_routes(cfg: &mut web::ServiceConfig, enabled: bool) {
    if !enabled {
        return;
    }
    cfg.service(
        web::resource("/ops")
            .route(web::get().to(ops::page))
            .default_service(error::method_not_allowed("GET")),
    )
    .service(
        web::resource("/ops/data")
            .route(web::get().to(ops::data))
            .default_service(error::method_not_allowed("GET")),
    );
}

/// Routes; each resource answers other methods with 405 in the API's error shape.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/tenants/{tenant}/feed")
            .route(web::get().to(feed::get_feed))
            .default_service(error::method_not_allowed("GET")),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/items")
            .route(web::post().to(items::upsert_items))
            .default_service(error::method_not_allowed("POST")),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/items/{item_id}")
            .route(web::get().to(items::get_item))
            .route(web::patch().to(items::patch_item))
            .default_service(error::method_not_allowed("GET, PATCH")),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/rules")
            .route(web::get().to(rules::get_rules))
            .route(web::put().to(rules::put_rules))
            .default_service(error::method_not_allowed("GET, PUT")),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/events")
            .route(web::post().to(events::post_events))
            .default_service(error::method_not_allowed("POST")),
    )
    .service(
        web::resource("/v1/admin/models/reload")
            .route(web::post().to(admin::reload_model))
            .default_service(error::method_not_allowed("POST")),
    )
    .service(
        web::resource("/v1/admin/config/reload")
            .route(web::post().to(admin::reload_config))
            .default_service(error::method_not_allowed("POST")),
    )
    .service(
        web::resource("/v1/admin/experiments")
            .route(web::get().to(admin::experiments))
            .default_service(error::method_not_allowed("GET")),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi::openapi_json))
            .default_service(error::method_not_allowed("GET")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics::metrics))
            .default_service(error::method_not_allowed("GET")),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(probes::healthz))
            .default_service(error::method_not_allowed("GET")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(probes::readyz))
            .default_service(error::method_not_allowed("GET")),
    );
}
