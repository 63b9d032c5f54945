"""What a consumer keeps of a stream of revised records: the highest revision of each id.

Alerts, incidents and actions are all published with revisions (contract, "Alert revisions"):
a consumer keeps the highest `revision` of each id, and the guarantee compares the records
that stand once every input is processed, every field but `detected_at` and `revision`. The
tests, the benchmarks and the offline reports read the output topics through these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# the id field of each revised record kind
ALERT_ID, INCIDENT_ID, ACTION_ID = "alert_id", "incident_id", "action_id"
# fields that say when or how often a record was published, not what it says
UNCOMPARED = ("detected_at", "revision")


def latest(records: Iterable[dict[str, Any]], id_field: str = ALERT_ID,
           ) -> dict[str, dict[str, Any]]:
    """id -> the record of its highest revision (a repeat of a revision changes nothing)."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        seen = out.get(record[id_field])
        if seen is None or record["revision"] > seen["revision"]:
            out[record[id_field]] = record
    return out


def standing(records: Iterable[dict[str, Any]], id_field: str = ALERT_ID,
             dropped: tuple[str, ...] = ("retracted",)) -> dict[str, dict[str, Any]]:
    """id -> the highest revision, without those whose status is in `dropped` (alerts and
    incidents: `retracted`; actions: `cancelled`), and without `detected_at` and `revision`:
    the records the guarantee compares, field for field."""
    return {key: {k: v for k, v in record.items() if k not in UNCOMPARED}
            for key, record in latest(records, id_field).items()
            if record["status"] not in dropped}
