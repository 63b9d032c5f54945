"""The detection core without Kafka: decode -> validate -> detection.apply over an in-memory
state per tracking key. Used by `scan` (JSON Lines files) and `replay` (topics read to an end).

It is the stream workers' core, step for step: `events.decode` (which validates and keys the
event), then `detection.apply` on the state of `event.key`, alerts stamped with `detected_at`
when emitted, failed records dead-lettered with `outputs.dead_letter`. So the same messages
give the same alert ids.

Order. `order="event-time"` (the default) decodes every record first and applies the events in
event-time order (`detection.order_key`: event time, then in one second voids, purchases,
scans; then input order), so every alert is published once, at revision 1, and the result is
the contract's in-order answer whatever the files or topic partitions interleave: `scan
scans.jsonl labels.jsonl` equals `scan labels.jsonl scans.jsonl`. It keeps the decoded events
in memory until `finish()` (roughly 1 KB each). `order="input"` applies each record as it is
read, with memory bounded by the state, and is exact when the input is already in arrival order
(one topic export, a `simulate --combined` file); a message applied before one it depends on
publishes alert revisions (detection.py), and the alerts whose highest revision is open are the
same.

Bounded memory (`scan_files`, or `Processor(run_events=...)`): the events are sorted by
(tracking key, event time, input position) with an external sort (streams.tools.external_sort:
runs on disk, k-way merge) and applied one number at a time, each number's events in event
time (`detection.order_key`, then input order). The detection reads nothing but the
number's own state and event, so every alert is the one the in-memory path raises; they
are buffered (sorted the same way, spilled if many) and emitted in the order of the events
that raised them, the in-memory path's order. Memory
is the run buffer and one state, whatever the input size. Writing the runs and reading them
back costs about what the in-memory path's dict of states and its big sort cost (measured,
465k events: 13.9 against 13.7 us of CPU per event), and `scan_files` decodes in parallel.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, get_args

import orjson

from streams.core import detection, events, response
from streams.core.outputs import dead_letter, dumps, stamp_alert
from streams.core.settings import Settings
from streams.tools.envelopes import unwrap
from streams.tools.external_sort import ExternalSort
from streams.tools.progress import Progress

ORDERS = ("event-time", "input")
RUN_EVENTS = 100_000  # bounded memory: events per sorted run on disk (~1.4 KB each decoded)

Emit = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class Summary:
    records: int = 0  # messages read (events + dead letters)
    events: int = 0  # decoded events applied (redeliveries included)
    dead_letters: int = 0
    # alert_id -> (revision, status, rule) of the highest revision published
    latest: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    revisions: int = 0  # alerts published with a revision above 1
    watermark: int = 0  # the greatest event time applied (epoch s): the response's watermark
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def note(self, alert: dict[str, Any]) -> None:
        """Count a published alert: its highest revision decides whether it is open."""
        seen = self.latest.get(alert["alert_id"])
        if seen is None or alert["revision"] > seen[0]:
            self.latest[alert["alert_id"]] = (alert["revision"], alert["status"], alert["rule"])
        if alert["revision"] > 1:
            self.revisions += 1

    @property
    def alerts(self) -> Counter[str]:
        """Distinct alerts whose highest revision is open, by rule."""
        return Counter(rule for _, status, rule in self.latest.values() if status == "open")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self, command: str) -> str:
        rules = ", ".join(f"{rule}={n}" for rule, n in sorted(self.alerts.items())) or "none"
        return (
            f"{command}: {self.events} events, {sum(self.alerts.values())} alerts ({rules}"
            + (f"; {self.revisions} revisions" if self.revisions else "") + "), "
            f"{self.dead_letters} dead letters, {self.seconds:.2f}s, {self.rate:,.0f} events/s"
        )


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk run. Holding 1e5 decoded events
    makes it rescan them again and again (measured: 20-25% of a scan's time); the core makes
    no reference cycles, so reference counting frees everything anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Processor:
    """Feed records with `feed`, then call `finish`; alerts and dead letters go to the
    callbacks as they are produced (dead letters at once, alerts when their event applies).

    With `run_events`, memory is bounded (see the module doc): buffered events go to disk as
    sorted runs of that many, in a temporary directory under `spill_dir` (default: the
    system's) that `close` removes. An input of fewer events never touches the disk.
    """

    def __init__(
        self,
        on_alert: Emit,
        on_dead_letter: Emit,
        settings: Settings | None = None,
        order: str = "event-time",
        *,
        run_events: int | None = None,
        spill_dir: str | None = None,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}")
        self.settings = settings or Settings.from_env()
        self.order = order
        self.on_alert = on_alert
        self.on_dead_letter = on_dead_letter
        self.summary = Summary()
        self.states: dict[str, detection.TrackingState] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.bounded = run_events is not None and order == "event-time"
        if self.bounded:
            self._scratch = tempfile.TemporaryDirectory(prefix="tracking-validator-", dir=spill_dir)
            # rows (tracking key, event time, input position, event): one number at a time
            self.pending = ExternalSort(
                self._scratch.name, (str, int, int), get_args(events.Event), run_events
            )
        else:
            # (order key, input position, event), over a dict of states
            self.pending: Any = []
        self._seq = 0  # events fed: the tie-break of equal event times (input order)

    def feed(
        self,
        value: bytes | None,
        *,
        source: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
    ) -> None:
        self.summary.records += 1
        try:
            event = events.decode(value, self.settings.max_message_bytes)
        except events.DecodeError as exc:
            self.summary.dead_letters += 1
            self.on_dead_letter(
                dead_letter(
                    source_topic=source,
                    partition=partition,
                    offset=offset,
                    key=key,
                    value=value,
                    error=exc,
                    max_message_bytes=self.settings.max_message_bytes,
                )
            )
            return
        if self.order == "input":
            self._apply(event)
        elif self.bounded:
            self.pending.add((event.key, event.event_ts, self._seq, event))
            self._seq += 1
        else:
            self.pending.append((detection.order_key(event), self._seq, event))
            self._seq += 1

    def _apply(self, event: events.Event) -> None:
        self.summary.events += 1
        if event.event_ts > self.summary.watermark:
            self.summary.watermark = event.event_ts
        state, alerts = detection.apply(self.states.get(event.key), event, self.settings)
        if state is None:
            self.states.pop(event.key, None)
        else:
            self.states[event.key] = state
        for alert in alerts:
            self.summary.note(alert)
            self.on_alert(stamp_alert(alert))

    def finish(self, label: str | None = None) -> Summary:
        """Apply the buffered events in event-time order (a progress line `label` if given)."""
        total = self.pending.count if self.bounded else len(self.pending)
        with Progress(label or "", total=total, enabled=None if label else False) as bar:
            if self.bounded:
                self._finish_by_key(bar)
            else:
                pending, self.pending = self.pending, []
                pending.sort(key=itemgetter(0, 1))
                for _, _, event in pending:
                    self._apply(event)
                    bar.update()
        self.summary.seconds = time.monotonic() - self.summary.started
        return self.summary

    def _finish_by_key(self, bar: Progress) -> None:
        assert self._scratch is not None
        self.summary.events += apply_by_key(
            self.pending.merged(), self.settings, self.on_alert, self.summary,
            self._scratch.name, bar,
        )  # fmt: skip

    def close(self) -> None:
        """Remove the temporary files of a bounded-memory run."""
        if self.bounded:
            self.pending.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def apply_by_key(
    rows: Iterator[tuple[str, int, int, events.Event]],
    settings: Settings,
    on_alert: Emit,
    summary: Summary,
    scratch: str,
    bar: Progress,
) -> int:
    """Apply rows sorted by (tracking key, event time, input position); returns the events.

    One number at a time, each in event-time order (`detection.order_key` decides ties of
    one second, then input order, as in memory): a number's alerts depend on its own events
    only, so this is the event-time answer with one state in memory. The alerts are then
    emitted in the order of the events that raised them, as the in-memory path does.
    """
    raised = ExternalSort(scratch, (int, int, int), (dict,), RUN_EVENTS // 4, name="alerts")
    apply = detection.apply
    order_key = detection.order_key
    n = 0

    def number(group: list[tuple[int, int, events.Event]]) -> None:
        if len(group) > 1:
            group.sort(key=lambda row: (order_key(row[2]), row[1]))
        state = None
        for ts, seq, event in group:
            state, alerts = apply(state, event, settings)
            for i, alert in enumerate(alerts):
                summary.note(alert)
                raised.add((ts, seq, i, alert))

    current = None
    group: list[tuple[int, int, events.Event]] = []
    watermark = summary.watermark
    for key, ts, seq, event in rows:
        if ts > watermark:
            watermark = ts
        if key != current:
            if group:
                number(group)
            current, group = key, []
        group.append((ts, seq, event))
        n += 1
        if not n & 1023:
            bar.update(1024, 1024)
    if group:
        number(group)
    summary.watermark = watermark
    for _, _, _, alert in raised.merged():
        on_alert(stamp_alert(alert))
    raised.close()
    return n


class Response:
    """The incidents and actions of a run (streams.core.response.derive): an `on_alert`
    wrapper keeps the alerts, `records` derives them at the run's watermark (the greatest
    event time of the whole input), each stamped with `detected_at` as it is written."""

    def __init__(self, on_alert: Emit, settings: Settings) -> None:
        self.settings = settings
        self.alerts: list[dict[str, Any]] = []
        self._next = on_alert

    def on_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)
        self._next(alert)

    def records(self, watermark: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        incidents, actions = response.derive(self.alerts, watermark, self.settings)
        return [stamp_alert(r) for r in incidents], [stamp_alert(r) for r in actions]


# --- whole files, bounded memory, decoded in parallel ------------------------------------

RANGE_BYTES = 16 << 20  # input bytes one worker decodes, sorts and spills at a time
EVENT_TYPES = get_args(events.Event)
_KEY_TYPES = (str, int, int)  # tracking key, event time, input position


@dataclass(slots=True)
class _Range:
    number: int  # in input order: the high bits of the input position
    input: int  # which of the inputs (the same file may be given twice)
    source: str  # the dead letters' source_topic
    path: str
    start: int  # byte offsets: start of a line .. just after a newline (or the end)
    end: int


@dataclass(slots=True)
class _Decoded:
    runs: list[str]  # sorted runs of (key, ts, position, event)
    lines: int
    events: int
    dead_letters: str | None  # JSON Lines file, `offset` counted from the range's start


def _ranges(inputs: list[tuple[str, str]], size: int) -> Iterator[_Range]:
    number = 0
    for index, (source, path) in enumerate(inputs):
        with open(path, "rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            start = 0
            while start < total:
                handle.seek(max(start + size, start + 1) - 1)
                handle.readline()  # to just after the next newline
                end = min(handle.tell(), total)
                yield _Range(number, index, source, path, start, end)
                number += 1
                start = end


def _decode_range(task: _Range, scratch: str, settings: Settings) -> _Decoded:
    """Worker: decode a range of lines, dead letters to a file, events to sorted runs."""
    with open(task.path, "rb") as handle:
        handle.seek(task.start)
        data = handle.read(task.end - task.start)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the range ends with a newline: no line after it
    del data
    rows: list[tuple[str, int, int, events.Event]] = []
    add = rows.append
    decode = events.decode
    max_bytes = settings.max_message_bytes
    base = task.number << 32  # input position: range number, then line in the range
    dead_path = None
    dead = None
    try:
        for number, line in enumerate(lines, start=1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            value = unwrap(value)  # export's envelope: the message it carries
            try:
                event = decode(value, max_bytes)
            except events.DecodeError as exc:
                if dead is None:
                    dead_path = f"{scratch}/r{task.number}-dead.jsonl"
                    dead = open(dead_path, "wb")  # noqa: SIM115
                record = dead_letter(source_topic=task.source, partition=0, offset=number,
                                     key=None, value=value, error=exc)  # fmt: skip
                dead.write(dumps(record) + b"\n")
                continue
            add((event.key, event.event_ts, base | number, event))
    finally:
        if dead is not None:
            dead.close()
    sorter = ExternalSort(scratch, _KEY_TYPES, EVENT_TYPES, RUN_EVENTS, name=f"r{task.number}")
    sorter.extend(rows)
    return _Decoded([str(p) for p in sorter.flush()], len(lines), len(rows), dead_path)


def default_workers() -> int:
    """Decoding processes: the cores this process may use, at most 4 (memory ~130 MB each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def scan_files(
    inputs: list[tuple[str, str | IO[bytes]]],
    on_alert: Emit,
    on_dead_letter: Emit,
    settings: Settings | None = None,
    *,
    workers: int | None = None,
    spill_dir: str | None = None,
    label: str | None = None,
) -> Summary:
    """The event-time scan of whole JSON Lines inputs in bounded memory: the same alerts, in
    the same order, as `Processor` fed line by line (`offset` = 1-based line number).

    `inputs` are (source name, path or binary stream); a stream (stdin) is first copied to
    the temporary directory. `workers` processes (default_workers()) decode ranges of
    RANGE_BYTES into sorted runs on disk, then this process merges them by tracking key and
    applies them (apply_by_key). Memory: ~130 MB per process, whatever the input size.
    """
    settings = settings or Settings.from_env()
    workers = workers or default_workers()
    summary = Summary()
    with tempfile.TemporaryDirectory(prefix="tracking-validator-", dir=spill_dir) as scratch:
        files: list[tuple[str, str]] = []
        for source, given in inputs:
            if isinstance(given, str):
                files.append((source, given))
            else:
                copy = f"{scratch}/input-{len(files)}.jsonl"
                with open(copy, "wb") as out:
                    shutil.copyfileobj(given, out, 1 << 20)
                files.append((source, copy))
        tasks = list(_ranges(files, RANGE_BYTES))
        total_bytes = sum(t.end - t.start for t in tasks)
        runs: list[str] = []
        line_base = [0] * len(files)  # lines of the earlier ranges of each input
        show = None if label else False
        fork = "fork" in multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if fork else None)
        with (
            Progress(f"{label}: decode", total=total_bytes, enabled=show) as bar,
            ProcessPoolExecutor(workers, mp_context=context) as pool,
        ):
            futures = [pool.submit(_decode_range, task, scratch, settings) for task in tasks]
            for task, future in zip(tasks, futures, strict=True):
                done = future.result()
                base = line_base[task.input]
                line_base[task.input] += done.lines
                runs.extend(done.runs)
                summary.records += done.events
                if done.dead_letters is not None:
                    with open(done.dead_letters, "rb") as dead:
                        for line in dead:
                            record = orjson.loads(line)
                            record["offset"] += base
                            summary.records += 1
                            summary.dead_letters += 1
                            on_dead_letter(record)
                bar.update(task.end - task.start, done.events)
        rows = ExternalSort(scratch, _KEY_TYPES, EVENT_TYPES, runs=[Path(r) for r in runs])
        events_total = summary.records - summary.dead_letters
        with Progress(f"{label}: apply", total=events_total, enabled=show) as bar:
            summary.events = apply_by_key(
                rows.merged(), settings, on_alert, summary, scratch, bar
            )
        rows.close()
    summary.seconds = time.monotonic() - summary.started
    return summary
