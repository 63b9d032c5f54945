"""A live page of incidents, alerts, actions and workers' lag, for people (default :8080).

Reads the alerts, incidents and actions topics (event time from --from, by default the last 7
days before the latest event seen) with no consumer group, keeps a small view of them and
serves one page (no build step, nothing from the network) that updates through server-sent
events within a second or two of a new record. It says so on the page when it loses the
broker, and goes on when the broker is back. With --worker-url (repeatable) it shows each
worker's lag from its /metrics.

Access: when TRACKING_VALIDATOR_API_TOKEN is set (as for the lookup API), requests need
`Authorization: Bearer <token>`; open `http://HOST:PORT/?token=<token>` once in a browser
(it sets a cookie). Exit status: 0 when stopped by SIGINT/SIGTERM, 2 on a usage error, a port
in use or an unreachable Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from streams.runtime import kafka_io
from streams.tools.impact import parse_time

TOKEN_ENV = "TRACKING_VALIDATOR_API_TOKEN"


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to serve the page on (default 127.0.0.1)")
    add("--port", type=int, default=8080, help="port to serve the page on (default 8080)")
    add("--from", dest="since", type=parse_time, default=None, metavar="TIME",
        help="show records from this event time (RFC 3339 or a date; default: the last 7 "
        "days before the latest event seen)")
    add("--worker-url", action="append", default=[], metavar="URL",
        help="a worker's web server (its --web-port), to show its lag; repeatable")
    add("--alerts-topic", default="tracking.alerts", help="default tracking.alerts")
    add("--incidents-topic", default="tracking.incidents", help="default tracking.incidents")
    add("--actions-topic", default="tracking.actions", help="default tracking.actions")
    add("--log-level", "--loglevel", dest="loglevel", default="warning",
        choices=["debug", "info", "warning", "error"], help="log level (default warning)")
    kafka_io.add_bootstrap_argument(parser)


def run(args: argparse.Namespace) -> int:
    from streams.runtime.console import Console, ConsoleConfig

    logging.basicConfig(level=args.loglevel.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the page says it: no spam
    if not 0 <= args.port <= 65535:
        print("console: error: --port must be 0-65535", file=sys.stderr)
        return 2
    try:
        kafka = kafka_io.config_from_args(args)
    except kafka_io.KafkaConfigError as exc:
        print(f"console: {exc}", file=sys.stderr)
        return 2
    config = ConsoleConfig(
        kafka=kafka, host=args.host, port=args.port, since=args.since,
        token=os.environ.get(TOKEN_ENV) or None, worker_urls=list(args.worker_url),
        topics={"alert": args.alerts_topic, "incident": args.incidents_topic,
                "action": args.actions_topic})

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        console = Console(config)
        started = asyncio.Event()
        running = asyncio.ensure_future(console.run(stop, started))
        waiting = asyncio.ensure_future(started.wait())
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            waiting.cancel()
            await running  # raises why it could not start
            return 0
        print(f"console: {console.url}/", flush=True)
        await running
        return 0

    try:
        return asyncio.run(main())
    except (kafka_io.KafkaUnavailable, kafka_io.KafkaConfigError) as exc:
        print(f"console: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, or the address is not ours
        print(f"console: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
