"""Run a local single-node Kafka broker (KRaft, real jars) in the foreground.

Prints `bootstrap.servers=127.0.0.1:PORT` as the first line on stdout once the broker serves
metadata, then runs until SIGINT or SIGTERM and stops it cleanly. Progress goes to stderr.

With `--sasl-ssl` the port is a SASL_SSL listener (SCRAM-SHA-512, TLS with a throwaway CA and a
client certificate made at start, removed at exit) and the client properties follow the first
line on stdout (security.protocol, sasl.mechanism, sasl.username, sasl.password,
ssl.ca.location, ssl.certificate.location, ssl.key.location): save stdout to a file and give
it to `--kafka-config`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="broker port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="keep the broker's data here across runs (default: a temporary dir, removed on exit)",
    )
    parser.add_argument(
        "--kafka-version", default=None, help="Apache Kafka version to run (default: 4.1.1)"
    )
    parser.add_argument(
        "--sasl-ssl",
        action="store_true",
        help="serve SASL_SSL (SCRAM-SHA-512, throwaway CA) and print the client properties",
    )
    parser.add_argument(
        "--fetch-only",
        action="store_true",
        help="download the Kafka jars into the cache (once) and exit",
    )


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def run(args: argparse.Namespace) -> int:
    import logging

    from streams.local.broker import KAFKA_VERSION, BrokerError, LocalBroker, fetch_kafka

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="tracking-validator broker: %(message)s"
    )
    version = args.kafka_version or KAFKA_VERSION
    err = sys.stderr
    try:
        if args.fetch_only:
            path = fetch_kafka(version)
            print(f"tracking-validator broker: Kafka {version} jars in {path}", file=err)
            return 0

        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        broker = LocalBroker(
            port=args.port, data_dir=args.data_dir, kafka_version=version, sasl_ssl=args.sasl_ssl
        )
        try:
            broker.start()
            print(f"bootstrap.servers={broker.bootstrap_servers}", flush=True)
            for key, value in broker.client_properties.items():
                print(f"{key}={value}", flush=True)
            print(
                f"tracking-validator broker: ready in {broker.started_in:.1f}s; data dir "
                f"{broker.data_dir}; log {broker.log_path}; stop with Ctrl-C",
                file=err,
                flush=True,
            )
            while True:
                rc = broker.poll()
                if rc is not None:
                    broker.keep_data = True  # keep its log for the post-mortem
                    print(
                        f"tracking-validator broker: kafka exited unexpectedly (code {rc}); "
                        f"log: {broker.log_path}",
                        file=err,
                    )
                    return 1
                time.sleep(0.5)
        except _Stop:
            print("tracking-validator broker: stopping", file=err, flush=True)
            return 0
        finally:
            for s in previous:  # a second Ctrl-C must not interrupt the clean stop
                signal.signal(s, signal.SIG_IGN)
            broker.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
    except BrokerError as exc:
        print(f"tracking-validator broker: error: {exc}", file=err)
        return 1
