"""The worker's topics and its producer: which topics it needs with which configs
(`topic_specs`), their creation before anything subscribes (`declare_topics`), and the one
producer that ingest and the stages share (`new_producer`)."""

from __future__ import annotations

import logging
from typing import Any

from streams.core.outputs import dead_letter_max_bytes
from streams.runtime.kafka_io import INPUT_MAX_MESSAGE_BYTES, input_topic_config
from streams.runtime.stream_config import StreamConfig

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


def _large_enough(max_bytes: int) -> int:
    """Bytes a record may need: the largest dead letter (`outputs.dead_letter_max_bytes`:
    the value and key prefixes in base64, metadata) with room for the record's own key and
    Kafka's record overhead."""
    return max(1 << 20, dead_letter_max_bytes(max_bytes) + max_bytes + 65536)


def topic_specs(config: StreamConfig) -> dict[str, dict[str, str]]:
    """Topics the worker needs -> their configs. The internal topic and the changelog are
    always needed; the input and output topics only when `create_topics` is set."""
    specs: dict[str, dict[str, str]] = {}
    if config.create_topics:
        big = str(_large_enough(config.settings.max_message_bytes))
        # inputs keep their history, as `import` creates them (replay needs it)
        inputs = input_topic_config(
            max_message_bytes=max(INPUT_MAX_MESSAGE_BYTES, _large_enough(
                config.settings.max_message_bytes)))
        specs[config.labels_topic] = dict(inputs)
        specs[config.scans_topic] = dict(inputs)
        specs[config.alerts_topic] = {}
        specs[config.deadletter_topic] = {"max.message.bytes": big}
        if config.response:
            specs[config.incidents_topic] = {}
            specs[config.actions_topic] = {}
    specs[config.internal_topic_name] = {"max.message.bytes": str(8 << 20)}
    specs[config.changelog_topic] = {"cleanup.policy": "compact"}
    if config.response:
        # a group's state holds the facts of its open alerts: an incident of thousands of
        # labels makes it larger than the broker's default 1 MB record
        specs[config.response_topic_name] = {"max.message.bytes": str(8 << 20)}
        specs[config.response_changelog_topic] = {"cleanup.policy": "compact",
                                                  "max.message.bytes": str(8 << 20)}
    return specs


def topic_partitions(config: StreamConfig, name: str) -> int:
    """Partitions of a topic the worker creates: the response stage's topics have one (the
    whole response is one sequence: streams.runtime.response_stage), the others `partitions`."""
    if config.response and name in (config.response_topic_name,
                                    config.response_changelog_topic):
        return 1
    return config.partitions


async def declare_topics(config: StreamConfig, app: Any = None) -> list[str]:
    """Create the missing topics before anything subscribes (a consumer that subscribes to a
    missing topic is not assigned it until a metadata refresh, minutes later). Refuses to run
    when the internal topic or changelog has another partition count than `partitions`: the
    table's partitions follow the internal topic's, so a mismatch would misroute state.
    Every topic follows one replication rule (streams.runtime.replication), also the
    topics Faust creates itself when `app` is given."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.runtime import replication

    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap, request_timeout_ms=30000,
                                **config.kafka.aiokafka_kwargs())
    await admin.start()
    try:
        rule = await replication.plan(admin, config.replication, config.min_insync_replicas)
        if app is not None:  # what Faust creates itself: its leader topic, a changelog
            app.conf.topic_replication_factor = rule.factor
            for table in app.tables.values():
                table.extra_topic_configs.update(rule.topic_configs())
        specs = {name: {**rule.topic_configs(), **configs}
                 for name, configs in topic_specs(config).items()}
        existing = set(await admin.list_topics())
        for name in (config.internal_topic_name, config.changelog_topic):
            if name in existing:
                described = await admin.describe_topics([name])
                count = len(described[0].get("partitions", [])) if described else 0
                if count and count != config.partitions:
                    raise RuntimeError(
                        f"topic {name} has {count} partitions but the worker is configured "
                        f"for {config.partitions}: start it with --partitions {count}"
                    )
        if config.response and config.response_topic_name in existing:
            described = await admin.describe_topics([config.response_topic_name])
            count = len(described[0].get("partitions", [])) if described else 0
            if count > 1:
                raise RuntimeError(f"topic {config.response_topic_name} has {count} "
                                   "partitions: the response stage needs exactly one")
        missing = [name for name in specs if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        topic_partitions(config, name),
                        rule.factor,
                        topic_configs=specs[name],
                    )
                    for name in missing
                ]
            )
            for error in response.topic_errors:
                name, code = error[0], error[1]
                if code not in (0, TOPIC_ALREADY_EXISTS):  # another worker won the race
                    raise RuntimeError(f"cannot create topic {name}: error {code} {error[2:]}")
            log.info("created topics %s", ", ".join(missing))
        await replication.warn_weaker(admin, rule, [n for n in specs if n in existing],
                                      where=config.bootstrap)
        return missing
    finally:
        await admin.close()


def new_producer(config: StreamConfig) -> Any:
    """The worker's producer (ingest and stage share it): acks from all in-sync replicas,
    idempotent, large batches; a record may be as large as a dead letter."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=config.bootstrap,
        client_id=f"{config.app_id}-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=int(config.producer_linger * 1000),
        max_batch_size=config.producer_max_batch_size,
        max_request_size=max(_large_enough(config.settings.max_message_bytes), 8 << 20),
        # a broker outage shorter than this delays sends instead of failing them
        request_timeout_ms=int(config.produce_timeout * 1000),
        **config.kafka.aiokafka_kwargs(),
    )
    if config.producer_max_request_bytes > 0:
        from streams.runtime.faust_transport import cap_request_bytes

        cap_request_bytes(producer, config.producer_max_request_bytes)
    return producer
