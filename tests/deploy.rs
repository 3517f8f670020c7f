//! deploy/ offline: the Kubernetes overlays rendered by kubectl's kustomize and validated
//! against the Kubernetes schemas, their probes, ports, selectors and shutdown timing checked
//! against the service's configuration, and the compose stack's services, ports and
//! configuration files checked against each other (deploy/check.py; its tools come from
//! deploy/requirements.txt, installed into .venv by scripts/setup).

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn kubernetes_manifests_and_compose_stack_pass_deploy_check() {
    let out = Command::new(format!("{ROOT}/.venv/bin/python"))
        .arg(format!("{ROOT}/deploy/check.py"))
        .current_dir(ROOT)
        .output()
        .expect(".venv/bin/python runs (scripts/setup creates it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "deploy/check.py failed (its tools: scripts/setup):\n{text}"
    );
    assert!(text.contains("deploy checks passed"), "{text}");
}

/// The production overlay's tenants file, layered over its config as the Deployment does
/// (`EAGLERANK_CONFIG=config.toml:tenants.toml`), leaves the published demo keys opening
/// nothing: a later file's empty list replaces the compiled-in one.
#[test]
fn the_production_tenants_file_closes_the_demo_keys() {
    use eaglerank::domain::tenants::Tenants;
    let files = [
        format!("{ROOT}/deploy/kubernetes/base/config.toml").into(),
        format!("{ROOT}/deploy/kubernetes/overlays/production/tenants.toml").into(),
    ];
    let settings = eaglerank::config::Settings::load(&files).expect("the overlay's config loads");
    let tenants = Tenants::new(settings.tenant_specs(), &settings.admin.api_key_sha256);
    for (tenant, key) in [
        ("demo-a", "er_demo_a_7Qk2mV9xLp4sT8wZ"),
        ("demo-b", "er_demo_b_3Hn6rB1yKc5dF0jU"),
    ] {
        assert!(tenants.authorize(tenant, Some(key)).is_err(), "{tenant}");
    }
    assert!(
        tenants
            .authorize_admin(Some("er_admin_demo_Wq4Zt8Kp2Nx6"))
            .is_err()
    );
    // The base (demo) files keep them open.
    let demo = eaglerank::config::Settings::load(&[
        format!("{ROOT}/deploy/kubernetes/base/config.toml").into(),
        format!("{ROOT}/deploy/kubernetes/base/tenants.toml").into(),
    ])
    .unwrap();
    let tenants = Tenants::new(demo.tenant_specs(), &demo.admin.api_key_sha256);
    assert!(
        tenants
            .authorize("demo-a", Some("er_demo_a_7Qk2mV9xLp4sT8wZ"))
            .is_ok()
    );
}
