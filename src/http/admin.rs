//! Operator endpoints, behind an admin key (`admin.api_key_sha256`).

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::{AdminErrors, ApiError};
use crate::actors::{ReloadModel, ReloadReport};
use crate::api::{AppState, auth};

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Reloaded {
    models: Vec<ReloadReport>,
}

/// Loads every model's files as they are now, canary-checks them and swaps them in; 422 (and
/// the old models keep serving) if one fails its checks.
#[utoipa::path(
    post,
    path = "/v1/admin/models/reload",
    tag = "admin",
    responses((status = 200, description = "Reloaded.", body = Reloaded), AdminErrors),
    security(("bearer" = [])),
)]
pub async fn reload_model(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::authorize_admin(&state, super::auth::bearer(&req))?;
    let reports = state
        .actors
        .model_watchdog
        .send(ReloadModel)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the model watchdog is not running: {e}")))?
        .map_err(ApiError::internal)?;
    let rejected: Vec<String> = reports
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.slot, r.error.as_ref()?)))
        .collect();
    if rejected.is_empty() {
        Ok(HttpResponse::Ok().json(Reloaded { models: reports }))
    } else {
        Err(ApiError::ModelRejected(rejected.join("; ")))
    }
}
