"""The simulator: seeded, contract-valid messages, numbers valid exactly where intended."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.commands.cli import main
from streams.core.events import DecodeError, decode
from streams.core.validation import canonical, validate
from streams.tools.simulation import Params, World, lines, simulate

INCIDENT = datetime(2025, 3, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return simulate(Params(seed=11, labels=800, incident_start=INCIDENT, incident_share=0.6,
                           malformed=5))  # fmt: skip


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    argv = ["simulate", "--labels", "150", "--seed", "4", "--incident-start", "+70"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    for name in ("labels.jsonl", "scans.jsonl", "ground_truth.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = tmp_path / "c"
    assert main(["simulate", "--labels", "150", "--seed", "5", "--out", str(other)]) == 0
    assert (other / "labels.jsonl").read_bytes() != (tmp_path / "a" / "labels.jsonl").read_bytes()


def test_every_message_decodes_except_the_malformed(world: World) -> None:
    codes: Counter[str] = Counter()
    for line in lines(world.messages):
        try:
            decode(line.rstrip(b"\n"))
        except DecodeError as exc:
            codes[exc.code] += 1
    assert sum(codes.values()) == world.malformed == 5
    assert set(codes) == {"invalid_json", "not_an_object", "unknown_type", "schema", "encoding"}


def test_numbers_valid_exactly_where_intended(world: World) -> None:
    invalid = {g["label_id"] for g in world.ground_truth if g["rule"] == "invalid_tracking"}
    assert invalid
    for m in world.messages:
        if not isinstance(m.value, dict):
            continue
        raw, carrier = m.value["tracking_number"], m.value["carrier"]
        check = validate(raw, carrier)
        assert check.valid == (m.value.get("label_id") not in invalid), (raw, check)
    usps = [s.number for s in world.shipments if s.carrier == "usps" and s.kind != "invalid"]
    assert all(len(n) == 22 and n[:2] in ("92", "93", "94") for n in usps)


def test_ground_truth_matches_what_was_injected(world: World) -> None:
    kinds = Counter(s.kind for s in world.shipments)
    rules = Counter(g["rule"] for g in world.ground_truth)
    assert rules["invalid_tracking"] == kinds["invalid"]
    assert rules["voided_label_scanned"] == kinds["voided_shipped"]
    assert rules["destination_mismatch"] == kinds["mismatch"]
    assert rules["previously_used"] == kinds["reused"] > 0  # 60 days: always inside the window
    in_house = sum(1 for s in world.shipments if s.kind == "reused" and s.donor.label_id is None)
    assert rules["duplicate_tracking"] == kinds["reused"] - in_house
    assert 0 < in_house < kinds["reused"]
    for g in world.ground_truth:  # keys are canonical numbers
        assert canonical(g["tracking_number"], g["carrier"]) == g["tracking_number"]


def test_noise_is_present(world: World) -> None:
    values = [m.value for m in world.messages if isinstance(m.value, dict)]
    event_ids = Counter(v["event_id"] for v in values)
    assert any(n > 1 for n in event_ids.values())  # producer retries
    bought = [v for v in values if v["type"] == "label.purchased"]
    assert len({v["event_id"] for v in bought}) > len({v["label_id"] for v in bought})  # reprints
    assert any(v["tracking_number"].startswith("420") for v in values)  # routing prefix
    assert any(v["type"] == "label.voided" for v in values)
    fresh = {s.number for s in world.shipments if s.kind == "normal"}
    first_seen: dict[str, str] = {}
    for v in values:
        first_seen.setdefault(canonical(v["tracking_number"], v["carrier"]), v["type"])
    assert any(first_seen[n] == "carrier.scan" for n in fresh)  # a scan before its label


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--labels", "10"]) == 2  # neither --out nor --bootstrap
    assert main(["simulate", "--incident-start", "+x", "--out", "/nonexistent"]) == 2
    with pytest.raises(SystemExit):
        main(["simulate", "--start", "yesterday", "--out", "/nonexistent"])
    assert "simulate" in capsys.readouterr().err
