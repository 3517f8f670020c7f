//! Operator endpoints, behind an admin key (`admin.api_key_sha256`).

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::error::ApiError;
use crate::actors::ReloadModel;

/// `POST /v1/admin/models/reload`: loads the model files as they are now, canary-checks the
/// model and swaps it in; 422 (and the old model keeps serving) if it fails its checks.
pub async fn reload_model(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.tenants.authorize_admin(super::auth::bearer(&req))?;
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
        Ok(HttpResponse::Ok().json(serde_json::json!({ "models": reports })))
    } else {
        Err(ApiError::ModelRejected(rejected.join("; ")))
    }
}
