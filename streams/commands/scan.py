"""Run the detection core over JSON Lines files of contract messages, no broker needed.

Labels and scans may sit in any files, in any order (`-` reads stdin); by default the events
are applied in event-time order, so the file order does not matter (`--order input` applies
them as read). Two ways to that order, with the same alerts in the same order: in memory
(every decoded event held, ~1.4 KB each) for inputs up to IN_MEMORY_BYTES, or on disk
(streams.tools.offline.scan_files: sorted runs in --temp-dir, bounded memory) for larger ones,
stdin, or when forced with --on-disk. Alerts and dead letters are written as JSON Lines. A dead
letter's `source_topic` is the file name as given (`<stdin>` for -), `partition` 0, `offset`
the 1-based line number (what editors and `sed -n Np` show), `key_b64` null. Blank lines are
not messages and are skipped. A line of `export`'s output (an envelope with topic, offset and
value) stands for the message it carries. Exit 0 whenever it ran, whatever it found (with
--strict, 1 when any record was dead-lettered); 2 on usage error or an unreadable file.
Detection settings come from TRACKING_VALIDATOR_* (see streams/core/settings.py).

`--incidents PATH` and `--actions PATH` also write the response (contract, "Incidents and
actions"): the incidents and the due per-order actions that the alerts' highest revisions
give at the watermark, which here is the greatest event time of the whole input (so an
incident whose quiet period the input covers is `resolved`). Each is one revision, as the
alerts are; `--incident-*` flags (or TRACKING_VALIDATOR_INCIDENT_*) set the definitions.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from streams.commands import response_settings
from streams.core.outputs import dumps
from streams.core.settings import Settings
from streams.tools.envelopes import unwrap
from streams.tools.files import describe_os_error, open_input
from streams.tools.offline import (
    ORDERS,
    Processor,
    Response,
    Summary,
    default_workers,
    paused_gc,
    scan_files,
)
from streams.tools.progress import Progress

# Up to this many input bytes, event-time order is fastest in memory (measured: 12 MiB
# in memory 94k events/s, on disk 64-70k; 48 MiB in memory 83k, on disk 64k with one worker,
# 94k with two). Resident memory is ~4.3x the input there (658 MB for 145 MiB).
IN_MEMORY_BYTES = 32 << 20
IN_MEMORY_BYTES_ONE_WORKER = 128 << 20  # no second core to decode on: only memory decides


def in_memory_limit(workers: int) -> int:
    return IN_MEMORY_BYTES if workers > 1 else IN_MEMORY_BYTES_ONE_WORKER


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="JSON Lines of messages, bare or as `export` writes them; - for "
                        "stdin")
    parser.add_argument("--alerts", metavar="PATH", default="-",
                        help="alerts out (default - = stdout)")
    parser.add_argument(
        "--dead-letters", metavar="PATH", help="dead letters out (default: counted, not written)"
    )
    parser.add_argument("--incidents", metavar="PATH",
                        help="incidents out (tracking.incidents records; - = stdout)")
    parser.add_argument("--actions", metavar="PATH",
                        help="per-order actions out (tracking.actions records; - = stdout)")
    parser.add_argument("--order", choices=ORDERS, default="event-time",
                        help="apply the events in event-time order (default: the alerts "
                        "whatever the file order) or as read")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any record was dead-lettered")
    response_settings.add_arguments(parser)
    memory = parser.add_argument_group(
        "memory",
        f"Event-time order holds every decoded event in memory (~1.4 KB each) when the input "
        f"files total at most {IN_MEMORY_BYTES >> 20} MiB ({IN_MEMORY_BYTES_ONE_WORKER >> 20} MiB "
        f"with one process): the fastest for them. Larger inputs, "
        f"and stdin, go on disk: decoded by --processes processes into sorted runs in "
        f"--temp-dir, merged by tracking number, so memory stays bounded (about 130 MB per "
        f"process) whatever the size. Same alerts, in the same order, either way. "
        f"(--order input applies events as read: nothing to sort, always in memory.)",
    )
    where = memory.add_mutually_exclusive_group()
    where.add_argument("--in-memory", dest="storage", action="store_const", const="memory",
                       help="always in memory (memory grows with the input)")
    where.add_argument("--on-disk", dest="storage", action="store_const", const="disk",
                       help="always on disk, however small the input")
    memory.add_argument("--temp-dir", metavar="DIR",
                        help="for the sorted runs, about the input's size (default: $TMPDIR "
                             "or /tmp)")  # fmt: skip
    memory.add_argument("--processes", "--workers", dest="workers", type=_positive, metavar="N",
                        help=f"decoding processes on disk (default here: {default_workers()})")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _open_out(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    return sys.stdout.buffer if path == "-" else open(path, "wb")


def run(args: argparse.Namespace) -> int:
    if args.files.count("-") > 1:
        print("scan: stdin (-) given more than once", file=sys.stderr)
        return 2
    try:
        settings = response_settings.settings_from(args)
    except ValueError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 2
    inputs: list[tuple[str, IO[bytes]]] = []
    try:
        for name in args.files:
            handle = sys.stdin.buffer if name == "-" else open_input(name)
            inputs.append(("<stdin>" if name == "-" else name, handle))
    except OSError as exc:
        _close_inputs(inputs)
        print(f"scan: {describe_os_error(exc, exc.filename or name)}", file=sys.stderr)
        return 2
    try:
        out_name = args.alerts
        alerts_out = _open_out(args.alerts)
        out_name = args.dead_letters
        dead_out = _open_out(args.dead_letters)
        out_name = args.incidents
        incidents_out = _open_out(args.incidents)
        out_name = args.actions
        actions_out = (incidents_out if args.actions == args.incidents
                       else _open_out(args.actions))
    except OSError as exc:
        _close_inputs(inputs)
        print(f"scan: cannot write: {describe_os_error(exc, out_name)}", file=sys.stderr)
        return 2
    assert alerts_out is not None

    def write_to(out: IO[bytes] | None) -> Any:
        if out is None:
            return lambda record: None
        return lambda record: out.write(dumps(record) + b"\n")

    sizes = [None if name == "<stdin>" else os.fstat(h.fileno()).st_size for name, h in inputs]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    storage = args.storage or (
        "memory"
        if total is not None and total <= in_memory_limit(args.workers or default_workers())
        else "disk"
    )
    if args.order == "input":
        storage = "memory"  # applied as read: nothing to sort
    on_alert = write_to(alerts_out)
    response = None
    if incidents_out is not None or actions_out is not None:
        response = Response(on_alert, settings)
        on_alert = response.on_alert
    try:
        with paused_gc():
            if storage == "disk":
                summary = scan_files(
                    [(name, handle if name == "<stdin>" else handle.name)
                     for name, handle in inputs],
                    on_alert, write_to(dead_out), settings,
                    workers=args.workers, spill_dir=args.temp_dir, label="scan",
                )  # fmt: skip
            else:
                summary = _in_memory(inputs, total, args.order, on_alert, write_to(dead_out),
                                     settings)  # fmt: skip
            if response is not None:
                incidents, actions = response.records(summary.watermark)
                for out, records in ((incidents_out, incidents), (actions_out, actions)):
                    if out is not None:
                        for record in records:
                            write_to(out)(record)
    except OSError as exc:
        print(f"scan: {describe_os_error(exc, exc.filename or '?')}", file=sys.stderr)
        return 2
    finally:
        _close_inputs(inputs)
        for out in {id(o): o for o in (alerts_out, dead_out, incidents_out, actions_out)
                    if o is not None}.values():
            out.flush()
            if out is not sys.stdout.buffer:
                out.close()
    note = ""
    if dead_out is None and summary.dead_letters:
        note = (f"; {summary.dead_letters} records were dead-lettered and not kept: "
                f"--dead-letters FILE writes them")
    print(summary.line("scan") + note, file=sys.stderr)
    if response is not None:
        print(response_line("scan", incidents, actions), file=sys.stderr)
    return 1 if args.strict and summary.dead_letters else 0


def _close_inputs(inputs: list[tuple[str, IO[bytes]]]) -> None:
    for name, handle in inputs:
        if name != "<stdin>":
            handle.close()


def response_line(command: str, incidents: list[dict[str, Any]],
                  actions: list[dict[str, Any]]) -> str:
    opened = sum(1 for r in incidents if r["status"] == "open")
    groups = ", ".join(sorted({f"{r['carrier']}/{r['channel'] or '-'}" for r in incidents}))
    return (f"{command}: {len(incidents)} incidents ({opened} open"
            + (f"; {groups}" if groups else "") + f"), {len(actions)} actions due")


def _in_memory(
    inputs: list[tuple[str, IO[bytes]]], total: int | None, order: str, on_alert: Any,
    on_dead_letter: Any, settings: Settings,
) -> Summary:
    processor = Processor(on_alert, on_dead_letter, settings, order=order)
    with Progress("scan", total=total) as progress:
        for name, handle in inputs:
            for number, line in enumerate(handle, start=1):
                progress.update(len(line))
                value = line.rstrip(b"\r\n")
                if not value.strip():
                    continue
                processor.feed(unwrap(value), source=name, partition=0, offset=number)
    return processor.finish("scan: apply in event-time order")
