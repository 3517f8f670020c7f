//! Liveness and readiness, computed once for every transport: `/healthz` and `/readyz` render
//! them as JSON, gRPC's `grpc.health.v1.Health` as SERVING / NOT_SERVING.

use serde_json::{Value, json};

use super::AppState;

/// Alive: the actor system answers a ping. A dependency being down must not get the pod
/// restarted, so nothing else counts here.
pub async fn live(state: &AppState) -> bool {
    state.actors.ping(state.ping_timeout).await
}

pub struct Readiness {
    pub ready: bool,
    /// Every component's state, as `/readyz` shows it.
    pub components: Value,
}

/// Ready: the store is up (the watchdog's last observation: asking costs the store nothing),
/// every model passes its canary, every actor runs.
pub fn readiness(state: &AppState) -> Readiness {
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
                "engine": m.engine.name(),
            })
        })
        .collect();
    let ready = store["ok"] == true && canary_ok && actors.iter().all(|a| a.up);
    Readiness {
        ready,
        components: json!({
            // Loaded and probed before the server starts; the canary re-checks it.
            "model": {
                "ok": canary_ok,
                "name": model.metadata.name,
                "version": model.metadata.version,
            },
            "models": models,
            "store": store,
            "actors": actors,
        }),
    }
}
