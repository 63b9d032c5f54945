"""What the alerts cost, per seller: the figures behind `tracking-validator report`.

Decisions the contract leaves open (also in the command's help):
- An alert affects the order of the label it is about (its `label_id`/`seller_id`/`order_id`);
  the other entries of `labels` are context (earlier holders, which get their own alerts when a
  rule applies to them).
- Alerts are de-duplicated by `alert_id` (topics are at-least-once; a replay re-emits the same
  ids): of each `alert_id` the highest `revision` counts (the first copy of it; an alert
  without one is revision 1), and only when its `status` is open: a retracted finding owes
  nothing. Every figure counts distinct orders or labels, never alerts: two rules on one label
  owe one refund.
- Refund owed: the `cost` of the alert's own label (found in `labels`) when `actions` include
  `refund_label`, summed per currency as exact decimals; a label without a cost is counted in
  `labels_to_refund` and `refunds_unpriced`, not guessed.
- Orders to protect (`protect_account_health`) are the orders to leave out of the seller's
  valid tracking rate, on-time delivery rate and late shipment rate: every rule's finding
  makes the carrier's tracking of the order unreliable for all three.
- The window is on `event_time` of that highest revision: `since` inclusive, `until` exclusive.
- Incidents (contract, "Incidents and actions"): given as incident records (`scan
  --incidents`, the tracking.incidents topic; of each `incident_id` the highest revision,
  retracted ones left out), or else derived from every alert read
  (streams.core.response.derive) with the latest alert `event_time` as the watermark: the
  report does not see the input, so an incident whose quiet period has passed in the input
  but not in the alerts shows as open. Those whose span meets [since, until) are shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from streams.core import response
from streams.core.detection import RULES
from streams.core.incidents import epoch
from streams.core.settings import Settings
from streams.tools.envelopes import is_envelope

SEVERITIES = ("critical", "warning", "info")
METRICS = ("valid_tracking_rate", "on_time_delivery", "late_shipment")


class AlertsError(ValueError):
    """An alerts source that cannot be read as alerts (the command exits 2)."""


def parse_time(text: str) -> datetime:
    """RFC 3339 or a bare date; a time without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp or date: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_alerts(lines: Iterable[bytes], source: str = "-") -> Iterator[dict[str, Any]]:
    """Alerts from JSON Lines, bare or in `export`'s envelopes; blank lines are skipped,
    anything else unreadable is an error."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            alert = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AlertsError(f"{source}:{number}: not JSON: {exc}") from exc
        if isinstance(alert, dict) and "rule" not in alert and is_envelope(alert):
            alert = alert.get("value")  # `export` of an alerts topic: the alert it carries
            if alert is None:
                continue  # a tombstone carries nothing
        if not isinstance(alert, dict) or "rule" not in alert or "event_time" not in alert:
            raise AlertsError(f"{source}:{number}: not an alert (needs rule and event_time)")
        yield alert


def select(
    alerts: Iterable[dict[str, Any]],
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """The open alerts whose event_time lies in [since, until): of each alert_id the first copy
    of its highest revision, in the order the alert_ids first appear."""
    latest: dict[Any, dict[str, Any]] = {}
    for n, alert in enumerate(alerts):
        alert_id = alert.get("alert_id")
        key = n if alert_id is None else alert_id  # no id: nothing to merge it with
        kept = latest.get(key)
        if kept is None or _revision(alert) > _revision(kept):
            latest[key] = alert
    chosen: list[dict[str, Any]] = []
    for alert in latest.values():
        if alert.get("status", "open") != "open":
            continue
        moment = parse_time(alert["event_time"])
        if (since and moment < since) or (until and moment >= until):
            continue
        chosen.append(alert)
    return chosen


def _revision(alert: dict[str, Any]) -> int:
    revision = alert.get("revision")
    return revision if isinstance(revision, int) else 1


@dataclass(slots=True)
class LabelActions:
    """What to do about one label of an affected order: the rules found on it and the union
    of their actions."""

    order_id: str
    label_id: str
    tracking_number: str
    carrier: str
    rules: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)


@dataclass(slots=True)
class SellerImpact:
    seller_id: str
    alerts: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    affected_orders: set[str] = field(default_factory=set)
    orders_to_protect: set[str] = field(default_factory=set)
    a_to_z_claims: set[str] = field(default_factory=set)
    buyers_to_notify: set[str] = field(default_factory=set)
    # label_id -> (amount, currency), or None when the label carries no cost
    labels_to_refund: dict[str, tuple[Decimal, str] | None] = field(default_factory=dict)
    # (order_id, label_id) -> what to do, in the order first found
    labels: dict[tuple[str, str], LabelActions] = field(default_factory=dict)

    def to_act_on(self) -> list[LabelActions]:
        """The affected orders' labels, by order then label."""
        return [self.labels[key] for key in sorted(self.labels)]

    @property
    def refunds_owed(self) -> dict[str, Decimal]:
        owed: dict[str, Decimal] = {}
        for priced in self.labels_to_refund.values():
            if priced is not None:
                amount, currency = priced
                owed[currency] = owed.get(currency, Decimal(0)) + amount
        return dict(sorted(owed.items()))

    @property
    def refunds_unpriced(self) -> int:
        return sum(1 for priced in self.labels_to_refund.values() if priced is None)

    def sort_key(self) -> tuple[int, int, str]:
        return (-self.by_severity["critical"], -len(self.affected_orders), self.seller_id)


@dataclass(slots=True)
class Impact:
    since: datetime | None
    until: datetime | None
    sellers: list[SellerImpact]
    # (hour start, rule) -> alerts, for the timeline
    timeline: Counter[tuple[datetime, str]]
    # incident records (no detected_at), oldest first; see incidents_of / read_incidents
    incidents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def alerts(self) -> int:
        return sum(s.alerts for s in self.sellers)

    @property
    def currencies(self) -> list[str]:
        return sorted({c for s in self.sellers for c in s.refunds_owed})


def _cost(alert: dict[str, Any]) -> tuple[Decimal, str] | None:
    for label in alert.get("labels") or ():
        if isinstance(label, dict) and label.get("label_id") == alert.get("label_id"):
            cost = label.get("cost")
            if not isinstance(cost, dict):
                return None
            try:
                return Decimal(str(cost["amount"])), str(cost["currency"]).upper()
            except (KeyError, InvalidOperation):
                return None
    return None


def assess(
    alerts: Iterable[dict[str, Any]],
    since: datetime | None = None,
    until: datetime | None = None,
) -> Impact:
    sellers: dict[str, SellerImpact] = {}
    timeline: Counter[tuple[datetime, str]] = Counter()
    for alert in select(alerts, since, until):
        seller = sellers.setdefault(
            alert.get("seller_id") or "", SellerImpact(alert.get("seller_id") or "")
        )
        rule = alert["rule"]
        seller.alerts += 1
        seller.by_rule[rule] += 1
        seller.by_severity[alert.get("severity") or "info"] += 1
        order = alert.get("order_id")
        actions = set(alert.get("actions") or ())
        if order:
            seller.affected_orders.add(order)
            if "protect_account_health" in actions:
                seller.orders_to_protect.add(order)
            if "fund_a_to_z_claim" in actions:
                seller.a_to_z_claims.add(order)
            if "notify_buyer" in actions:
                seller.buyers_to_notify.add(order)
        label_id = alert.get("label_id")
        if "refund_label" in actions and label_id and label_id not in seller.labels_to_refund:
            seller.labels_to_refund[label_id] = _cost(alert)
        key = (order or "", label_id or "")
        line = seller.labels.get(key)
        if line is None:
            line = seller.labels[key] = LabelActions(
                key[0], key[1], str(alert.get("tracking_number") or ""),
                str(alert.get("carrier") or ""))
        line.rules.add(rule)
        line.actions.update(actions)
        hour = parse_time(alert["event_time"]).astimezone(UTC)
        timeline[(hour.replace(minute=0, second=0, microsecond=0), rule)] += 1
    ordered = sorted(sellers.values(), key=SellerImpact.sort_key)
    return Impact(since=since, until=until, sellers=ordered, timeline=timeline)


_RESPONSE_FIELDS = ("alert_id", "rule", "severity", "label_id", "tracking_number", "carrier",
                    "event_time")


def incidents_of(alerts: Iterable[dict[str, Any]], settings: Settings | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 ) -> list[dict[str, Any]]:
    """The incidents the alerts make (streams.core.response.derive), the watermark being
    their latest event_time; those whose span meets [since, until). Alerts without the
    fields the response reads are left out (the report accepts sparse alerts)."""
    usable = []
    for alert in alerts:
        if all(isinstance(alert.get(k), str) for k in _RESPONSE_FIELDS):
            usable.append({**alert, "revision": _revision(alert),
                           "status": alert.get("status", "open")})
    if not usable:
        return []
    watermark = max(epoch(a["event_time"]) for a in usable)
    found, _ = response.derive(usable, watermark, settings or Settings.from_env())
    return [{k: v for k, v in r.items() if k != "detected_at"} for r in found
            if _meets(r, since, until)]


def read_incidents(lines: Iterable[bytes], source: str = "-", since: datetime | None = None,
                   until: datetime | None = None) -> list[dict[str, Any]]:
    """Incident records from JSON Lines: of each incident_id the highest revision, unless
    retracted; those whose span meets [since, until), oldest first."""
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AlertsError(f"{source}:{number}: not JSON: {exc}") from exc
        if not isinstance(record, dict) or not all(
                k in record for k in ("incident_id", "started_at", "ended_at", "status")):
            raise AlertsError(f"{source}:{number}: not an incident")
        have = latest.get(record["incident_id"])
        if have is None or _revision(record) > _revision(have):
            latest[record["incident_id"]] = record
    kept = [r for r in latest.values() if r["status"] != "retracted" and _meets(r, since, until)]
    return sorted(kept, key=lambda r: (r["started_at"], r["carrier"], r["channel"]))


def _meets(record: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    started, ended = parse_time(record["started_at"]), parse_time(record["ended_at"])
    return (since is None or ended > since) and (until is None or started < until)


def incident_rows(impact: Impact) -> Iterator[list[str | int]]:
    """The CSV section of incidents: a header, then one row per incident."""
    yield ["incident_id", "carrier", "channel", "status", "started_at", "ended_at",
           "resolved_at", "alerts", "labels", "sellers", "orders", "by_rule", "refunds_owed"]
    for r in impact.incidents:
        yield [r["incident_id"], r["carrier"], r["channel"], r["status"], r["started_at"],
               r["ended_at"], r.get("resolved_at") or "", r["alerts"], r["labels"],
               r["sellers"], r["orders"],
               " ".join(f"{rule}={n}" for rule, n in (r.get("by_rule") or {}).items()),
               " ".join(f"{m['currency']} {m['amount']}" for m in r.get("refunds_owed") or ())]


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _seller_dict(s: SellerImpact) -> dict[str, Any]:
    return {
        "seller_id": s.seller_id,
        "alerts": s.alerts,
        "by_rule": {rule: s.by_rule[rule] for rule in RULES if s.by_rule[rule]},
        "by_severity": {sev: s.by_severity[sev] for sev in SEVERITIES if s.by_severity[sev]},
        "affected_orders": len(s.affected_orders),
        "orders_to_protect": len(s.orders_to_protect),
        "a_to_z_claims": len(s.a_to_z_claims),
        "buyers_to_notify": len(s.buyers_to_notify),
        "labels_to_refund": len(s.labels_to_refund),
        "refunds_owed": {c: _money(a) for c, a in s.refunds_owed.items()},
        "refunds_unpriced": s.refunds_unpriced,
        "orders": {
            "affected": sorted(s.affected_orders),
            "protect": sorted(s.orders_to_protect),
            "a_to_z_claims": sorted(s.a_to_z_claims),
            "notify_buyer": sorted(s.buyers_to_notify),
        },
        "refund_label_ids": sorted(s.labels_to_refund),
    }


def totals(impact: Impact) -> dict[str, Any]:
    by_rule: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    owed: dict[str, Decimal] = {}
    for s in impact.sellers:
        by_rule.update(s.by_rule)
        by_severity.update(s.by_severity)
        for currency, amount in s.refunds_owed.items():
            owed[currency] = owed.get(currency, Decimal(0)) + amount

    def count(name: str) -> int:
        return sum(len(getattr(s, name)) for s in impact.sellers)

    return {
        "alerts": impact.alerts,
        "sellers": len(impact.sellers),
        "by_rule": {rule: by_rule[rule] for rule in RULES if by_rule[rule]},
        "by_severity": {sev: by_severity[sev] for sev in SEVERITIES if by_severity[sev]},
        "affected_orders": count("affected_orders"),
        "orders_to_protect": count("orders_to_protect"),
        "a_to_z_claims": count("a_to_z_claims"),
        "buyers_to_notify": count("buyers_to_notify"),
        "labels_to_refund": count("labels_to_refund"),
        "refunds_owed": {c: _money(a) for c, a in sorted(owed.items())},
        "refunds_unpriced": sum(s.refunds_unpriced for s in impact.sellers),
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_dict(impact: Impact) -> dict[str, Any]:
    return {
        "window": {"since": _iso(impact.since), "until": _iso(impact.until)},
        "protect_metrics": list(METRICS),
        "totals": totals(impact),
        "sellers": [_seller_dict(s) for s in impact.sellers],
        "timeline": [
            {"hour": _iso(hour), "rule": rule, "alerts": n}
            for (hour, rule), n in sorted(impact.timeline.items())
        ],
        "incidents": impact.incidents,
    }


def csv_header(impact: Impact) -> list[str]:
    return [
        "seller_id",
        "alerts",
        "critical",
        "warning",
        *RULES,
        "affected_orders",
        "orders_to_protect",
        "a_to_z_claims",
        "buyers_to_notify",
        "labels_to_refund",
        "refunds_unpriced",
        *(f"refund_{c}" for c in impact.currencies),
    ]


def csv_rows(impact: Impact) -> Iterator[list[str | int]]:
    """One row per seller; refunds in one column per currency (empty currencies: 0.00)."""
    for s in impact.sellers:
        owed = s.refunds_owed
        yield [
            s.seller_id,
            s.alerts,
            s.by_severity["critical"],
            s.by_severity["warning"],
            *(s.by_rule[rule] for rule in RULES),
            len(s.affected_orders),
            len(s.orders_to_protect),
            len(s.a_to_z_claims),
            len(s.buyers_to_notify),
            len(s.labels_to_refund),
            s.refunds_unpriced,
            *(_money(owed.get(c, Decimal(0))) for c in impact.currencies),
        ]
