"""The command line as a user expects it: --version, one line for a bad --url, courier codes
in any case, a word when `check` waits on a terminal, progress from `simulate`."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from streams.commands.cli import main
from streams.tools.progress import Progress
from streams.tools.simulation import Params, simulate

UPS = "1Z999AA10123456784"


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], input=stdin, text=True,
                          capture_output=True, timeout=60)


def _on_a_terminal(args: list[str], stdin_tty: bool, stderr_tty: bool, feed: bytes = b"",
                   timeout: float = 60.0) -> tuple[int, bytes, bytes]:
    """Run the command with stdin and/or stderr on a pseudo-terminal; (rc, stdout, what the
    terminal showed). `feed` is typed on the terminal once the command has printed, then
    Ctrl-D."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", *args],
        stdin=slave if stdin_tty else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave if stderr_tty else subprocess.PIPE,
    )
    os.close(slave)
    shown = b""
    fed = not stdin_tty
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                shown += os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
        if not fed and b"stdin" in shown:
            os.write(master, feed + b"\x04")  # then Ctrl-D: end of input
            fed = True
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
    while True:  # what is left on the terminal
        ready, _, _ = select.select([master], [], [], 0.1)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.returncode, out, shown


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"tracking-validator {version('tracking-validator')}\n"


def test_lookup_with_a_url_that_is_not_one_exits_2_with_one_line() -> None:
    for url in ("notaurl", "ftp://host/x", "http://"):
        done = _run("lookup", "--url", url, UPS)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("tracking-validator lookup: error: --url")


def test_lookup_at_takes_a_plain_date_and_refuses_nonsense() -> None:
    from streams.commands.lookup import _at

    assert _at("2025-03-01") == "2025-03-01T00:00:00.000Z"
    assert _at("2025-03-01T10:00:00") == "2025-03-01T10:00:00.000Z"  # no offset: UTC
    assert _at("2025-03-01T10:00:00+02:00") == "2025-03-01T10:00:00+02:00"
    done = _run("lookup", "--url", "http://127.0.0.1:1", "--at", "2025-02-30", UPS)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "--at '2025-02-30'" in done.stderr


def test_courier_codes_are_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--carrier", "ups", UPS]) == 0
    lower = capsys.readouterr().out
    assert main(["check", "--carrier", "UPS", UPS]) == 0
    assert capsys.readouterr().out == lower
    assert main(["check", "--carrier", " Ups ", UPS]) == 0
    assert capsys.readouterr().out == lower
    assert json.loads(lower)["carrier"] == "ups"
    done = _run("check", stdin=f"UPS\t{UPS}\nups\t{UPS}\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [lower.strip()] * 2
    assert main(["check", "--carrier", "NOPE", UPS]) == 2


def test_check_on_a_terminal_without_arguments_says_it_reads_stdin() -> None:
    rc, out, shown = _on_a_terminal(["check"], stdin_tty=True, stderr_tty=True,
                                    feed=UPS.encode() + b"\n")
    assert b"check: reading tracking numbers from stdin" in shown, shown
    assert rc == 0
    assert json.loads(out)["number"] == UPS
    # not on a pipe: nothing is said, the numbers are simply read
    done = _run("check", stdin=UPS + "\n")
    assert done.returncode == 0 and done.stderr == ""


def test_simulate_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    rc, _, shown = _on_a_terminal(
        ["simulate", "--labels", "400", "--out", str(tmp_path / "sim")], stdin_tty=False,
        stderr_tty=True)
    assert rc == 0, shown
    assert b"\rsimulate: generate [" in shown and b"shipments" in shown
    assert b"\rsimulate: write " in shown and b"messages" in shown
    assert b"simulate: 0 messages" not in shown
    done = _run("simulate", "--labels", "50", "--out", str(tmp_path / "quiet"))
    assert done.returncode == 0 and "\r" not in done.stderr  # a log stays clean


def test_simulation_progress_counts_every_shipment_twice() -> None:
    stream = io.StringIO()
    progress = Progress("sim", stream=stream, enabled=True)
    world = simulate(Params(seed=2, labels=120), progress)
    assert progress.total == 2 * len(world.shipments) == progress.done
    assert stream.getvalue().startswith("\rsim [")
