"""The demo stops cleanly on Ctrl-C at any point: exit 130 on SIGINT, 0 on SIGTERM, no
traceback, and no broker or worker process left behind (checked on the process tree)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc's parent links."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def big_sample(tmp_path: Path) -> Path:
    """A sample large enough that feeding it takes a while."""
    out = tmp_path / "sim"
    subprocess.run(
        [sys.executable, "-m", "streams", "simulate", "--labels", "6000", "--combined",
         "--out", str(out)],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )  # fmt: skip
    return out / "events.jsonl"


def run_demo(tmp_path: Path, when: str, signum: int, *extra: str) -> None:
    """Start the demo, send `signum` once `when` is reached, check the exit and the tree."""
    err_path, out_path = tmp_path / "demo.err", tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["PYTHONPATH"] = str(REPO)
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "demo", *extra],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # as a shell job: the signal goes to the demo alone
        )  # fmt: skip
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while True:
            seen |= descendants(proc.pid)
            text = err_path.read_text(errors="replace")
            # "idle": every alert of the sample printed, then the demo says it only waits
            reached = ("demo: idle: all" if when == "idle" else when) in text
            if reached:
                break
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, f"never reached {when!r}: {text}"
            time.sleep(0.05)
        seen |= descendants(proc.pid)
        proc.send_signal(signum)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err_path.read_text(errors="replace") + out_path.read_text(errors="replace")
    assert rc == (130 if signum == signal.SIGINT else 0), text
    assert "Traceback" not in text and "Error" not in text.replace("DEAD LETTER", ""), text
    # the demo has waited for its worker and broker; their own children may take a moment
    # (more on a loaded machine) to see their parent go
    deadline = time.monotonic() + 15
    while left := [pid for pid in seen if alive(pid)]:
        assert time.monotonic() < deadline, f"left running 15 s after the demo exited: {left}"
        time.sleep(0.1)


def test_sigint_while_the_broker_starts(tmp_path: Path) -> None:
    run_demo(tmp_path, "starting a local Kafka broker", signal.SIGINT)


def test_sigint_while_the_worker_starts(tmp_path: Path) -> None:
    run_demo(tmp_path, "starting (log:", signal.SIGINT)


def test_sigint_while_feeding(tmp_path: Path) -> None:
    run_demo(tmp_path, "feeding", signal.SIGINT, "--sample", str(big_sample(tmp_path)))


def test_sigint_while_idle_after_the_alerts(tmp_path: Path) -> None:
    run_demo(tmp_path, "idle", signal.SIGINT)


def test_sigterm_while_idle_on_a_given_broker(tmp_path: Path, kafka_bootstrap: str) -> None:
    run_demo(tmp_path, "idle", signal.SIGTERM, "--bootstrap", kafka_bootstrap)
