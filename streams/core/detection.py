"""The detection rules: pure, deterministic, event time only (no Kafka, no wall clock).

    state, alerts = apply(state, event, settings)    # state: TrackingState | None

One `TrackingState` per tracking key (f"{carrier}:{canonical number}") holds *facts*: the
labels seen for the number (purchase, void), the scans and the recent event ids (de-dup), and
per (rule, label) the latest publication of its alert (`Published`: revision, status, severity).
The *findings* are a function of the facts alone (`findings()`), never of the arrival order.
After every event the published alerts are brought in line with the findings that event
changed, and `apply` returns what that takes (contract, "Alert revisions"):

* a new finding: a new alert, `revision` 1, `status` "open";
* a finding whose severity changed (another seller's holder arrived late, the void of a
  holder arrived late): the same `alert_id`, `revision` + 1, "open", the corrected fields;
* a finding the event removed (a label purchased before a scan arrives after it and takes
  the scan from the earlier label; a void arrives after the duplicate it cancels): the same
  `alert_id`, `revision` + 1, "retracted", `evidence.retracted_because` naming the event;
* a retracted finding that holds again: re-opened with `revision` + 1.

So once every event of a number is applied, in any order, the open alerts are exactly the
findings of all its facts. Scans only ever add findings (more activity, more scans); only a
purchase or a void can remove one, so only those compare the findings before and after.
Facts dropped by expiry or the per-key bounds retract nothing: only an event can. Expiry
drops facts older than the newest event time of the number minus (reuse window + allowed
lateness), and the per-key bounds drop the least recent facts beyond them; an event arriving
later than that no longer meets them.

Event-time order (the offline mode's) publishes every alert once, at revision 1, when events
are applied by `order_key`: event time, then in one second voids, purchases (by label_id,
then by their purchase facts), scans. That is the contract's reading of a tie: a void at t
means the label does not hold at t, and a scan at t belongs to a label purchased at t.

Times are compared in whole epoch seconds (fractions are truncated at decode). Ties: of two
labels purchased in the same second, the one with the greater label_id counts as the later.
`invalid_tracking` depends on the label's own number only: published once, never revised.
"""

from __future__ import annotations

import hashlib
import time
from binascii import crc_hqx
from bisect import bisect_left, bisect_right, insort
from typing import Any
from zlib import crc32

import msgspec
import orjson

from streams.core import schema as _schema
from streams.core.events import (
    CARRIER_SCAN,
    LABEL_PURCHASED,
    LABEL_VOIDED,
    CarrierScan,
    Event,
    LabelPurchased,
    LabelVoided,
)
from streams.core.settings import Settings

INVALID_TRACKING = "invalid_tracking"
DUPLICATE_TRACKING = "duplicate_tracking"
PREVIOUSLY_USED = "previously_used"
DESTINATION_MISMATCH = "destination_mismatch"
VOIDED_LABEL_SCANNED = "voided_label_scanned"
RULES = (INVALID_TRACKING, DUPLICATE_TRACKING, PREVIOUSLY_USED, DESTINATION_MISMATCH,
         VOIDED_LABEL_SCANNED)
OPEN = "open"
RETRACTED = "retracted"

STATUSES = ("pre_transit", "accepted", "in_transit", "out_for_delivery", "delivered",
            "delivery_attempted", "returned", "exception")
_STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}
_ACCEPTED = 1  # statuses with index >= 1 are "accepted or later"
_AT_DOOR = frozenset({_STATUS_INDEX[s] for s in
                      ("out_for_delivery", "delivered", "delivery_attempted")})

# rule -> severity -> actions, from the alert schema (the single source of truth).
ACTIONS: dict[str, dict[str, list[str]]] = _schema.load("alert")["x-actions"]
assert set(ACTIONS) == set(RULES), "alert.schema.json x-actions must cover every rule"

FORMAT = 2  # TrackingState.to_bytes layout version (1: orjson rows, read for migration)
_MAX_EVIDENCE_SCANS = 10
_EVENT_TYPE = {LabelPurchased: LABEL_PURCHASED, LabelVoided: LABEL_VOIDED,
               CarrierScan: CARRIER_SCAN}


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


def order_key(event: Event) -> tuple[Any, ...]:
    """The offline mode's event-time order: sorted by this, no alert is ever revised.

    Same second: voids first (a void at t: the label does not hold at t), then purchases by
    label_id (the greater is the later) and their facts (the reprint that is kept first),
    then scans (a scan at t belongs to a label purchased at t) by their facts.
    """
    kind = type(event)
    if kind is CarrierScan:  # then by its facts: which of two is the evidence is not by input
        return (event.event_ts, 2, _STATUS_INDEX[event.status], event.postal_code or "",
                event.country or "")
    if kind is LabelPurchased:
        cost = event.cost or {}
        return (event.event_ts, 1, event.label_id, event.seller_id, event.order_id,
                event.channel or "", event.ship_to_postal_code, event.ship_to_country,
                cost.get("amount", ""), cost.get("currency", ""), event.tracking_number)
    return (event.event_ts, 0, event.label_id)


# --- the stored state -----------------------------------------------------------------------
# msgspec Structs encoded as msgpack arrays (array_like): named fields in memory, no field
# names in the bytes. gc=False: they hold no reference cycles, so the collector skips them.

class Published(msgspec.Struct, array_like=True, gc=False):
    """The latest publication of one (rule, label) alert: a restart continues from it."""

    revision: int  # 1 for the first publication
    status: str  # OPEN or RETRACTED
    severity: str
    # content_digest() of what was published open (0: retracted, or a state written before
    # digests were kept): a finding whose content differs is published again
    digest: int = 0


class Label(msgspec.Struct, array_like=True, gc=False):
    """What the state knows of one label_id. `purchased` is None while only its void is
    known; `invalid`: its number failed validation (it takes no part in the other rules)."""

    label_id: str
    seller_id: str = ""
    order_id: str = ""
    channel: str | None = None
    purchased: int | None = None  # epoch seconds
    voided: int | None = None  # the earliest void, epoch seconds
    postal_code: str = ""  # ship_to
    country: str = ""
    amount: str | None = None  # cost
    currency: str | None = None
    invalid: bool = False
    # the latest publication of each rule's alert about this label (attribute = rule name)
    invalid_tracking: Published | None = None
    duplicate_tracking: Published | None = None
    previously_used: Published | None = None
    destination_mismatch: Published | None = None
    voided_label_scanned: Published | None = None
    # an invalid number only (its invalid_tracking evidence): the number as received on the
    # kept purchase, and the validator's verdict
    received: str | None = None
    reason: str | None = None
    format: str | None = None


# A scan fact: (occurred_at epoch s, status index in STATUSES, postal code or "", country or "").
Scan = tuple[int, int, str, str]


class TrackingState(msgspec.Struct, array_like=True, gc=False, tag=FORMAT):
    """Facts for one tracking key. The bytes are msgpack [FORMAT, max_ts, labels, scans,
    event_ids]: the tag is the format version."""

    max_ts: int = 0  # newest event time seen for the key: drives expiry
    labels: dict[str, Label] = {}  # label_id -> Label
    scans: list[Scan] = []  # sorted, unique
    event_ids: list[int] = []  # event_hash() of the recent events, oldest first

    def to_bytes(self) -> bytes:
        return _encode(self)

    @staticmethod  # not a classmethod: that binds a method object per call (per event)
    def from_bytes(data: bytes) -> TrackingState:
        try:
            return _decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            if data[:3] == b"[1,":
                return _from_format_1(data)
            version = data[1] if len(data) > 1 and data[0] & 0xF0 == 0x90 else None
            if version == FORMAT:
                raise ValueError(f"corrupt TrackingState (format {FORMAT}): {exc}") from None
            raise ValueError(f"unknown TrackingState format {version}: "
                             f"this version reads formats 1 and {FORMAT}") from None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(TrackingState).decode


def _from_format_1(data: bytes) -> TrackingState:
    """Format 1: orjson [1, max_ts, label rows, scans, event ids]; a row ends with rule bits
    0-4 (alerts published, at most once each then) and bit 5 (invalid number)."""
    _, max_ts, rows, scans, event_ids = orjson.loads(data)
    labels: dict[str, Label] = {}
    flags_of: dict[str, int] = {}
    for row in rows:
        *facts, flags = row
        label = Label(*facts, invalid=bool(flags & 32))
        labels[label.label_id] = label
        flags_of[label.label_id] = flags
    state = TrackingState(max_ts, labels, [tuple(s) for s in scans], event_ids)
    # format 1 kept no severity: take the one the facts give (default settings), else the
    # rule's only or first severity
    found = findings(state, Settings())
    for label in labels.values():
        for bit, rule in enumerate(RULES):
            if flags_of[label.label_id] & (1 << bit):
                finding = found.get((rule, label.label_id))
                severity = finding[1] if finding else next(iter(ACTIONS[rule]))
                setattr(label, rule, Published(1, OPEN, severity))
    return state


def describe(label: Label) -> dict[str, Any]:
    """The label as an alert's `labels` entry."""
    purchased = label.purchased
    return {
        "label_id": label.label_id, "seller_id": label.seller_id,
        "order_id": label.order_id, "channel": label.channel,
        "purchased_at": rfc3339(purchased) if purchased is not None else None,
        "cost": None if label.amount is None
        else {"amount": label.amount, "currency": label.currency},
    }


def _facts(label: Label) -> tuple[Any, ...]:
    """The purchase facts, compared to pick one of two reprints deterministically."""
    return (label.purchased, label.seller_id, label.order_id, label.channel or "",
            label.postal_code, label.country, label.amount or "", label.currency or "",
            label.received or "")


# --- apply ----------------------------------------------------------------------------------

def apply(state: TrackingState | None, event: Event, settings: Settings,
          ) -> tuple[TrackingState | None, list[dict[str, Any]]]:
    """Add the event's fact to the state of its key; return (new state, alerts to publish):
    new alerts and revisions of alerts already published for this key.

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
    ts = event.event_ts
    if ts > state.max_ts:
        state.max_ts = ts

    alerts: list[dict[str, Any]] = []
    kind = type(event)
    if kind is CarrierScan:
        scan = (ts, _STATUS_INDEX[event.status], event.postal_code or "", event.country or "")
        scans = state.scans
        labels = state.labels
        if not scans or scans[-1] < scan:  # in event-time order: the common case
            if len(labels) == 1:  # most numbers have one label: this is most events
                label = next(iter(labels.values()))
                p = label.purchased
                if p is None or label.invalid or p <= ts:
                    scans.append(scan)
                    if p is not None and not label.invalid:
                        _owner_scan(label, scan, event, settings, alerts)
                        horizon = (state.max_ts - settings.reuse_window_s
                                   - settings.allowed_lateness_s)
                        if (p >= horizon and scans[0][0] >= horizon
                                and len(scans) <= settings.max_scans_per_key):
                            return state, alerts  # _expire would drop nothing
                    return _expire(state, settings), alerts
            else:
                held = _held(state)
                if not held or held[-1].purchased <= ts:  # type: ignore[operator]
                    # the newest scan, of the latest label: it adds to that label's findings
                    # only (it moves no scan and is no earlier use of any label's number)
                    scans.append(scan)
                    if held:
                        _owner_scan(held[-1], scan, event, settings, alerts)
                    return _expire(state, settings), alerts
        else:
            i = bisect_left(scans, scan)
            if scans[i] == scan:  # a known fact, nothing changes
                return _expire(state, settings), alerts
        # A scan before a purchase, or among the known ones: it can be an earlier use of a
        # number, a holder's later activity or an earlier piece of evidence
        before = _digests(state, event, settings)
        insort(scans, scan)
        _reconcile(before, findings(state, settings), state, event, alerts)
    elif kind is LabelPurchased:
        _on_purchase(state, event, settings, alerts)
    elif kind is LabelVoided:
        _on_void(state, event, settings, alerts)
    else:
        raise TypeError(f"not an event: {event!r}")
    return _expire(state, settings), alerts


def _owner_scan(label: Label, scan: Scan, event: Event, settings: Settings,
                alerts: list[dict[str, Any]]) -> None:
    """A scan newer than every other, of its owner (the latest label): it can only be the
    first evidence of the owner's destination_mismatch or voided_label_scanned (an earlier
    scan that showed either made it open already)."""
    if scan[1] in _AT_DOOR and not _is_open(label.destination_mismatch):
        found = _destination(label, scan, settings)
        if found:
            _publish(found, event, alerts)
    if label.voided is not None and not _is_open(label.voided_label_scanned):
        found = _voided_scanned(label, scan, settings)
        if found:
            _publish(found, event, alerts)


def _on_purchase(state: TrackingState, event: LabelPurchased, settings: Settings,
                 alerts: list[dict[str, Any]]) -> None:
    cost = event.cost
    check = event.validation
    invalid = not check.valid
    new = Label(event.label_id, event.seller_id, event.order_id, event.channel,
                event.event_ts, None, event.ship_to_postal_code, event.ship_to_country,
                cost["amount"] if cost else None, cost["currency"] if cost else None,
                invalid)
    if invalid:
        new.received, new.reason, new.format = event.tracking_number, check.reason, check.format
    labels = state.labels
    old = labels.get(event.label_id)
    if old is None and not labels and not state.scans:
        labels[event.label_id] = new  # a number's first fact: no rule but invalid_tracking
        if invalid:
            _publish(_invalid(new, event), event, alerts)
        return
    # Findings before the purchase, when it can change one: it takes scans from an earlier
    # label, changes the holders of a later one, or changes a label's facts (a reprint).
    p = event.event_ts
    before = None
    if old is not None or (state.scans and state.scans[-1][0] >= p) or any(
            lb.purchased is not None and lb.purchased >= p for lb in labels.values()):
        before = _digests(state, event, settings)
    if old is None:
        labels[event.label_id] = label = new
    else:
        # Only its void was known, or a reprint: the same label, not a duplicate. A reprint
        # keeps one purchase deterministically (the earliest, then the smaller facts) so
        # arrival order does not matter.
        label = old
        if old.purchased is not None and not _facts(new) < _facts(old):
            return
        for name in _PURCHASE_FIELDS:
            setattr(old, name, getattr(new, name))
    if label.invalid:
        found = _invalid(label, event)
        published = label.invalid_tracking
        if published is None or published.digest != content_digest(_body(found, event)):
            _publish(found, event, alerts)
        return
    _reconcile(before, findings(state, settings), state, event, alerts)


_PURCHASE_FIELDS = ("seller_id", "order_id", "channel", "purchased", "postal_code", "country",
                    "amount", "currency", "invalid", "received", "reason", "format")


def _invalid(label: Label, event: Event) -> Finding:
    """invalid_tracking: the label's own number and verdict, at its purchase."""
    return (INVALID_TRACKING, "warning", label, [label], {
        "reason": label.reason, "format": label.format, "carrier": event.carrier,
        "tracking_number_received": label.received,
    }, label.purchased)  # type: ignore[return-value]


def _on_void(state: TrackingState, event: LabelVoided, settings: Settings,
             alerts: list[dict[str, Any]]) -> None:
    label = state.labels.get(event.label_id)
    if label is None:
        state.labels[event.label_id] = Label(event.label_id, voided=event.event_ts)
        return
    if label.voided is not None and label.voided <= event.event_ts:
        return  # the earliest void counts
    if label.purchased is None or label.invalid:
        label.voided = event.event_ts
        return
    before = _digests(state, event, settings)
    label.voided = event.event_ts
    _reconcile(before, findings(state, settings), state, event, alerts)


# A finding: (rule, severity, the label it is about, the labels involved, evidence, and its
# event time: when it became true, the latest event time among the facts it rests on).
Finding = tuple[str, str, Label, list[Label], dict[str, Any], int]


def _body(finding: Finding, event: Event) -> dict[str, Any]:
    """The alert of a finding, but its status and revision: a function of the facts alone
    (the event gives only the key, number and carrier, the same for every event of a key)."""
    rule, severity, label, involved, evidence, ts = finding
    return {
        "alert_id": alert_id(rule, event.key, label.label_id),
        "rule": rule,
        "severity": severity,
        "label_id": label.label_id,
        "seller_id": label.seller_id,
        "order_id": label.order_id,
        "tracking_number": event.number,
        "carrier": event.carrier,
        "event_time": rfc3339(ts),
        "labels": [describe(lb) for lb in involved],
        "evidence": evidence,
        "actions": list(ACTIONS[rule][severity]),
    }


def content_digest(body: dict[str, Any]) -> int:
    """64 bits of the published content: a finding whose digest changed is published again."""
    return int.from_bytes(hashlib.blake2b(orjson.dumps(body), digest_size=8).digest(), "big")


def _digests(state: TrackingState, event: Event, settings: Settings) -> dict[tuple[str, str], int]:
    """The findings' content digests, taken before an event changes the facts in place."""
    return {key: content_digest(_body(found, event))
            for key, found in findings(state, settings).items()}


def _publish(finding: Finding, event: Event, alerts: list[dict[str, Any]],
             body: dict[str, Any] | None = None, digest: int | None = None) -> None:
    """Publish the finding as open: a new alert, a re-opening or a corrected revision."""
    rule, severity, label = finding[0], finding[1], finding[2]
    if body is None:
        body = _body(finding, event)
    if digest is None:
        digest = content_digest(body)
    published = getattr(label, rule)
    revision = 1 if published is None else published.revision + 1
    setattr(label, rule, Published(revision, OPEN, severity, digest))
    body["status"] = OPEN
    body["revision"] = revision
    alerts.append(body)


def _retract(rule: str, label: Label, published: Published, event: Event,
             alerts: list[dict[str, Any]]) -> None:
    revision = published.revision + 1
    setattr(label, rule, Published(revision, RETRACTED, published.severity))
    body = _body((rule, published.severity, label, [label], {
        "retracted_because": {"event_id": event.event_id, "type": _EVENT_TYPE[type(event)]},
    }, event.event_ts), event)
    body["actions"] = []  # a retracted alert asks for nothing any more
    body["status"] = RETRACTED
    body["revision"] = revision
    alerts.append(body)


def _reconcile(before: dict[tuple[str, str], int] | None,
               after: dict[tuple[str, str], Finding], state: TrackingState, event: Event,
               alerts: list[dict[str, Any]]) -> None:
    """Publish what the event changed between the findings before and after it (`before`:
    their content digests; None: the event could only add findings). A finding is published
    when it is not open, or when the event changed its content (any field: severity, event
    time, labels, evidence) to other than what was published. An open alert whose finding
    had already gone or changed with dropped facts is left alone: only what the event itself
    changes is published."""
    for key, finding in after.items():
        published = getattr(finding[2], key[0])
        if published is None or published.status != OPEN:
            _publish(finding, event, alerts)
        elif before is not None:
            body = _body(finding, event)
            digest = content_digest(body)
            if digest != published.digest and before.get(key) != digest:
                _publish(finding, event, alerts, body, digest)
    if before:
        for key in before:
            if key not in after:
                label = state.labels[key[1]]
                published = getattr(label, key[0])
                if published is not None and published.status == OPEN:
                    _retract(key[0], label, published, event, alerts)


def _scan_dict(scan: Scan) -> dict[str, Any]:
    return {"occurred_at": rfc3339(scan[0]), "status": STATUSES[scan[1]],
            "postal_code": scan[2] or None, "country": scan[3] or None}


def _postal(code: str, prefix: int) -> str:
    return code.replace(" ", "").replace("-", "").upper()[:prefix]


# --- the rules ---------------------------------------------------------------------------
# `held` is the labels taking part (purchased, valid number), oldest first, ties by label_id;
# `bought` their purchase times. A scan belongs to held[bisect_right(bought, ts) - 1].

def _held(state: TrackingState) -> list[Label]:
    held = [lb for lb in state.labels.values() if lb.purchased is not None and not lb.invalid]
    if len(held) > 1:
        held.sort(key=_held_order)
    return held


def _held_order(label: Label) -> tuple[int, str]:
    return label.purchased, label.label_id  # type: ignore[return-value]


def _last_activity(scans: list[Scan], bought: list[int]) -> list[int]:
    """Per held label: its purchase or the latest scan belonging to it."""
    last = list(bought)
    for scan in scans:
        owner = bisect_right(bought, scan[0]) - 1
        if owner >= 0 and scan[0] > last[owner]:
            last[owner] = scan[0]
    return last


def _duplicate(held: list[Label], last: list[int], j: int, settings: Settings,
               ) -> Finding | None:
    label = held[j]
    t = label.purchased
    assert t is not None
    window = settings.reuse_window_s
    # Earlier labels own no scan at or after t (it would belong to a later label), so their
    # overall last activity is their last activity up to t.
    holders = [i for i in range(j)
               if not _voided_at(held[i], t, window) and t - last[i] < window]
    if not holders:
        return None
    other = any(held[i].seller_id != label.seller_id for i in holders)
    return (DUPLICATE_TRACKING, "critical" if other else "warning", label,
            [held[i] for i in holders] + [label], {
                "holders": [{"label_id": held[i].label_id, "seller_id": held[i].seller_id,
                             "last_activity": rfc3339(last[i])} for i in holders],
                "other_seller": other,
                "reuse_window_seconds": window,
            }, t)


def _previously_used(scans: list[Scan], held: list[Label], bought: list[int], j: int,
                     settings: Settings) -> Finding | None:
    label = held[j]
    t = bought[j]
    window = settings.reuse_window_s
    # accepted-or-later scans with skew < t - occurred_at < window
    lo = bisect_right(scans, (t - window, len(STATUSES)))
    hi = bisect_left(scans, (t - settings.clock_skew_s, -1))
    used = [scans[k] for k in range(lo, hi) if scans[k][1] >= _ACCEPTED]
    if not used:
        return None
    involved = sorted({o for o in (bisect_right(bought, s[0]) - 1 for s in used) if o >= 0})
    return (PREVIOUSLY_USED, "critical", label, [held[i] for i in involved] + [label], {
        "scans": [_scan_dict(s) for s in used[:_MAX_EVIDENCE_SCANS]],
        "clock_skew_seconds": settings.clock_skew_s,
        "reuse_window_seconds": window,
    }, t)


def _destination(label: Label, scan: Scan, settings: Settings) -> Finding | None:
    if scan[1] not in _AT_DOOR or not (scan[2] or scan[3]):
        return None
    prefix = settings.postal_prefix
    if scan[3] and scan[3] != label.country:
        compared = "country"
    elif (scan[2] and scan[2] != label.postal_code  # equal codes: equal prefixes, at once
          and _postal(scan[2], prefix) != _postal(label.postal_code, prefix)):
        compared = "postal_prefix"
    else:
        return None
    return (DESTINATION_MISMATCH, "warning", label, [label], {
        "scan": _scan_dict(scan),
        "ship_to": {"postal_code": label.postal_code, "country": label.country},
        "compared": compared,
        "postal_prefix": prefix,
    }, scan[0])


def _voided_at(label: Label, t: int, window: int) -> bool:
    """Whether the label was voided at or before t. A void more than the reuse window before
    the label's own purchase is not taken as its void: by then the facts of a number have
    expired (a label id is not reused), so counting it would depend on arrival order."""
    voided = label.voided
    return voided is not None and voided <= t and voided >= label.purchased - window  # type: ignore[operator]


def _voided_scanned(label: Label, scan: Scan, settings: Settings) -> Finding | None:
    voided = label.voided
    if (scan[1] < _ACCEPTED or not _voided_at(label, scan[0] - 1, settings.reuse_window_s)):
        return None
    return (VOIDED_LABEL_SCANNED, "warning", label, [label], {
        "voided_at": rfc3339(voided),
        "scan": _scan_dict(scan),
    }, scan[0])


def findings(state: TrackingState, settings: Settings) -> dict[tuple[str, str], Finding]:
    """Every finding the facts support, (rule, label_id) -> Finding; invalid_tracking aside.

    Run around purchases, voids and scans out of event-time order (they can move scans,
    holds and evidence); a scan newer than all takes the incremental path of `_owner_scan`,
    which tests prove keeps the open alerts equal to this.
    """
    scans = state.scans
    if not scans and len(state.labels) < 2:
        return {}  # a first label and no scans: every rule needs a scan or a second label
    held = _held(state)
    if not held:
        return {}
    out: dict[tuple[str, str], Finding] = {}
    bought = [lb.purchased for lb in held]
    last = _last_activity(scans, bought)  # type: ignore[arg-type]
    for j, label in enumerate(held):
        if j and (found := _duplicate(held, last, j, settings)):
            out[DUPLICATE_TRACKING, label.label_id] = found
        if scans and (found := _previously_used(scans, held, bought, j, settings)):  # type: ignore[arg-type]
            out[PREVIOUSLY_USED, label.label_id] = found
    for scan in scans:  # the earliest scan that shows it is the evidence
        owner = bisect_right(bought, scan[0]) - 1
        if owner >= 0:
            label = held[owner]
            if ((DESTINATION_MISMATCH, label.label_id) not in out
                    and (found := _destination(label, scan, settings))):
                out[DESTINATION_MISMATCH, label.label_id] = found
            if ((VOIDED_LABEL_SCANNED, label.label_id) not in out
                    and (found := _voided_scanned(label, scan, settings))):
                out[VOIDED_LABEL_SCANNED, label.label_id] = found
    return out


def _is_open(published: Published | None) -> bool:
    return published is not None and published.status == OPEN


# --- expiry and bounds ----------------------------------------------------------------------

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
        if (lb.purchased or 0) < horizon and (lb.voided or 0) < horizon:
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
    activity = {lid: max(lb.purchased or 0, lb.voided or 0)
                for lid, lb in state.labels.items()}
    held = _held(state)
    if held and state.scans:
        bought = [lb.purchased for lb in held]
        for label, last in zip(held, _last_activity(state.scans, bought),  # type: ignore[arg-type]
                               strict=True):
            activity[label.label_id] = max(activity[label.label_id], last)
    return activity
