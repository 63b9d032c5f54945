"""A local KRaft cluster of N combined controller+broker nodes from the same jars as
`LocalBroker`, on free 127.0.0.1 ports, for failover tests and benchmarks.

    with LocalCluster(3) as cluster:
        print(cluster.bootstrap_servers)      # 127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
        cluster.kill_node(2)                  # SIGKILL: a crashed broker
        cluster.start_node(2)                 # back on the same ports and data

Every node is a voter of a static quorum of N (`controller.quorum.voters` lists them all,
which a multi-node static quorum needs). The internal topics (consumer offsets,
transactions) are replicated min(N, 3) times with min.insync.replicas min(N, 3) - 1, as a
production cluster's are, so losing one node of three loses no committed offset.

Sized for a 2-core machine with a worker beside it: small heaps, one network thread, few I/O
and background threads, a single GC and JIT compiler thread budget per node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from streams.local.broker import (
    KAFKA_VERSION,
    OWNER_FILE,
    TEMP_PREFIX,
    BrokerError,
    LocalBroker,
    free_port,
    new_cluster_id,
    probe_metadata,
    sweep_stale_data_dirs,
)

__all__ = ["CLUSTER_JVM_OPTIONS", "LocalCluster", "cluster_properties"]

log = logging.getLogger(__name__)

# Per node: G1 with 1 parallel/1 concurrent GC thread and 2 JIT compiler threads (the
# defaults scale with the cores and would be 2/1/2 here, times three JVMs), and a small
# thread stack. Measured: three nodes idle at 0.06 cores together, ~330 MB resident each,
# and start in 7-16 s.
CLUSTER_JVM_OPTIONS = (
    "-XX:ParallelGCThreads=1",
    "-XX:ConcGCThreads=1",
    "-XX:CICompilerCount=2",
    "-XX:+UseStringDeduplication",
    "-Xss512k",
)
CLUSTER_HEAP = ("192m", "384m")


def cluster_properties(nodes: int) -> dict[str, object]:
    """server.properties entries every node of an N-node cluster shares."""
    rf = min(nodes, 3)
    isr = max(1, rf - 1)
    return {
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "default.replication.factor": 1,  # topics say theirs (streams.runtime.replication)
        "num.network.threads": 1,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.replica.fetchers": 1,
        "log.cleaner.threads": 1,
        # a follower leaves the ISR after 10 s without catching up (the default is 30 s): a
        # killed node's partitions shrink their ISR, and acks=all answers again, sooner
        "replica.lag.time.max.ms": 10000,
        # a controller notices a dead broker after this (default 9 s, heartbeats every 2 s)
        "broker.session.timeout.ms": 6000,
        "broker.heartbeat.interval.ms": 1000,
        # leaders move back to their preferred node once it is back in sync
        "leader.imbalance.check.interval.seconds": 10,
    }


class LocalCluster:
    """N `LocalBroker` nodes forming one KRaft cluster; a context manager, or call
    `start()` / `stop()`. Nodes are numbered 1..N (their `node.id`)."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        kafka_version: str = KAFKA_VERSION,
        cache_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = 180.0,
        heap: tuple[str, str] = CLUSTER_HEAP,
        config: Mapping[str, object] | None = None,
    ) -> None:
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, not {nodes}")
        self.size = nodes
        self.host = host
        self.kafka_version = kafka_version
        self.cache_dir = cache_dir
        self.start_timeout = start_timeout
        self.heap = heap
        self.extra_config = dict(config or {})
        self._given_data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.data_dir: Path | None = None
        self.nodes: dict[int, LocalBroker] = {}
        self.started_in: float | None = None

    # -- addresses

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address, node 1 first (clients fall back to the next one)."""
        if not self.nodes:
            raise BrokerError("cluster not started")
        return ",".join(f"{self.host}:{b.port}" for _, b in sorted(self.nodes.items()))

    def node(self, node_id: int) -> LocalBroker:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise BrokerError(f"no node {node_id} (nodes 1..{self.size})") from None

    def node_at(self, address: str) -> int:
        """The id of the node listening at `host:port`."""
        port = int(address.rpartition(":")[2])
        for node_id, broker in self.nodes.items():
            if broker.port == port:
                return node_id
        raise BrokerError(f"no node at {address}")

    def running(self) -> list[int]:
        return [i for i, b in sorted(self.nodes.items()) if b.poll() is None and b.process]

    # -- lifecycle

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        if self.nodes:
            raise BrokerError("cluster already started")
        began = time.monotonic()
        if self._given_data_dir is not None:
            self._given_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self._given_data_dir
        else:
            sweep_stale_data_dirs()
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}cluster-"))
            (self.data_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        ports: set[int] = set()

        def pick() -> int:
            while (port := free_port(self.host)) in ports:
                pass
            ports.add(port)
            return port

        plan = {i: (pick(), pick()) for i in range(1, self.size + 1)}
        voters = ",".join(f"{i}@{self.host}:{c}" for i, (_, c) in plan.items())
        cluster_id = self._saved_cluster_id() or new_cluster_id()
        config = {**cluster_properties(self.size), **self.extra_config}
        for i, (port, controller) in plan.items():
            self.nodes[i] = LocalBroker(
                port=port, controller_port=controller, data_dir=self.data_dir / f"node-{i}",
                kafka_version=self.kafka_version, cache_dir=self.cache_dir, host=self.host,
                start_timeout=self.start_timeout, heap=self.heap, config=config,
                node_id=i, cluster_id=cluster_id, quorum_voters=voters,
                jvm_options=CLUSTER_JVM_OPTIONS,
            )
        try:
            for broker in self.nodes.values():
                broker.launch()
            deadline = began + self.start_timeout
            for broker in self.nodes.values():
                broker.wait_ready(max(5.0, deadline - time.monotonic()))
            self.wait_for_brokers(self.size, timeout=max(5.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        log.info("kafka cluster of %d nodes ready at %s in %.1fs", self.size,
                 self.bootstrap_servers, self.started_in)
        return self

    def _saved_cluster_id(self) -> str | None:
        assert self.data_dir is not None
        from streams.local.broker import _read_cluster_id

        return _read_cluster_id(self.data_dir / "node-1" / "kraft-logs")

    def wait_for_brokers(self, count: int | None = None, timeout: float = 60.0) -> None:
        """Until a running node's metadata lists `count` live brokers (default: every
        running node)."""
        want = len(self.running()) if count is None else count
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            for node_id in self.running():
                broker = self.nodes[node_id]
                with contextlib.suppress(OSError, BrokerError, ValueError):
                    assert broker.port is not None
                    seen = probe_metadata(self.host, broker.port)
                    if seen >= want:
                        return
            if time.monotonic() > deadline:
                raise BrokerError(f"the cluster lists {seen} of {want} brokers after "
                                  f"{timeout:.0f}s")
            time.sleep(0.2)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (a crash); its data stays for `start_node`."""
        self.node(node_id).kill()
        log.info("kafka node %d killed", node_id)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Stop one node cleanly (SIGTERM: a controlled shutdown moves its leaders first)."""
        self.node(node_id).stop(timeout=timeout)
        log.info("kafka node %d stopped", node_id)

    def start_node(self, node_id: int, timeout: float | None = None) -> None:
        """Start a stopped or killed node again on its ports and data; returns once it
        serves metadata."""
        broker = self.node(node_id)
        if broker.process is not None and broker.poll() is None:
            raise BrokerError(f"node {node_id} is running")
        broker.process = None
        broker.start_timeout = timeout or self.start_timeout
        broker.start()
        log.info("kafka node %d started again", node_id)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every node and remove the data unless it was given. Idempotent.

        A throwaway cluster's nodes are SIGKILLed (nothing of them is kept); kept data gets a
        SIGTERM to every node at once, so none waits on a quorum already leaving."""
        for broker in self.nodes.values():
            if self._given_data_dir is None:
                broker.kill()
            elif broker.process is not None and broker.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(broker.process.pid, signal.SIGTERM)
        for broker in self.nodes.values():
            with contextlib.suppress(Exception):
                broker.stop(timeout=timeout)
        self.nodes = {}
        if self.data_dir is not None and self._given_data_dir is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
