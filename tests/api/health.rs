use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_rt::test]
async fn healthz_answers_while_the_actor_system_does() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
}

#[actix_rt::test]
async fn readyz_reports_every_component() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let c = &body["components"];
    assert_eq!(c["model"]["ok"], true);
    assert_eq!(c["model"]["name"], "eaglerank-lgbm-lambdarank");
    assert_eq!(
        c["store"],
        serde_json::json!({"ok": true, "backend": "memory"})
    );
    let actors = c["actors"].as_array().unwrap();
    let names: Vec<&str> = actors.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "gateway",
            "candidates",
            "ranker",
            "ingestor",
            "model_watchdog",
            "usage_reporter"
        ]
    );
    assert!(
        actors.iter().all(|a| a["up"] == true && a["restarts"] == 0),
        "{actors:?}"
    );
}
