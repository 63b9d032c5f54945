"""Replication right by default: the rule, and the topics a worker declares on one broker
and on a 3-node cluster (every topic of `topic_specs`, so a topic added there later too)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from streams.runtime import replication
from streams.runtime.replication import Rule, choose, weaker
from streams.runtime.stream_config import StreamConfig


def test_the_rule_follows_the_cluster_size():
    assert choose(1) == Rule(1, None)  # one broker: nothing changes
    assert choose(2) == Rule(2, None)
    assert choose(3) == Rule(3, 2)
    assert choose(7) == Rule(3, 2)
    assert Rule(3, 2).topic_configs() == {"min.insync.replicas": "2"}
    assert Rule(1, None).topic_configs() == {}


def test_flags_win_over_the_rule():
    assert choose(3, factor=1) == Rule(1, None)
    assert choose(5, factor=5) == Rule(5, 4)
    assert choose(3, min_insync=1) == Rule(3, 1)
    with pytest.raises(ValueError, match="more than the replication factor"):
        choose(1, min_insync=2)
    with pytest.raises(ValueError):
        choose(3, factor=-1)


def test_weaker_names_what_is_short():
    rule = Rule(3, 2)
    assert weaker(rule, 3, 2) is None
    assert weaker(rule, 3, 3) is None
    assert weaker(rule, 1, None) == "replication factor 1 < 3, min.insync.replicas 1 < 2"
    assert weaker(rule, 3, 1) == "min.insync.replicas 1 < 2"
    assert weaker(Rule(1, None), 1, None) is None


def test_environment_sets_the_replication():
    config = StreamConfig.from_env({"TRACKING_VALIDATOR_REPLICATION": "2",
                                    "TRACKING_VALIDATOR_MIN_INSYNC_REPLICAS": "1",
                                    "TRACKING_VALIDATOR_STANDBY_REPLICAS": "1"})
    assert (config.replication, config.min_insync_replicas, config.standby_replicas) == (2, 1, 1)
    assert StreamConfig().replication == 0  # automatic by default
    assert StreamConfig().standby_replicas == 1


def _config(bootstrap: str, **kw: object) -> StreamConfig:
    run = f"rep-{uuid.uuid4().hex[:10]}"
    return StreamConfig(app_id=run, bootstrap=bootstrap, partitions=3,
                        labels_topic=f"{run}.labels", scans_topic=f"{run}.scans",
                        alerts_topic=f"{run}.alerts", deadletter_topic=f"{run}.deadletter",
                        incidents_topic=f"{run}.incidents", actions_topic=f"{run}.actions",
                        state_dir=Path("/nonexistent"), **kw)  # type: ignore[arg-type]


async def _settings(bootstrap: str, names: list[str]) -> dict[str, tuple[int, int | None]]:
    from streams.runtime.kafka_io import make_admin
    from streams.runtime.kafka_security import KafkaClientConfig

    admin = make_admin(KafkaClientConfig(bootstrap=bootstrap))
    await admin.start()
    try:  # until every new topic's metadata and configs reached the broker asked
        for _ in range(100):
            found = await replication.existing_settings(admin, names)
            if set(found) == set(names) and all(isr for _, isr in found.values()):
                break
            await asyncio.sleep(0.2)
        return found
    finally:
        await admin.close()


@pytest.mark.integration
async def test_one_broker_keeps_one_replica_and_its_defaults(kafka_bootstrap: str):
    from streams.runtime.topics import declare_topics, topic_specs

    config = _config(kafka_bootstrap)
    created = await declare_topics(config)
    assert sorted(created) == sorted(topic_specs(config))
    found = await _settings(kafka_bootstrap, created)
    assert set(found) == set(created)
    assert all(replicas == 1 and isr in (None, 1) for replicas, isr in found.values()), found


@pytest.mark.cluster
async def test_on_three_brokers_every_topic_gets_3_replicas_and_min_isr_2(
        kafka_cluster, caplog: pytest.LogCaptureFixture):
    from streams.runtime.app import build_app
    from streams.runtime.kafka_io import ensure_topics
    from streams.runtime.topics import declare_topics, topic_specs

    bootstrap = kafka_cluster.bootstrap_servers
    config = _config(bootstrap, store="memory://")
    app = build_app(config)
    created = await declare_topics(config, app)
    assert sorted(created) == sorted(topic_specs(config))  # inputs, outputs, internal, changelog
    found = await _settings(bootstrap, created)
    assert found == {name: (3, 2) for name in created}
    # and what Faust would create itself (its leader topic; a changelog, were ours missing)
    assert app.conf.topic_replication_factor == 3
    assert app.tracking["table"].extra_topic_configs == {"min.insync.replicas": "2"}

    # an existing weaker topic is kept as it is, and logged once at WARNING
    weak = _config(bootstrap)
    await ensure_topics(bootstrap, [weak.alerts_topic], partitions=3, replication=1)
    caplog.set_level(logging.WARNING, logger="streams.runtime.replication")
    await declare_topics(weak)
    await declare_topics(weak)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert weak.alerts_topic in warnings[0] and "replication factor 1 < 3" in warnings[0]
    assert (await _settings(bootstrap, [weak.alerts_topic]))[weak.alerts_topic] == (1, 1)

    # flags say otherwise: they win
    explicit = _config(bootstrap, replication=2, min_insync_replicas=1)
    created = await declare_topics(explicit)
    assert set((await _settings(bootstrap, created)).values()) == {(2, 1)}
