//! `/healthz` and `/readyz`: the probes of `api::readiness` as JSON.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::readiness::{live, readiness};

#[derive(Serialize, ToSchema)]
pub(super) struct Liveness {
    /// `ok` or `unavailable`.
    #[schema(value_type = String)]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    reason: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String)]
    status: &'static str,
    /// Each component: the model(s) and their canary, the store, every actor.
    #[schema(value_type = Object)]
    components: Value,
}

/// Liveness: the actor system answers. A dependency being down does not count.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    responses(
        (status = 200, description = "Alive.", body = Liveness),
        (status = 503, description = "The actor system did not answer a ping.", body = Liveness),
    ),
)]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if live(&state).await {
        HttpResponse::Ok().json(Liveness {
            status: "ok",
            reason: None,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(Liveness {
            status: "unavailable",
            reason: Some("the actor system did not answer a ping"),
        })
    }
}

/// Readiness: the store is up, every model passes its canary, every actor runs.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready: see the components.", body = Readiness),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let r = readiness(&state);
    let body = Readiness {
        status: if r.ready { "ready" } else { "not_ready" },
        components: r.components,
    };
    if r.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
