//! The OpenAPI document: the committed `openapi.json` is the one the code generates and serves,
//! and a property-based fuzzer (schemathesis, pinned in tests/openapi/requirements.txt,
//! installed into .venv by scripts/setup) drives a live server from it: no 5xx, every status,
//! content type and body as documented, every undeclared method answered 405 with `Allow`.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::process::Command;

use helpers::{DEMO_A_KEY, spawn_app};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ADMIN_KEY: &str = "er_admin_demo_Wq4Zt8Kp2Nx6";

#[actix_rt::test]
async fn the_committed_document_is_the_generated_and_served_one() {
    let generated = eaglerank::http::openapi::document();
    let committed = std::fs::read_to_string(format!("{ROOT}/openapi.json")).unwrap();
    assert!(
        committed == generated,
        "openapi.json is stale: regenerate it with `cargo run -- openapi > openapi.json`"
    );
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.text().await.unwrap(), generated);

    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/tenants/{tenant}/feed",
        "/v1/tenants/{tenant}/items",
        "/v1/tenants/{tenant}/items/{item_id}",
        "/v1/tenants/{tenant}/events",
        "/v1/admin/models/reload",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
}

/// The checks run: everything schemathesis has but `positive_data_acceptance`, which expects
/// every schema-valid body to be accepted — the API also refuses what no schema can say
/// (timestamps too far in the future, duplicate ids within a batch).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,allow_header_conformance,ignored_auth";

#[actix_rt::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let app = spawn_app().await;
    let schemathesis = format!("{ROOT}/.venv/bin/schemathesis");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .current_dir(ROOT)
            .env("EAGLERANK_TENANT_KEY", DEMO_A_KEY)
            .env("EAGLERANK_ADMIN_KEY", ADMIN_KEY)
            .env("NO_COLOR", "1")
            .args(["--config-file", "tests/openapi/schemathesis.toml", "run"])
            .arg(app.url("/openapi.json"))
            .args(["--checks", CHECKS])
            // Deterministic in CI; run without --seed (and with more examples) to explore. One
            // worker: with more, schemathesis 4.32.5 on CPython 3.11 fails in its own code
            // generation ("AST constructor recursion depth mismatch"), not on the API.
            .args([
                "--max-examples",
                "50",
                "--seed",
                "20261202",
                "--workers",
                "1",
            ])
            .output()
            .expect("schemathesis runs (scripts/setup installs it into .venv)")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    // "N generated, N passed" (some may be "skipped"): report how many cases ran.
    let summary = text
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no summary in:\n{text}"));
    let generated: u64 = summary.trim().split(' ').next().unwrap().parse().unwrap();
    assert!(generated >= 100, "{summary}");
    println!("schemathesis: {}", summary.trim());
}
