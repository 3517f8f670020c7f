//! One feed pipeline: the simulator (whose log trains the model) shows what the service serves.

use serde_json::Value;

use eaglerank::config::Settings;
use eaglerank::domain::unix_now;
use eaglerank::ranking::model::LoadedModel;
use eaglerank::store::MemoryStore;
use eaglerank::telemetry::Metrics;

use crate::helpers::{DEMO_A_KEY, spawn_app_with, test_overrides};

const ANCHOR: f64 = 1_790_000_000.0;

#[actix_rt::test]
async fn the_simulator_serves_the_order_the_service_serves() {
    let app = spawn_app_with(&[("store.demo.anchor", ANCHOR.into())]).await;

    // The simulator's own store, seeded like the service's: the same store state.
    let mut overrides = test_overrides();
    overrides.push(("store.demo.anchor", ANCHOR.into()));
    let settings = Settings::load_with(&[], &overrides).unwrap();
    let store = MemoryStore::new(["demo-a".to_owned()]);
    eaglerank::demo::seed_tenant(
        &store,
        &settings.store.demo,
        "demo-a",
        ANCHOR,
        &Metrics::new(),
    )
    .await
    .unwrap();
    let model = LoadedModel::load(&settings.model).unwrap();

    let mut compared = 0;
    for user in ["u1", "u7", "u42", "u150", "u299", "someone-new"] {
        // The service reads its clock between these two instants; the simulator ranks at
        // both, and where the order did not change between them it must be the service's.
        let before = unix_now();
        let feed: Value = app
            .feed("demo-a", DEMO_A_KEY, &format!("user_id={user}&limit=20"))
            .await
            .json()
            .await
            .unwrap();
        let after = unix_now();
        assert_eq!(feed["degraded"], false);
        let served: Vec<&str> = feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(served.len(), 20, "{user}");

        let simulate = |now| {
            eaglerank::tools::simulate::model_feed(
                &settings, &store, &model, "demo-a", user, now, 20,
            )
        };
        let (at_before, at_after) = (
            simulate(before).await.unwrap(),
            simulate(after).await.unwrap(),
        );
        if at_before != at_after {
            continue;
        }
        let simulated: Vec<&str> = at_before.iter().map(|i| &**i).collect();
        assert_eq!(simulated, served, "{user}");
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} of 6 feeds were comparable");
}
