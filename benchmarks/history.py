"""History scale: peak memory and throughput of `scan` (and, later, `replay`) over simulated
histories of two sizes, and how memory grows with 3x the history.

    python benchmarks/history.py [--labels 60000 180000] [--seed 5] [--keep DIR]

Generates the histories with `simulate --seed S --labels N` (about 7.75 events per label:
0.47 M and 1.4 M events by default) into a temporary directory, then runs `scan` in a
subprocess per variant and size:

  in-memory     today's path (--in-memory): every decoded event held, sorted by event time
  on-disk w=1   --on-disk --workers 1: sorted runs by tracking key, merged, one process decoding
  on-disk w=N   --on-disk with the default workers
  auto          what `scan` picks by itself (in memory up to scan.IN_MEMORY_BYTES of input)

For each: events/s (wall clock, as scan's summary line reports it), CPU microseconds per
event (user+system of scan and its workers: what a shared machine's load does not inflate
as much), and peak resident memory: the largest sum over scan's process tree (sampled every
20 ms from /proc) and the largest single process (ru_maxrss). Then the growth of the peak
from the smaller history to the larger, per variant (target: at most 1.3x; under 1 GiB).
Every variant's alerts are checked equal, in order, to the in-memory path's (detected_at
aside). The CPU pressure of the machine (/proc/pressure/cpu) is printed with the figures:
when other work waits for the cores, the wall-clock figures mean little.

`replay` on the stream runtime (issue 14, item 1) is measured in `replay_runs` below, once
it exists: the slot is marked and returns no rows yet.

Measured here (2 cores shared with other sessions, CPU pressure 8-33%, seed 5):

    variant        0.47 M events           1.4 M events             peak growth
    in-memory      67,402/s   643 MB       40,807/s  1,877 MB       2.92x
    on-disk w=1    68,492/s   161 MB       51,029/s    177 MB       1.10x
    on-disk w=2    86,004/s   292 MB       47,118/s    311 MB       1.06x
    auto           88,102/s   292 MB       65,224/s    296 MB       1.01x

CPU per event 15-17 us in every variant; in a calmer run the 1.4 M history did 90,585/s on
disk with 2 workers against 61,859/s in memory.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "streams"]
GIB = 1 << 30


@dataclass
class Run:
    variant: str
    events: int
    rate: float  # events/s, scan's own figure (wall clock)
    cpu_us: float  # per event, scan + its workers
    peak_tree: int  # bytes: largest sum of RSS over the process tree
    peak_single: int  # bytes: ru_maxrss of the largest process
    alerts: Path


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def watch(proc: subprocess.Popen[bytes], every: float) -> tuple[int, Any, int]:
    """Wait for `proc`, sampling its process tree's memory: (status, rusage, peak bytes)."""
    peak = 0
    while True:
        waited, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if waited:
            return status, usage, peak
        peak = max(peak, sum(_rss(p) for p in _tree(proc.pid)))
        time.sleep(every)


def measure(variant: str, argv: list[str], alerts: Path) -> Run:
    """Run `scan` with argv, sampling its process tree's memory until it exits."""
    proc = subprocess.Popen([*CLI, *argv, "--alerts", str(alerts)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    status, usage, peak = watch(proc, 0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: scan failed ({proc.returncode}): {err}")
    m = re.search(r"scan: (\d+) events.*?([\d,]+) events/s", err)
    if not m:
        raise SystemExit(f"{variant}: no summary line in {err!r}")
    events = int(m.group(1))
    cpu = usage.ru_utime + usage.ru_stime  # wait4: the child and the workers it reaped
    return Run(variant, events, float(m.group(2).replace(",", "")), cpu / events * 1e6,
               peak, usage.ru_maxrss * 1024, alerts)  # fmt: skip


def _alerts(path: Path) -> list[dict]:
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for row in rows:
        row.pop("detected_at", None)
    return rows


def scan_runs(files: list[str], out: Path, workers: int) -> list[Run]:
    variants = [
        ("in-memory", ["--in-memory"]),
        ("on-disk w=1", ["--on-disk", "--workers", "1"]),
        (f"on-disk w={workers}", ["--on-disk", "--workers", str(workers)]),
        ("auto", []),
    ]
    runs = []
    for name, flags in variants:
        alerts = out / f"alerts-{name.replace(' ', '').replace('=', '')}.jsonl"
        runs.append(measure(f"scan {name}", ["scan", *files, *flags], alerts))
    reference = _alerts(runs[0].alerts)
    for run in runs[1:]:
        if _alerts(run.alerts) != reference:
            raise SystemExit(f"{run.variant}: alerts differ from the in-memory path's")
    return runs


BOOTSTRAP: list[str] = []  # the broker of the replay runs, started once by main()


def replay_runs(history: Path) -> list[Run]:
    """`replay` on the stream runtime over `history` imported into the broker: one process,
    4 partitions, its peak memory (the replay's process tree; the broker is apart) and its
    own events/s (from the first input record read to the last frame made durable)."""
    if not BOOTSTRAP:
        return []
    bootstrap = BOOTSTRAP[0]
    tag = f"{history.name}-{os.getpid()}"
    topics = {"labels": f"hist-{tag}.labels", "scans": f"hist-{tag}.scans"}
    for kind, topic in topics.items():
        subprocess.run([*CLI, "import", str(history / f"{kind}.jsonl"), "--topic", topic,
                        "--bootstrap", bootstrap, "--partitions", "4"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    alerts_topic = f"hist-{tag}.alerts"
    argv = [*CLI, "replay", "--bootstrap", bootstrap, "--labels-topic", topics["labels"],
            "--scans-topic", topics["scans"], "--alerts-topic", alerts_topic,
            "--dead-letters-topic", f"hist-{tag}.dead", "--partitions", "4",
            "--replay-id", f"hist-{tag}", "--cleanup"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status, usage, peak = watch(proc, 0.05)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"replay failed: {err[-2000:]}")
    m = re.search(r"applied ([\d,]+) events, .*?([\d,]+) events/s", err)
    if not m:
        raise SystemExit(f"replay: no summary line in {err[-2000:]!r}")
    events = int(m.group(1).replace(",", ""))
    cpu = usage.ru_utime + usage.ru_stime
    return [Run("replay", events, float(m.group(2).replace(",", "")), cpu / events * 1e6,
                peak, usage.ru_maxrss * 1024, history / "replay-alerts-not-compared")]


def _pressure() -> str:
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().split()[1]  # "avg10=…": share of time work waited for a core
    except OSError:
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs=2, default=(60000, 180000))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reused)")
    parser.add_argument("--replay-only", action="store_true", help="replay only, no scan")
    parser.add_argument("--no-replay", action="store_true",
                        help="scan only (replay needs a broker: $KAFKA_BOOTSTRAP_SERVERS or a "
                        "local one)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from streams.tools.offline import default_workers

    workers = max(2, default_workers())
    broker = None
    if not args.no_replay:
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            BOOTSTRAP.append(os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        else:
            from streams.local.broker import LocalBroker

            broker = LocalBroker(heap=("512m", "1g")).start()
            BOOTSTRAP.append(broker.bootstrap_servers)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="history-bench-"))
    results: dict[int, list[Run]] = {}
    try:
        for labels in args.labels:
            history = base / f"seed{args.seed}-labels{labels}"
            if not (history / "scans.jsonl").exists():
                subprocess.run([*CLI, "simulate", "--seed", str(args.seed), "--labels",
                                str(labels), "--out", str(history)], cwd=ROOT, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            files = [str(history / "labels.jsonl"), str(history / "scans.jsonl")]
            size = sum(os.path.getsize(f) for f in files)
            print(f"--labels {labels}: {size / 2**20:,.0f} MiB of input, "
                  f"CPU pressure before: {_pressure()}", flush=True)  # fmt: skip
            runs = ([] if args.replay_only else scan_runs(files, history, workers)) + \
                replay_runs(history)
            for run in runs:
                print(f"  {run.variant:<16} {run.events:>9,} events  {run.rate:>8,.0f} events/s"
                      f"  {run.cpu_us:5.1f} us CPU/event  peak {run.peak_tree / 2**20:6,.0f} MB"
                      f" (largest process {run.peak_single / 2**20:,.0f} MB)"
                      f"{'  OVER 1 GiB' if run.peak_tree > GIB else ''}", flush=True)
            results[labels] = runs
        small, large = (results[n] for n in args.labels)
        print(f"peak memory growth, {args.labels[1] / args.labels[0]:.0f}x the history "
              f"(target <= 1.3x); throughput beside it:")
        for a, b in zip(small, large, strict=True):
            print(f"  {a.variant:<16} {b.peak_tree / a.peak_tree:5.2f}x   "
                  f"{a.rate:,.0f} -> {b.rate:,.0f} events/s, "
                  f"{a.cpu_us:.1f} -> {b.cpu_us:.1f} us CPU/event")
        print(f"CPU pressure after: {_pressure()}; every variant's alerts equal the in-memory "
              f"path's, in order")
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
