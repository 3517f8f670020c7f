//! Probes. Liveness asks only whether the actor system answers (a dependency being down must
//! not get the pod restarted); readiness reports every component.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.actors.ping(state.ping_timeout).await {
        HttpResponse::Ok().json(json!({ "status": "ok" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "reason": "the actor system did not answer a ping",
        }))
    }
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // The watchdog's last observation: probes cost the store nothing.
    let health = &state.store_health;
    let store = match health.down_reason() {
        None => json!({ "ok": true, "backend": health.backend() }),
        Some(reason) => json!({ "ok": false, "backend": health.backend(), "reason": reason }),
    };
    let actors = state.actors.health.snapshot();
    let model = state.models.current();
    let canary_ok = state.models.canary_ok();
    let models: Vec<_> = state
        .models
        .slots()
        .iter()
        .map(|slot| {
            let m = slot.current();
            json!({
                "slot": slot.name,
                "ok": slot.canary_ok(),
                "name": m.metadata.name,
                "version": m.metadata.version,
            })
        })
        .collect();
    let ready = store["ok"] == true && canary_ok && actors.iter().all(|a| a.up);
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "components": {
            // Loaded and probed before the server starts; the canary re-checks it.
            "model": {
                "ok": canary_ok,
                "name": model.metadata.name,
                "version": model.metadata.version,
            },
            "models": models,
            "store": store,
            "actors": actors,
        }
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
