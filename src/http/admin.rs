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

/// Reads the configuration again (the same files, the environment as it is now) and applies
/// the experiments and the served-feature log's sample rates without a restart: how an
/// experiment is started, changed or stopped. 422 (nothing changed) for an invalid
/// configuration.
#[utoipa::path(
    post,
    path = "/v1/admin/config/reload",
    tag = "admin",
    responses(
        (status = 200, description = "Applied.", body = crate::api::experiments::ConfigReloaded),
        AdminErrors
    ),
    security(("bearer" = [])),
)]
pub async fn reload_config(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::authorize_admin(&state, super::auth::bearer(&req))?;
    let reloaded = crate::api::experiments::reload(&state)?;
    Ok(HttpResponse::Ok().json(reloaded))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExperimentsQuery {
    /// Only this tenant's experiment.
    tenant: Option<String>,
}

/// The running experiments and each arm's counters on this replica (feeds, clicks at 1-10,
/// clicks, add-to-carts, purchases, the sum of first-click reciprocal ranks): what
/// `eaglerank experiment report` reads. With several replicas, sum them (or read Prometheus).
#[utoipa::path(
    get,
    path = "/v1/admin/experiments",
    tag = "admin",
    params(ExperimentsQuery),
    responses(
        (status = 200, description = "The running experiments.", body = Vec<crate::learning::report::ExperimentCounts>),
        AdminErrors
    ),
    security(("bearer" = [])),
)]
pub async fn experiments(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ExperimentsQuery>,
) -> Result<HttpResponse, ApiError> {
    auth::authorize_admin(&state, super::auth::bearer(&req))?;
    Ok(HttpResponse::Ok().json(crate::api::experiments::overview(
        &state,
        query.tenant.as_deref(),
    )))
}
