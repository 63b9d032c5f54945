"""replay --in-memory through the real broker writes the response: the bundled sample's one
usps/buy_shipping incident and its actions, keyed as the contract says, equal to `scan`'s."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.commands.cli import main
from streams.tools.samples import INCIDENT, SAMPLE_COMMAND

pytestmark = pytest.mark.integration

HISTORY = {"retention.ms": "-1"}  # records carry 2025 event-time timestamps: keep them


async def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    from streams.runtime.kafka_io import read_to_end

    return [(r.key, orjson.loads(r.value)) async for r in read_to_end(bootstrap, [topic])]


def _bare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "detected_at"} for r in records]


async def test_replay_in_memory_writes_the_samples_incident_and_actions(
    kafka_bootstrap: str, create_topic, tmp_path: Path
) -> None:
    names = ("labels", "scans", "alerts", "dead", "incidents", "actions")
    topics = {n: await create_topic(f"replay-{n}", partitions=3, config=HISTORY) for n in names}
    # the sample's own messages (its simulate command), to the two input topics
    argv = [*SAMPLE_COMMAND.split(), "--bootstrap", kafka_bootstrap, "--labels-topic",
            topics["labels"], "--scans-topic", topics["scans"], "--partitions", "3"]
    assert await asyncio.to_thread(main, argv) == 0
    argv = ["replay", "--in-memory", "--bootstrap", kafka_bootstrap,
            "--labels-topic", topics["labels"], "--scans-topic", topics["scans"],
            "--alerts-topic", topics["alerts"], "--dead-letters-topic", topics["dead"],
            "--incidents-topic", topics["incidents"], "--actions-topic", topics["actions"]]
    assert await asyncio.to_thread(main, argv) == 0

    incidents = await _records(kafka_bootstrap, topics["incidents"])
    actions = await _records(kafka_bootstrap, topics["actions"])
    assert [(key, r["carrier"], r["channel"]) for key, r in incidents] == [
        (b"usps:buy_shipping", "usps", "buy_shipping")]
    assert actions and all(key == r["order_id"].encode() for key, r in actions)

    # the same records as the offline file mode, detected_at aside
    out = {n: tmp_path / f"{n}.jsonl" for n in ("alerts", "incidents", "actions")}
    assert main(["scan", str(INCIDENT), "--alerts", str(out["alerts"]),
                 "--incidents", str(out["incidents"]), "--actions", str(out["actions"])]) == 0
    scanned = {n: [orjson.loads(line) for line in out[n].read_bytes().splitlines()]
               for n in ("incidents", "actions")}
    assert _bare([r for _, r in incidents]) == _bare(scanned["incidents"])
    key = lambda r: (r["order_id"], r["action"])  # noqa: E731 - partitions interleave
    assert sorted(_bare([r for _, r in actions]), key=key) == sorted(
        _bare(scanned["actions"]), key=key)

    # report reads them back from the topics: alerts and incidents
    report = tmp_path / "report.json"
    assert await asyncio.to_thread(main, [
        "report", "--alerts-topic", topics["alerts"], "--incidents-topic", topics["incidents"],
        "--bootstrap", kafka_bootstrap, "--format", "json", "--output", str(report)]) == 0
    assert orjson.loads(report.read_bytes())["incidents"] == [r for _, r in incidents]
