"""The lookup API's core: is a tracking number free before a label is sold? Pure (no Kafka,
no web, no wall clock: `at` is given).

    q = query("usps", "9400 1112 0620 6406 2607 87")     # RequestError on a bad request
    status(state, q.carrier, q.number, at_ts, settings)  # the contract's answer, a dict

`status` reads the stored `streams.core.detection.TrackingState` of the number with the detection
core's own definitions (contract, "Detection rules" and "Lookup API"), looking only at facts
at or before `at`:
- a label *holds* the number at `at` when it was purchased at or before `at`, was not voided
  at or before `at`, and its last activity up to `at` (its purchase or the latest scan that
  belongs to it) lies inside the reuse window before `at` (`at - last < window`); a scan
  belongs to the latest label purchased at or before it (ties: the greater label_id);
- `held`: some label holds it; `recently_used`: none does, but an accepted-or-later scan
  happened within the reuse window before `at`; `free`: neither; `invalid`: the number fails
  validation (its facts are still reported, none of its labels hold it);
- `free_after`, with no activity after `at`: the latest of every holder's last activity and
  the latest accepted-or-later scan, plus the reuse window (null when free or invalid).

The circuit breaker (issue 21): a query may name the label's `channel`; when an incident is
open for its carrier and channel (`OpenIncidents`, kept from the `tracking.incidents`
records), `with_incident` adds `incident: {incident_id, started_at, alerts, sellers}` and
`advice: "hold_label_sales"` to the answer, whatever the number's status.

The request side (`query`, `parse_at`, `parse_check`) turns what a client sent into checked
values or a `RequestError` with a `code` and a `message`, rendered as
`400 {"error": {"code", "message"}}`. Codes: `unknown_carrier`, `empty` (the validator's
reasons), `invalid_at`, `too_many_numbers`, and the dead-letter codes for a body:
`too_large`, `encoding`, `invalid_json`, `not_an_object`, `schema`.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from streams.core import detection
from streams.core import schema as _schema
from streams.core.carriers import carriers
from streams.core.detection import TrackingState, rfc3339
from streams.core.settings import Settings
from streams.core.validation import Validation, validate

MAX_NUMBERS = 1000  # per POST /v1/tracking/check
MAX_BODY_BYTES = 1 << 20  # a full batch of printed numbers is ~100 KB
STATUS_INVALID, STATUS_HELD, STATUS_RECENTLY_USED, STATUS_FREE = (
    "invalid", "held", "recently_used", "free")

# --- the stored state, read only through these lines (detection.Label structs) ---------
_purchased = attrgetter("purchased")
_voided = attrgetter("voided")


def _holder(label: Any) -> dict[str, Any]:
    return {"label_id": label.label_id, "seller_id": label.seller_id,
            "order_id": label.order_id, "purchased_at": rfc3339(label.purchased)}


_labels_taking_part = detection._held  # purchased, valid number; oldest first, ties label_id
_last_activity = detection._last_activity  # per label: purchase or latest scan belonging to it
_ACCEPTED = detection._ACCEPTED  # scan status index: accepted or later
_scan_dict = detection._scan_dict  # {occurred_at, status, postal_code, country}
# scan facts, sorted by time: (occurred_at, status index, postal code, country)
_scan_time = itemgetter(0)
_scan_status = itemgetter(1)
# ---------------------------------------------------------------------------------------------


def status(state: TrackingState | None, carrier: str, number: str, at_ts: int,
           settings: Settings, validation: Validation | None = None) -> dict[str, Any]:
    """The contract's answer for `number` (any printed form) of `carrier` at `at_ts` (epoch
    seconds), from the stored state of its key (None: never seen). `validation`, when the
    caller already has validate(number, carrier), saves doing it again."""
    code = carrier.strip().lower()
    v = validation if validation is not None else validate(number, code)
    window = settings.reuse_window_s
    holders: list[Any] = []
    last_scan = None
    free_after = None
    recent = False
    if state is not None:
        scans = state.scans
        upto = bisect_right(scans, at_ts, key=_scan_time)  # scans at or before `at`
        if upto:
            last_scan = _scan_dict(scans[upto - 1])
            accepted = next((_scan_time(s) for s in reversed(scans[:upto])
                             if _scan_status(s) >= _ACCEPTED), None)
            if accepted is not None and at_ts - accepted < window:
                recent = True
                free_after = accepted + window
        labels = _labels_taking_part(state)
        bought = [_purchased(lb) for lb in labels]
        k = bisect_right(bought, at_ts)  # labels purchased at or before `at`: a prefix
        if k:
            last = _last_activity(scans[:upto], bought[:k])
            for label, activity in zip(labels[:k], last, strict=True):
                voided = _voided(label)
                if (voided is None or voided > at_ts) and at_ts - activity < window:
                    holders.append(label)
                    if free_after is None or activity + window > free_after:
                        free_after = activity + window
    if not v.valid:
        verdict, holders, free_after = STATUS_INVALID, [], None
    elif holders:
        verdict = STATUS_HELD
    elif recent:
        verdict = STATUS_RECENTLY_USED
    else:
        verdict = STATUS_FREE
    return {
        "tracking_number": v.number,
        "carrier": code,
        "valid": v.valid,
        "reason": v.reason,
        "status": verdict,
        "holders": [_holder(lb) for lb in holders],
        "last_scan": last_scan,
        "free_after": None if free_after is None else rfc3339(free_after),
    }


# ---------------------------------------------------------------- requests


class RequestError(Exception):
    """A malformed lookup request: `code` and `message` go back as a 400 JSON error."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True, slots=True)
class Query:
    """One number asked about: the courier code, the number as given, the validator's
    verdict and the tracking key its state is stored under."""

    carrier: str
    number: str
    validation: Validation
    channel: str | None = None  # where the label is being sold: asks for the circuit breaker

    @property
    def key(self) -> str:
        return f"{self.carrier}:{self.validation.number}"


def query(carrier: Any, number: Any, where: str = "", channel: Any = None) -> Query:
    """Check one (carrier, number[, channel]) of a request; `where` names it in errors."""
    at = f" ({where})" if where else ""
    if not isinstance(carrier, str):
        raise RequestError("schema", f"carrier must be a string{at}")
    if not isinstance(number, str):
        raise RequestError("schema", f"number must be a string{at}")
    if channel is not None and not isinstance(channel, str):
        raise RequestError("schema", f"channel must be a string{at}")
    code = carrier.strip().lower()
    if code not in carriers():
        raise RequestError("unknown_carrier", f"unknown courier code {_show(carrier)}{at}; "
                           f"known: {', '.join(carriers())}")
    v = validate(number, code)
    if v.reason == "empty":
        raise RequestError("empty", f"empty tracking number{at}")
    return Query(code, number, v, channel)


# RFC 3339 with an offset, exactly as the event schemas accept timestamps
_TIMESTAMP = re.compile(
    _schema.load("label.purchased")["properties"]["purchased_at"]["pattern"])


def parse_at(text: Any) -> int:
    """Epoch seconds (fraction truncated, as events are) of an RFC 3339 `at`."""
    if not isinstance(text, str):
        raise RequestError("invalid_at", "at must be an RFC 3339 timestamp string")
    moment = _schema.parse_timestamp(text) if _TIMESTAMP.match(text) else None
    if moment is None:
        raise RequestError("invalid_at", f"at {_show(text)} is not an RFC 3339 timestamp "
                           "with an offset, e.g. 2025-02-24T15:04:05Z")
    return math.floor(moment.timestamp())


def parse_check(body: bytes) -> tuple[list[Query], int | None]:
    """The numbers and `at` (None: now) of a POST /v1/tracking/check body."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError("too_large", f"body of {len(body)} bytes > {MAX_BODY_BYTES}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise RequestError("encoding", f"body is not UTF-8 ({bad.reason} at byte "
                               f"{bad.start})") from None
        raise RequestError("invalid_json", f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestError("not_an_object", "body must be a JSON object {\"numbers\": [...]}")
    numbers = obj.get("numbers")
    if not isinstance(numbers, list):
        raise RequestError("schema", "numbers must be an array of {carrier, number}")
    if len(numbers) > MAX_NUMBERS:
        raise RequestError("too_many_numbers",
                           f"{len(numbers)} numbers > {MAX_NUMBERS} per request")
    queries = []
    for i, item in enumerate(numbers):
        if not isinstance(item, dict):
            raise RequestError("schema", f"numbers[{i}] must be an object {{carrier, number}}")
        queries.append(query(item.get("carrier"), item.get("number"), f"numbers[{i}]",
                             item.get("channel")))
    at = obj.get("at")
    return queries, None if at is None else parse_at(at)


def _show(value: str, limit: int = 40) -> str:
    """A client's string quoted for an error message, cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


# ---------------------------------------------------------------- the circuit breaker

HOLD_LABEL_SALES = "hold_label_sales"
_OPEN = "open"


class OpenIncidents:
    """The open incidents by (carrier, channel), from `tracking.incidents` records in any
    order: each incident's highest revision counts, and it is open while that one is `open`."""

    def __init__(self) -> None:
        self._revision: dict[str, int] = {}  # incident_id -> highest revision seen
        self._open: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.groups: set[tuple[str, str]] = set()  # every group seen, for the gauges

    def update(self, record: dict[str, Any]) -> bool:
        """Take one incident revision; False when it is older than one seen (ignored).
        KeyError/TypeError on a record without the contract's fields."""
        incident_id, revision = record["incident_id"], int(record["revision"])
        if self._revision.get(incident_id, 0) >= revision:
            return False
        self._revision[incident_id] = revision
        group = (str(record["carrier"]), str(record["channel"]))
        self.groups.add(group)
        open_here = self._open.setdefault(group, {})
        if record["status"] == _OPEN:
            open_here[incident_id] = {"incident_id": incident_id,
                                      "started_at": record["started_at"],
                                      "alerts": record["alerts"], "sellers": record["sellers"]}
        else:
            open_here.pop(incident_id, None)
        return True

    def find(self, carrier: str, channel: str) -> dict[str, Any] | None:
        """The open incident of the group (the latest started if several), or None."""
        found = self._open.get((carrier, channel))
        if not found:
            return None
        return max(found.values(), key=lambda i: (i["started_at"], i["incident_id"]))

    def counts(self) -> dict[tuple[str, str], int]:
        """Open incidents per group, 0 for a group whose incidents all closed."""
        return {g: len(self._open.get(g, ())) for g in self.groups}


def with_incident(answer: dict[str, Any], incidents: OpenIncidents | None,
                  q: Query) -> dict[str, Any]:
    """`answer` with the circuit breaker's `incident` and `advice` when `q` names a channel
    with an open incident of its carrier; else `answer` as it is."""
    if q.channel is None or incidents is None:
        return answer
    incident = incidents.find(q.carrier, q.channel)
    if incident is None:
        return answer
    return {**answer, "incident": dict(incident), "advice": HOLD_LABEL_SALES}
