//! Start-up refusals and graceful shutdown, on the real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use eaglerank::config::Settings;
use eaglerank::ranking::model::{LoadedModel, ModelError, read_metadata};

use crate::helpers::{DEMO_A_KEY, binary_command, spawn_binary, spawn_command};

fn failed_start(envs: &[(&str, &str)]) -> String {
    let out = binary_command(envs).output().expect("binary runs");
    assert!(!out.status.success(), "start-up must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_onnx_runtime_library_is_a_clear_start_up_error() {
    let stderr = failed_start(&[(
        "EAGLERANK__MODEL__ONNXRUNTIME_LIBRARY",
        "no/such/libonnxruntime.so",
    )]);
    assert!(stderr.contains("no/such/libonnxruntime.so"), "{stderr}");
    assert!(
        stderr.contains("scripts/setup"),
        "says how to fix it: {stderr}"
    );
}

#[test]
fn a_missing_model_file_is_a_clear_start_up_error() {
    let stderr = failed_start(&[("EAGLERANK__MODEL__PATH", "models/missing.onnx")]);
    assert!(stderr.contains("models/missing.onnx"), "{stderr}");
}

#[test]
fn an_unknown_key_is_refused_naming_the_variable_or_file_it_came_from() {
    // A setting that no longer exists: silently ignored, it would look applied.
    let stderr = failed_start(&[("EAGLERANK__MODEL__RANKER_THREADS", "1")]);
    assert!(stderr.contains("\"model.ranker_threads\""), "{stderr}");
    assert!(
        stderr.contains("environment variable EAGLERANK__MODEL__RANKER_THREADS"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eaglerank.toml");
    std::fs::write(&file, "[cache]\nitem_ttl = 5\n").unwrap();
    let stderr = failed_start(&[("EAGLERANK_CONFIG", file.to_str().unwrap())]);
    assert!(stderr.contains("\"cache.item_ttl\""), "{stderr}");
    assert!(
        stderr.contains(&format!("file {}", file.display())),
        "{stderr}"
    );
}

#[actix_rt::test]
async fn the_binary_serves_from_any_directory() {
    // No config/ and no models/ here: the defaults are compiled in, and the model and ONNX
    // Runtime are found in the checkout the binary was built from.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = binary_command(&[]);
    cmd.current_dir(elsewhere.path());
    let bin = spawn_command(cmd);
    let res = bin.feed("user_id=u42").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 20);
}

/// Loads the committed model with its metadata changed by `edit`.
fn load_with_metadata(
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<LoadedModel, ModelError> {
    let settings = Settings::load(&[]).unwrap();
    let mut meta = serde_json::to_value(read_metadata(&settings.model.metadata).unwrap()).unwrap();
    edit(&mut meta);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.json");
    std::fs::write(&path, meta.to_string()).unwrap();
    let mut model = settings.model.clone();
    model.metadata = path;
    LoadedModel::load(&model)
}

#[test]
fn the_committed_model_loads_and_passes_its_probe() {
    let model = load_with_metadata(|_| {}).expect("committed model loads");
    assert_eq!(model.spec.len(), model.metadata.features.len());
}

#[test]
fn metadata_that_does_not_match_the_model_is_refused() {
    let err = load_with_metadata(|m| {
        m["features"].as_array_mut().unwrap().pop();
    })
    .err()
    .expect("one feature short");
    assert!(matches!(err, ModelError::Mismatch(_)), "{err}");

    let err = load_with_metadata(|m| m["features"][0] = "no_such_feature".into())
        .err()
        .expect("unknown feature");
    assert!(matches!(err, ModelError::Feature(_)), "{err}");

    let err = load_with_metadata(|m| m["input"] = "wrong".into())
        .err()
        .expect("input name");
    assert!(err.to_string().contains("wrong"), "{err}");

    let err = load_with_metadata(|m| {
        let e = m["probe"]["expected"][0].as_f64().unwrap();
        m["probe"]["expected"][0] = (e + 1.0).into();
    })
    .err()
    .expect("probe mismatch");
    assert!(err.to_string().contains("probe row 0"), "{err}");

    let err = load_with_metadata(|m| m["features"] = "not a list".into())
        .err()
        .expect("bad json");
    assert!(matches!(err, ModelError::Metadata { .. }), "{err}");
    assert!(Path::new("models/ranker.onnx").exists());
}

#[actix_rt::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut bin = spawn_binary(&[]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/demo-a/feed?user_id=u1", bin.address);
    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let req = client.get(&url).bearer_auth(DEMO_A_KEY).send();
            actix_rt::spawn(req)
        })
        .collect();
    actix_rt::time::sleep(Duration::from_millis(5)).await;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(bin.child.id() as i32, libc::SIGTERM) },
        0
    );
    for r in in_flight {
        // Requests accepted before the signal complete; later ones find the socket closed.
        if let Ok(res) = r.await.unwrap() {
            assert_eq!(res.status(), 200);
        }
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = bin.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let logs = bin.drain_logs(Duration::from_millis(200));
    assert!(
        logs.iter().any(|l| l["event"] == "ServerStopped"),
        "{logs:#?}"
    );
}

#[test]
fn the_cheap_linear_model_loads_and_passes_its_probe() {
    let mut settings = Settings::load(&[]).unwrap().model;
    settings.path = "models/ranker-linear.onnx".into();
    settings.metadata = "models/ranker-linear.json".into();
    let model = LoadedModel::load(&settings).expect("linear model loads");
    assert_eq!(model.metadata.name, "eaglerank-linear");
    assert_eq!(model.spec.len(), 14);
}
