"""Run a stream worker: validate labels and scans from Kafka and publish alerts.

Workers started with the same --app-id form one consumer group and share the partitions;
give each its own --state-dir. Every flag has an environment variable (shown in --help);
flags win over the environment. Logs go to stderr; SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from streams.commands import response_settings
from streams.runtime import kafka_security
from streams.runtime.kafka_security import KafkaClientConfig, KafkaConfigError
from streams.runtime.stream_config import ENV_NAMES, StreamConfig


def _env(name: str) -> str:
    return ENV_NAMES.get(name, f"TRACKING_VALIDATOR_{name.upper()}")


def _duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `24h` or `180d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    d = StreamConfig.__dataclass_fields__

    def opt(flag: str, field: str, help: str, **kw: Any) -> None:
        default = d[field].default
        shown = f"; default {default}" if default not in ("", None) else ""
        add(flag, dest=field, default=None, help=f"{help} (env {_env(field)}{shown})", **kw)

    opt("--bootstrap", "bootstrap", "Kafka bootstrap servers, host:port[,host:port]",
        metavar="HOST:PORT")
    opt("--app-id", "app_id", "application id: consumer group, internal topic and changelog prefix")
    opt("--state-dir", "state_dir", "directory of the worker's RocksDB state", type=Path)
    opt("--partitions", "partitions",
        "partitions of the internal topic and changelog, and of topics the worker creates",
        type=int)
    opt("--replication", "replication", "replication factor of topics the worker creates; "
        "0: 3 on three brokers or more, else one per broker", type=int)
    opt("--min-insync-replicas", "min_insync_replicas", "min.insync.replicas of topics the "
        "worker creates; 0: 2 with 3 replicas or more, else the broker's default", type=int)
    opt("--standby-replicas", "standby_replicas", "warm standby copies of each table "
        "partition on other workers (faster takeover when a worker dies)", type=int)
    opt("--web-port", "web_port", "port of Faust's web server (and the lookup API); "
        "0 disables it", type=int)
    opt("--web-host", "web_host", "host name or address the other workers reach this one's "
        "web server at, also the address it listens on (default: this host's name, all "
        "interfaces)")
    opt("--labels-topic", "labels_topic", "input topic of label events")
    opt("--scans-topic", "scans_topic", "input topic of carrier scans")
    opt("--alerts-topic", "alerts_topic", "output topic of alerts")
    opt("--deadletter-topic", "deadletter_topic", "output topic of unprocessable input")
    opt("--incidents-topic", "incidents_topic", "output topic of incidents (key carrier:channel)")
    opt("--actions-topic", "actions_topic", "output topic of per-order actions (key order_id)")
    add("--no-response", dest="response", action="store_const", const=False, default=None,
        help="no response stage: alerts only, no incidents or actions "
        f"(env {_env('response')}=0)")
    opt("--internal-topic", "internal_topic",
        "re-keyed internal topic (default <app-id>-tracking-events)")
    opt("--commit-interval", "commit_interval", "seconds between offset commits", type=float)
    opt("--alert-hold", "alert_hold", "seconds to hold back an alert a late message could "
        "still change (a correction replaces it, a retraction cancels it)", type=float)
    opt("--stall-seconds", "stall_seconds", "seconds a partition's committed offset may stay "
        "flat with lag and no work before the watchdog re-seeks it and /ready turns 503",
        type=float)
    opt("--session-timeout", "session_timeout",
        "seconds before the group gives a silent worker's partitions to the others", type=float)
    add("--no-create-topics", dest="create_topics", action="store_const", const=False,
        default=None, help="do not create missing input/output topics at start "
        f"(env {_env('create_topics')}=0)")
    add("--reuse-window", default=None, type=_duration,
        help="how long a number stays in use after its label's last activity, e.g. 180d "
        "(env TRACKING_VALIDATOR_REUSE_WINDOW_DAYS, in days)")
    add("--clock-skew", default=None, type=_duration,
        help="tolerance between carrier and platform clocks, e.g. 24h "
        "(env TRACKING_VALIDATOR_CLOCK_SKEW_HOURS, in hours)")
    add("--max-message-bytes", default=None, type=int,
        help="larger input messages are dead-lettered as too_large "
        "(env TRACKING_VALIDATOR_MAX_MESSAGE_BYTES)")
    response_settings.add_arguments(parser)
    opt("--log-format", "log_format",
        "log lines as text, or one JSON object each (time, level, logger, message, worker_id)",
        choices=["text", "json"])
    opt("--worker-id", "worker_id", "id in every log line (default <hostname>-<pid>)")
    kafka_security.add_arguments(parser)
    # --loglevel / -l and TRACKING_VALIDATOR_LOGLEVEL: Faust's spelling, kept as aliases
    level = (os.environ.get("TRACKING_VALIDATOR_LOG_LEVEL")
             or os.environ.get("TRACKING_VALIDATOR_LOGLEVEL") or "warning")
    add("--log-level", "--loglevel", "-l", dest="loglevel", default=level,
        choices=["debug", "info", "warning", "error"],
        help="log level (env TRACKING_VALIDATOR_LOG_LEVEL; default warning)")


def config_from_args(args: argparse.Namespace) -> StreamConfig:
    config = StreamConfig.from_env()
    changes = {f: getattr(args, f, None) for f in StreamConfig.__dataclass_fields__
               if f != "settings"}
    config = config.with_(**changes)
    if getattr(args, "kafka_config", None):  # the file wins over the environment, key by key
        flag = getattr(args, "bootstrap", None)
        kafka = KafkaClientConfig.load(args.kafka_config, bootstrap=flag)
        config = config.with_(bootstrap=kafka.bootstrap, kafka=kafka)
    settings_changes: dict[str, Any] = {}
    if getattr(args, "reuse_window", None) is not None:
        settings_changes["reuse_window"] = timedelta(seconds=args.reuse_window)
    if getattr(args, "clock_skew", None) is not None:
        settings_changes["clock_skew"] = timedelta(seconds=args.clock_skew)
    if getattr(args, "max_message_bytes", None) is not None:
        settings_changes["max_message_bytes"] = args.max_message_bytes
    settings_changes.update(response_settings.changes(args))
    return config.with_(settings=replace(config.settings, **settings_changes))


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (KafkaConfigError, ValueError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    return serve(config, loglevel=args.loglevel)


def serve(config: StreamConfig, loglevel: str = "warning",
          on_built: Callable[[Any], None] | None = None) -> int:
    """Run one Faust worker in this process until SIGINT/SIGTERM; returns the exit code.
    `on_built(app)` is called with the app before it starts (replay reads it afterwards)."""
    import faust

    from streams.runtime.app import build_app
    from streams.runtime.kafka_io import KafkaUnavailable, check_connection
    from streams.runtime.logs import configure_logging

    # uvloop for the worker's loops (main and Faust's consumer thread): measured with
    # benchmarks/pipeline.py, ~1.3x the end-to-end throughput and p50 latency at 1,000
    # events/s from seconds (falling behind) to ~80 ms. A dependency on POSIX only.
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    # One handler for every logger (ours, Faust's, mode's, aiokafka's): Faust's Worker must
    # not install its own (override_logging=False), or JSON lines would mix with its text.
    configure_logging(config.log_format, loglevel, config.worker_id or None)
    # A wrong password, an untrusted CA, a plaintext client against a secured listener or no
    # broker at all: one line and exit 2 now, not a retry storm or Faust's traceback.
    try:
        asyncio.run(check_connection(config.kafka))
    except KafkaUnavailable as exc:
        logging.getLogger(__name__).error("worker: %s", exc)
        return 2
    config.state_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = build_app(config)
    if on_built is not None:
        on_built(app)
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        override_logging=False,
        quiet=True,  # no banner: stdout stays free for the caller
        stdout=sys.stderr,
        stderr=sys.stderr,
        redirect_stdouts=False,
    )
    # Faust's start-up spinner sets the root logger to DEBUG for good (it spins on every
    # record) and writes cursor escapes into logs: every aiokafka debug call then builds a
    # LogRecord, a large share of the worker's CPU per event (measured with py-spy).
    worker.spinner = None
    logging.getLogger(__name__).info("worker %s for %s", config.app_id, config.bootstrap)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    else:
        code = 0
    if app.tracking["runtime"]["fatal"] is not None:
        return code or 1  # stopped on an error: never report success
    return code
