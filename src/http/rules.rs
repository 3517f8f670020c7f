//! `GET`/`PUT /v1/tenants/{tenant}/rules`: `api::rules` as JSON.

use actix_web::{HttpResponse, web};

use super::auth::AuthorizedTenant;
use super::error::{ApiError, TenantErrors};
use crate::api::{self, AppState};

/// The tenant's business rules in force, with their version (0: the configured ones).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/rules",
    tag = "rules",
    params(("tenant" = String, Path, description = "The tenant (marketplace) id.")),
    responses((status = 200, description = "The rules in force.", body = api::rules::VersionedRules), TenantErrors),
    security(("bearer" = [])),
)]
pub async fn get_rules(
    AuthorizedTenant(tenant): AuthorizedTenant,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rules = api::rules::get(&state, &tenant.id).await?;
    Ok(HttpResponse::Ok().json(rules))
}

/// Replaces the tenant's business rules with this document (every field optional; unknown
/// fields refused). Validated first: a 400 lists every problem by field, and nothing changes.
/// Stored as the next version, served by every replica within `feed.rules_refresh_ms`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/rules",
    tag = "rules",
    params(("tenant" = String, Path, description = "The tenant (marketplace) id.")),
    request_body(content = crate::domain::rules::Rules, content_type = "application/json"),
    responses((status = 200, description = "Stored and in force.", body = api::rules::VersionedRules), TenantErrors),
    security(("bearer" = [])),
)]
pub async fn put_rules(
    AuthorizedTenant(tenant): AuthorizedTenant,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rules = api::rules::put(&state, &tenant, &body).await?;
    Ok(HttpResponse::Ok().json(rules))
}
