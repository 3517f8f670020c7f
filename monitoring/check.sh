#!/usr/bin/env bash
# Validates the EagleRank monitoring: Prometheus configuration, rules and rule unit tests
# (promtool), Alertmanager configuration and routing (amtool) and its inhibitions, the
# Kubernetes PrometheusRule (in sync with the rule files), the Grafana dashboards (structure,
# variables, data source, annotations, layout, PromQL syntax through promtool), the runbook (a
# section per alert) and the docker compose file.
#
#   monitoring/check.sh
#
# Needs promtool and amtool (Debian: apt-get install prometheus prometheus-alertmanager) and
# python3 (standard library; PyYAML, if present, enables a few deeper checks). Runs every check,
# prints a summary and exits 1 if any failed.
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1  # check.sh imports queries.py: leave no __pycache__ behind

cd "$(dirname "$0")"
MON="$PWD"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

failures=()
passed=0

step() {
    # step <description> <command...>: run, show output on failure, record the result.
    local what="$1"
    shift
    if "$@" >"$TMP/out" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$what"
        if [[ -n "${VERBOSE:-}" ]]; then sed 's/^/      /' "$TMP/out"; fi
    else
        failures+=("$what")
        printf 'FAIL  %s\n' "$what"
        sed 's/^/      /' "$TMP/out"
    fi
}

for tool in promtool amtool python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool not found (Debian: apt-get install prometheus prometheus-alertmanager python3)" >&2
        exit 2
    fi
done

# ---------------------------------------------------------------------------- Prometheus

step "promtool check config prometheus/prometheus.yml" \
    promtool check config prometheus/prometheus.yml
step "promtool check rules prometheus/rules/*.yml" \
    promtool check rules prometheus/rules/*.yml
step "promtool test rules prometheus/tests/*.yml" \
    promtool test rules prometheus/tests/*.yml

# queries.py lists every expression and metric; later checks use its output.
step "queries.py runs" sh -c 'python3 queries.py >"$1"' sh "$TMP/queries.json"

# queries.py reads the rule files as text: it must find every rule promtool finds.
rule_parser_agrees() {
    local file expected found
    for file in prometheus/rules/*.yml; do
        expected=$(promtool check rules "$file" | sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p')
        found=$(python3 - "$TMP/queries.json" "$(basename "$file")" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
name = sys.argv[2]
print(sum(1 for q in d["queries"] if q.get("file") == name) + sum(1 for a in d["alerts"] if a["file"] == name))
EOF
        )
        echo "$file: promtool $expected rules, queries.py $found"
        [[ -n "$expected" && "$expected" == "$found" ]] || return 1
    done
}
step "queries.py parses every rule promtool finds" rule_parser_agrees

# Every alert rule (name and severity) fires in some test, and every test pins the group order.
test_coverage() {
    python3 - "$TMP/queries.json" <<'EOF'
import glob, json, re, sys
alerts = json.load(open(sys.argv[1]))["alerts"]
rule_groups = set()
for path in glob.glob("prometheus/rules/*.yml"):
    for line in open(path):
        m = re.match(r"  - name:\s*(\S+)", line)
        if m:
            rule_groups.add(m.group(1))
fired, problems = set(), []
for path in sorted(glob.glob("prometheus/tests/*.yml")):
    text = open(path).read()
    m = re.search(r"^group_eval_order:\n((?:  - .*\n)+)", text, re.M)
    order = re.findall(r"  - (\S+)", m.group(1)) if m else []
    if set(order) != rule_groups:
        problems.append(f"{path}: group_eval_order must list every rule group {sorted(rule_groups)}")
    alertname = None
    for line in text.splitlines():
        m = re.match(r"\s+alertname:\s*(\S+)", line)
        if m:
            alertname = m.group(1)
        m = re.match(r"\s+severity:\s*(\S+)", line)
        if m and alertname:
            fired.add((alertname, m.group(1)))
for a in alerts:
    if (a["alert"], a["severity"]) not in fired:
        problems.append(f"alert {a['alert']} (severity {a['severity']}) never fires in prometheus/tests")
    if a["alert"] == "Watchdog":
        if a["severity"] != "heartbeat":
            problems.append("alert Watchdog: severity must be heartbeat (its own route)")
    elif a["severity"] not in ("warning", "critical"):
        problems.append(f"alert {a['alert']}: severity must be warning or critical")
for p in problems:
    print(p)
print(f"{len(alerts)} alert rules, {len(fired)} fired in tests")
sys.exit(1 if problems else 0)
EOF
}
step "every alert rule fires in a unit test" test_coverage

# ---------------------------------------------------------------------------- runbook

runbook() {
    python3 - "$TMP/queries.json" <<'EOF'
import glob, json, re, sys
alerts = json.load(open(sys.argv[1]))["alerts"]
runbook = open("RUNBOOK.md").read()
headings = re.findall(r"^## (.+)$", runbook, re.M)
# GitHub's anchors: lower case, punctuation dropped, spaces as hyphens.
anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
base = "https://github.com/eaglerank/eaglerank/blob/main/monitoring/RUNBOOK.md#"
problems = []
names = sorted({a["alert"] for a in alerts})
for name in names:
    if name not in headings:
        problems.append(f"RUNBOOK.md has no section '## {name}'")
rules = "".join(open(f).read() for f in sorted(glob.glob("prometheus/rules/*.yml")))
for block in re.split(r"\n\s+- alert: ", rules)[1:]:
    name = block.split()[0]
    for key in ("summary", "description", "runbook_url"):
        if not re.search(rf"^\s+{key}:", block, re.M):
            problems.append(f"alert {name}: no {key} annotation")
    m = re.search(r'runbook_url:\s*"([^"]+)"', block)
    if m and m.group(1) != base + name.lower():
        problems.append(f"alert {name}: runbook_url {m.group(1)} is not {base + name.lower()}")
for anchor in re.findall(r"\]\(#([^)]+)\)", runbook):
    if anchor not in anchors:
        problems.append(f"RUNBOOK.md links to #{anchor}, which is no heading")
# Panels named "**Dashboard › Panel**" must exist (Dashboard: the title after "EagleRank / ").
panels = {}
for path in sorted(glob.glob("grafana/dashboards/*.json")):
    d = json.load(open(path))
    top = d.get("panels", [])
    nested = [c for p in top for c in p.get("panels", [])]  # in collapsed rows
    panels[d.get("title", "").split(" / ")[-1]] = {p.get("title") for p in top + nested}
for dash, title in re.findall(r"\*\*([A-Z]\w*) › ([^*]+?)\*\*", runbook):
    title = " ".join(title.split())
    if (dash, title) == ("Dashboard", "Panel"):
        continue  # the convention itself
    if dash not in panels:
        problems.append(f"RUNBOOK.md names panel '{dash} › {title}' of an unknown dashboard")
    elif title not in panels[dash]:
        problems.append(f"RUNBOOK.md names panel '{dash} › {title}', which does not exist")
if "## TODO" not in runbook:
    problems.append("RUNBOOK.md has no TODO section")
for p in problems:
    print(p)
print(f"{len(names)} alerts, {len(headings)} sections")
sys.exit(1 if problems else 0)
EOF
}
step "RUNBOOK.md: a section per alert, runbook_url anchors, panel names" runbook

# ---------------------------------------------------------------------------- Alertmanager

step "amtool check-config alertmanager/alertmanager.yml" \
    amtool check-config alertmanager/alertmanager.yml

routing() {
    # route <expected receivers, in order> <labels...>
    route() {
        local expected="$1"
        shift
        amtool config routes test --config.file=alertmanager/alertmanager.yml \
            --verify.receivers="$expected" "$@" 2>/dev/null || {
            echo "labels $* do not route to $expected"
            return 1
        }
    }
    route push,email-critical alertname=EagleRankDown severity=critical service=eaglerank instance=a:8080 || return 1
    route push,email-critical alertname=EagleRankFeedErrorRatioHigh severity=critical service=eaglerank tenant=demo-a || return 1
    route email-warning alertname=EagleRankFeedLatencyHigh severity=warning service=eaglerank tenant=demo-a || return 1
    route email-warning alertname=EagleRankExperimentArmUnderperforming severity=warning service=eaglerank tenant=demo-a experiment=exp arm=live || return 1
    route heartbeat alertname=Watchdog severity=heartbeat service=eaglerank || return 1
    route email-warning alertname=SomethingElse || return 1
}
step "amtool: critical -> push + email, warning -> email, heartbeat -> heartbeat" routing

# Inhibitions (amtool cannot test them): every rule names `equal` labels, the heartbeat route
# never sends "resolved" and repeats within its group_interval, and a table of alert pairs
# gets the expected outcome under Alertmanager's inhibition semantics.
inhibitions() {
    if ! python3 -c "import yaml" 2>/dev/null; then
        # Without PyYAML: only the presence of `equal:` in each rule.
        python3 - <<'EOF'
import re, sys
text = open("alertmanager/alertmanager.yml").read()
rules = re.split(r"\n  - source_matchers:", text.split("\ninhibit_rules:", 1)[1])[1:]
bad = [i for i, r in enumerate(rules) if not re.search(r"^    equal: \[\w", r, re.M)]
for i in bad:
    print(f"inhibit rule {i}: no `equal` labels")
print(f"{len(rules)} inhibit rules; PyYAML not installed: only `equal` checked")
sys.exit(1 if bad or not rules else 0)
EOF
        return
    fi
    python3 - <<'EOF'
import re, sys, yaml

cfg = yaml.safe_load(open("alertmanager/alertmanager.yml"))
problems = []

def matcher(text):
    m = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*', text)
    if not m:
        raise SystemExit(f"cannot read matcher {text!r}")
    name, op, value = m.groups()
    def match(labels):
        v = labels.get(name, "")
        if op == "=":
            return v == value
        if op == "!=":
            return v != value
        hit = re.fullmatch(value, v) is not None
        return hit if op == "=~" else not hit
    return match

rules = cfg.get("inhibit_rules") or []
for i, r in enumerate(rules):
    if not r.get("equal"):
        problems.append(f"inhibit rule {i}: no `equal` labels (it would inhibit across instances and tenants)")

def inhibited(target, firing):
    """Alertmanager's rule: a firing alert that matches a rule's source matchers and has the
    same values of its `equal` labels (absent counts as empty) mutes an alert that matches its
    target matchers (never itself)."""
    for r in rules:
        if not all(matcher(m)(target) for m in r.get("target_matchers", [])):
            continue
        for source in firing:
            if source == target or not all(matcher(m)(source) for m in r.get("source_matchers", [])):
                continue
            if all(source.get(l, "") == target.get(l, "") for l in r.get("equal", [])):
                return True
    return False

S = {"service": "eaglerank", "job": "eaglerank"}
down_a = {"alertname": "EagleRankDown", "severity": "critical", "instance": "a:8080", **S}
down_all = {"alertname": "EagleRankDown", "severity": "critical", **S}  # absent(): no instance
watchdog = {"alertname": "Watchdog", "severity": "heartbeat", "service": "eaglerank"}
redis_down = {"alertname": "EagleRankRedisDown", "severity": "critical", "instance": "a:8080", **S}
def alert(name, severity, **labels):
    return {"alertname": name, "severity": severity, "service": "eaglerank", **labels}
cases = [
    # (what, target, firing sources, inhibited?)
    ("a down hides a's memory alert",
     alert("EagleRankMemoryHigh", "critical", instance="a:8080", job="eaglerank"), [down_a], True),
    ("a down does not hide b's memory alert",
     alert("EagleRankMemoryHigh", "critical", instance="b:8080", job="eaglerank"), [down_a], False),
    ("a down does not hide a tenant's error ratio",
     alert("EagleRankFeedErrorRatioHigh", "warning", tenant="t"), [down_a], False),
    ("a down does not hide an experiment arm's guardrail",
     alert("EagleRankExperimentArmUnderperforming", "warning", tenant="t", experiment="e", arm="b"),
     [down_a], False),
    ("no target at all hides the service-wide alerts",
     alert("EagleRankEventsRejectedHigh", "warning", job="eaglerank"), [down_all], True),
    ("a down never hides the Watchdog", watchdog, [down_a], False),
    ("no target at all never hides the Watchdog", watchdog, [down_all], False),
    ("a critical hides the warning of the same alert and tenant",
     alert("EagleRankFeedErrorRatioHigh", "warning", tenant="t"),
     [alert("EagleRankFeedErrorRatioHigh", "critical", tenant="t")], True),
    ("a critical does not hide another tenant's warning",
     alert("EagleRankFeedErrorRatioHigh", "warning", tenant="u"),
     [alert("EagleRankFeedErrorRatioHigh", "critical", tenant="t")], False),
    ("a critical does not hide another instance's warning",
     alert("EagleRankProcessRestarting", "warning", instance="b:8080", job="eaglerank"),
     [alert("EagleRankProcessRestarting", "critical", instance="a:8080", job="eaglerank")], False),
    ("Redis down hides the feeds degraded by it",
     alert("EagleRankFeedsDegraded", "warning", tenant="t", reason="redis_down"), [redis_down], True),
    ("Redis down does not hide feeds degraded otherwise",
     alert("EagleRankFeedsDegraded", "warning", tenant="t", reason="store_error"), [redis_down], False),
]
for what, target, firing, expected in cases:
    if inhibited(target, firing) != expected:
        problems.append(f"inhibition: {what}: expected {'inhibited' if expected else 'not inhibited'}")

# The heartbeat route: a ping every group_interval, never a "resolved" message.
def seconds(d):
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+)([smh])", d))
routes = [r for r in cfg["route"].get("routes", []) if 'severity="heartbeat"' in r.get("matchers", [])]
if len(routes) != 1:
    problems.append('expected exactly one route for severity="heartbeat"')
else:
    r = routes[0]
    if seconds(r["repeat_interval"]) >= seconds(r["group_interval"]):
        problems.append("heartbeat route: repeat_interval must be under group_interval (else a ping every other interval)")
    receiver = next(x for x in cfg["receivers"] if x["name"] == r["receiver"])
    if any(w.get("send_resolved", True) for w in receiver.get("webhook_configs", [])):
        problems.append("heartbeat receiver: send_resolved must be false")
for p in problems:
    print(p)
print(f"{len(rules)} inhibit rules, {len(cases)} inhibition cases")
sys.exit(1 if problems else 0)
EOF
}
step "alertmanager: inhibitions scoped by equal labels; heartbeat route" inhibitions

# ---------------------------------------------------------------------------- Kubernetes

step "kubernetes/prometheusrule.yaml in sync with the rule files" \
    python3 kubernetes/generate.py --check

kubernetes_yaml() {
    if ! python3 -c "import yaml" 2>/dev/null; then
        echo "PyYAML not installed: skipped"
        return 0
    fi
    python3 - "$TMP/crd-rules.yml" <<'EOF' || return 1
import sys, yaml
crd = yaml.safe_load(open("kubernetes/prometheusrule.yaml"))
assert crd["apiVersion"] == "monitoring.coreos.com/v1" and crd["kind"] == "PrometheusRule"
yaml.safe_dump({"groups": crd["spec"]["groups"]}, open(sys.argv[1], "w"), sort_keys=False)
sm = yaml.safe_load(open("kubernetes/servicemonitor.yaml"))
assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
ep = sm["spec"]["endpoints"]
assert ep and all(e.get("port") and e.get("path") == "/metrics" for e in ep), ep
assert sm["spec"]["selector"]["matchLabels"], "ServiceMonitor without a selector"
print("PrometheusRule and ServiceMonitor parse")
EOF
    promtool check rules "$TMP/crd-rules.yml"
}
step "kubernetes: CRDs parse; PrometheusRule spec passes promtool check rules" kubernetes_yaml

# ---------------------------------------------------------------------------- Grafana

dashboards() {
    python3 - <<'EOF'
import glob, json, re, sys

problems = []
def bad(msg):
    problems.append(msg)

sys.path.insert(0, ".")
from queries import AGGREGATIONS, FUNCTIONS, KEYWORDS  # noqa: E402

# Metrics that carry a tenant label (raw metrics by family, recorded ones by their level).
TENANT_FAMILIES = (
    "eaglerank_feed_requests_total", "eaglerank_feed_latency_seconds",
    "eaglerank_candidates_fetched", "eaglerank_candidate_fetch_seconds",
    "eaglerank_feature_fetch_seconds", "eaglerank_items_upserted_total",
    "eaglerank_feed_degraded_total", "eaglerank_feature_missing_total",
    "eaglerank_events_ingested_total", "eaglerank_events_duplicates_total",
    "eaglerank_ranking_feeds_total", "eaglerank_ranking_interactions_total",
    "eaglerank_ranking_reciprocal_rank_sum", "eaglerank_rules_candidates_removed_total",
    "eaglerank_rules_diversity_relaxations_total", "eaglerank_rules_pins_served_total",
    "eaglerank_feed_session_page", "eaglerank_rules_version",
    "eaglerank_rules_refresh_failures_total", "eaglerank_feed_session_write_failures_total",
    "eaglerank_experiment_",
)
SELECTOR = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:])(\s*\{[^}]*\})?")

def check_selectors(where, expr):
    """Each metric selector filters by instance (raw metrics) and tenant (if it has one)."""
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    for m in SELECTOR.finditer(s):
        name, matchers = m.group(1), m.group(2) or ""
        if name in FUNCTIONS or name in AGGREGATIONS or name.lower() in KEYWORDS:
            continue
        if not matchers and s[m.end():].lstrip().startswith("("):
            continue
        recorded = ":" in name
        if not recorded and name != "up" and 'instance=~"$instance"' not in matchers:
            bad(f"{where}: {name} is not filtered by instance=~\"$instance\"")
        has_tenant = (recorded and name.startswith("tenant")) or name.startswith(TENANT_FAMILIES)
        if has_tenant and 'tenant=~"$tenant"' not in matchers:
            bad(f"{where}: {name} is not filtered by tenant=~\"$tenant\"")

# The tenant picker lists the tenants that feeds were requested for, except where a dashboard
# is about something only some tenants have (the Experiments dashboard: tenants running one).
TENANT_VARIABLES = {"experiments.json": "label_values(eaglerank_experiment_arm_share, tenant)"}
# Panel types without queries (no targets, no data source).
NO_QUERIES = {"row", "alertlist", "text"}
# Annotations every dashboard has: what changed, and since when.
ANNOTATIONS = ("Deploys", "Process starts", "Model reloads", "Rules changes")

uids = {}
files = sorted(glob.glob("grafana/dashboards/*.json"))
if not files:
    bad("no dashboards in grafana/dashboards")
for path in files:
    try:
        d = json.load(open(path))
    except ValueError as e:
        bad(f"{path}: invalid JSON: {e}")
        continue
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in d:
            bad(f"{path}: no {key}")
    if d.get("schemaVersion") != 39:
        bad(f"{path}: schemaVersion is {d.get('schemaVersion')}, expected 39")
    uid = d.get("uid")
    if uid in uids:
        bad(f"{path}: uid {uid} also used by {uids[uid]}")
    uids[uid] = path
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    expected = {
        "tenant": TENANT_VARIABLES.get(path.split("/")[-1], "label_values(eaglerank_feed_requests_total, tenant)"),
        "instance": 'label_values(up{job="eaglerank"}, instance)',
    }
    for name, query in expected.items():
        v = variables.get(name)
        if v is None:
            bad(f"{path}: no template variable {name}")
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if q != query or v.get("type") != "query":
            bad(f"{path}: variable {name} must be a query variable {query!r}, is {q!r}")
        if name == "tenant" and not (v.get("multi") and v.get("includeAll")):
            bad(f"{path}: variable tenant must be multi and includeAll")
        if (v.get("datasource") or {}).get("uid") != "prometheus":
            bad(f"{path}: variable {name} does not use data source uid prometheus")
    ids = set()
    panels = d.get("panels", [])
    panels = panels + [c for p in panels for c in p.get("panels", [])]  # in collapsed rows
    for p in panels:
        title = p.get("title")
        where = f"{path} panel {p.get('id')} {title!r}"
        for key in ("id", "type", "title", "gridPos"):
            if key not in p:
                bad(f"{where}: no {key}")
        if p.get("type") in NO_QUERIES:
            if p.get("targets"):
                bad(f"{where}: a {p['type']} panel takes no targets")
            if p.get("id") in ids:
                bad(f"{where}: duplicate panel id")
            ids.add(p.get("id"))
            continue
        if p.get("id") in ids:
            bad(f"{where}: duplicate panel id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")):
            bad(f"{where}: gridPos needs integer h, w, x, y")
        elif g["x"] + g["w"] > 24:
            bad(f"{where}: gridPos wider than 24 columns")
        if (p.get("datasource") or {}).get("uid") != "prometheus":
            bad(f"{where}: data source is not uid prometheus")
        targets = p.get("targets") or []
        if not targets:
            bad(f"{where}: no targets")
        refs = set()
        for t in targets:
            if not t.get("expr") or not t.get("refId"):
                bad(f"{where}: every target needs expr and refId")
                continue
            if t["refId"] in refs:
                bad(f"{where}: duplicate refId {t['refId']}")
            refs.add(t["refId"])
            if (t.get("datasource") or {}).get("uid", "prometheus") != "prometheus":
                bad(f"{where} {t['refId']}: data source is not uid prometheus")
            check_selectors(f"{where} {t['refId']}", t["expr"])
    # Annotations: Grafana's built-in one, and Prometheus queries marking events.
    names = set()
    for a in d.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        where = f"{path} annotation {a.get('name')!r}"
        if not a.get("name") or a["name"] in names:
            bad(f"{where}: needs a unique name")
        names.add(a.get("name"))
        if (a.get("datasource") or {}).get("uid") != "prometheus":
            bad(f"{where}: data source is not uid prometheus")
        if not a.get("expr"):
            bad(f"{where}: no expr")
            continue
        check_selectors(where, a["expr"])
    for name in sorted(set(ANNOTATIONS) - names):
        bad(f"{path}: no annotation {name!r} (every dashboard marks {', '.join(ANNOTATIONS)})")
    print(f"{path}: {len(panels)} panels, {len(names)} annotations, uid {uid}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
}
step "dashboards: structure, variables, data source, tenant/instance filters, annotations" dashboards

# Layout: panels that overlap, exceed the 24-column grid or repeat an id (dashboards_check.py).
step "dashboards: layout (no overlapping panels, 24 columns, unique panel ids)" \
    python3 dashboards_check.py

provisioning() {
    grep -Eq '^\s+uid:\s*prometheus\s*$' grafana/provisioning/datasources/prometheus.yml || {
        echo "data source provisioning must set uid: prometheus"
        return 1
    }
    grep -Eq '^\s+path:\s*/var/lib/grafana/dashboards/eaglerank\s*$' grafana/provisioning/dashboards/eaglerank.yml || {
        echo "dashboard provider must point at /var/lib/grafana/dashboards/eaglerank"
        return 1
    }
    if python3 -c "import yaml" 2>/dev/null; then
        python3 -c "
import yaml
ds = yaml.safe_load(open('grafana/provisioning/datasources/prometheus.yml'))
assert ds['apiVersion'] == 1 and ds['datasources'][0]['uid'] == 'prometheus'
pr = yaml.safe_load(open('grafana/provisioning/dashboards/eaglerank.yml'))
assert pr['apiVersion'] == 1 and pr['providers'][0]['type'] == 'file'
print('provisioning files parse')"
    fi
}
step "grafana provisioning: data source uid, dashboard path" provisioning

dashboard_promql() {
    python3 queries.py --promtool-rules "$TMP/dashboard-queries.yml" >/dev/null &&
        promtool check rules "$TMP/dashboard-queries.yml"
}
step "dashboard, variable and annotation queries are valid PromQL (promtool)" dashboard_promql

# ---------------------------------------------------------------------------- compose

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f docker-compose.yml config -q
    elif command -v docker-compose >/dev/null; then
        docker-compose -f docker-compose.yml config -q
    elif python3 -c "import yaml" 2>/dev/null; then
        python3 -c "
import yaml
c = yaml.safe_load(open('docker-compose.yml'))
assert set(c['services']) == {'prometheus', 'alertmanager', 'grafana'}, c['services'].keys()
print('docker compose not installed: parsed with PyYAML only')"
    else
        echo "neither docker compose nor PyYAML: skipped"
    fi
}
step "docker-compose.yml" compose

# ---------------------------------------------------------------------------- metrics (info)

# Not a failure: metrics the rules and dashboards use that src/ does not (yet) define.
if [[ -d ../src ]]; then
    python3 - "$TMP/queries.json" <<'EOF'
import json, pathlib, re, sys
metrics = json.load(open(sys.argv[1]))["metrics"]
src = "".join(p.read_text() for p in pathlib.Path("../src").rglob("*.rs"))
missing = []
for m in metrics:
    if m.startswith(("process_", "eaglerank_http_")):
        continue  # prometheus::process_collector, actix-web-prom
    family = re.sub(r"_(bucket|sum|count)$", "", m)
    if f'"{m}"' not in src and f'"{family}"' not in src:
        missing.append(m)
print(f"info  {len(metrics)} metrics referenced by rules and dashboards", end="")
print(f"; not defined in src/: {', '.join(missing)}" if missing else "; all defined in src/")
EOF
fi

echo
if ((${#failures[@]})); then
    echo "${#failures[@]} check(s) FAILED, $passed passed:"
    printf '  - %s\n' "${failures[@]}"
    exit 1
fi
echo "all $passed checks passed"
