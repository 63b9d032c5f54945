"""Hand-made alert revisions for the response tests, shaped as detection publishes them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core.detection import ACTIONS
from streams.core.response import StepResult, Watermark, step, step_many
from streams.core.settings import Settings

BASE = datetime(2025, 2, 24, tzinfo=UTC)  # an epoch-aligned hour: windows start here


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def alert(
    label: str,
    minutes: float,
    seller: str,
    *,
    rule: str = "previously_used",
    severity: str = "critical",
    carrier: str = "usps",
    channel: str | None = "buy_shipping",
    order: str | None = None,
    cost: tuple[str, str] | None = ("5.40", "USD"),
    number: str | None = None,
    revision: int = 1,
    status: str = "open",
) -> dict[str, Any]:
    """An alert about label `label`, purchased `minutes` after BASE by `seller`."""
    number = number or f"9400{int(hashlib.sha256(label.encode()).hexdigest()[:12], 16):018d}"
    purchased = ts(at(minutes))
    entry = {"label_id": label, "seller_id": seller, "order_id": order or f"order-{label}",
             "channel": channel, "purchased_at": purchased,
             "cost": None if cost is None else {"amount": cost[0], "currency": cost[1]}}
    return {
        "alert_id": hashlib.sha256(f"{rule}|{carrier}:{number}|{label}".encode()).hexdigest()[:32],
        "rule": rule,
        "severity": severity,
        "label_id": label,
        "seller_id": seller,
        "order_id": entry["order_id"],
        "tracking_number": number,
        "carrier": carrier,
        "event_time": purchased,
        "detected_at": "2026-01-01T00:00:00.000Z",
        "labels": [entry],
        "evidence": {},
        "actions": list(ACTIONS[rule][severity]) if status == "open" else [],
        "status": status,
        "revision": revision,
    }


def retracted(original: dict[str, Any], revision: int = 2) -> dict[str, Any]:
    """The alert's retraction, as detection publishes it."""
    return {**original, "status": "retracted", "revision": revision, "actions": [],
            "evidence": {"retracted_because": {"event_id": "e", "type": "label.voided"}}}


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


class Store:
    """A dict store run through `step`, keeping the highest revision of every record."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.states: dict[str, bytes] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, dict[str, Any]] = {}
        self.published: list[dict[str, Any]] = []

    def feed(self, item: dict[str, Any] | Watermark) -> StepResult:
        return self._apply(step(self.states.get, item, self.settings))

    def feed_many(self, items: list[dict[str, Any] | Watermark]) -> StepResult:
        return self._apply(step_many(self.states.get, items, self.settings))

    def _apply(self, result: StepResult) -> StepResult:
        for key, value in result.states.items():
            if value is None:
                self.states.pop(key, None)
            else:
                self.states[key] = value
        for record in result.incidents:
            self._keep(self.incidents, record["incident_id"], record)
        for record in result.actions:
            self._keep(self.actions, record["action_id"], record)
        return result

    def _keep(self, kept: dict[str, dict[str, Any]], key: str, record: dict[str, Any]) -> None:
        self.published.append(record)
        have = kept.get(key)
        assert have is None or record["revision"] == have["revision"] + 1, (have, record)
        kept[key] = record

    def final(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The non-retracted incidents and due actions, as derive() orders them."""
        incidents = sorted((r for r in self.incidents.values() if r["status"] != "retracted"),
                           key=lambda r: (r["carrier"], r["channel"], r["started_at"]))
        actions = sorted((r for r in self.actions.values() if r["status"] == "due"),
                         key=lambda r: (r["order_id"], r["action"]))
        return incidents, actions


def without(records: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in names} for r in records]
