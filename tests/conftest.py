"""Shared fixtures: a real Kafka broker for the integration tests, and topic helpers.

`kafka_bootstrap` (session) yields a bootstrap address:
  1. $KAFKA_BOOTSTRAP_SERVERS, when set (an existing broker; nothing is started);
  2. with TRACKING_VALIDATOR_TEST_BROKER=container: a testcontainers `apache/kafka` container
     in KRaft mode, on Docker or podman (tests/container_engine.py);
  3. else (`local`, the default): `streams.local.broker.LocalBroker`, a real broker from the
     Kafka jars (Java 17+, Maven).
With CI=true a missing broker fails the tests; elsewhere they are skipped with the reason.
`in_ci()` and `no_broker(reason)` apply that rule for the tests that start a broker of their
own, or need files from outside the repository (`from conftest import in_ci, no_broker`).

`create_topic` (function) is an async factory: `name = await create_topic("labels", 3)`
creates a uniquely named topic, waits until every partition has a leader, and deletes the
topic after the test. `kafka_admin` is a started aiokafka admin client.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import NoReturn

import pytest

KAFKA_IMAGE = "apache/kafka:4.1.1"
BROKER_ENV = "TRACKING_VALIDATOR_TEST_BROKER"
BROKERS = ("local", "container")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def no_broker(reason: str) -> NoReturn:
    """Fail under CI (a broker is required there), skip elsewhere. Tests that start a broker
    of their own call it when it cannot start (`from conftest import no_broker`)."""
    if in_ci():
        pytest.fail(f"no Kafka broker for the integration tests (CI=true): {reason}")
    pytest.skip(f"no Kafka broker: {reason}")


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    """apache/kafka in KRaft mode via testcontainers; the host port is chosen first so the
    advertised listener can name it."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from streams.local.broker import free_port, wait_for_metadata

    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9094, port)
        .with_env("CLUSTER_ID", "tv-test-cluster-00001w")
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:9094")
        .with_env(
            "KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:9092,HOST://127.0.0.1:{port}"
        )
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,HOST:PLAINTEXT",
        )
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "4")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_NUM_PARTITIONS", "1")
        .with_env("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m")
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
    )
    container.start()
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_for_metadata(bootstrap, timeout=60)
        yield bootstrap
    finally:
        container.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for this test session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield external
        return

    choice = os.environ.get(BROKER_ENV, "local").strip() or "local"
    if choice not in BROKERS:
        pytest.fail(f"{BROKER_ENV}={choice!r}: expected one of {', '.join(BROKERS)}")
    if choice == "container":
        from container_engine import EngineError, find_engine

        try:
            find_engine()
        except EngineError as exc:
            no_broker(f"{BROKER_ENV}=container: {exc}")
        with _kafka_container() as bootstrap:
            yield bootstrap
        return

    from streams.local.broker import BrokerError, LocalBroker

    try:
        broker = LocalBroker()
        broker.start()
    except BrokerError as exc:
        no_broker(f"local broker: {exc}")
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


# ---------------------------------------------------------------- topic helpers


def unique_topic_name(prefix: str = "test") -> str:
    """`<prefix>-<12 hex>`: a topic name no other test (or earlier run) uses."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "-", prefix)[:180] or "test"
    return f"{clean}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[object]:
    """A started `aiokafka.admin.AIOKafkaAdminClient` on the test broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def wait_for_topic(admin: object, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Wait until `name` has `partitions` partitions, each with a leader."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics([name])
        parts = described[0].get("partitions", []) if described else []
        if (
            described
            and described[0].get("error_code") == 0
            and len(parts) == partitions
            and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in parts)
        ):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topic {name} not ready after {timeout}s: {described}")
        await asyncio.sleep(0.1)


CreateTopic = Callable[..., Awaitable[str]]


@pytest.fixture
async def create_topic(kafka_admin: object) -> AsyncIterator[CreateTopic]:
    """Async factory: `await create_topic(prefix="test", partitions=1, config=None,
    name=None)` creates a topic (a unique name from `prefix` unless `name` is given), waits
    for its leaders, returns the name; the topics are deleted after the test."""
    from aiokafka.admin import NewTopic

    created: list[str] = []

    async def _create(
        prefix: str = "test",
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> str:
        topic = name or unique_topic_name(prefix)
        response = await kafka_admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=dict(config or {}),
                )
            ]
        )
        for error in getattr(response, "topic_errors", []):
            code = error[1]
            if code != 0:
                raise RuntimeError(f"creating topic {topic} failed: error {code} {error[2:]}")
        created.append(topic)
        await wait_for_topic(kafka_admin, topic, partitions)
        return topic

    yield _create

    if created:
        with contextlib.suppress(Exception):
            await kafka_admin.delete_topics(created)


# ---------------------------------------------------------------- a SASL_SSL broker


@pytest.fixture(scope="session")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Path of a client properties file (`--kafka-config`) for a local broker with a SASL_SSL
    listener (SCRAM-SHA-512 and a client certificate, throwaway CA), as `tracking-validator
    broker --sasl-ssl` prints it. Always a local broker: an external one has other secrets."""
    from streams.local.broker import BrokerError, LocalBroker

    try:
        broker = LocalBroker(sasl_ssl=True)
        broker.start()
    except BrokerError as exc:
        no_broker(f"local SASL_SSL broker: {exc}")
    try:
        path = tmp_path_factory.mktemp("sasl") / "client.properties"
        lines = [f"bootstrap.servers={broker.bootstrap_servers}"]
        lines += [f"{key}={value}" for key, value in broker.client_properties.items()]
        path.write_text("\n".join(lines) + "\n")
        yield str(path)
    finally:
        broker.stop()


# ---------------------------------------------------------------- a 3-node cluster


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[object]:
    """A started `streams.local.cluster.LocalCluster` of 3 nodes, shared by the session's
    `cluster` tests (they kill and restart its nodes, and leave every node running). Always
    local: the tests need to kill its nodes."""
    from streams.local.broker import BrokerError
    from streams.local.cluster import LocalCluster

    cluster = LocalCluster(3)
    try:
        cluster.start()
    except BrokerError as exc:
        no_broker(f"local 3-node cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
