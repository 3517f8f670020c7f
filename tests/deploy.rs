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
