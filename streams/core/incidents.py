"""Incidents: runs of epoch-aligned windows in which one carrier and channel got many
critical alerts of several sellers (contract, "Incidents and actions"). Pure definitions,
shared by the stream step and the offline mode (streams.core.response).

* A *qualifying alert* is open, of rule previously_used or duplicate_tracking, critical. Its
  time is the purchase of the label it is about, its group that label's carrier and channel
  ("" when the label has none). The label's facts come from the alert's `labels` entry for
  its `label_id`.
* A window of `incident_window` (aligned to the epoch) qualifies for a group with at least
  `incident_min_alerts` qualifying alerts of at least `incident_min_sellers` sellers.
* An incident is a run of qualifying windows, each next one starting less than
  `incident_quiet` after the previous one ends; it counts every qualifying alert of its group
  in [started_at, ended_at), and is open while the watermark < ended_at + incident_quiet.
"""

from __future__ import annotations

import calendar
import hashlib
import heapq
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from streams.core.settings import Settings

QUALIFYING_RULES = frozenset({"previously_used", "duplicate_tracking"})
HOLD = "hold_label_sales"  # the incident's action; the others are per order
ORDER_ACTIONS = ("fund_a_to_z_claim", "notify_buyer", "protect_account_health", "refund_label")
SAMPLE_SIZE = 10

# An incident's span: (started_at, ended_at, incident_id), epoch seconds.
Span = tuple[int, int, str]


class Fact(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """What the response needs of one open alert: the alert and the label it is about."""

    alert_id: str
    rule: str
    severity: str
    t: int  # the label's purchased_at, epoch seconds
    label_id: str
    seller_id: str
    order_id: str
    tracking_number: str
    carrier: str
    channel: str  # "" when the label has none
    amount: str | None  # the label's cost
    currency: str | None
    actions: tuple[str, ...]  # the per-order actions it asks for (ORDER_ACTIONS order)

    @property
    def asks(self) -> bool:
        return bool(self.actions)


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def epoch(text: str) -> int:
    """Whole epoch seconds of an RFC 3339 timestamp (fractions truncated)."""
    moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    if moment.tzinfo is None:
        return calendar.timegm(moment.timetuple())
    return calendar.timegm(moment.utctimetuple())


def fact_of(alert: dict[str, Any]) -> Fact | None:
    """The facts of an alert revision, None unless it is open."""
    if alert.get("status") != "open":
        return None
    label_id = alert["label_id"]
    label = next((lb for lb in alert.get("labels") or ()
                  if isinstance(lb, dict) and lb.get("label_id") == label_id), None) or {}
    purchased = label.get("purchased_at") or alert["event_time"]
    cost = label.get("cost")
    asked = set(alert.get("actions") or ())
    return Fact(
        alert_id=alert["alert_id"], rule=alert["rule"], severity=alert["severity"],
        t=epoch(purchased), label_id=label_id,
        seller_id=label.get("seller_id", alert.get("seller_id")) or "",
        order_id=label.get("order_id", alert.get("order_id")) or "",
        tracking_number=alert["tracking_number"], carrier=alert["carrier"],
        channel=label.get("channel") or "",
        amount=cost.get("amount") if isinstance(cost, dict) else None,
        currency=cost.get("currency") if isinstance(cost, dict) else None,
        actions=tuple(a for a in ORDER_ACTIONS if a in asked),
    )


def qualifies(fact: Fact) -> bool:
    return fact.rule in QUALIFYING_RULES and fact.severity == "critical"


def incident_id(carrier: str, channel: str, started_at: str) -> str:
    return hashlib.sha256(f"{carrier}|{channel}|{started_at}".encode()).hexdigest()[:32]


def link(spans: list[Span], t: int) -> str | None:
    """The incident whose span holds time t, if any."""
    for started, ended, ident in spans:
        if started <= t < ended:
            return ident
    return None


def _money(total: Decimal) -> str:
    return format(total, "f")


def incident_records(facts: Iterable[Fact], watermark: int, settings: Settings,
                     ) -> list[dict[str, Any]]:
    """The incidents of one group's open alerts at `watermark`, oldest first, as records
    without detected_at (revision 0: the publisher numbers them)."""
    width = settings.incident_window_s
    quiet = settings.incident_quiet_s
    by_window: dict[int, list[Fact]] = {}
    for fact in facts:
        if qualifies(fact):
            by_window.setdefault(fact.t // width, []).append(fact)
    qualifying = sorted(
        w for w, members in by_window.items()
        if len(members) >= settings.incident_min_alerts
        and len({f.seller_id for f in members}) >= settings.incident_min_sellers
    )
    runs: list[list[int]] = []
    for w in qualifying:
        if runs and w * width - (runs[-1][-1] + 1) * width < quiet:
            runs[-1].append(w)
        else:
            runs.append([w])
    records = []
    for run in runs:
        first, last = run[0], run[-1]
        records.append(_record(by_window, first, last, watermark, settings))
    return records


def _record(by_window: dict[int, list[Fact]], first: int, last: int, watermark: int,
            settings: Settings) -> dict[str, Any]:
    width = settings.incident_window_s
    members = [f for w in range(first, last + 1) for f in by_window.get(w, ())]
    started, ended = first * width, (last + 1) * width
    resolves = ended + settings.incident_quiet_s
    is_open = watermark < resolves
    carrier, channel = members[0].carrier, members[0].channel
    started_at = rfc3339(started)
    # each label's cost once: that of its alert with the smallest id (its alerts agree)
    cost_of: dict[str, Fact] = {}
    for f in members:
        have = cost_of.get(f.label_id)
        if have is None or f.alert_id < have.alert_id:
            cost_of[f.label_id] = f
    owed: dict[str, Decimal] = {}
    for amount, currency in ((f.amount, f.currency) for f in cost_of.values()):
        if amount is None or currency is None:
            continue
        try:
            owed[currency] = owed.get(currency, Decimal(0)) + Decimal(amount)
        except InvalidOperation:
            continue  # not a decimal: nothing to add up (the schema allows any string)
    by_rule = Counter(f.rule for f in members)
    windows = []
    for w in range(first, last + 1):
        in_window = by_window.get(w, ())
        windows.append({"start": rfc3339(w * width), "alerts": len(in_window),
                        "sellers": len({f.seller_id for f in in_window})})
    # a number's place is its earliest label time: the first SAMPLE_SIZE distinct numbers
    first_seen: dict[str, int] = {}
    for f in members:
        if f.t < first_seen.get(f.tracking_number, f.t + 1):
            first_seen[f.tracking_number] = f.t
    sample = [number for _, number in
              heapq.nsmallest(SAMPLE_SIZE, ((t, n) for n, t in first_seen.items()))]
    return {
        "incident_id": incident_id(carrier, channel, started_at),
        "carrier": carrier,
        "channel": channel,
        "status": "open" if is_open else "resolved",
        "revision": 0,
        "started_at": started_at,
        "ended_at": rfc3339(ended),
        "resolved_at": None if is_open else rfc3339(resolves),
        "alerts": len({f.alert_id for f in members}),
        "labels": len({f.label_id for f in members}),
        "sellers": len({f.seller_id for f in members}),
        "orders": len({f.order_id for f in members}),
        "by_rule": {rule: by_rule[rule] for rule in sorted(by_rule)},
        "refunds_owed": [{"currency": c, "amount": _money(owed[c])} for c in sorted(owed)],
        "windows": windows,
        "sample": sample,
        "actions": [HOLD] if is_open else [],
    }
