"""`scan` on disk (bounded memory) gives exactly what the in-memory path gives: the same alerts
in the same order, the same dead letters (file name, 1-based line number), on simulated
histories with an incident and on the bundled sample. Small ranges and runs force many of
each, so range boundaries, intermediate merges and line numbering are all exercised."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import orjson
import pytest

from streams.commands.cli import main
from streams.core import events
from streams.core.detection import RULES
from streams.tools import offline
from streams.tools.external_sort import ExternalSort
from streams.tools.samples import INCIDENT


def _read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _scan(tmp_path: Path, name: str, files: list[str], *flags: str) -> tuple[list, list]:
    alerts, dead = tmp_path / f"{name}-alerts.jsonl", tmp_path / f"{name}-dead.jsonl"
    argv = ["scan", *files, "--alerts", str(alerts), "--dead-letters", str(dead), *flags]
    assert main(argv) == 0
    found, dead_letters = _read(alerts), _read(dead)
    for record in found:
        record.pop("detected_at")
    for record in dead_letters:
        record.pop("received_at")
    return found, dead_letters


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of 2 KiB and runs of 50 events: dozens of each on a small history."""
    monkeypatch.setattr(offline, "RANGE_BYTES", 2048)
    monkeypatch.setattr(offline, "RUN_EVENTS", 50)


def _simulate(tmp_path: Path, seed: int) -> Path:
    out = tmp_path / f"sim{seed}"
    argv = ["simulate", "--seed", str(seed), "--labels", "300", "--days", "30",
            "--incident-start", "+12", "--reuse-age-days", "8", "--malformed", "5",
            "--invalid-share", "0.02", "--voided-shipped-share", "0.02",
            "--mismatch-share", "0.02", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("seed", [3, 11])
def test_on_disk_equals_in_memory_on_simulated_history(
    tmp_path: Path, small_runs: None, seed: int
) -> None:
    sim = _simulate(tmp_path, seed)
    files = [str(sim / "scans.jsonl"), str(sim / "labels.jsonl")]
    memory = _scan(tmp_path, "memory", files, "--in-memory")
    for workers in ("1", "3"):
        disk = _scan(tmp_path, f"disk{workers}", files, "--on-disk", "--workers", workers,
                     "--temp-dir", str(tmp_path))  # fmt: skip
        assert disk == memory  # alerts in the same order, dead letters too
    alerts, dead = memory
    rules = {a["rule"] for a in alerts}
    assert rules == set(RULES)  # every rule raised at least once: all of them are compared
    assert len(dead) == 5 and all(d["source_topic"] in files for d in dead)
    # nothing left behind in --temp-dir but the outputs of this test
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tracking-validator-")]


def test_on_disk_equals_in_memory_on_the_sample(tmp_path: Path, small_runs: None) -> None:
    # the sample is one combined file: labels and scans interleaved in arrival order
    memory = _scan(tmp_path, "memory", [str(INCIDENT)], "--in-memory")
    disk = _scan(tmp_path, "disk", [str(INCIDENT)], "--on-disk")
    assert disk == memory and len(memory[0]) > 10


def test_dead_letters_keep_file_and_line_across_ranges(tmp_path: Path, small_runs: None) -> None:
    good = INCIDENT.read_bytes().splitlines()[:200]
    lines = list(good)
    rng = random.Random(4)
    bad = {b"{oops", b"[1]", b"", b"   ", b'{"type": "nope"}', b"\xff\xfe"}
    for junk in sorted(bad):
        lines.insert(rng.randrange(len(lines)), junk)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\r\n".join(lines))  # CRLF, and no newline at the end
    memory = _scan(tmp_path, "memory", [str(path)], "--in-memory")
    disk = _scan(tmp_path, "disk", [str(path)], "--on-disk")
    assert disk == memory
    expected = [i for i, line in enumerate(lines, start=1) if line.strip() and line in bad]
    assert [d["offset"] for d in memory[1]] == expected  # blank lines are no dead letters
    assert {d["source_topic"] for d in memory[1]} == {str(path)}
    # the same file twice: each copy counts its own lines (and every event is a redelivery)
    twice = _scan(tmp_path, "twice", [str(path), str(path)], "--on-disk")
    assert twice == (memory[0], memory[1] + memory[1])


def test_stdin_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_runs: None) -> None:
    data = INCIDENT.read_bytes() + b"{broken\n"
    memory = _scan(tmp_path, "memory", [str(INCIDENT)], "--in-memory")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    alerts, dead = _scan(tmp_path, "stdin", ["-"])  # stdin: on disk unless --in-memory
    assert alerts == memory[0]
    assert [(d["source_topic"], d["offset"]) for d in dead] == [
        ("<stdin>", len(data.splitlines()))
    ]


def test_help_says_when_each_path_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--in-memory" in text and "--on-disk" in text
    from streams.commands.scan import IN_MEMORY_BYTES, IN_MEMORY_BYTES_ONE_WORKER

    assert f"at most {IN_MEMORY_BYTES >> 20} MiB" in text and "stdin, go on disk" in text
    assert f"({IN_MEMORY_BYTES_ONE_WORKER >> 20} MiB with one process)" in text


def test_processor_bounded_equals_unbounded(tmp_path: Path) -> None:
    lines = [line for line in INCIDENT.read_bytes().splitlines() if line.strip()]
    random.Random(9).shuffle(lines)  # any arrival order: event time decides

    def run(**bounded: object) -> list[dict]:
        found: list[dict] = []
        proc = offline.Processor(found.append, lambda d: None, **bounded)  # type: ignore[arg-type]
        for number, line in enumerate(lines, start=1):
            proc.feed(line, source="x", partition=0, offset=number)
        summary = proc.finish()
        proc.close()
        assert summary.events == len(lines)
        return [{k: v for k, v in a.items() if k != "detected_at"} for a in found]

    assert run(run_events=40, spill_dir=str(tmp_path)) == run()
    assert list(tmp_path.iterdir()) == []  # close() removed the runs


def test_external_sort_spills_merges_and_cleans_up(tmp_path: Path) -> None:
    decoded = [events.decode(line) for line in INCIDENT.read_bytes().splitlines()[:500]]
    rng = random.Random(1)
    rows = [(rng.randrange(50), rng.randrange(10**6), i, e) for i, e in enumerate(decoded)]
    sorter = ExternalSort(tmp_path, (int, int, int), offline.EVENT_TYPES, run_records=7, fan_in=3)
    for row in rows:
        sorter.add(row)
    assert len(sorter.runs) == 500 // 7 and sorter.count == 500
    merged = list(sorter.merged())
    assert merged == sorted(rows, key=lambda r: r[:3])  # the events come back equal
    assert list(tmp_path.iterdir()) == []  # runs are deleted as they are read
    small = ExternalSort(None, (int, int, int), offline.EVENT_TYPES)
    for row in rows[:20]:
        small.add(row)
    assert list(small.merged()) == sorted(rows[:20], key=lambda r: r[:3])
    with pytest.raises(ValueError):
        ExternalSort(tmp_path, (int,), offline.EVENT_TYPES, run_records=0)
