"""`scan` as a Unix tool: alerts on stdout, a summary that says what was dead-lettered,
export's envelopes read like bare messages, --strict, and a sentence for a bad path."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from streams.commands.cli import main
from streams.commands.transfer import from_record
from streams.tools.simulation import Params, lines, simulate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small simulated incident with malformed lines, bare and as `export` writes it."""
    out = tmp_path_factory.mktemp("scan")
    world = simulate(Params(seed=11, labels=300, malformed=4,
                            incident_start=Params().start.replace(day=20)))
    bare = b"".join(lines(world.messages, None))
    (out / "bare.jsonl").write_bytes(bare)
    envelopes = []
    for offset, line in enumerate(bare.splitlines()):
        record = ConsumerRecord("events", 0, offset, 1740823200000, 0, None,
                                line, None, 0, len(line), [])
        envelopes.append(orjson.dumps(from_record(record)) + b"\n")
    (out / "exported.jsonl").write_bytes(b"".join(envelopes))
    return {"bare": out / "bare.jsonl", "exported": out / "exported.jsonl", "dir": out}


def _scan(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    rc = main(["scan", *argv])
    captured = capsysbinary.readouterr()
    return rc, captured.out, captured.err.decode()


def _alerts(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_alerts_go_to_stdout_and_the_summary_says_how_to_keep_dead_letters(
        corpus: dict[str, Path], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, out, err = _scan(capsysbinary, str(corpus["bare"]))
    assert rc == 0
    alerts = _alerts(out)
    assert alerts and all("alert_id" in a for a in alerts)
    assert "4 dead letters" in err
    assert "4 records were dead-lettered and not kept: --dead-letters FILE writes them" in err


@pytest.mark.parametrize("where", ["--in-memory", "--on-disk"])
def test_exported_envelopes_give_the_same_alerts_and_dead_letters(
        where: str, corpus: dict[str, Path], tmp_path: Path,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    found = {}
    for name in ("bare", "exported"):
        dead = tmp_path / f"{name}.dead.jsonl"
        rc, out, err = _scan(capsysbinary, str(corpus[name]), where, "--dead-letters", str(dead))
        assert rc == 0, err
        letters = _alerts(dead.read_bytes())
        found[name] = (
            [{k: v for k, v in a.items() if k != "detected_at"} for a in _alerts(out)],
            # export keeps a JSON value as parsed JSON: a non-compact one comes back compact
            sorted((d["error"]["code"], d["offset"]) for d in letters),
        )
        assert "not kept" not in err
    assert found["exported"] == found["bare"]
    assert len(found["bare"][1]) == 4  # the malformed ones only, not every exported record


def test_strict_exits_1_when_anything_was_dead_lettered(
        corpus: dict[str, Path], tmp_path: Path,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert _scan(capsysbinary, str(corpus["bare"]), "--strict")[0] == 1
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"".join(line + b"\n" for line in corpus["bare"].read_bytes().splitlines()
                               if line.startswith(b"{") and b'"type"' in line
                               and _decodes(line)))
    rc, _, err = _scan(capsysbinary, str(clean), "--strict")
    assert rc == 0, err
    assert " 0 dead letters" in err


def _decodes(line: bytes) -> bool:
    from streams.core.events import DecodeError, decode

    try:
        decode(line)
    except DecodeError:
        return False
    return True


def test_a_missing_file_or_a_directory_gets_a_sentence(
        corpus: dict[str, Path], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, out, err = _scan(capsysbinary, str(corpus["bare"]), str(corpus["dir"] / "nope.jsonl"))
    assert (rc, out) == (2, b"")
    assert err == f"scan: {corpus['dir'] / 'nope.jsonl'}: no such file\n"
    rc, out, err = _scan(capsysbinary, str(corpus["dir"]))
    assert (rc, out) == (2, b"")
    assert err == f"scan: {corpus['dir']} is a directory; give a file (JSON Lines)\n"
    assert "Errno" not in err


def test_report_reads_an_exported_alerts_topic(
        corpus: dict[str, Path], tmp_path: Path,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    alerts = tmp_path / "alerts.jsonl"
    assert _scan(capsysbinary, str(corpus["bare"]), "--alerts", str(alerts))[0] == 0
    exported = tmp_path / "alerts.exported.jsonl"
    exported.write_bytes(b"".join(
        orjson.dumps(from_record(ConsumerRecord("tracking.alerts", 0, n, 0, 0, b"k", line,
                                                None, 0, len(line), []))) + b"\n"
        for n, line in enumerate(alerts.read_bytes().splitlines())))
    reports = []
    for path in (alerts, exported):
        assert main(["report", "--alerts", str(path), "--format", "json"]) == 0
        reports.append(orjson.loads(capsysbinary.readouterr().out))
    assert reports[0] == reports[1]
    assert reports[0]["sellers"]


def test_report_names_a_missing_file_or_a_directory_in_a_sentence(
        corpus: dict[str, Path], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    missing = corpus["dir"] / "none.jsonl"
    assert main(["report", "--alerts", str(missing)]) == 2
    assert capsysbinary.readouterr().err.decode() == f"report: {missing}: no such file\n"
    assert main(["report", "--alerts", str(corpus["dir"])]) == 2
    assert capsysbinary.readouterr().err.decode() == (
        f"report: {corpus['dir']} is a directory; give a file (JSON Lines)\n")
