"""`scan`: the detection core over JSON Lines files, no broker."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import orjson
import pytest

from streams.commands.cli import main

LABEL = {
    "type": "label.purchased",
    "schema_version": 1,
    "event_id": "e-1",
    "label_id": "L-1",
    "tracking_number": "1Z999AA10123456784",
    "carrier": "ups",
    "seller_id": "S-1",
    "order_id": "O-1",
    "ship_to": {"postal_code": "98101", "country": "US"},
    "purchased_at": "2025-03-01T10:00:00Z",
    "cost": {"amount": "9.10", "currency": "USD"},
}
SECOND = {
    **LABEL,
    "event_id": "e-2",
    "label_id": "L-2",
    "seller_id": "S-2",
    "order_id": "O-2",
    "tracking_number": "1z 999 aa1 01 2345 678 4",
    "purchased_at": "2025-03-02T10:00:00Z",
}
INVALID = {**LABEL, "event_id": "e-3", "label_id": "L-3", "tracking_number": "1Z999AA10123456785"}
ELSEWHERE = {"type": "carrier.scan", "schema_version": 1, "event_id": "e-4",
             "tracking_number": "1Z999AA10123456784", "carrier": "ups", "status": "delivered",
             "occurred_at": "2025-03-03T15:00:00-08:00",
             "location": {"postal_code": "10001", "country": "US"}}  # fmt: skip


def _jsonl(path: Path, *records: dict | bytes) -> Path:
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)
    )
    return path


def _read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _scan(tmp_path: Path, *files: str, extra: tuple[str, ...] = ()) -> tuple[list, list]:
    alerts, dead = tmp_path / "alerts.jsonl", tmp_path / "dead.jsonl"
    argv = ["scan", *files, "--alerts", str(alerts), "--dead-letters", str(dead), *extra]
    assert main(argv) == 0
    return _read(alerts), _read(dead)


def test_alerts_and_dead_letters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _jsonl(tmp_path / "labels.jsonl", LABEL, SECOND, b"", b"{oops", INVALID)
    scans = _jsonl(tmp_path / "scans.jsonl", b"[1]", ELSEWHERE)
    alerts, dead = _scan(tmp_path, str(scans), str(labels))
    # the scan (Mar 3) belongs to L-2 (latest label bought before it) and is off-destination
    assert sorted((a["rule"], a["label_id"], a["severity"]) for a in alerts) == [
        ("destination_mismatch", "L-2", "warning"),
        ("duplicate_tracking", "L-2", "critical"),
        ("invalid_tracking", "L-3", "warning"),
    ]
    assert all(a["tracking_number"] == "1Z999AA10123456784" or a["label_id"] == "L-3"
               for a in alerts)  # fmt: skip
    assert all(a["detected_at"].endswith("Z") for a in alerts)
    assert [(d["source_topic"], d["partition"], d["offset"], d["error"]["code"]) for d in dead] == [
        (str(scans), 0, 1, "not_an_object"),
        (str(labels), 0, 4, "invalid_json"),  # 1-based line numbers; the blank line counts
    ]
    assert base64.b64decode(dead[1]["value_b64"]) == b"{oops" and dead[1]["key_b64"] is None
    summary = capsys.readouterr().err
    assert "4 events, 3 alerts" in summary and "2 dead letters" in summary
    assert "events/s" in summary


def test_file_order_does_not_matter(tmp_path: Path) -> None:
    labels = _jsonl(tmp_path / "labels.jsonl", SECOND, LABEL, INVALID)
    scans = _jsonl(tmp_path / "scans.jsonl", ELSEWHERE, ELSEWHERE)  # a redelivery too
    one, _ = _scan(tmp_path, str(labels), str(scans))
    two, _ = _scan(tmp_path, str(scans), str(labels))
    ids = sorted(a["alert_id"] for a in one)
    assert len(ids) == 3 and ids == sorted(a["alert_id"] for a in two)


def test_stdin_and_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfdbinary) -> None:
    data = b"".join(orjson.dumps(r) + b"\n" for r in (LABEL, SECOND, INVALID))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["scan", "-"]) == 0
    out = capfdbinary.readouterr().out
    rules = sorted(orjson.loads(line)["rule"] for line in out.splitlines())
    assert rules == ["duplicate_tracking", "invalid_tracking"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert main(["scan", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["scan", "-", "-"]) == 2
    ok = _jsonl(tmp_path / "ok.jsonl", LABEL)
    assert main(["scan", str(ok), "--alerts", str(tmp_path / "no" / "dir.jsonl")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["scan"])
    assert exc.value.code == 2


def test_progress_line_only_when_enabled() -> None:
    from streams.tools.progress import Progress

    quiet = io.StringIO()
    with Progress("scan", total=10, stream=quiet) as progress:  # StringIO is not a terminal
        progress.update(5)
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    with Progress("scan", total=10, stream=shown, enabled=True) as progress:
        progress.update(5)
    assert "scan [" in shown.getvalue() and "50.0%" in shown.getvalue()
    assert shown.getvalue().endswith("\r\x1b[K")  # the line is erased at the end
