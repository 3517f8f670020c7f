//! `POST /v1/tenants/{tenant}/events`: a batch of user events (`api::events`), 202
//! `{"accepted": n, ...}`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::AuthorizedTenant;
use super::error::{ApiError, TenantErrors};
use crate::api::events::Accepted;
use crate::api::{AppState, Transport, events};
use crate::ingest::EventInput;

#[derive(Deserialize, ToSchema)]
pub struct EventBatch {
    /// Raw values, so that a malformed event is reported by its index.
    #[schema(value_type = Vec<EventInput>, min_items = 1, max_items = 1000)]
    events: Vec<Value>,
}

/// A batch of user events: validated as a whole (one invalid event rejects the batch, every
/// problem listed, nothing applied), durable before the answer (applied in process, or in
/// Kafka when configured). Replays of an `event_id` within the dedup window change nothing.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/events",
    tag = "events",
    params(("tenant" = String, Path, description = "The tenant (marketplace) id.")),
    request_body = EventBatch,
    responses(
        (status = 202, description = "Accepted. `duplicates` and `unknown_items` when applied in process (no Kafka).", body = Accepted),
        TenantErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn post_events(
    AuthorizedTenant(tenant): AuthorizedTenant,
    body: web::Json<EventBatch>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let accepted =
        events::ingest(&state, &tenant, body.into_inner().events, Transport::Http).await?;
    Ok(HttpResponse::Accepted().json(accepted))
}
