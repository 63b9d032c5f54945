"""How the topics the worker creates are replicated, chosen from the cluster's size.

    rule = await replication.plan(admin, config)   # once, when the worker declares its topics
    NewTopic(name, partitions, rule.factor, topic_configs={**rule.topic_configs(), ...})

The rule applies to every topic the worker declares (`topics.topic_specs`: the internal topic,
the changelog, alerts, dead letters and any topic added there later) and, through Faust's
`topic_replication_factor`, to what Faust creates itself (its assignor's leader topic, and
a changelog it would create were it missing).

Automatic (`replication` 0, the default): on three brokers or more, a factor of 3 and
`min.insync.replicas=2`, so that with the producer's acks=all an acknowledged record is on
two brokers and one broker may fail at any time without a loss or a stop; on one broker a
factor of 1 and the broker's own min.insync.replicas (nothing changes); on two, a factor of
2 and the broker's default (a second replica, yet writes go on with one broker down). An
explicit `replication` or `min_insync_replicas` (flags, environment) wins.

A topic that already exists with a weaker setting (fewer replicas, a lower
min.insync.replicas) is not altered (that is its owner's call) but logged once at WARNING.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

AUTO = 0
MIN_INSYNC = "min.insync.replicas"
_warned: set[tuple[str, str]] = set()  # (bootstrap, topic): each weaker topic logged once


@dataclass(frozen=True)
class Rule:
    """Replicas per partition, and min.insync.replicas (None: the broker's default)."""

    factor: int
    min_insync: int | None = None

    def topic_configs(self) -> dict[str, str]:
        return {} if self.min_insync is None else {MIN_INSYNC: str(self.min_insync)}


def choose(brokers: int, factor: int = AUTO, min_insync: int = AUTO) -> Rule:
    """The rule for a cluster of `brokers`; `factor` / `min_insync` > 0 are taken as given."""
    if factor < 0 or min_insync < 0:
        raise ValueError("replication and min.insync.replicas must be 0 (automatic) or more")
    chosen = factor or max(1, min(3, brokers))
    if min_insync:
        if min_insync > chosen:
            raise ValueError(f"min.insync.replicas {min_insync} is more than the "
                             f"replication factor {chosen}: no write could ever succeed")
        return Rule(chosen, min_insync)
    return Rule(chosen, chosen - 1 if chosen >= 3 else None)


async def count_brokers(admin: Any) -> int:
    """Live brokers in the cluster's metadata."""
    cluster = await admin.describe_cluster()
    return len(cluster.get("brokers") or [])


async def plan(admin: Any, factor: int = AUTO, min_insync: int = AUTO) -> Rule:
    """The rule for the cluster `admin` is connected to."""
    brokers = await count_brokers(admin) if not factor or not min_insync else 0
    rule = choose(brokers, factor, min_insync)
    log.info("topics the worker creates: replication factor %d, min.insync.replicas %s "
             "(%s brokers)", rule.factor, rule.min_insync or "broker default",
             brokers or "not counted")
    return rule


async def existing_settings(admin: Any, names: list[str]) -> dict[str, tuple[int, int | None]]:
    """topic -> (its smallest replica count, its min.insync.replicas) for `names`."""
    if not names:
        return {}
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    replicas: dict[str, int] = {}
    for described in await admin.describe_topics(names):
        parts = described.get("partitions") or []
        if parts:  # a topic just created may still answer LEADER_NOT_AVAILABLE: it has them
            replicas[described["topic"]] = min(len(p.get("replicas") or []) for p in parts)
    isr: dict[str, int | None] = {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs={MIN_INSYNC: None})
         for name in replicas])
    for response in responses:
        for resource in response.resources:
            error, name, entries = resource[0], resource[3], resource[4]
            if error:
                continue
            for entry in entries:
                if entry[0] == MIN_INSYNC and entry[1] is not None:
                    isr[name] = int(entry[1])
    return {name: (count, isr.get(name)) for name, count in replicas.items()}


def weaker(rule: Rule, replicas: int, min_insync: int | None) -> str | None:
    """Why an existing topic with these settings is weaker than `rule`, or None."""
    problems = []
    if replicas < rule.factor:
        problems.append(f"replication factor {replicas} < {rule.factor}")
    if rule.min_insync is not None and (min_insync or 1) < rule.min_insync:
        problems.append(f"min.insync.replicas {min_insync or 1} < {rule.min_insync}")
    return ", ".join(problems) or None


async def warn_weaker(admin: Any, rule: Rule, names: list[str], where: str = "") -> list[str]:
    """Log (once per topic and cluster) every existing topic of `names` weaker than `rule`;
    returns the names found weaker this time."""
    found = []
    for name, (replicas, min_insync) in sorted((await existing_settings(admin, names)).items()):
        why = weaker(rule, replicas, min_insync)
        if why is None:
            continue
        found.append(name)
        if (where, name) in _warned:
            continue
        _warned.add((where, name))
        log.warning("topic %s exists with weaker replication than asked (%s): a broker "
                    "failure may lose or stop its records; raise it with kafka-topics / "
                    "kafka-configs, or start the worker with --replication / "
                    "--min-insync-replicas to match", name, why)
    return found
