"""Plain aiokafka plumbing for the operator commands (replay, import, export, simulate, report).

These commands read a bounded slice of a topic and stop, so they use a consumer with no group:
it is assigned every partition, never joins a group and never commits, which is what keeps
them from disturbing the live workers' group. The end of the slice is the end offsets seen at
start; records produced afterwards are left for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from streams.runtime import kafka_security
from streams.runtime.kafka_security import DEFAULT_BOOTSTRAP, KafkaClientConfig, KafkaConfigError

__all__ = ["DEFAULT_BOOTSTRAP", "KafkaConfigError", "KafkaUnavailable"]

TOPIC_ALREADY_EXISTS = 36
# Input topics hold history: import and simulate write event-time record timestamps, and
# with the broker's default time retention (7 days) records older than that are deleted at
# once; replay needs at least a reuse window of history. Every command that creates an input
# topic (worker, demo through its worker, import, simulate) keeps records forever unless
# told otherwise, and lets a record be larger than the worker's --max-message-bytes (1 MiB
# by default), so that an oversized message reaches the worker, which dead-letters it as
# too_large, instead of being refused by the broker.
INPUT_RETENTION_MS = -1
INPUT_MAX_MESSAGE_BYTES = 8 << 20


def input_topic_config(retention_ms: int = INPUT_RETENTION_MS,
                       max_message_bytes: int = INPUT_MAX_MESSAGE_BYTES) -> dict[str, str]:
    """The configs an input topic (labels, scans) is created with."""
    return {"retention.ms": str(retention_ms), "max.message.bytes": str(max_message_bytes)}

_IN_FLIGHT = 2000  # unacknowledged sends before waiting: bounds memory, keeps batches full


# A command gives up on an unreachable or refusing broker after this long, with one line.
CONNECT_TIMEOUT = 20.0

# What a function here accepts for "which Kafka": a client config, a bootstrap string
# (PLAINTEXT unless the environment says otherwise), or None (all from the environment).
Kafka = KafkaClientConfig | str | None


class KafkaUnavailable(RuntimeError):
    """A client could not connect, authenticate or verify the broker: a one-line reason."""


def client_config(kafka: Kafka) -> KafkaClientConfig:
    if isinstance(kafka, KafkaClientConfig):
        return kafka
    return KafkaClientConfig.load(bootstrap=kafka)


def add_bootstrap_argument(parser: Any, required: bool = False) -> None:
    """`--bootstrap` and `--kafka-config`; `config_from_args` turns them into a config."""
    parser.add_argument(
        "--bootstrap",
        default=None,
        required=required,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: bootstrap.servers of --kafka-config, "
        "$KAFKA_BOOTSTRAP_SERVERS, or 127.0.0.1:9092)",
    )
    kafka_security.add_arguments(parser)


def config_from_args(args: Any) -> KafkaClientConfig:
    """The client config of a command's `--bootstrap` / `--kafka-config` and environment."""
    return KafkaClientConfig.load(
        getattr(args, "kafka_config", None), bootstrap=getattr(args, "bootstrap", None)
    )


class _FirstError(logging.Handler):
    """Keeps the first warning or error aiokafka logs while a client starts: the cause that
    aiokafka's own exception ("Unable to bootstrap from ...") leaves out."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.message is None:
            with contextlib.suppress(Exception):
                self.message = record.getMessage()


@contextlib.contextmanager
def _capturing_aiokafka() -> Any:
    """While a client connects, aiokafka's own retry lines go to `_FirstError` instead of
    the log: the caller reports one line with the cause."""
    logger = logging.getLogger("aiokafka")
    handler = _FirstError()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def explain(cause: str, config: KafkaClientConfig) -> str:
    """A hint for the usual causes of a failed connection."""
    text = cause.lower()
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return "the broker's TLS certificate is not trusted (check ssl.ca.location)"
    if "authentication" in text or ("sasl" in text and "fail" in text):
        return "authentication failed (check sasl.username, sasl.password, sasl.mechanism)"
    if "wrong_version_number" in text or ("ssl" in text and "record" in text):
        return "TLS handshake failed: the listener may not speak TLS (security.protocol?)"
    if "refused" in text or "connect call failed" in text or "no answer" in text:
        return "nothing answers there (is the broker up?)"
    if "closed" in text or "reset" in text:
        hint = " (does the listener expect TLS or SASL?)" if not config.tls else ""
        return f"the broker closed or refused the connection{hint}"
    return "connection failed"


async def start_client(client: Any, config: KafkaClientConfig) -> None:
    """`await client.start()` bounded by CONNECT_TIMEOUT; any failure to connect,
    authenticate or verify the broker becomes one KafkaUnavailable line (no secrets)."""
    from aiokafka.errors import KafkaError

    with _capturing_aiokafka() as first:
        try:
            await asyncio.wait_for(client.start(), CONNECT_TIMEOUT)
        except (KafkaError, OSError, TimeoutError) as exc:
            await _close(client)
            if isinstance(exc, TimeoutError):
                cause = f"no answer in {CONNECT_TIMEOUT:.0f}s"
            else:
                cause = first.message or str(exc) or type(exc).__name__
            if config.sasl_password:
                cause = cause.replace(config.sasl_password, "***")
            raise KafkaUnavailable(
                f"cannot connect to Kafka ({config.describe()}): {explain(cause, config)}: "
                f"{cause}"
            ) from None


async def check_connection(kafka: Kafka) -> None:
    """Connect, authenticate and fetch the cluster metadata once, then disconnect: a command
    that hands its clients to a framework (the worker) fails fast with KafkaUnavailable."""
    config = client_config(kafka)
    admin = make_admin(config)
    await start_client(admin, config)
    await _close(admin)


async def _close(client: Any) -> None:
    close = getattr(client, "stop", None) or client.close
    with contextlib.suppress(Exception):
        await close()


async def ensure_topics(
    kafka: Kafka,
    topics: Iterable[str],
    partitions: int = 1,
    replication: int = 1,
    config: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with `config`) and wait for their leaders;
    return the ones created. Existing topics are left as they are."""
    from aiokafka.admin import NewTopic

    admin = make_admin(kafka)
    await start_client(admin, client_config(kafka))
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(t, partitions, replication, topic_configs=config or {}) for t in missing]
        )
        for error in response.topic_errors:
            topic, code = error[0], error[1]
            if code not in (0, TOPIC_ALREADY_EXISTS):  # a concurrent creator won the race
                raise RuntimeError(f"cannot create topic {topic}: error {code} {error[2:]}")
        await _wait_for_leaders(admin, missing)
        return missing
    finally:
        await admin.close()


async def _wait_for_leaders(admin: Any, topics: list[str], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(topics)
        if len(described) == len(topics) and all(
            d.get("error_code") == 0
            and d.get("partitions")
            and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in d["partitions"])
            for d in described
        ):
            return
        if loop.time() > deadline:
            raise RuntimeError(f"topics {topics} have no leaders after {timeout:.0f}s")
        await asyncio.sleep(0.1)


def make_admin(kafka: Kafka) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    config = client_config(kafka)
    return AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap, request_timeout_ms=30000, **config.aiokafka_kwargs()
    )


def make_producer(kafka: Kafka, max_request_size: int = 1 << 20) -> Any:
    """An idempotent producer; start it with `start_client`. `max_request_size` bounds one
    record (aiokafka refuses a larger one before sending)."""
    from aiokafka import AIOKafkaProducer

    config = client_config(kafka)
    # acks=all + idempotence: a retried send is not written twice.
    return AIOKafkaProducer(
        bootstrap_servers=config.bootstrap,
        **config.aiokafka_kwargs(),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=max_request_size,
        compression_type=None,
    )


def record_batch_bytes(key: bytes | None, value: bytes | None) -> int:
    """An upper bound of the bytes a record batch holding only this record takes: what the
    topic's max.message.bytes is compared with."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])


class Sender:
    """Pipelined sends: many in flight, every acknowledgement checked before `drain` returns."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._pending: list[asyncio.Future[Any]] = []
        self.sent = 0

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        future = await self.producer.send(
            topic, value=value, key=key, timestamp_ms=timestamp_ms, partition=partition
        )
        self._pending.append(future)
        self.sent += 1
        if len(self._pending) >= _IN_FLIGHT:
            await self.drain()

    async def drain(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)  # raises the first delivery failure


async def read_to_end(
    kafka: Kafka,
    topics: Iterable[str],
    from_ms: int | None = None,
    on_start: Callable[[int, list[str]], Awaitable[None] | None] | None = None,
) -> AsyncIterator[Any]:
    """Every record of `topics` from the beginning (or from `from_ms`) up to the end offsets
    seen at start; topics that do not exist are empty. Records of one partition come in offset
    order; partitions interleave. `on_start(total, missing)` gets the number of offsets to read
    and the topics that do not exist."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    config = client_config(kafka)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **config.aiokafka_kwargs(),
    )
    await start_client(consumer, config)
    try:
        # consumer.topics() fetches the cluster metadata but does not keep it for
        # partitions_for_topic() (only subscriptions do); read the partitions from that fetch.
        cluster = await consumer._client.fetch_all_metadata()
        known = cluster.topics()
        missing = [t for t in dict.fromkeys(topics) if t not in known]
        parts = [
            TopicPartition(topic, p)
            for topic in dict.fromkeys(topics)
            if topic in known
            for p in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        if not parts:
            if on_start:
                await _maybe_await(on_start(0, missing))
            return
        consumer.assign(parts)
        end = await consumer.end_offsets(parts)
        if from_ms is None:
            await consumer.seek_to_beginning(*parts)
        else:
            found = await consumer.offsets_for_times({tp: from_ms for tp in parts})
            for tp in parts:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else end[tp])
        start = {tp: await consumer.position(tp) for tp in parts}
        if on_start:
            total = sum(max(end[tp] - start[tp], 0) for tp in parts)
            await _maybe_await(on_start(total, missing))
        remaining = {tp for tp in parts if start[tp] < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    yield record
            # Positions, not record offsets, decide: transaction markers and compacted gaps
            # move the position past offsets that never come back as records.
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


async def topic_configs(kafka: Kafka, topics: Iterable[str],
                        names: Iterable[str]) -> dict[str, dict[str, str]]:
    """topic -> {config name: effective value} for the `names` asked (the broker's default
    when the topic does not set it)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    wanted = list(names)
    admin = make_admin(kafka)
    await start_client(admin, client_config(kafka))
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, t, configs=dict.fromkeys(wanted))
            for t in dict.fromkeys(topics)
        ]
        found: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                values = found.setdefault(resource["resource_name"], {})
                for entry in resource["config_entries"]:
                    if entry["config_names"] in wanted and entry["config_value"] is not None:
                        values[entry["config_names"]] = entry["config_value"]
        return found
    finally:
        await admin.close()


async def finite_retention(kafka: Kafka, topics: Iterable[str]) -> dict[str, int]:
    """topic -> retention.ms for the topics whose time retention is finite."""
    found: dict[str, int] = {}
    for topic, values in (await topic_configs(kafka, topics, ["retention.ms"])).items():
        if values.get("retention.ms") and int(values["retention.ms"]) >= 0:
            found[topic] = int(values["retention.ms"])
    return found


def retention_warning(command: str, retention: dict[str, int]) -> str:
    return "\n".join(
        f"{command}: warning: topic {topic} keeps records {ms / 86400000:g} days "
        f"(retention.ms={ms}); records whose event-time timestamp is older are deleted"
        for topic, ms in retention.items()
    )
