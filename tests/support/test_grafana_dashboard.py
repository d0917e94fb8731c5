#!/usr/bin/env python3
"""Checks infra/grafana/logferry.json: a well-formed Grafana dashboard model whose queries are
valid PromQL over logferry's own metrics.

- The model: title, uid, schemaVersion, a `datasource` variable of type `datasource` for
  Prometheus, every panel and target using `${datasource}`, unique panel ids, panels inside the
  24-column grid.
- Every target's `expr` parses with promql-parser (the PromQL parser of GreptimeDB, a Rust crate
  with Python bindings, independent of our code), and every metric it selects is a `logferry_`
  metric. That the metrics exist in a running logferry is checked by tests/operations.rs.

Needs: python with `promql-parser` (tests/support/requirements.txt; scripts/setup installs it).
Prints `PASS`/`FAIL` per check and a final `N passed, N failed` line; exits 1 on any failure.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "logferry.json"
DATASOURCE = "${datasource}"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(model: dict):
    for panel in model["panels"]:
        yield panel
        yield from panel.get("panels", [])


def check_model() -> None:
    model = load()
    assert model["title"] == "logferry", model["title"]
    assert model["uid"] == "logferry"
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    variables = {v["name"]: v for v in model["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    for name, var in variables.items():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == DATASOURCE, name
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in panels(model):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (p["title"], g)
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DATASOURCE, p["title"]


def metric_names(expr) -> set[str]:
    import promql_parser

    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        return True

    promql_parser.walk(expr, pre_visit=visit)
    return names


def check_queries() -> None:
    import promql_parser

    model = load()
    used: set[str] = set()
    for p in panels(model):
        for t in p.get("targets", []):
            # Grafana substitutes its interval variables before the query reaches Prometheus.
            text = t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
            try:
                expr = promql_parser.parse(text)
            except Exception as e:  # noqa: BLE001 - name the panel
                raise AssertionError(f"panel {p['title']!r}: {t['expr']!r}: {e}") from e
            names = metric_names(expr)
            assert names, f"panel {p['title']!r}: no metric in {t['expr']!r}"
            for name in names:
                assert name.startswith("logferry_"), (p["title"], name)
            used |= names
    # The panels the issue asks for are there.
    for wanted in [
        "logferry_records_in_total",
        "logferry_records_out_total",
        "logferry_dropped_records_total",
        "logferry_retries_total",
        "logferry_request_duration_seconds_bucket",
        "logferry_buffer_fill_ratio",
        "logferry_buffer_oldest_unacked_seconds",
        "logferry_token_refreshes_total",
        "logferry_auth_failures_total",
        "logferry_healthy",
    ]:
        assert wanted in used, f"no panel uses {wanted}"


def main() -> int:
    passed = failed = 0
    for name, fn in [("dashboard_model", check_model), ("dashboard_queries", check_queries)]:
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"PASS {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
