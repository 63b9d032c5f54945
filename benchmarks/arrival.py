"""Alerts published and then retracted when the labels feed lags the scans feed (issue 10).

    python benchmarks/arrival.py [--lags 0,1,3,7,14] [--labels 1200] [--days 40] [--seed 11]
                                 [--hand-built 0] [--step-hours 24]

One simulated corpus (tests/runtime/test_arrival_order.py's: a reuse incident, voids, voided labels
shipped, misdeliveries, late labels) goes through a fresh `tracking-validator worker` per lag:
arrival order with every label `lag` days of event time later, cut into batches of
`--step-hours` of that shifted time, each produced once the worker has committed the previous
one. Per lag it prints the alert records published (repeats included), distinct alert ids,
retractions, records with revision > 1, the open alerts (highest revision per alert_id)
beside the offline mode's, and whether they are the same field for field (all but
detected_at and revision); then the retractions by rule, and the same figures of the core alone
(`streams.tools.offline.Processor`, order="input") fed the same order one record after another.
The tests' hand-built cases are left out by default: their revisions come from how the
worker interleaves labels partitions within a batch, not from the lag.

Uses $KAFKA_BOOTSTRAP_SERVERS when set, else starts `streams.local.broker.LocalBroker`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "runtime"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the tests' harness (tests/ is put on the path above)
import pipeline as pipeline_bench
from test_arrival_order import (
    DAY,
    Record,
    Standing,
    batches,
    corpus,
    corpus_params,
    lagged,
    new_pipeline,
    offline_open,
    run_in_batches,
)

from streams.core.revisions import standing
from streams.tools.offline import Processor


def core_in_order(records: list[Record]) -> tuple[int, int, Standing, Counter[str]]:
    """The core alone, one record after another: (records, retractions, open, retracted
    rules)."""
    alerts: list[dict[str, Any]] = []
    proc = Processor(alerts.append, lambda d: None, order="input")
    for i, r in enumerate(records):
        proc.feed(r.value, source=r.topic, partition=r.partition, offset=i, key=r.key)
    proc.finish()
    retracted = [a for a in alerts if a["status"] == "retracted"]
    return len(alerts), len(retracted), standing(alerts), Counter(a["rule"] for a in retracted)


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    records = corpus(corpus_params(args.seed, args.labels, args.days), args.hand_built)
    expected = offline_open(records)
    print(f"corpus: {len(records)} records ({sum(r.topic == 'labels' for r in records)} "
          f"labels, {args.hand_built} hand-built cases of each kind), seed {args.seed}, "
          f"{args.days:g} days; offline: {len(expected)} open alerts "
          f"{dict(sorted(Counter(a['rule'] for a in expected.values()).items()))}")
    header = (f"{'lag':>4} {'batches':>7} {'published':>9} {'alert ids':>9} "
              f"{'retracted':>9} {'revisions':>9} {'open':>5} {'offline':>7} {'equal':>5} "
              f"{'core: published':>15} {'retracted':>9} {'equal':>5} {'seconds':>7}")
    rows = [header]
    notes = []
    tmp = Path(tempfile.mkdtemp(prefix="tv-arrival-"))
    try:
        for lag in args.lags:
            parts = batches(records, lag, args.step_hours * 3600)
            if args.backlog:  # everything at once: the worker reads both feeds together
                parts = [[r for part in parts for r in part]]
            work = tmp / f"lag{lag:g}"
            work.mkdir()
            p = new_pipeline(bootstrap, work, f"arr-bench-{lag:g}",
                             extra_args=["--alert-hold", str(args.alert_hold)])
            got, seconds = await run_in_batches(p, parts)
            core_records, core_retracted, core_open, core_rules = core_in_order(
                lagged(records, lag))
            rows.append(
                f"{lag:>4g} {len(parts):>7} {got.records:>9} {got.distinct:>9} "
                f"{got.retractions:>9} {got.revisions:>9} {len(got.open):>5} "
                f"{len(expected):>7} {got.open == expected!s:>5} {core_records:>15} "
                f"{core_retracted:>9} {core_open == expected!s:>5} {seconds:>7.0f}"
            )
            notes.append(f"lag {lag:g}: retracted by rule: worker "
                         f"{dict(sorted(got.retracted_rules.items()))}, core "
                         f"{dict(sorted(core_rules.items()))}")
            print(rows[-1] if len(rows) > 2 else "\n".join(rows), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n(--alert-hold {args.alert_hold:g}{', as a backlog' if args.backlog else ''})\n"
          + "\n".join(rows) + "\n" + "\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lags", default="0,1,3,7,14",
                        help="days of event time the labels lag the scans (comma list)")
    parser.add_argument("--labels", type=int, default=1200)
    parser.add_argument("--days", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--hand-built", type=int, default=0,
                        help="add N of each of the tests' late_label_cases (late voids and "
                        "holders on labels partition 0; default 0: the simulated traffic only)")
    parser.add_argument("--step-hours", type=float, default=DAY / 3600,
                        help="event time per batch (default 24)")
    parser.add_argument("--backlog", action="store_true",
                        help="produce the lagged input at once, as a backlog (after a restart, "
                        "an outage or a replay), instead of batch by batch")
    parser.add_argument("--alert-hold", type=float, default=0.0,
                        help="the worker's --alert-hold (seconds; default 0)")
    args = parser.parse_args(argv)
    args.lags = [float(x) for x in args.lags.split(",")]
    pipeline_bench.on_a_broker(lambda bootstrap, _pid: run(args, bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
