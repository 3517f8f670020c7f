//! The OpenAPI 3.1 document of the REST API, generated from the handlers' own types and
//! `#[utoipa::path]` attributes: served at `GET /openapi.json`, printed by `eaglerank openapi`,
//! and committed as `openapi.json` (a test fails when the two differ: run
//! `cargo run -- openapi > openapi.json`).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, events, feed, items, probes, rules};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "EagleRank",
        description = "Real-time feed ranking for marketplaces: a user's ranked feed, catalog items, user events. The same API is served over gRPC (proto/eaglerank/v1/feed.proto). Tenant endpoints take a tenant key, admin endpoints an admin key, as `Authorization: Bearer <key>`. Every error has the body `{\"error\": {\"code\", \"message\", \"details\"?}}`.",
        license(name = "NOASSERTION"),
    ),
    paths(
        feed::get_feed,
        items::upsert_items,
        items::get_item,
        items::patch_item,
        rules::get_rules,
        rules::put_rules,
        events::post_events,
        admin::reload_model,
        admin::reload_config,
        admin::experiments,
        probes::healthz,
        probes::readyz,
    ),
    // The error body is named by the error responses (`TenantErrors`, `AdminErrors`), which
    // utoipa does not follow into the components.
    components(schemas(super::error::Body)),
    modifiers(&BearerKeys),
    tags(
        (name = "feeds", description = "Ranked feeds."),
        (name = "catalog", description = "Catalog items and their statistics."),
        (name = "rules", description = "Business rules: exclusions, boosts, pins, diversity, fatigue."),
        (name = "events", description = "User events: impressions, clicks, add-to-carts, purchases."),
        (name = "admin", description = "Operator endpoints (admin key)."),
        (name = "probes", description = "Liveness and readiness (no key)."),
    ),
)]
struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant key (tenant endpoints) or an admin key (admin endpoints).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as committed in `openapi.json` (pretty, with a final newline).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    // The crate's version, so the document says which build it describes.
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut text = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOC.get_or_init(document).as_str())
}
