"""Deliver actions and incidents (optionally alerts) to a webhook: signed POSTs, retried, in order.

A consumer group of its own (--group): run several with one group to share the partitions.
Each record revision is one POST of the record as published (JSON), with the headers
    Idempotency-Key: <action_id|incident_id|alert_id>:<revision>
    X-Tracking-Validator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
the secret read from TRACKING_VALIDATOR_WEBHOOK_SECRET. Any 2xx is delivered; 408, 429, 5xx,
timeouts and connection errors are retried with exponential backoff and jitter (Retry-After
honoured) for up to --give-up-after; other answers, and retries given up, go to the dead-letter
topic. Offsets are committed only past records delivered or dead-lettered.

Exit status: 0 when stopped by SIGINT/SIGTERM, 1 when a dead letter could not be produced (it
stops before committing past the record), 2 on a usage error or an unreachable Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from urllib.parse import urlsplit

from streams.commands.worker import _duration
from streams.core.webhooks import SECRET_ENV
from streams.runtime import kafka_io

URL_ENV = "TRACKING_VALIDATOR_WEBHOOK_URL"
TOPICS = ("tracking.actions", "tracking.incidents")
OPTIONAL_TOPICS = ("tracking.alerts",)


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--url", default=os.environ.get(URL_ENV),
        help=f"the webhook to POST to, http:// or https:// (env {URL_ENV})")
    add("--topics", action="append", default=None, metavar="TOPIC[,TOPIC]",
        help="topics to deliver, comma-separated or repeated (default: "
        f"{','.join(TOPICS)}; add {OPTIONAL_TOPICS[0]} for the alerts too)")
    add("--group", default="tracking-validator-notify",
        help="consumer group; notifiers of one group share the partitions (default "
        "tracking-validator-notify)")
    add("--deadletter-topic", default="tracking.notify.deadletter",
        help="where rejected and given-up records go (default tracking.notify.deadletter)")
    add("--partitions", type=int, default=3,
        help="partitions of the dead-letter topic when notify creates it (default 3)")
    add("--replication", type=int, default=1,
        help="replication factor of the dead-letter topic when notify creates it (default 1, "
        "as the worker's)")
    add("--concurrency", type=int, default=16,
        help="requests in flight at most (different keys in parallel; default 16)")
    add("--timeout", type=_duration, default=10.0,
        help="seconds one request may take, e.g. 10 or 30s (default 10)")
    add("--give-up-after", type=_duration, default=86400.0,
        help="stop retrying a record this long after its first attempt, e.g. 24h, 90m "
        "(default 24h)")
    add("--max-retry-wait", type=_duration, default=300.0,
        help="the longest wait between two attempts, Retry-After included (default 5m)")
    add("--ca-file", default=None,
        help="PEM CAs to verify the webhook's TLS certificate (default: the system's)")
    add("--web-port", type=int, default=0,
        help="serve /metrics, /health and /ready on this port (default: none)")
    add("--web-host", default="127.0.0.1", help="address to serve them on (default 127.0.0.1)")
    add("--log-level", "--loglevel", dest="loglevel", default="info",
        choices=["debug", "info", "warning", "error"], help="log level (default info)")
    kafka_io.add_bootstrap_argument(parser)


def _topics(values: list[str] | None) -> list[str]:
    if not values:
        return list(TOPICS)
    return list(dict.fromkeys(t.strip() for v in values for t in v.split(",") if t.strip()))


def run(args: argparse.Namespace) -> int:
    from streams.runtime.webhooks import Fatal, Notifier, NotifyConfig

    logging.basicConfig(level=args.loglevel.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    secret = os.environ.get(SECRET_ENV, "")
    problems = []
    if not args.url or urlsplit(args.url).scheme not in ("http", "https") or \
            not urlsplit(args.url).netloc:
        problems.append(f"--url (or {URL_ENV}) must be an http:// or https:// URL")
    if not secret:
        problems.append(f"{SECRET_ENV} must hold the signing secret")
    if args.concurrency < 1:
        problems.append("--concurrency must be at least 1")
    if args.partitions < 1 or args.replication < 1:
        problems.append("--partitions and --replication must be at least 1")
    if args.ca_file and not os.path.isfile(args.ca_file):
        problems.append(f"--ca-file {args.ca_file}: no such file")
    if problems:
        for problem in problems:
            print(f"notify: error: {problem}", file=sys.stderr)
        return 2
    try:
        kafka = kafka_io.config_from_args(args)
    except kafka_io.KafkaConfigError as exc:
        print(f"notify: {exc}", file=sys.stderr)
        return 2
    config = NotifyConfig(
        url=args.url, secret=secret.encode(), topics=_topics(args.topics), group=args.group,
        deadletter_topic=args.deadletter_topic, kafka=kafka, concurrency=args.concurrency,
        timeout=args.timeout, give_up_after=args.give_up_after,
        max_retry_wait=args.max_retry_wait, ca_file=args.ca_file, web_host=args.web_host,
        web_port=args.web_port, deadletter_partitions=args.partitions,
        deadletter_replication=args.replication)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        notifier = Notifier(config)
        print(f"notify: delivering {', '.join(config.topics)} to {config.url} "
              f"(group {config.group})", file=sys.stderr, flush=True)
        await notifier.run(stop)
        return 0

    try:
        return asyncio.run(main())
    except (kafka_io.KafkaUnavailable, kafka_io.KafkaConfigError) as exc:
        print(f"notify: {exc}", file=sys.stderr)
        return 2
    except Fatal as exc:
        print(f"notify: stopped: {exc}", file=sys.stderr)
        return 1
