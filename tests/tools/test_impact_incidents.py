"""`report` shows the incidents: a section in CSV and JSON, a band per incident on the HTML
timeline; read from incident records or derived from the alerts."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.commands.cli import main
from streams.tools import impact
from streams.tools.samples import INCIDENT


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("scan")
    alerts, incidents = out / "alerts.jsonl", out / "incidents.jsonl"
    assert main(["scan", str(INCIDENT), "--alerts", str(alerts),
                 "--incidents", str(incidents)]) == 0
    return alerts, incidents


def _report(tmp_path: Path, alerts: Path, fmt: str, *extra: str) -> str:
    out = tmp_path / f"report.{fmt}"
    assert main(["report", "--alerts", str(alerts), "--format", fmt, "--output", str(out),
                 *extra]) == 0
    return out.read_text()


def _records(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in orjson.loads(line).items() if k != "detected_at"}
            for line in path.read_bytes().splitlines()]


def test_json_has_the_incidents_given(scanned: tuple[Path, Path], tmp_path: Path) -> None:
    alerts, incidents = scanned
    report = json.loads(_report(tmp_path, alerts, "json", "--incidents", str(incidents)))
    assert report["incidents"] == [orjson.loads(line)
                                   for line in incidents.read_bytes().splitlines()]


def test_json_derives_them_from_the_alerts_as_of_the_latest_alert(
        scanned: tuple[Path, Path], tmp_path: Path) -> None:
    alerts, incidents = scanned
    [derived] = json.loads(_report(tmp_path, alerts, "json"))["incidents"]
    [given] = _records(incidents)
    # the input ran on past the quiet period, the alerts do not: open here, resolved there
    assert (given["status"], derived["status"]) == ("resolved", "open")
    same = ("incident_id", "carrier", "channel", "started_at", "ended_at", "alerts", "labels",
            "sellers", "orders", "by_rule", "refunds_owed", "windows", "sample")
    assert {k: derived[k] for k in same} == {k: given[k] for k in same}


def test_csv_has_an_incident_section_after_the_sellers(scanned: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    alerts, incidents = scanned
    text = _report(tmp_path, alerts, "csv", "--incidents", str(incidents))
    sellers_part, incident_part = text.split("\n\n")
    assert sellers_part.startswith("seller_id,")
    [row] = list(csv.DictReader(io.StringIO(incident_part)))
    [given] = _records(incidents)
    assert (row["incident_id"], row["carrier"], row["channel"], row["status"]) == (
        given["incident_id"], "usps", "buy_shipping", "resolved")
    assert int(row["alerts"]) == given["alerts"] and int(row["sellers"]) == given["sellers"]
    assert row["refunds_owed"] == f"USD {given['refunds_owed'][0]['amount']}"


def test_html_draws_a_band_per_incident(scanned: tuple[Path, Path], tmp_path: Path) -> None:
    alerts, incidents = scanned
    page = _report(tmp_path, alerts, "html", "--incidents", str(incidents))
    assert page.count('<rect class="incident"') == 1
    assert "incident usps/buy_shipping resolved: 2025-02-14T15:00:00Z" in page
    assert "<h2>Incidents (1)</h2>" in page
    # no incident in the window asked for: no band, and the page says so
    quiet = _report(tmp_path, alerts, "html", "--incidents", str(incidents),
                    "--until", "2025-02-01")
    assert '<rect class="incident"' not in quiet and "No incidents" in quiet


def test_the_window_selects_incidents_whose_span_meets_it(scanned: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    alerts, incidents = scanned

    def count(*window: str) -> int:
        report = _report(tmp_path, alerts, "json", "--incidents", str(incidents), *window)
        return len(json.loads(report)["incidents"])

    assert count("--from", "2025-02-14T20:59:59Z") == 1  # the span ends at 21:00
    assert count("--from", "2025-02-14T21:00:00Z") == 0
    assert count("--until", "2025-02-14T15:00:01Z") == 1  # it starts at 15:00
    assert count("--until", "2025-02-14T15:00:00Z") == 0


def test_read_incidents_keeps_the_highest_revision_and_drops_retracted() -> None:
    base = {"carrier": "usps", "channel": "veeqo", "started_at": "2025-02-24T10:00:00Z",
            "ended_at": "2025-02-24T11:00:00Z"}
    lines = [orjson.dumps(r) for r in (
        {**base, "incident_id": "a", "revision": 1, "status": "open", "alerts": 10},
        {**base, "incident_id": "a", "revision": 3, "status": "resolved", "alerts": 12},
        {**base, "incident_id": "a", "revision": 2, "status": "open", "alerts": 11},
        {**base, "incident_id": "b", "revision": 1, "status": "open", "alerts": 10},
        {**base, "incident_id": "b", "revision": 2, "status": "retracted", "alerts": 10},
    )]
    [kept] = impact.read_incidents(lines)
    assert (kept["incident_id"], kept["revision"], kept["alerts"]) == ("a", 3, 12)
    with pytest.raises(impact.AlertsError, match="not an incident"):
        impact.read_incidents([b'{"rule": "x"}'])
