"""Run the detection core over JSON Lines files of contract messages, no broker needed.

Labels and scans may sit in any files, in any order (`-` reads stdin); by default the events
are applied in event-time order, so the file order does not matter (`--order input` applies
them as read, with bounded memory). Alerts and dead letters are written as JSON Lines. A dead
letter's `source_topic` is the file name as given (`<stdin>` for -), `partition` 0, `offset`
the 1-based line number (what editors and `sed -n Np` show), `key_b64` null. Blank lines are
not messages and are skipped. Exit 0 whenever it ran, whatever it found; 2 on usage error or
an unreadable file. Detection settings come from TRACKING_VALIDATOR_* (see streams/settings.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from streams.offline import ORDERS, Processor, paused_gc
from streams.outputs import dumps
from streams.progress import Progress


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines; - for stdin")
    parser.add_argument("--alerts", metavar="PATH", default="-", help="alerts out (- = stdout)")
    parser.add_argument(
        "--dead-letters", metavar="PATH", help="dead letters out (default: counted, not written)"
    )
    parser.add_argument("--order", choices=ORDERS, default="event-time")


def _open_out(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    return sys.stdout.buffer if path == "-" else open(path, "wb")


def run(args: argparse.Namespace) -> int:
    if args.files.count("-") > 1:
        print("scan: stdin (-) given more than once", file=sys.stderr)
        return 2
    inputs: list[tuple[str, IO[bytes]]] = []
    try:
        for name in args.files:
            handle = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
            inputs.append(("<stdin>" if name == "-" else name, handle))
        alerts_out = _open_out(args.alerts)
        dead_out = _open_out(args.dead_letters)
    except OSError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 2
    assert alerts_out is not None

    def write_to(out: IO[bytes] | None) -> Any:
        if out is None:
            return lambda record: None
        return lambda record: out.write(dumps(record) + b"\n")

    processor = Processor(write_to(alerts_out), write_to(dead_out), order=args.order)
    sizes = [os.fstat(h.fileno()).st_size if h is not sys.stdin.buffer else 0 for _, h in inputs]
    total = sum(sizes) if all(sizes) else None
    try:
        with paused_gc(), Progress("scan", total=total) as progress:
            for name, handle in inputs:
                for number, line in enumerate(handle, start=1):
                    progress.update(len(line))
                    value = line.rstrip(b"\r\n")
                    if not value.strip():
                        continue
                    processor.feed(value, source=name, partition=0, offset=number)
            summary = processor.finish("scan: apply in event-time order")
    except OSError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 2
    finally:
        for name, handle in inputs:
            if name != "<stdin>":
                handle.close()
        for out in (alerts_out, dead_out):
            if out is not None:
                out.flush()
                if out is not sys.stdout.buffer:
                    out.close()
    note = "" if dead_out is not None or not summary.dead_letters else " (not written)"
    print(summary.line("scan") + note, file=sys.stderr)
    return 0
