#!/usr/bin/env python3
"""Checks the layout of the Grafana dashboards (monitoring/grafana/dashboards/*.json): the panels
of a dashboard must not overlap, must fit in Grafana's 24-column grid, and have unique ids.

    python3 monitoring/dashboards_check.py [dashboard.json ...]   # default: every dashboard

Rules (Grafana's grid: 24 columns, rows of 30 px; gridPos x, y, w, h in grid units):
  - every panel, nested ones included, has an integer gridPos with x >= 0, y >= 0, w >= 1,
    h >= 1 and x + w <= 24;
  - panel ids are integers, unique within the dashboard (nested panels included);
  - the panels laid out on the dashboard (the top-level list: panels, row headers, and the
    panels of expanded rows, which Grafana keeps at the top level) do not overlap;
  - a row header (type "row") spans the full width (x 0, w 24); a collapsed row keeps its panels
    in its own "panels" list: those do not overlap one another either (Grafana lays them out
    again, shifted under the header, when the row is expanded); an expanded row holds none;
  - only rows nest panels.

Standard library only. Prints one line per dashboard and every problem; exits 1 if any.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "grafana" / "dashboards"
GRID_COLUMNS = 24


def _rect(panel):
    g = panel.get("gridPos") or {}
    return g.get("x"), g.get("y"), g.get("w"), g.get("h")


def _name(panel):
    return f"panel {panel.get('id')} {panel.get('title')!r}"


def overlap(a, b):
    """Whether two gridPos rectangles (x, y, w, h) share any cell."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def _check_geometry(panel, where, problems):
    """True when the panel's gridPos is well-formed and inside the grid."""
    rect = _rect(panel)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in rect):
        problems.append(
            f"{where}: {_name(panel)}: gridPos needs integer x, y, w, h, has {panel.get('gridPos')}"
        )
        return False
    x, y, w, h = rect
    ok = True
    if x < 0 or y < 0 or w < 1 or h < 1:
        problems.append(
            f"{where}: {_name(panel)}: gridPos {panel['gridPos']} out of range "
            "(x, y >= 0; w, h >= 1)"
        )
        ok = False
    if x + w > GRID_COLUMNS:
        problems.append(
            f"{where}: {_name(panel)}: x {x} + w {w} = {x + w} exceeds the {GRID_COLUMNS}-column "
            "grid"
        )
        ok = False
    return ok


def _check_overlaps(panels, where, problems):
    placed = []
    for p in panels:
        for q in placed:
            if overlap(_rect(p), _rect(q)):
                problems.append(
                    f"{where}: {_name(q)} {q['gridPos']} and {_name(p)} {p['gridPos']} overlap"
                )
        placed.append(p)


def check_dashboard(dash, where):
    """The layout problems of a parsed dashboard, as a list of messages."""
    problems = []
    top = dash.get("panels")
    if not isinstance(top, list):
        return [f"{where}: no panels list"]
    ids = {}
    laid_out = []  # top-level panels with a valid gridPos
    for p in top:
        if not isinstance(p, dict):
            problems.append(f"{where}: a panel is not an object")
            continue
        children = p.get("panels") or []
        if p.get("type") == "row":
            g = p.get("gridPos") or {}
            if g.get("x") != 0 or g.get("w") != GRID_COLUMNS:
                problems.append(
                    f"{where}: row {_name(p)} must span the grid (x 0, w {GRID_COLUMNS})"
                )
            if children and not p.get("collapsed"):
                problems.append(
                    f"{where}: expanded row {_name(p)} holds panels: an expanded row's panels "
                    "belong to the top-level list (or set collapsed: true)"
                )
        elif children:
            problems.append(f"{where}: {_name(p)} nests panels, but only rows can")
        if _check_geometry(p, where, problems):
            laid_out.append(p)
        nested = []
        for c in children:
            if not isinstance(c, dict):
                problems.append(f"{where}: a panel of {_name(p)} is not an object")
                continue
            if c.get("type") == "row":
                problems.append(f"{where}: row {_name(c)} inside {_name(p)}")
            if c.get("panels"):
                problems.append(f"{where}: {_name(c)} inside {_name(p)} nests panels")
            if _check_geometry(c, f"{where} ({_name(p)})", problems):
                nested.append(c)
            ids.setdefault(c.get("id"), []).append(c)
        _check_overlaps(nested, f"{where} (collapsed {_name(p)})", problems)
        ids.setdefault(p.get("id"), []).append(p)
    _check_overlaps(laid_out, where, problems)
    for pid, panels in ids.items():
        if not isinstance(pid, int) or isinstance(pid, bool):
            for p in panels:
                problems.append(f"{where}: {_name(p)}: id must be an integer")
        elif len(panels) > 1:
            titles = ", ".join(repr(p.get("title")) for p in panels)
            problems.append(f"{where}: panel id {pid} used {len(panels)} times ({titles})")
    return problems


def _self_test():
    """The check must catch what it is for (a broken check would pass every dashboard)."""

    def panel(pid, x, y, w, h, **extra):
        return {"id": pid, "title": f"p{pid}", "gridPos": {"x": x, "y": y, "w": w, "h": h}, **extra}

    def row(pid, y, collapsed=False, panels=()):
        return panel(pid, 0, y, 24, 1, type="row", collapsed=collapsed, panels=list(panels))

    cases = [
        ("side by side", [panel(1, 0, 0, 12, 8), panel(2, 12, 0, 12, 8)], True),
        ("stacked", [panel(1, 0, 0, 12, 8), panel(2, 0, 8, 12, 8)], True),
        ("overlap", [panel(1, 12, 16, 12, 8), panel(2, 12, 20, 12, 8)], False),
        ("contained", [panel(1, 0, 0, 24, 8), panel(2, 6, 2, 4, 2)], False),
        ("too wide", [panel(1, 18, 0, 12, 8)], False),
        ("duplicate id", [panel(1, 0, 0, 12, 8), panel(1, 12, 0, 12, 8)], False),
        ("row over a panel", [panel(1, 0, 0, 12, 8), row(2, 4)], False),
        (
            "collapsed row: panels under it, shifted on expansion",
            [row(1, 0, True, [panel(2, 0, 1, 12, 8), panel(3, 12, 1, 12, 8)]), row(4, 1)],
            True,
        ),
        (
            "collapsed row: overlapping panels",
            [row(1, 0, True, [panel(2, 0, 1, 12, 8), panel(3, 6, 1, 12, 8)])],
            False,
        ),
        (
            "collapsed row: duplicate id",
            [row(1, 0, True, [panel(2, 0, 1, 12, 8)]), panel(2, 0, 1, 12, 8)],
            False,
        ),
        ("expanded row holding panels", [row(1, 0, False, [panel(2, 0, 1, 12, 8)])], False),
        ("narrow row", [panel(1, 0, 0, 12, 1, type="row")], False),
        ("zero height", [panel(1, 0, 0, 12, 0)], False),
    ]
    failed = []
    for what, panels, valid in cases:
        if (not check_dashboard({"panels": panels}, what)) != valid:
            failed.append(f"self-test '{what}': expected {'valid' if valid else 'a problem'}")
    return failed


def main(argv):
    paths = [Path(a) for a in argv] or sorted(DASHBOARDS_DIR.glob("*.json"))
    problems = _self_test()
    if not paths:
        problems.append(f"no dashboards in {DASHBOARDS_DIR}")
    for path in paths:
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            problems.append(f"{path.name}: {e}")
            continue
        found = check_dashboard(dash, path.name)
        problems.extend(found)
        top = [p for p in dash.get("panels") or [] if isinstance(p, dict)]
        count = sum(1 + len(p.get("panels") or []) for p in top)
        print(f"{path.name}: {count} panels, {'ok' if not found else f'{len(found)} problem(s)'}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
