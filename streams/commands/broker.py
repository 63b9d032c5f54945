"""Run a local single-node Kafka broker (KRaft, real jars) in the foreground.

Prints `bootstrap.servers=127.0.0.1:PORT` as the first line on stdout once the broker serves
metadata, then runs until SIGINT or SIGTERM and stops it cleanly. Progress goes to stderr.

With `--sasl-ssl` the port is a SASL_SSL listener (SCRAM-SHA-512, TLS with a throwaway CA and a
client certificate made at start, removed at exit) and the client properties follow the first
line on stdout (security.protocol, sasl.mechanism, sasl.username, sasl.password,
ssl.ca.location, ssl.certificate.location, ssl.key.location): save stdout to a file and give
it to `--kafka-config`.

With `--nodes N` (N > 1) it runs a KRaft cluster of N combined controller+broker nodes
(`streams.local.cluster`) and `bootstrap.servers=` lists every node. One node can then be
stopped and started again, for failover tests and benchmarks, by a line on stdin or a signal:

    kill N    SIGKILL node N (a crash)          stop N    stop node N cleanly
    start N   start node N again (same ports and data)    status    which nodes run
    SIGUSR1   SIGKILL the highest-numbered running node
    SIGUSR2   start every node that is down

Each command's outcome is one line on stdout: `node.N=killed|stopped|started|running|down`
(or `error=...`), so a script can wait for it.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from typing import Any


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
        "--nodes",
        type=int,
        default=1,
        help="nodes of the KRaft cluster, each a controller and a broker (default 1); "
        "N > 1: control one node by stdin lines `kill|stop|start N`, `status`, or SIGUSR1 "
        "(kill the last running) / SIGUSR2 (start those down)",
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

        if args.nodes < 1:
            print(f"tracking-validator broker: error: --nodes must be 1 or more, not "
                  f"{args.nodes}", file=err)
            return 2
        if args.nodes > 1:
            if args.sasl_ssl or args.port is not None:
                print("tracking-validator broker: error: --sasl-ssl and --port are for one "
                      "node only", file=err)
                return 2
            return _run_cluster(args, version)
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


def _run_cluster(args: argparse.Namespace, version: str) -> int:
    """The foreground cluster: serve, obey control lines and signals, stop on SIGINT/TERM."""
    from streams.local.broker import BrokerError
    from streams.local.cluster import LocalCluster

    err = sys.stderr
    commands: queue.Queue[str] = queue.Queue()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous: dict[Any, Any] = {s: signal.signal(s, _raise_stop) for s in stops}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1,
                                             lambda *_: commands.put("kill last"))
    previous[signal.SIGUSR2] = signal.signal(signal.SIGUSR2,
                                             lambda *_: commands.put("start down"))
    cluster = LocalCluster(args.nodes, data_dir=args.data_dir, kafka_version=version)
    wanted_down: set[int] = set()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                commands.put(line.strip())

    def obey(line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "status":
            for i in range(1, args.nodes + 1):
                state = "running" if i in cluster.running() else "down"
                print(f"node.{i}={state}", flush=True)
            return
        running = cluster.running()
        if rest == "last":
            targets = running[-1:]
        elif rest == "down":
            targets = [i for i in range(1, args.nodes + 1) if i not in running]
        elif rest.strip().isdigit():
            targets = [int(rest)]
        else:
            raise BrokerError(f"unknown command {line!r}: kill N, stop N, start N or status")
        for node in targets:
            if word == "kill":
                wanted_down.add(node)
                cluster.kill_node(node)
                print(f"node.{node}=killed", flush=True)
            elif word == "stop":
                wanted_down.add(node)
                cluster.stop_node(node)
                print(f"node.{node}=stopped", flush=True)
            elif word == "start":
                cluster.start_node(node)
                wanted_down.discard(node)
                print(f"node.{node}=started", flush=True)
            else:
                raise BrokerError(f"unknown command {line!r}: kill N, stop N, start N or status")

    try:
        cluster.start()
        print(f"bootstrap.servers={cluster.bootstrap_servers}", flush=True)
        print(
            f"tracking-validator broker: {args.nodes} nodes ready in {cluster.started_in:.1f}s; "
            f"data dir {cluster.data_dir}; stop with Ctrl-C; control: `kill N`, `stop N`, "
            "`start N`, `status` on stdin, or SIGUSR1 / SIGUSR2",
            file=err,
            flush=True,
        )
        threading.Thread(target=read_stdin, daemon=True, name="control").start()
        while True:
            try:
                line = commands.get(timeout=0.5)
            except queue.Empty:
                line = None
            if line is not None:
                try:
                    obey(line)
                except BrokerError as exc:
                    print(f"error={exc}".replace("\n", " "), flush=True)
            for i, node in cluster.nodes.items():
                rc = node.poll()
                if i not in wanted_down and node.process is not None and rc is not None:
                    print(f"tracking-validator broker: node {i} exited unexpectedly (code "
                          f"{rc}); log: {node.log_path}", file=err)
                    return 1
    except _Stop:
        print("tracking-validator broker: stopping", file=err, flush=True)
        return 0
    except BrokerError as exc:
        print(f"tracking-validator broker: error: {exc}", file=err)
        return 1
    finally:
        for s in previous:  # a second Ctrl-C must not interrupt the clean stop
            signal.signal(s, signal.SIG_IGN)
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
