#!/usr/bin/env python3
"""Prints, as JSON, every PromQL expression of the EagleRank monitoring (Grafana dashboards,
their template variables and annotations, recording and alerting rules) and every metric they
reference.

    python3 monitoring/queries.py                       # JSON on stdout
    python3 monitoring/queries.py --promtool-rules F    # also write the dashboard queries (and
                                                        # annotations) as a rule file, for
                                                        # `promtool check rules F`

Output:
    {
      "queries": [                       # dashboards, template variables, recording rules
        {"source": "dashboard", "dashboard": uid, "panel": title, "ref_id": "A", "expr": ...},
        {"source": "variable", "dashboard": uid, "variable": "tenant",
         "query": "label_values(...)", "expr": <the series selector it lists values of>},
        {"source": "recording_rule", "file": "recording.yml", "group": ..., "record": ...,
         "expr": ...},
        ...
      ],
      "alerts": [{"file", "group", "alert", "severity", "expr"}, ...],  # usually return nothing
      "annotations": [{"dashboard", "annotation", "expr"}, ...],  # events (deploys, restarts,
                                    # reloads): usually return nothing either
      "metrics": [...],             # exported by EagleRank: referenced anywhere, sorted
      "prometheus_metrics": [...],  # made by Prometheus itself when scraping (up, scrape_*)
      "external_metrics": [...],    # from other exporters, optional (kube-state-metrics)
      "recorded_metrics": [...]     # defined by the recording rules
    }

Dashboard annotations (Prometheus queries in a dashboard's `annotations.list`) are listed apart,
like the alerts: they mark events (a deploy, a process start, a model reload) and return nothing
the rest of the time, so "queries" (which a test expects data from) leaves them out; their metrics
are in "metrics" all the same.

Dashboard expressions have their Grafana variables substituted: $tenant, $instance and
$experiment by `.*` (the "All" value), $window (the Experiments dashboard's window) by 1h,
$__rate_interval and $__interval by 1m. Metric names are the identifiers of
an expression that are not functions, aggregations, keywords, label names (inside {}, by (),
without (), on (), ignoring (), group_left (), group_right ()), durations or strings; names
defined by the recording rules are listed apart.

Standard library only: the rule files are read as text, which works because they keep to a
simple format (one top-level `groups:`; `expr:` a one-line plain scalar or a `|` block).
"""

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "prometheus" / "rules"
DASHBOARDS_DIR = HERE / "grafana" / "dashboards"

SUBSTITUTIONS = {
    "tenant": ".*",
    "instance": ".*",
    "experiment": ".*",
    "window": "1h",
    "__rate_interval": "1m",
    "__interval": "1m",
}

# PromQL functions (Prometheus 2.x and 3.x) and aggregation operators: followed by "(".
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan",
    "tanh", "time", "timestamp", "vector", "year",
}
AGGREGATIONS = {
    "avg", "bottomk", "count", "count_values", "group", "limit_ratio", "limitk", "max", "min",
    "quantile", "stddev", "stdvar", "sum", "topk",
}
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan", "start", "end",
}
# Series Prometheus adds to every scrape; not in EagleRank's /metrics.
PROMETHEUS_METRICS = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added",
}
# Series of other exporters that a rule uses when they exist, with a fallback otherwise
# (EagleRankCpuHigh: the container's CPU limit from kube-state-metrics); not in EagleRank's
# /metrics either.
EXTERNAL_METRICS = {"kube_pod_container_resource_limits"}

IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


class ParseError(Exception):
    pass


def metric_names(expr):
    """The metric names an expression selects."""
    s = STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges, subqueries
    s = LABEL_LIST.sub(" ", s)  # grouping and matching label lists
    names = set()
    for m in IDENTIFIER.finditer(s):
        name = m.group(1)
        if re.match(r"\s*\(", s[m.end():]):
            continue  # a function call or an aggregation
        if name in FUNCTIONS or name in AGGREGATIONS or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def substitute(expr, where):
    def replace(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in SUBSTITUTIONS:
            raise ParseError(f"{where}: unknown Grafana variable ${name} in {expr!r}")
        return SUBSTITUTIONS[name]

    return VARIABLE.sub(replace, expr)


# ---------------------------------------------------------------------------- rule files


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _scalar(value, where):
    value = value.strip()
    if value.startswith('"'):
        return json.loads(value)
    if value.startswith("'"):
        if not value.endswith("'"):
            raise ParseError(f"{where}: unterminated quoted scalar")
        return value[1:-1].replace("''", "'")
    return re.sub(r"\s+#.*$", "", value)


def parse_rule_file(path):
    """[{group, record|alert, severity, expr}] of a rule file, read as text."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rules, group, rule = [], None, None
    i = 0
    while i < len(lines):
        line = lines[i]
        where = f"{path.name}:{i + 1}"
        stripped = line.strip()
        m = re.match(r"-\s+name:\s*(.+)$", stripped)
        if m and _indent(line) == 2:
            group, rule = _scalar(m.group(1), where), None
        m = re.match(r"-\s+(record|alert):\s*(.+)$", stripped)
        if m:
            if group is None:
                raise ParseError(f"{where}: rule outside a group")
            rule = {"group": group, m.group(1): _scalar(m.group(2), where)}
            rules.append(rule)
        m = re.match(r"severity:\s*(.+)$", stripped)
        if m and rule is not None and "alert" in rule:
            rule["severity"] = _scalar(m.group(1), where)
        m = re.match(r"expr:\s*(.*)$", stripped)
        if m:
            if rule is None:
                raise ParseError(f"{where}: expr outside a rule")
            value = m.group(1).strip()
            if value in ("|", "|-", "|+", ">", ">-", ">+"):
                base = _indent(line)
                block = []
                while i + 1 < len(lines) and (
                    not lines[i + 1].strip() or _indent(lines[i + 1]) > base
                ):
                    i += 1
                    block.append(lines[i])
                while block and not block[-1].strip():
                    block.pop()
                if not block:
                    raise ParseError(f"{where}: empty expr block")
                cut = min(_indent(b) for b in block if b.strip())
                sep = "\n" if value.startswith("|") else " "
                rule["expr"] = sep.join(b[cut:] for b in block)
            elif value:
                rule["expr"] = _scalar(value, where)
            else:
                raise ParseError(f"{where}: expr must be a one-line scalar or a | block")
        i += 1
    for r in rules:
        if "expr" not in r:
            raise ParseError(f"{path.name}: rule {r.get('record') or r.get('alert')} has no expr")
    return rules


# ---------------------------------------------------------------------------- dashboards


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def dashboard_queries(path):
    dash = json.loads(path.read_text(encoding="utf-8"))
    uid = dash.get("uid", path.stem)
    queries = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        query = query or var.get("definition", "")
        where = f"{path.name} variable {var.get('name')}"
        m = re.match(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", query, re.S)
        q = re.match(r"^\s*query_result\((.*)\)\s*$", query, re.S)
        if m:
            selector = m.group(1)
        elif q:
            selector = q.group(1)
        else:
            continue  # label_values(label), metrics(...), label_names(): no series selector
        queries.append(
            {
                "source": "variable",
                "dashboard": uid,
                "variable": var.get("name"),
                "query": query,
                "expr": substitute(selector.strip(), where),
            }
        )
    for panel in walk_panels(dash.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr or target.get("hide"):
                continue
            where = f"{path.name} panel {panel.get('title')!r} {target.get('refId')}"
            queries.append(
                {
                    "source": "dashboard",
                    "dashboard": uid,
                    "panel": panel.get("title"),
                    "ref_id": target.get("refId"),
                    "expr": substitute(expr, where),
                }
            )
    return queries


def dashboard_annotations(path):
    """The Prometheus queries of a dashboard's annotations (Grafana's built-in one has none)."""
    dash = json.loads(path.read_text(encoding="utf-8"))
    uid = dash.get("uid", path.stem)
    annotations = []
    for a in dash.get("annotations", {}).get("list", []):
        # Grafana reads `expr` (older dashboards) or `target.expr` (as it saves them since 10).
        expr = a.get("expr") or (a.get("target") or {}).get("expr")
        if a.get("builtIn") or not expr:
            continue
        where = f"{path.name} annotation {a.get('name')!r}"
        annotations.append(
            {"dashboard": uid, "annotation": a.get("name"), "expr": substitute(expr, where)}
        )
    return annotations


# ---------------------------------------------------------------------------- output


def collect():
    queries, alerts, annotations = [], [], []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        queries.extend(dashboard_queries(path))
        annotations.extend(dashboard_annotations(path))
    for path in sorted(RULES_DIR.glob("*.yml")):
        for rule in parse_rule_file(path):
            if "record" in rule:
                queries.append(
                    {
                        "source": "recording_rule",
                        "file": path.name,
                        "group": rule["group"],
                        "record": rule["record"],
                        "expr": rule["expr"],
                    }
                )
            else:
                alerts.append(
                    {
                        "file": path.name,
                        "group": rule["group"],
                        "alert": rule["alert"],
                        "severity": rule.get("severity"),
                        "expr": rule["expr"],
                    }
                )
    recorded = {q["record"] for q in queries if q["source"] == "recording_rule"}
    referenced = set()
    for item in queries + alerts + annotations:
        referenced |= metric_names(item["expr"])
    return {
        "queries": queries,
        "alerts": alerts,
        "annotations": annotations,
        "metrics": sorted(referenced - recorded - PROMETHEUS_METRICS - EXTERNAL_METRICS),
        "prometheus_metrics": sorted(referenced & PROMETHEUS_METRICS),
        "external_metrics": sorted(referenced & EXTERNAL_METRICS),
        "recorded_metrics": sorted(recorded),
    }


def promtool_rules(queries, annotations=()):
    """A rule file with every dashboard, variable and annotation query as a recording rule."""
    lines = ["groups:", "  - name: dashboard-queries", "    rules:"]
    n = 0
    for q in list(queries) + list(annotations):
        if q.get("source") == "recording_rule":
            continue
        n += 1
        if "annotation" in q:
            what = f"annotation {q['annotation']}"
        else:
            what = q.get("panel") or f"variable {q.get('variable')}"
        lines.append(f"      # {q['dashboard']}: {what}")
        lines.append(f"      - record: dashboard:query_{n}:check")
        lines.append("        expr: |")
        lines.extend("          " + line for line in q["expr"].splitlines())
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--promtool-rules",
        metavar="FILE",
        help="also write the dashboard queries and annotations as a rule file for `promtool check "
        "rules`",
    )
    args = parser.parse_args()
    try:
        result = collect()
    except (ParseError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.promtool_rules:
        Path(args.promtool_rules).write_text(
            promtool_rules(result["queries"], result["annotations"]), encoding="utf-8"
        )
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
