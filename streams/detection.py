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
from binascii import crc_hqx
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any
from zlib import crc32

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
    """48-bit digest of an event id (CRC-32 and CRC-16/CCITT, two independent polynomials).

    Compact to store and ~10x cheaper than a cryptographic hash; only a key's last few dozen
    ids are compared, so a false "redelivery" needs a 1 in 2**48 / 64 coincidence.
    """
    data = event_id.encode()
    return (crc32(data) << 16) | crc_hqx(data, 0)


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# What the state knows of one label_id: a list in its stored row's layout, indexed by the
# names below. A list, not an object with attributes: from_bytes takes the rows orjson
# parsed and to_bytes hands them back as they are (the round trip was ~25k of the ~92k
# instructions of a stored-state event; rows save ~4k of it, callgrind). `purchased` is
# None while only the void is known.
Label = list[Any]  # [label_id, seller_id, order_id, channel, purchased, voided,
#                    postal_code, country, amount, currency, flags]
(LABEL_ID, SELLER_ID, ORDER_ID, CHANNEL, PURCHASED, VOIDED, POSTAL_CODE, COUNTRY, AMOUNT,
 CURRENCY, FLAGS) = range(11)


def new_label(label_id: str, seller_id: str = "", order_id: str = "",
              channel: str | None = None, purchased: int | None = None,
              voided: int | None = None, postal_code: str = "", country: str = "",
              amount: str | None = None, currency: str | None = None, flags: int = 0,
              ) -> Label:
    return [label_id, seller_id, order_id, channel, purchased, voided, postal_code, country,
            amount, currency, flags]


def _facts(label: Label) -> tuple[Any, ...]:
    """The purchase facts, compared to pick one of two reprints deterministically."""
    return (label[PURCHASED], label[SELLER_ID], label[ORDER_ID], label[CHANNEL] or "",
            label[POSTAL_CODE], label[COUNTRY], label[AMOUNT] or "", label[CURRENCY] or "")


_facts_order = itemgetter(PURCHASED, LABEL_ID)  # held labels: oldest first, ties by label_id


def describe(label: Label) -> dict[str, Any]:
    """The label as an alert's `labels` entry."""
    purchased = label[PURCHASED]
    return {
        "label_id": label[LABEL_ID], "seller_id": label[SELLER_ID],
        "order_id": label[ORDER_ID], "channel": label[CHANNEL],
        "purchased_at": rfc3339(purchased) if purchased is not None else None,
        "cost": None if label[AMOUNT] is None
        else {"amount": label[AMOUNT], "currency": label[CURRENCY]},
    }


_new = object.__new__
_dumps = orjson.dumps
_loads = orjson.loads


# A scan fact: (occurred_at epoch s, status index, postal code or "", country or "").
Scan = tuple[int, int, str, str]


class TrackingState:
    """Facts for one tracking key; compact and serialisable with orjson."""

    __slots__ = ("event_ids", "labels", "max_ts", "scans")

    def __init__(self, max_ts: int = 0, labels: dict[str, Label] | None = None,
                 scans: list[Scan] | None = None, event_ids: list[int] | None = None) -> None:
        self.max_ts = max_ts  # newest event time seen for the key: drives expiry
        self.labels: dict[str, Label] = {} if labels is None else labels  # label rows
        self.scans: list[Scan] = [] if scans is None else scans  # sorted, unique
        self.event_ids: list[int] = [] if event_ids is None else event_ids  # oldest first

    def to_bytes(self) -> bytes:
        return _dumps([_FORMAT, self.max_ts, list(self.labels.values()), self.scans,
                       self.event_ids])

    @classmethod
    def from_bytes(cls, data: bytes) -> TrackingState:
        fmt, max_ts, rows, scans, event_ids = _loads(data)
        if fmt != _FORMAT:
            raise ValueError(f"unknown TrackingState format {fmt}")
        state = _new(cls)
        state.max_ts = max_ts
        # most numbers have one label: a dict display costs a fifth of the comprehension's
        # call (callgrind)
        state.labels = ({rows[0][LABEL_ID]: rows[0]} if len(rows) == 1
                        else {row[LABEL_ID]: row for row in rows})
        state.scans = list(map(tuple, scans))  # tuples: they compare with the scan facts
        state.event_ids = event_ids
        return state

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
    data = event.event_id.encode()
    digest = (crc32(data) << 16) | crc_hqx(data, 0)  # event_hash(), inlined
    if state is None:
        state = TrackingState()
    elif digest in state.event_ids:
        return state, []  # redelivery: changes nothing, raises nothing
    ids = state.event_ids
    ids.append(digest)
    if len(ids) > settings.max_event_ids_per_key:
        del ids[: len(ids) - settings.max_event_ids_per_key]
    if event.event_ts > state.max_ts:
        state.max_ts = event.event_ts

    alerts: list[dict[str, Any]] = []
    kind = type(event)
    if kind is CarrierScan:
        scan = (event.event_ts, _STATUS_INDEX[event.status], event.postal_code or "",
                event.country or "")
        scans = state.scans
        if not scans or scans[-1] < scan:  # in event-time order: the common case
            scans.append(scan)
            _on_scan(state, scan, event, settings, alerts)
        else:
            i = bisect_left(scans, scan)
            if scans[i] != scan:  # else: a known fact, nothing changes
                scans.insert(i, scan)
                _on_scan(state, scan, event, settings, alerts)
    elif kind is LabelPurchased:
        if _add_purchase(state, event, alerts):
            evaluate(state, event, settings, alerts)
    elif kind is LabelVoided:
        label = state.labels.get(event.label_id)
        if label is None:
            state.labels[event.label_id] = new_label(event.label_id, voided=event.event_ts)
        elif label[VOIDED] is None or event.event_ts < label[VOIDED]:
            label[VOIDED] = event.event_ts  # the earliest void counts
            _on_void(state, label, event, alerts)
    else:
        raise TypeError(f"not an event: {event!r}")
    return _expire(state, settings), alerts


def _add_purchase(state: TrackingState, event: LabelPurchased, alerts: list[dict[str, Any]],
                  ) -> bool:
    """Record the purchase; True when the facts the other rules read have changed."""
    cost = event.cost
    new = [event.label_id, event.seller_id, event.order_id, event.channel, event.event_ts,
           None, event.ship_to_postal_code, event.ship_to_country,
           cost["amount"] if cost else None, cost["currency"] if cost else None,
           0 if event.validation.valid else _INVALID_FLAG]  # new_label(), inlined
    old = state.labels.get(event.label_id)
    changed = True
    if old is None:
        state.labels[event.label_id] = label = new
    elif old[PURCHASED] is None:  # only its void was known
        new[VOIDED] = old[VOIDED]
        new[FLAGS] |= old[FLAGS]
        state.labels[event.label_id] = label = new
    else:
        # A reprint: the same label, not a duplicate. Keep one purchase deterministically
        # (the earliest, then the smaller facts) so arrival order does not matter.
        label = old
        changed = _facts(new) < _facts(old)
        if changed:
            for i in (SELLER_ID, ORDER_ID, CHANNEL, PURCHASED, POSTAL_CODE, COUNTRY, AMOUNT,
                      CURRENCY):
                old[i] = new[i]
    if label[FLAGS] & _INVALID_FLAG:
        if not label[FLAGS] & _BIT[INVALID_TRACKING]:
            label[FLAGS] |= _BIT[INVALID_TRACKING]
            check = event.validation
            alerts.append(_alert(INVALID_TRACKING, "warning", label, [label], event, {
                "reason": check.reason, "format": check.format, "carrier": event.carrier,
                "tracking_number_received": event.tracking_number,
            }))
        return False  # an invalid label takes no part in the other rules
    return changed


def _scan_dict(scan: Scan) -> dict[str, Any]:
    return {"occurred_at": rfc3339(scan[0]), "status": STATUSES[scan[1]],
            "postal_code": scan[2] or None, "country": scan[3] or None}


def _postal(code: str, prefix: int) -> str:
    return code.replace(" ", "").replace("-", "").upper()[:prefix]


def _alert(rule: str, severity: str, label: Label, labels: list[Label], event: Event,
           evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "alert_id": alert_id(rule, event.key, label[LABEL_ID]),
        "rule": rule,
        "severity": severity,
        "label_id": label[LABEL_ID],
        "seller_id": label[SELLER_ID],
        "order_id": label[ORDER_ID],
        "tracking_number": event.number,
        "carrier": event.carrier,
        "event_time": rfc3339(event.event_ts),
        "labels": [describe(lb) for lb in labels],
        "evidence": evidence,
        "actions": list(ACTIONS[rule][severity]),
    }


# --- the rules ---------------------------------------------------------------------------
# `held` is the labels taking part (purchased, valid number), oldest first, ties by label_id;
# `bought` their purchase times. A scan belongs to held[bisect_right(bought, ts) - 1].

_DUP = _BIT[DUPLICATE_TRACKING]
_PREV = _BIT[PREVIOUSLY_USED]
_DEST = _BIT[DESTINATION_MISMATCH]
_VOID = _BIT[VOIDED_LABEL_SCANNED]


def _held(state: TrackingState) -> list[Label]:
    held = [lb for lb in state.labels.values()
            if lb[PURCHASED] is not None and not lb[FLAGS] & _INVALID_FLAG]
    if len(held) > 1:
        held.sort(key=_facts_order)
    return held


def _last_activity(scans: list[Scan], bought: list[int]) -> list[int]:
    """Per held label: its purchase or the latest scan belonging to it."""
    last = list(bought)
    for scan in scans:
        owner = bisect_right(bought, scan[0]) - 1
        if owner >= 0 and scan[0] > last[owner]:
            last[owner] = scan[0]
    return last


def _duplicate(held: list[Label], last: list[int], j: int, event: Event, settings: Settings,
               alerts: list[dict[str, Any]]) -> None:
    label = held[j]
    t = label[PURCHASED]
    window = settings.reuse_window_s
    # Earlier labels own no scan at or after t (it would belong to a later label), so their
    # overall last activity is their last activity up to t.
    holders = [i for i in range(j)
               if (held[i][VOIDED] is None or held[i][VOIDED] > t) and t - last[i] < window]
    if not holders:
        return
    label[FLAGS] |= _DUP
    other = any(held[i][SELLER_ID] != label[SELLER_ID] for i in holders)
    alerts.append(_alert(
        DUPLICATE_TRACKING, "critical" if other else "warning", label,
        [held[i] for i in holders] + [label], event, {
            "holders": [{"label_id": held[i][LABEL_ID], "seller_id": held[i][SELLER_ID],
                         "last_activity": rfc3339(last[i])} for i in holders],
            "other_seller": other,
            "reuse_window_seconds": window,
        }))


def _previously_used(state: TrackingState, held: list[Label], bought: list[int], j: int,
                     event: Event, settings: Settings, alerts: list[dict[str, Any]]) -> None:
    label = held[j]
    t = label[PURCHASED]
    scans = state.scans
    window = settings.reuse_window_s
    # accepted-or-later scans with skew < t - occurred_at < window
    lo = bisect_right(scans, (t - window, len(STATUSES)))
    hi = bisect_left(scans, (t - settings.clock_skew_s, -1))
    used = [scans[k] for k in range(lo, hi) if scans[k][1] >= _ACCEPTED]
    if not used:
        return
    label[FLAGS] |= _PREV
    involved = sorted({o for o in (bisect_right(bought, s[0]) - 1 for s in used) if o >= 0})
    alerts.append(_alert(
        PREVIOUSLY_USED, "critical", label, [held[i] for i in involved] + [label], event, {
            "scans": [_scan_dict(s) for s in used[:_MAX_EVIDENCE_SCANS]],
            "clock_skew_seconds": settings.clock_skew_s,
            "reuse_window_seconds": window,
        }))


def _destination(label: Label, scan: Scan, event: Event, settings: Settings,
                 alerts: list[dict[str, Any]]) -> None:
    if scan[1] not in _AT_DOOR or not (scan[2] or scan[3]):
        return
    prefix = settings.postal_prefix
    if scan[3] and scan[3] != label[COUNTRY]:
        compared = "country"
    elif (scan[2] and scan[2] != label[POSTAL_CODE]  # equal codes: equal prefixes, at once
          and _postal(scan[2], prefix) != _postal(label[POSTAL_CODE], prefix)):
        compared = "postal_prefix"
    else:
        return
    label[FLAGS] |= _DEST
    alerts.append(_alert(DESTINATION_MISMATCH, "warning", label, [label], event, {
        "scan": _scan_dict(scan),
        "ship_to": {"postal_code": label[POSTAL_CODE], "country": label[COUNTRY]},
        "compared": compared,
        "postal_prefix": prefix,
    }))


def _voided_scanned(label: Label, scan: Scan, event: Event,
                    alerts: list[dict[str, Any]]) -> None:
    voided = label[VOIDED]
    if voided is None or scan[1] < _ACCEPTED or not voided < scan[0]:
        return
    label[FLAGS] |= _VOID
    alerts.append(_alert(VOIDED_LABEL_SCANNED, "warning", label, [label], event, {
        "voided_at": rfc3339(voided),
        "scan": _scan_dict(scan),
    }))


def evaluate(state: TrackingState, event: Event, settings: Settings,
             alerts: list[dict[str, Any]]) -> None:
    """Raise every rule the facts support that was not raised for its label yet.

    Run after a purchase (it can change which label every scan belongs to); scans and voids
    take the incremental paths below, which tests prove never miss what this finds.
    """
    scans = state.scans
    if not scans and len(state.labels) < 2:
        return  # a first label and no scans: every rule needs a scan or a second label
    held = _held(state)
    if not held:
        return
    bought = [lb[PURCHASED] for lb in held]
    last = _last_activity(scans, bought)
    for j, label in enumerate(held):
        if j and not label[FLAGS] & _DUP:
            _duplicate(held, last, j, event, settings, alerts)
        if scans and not label[FLAGS] & _PREV:
            _previously_used(state, held, bought, j, event, settings, alerts)
    for scan in scans:
        owner = bisect_right(bought, scan[0]) - 1
        if owner >= 0:
            label = held[owner]
            if not label[FLAGS] & _DEST:
                _destination(label, scan, event, settings, alerts)
            if not label[FLAGS] & _VOID:
                _voided_scanned(label, scan, event, alerts)


def _on_scan(state: TrackingState, scan: Scan, event: Event, settings: Settings,
             alerts: list[dict[str, Any]]) -> None:
    """What one new scan can raise; nothing else about the facts changed."""
    labels = state.labels
    if len(labels) == 1:
        # Most numbers have one label: the general path below with held == [label], minus
        # the lists and bisects (tests check both paths against full re-evaluation).
        for label in labels.values():
            p = label[PURCHASED]
            flags = label[FLAGS]
            if p is None or flags & _INVALID_FLAG:
                return
            ts = scan[0]
            if (scan[1] >= _ACCEPTED and not flags & _PREV
                    and ts + settings.clock_skew_s < p < ts + settings.reuse_window_s):
                _previously_used(state, [label], [p], 0, event, settings, alerts)
            if p <= ts:  # the scan belongs to the label
                if not label[FLAGS] & _DEST and scan[1] in _AT_DOOR:
                    _destination(label, scan, event, settings, alerts)
                if label[VOIDED] is not None and not label[FLAGS] & _VOID:
                    _voided_scanned(label, scan, event, alerts)
        return
    held = _held(state)
    if not held:
        return
    ts = scan[0]
    bought = [lb[PURCHASED] for lb in held]
    if scan[1] >= _ACCEPTED:
        # previously_used for labels purchased skew < p - ts < window after it
        lo = bisect_right(bought, ts + settings.clock_skew_s)
        hi = bisect_left(bought, ts + settings.reuse_window_s)
        for j in range(lo, hi):
            if not held[j][FLAGS] & _PREV:
                _previously_used(state, held, bought, j, event, settings, alerts)
    owner = bisect_right(bought, ts) - 1
    if owner < 0:
        return
    label = held[owner]
    if not label[FLAGS] & _DEST:
        _destination(label, scan, event, settings, alerts)
    if not label[FLAGS] & _VOID:
        _voided_scanned(label, scan, event, alerts)
    if owner + 1 < len(held):
        # the owner's last activity may have grown: it may now hold at later purchases
        last = _last_activity(state.scans, bought)
        for j in range(owner + 1, len(held)):
            if not held[j][FLAGS] & _DUP:
                _duplicate(held, last, j, event, settings, alerts)


def _on_void(state: TrackingState, label: Label, event: Event,
             alerts: list[dict[str, Any]]) -> None:
    """An earlier void can only add voided_label_scanned (it never makes a label hold)."""
    if label[PURCHASED] is None or label[FLAGS] & (_INVALID_FLAG | _VOID):
        return
    held = _held(state)
    bought = [lb[PURCHASED] for lb in held]
    j = next(i for i, lb in enumerate(held) if lb is label)
    end = bought[j + 1] if j + 1 < len(held) else None
    for scan in state.scans:
        if scan[0] < label[PURCHASED] or (end is not None and scan[0] >= end):
            continue
        if bisect_right(bought, scan[0]) - 1 == j:
            _voided_scanned(label, scan, event, alerts)
            if label[FLAGS] & _VOID:
                return


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
    stale = False
    for lb in labels.values():
        if (lb[PURCHASED] or 0) < horizon and (lb[VOIDED] or 0) < horizon:
            stale = True
            break
    if stale:
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
    activity = {lid: max(lb[PURCHASED] or 0, lb[VOIDED] or 0)
                for lid, lb in state.labels.items()}
    held = _held(state)
    if held and state.scans:
        for label, last in zip(held, _last_activity(state.scans, [lb[PURCHASED] for lb in held]),
                               strict=True):
            activity[label[LABEL_ID]] = max(activity[label[LABEL_ID]], last)
    return activity
