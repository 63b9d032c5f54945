"""The detection rules: pure, deterministic, event time only (no Kafka, no wall clock).

    state, alerts = apply(state, event, settings)    # state: TrackingState | None

One `TrackingState` per tracking key (f"{carrier}:{canonical number}") holds *facts*: the
labels seen for the number (purchase, void), the scans, the recent event ids (de-dup) and
which (rule, label) alerts were already raised. Every event adds its fact, then all rules are
re-evaluated over the facts and only alerts not raised before are returned. Because the rules
are computed from the facts and not from the arrival order, a scan that arrives before its
label, or old history that arrives after newer events, gives the same alerts as the in-order
stream, with these exceptions (alerts are never retracted):

* a scan is attributed to the latest label purchased at or before it *among the labels seen
  so far*; if a later label of the same number arrives after the scan, the scan moves to it,
  but an alert already raised for the earlier label (destination_mismatch,
  voided_label_scanned, or a duplicate it made that label hold) stays;
* a void that arrives after the duplicate_tracking alert it would have prevented;
* facts older than the newest event time of the number minus (reuse window + allowed
  lateness) are dropped, and so are the least recent facts beyond the per-key bounds.

Times are compared in whole epoch seconds (fractions are truncated at decode). Ties: of two
labels purchased in the same second, the one with the greater label_id counts as the later.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left, bisect_right
from typing import Any

import orjson

from streams import schema as _schema
from streams.events import CarrierScan, Event, LabelPurchased, LabelVoided
from streams.settings import Settings

INVALID_TRACKING = "invalid_tracking"
DUPLICATE_TRACKING = "duplicate_tracking"
PREVIOUSLY_USED = "previously_used"
DESTINATION_MISMATCH = "destination_mismatch"
VOIDED_LABEL_SCANNED = "voided_label_scanned"
RULES = (INVALID_TRACKING, DUPLICATE_TRACKING, PREVIOUSLY_USED, DESTINATION_MISMATCH,
         VOIDED_LABEL_SCANNED)
_BIT = {rule: 1 << i for i, rule in enumerate(RULES)}
_INVALID_FLAG = 1 << 5  # label flags: bits 0-4 = rules raised, bit 5 = number failed validation

STATUSES = ("pre_transit", "accepted", "in_transit", "out_for_delivery", "delivered",
            "delivery_attempted", "returned", "exception")
_STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}
_ACCEPTED = 1  # statuses with index >= 1 are "accepted or later"
_AT_DOOR = frozenset({_STATUS_INDEX[s] for s in
                      ("out_for_delivery", "delivered", "delivery_attempted")})

# rule -> severity -> actions, from the alert schema (the single source of truth).
ACTIONS: dict[str, dict[str, list[str]]] = _schema.load("alert")["x-actions"]
assert set(ACTIONS) == set(RULES), "alert.schema.json x-actions must cover every rule"

_FORMAT = 1  # TrackingState.to_bytes layout version
_MAX_EVIDENCE_SCANS = 10


def alert_id(rule: str, tracking_key: str, label_id: str) -> str:
    """Deterministic id: a replay, a redelivery or the offline mode gives the same one."""
    return hashlib.sha256(f"{rule}|{tracking_key}|{label_id}".encode()).hexdigest()[:32]


def event_hash(event_id: str) -> int:
    """63-bit digest of an event id: compact to store, collisions negligible per key."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest()) >> 1


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Label:
    """What the state knows of one label_id. `purchased` is None while only its void is known."""

    __slots__ = ("amount", "channel", "country", "currency", "flags", "label_id", "order_id",
                 "postal_code", "purchased", "seller_id", "voided")

    def __init__(self, label_id: str, seller_id: str = "", order_id: str = "",
                 channel: str | None = None, purchased: int | None = None,
                 voided: int | None = None, postal_code: str = "", country: str = "",
                 amount: str | None = None, currency: str | None = None, flags: int = 0) -> None:
        self.label_id = label_id
        self.seller_id = seller_id
        self.order_id = order_id
        self.channel = channel
        self.purchased = purchased
        self.voided = voided
        self.postal_code = postal_code
        self.country = country
        self.amount = amount
        self.currency = currency
        self.flags = flags

    def row(self) -> list[Any]:
        return [self.label_id, self.seller_id, self.order_id, self.channel, self.purchased,
                self.voided, self.postal_code, self.country, self.amount, self.currency,
                self.flags]

    def facts(self) -> tuple[Any, ...]:
        """The purchase facts, compared to pick one of two reprints deterministically."""
        return (self.purchased, self.seller_id, self.order_id, self.channel or "",
                self.postal_code, self.country, self.amount or "", self.currency or "")

    def describe(self) -> dict[str, Any]:
        """The label as an alert's `labels` entry."""
        return {
            "label_id": self.label_id, "seller_id": self.seller_id, "order_id": self.order_id,
            "channel": self.channel,
            "purchased_at": rfc3339(self.purchased) if self.purchased is not None else None,
            "cost": None if self.amount is None
            else {"amount": self.amount, "currency": self.currency},
        }

    def __repr__(self) -> str:
        return f"Label({', '.join(repr(v) for v in self.row())})"


# A scan fact: (occurred_at epoch s, status index, postal code or "", country or "").
Scan = tuple[int, int, str, str]


class TrackingState:
    """Facts for one tracking key; compact and serialisable with orjson."""

    __slots__ = ("event_ids", "labels", "max_ts", "scans")

    def __init__(self, max_ts: int = 0, labels: dict[str, Label] | None = None,
                 scans: list[Scan] | None = None, event_ids: list[int] | None = None) -> None:
        self.max_ts = max_ts  # newest event time seen for the key: drives expiry
        self.labels: dict[str, Label] = {} if labels is None else labels
        self.scans: list[Scan] = [] if scans is None else scans  # sorted, unique
        self.event_ids: list[int] = [] if event_ids is None else event_ids  # oldest first

    def to_bytes(self) -> bytes:
        return orjson.dumps([_FORMAT, self.max_ts, [lb.row() for lb in self.labels.values()],
                             self.scans, self.event_ids])

    @classmethod
    def from_bytes(cls, data: bytes) -> TrackingState:
        fmt, max_ts, rows, scans, event_ids = orjson.loads(data)
        if fmt != _FORMAT:
            raise ValueError(f"unknown TrackingState format {fmt}")
        return cls(max_ts, {row[0]: Label(*row) for row in rows},
                   [tuple(s) for s in scans], event_ids)  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrackingState) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TrackingState({self.max_ts}, {list(self.labels.values())}, {self.scans})"


def apply(state: TrackingState | None, event: Event, settings: Settings,
          ) -> tuple[TrackingState | None, list[dict[str, Any]]]:
    """Add the event's fact to the state of its key and return (new state, new alerts).

    The state object is updated in place and returned; None means nothing is left to keep.
    """
    digest = event_hash(event.event_id)
    if state is None:
        state = TrackingState()
    elif digest in state.event_ids:
        return state, []  # redelivery: changes nothing, raises nothing
    state.event_ids.append(digest)
    if len(state.event_ids) > settings.max_event_ids_per_key:
        del state.event_ids[: len(state.event_ids) - settings.max_event_ids_per_key]
    if event.event_ts > state.max_ts:
        state.max_ts = event.event_ts

    alerts: list[dict[str, Any]] = []
    kind = type(event)
    if kind is CarrierScan:
        scan = (event.event_ts, _STATUS_INDEX[event.status], event.postal_code or "",
                event.country or "")
        i = bisect_left(state.scans, scan)
        if i == len(state.scans) or state.scans[i] != scan:
            state.scans.insert(i, scan)
    elif kind is LabelPurchased:
        _add_purchase(state, event, alerts)
    elif kind is LabelVoided:
        label = state.labels.get(event.label_id)
        if label is None:
            state.labels[event.label_id] = Label(event.label_id, voided=event.event_ts)
        elif label.voided is None or event.event_ts < label.voided:
            label.voided = event.event_ts  # the earliest void counts
    else:
        raise TypeError(f"not an event: {event!r}")

    _evaluate(state, event, settings, alerts)
    return _expire(state, settings), alerts


def _add_purchase(state: TrackingState, event: LabelPurchased, alerts: list[dict[str, Any]],
                  ) -> None:
    cost = event.cost
    new = Label(event.label_id, event.seller_id, event.order_id, event.channel, event.event_ts,
                None, event.ship_to_postal_code, event.ship_to_country,
                cost["amount"] if cost else None, cost["currency"] if cost else None,
                0 if event.validation.valid else _INVALID_FLAG)
    old = state.labels.get(event.label_id)
    if old is None:
        state.labels[event.label_id] = label = new
    elif old.purchased is None:  # only its void was known
        new.voided = old.voided
        new.flags |= old.flags
        state.labels[event.label_id] = label = new
    else:
        # A reprint: the same label, not a duplicate. Keep one purchase deterministically
        # (the earliest, then the smaller facts) so arrival order does not matter.
        label = old
        if new.facts() < old.facts():
            for name in ("seller_id", "order_id", "channel", "purchased", "postal_code",
                         "country", "amount", "currency"):
                setattr(old, name, getattr(new, name))
    if label.flags & _INVALID_FLAG and not label.flags & _BIT[INVALID_TRACKING]:
        label.flags |= _BIT[INVALID_TRACKING]
        check = event.validation
        alerts.append(_alert(INVALID_TRACKING, "warning", label, [label], event, {
            "reason": check.reason, "format": check.format, "carrier": event.carrier,
            "tracking_number_received": event.tracking_number,
        }))


def _scan_dict(scan: Scan) -> dict[str, Any]:
    return {"occurred_at": rfc3339(scan[0]), "status": STATUSES[scan[1]],
            "postal_code": scan[2] or None, "country": scan[3] or None}


def _postal(code: str, prefix: int) -> str:
    return code.replace(" ", "").replace("-", "").upper()[:prefix]


def _alert(rule: str, severity: str, label: Label, labels: list[Label], event: Event,
           evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "alert_id": alert_id(rule, event.key, label.label_id),
        "rule": rule,
        "severity": severity,
        "label_id": label.label_id,
        "seller_id": label.seller_id,
        "order_id": label.order_id,
        "tracking_number": event.number,
        "carrier": event.carrier,
        "event_time": rfc3339(event.event_ts),
        "labels": [lb.describe() for lb in labels],
        "evidence": evidence,
        "actions": list(ACTIONS[rule][severity]),
    }


def _evaluate(state: TrackingState, event: Event, settings: Settings,
              alerts: list[dict[str, Any]]) -> None:
    """Raise every rule the facts now support and that was not raised for its label yet."""
    # Labels taking part: purchased, number valid; oldest first, ties by label_id.
    held = sorted(
        (lb for lb in state.labels.values()
         if lb.purchased is not None and not lb.flags & _INVALID_FLAG),
        key=lambda lb: (lb.purchased, lb.label_id),
    )
    if not held:
        return
    window = settings.reuse_window_s
    scans = state.scans
    bought = [lb.purchased for lb in held]

    # Each scan belongs to the latest label purchased at or before it (index into held).
    owners = [bisect_right(bought, s[0]) - 1 for s in scans]
    last_activity = list(bought)
    for scan, owner in zip(scans, owners, strict=True):
        if owner >= 0 and scan[0] > last_activity[owner]:
            last_activity[owner] = scan[0]

    dup_bit = _BIT[DUPLICATE_TRACKING]
    prev_bit = _BIT[PREVIOUSLY_USED]
    for j, label in enumerate(held):
        t = label.purchased
        if not label.flags & dup_bit and j:
            # Earlier labels own no scan at or after t, so their overall last activity is
            # their last activity up to t.
            holders = [
                i for i in range(j)
                if (held[i].voided is None or held[i].voided > t)
                and t - last_activity[i] < window
            ]
            if holders:
                label.flags |= dup_bit
                other = any(held[i].seller_id != label.seller_id for i in holders)
                alerts.append(_alert(
                    DUPLICATE_TRACKING, "critical" if other else "warning", label,
                    [held[i] for i in holders] + [label], event, {
                        "holders": [{"label_id": held[i].label_id,
                                     "seller_id": held[i].seller_id,
                                     "last_activity": rfc3339(last_activity[i])}
                                    for i in holders],
                        "other_seller": other,
                        "reuse_window_seconds": window,
                    }))
        if not label.flags & prev_bit and scans:
            # accepted-or-later scans with skew < t - occurred_at < window
            lo = bisect_right(scans, (t - window, len(STATUSES)))
            hi = bisect_left(scans, (t - settings.clock_skew_s, -1))
            used = [k for k in range(lo, hi) if scans[k][1] >= _ACCEPTED]
            if used:
                label.flags |= prev_bit
                involved = {owners[k] for k in used if owners[k] >= 0}
                alerts.append(_alert(
                    PREVIOUSLY_USED, "critical", label,
                    [held[i] for i in sorted(involved)] + [label], event, {
                        "scans": [_scan_dict(scans[k]) for k in used[:_MAX_EVIDENCE_SCANS]],
                        "clock_skew_seconds": settings.clock_skew_s,
                        "reuse_window_seconds": window,
                    }))

    dest_bit = _BIT[DESTINATION_MISMATCH]
    void_bit = _BIT[VOIDED_LABEL_SCANNED]
    prefix = settings.postal_prefix
    for scan, owner in zip(scans, owners, strict=True):
        if owner < 0 or scan[1] < _ACCEPTED:
            continue
        label = held[owner]
        if not label.flags & dest_bit and scan[1] in _AT_DOOR and (scan[2] or scan[3]):
            compared = None
            if scan[3] and scan[3] != label.country:
                compared = "country"
            elif scan[2] and _postal(scan[2], prefix) != _postal(label.postal_code, prefix):
                compared = "postal_prefix"
            if compared:
                label.flags |= dest_bit
                alerts.append(_alert(DESTINATION_MISMATCH, "warning", label, [label], event, {
                    "scan": _scan_dict(scan),
                    "ship_to": {"postal_code": label.postal_code, "country": label.country},
                    "compared": compared,
                    "postal_prefix": prefix,
                }))
        if not label.flags & void_bit and label.voided is not None and label.voided < scan[0]:
            label.flags |= void_bit
            alerts.append(_alert(VOIDED_LABEL_SCANNED, "warning", label, [label], event, {
                "voided_at": rfc3339(label.voided),
                "scan": _scan_dict(scan),
            }))


def _expire(state: TrackingState, settings: Settings) -> TrackingState | None:
    """Drop facts too old to matter (event time) and enforce the per-key bounds."""
    horizon = state.max_ts - settings.reuse_window_s - settings.allowed_lateness_s
    scans = state.scans
    if scans and scans[0][0] < horizon:
        del scans[: bisect_left(scans, (horizon,))]
    if len(scans) > settings.max_scans_per_key:
        del scans[: len(scans) - settings.max_scans_per_key]  # the oldest go first

    labels = state.labels
    # Fast path: a label's last activity is at least its purchase/void time.
    if labels and any(max(lb.purchased or 0, lb.voided or 0) < horizon for lb in labels.values()):
        activity = _label_activity(state)
        for label_id, last in activity.items():
            if last < horizon:
                del labels[label_id]
    if len(labels) > settings.max_labels_per_key:
        activity = _label_activity(state)
        keep = sorted(labels, key=lambda lid: (activity[lid], lid))
        for label_id in keep[: len(labels) - settings.max_labels_per_key]:
            del labels[label_id]
    return state if labels or scans else None


def _label_activity(state: TrackingState) -> dict[str, int]:
    """label_id -> last activity (purchase, void, or latest scan belonging to it)."""
    activity = {lid: max(lb.purchased or 0, lb.voided or 0) for lid, lb in state.labels.items()}
    held = sorted(
        (lb for lb in state.labels.values()
         if lb.purchased is not None and not lb.flags & _INVALID_FLAG),
        key=lambda lb: (lb.purchased, lb.label_id),
    )
    if held and state.scans:
        bought = [lb.purchased for lb in held]
        for scan in state.scans:
            owner = bisect_right(bought, scan[0]) - 1
            if owner >= 0 and scan[0] > activity[held[owner].label_id]:
                activity[held[owner].label_id] = scan[0]
    return activity
