"""The response in the offline mode: `scan --incidents/--actions` on the bundled sample, on
simulated worlds against their ground truth (in memory, on disk, in input order), and the
watermark as the greatest event time of the whole input."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streams.commands.cli import main
from streams.commands.simulate import write_files
from streams.core import schema
from streams.tools.samples import INCIDENT, carrier_scan, label_purchased, ts, usps_number
from streams.tools.simulation import DEFAULT_START, Params, simulate

VALIDATORS = {name: jsonschema.Draft202012Validator(schema.load(name))
              for name in ("incident", "action")}


def _read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _scan(tmp_path: Path, inputs: list[str], *extra: str) -> tuple[list[dict[str, Any]], ...]:
    alerts, incidents, actions = (tmp_path / n for n in ("a.jsonl", "i.jsonl", "x.jsonl"))
    assert main(["scan", *inputs, "--alerts", str(alerts), "--incidents", str(incidents),
                 "--actions", str(actions), *extra]) == 0
    found = _read(alerts), _read(incidents), _read(actions)
    for record in found[1]:
        VALIDATORS["incident"].validate(record)
    for record in found[2]:
        VALIDATORS["action"].validate(record)
    return found


def _bare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("detected_at", "kind")} for r in records]


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def test_the_sample_gives_one_usps_incident_for_the_reissuing_channel_and_none_elsewhere(
        tmp_path: Path) -> None:
    alerts, incidents, actions = _scan(tmp_path, [str(INCIDENT)])
    [incident] = incidents
    assert (incident["carrier"], incident["channel"], incident["status"]) == (
        "usps", "buy_shipping", "resolved")
    # recounted here from the alerts, plainly: critical reuse alerts by (carrier, channel)
    # and by hour of their label's purchase
    qualifying = []
    for a in alerts:
        label = next(lb for lb in a["labels"] if lb["label_id"] == a["label_id"])
        if a["rule"] in ("previously_used", "duplicate_tracking") and a["severity"] == "critical":
            qualifying.append((a["carrier"], label["channel"] or "",
                               _epoch(label["purchased_at"]), label["seller_id"], a))
    hours: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for carrier, channel, t, seller, _ in qualifying:
        hours[carrier, channel, t // 3600].append(seller)
    busy = {key for key, sellers in hours.items() if len(sellers) >= 10 and len(set(sellers)) >= 3}
    assert {(c, ch) for c, ch, _ in busy} == {("usps", "buy_shipping")}
    first, last = min(h for *_, h in busy), max(h for *_, h in busy)
    assert incident["started_at"] == ts(datetime.fromtimestamp(first * 3600, UTC))
    assert incident["ended_at"] == ts(datetime.fromtimestamp((last + 1) * 3600, UTC))
    inside = [q for q in qualifying if q[:2] == ("usps", "buy_shipping")
              and first * 3600 <= q[2] < (last + 1) * 3600]
    assert incident["alerts"] == len(inside) > 0
    assert incident["sellers"] == len({q[3] for q in inside})
    # every label of the incident has its four actions due, linked to the incident
    linked = {a["label_id"] for a in actions if a["incident_id"] == incident["incident_id"]}
    assert linked == {q[4]["label_id"] for q in inside}
    open_ids = {a["alert_id"] for a in alerts}
    assert all(set(a["alert_ids"]) <= open_ids for a in actions)


def test_the_sample_is_its_simulators_ground_truth(tmp_path: Path) -> None:
    from streams.tools.samples import SAMPLE_COMMAND

    assert main([*SAMPLE_COMMAND.split(), "--out", str(tmp_path / "sim")]) == 0
    truth = _read(tmp_path / "sim" / "ground_truth.jsonl")
    _, incidents, actions = _scan(tmp_path, [str(INCIDENT)])
    assert _bare(incidents) == _bare([g for g in truth if g["kind"] == "incident"])
    assert _bare(actions) == _bare([g for g in truth if g["kind"] == "action"])


WORLD = Params(seed=41, labels=1200, days=75, sellers=60,
               incident_start=DEFAULT_START + timedelta(days=70, hours=14), incident_days=0.5,
               incident_share=1.0, incident_channel="veeqo", incident_labels=150,
               malformed=3)  # fmt: skip


@pytest.mark.parametrize("mode", [[], ["--on-disk"], ["--order", "input"]],
                         ids=["in-memory", "on-disk", "input-order"])
def test_scan_gives_the_simulated_worlds_expected_incidents_and_actions(
        tmp_path: Path, mode: list[str]) -> None:
    world = simulate(WORLD)
    write_files(world, tmp_path / "sim")
    truth = _read(tmp_path / "sim" / "ground_truth.jsonl")
    expected = [g for g in truth if g["kind"] == "incident"]
    assert [(g["carrier"], g["channel"]) for g in expected] == [("usps", "veeqo")]
    inputs = [str(tmp_path / "sim" / n) for n in ("scans.jsonl", "labels.jsonl")]
    _, incidents, actions = _scan(tmp_path, inputs, *mode)
    assert _bare(incidents) == _bare(expected)
    assert _bare(actions) == _bare([g for g in truth if g["kind"] == "action"])


def _reissued(count: int, sellers: int, start: datetime) -> list[dict[str, Any]]:
    """`count` labels one minute apart from `start`, each on a number the carrier accepted
    30 days earlier: `count` previously_used alerts, critical."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        number = usps_number(rng)
        out.append(carrier_scan(f"s{i}", number, "accepted", start - timedelta(days=30),
                                postal_code="10001"))
        out.append(label_purchased(f"e{i}", f"l{i}", number, f"seller-{i % sellers}",
                                   start + timedelta(minutes=i)))
    return out


def _write(path: Path, messages: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return str(path)


def test_the_watermark_is_the_greatest_event_time_of_the_whole_input(tmp_path: Path) -> None:
    start = datetime(2025, 2, 24, 10, tzinfo=UTC)
    burst = _reissued(10, 3, start)
    _, [incident], _ = _scan(tmp_path, [_write(tmp_path / "in.jsonl", burst)])
    # the input ends at the last purchase (10:09): inside the quiet period, still open
    assert (incident["status"], incident["resolved_at"], incident["actions"]) == (
        "open", None, ["hold_label_sales"])
    assert (incident["started_at"], incident["ended_at"]) == ("2025-02-24T10:00:00Z",
                                                              "2025-02-24T11:00:00Z")
    # a scan of another number at 17:00 (ended_at + 6 h), in another file: resolved
    later = carrier_scan("late", usps_number(random.Random(9)), "in_transit",
                         start + timedelta(hours=7), postal_code="60601")
    _, [resolved], _ = _scan(tmp_path, [_write(tmp_path / "in.jsonl", burst),
                                        _write(tmp_path / "later.jsonl", [later])])
    assert (resolved["status"], resolved["resolved_at"], resolved["actions"]) == (
        "resolved", "2025-02-24T17:00:00Z", [])
    assert resolved["incident_id"] == incident["incident_id"]


def test_the_incident_settings_come_from_flags_over_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "in.jsonl", _reissued(10, 3, datetime(2025, 2, 24, 10, tzinfo=UTC)))
    assert len(_scan(tmp_path, [path])[1]) == 1
    assert _scan(tmp_path, [path, "--incident-min-alerts", "11"])[1] == []
    monkeypatch.setenv("TRACKING_VALIDATOR_INCIDENT_MIN_SELLERS", "4")
    assert _scan(tmp_path, [path])[1] == []
    assert len(_scan(tmp_path, [path, "--incident-min-sellers", "3"])[1]) == 1
    # 15-minute windows: 10:00-10:15 holds all ten
    [short] = _scan(tmp_path, [path, "--incident-min-sellers", "3", "--incident-window", "15m"])[1]
    assert short["ended_at"] == "2025-02-24T10:15:00Z"


def test_a_bad_incident_setting_is_a_usage_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "in.jsonl", [])
    assert main(["scan", path, "--incident-min-alerts", "0"]) == 2
    assert "incident_min_alerts" in capsys.readouterr().err
