"""deploy/grafana-dashboard.json: every panel queries metrics that GET /metrics really exports,
grouped and filtered by labels those metrics really have."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import LiveApp

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
# What a family's samples are called in the text format, by its type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "untyped": ("",),
}
METRIC = re.compile(r"\b(livecode_[a-zA-Z0-9_:]*)")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def exported(live: LiveApp) -> tuple[set[str], dict[str, set[str]]]:
    """Every sample name /metrics can carry (a family is described even before it has samples),
    and the labels of each, once every source has something to report: a request served, a
    worker's heartbeat with its compile cache, a finished execution recorded as a worker does."""
    from livecode.worker.metrics import record_outcome
    from tests.support.inprocess import finish_like_a_worker

    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid)
    final = live.client.get(f"/api/v1/executions/{eid}").get_json()
    record_outcome(live.rt, "COMPLETED", final)
    cache = {"bytes": 1, "max_bytes": 2, "entries": 1, "evictions": 0}
    live.rt.registry.beat("w1@test", {"active": 0, "cpu_seconds": 1.0, "rss_bytes": 1, "compile_cache": cache}, 60)
    r = live.client.get("/metrics")
    assert r.status_code == 200
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return [p for p in out if p.get("type") != "row"]


def test_every_panel_queries_exported_metrics(live: LiveApp) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names, labels = exported(live)
    assert labels["livecode_executions_total"] == {"status", "language"}
    assert labels["livecode_compile_cache_bytes"] == {"worker"}
    assert {"livecode_executions_total", "livecode_queue_wait_seconds_bucket", "livecode_workers_alive"} <= names
    used = set()
    assert len(panels(dashboard)) >= 10
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = set(METRIC.findall(target["expr"]))
            assert found, f"{panel['title']}: {target['expr']} names no LiveCode metric"
            unknown = found - names
            assert not unknown, f"{panel['title']}: {sorted(unknown)} is not exported by /metrics"
            used |= found
            # `by (...)` and `{label=...}` name labels of these metrics (or a histogram's `le`);
            # `without (...)` names Prometheus' own target labels (instance, pod), not checked.
            have = set().union(*(labels.get(m, set()) for m in found)) | {"le"}
            named = {name.strip() for group in GROUPING.findall(target["expr"]) for name in group.split(",")}
            named |= set(MATCHER.findall(target["expr"]))
            assert named <= have, f"{panel['title']}: labels {sorted(named - have)} not on {sorted(found)}"
    # Every LiveCode family has a panel: a metric added later without one shows up here.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in names if n.startswith("livecode_")}
    covered = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in used}
    assert families <= covered, f"metrics without a panel: {sorted(families - covered)}"


def test_dashboard_is_importable_as_is() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    # Imported through Grafana's "Import dashboard": the data source is asked for on import.
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
