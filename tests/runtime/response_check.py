"""The response stage's guarantee, checked the same way by every scenario that runs a worker
(tests/runtime/test_response_stage.py, test_arrival_order.py, test_recovery.py):

    expected = offline_response(values, SETTINGS)        # the offline mode: core derive()
    got = await published_response(p)                     # what the worker published
    assert_same_response(got, expected)

Once all input is processed, the incidents whose highest revision is not `retracted` and the
actions whose highest revision is `due` equal the offline mode's, field for field (contract,
"Incidents and actions"; `detected_at` and `revision` aside: a revision number counts the
publications a worker made on its way, which the offline mode does not have). The
publications themselves are checked too: a repeated (id, revision) is the same record (a
repeat after a crash), and a revision of an id that is new comes after the lower ones in
its topic partition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from streams.core import events, response
from streams.core.settings import Settings

# Settings that make incidents out of the small test corpora (the defaults need 10 alerts in
# one hour): the workers get them through the environment, the offline side as an object.
SETTINGS = Settings(incident_window=timedelta(hours=12), incident_min_alerts=5,
                    incident_min_sellers=3, incident_quiet=timedelta(hours=12))
ENV = {"TRACKING_VALIDATOR_INCIDENT_WINDOW_MINUTES": "720",
       "TRACKING_VALIDATOR_INCIDENT_MIN_ALERTS": "5",
       "TRACKING_VALIDATOR_INCIDENT_MIN_SELLERS": "3",
       "TRACKING_VALIDATOR_INCIDENT_QUIET_HOURS": "12"}
ASIDE = ("detected_at", "revision")


def worker_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the test settings (for Pipeline.env)."""
    import os

    return {**os.environ, **ENV, **(env or {})}


def offline_response(values: Iterable[bytes], settings: Settings = SETTINGS,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The offline mode's incidents and actions over the input messages: the alerts of
    `Processor` (event-time order), the watermark the greatest event time of the input."""
    from streams.tools.offline import Processor

    alerts: list[dict[str, Any]] = []
    proc = Processor(alerts.append, lambda d: None, settings)
    watermark = 0
    for i, value in enumerate(values):
        proc.feed(value, source="input", partition=0, offset=i)
        with contextlib.suppress(events.DecodeError):
            event = events.decode(value, settings.max_message_bytes)
            watermark = max(watermark, event.event_ts)
    proc.finish()
    return response.derive(alerts, watermark, settings)


@dataclass(slots=True)
class Published:
    incidents: list[dict[str, Any]]  # highest revision of each incident_id, not retracted
    actions: list[dict[str, Any]]  # highest revision of each action_id, due
    records: int  # incident and action records read (repeats included)
    revisions: int  # records with revision > 1


def _latest(records: list[Any], id_field: str) -> tuple[dict[str, dict[str, Any]], int]:
    latest: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    revisions = 0
    for partition in sorted({r.partition for r in records}):
        last: dict[str, int] = {}
        for r in sorted((r for r in records if r.partition == partition),
                        key=lambda r: r.offset):
            record = orjson.loads(r.value)
            key, revision = record[id_field], record["revision"]
            body = {k: v for k, v in record.items() if k != "detected_at"}
            repeat = (key, revision) in seen
            assert seen.setdefault((key, revision), body) == body, (
                f"two different publications of {id_field} {key} revision {revision}")
            # a lower revision after a higher one only as a repeat (a restart re-applies)
            assert repeat or revision > last.get(key, 0), (
                f"{id_field} {key}: new revision {revision} after {last[key]} "
                f"(offset {r.offset})")
            last[key] = revision
            revisions += revision > 1
            if revision >= latest.get(key, {}).get("revision", 0):
                latest[key] = record
    return latest, revisions


async def published_response(bootstrap: str, incidents_topic: str, actions_topic: str,
                             ) -> Published:
    from streams.runtime.kafka_io import read_to_end

    inc = [r async for r in read_to_end(bootstrap, [incidents_topic])]
    act = [r async for r in read_to_end(bootstrap, [actions_topic])]
    latest_inc, rev_inc = _latest(inc, "incident_id")
    latest_act, rev_act = _latest(act, "action_id")
    for r in inc:  # the topic's key is the group
        record = orjson.loads(r.value)
        assert r.key == f"{record['carrier']}:{record['channel']}".encode()
    for r in act:
        assert r.key == orjson.loads(r.value)["order_id"].encode()
    return Published(
        incidents=[i for i in latest_inc.values() if i["status"] != "retracted"],
        actions=[a for a in latest_act.values() if a["status"] == "due"],
        records=len(inc) + len(act), revisions=rev_inc + rev_act)


def _by_id(records: Iterable[dict[str, Any]], id_field: str) -> dict[str, dict[str, Any]]:
    return {r[id_field]: {k: v for k, v in r.items() if k not in ASIDE} for r in records}


def assert_same_response(got: Published, expected: tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]) -> None:
    """Field for field, detected_at and revision aside."""
    incidents, actions = expected
    want_inc, got_inc = _by_id(incidents, "incident_id"), _by_id(got.incidents, "incident_id")
    assert got_inc == want_inc, _diff("incidents", got_inc, want_inc)
    want_act, got_act = _by_id(actions, "action_id"), _by_id(got.actions, "action_id")
    assert got_act == want_act, _diff("actions", got_act, want_act)


def _diff(what: str, got: dict[str, Any], want: dict[str, Any]) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = {k: (got[k], want[k]) for k in set(got) & set(want) if got[k] != want[k]}
    first = next(iter(changed.items()), None)
    return (f"{what}: {len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
            f"{len(changed)} differ; first (got, want): {first}")
