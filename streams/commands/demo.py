"""Run the whole pipeline on a bundled sample incident and print its alerts.

Uses the Kafka at --bootstrap / $KAFKA_BOOTSTRAP_SERVERS when given, else starts a local
broker (Java 17+; the Kafka jars are fetched once). Starts one worker, feeds the sample
(streams/tools/samples/incident.jsonl: the Feb 2025 USPS number reuse in miniature) and, once
the sample's alerts and incidents are all in (as the offline mode reads the sample), prints one
line per alert in event-time order, then a block per incident (when it opened and resolved,
alerts, sellers, orders, refunds owed), then two lookups: the same every run. Ctrl-C (or
SIGTERM) stops the worker and the broker; nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from streams.tools.samples import INCIDENT

# The alerts and incidents are printed once the sample's have all arrived and nothing came for
# this long (more than the worker's default 2 s alert hold, so that no pending correction is
# missed)
QUIET_SECONDS = 2.5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                        help="Kafka to use (env KAFKA_BOOTSTRAP_SERVERS); default: start a "
                        "local broker")
    parser.add_argument("--kafka-config", metavar="FILE", default=None,
                        help="client properties for --bootstrap's Kafka (SASL/TLS; see "
                        "`worker --help`); the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and "
                        "KAFKA_SSL_* environment variables work too")
    parser.add_argument("--sample", type=Path, default=INCIDENT,
                        help="JSON Lines file of contract messages (default: the bundled "
                        "incident)")
    parser.add_argument("--partitions", type=int, default=3,
                        help="partitions of the topics (default 3)")
    parser.add_argument("--exit-after-sample", action="store_true",
                        help="stop once every alert and incident the sample should raise "
                        "has arrived (exit 1 if they do not within --timeout)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the sample's alerts and incidents "
                        "(default 120); then "
                        "what arrived is printed (with --exit-after-sample: and exit 1)")
    parser.add_argument("--worker-log", type=Path, default=None,
                        help="file for the worker's log (default: a temporary file)")
    parser.add_argument("--console-port", type=int, default=8080,
                        help="port of the live console (`tracking-validator console`) on "
                        "127.0.0.1; another free one when taken, -1 for no console "
                        "(default 8080)")


# ---------------------------------------------------------------- a worker in a subprocess


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the worker gets SIGTERM if this process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerProcess:
    """`tracking-validator worker` in a child process (also used by the tests and benchmarks).

    `args` are worker flags (`--bootstrap`, `--app-id`, ...). `stop()` sends SIGTERM and
    waits, `kill()` sends SIGKILL: both are idempotent."""

    def __init__(self, args: Sequence[str], log: str | os.PathLike[str] | IO[bytes] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        repo = Path(__file__).resolve().parents[2]
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo), env.get("PYTHONPATH", "")) if p
        )
        out: Any
        if self.log is None or hasattr(self.log, "write"):
            out = self.log if self.log is not None else subprocess.DEVNULL
            opened = None
        else:
            out = opened = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                preexec_fn=_die_with_parent,
                # its own process group: a terminal's Ctrl-C reaches the demo only, which then
                # stops the worker in order (else the worker could exit first and the demo
                # would report it as a failure)
                start_new_session=True,
            )
        finally:
            if opened is not None:
                opened.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def kill(self) -> int | None:
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout=10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- printing


def _short_reason(alert: dict[str, Any]) -> str:
    rule = alert.get("rule")
    ev = alert.get("evidence") or {}
    if rule == "duplicate_tracking":
        holders = ev.get("holders") or []
        who = ", ".join(f"{h.get('seller_id')} ({h.get('label_id')})" for h in holders)
        kind = "another seller's" if ev.get("other_seller") else "the same seller's"
        return f"number still held by {kind} label: {who}"
    if rule == "previously_used":
        scans = ev.get("scans") or []
        if scans:
            first = scans[0]
            where = first.get("postal_code") or first.get("country") or "?"
            return (f"carrier scanned it {first.get('status')} on "
                    f"{str(first.get('occurred_at'))[:10]} at {where}, before this purchase")
        return "scanned before this purchase"
    if rule == "invalid_tracking":
        return f"number fails validation: {ev.get('reason')}"
    if rule == "destination_mismatch":
        scan = ev.get("scan") or {}
        ship_to = ev.get("ship_to") or {}
        return (f"{scan.get('status')} at {scan.get('postal_code') or scan.get('country')}, "
                f"label ships to {ship_to.get('postal_code')} {ship_to.get('country')}")
    if rule == "voided_label_scanned":
        scan = ev.get("scan") or {}
        return (f"voided {str(ev.get('voided_at'))[:16]}, then scanned "
                f"{scan.get('status')} {str(scan.get('occurred_at'))[:16]}")
    return ""


COLUMNS = ("EVENT TIME (UTC)", "SEVERITY", "RULE", "TRACKING NUMBER", "SELLER/ORDER", "WHY")


def alert_cells(alert: dict[str, Any], revision_note: bool = True) -> tuple[str, ...]:
    """An alert's columns: event time, severity, rule, number, seller/order, short reason; a
    revision says so ("revised N:", or RETRACTED and the message that removed the finding),
    unless `revision_note` is off (a final alert: its revision depends on arrival order)."""
    when = str(alert.get("event_time", "")).replace("T", " ").rstrip("Z")[:16]
    severity = str(alert.get("severity", "")).upper()
    reason = _short_reason(alert)
    revision = alert.get("revision") or 1
    if alert.get("status") == "retracted":
        severity = "RETRACTED"
        because = (alert.get("evidence") or {}).get("retracted_because") or {}
        reason = (f"retracted (revision {revision}): a late {because.get('type')} "
                  f"{because.get('event_id')} changed the finding")
    elif revision > 1 and revision_note:
        reason = f"revised (revision {revision}): {reason}"
    return (when, severity, str(alert.get("rule", "")), str(alert.get("tracking_number", "")),
            f"{alert.get('seller_id', '')}/{alert.get('order_id', '')}", reason)


class Table:
    """Rows in columns as wide as their widest cell (the last column is not padded), at least
    `minimum` wide."""

    def __init__(self, rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS,
                 minimum: Sequence[int] = ()) -> None:
        self.widths = [max(len(str(cell)) for cell in column)
                       for column in zip(header, *rows, strict=True)]
        for i, width in enumerate(minimum):
            self.widths[i] = max(self.widths[i], width)
        self.header = header

    def line(self, cells: Sequence[str]) -> str:
        padded = [str(c).ljust(w) for c, w in zip(cells[:-1], self.widths, strict=False)]
        return "  ".join([*padded, str(cells[-1])]).rstrip()


# A line printed on its own (`alerts`, the demo's late arrivals) lines up with the next one
# for the usual widths: event time, RETRACTED, the longest rule, a USPS number, seller/order
LINE_WIDTHS = (16, 9, 20, 22, 33)


def format_alert(alert: dict[str, Any]) -> str:
    """One alert on its own line, its columns at least LINE_WIDTHS wide."""
    cells = alert_cells(alert)
    return Table([cells], minimum=LINE_WIDTHS).line(cells)


def format_dead_letter(record: dict[str, Any]) -> str:
    """A dead letter by its place in the input (no wall-clock time: the same every run)."""
    err = record.get("error") or {}
    path = f" at {err['path']}" if err.get("path") else ""
    return (f"DEAD LETTER {record.get('source_topic')}/{record.get('partition')}"
            f"@{record.get('offset')}  {err.get('code')}: {err.get('message')}{path}")


def _event_order(alert: dict[str, Any]) -> tuple[str, ...]:
    return (str(alert.get("event_time")), str(alert.get("rule")),
            str(alert.get("tracking_number")), str(alert.get("label_id")),
            str(alert.get("alert_id")))


# ---------------------------------------------------------------- the demo


@dataclass
class Expected:
    """What the contract's reading of the sample gives (streams.tools.offline): the open
    alerts' ids, the number of dead letters, the re-issued number to look up (the earliest
    previously_used alert's, else duplicate_tracking's: the same every run), and the
    incidents that stand once the whole sample is in (streams.core.response.derive at the
    sample's greatest event time, as the worker's response stage ends; without
    `detected_at` and `revision`, by incident_id)."""

    alert_ids: set[str]
    dead_letters: int
    reissued: tuple[str, str] | None
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)


def expected_outcome(lines: list[bytes]) -> Expected:
    import orjson

    from streams.core import response, revisions
    from streams.tools.offline import Processor
    from streams.tools.samples import topic_of

    latest: dict[str, dict[str, Any]] = {}

    def on_alert(alert: dict[str, Any]) -> None:
        if alert["revision"] > latest.get(alert["alert_id"], {}).get("revision", 0):
            latest[alert["alert_id"]] = alert

    proc = Processor(on_alert, lambda d: None)
    for i, line in enumerate(lines):
        try:
            topic = topic_of(orjson.loads(line))
        except orjson.JSONDecodeError:
            topic = "labels"
        proc.feed(line, source=topic, partition=0, offset=i)
    summary = proc.finish()
    found = [a for a in latest.values() if a["status"] == "open"]
    # the worker's settings are the environment's too (the demo passes no incident flags)
    incidents, _ = response.derive(latest.values(), summary.watermark, proc.settings)
    reissued = None
    for rule in ("previously_used", "duplicate_tracking"):
        hits = sorted((a for a in found if a["rule"] == rule), key=_event_order)
        if hits:
            reissued = (hits[0]["carrier"], hits[0]["tracking_number"])
            break
    return Expected({a["alert_id"] for a in found}, summary.dead_letters, reissued,
                    revisions.standing(incidents, revisions.INCIDENT_ID))


def expected_alert_ids(lines: list[bytes]) -> set[str]:
    """The alerts the contract's reading of the sample raises (streams.tools.offline)."""
    return expected_outcome(lines).alert_ids


async def _have_leaders(admin: Any, topics: list[str]) -> bool:
    """Every topic exists and each of its partitions has a leader."""
    if not set(topics) <= set(await admin.list_topics()):
        return False
    for described in await admin.describe_topics(topics):
        parts = described.get("partitions") or []
        if described.get("error_code") or not parts:
            return False
        if any(p.get("error_code") or p.get("leader", -1) < 0 for p in parts):
            return False
    return True


def _kafka(args: argparse.Namespace, bootstrap: str) -> Any:
    """The client config: the local broker is PLAINTEXT; --bootstrap's Kafka takes
    --kafka-config and the environment (streams.runtime.kafka_security)."""
    from streams.runtime.kafka_security import KafkaClientConfig

    if args._local_broker:
        return KafkaClientConfig(bootstrap=bootstrap)
    return KafkaClientConfig.load(args.kafka_config, bootstrap=bootstrap)


async def _wait_topics(kafka: Any, topics: list[str], worker: WorkerProcess,
                       timeout: float = 60.0) -> None:
    from streams.runtime.kafka_io import client_config, make_admin, start_client

    admin = make_admin(kafka)
    await start_client(admin, client_config(kafka))
    try:
        deadline = time.monotonic() + timeout
        while not await _have_leaders(admin, topics):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.poll()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {topics} were not created in {timeout:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _produce(kafka: Any, lines: list[bytes], topics: dict[str, str]) -> None:
    import orjson
    from aiokafka import AIOKafkaProducer

    from streams.runtime.kafka_io import client_config, start_client
    from streams.tools.samples import topic_of

    config = client_config(kafka)
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, acks="all", linger_ms=5,
                                **config.aiokafka_kwargs())  # fmt: skip
    await start_client(producer, config)
    try:
        pending = []
        for line in lines:
            try:
                topic = topics[topic_of(orjson.loads(line))]
            except orjson.JSONDecodeError:
                topic = topics["labels"]
            pending.append(await producer.send(topic, line))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _demo(args: argparse.Namespace, bootstrap: str, stop: asyncio.Event,
                out: IO[str]) -> int:
    from aiokafka import AIOKafkaConsumer

    from streams.runtime.kafka_io import start_client

    run_id = uuid.uuid4().hex[:8]
    app_id = f"tracking-validator-demo-{run_id}"
    # On someone else's Kafka, keep off their real topics.
    prefix = "" if args._local_broker else f"demo-{run_id}."
    topics = {
        "labels": f"{prefix}labels",
        "scans": f"{prefix}scans",
        "alerts": f"{prefix}tracking.alerts",
        "deadletter": f"{prefix}tracking.deadletter",
        "incidents": f"{prefix}tracking.incidents",
        "actions": f"{prefix}tracking.actions",
    }
    lines = list(_read_lines(args.sample))
    expected = expected_outcome(lines)
    web_port = _free_port()

    with tempfile.TemporaryDirectory(prefix="tracking-validator-demo-") as tmp:
        log_path = args.worker_log or Path(tmp) / "worker.log"
        worker = WorkerProcess(
            [
                "--bootstrap", bootstrap,
                "--app-id", app_id,
                "--state-dir", str(Path(tmp) / "state"),
                "--partitions", str(args.partitions),
                "--labels-topic", topics["labels"],
                "--scans-topic", topics["scans"],
                "--alerts-topic", topics["alerts"],
                "--deadletter-topic", topics["deadletter"],
                "--incidents-topic", topics["incidents"],
                "--actions-topic", topics["actions"],
                "--commit-interval", "0.5",
                "--web-port", str(web_port), "--web-host", "127.0.0.1",
                "--loglevel", "warning",
                *(["--kafka-config", str(args.kafka_config)]
                  if args.kafka_config and not args._local_broker else []),
            ],
            log=log_path,
        )
        print(f"worker {app_id} starting (log: {log_path})", file=sys.stderr)
        worker.start()
        try:
            kafka = _kafka(args, bootstrap)
            await _wait_topics(kafka, list(topics.values()), worker)
            console_stop = asyncio.Event()
            console = await _start_console(args, kafka, topics, web_port, console_stop)
            consumer = AIOKafkaConsumer(
                topics["alerts"], topics["deadletter"], topics["incidents"],
                bootstrap_servers=kafka.bootstrap, group_id=None, auto_offset_reset="earliest",
                **kafka.aiokafka_kwargs(),
            )
            await start_client(consumer, kafka)
            try:
                print(f"feeding {len(lines)} sample messages...", file=sys.stderr, flush=True)
                await _produce(kafka, lines, topics)
                print(f"fed {len(lines)} sample messages from {args.sample}; alerts:",
                      file=sys.stderr)
                args._starting = False
                lookup = Lookups(f"http://127.0.0.1:{web_port}", lines, expected.reissued)
                return await _print_until(consumer, topics, expected, args, worker, stop, out,
                                          lookup)
            finally:
                await consumer.stop()
                console_stop.set()
                if console is not None:
                    with contextlib.suppress(Exception):
                        await console
        finally:
            rc = worker.stop()
            print(f"worker stopped (exit {rc})", file=sys.stderr)


INCIDENT_LABELS = ("opened", "resolved", "alerts", "sellers", "orders", "refunds owed")


def incident_cells(incident: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """An incident's heading (carrier/channel) and its lines: when it opened (started_at),
    when it resolved (resolved_at, "open" while open), alerts, sellers, orders, refunds owed.
    No detected_at nor revision: they depend on the run, not on the sample."""

    def minute(value: Any) -> str:
        return str(value).replace("T", " ").rstrip("Z")[:16]

    status = incident.get("status")
    resolved = minute(incident["resolved_at"]) if incident.get("resolved_at") else (
        "open" if status == "open" else str(status))
    refunds = ", ".join(f"{m.get('amount')} {m.get('currency')}"
                        for m in incident.get("refunds_owed") or []) or "none"
    heading = f"{incident.get('carrier')}/{incident.get('channel') or '(none)'}"
    values = (minute(incident.get("started_at")), resolved, str(incident.get("alerts")),
              str(incident.get("sellers")), str(incident.get("orders")), refunds)
    return heading, list(zip(INCIDENT_LABELS, values, strict=True))


def format_incident(incident: dict[str, Any]) -> list[str]:
    """An incident as an aligned block: `incident <carrier>/<channel> (UTC):`, then one
    indented `label  value` line per field."""
    heading, cells = incident_cells(incident)
    width = max(len(label) for label in INCIDENT_LABELS)
    return [f"incident {heading} (UTC):",
            *(f"  {label.ljust(width)}  {value}" for label, value in cells)]


def _incident_order(incident: dict[str, Any]) -> tuple[str, ...]:
    return (str(incident.get("started_at")), str(incident.get("carrier")),
            str(incident.get("channel")), str(incident.get("incident_id")))


class Printout:
    """The alerts as they come (the highest revision of each), the dead letters and the
    incidents (the highest revision of each), printed once the sample's have all arrived:
    the alerts in event-time order, in aligned columns, then the dead letters, then one
    block per standing incident (not retracted) in order of start: the same every run
    whatever the arrival order. Later ones are printed as they come (an incident when it
    opens, resolves or is retracted)."""

    def __init__(self, topics: dict[str, str], out: IO[str]) -> None:
        self.names = {topic: name for name, topic in topics.items()}  # without a run prefix
        self.alerts_topic = topics["alerts"]
        self.incidents_topic = topics.get("incidents")
        self.out = out
        self.latest: dict[str, dict[str, Any]] = {}  # alert_id -> highest revision
        self.dead: list[dict[str, Any]] = []
        self.incidents: dict[str, dict[str, Any]] = {}  # incident_id -> highest revision
        self.revised = 0  # revisions seen (late messages, held or not)
        self.printed = False
        self.table: Table | None = None

    @property
    def open_ids(self) -> set[str]:
        return {i for i, a in self.latest.items() if a.get("status", "open") == "open"}

    @property
    def standing_incidents(self) -> dict[str, dict[str, Any]]:
        """incident_id -> the highest revision, retracted ones dropped, without detected_at
        and revision (what Expected.incidents holds)."""
        from streams.core import revisions

        return revisions.standing(self.incidents.values(), revisions.INCIDENT_ID)

    def add(self, topic: str, obj: dict[str, Any]) -> None:
        if topic == self.alerts_topic:
            alert_id, revision = obj.get("alert_id"), obj.get("revision") or 1
            if revision <= (self.latest.get(alert_id) or {}).get("revision", 0):
                return  # an at-least-once repeat, or an older revision
            if revision > 1:
                self.revised += 1
            self.latest[alert_id] = obj
            if self.printed:
                self._print_alert(obj)
        elif topic == self.incidents_topic:
            self._add_incident(obj)
        else:
            record = {**obj, "source_topic": self.names.get(obj.get("source_topic"),
                                                            obj.get("source_topic"))}
            self.dead.append(record)
            if self.printed:
                print(format_dead_letter(record), file=self.out, flush=True)

    def _add_incident(self, obj: dict[str, Any]) -> None:
        incident_id, revision = obj.get("incident_id"), obj.get("revision")
        if (not isinstance(incident_id, str) or not isinstance(revision, int)
                or not isinstance(obj.get("status"), str)):
            return  # not an incident record: nothing to show
        held = self.incidents.get(incident_id)
        if held is not None and revision <= held["revision"]:
            return  # an at-least-once repeat, or an older revision
        self.incidents[incident_id] = obj
        if not self.printed:
            return
        # later on: when one opens, resolves or is retracted (not on each count's change)
        before = None if held is None else (held["status"], held.get("resolved_at"))
        if before != (obj["status"], obj.get("resolved_at")):
            if obj["status"] == "retracted":
                heading, _ = incident_cells(obj)
                print(f"incident {heading} from {str(obj.get('started_at'))[:16]}: "
                      f"retracted", file=self.out, flush=True)
            else:
                print("\n".join(format_incident(obj)), file=self.out, flush=True)

    def _print_alert(self, alert: dict[str, Any]) -> None:
        cells = alert_cells(alert)
        table = self.table or Table([cells], minimum=LINE_WIDTHS)
        print(table.line(cells), file=self.out, flush=True)

    def print_all(self) -> None:
        self.printed = True
        alerts = sorted((a for a in self.latest.values() if a.get("status", "open") == "open"),
                        key=_event_order)
        rows = [alert_cells(a, revision_note=False) for a in alerts]
        self.table = Table(rows)
        print(self.table.line(COLUMNS), file=self.out)
        for cells in rows:
            print(self.table.line(cells), file=self.out)
        for record in sorted(self.dead, key=lambda d: (str(d.get("source_topic")),
                                                       d.get("partition") or 0,
                                                       d.get("offset") or 0)):
            print(format_dead_letter(record), file=self.out)
        for incident in sorted(self.standing_incidents.values(), key=_incident_order):
            print("\n".join(format_incident(incident)), file=self.out)
        self.out.flush()


async def _print_until(consumer: Any, topics: dict[str, str], expected: Expected,
                       args: argparse.Namespace, worker: WorkerProcess, stop: asyncio.Event,
                       out: IO[str], lookup: Lookups | None = None) -> int:
    import orjson

    shown = Printout(topics, out)
    deadline = time.monotonic() + args.timeout
    last_record = time.monotonic()
    while not stop.is_set():
        if worker.poll() is not None:
            print(f"the worker exited with code {worker.poll()}", file=sys.stderr)
            return 1
        batch = await consumer.getmany(timeout_ms=200)
        for tp, records in batch.items():
            for record in records:
                last_record = time.monotonic()
                try:
                    obj = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    shown.add(tp.topic, obj)
        if shown.printed:
            continue
        now = time.monotonic()
        # every expected record in as it ends (an incident resolved, not just opened), and
        # nothing else standing: the printout is the same every run
        complete = (shown.open_ids == expected.alert_ids
                    and len(shown.dead) >= expected.dead_letters
                    and shown.standing_incidents == expected.incidents)
        if complete and now - last_record >= QUIET_SECONDS:
            shown.print_all()
            if shown.revised:
                print(f"({shown.revised} revisions arrived on the way: late messages "
                      f"corrected alerts; the ones above are the final ones)", file=sys.stderr)
            if lookup is not None:
                # prevention: what a label platform would have been told before selling
                await lookup.print(out)
            counts = (f"{len(expected.alert_ids)} alerts and "
                      f"{_plural(len(expected.incidents), 'incident')}")
            if args.exit_after_sample:
                print(f"all {counts} expected arrived", file=sys.stderr)
                return 0
            print(f"demo: idle: all {counts} of the sample are in; "
                  f"the worker keeps watching {topics['labels']} and {topics['scans']}. "
                  f"Ctrl-C stops it (worker and broker).", file=sys.stderr, flush=True)
        elif now > deadline:
            missing = len(expected.alert_ids - shown.open_ids)
            unexpected = len(shown.open_ids - expected.alert_ids)
            standing = shown.standing_incidents
            differ = sum(standing.get(i) != v for i, v in expected.incidents.items())
            extra = len(standing.keys() - expected.incidents.keys())
            print(f"timeout: {missing} of {len(expected.alert_ids)} expected alerts missing, "
                  f"{unexpected} unexpected open; {differ} of {len(expected.incidents)} "
                  f"expected incidents missing or not as expected, {extra} unexpected",
                  file=sys.stderr)
            shown.print_all()
            if args.exit_after_sample:
                return 1
            print("demo: idle. Ctrl-C stops it (worker and broker).", file=sys.stderr,
                  flush=True)
    return 130 if args._signal == signal.SIGINT else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def _start_console(args: argparse.Namespace, kafka: Any,
                         topics: dict[str, str], web_port: int,
                         stop: asyncio.Event) -> asyncio.Future[None] | None:
    """The live console on the demo's topics, its URL printed; None with --console-port -1."""
    if args.console_port < 0:
        return None
    from streams.runtime.console import Console, ConsoleConfig

    port = args.console_port
    for attempt in (port, 0):  # the asked port, else any free one
        console = Console(ConsoleConfig(
            kafka=kafka, port=attempt, worker_urls=[f"http://127.0.0.1:{web_port}"],
            since=datetime(1970, 1, 1, tzinfo=UTC),  # the whole sample, however old
            topics={"alert": topics["alerts"], "incident": topics["incidents"],
                    "action": topics["actions"]}))
        started = asyncio.Event()
        task = asyncio.ensure_future(console.run(stop, started))
        waiting = asyncio.ensure_future(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if started.is_set():
            print(f"console: {console.url}/", file=sys.stderr, flush=True)
            return task
        waiting.cancel()
        failure = task.exception()
        if not isinstance(failure, OSError) or attempt == 0:
            raise failure or RuntimeError("the console stopped while starting")
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lookups:
    """After the alerts: the lookup API's answer for one re-issued number (the earliest
    previously_used alert's of the sample, else duplicate_tracking's) and one fresh number,
    both the same every run, as of the sample's last event (the API answers for any `at`;
    now, the sample's window has long passed)."""

    def __init__(self, url: str, lines: list[bytes],
                 reissued: tuple[str, str] | None) -> None:
        import random

        import orjson

        from streams.core.numbers import generate

        self.url = url
        self.reissued = reissued
        latest = ""
        numbers = set()
        for line in lines:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            numbers.add(str(obj.get("tracking_number")))
            for name in ("purchased_at", "occurred_at", "voided_at"):
                value = obj.get(name)
                if isinstance(value, str) and value > latest:
                    latest = value
        self.at = latest
        rng = random.Random(20250224)  # a fixed number the sample never uses
        fresh = generate("usps", "usps_impb", rng=rng)
        while fresh in numbers:
            fresh = generate("usps", "usps_impb", rng=rng)
        self.fresh = ("usps", fresh)

    async def print(self, out: IO[str]) -> None:
        asks = [("re-issued", self.reissued), ("fresh", self.fresh)]
        print(f"lookups before selling a label, as of {self.at}:", file=out)
        for what, found in asks:
            if found is None:
                continue
            answer = await asyncio.to_thread(self._get, *found)
            print(f"  {what:<9} {format_lookup(answer)}", file=out, flush=True)

    def _get(self, carrier: str, number: str) -> dict[str, Any]:
        import urllib.parse
        import urllib.request

        import orjson

        url = (f"{self.url}/v1/tracking/{carrier}/{urllib.parse.quote(number, safe='')}"
               f"?at={urllib.parse.quote(self.at)}")
        for _ in range(50):  # the web server may still be settling after a rebalance
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return dict(orjson.loads(response.read()))
            except OSError:
                time.sleep(0.2)
        return {"carrier": carrier, "tracking_number": number, "status": "unanswered"}


def format_lookup(answer: dict[str, Any]) -> str:
    head = (f"{answer.get('carrier', '?')} {answer.get('tracking_number', '?')}: "
            f"{str(answer.get('status', '?')).upper()}")
    holders = answer.get("holders") or []
    if holders:
        head += " by " + ", ".join(f"{h['seller_id']} ({h['label_id']})" for h in holders)
    scan = answer.get("last_scan")
    if scan:
        head += f"; last scan {scan['status']} {scan['occurred_at'][:16]}"
        if scan.get("postal_code"):
            head += f" at {scan['postal_code']}"
    if answer.get("free_after"):
        head += f"; free after {answer['free_after'][:10]}"
    return head


def _read_lines(path: Path) -> list[bytes]:
    from streams.tools.samples import read_jsonl

    return list(read_jsonl(path))


def run(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None
    # aiokafka logs retries (a new topic's leader not known yet) that are not ours to show
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    args._local_broker = bootstrap is None
    args._signal = None
    args._starting = True

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            args._signal = signum
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        task = asyncio.ensure_future(_with_broker(args, bootstrap, stop))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and args._starting:
            # Still starting up (broker, worker, topics): cancel that step; the finally
            # clauses stop whatever was started. Past start-up, the alert loop watches
            # `stop` itself and the cleanup must not be cut short.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return 130 if args._signal == signal.SIGINT else 0
        # Past start-up the alert loop sees `stop` and returns; its clean-up (worker, broker)
        # must run to the end. (task.result() here, before it finished, raised
        # InvalidStateError: the traceback after Ctrl-C.)
        stopper.cancel()
        return await task

    from streams.runtime.kafka_io import KafkaConfigError, KafkaUnavailable

    try:
        return asyncio.run(main())
    except (KafkaUnavailable, KafkaConfigError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


async def _with_broker(args: argparse.Namespace, bootstrap: str | None,
                       stop: asyncio.Event) -> int:
    if bootstrap is not None:
        return await _demo(args, bootstrap, stop, sys.stdout)
    from streams.local.broker import LocalBroker

    print("starting a local Kafka broker (first run downloads the jars)...", file=sys.stderr)
    broker = LocalBroker()
    starting = asyncio.get_running_loop().run_in_executor(None, broker.start)
    try:
        await asyncio.shield(starting)
        print(f"broker ready at {broker.bootstrap_servers}", file=sys.stderr)
        return await _demo(args, broker.bootstrap_servers, stop, sys.stdout)
    finally:
        # interrupted while starting: let the start finish, then stop what it started
        with contextlib.suppress(BaseException):
            await starting
        await asyncio.to_thread(broker.stop)
        print("broker stopped", file=sys.stderr)
