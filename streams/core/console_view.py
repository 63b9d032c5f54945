"""The console's own small view of the alerts, incidents and actions topics (pure: records in,
a JSON-ready snapshot out; `streams.runtime.console` feeds it and serves it).

What it keeps, each record at its highest revision:
- incidents (not retracted) whose span reaches into the window;
- the latest `max_alerts` alerts whose event time is in the window, and per detection minute
  (wall clock, `detected_at`) and rule, how many alerts were first published: the rate chart;
- per action kind, how many actions are `due` and `cancelled` now.

The window is event time: from `since` when given, else the last `window_days` days before
the latest event time seen (so a replay of old history shows, as live traffic does).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

CHART_MINUTES = 30  # the rate chart's width
SPARK_HOURS = 24  # an incident's sparkline: its last hours of windows
ALERTS_SENT = 100  # alerts in one snapshot, newest first


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _minute(value: Any) -> str | None:
    moment = _parse(value)
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


class ConsoleView:
    def __init__(self, since: datetime | None = None, window_days: float = 7.0,
                 max_alerts: int = 5000) -> None:
        self.since = since
        self.window = timedelta(days=window_days)
        self.max_alerts = max_alerts
        self.alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()  # oldest first
        self.revisions: dict[str, int] = {}  # alert_id -> highest revision seen
        self.rate: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.incidents: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, tuple[int, str, str]] = {}  # id -> (revision, kind, status)
        self.latest: datetime | None = None  # the greatest event time seen
        self.records = 0
        self.skipped = 0  # values that are not records of their topic

    # ------------------------------------------------------------ input

    def cutoff(self) -> datetime | None:
        if self.since is not None:
            return self.since
        return None if self.latest is None else self.latest - self.window

    def _saw(self, moment: datetime | None) -> None:
        if moment is not None and (self.latest is None or moment > self.latest):
            self.latest = moment

    def apply(self, kind: str, record: Any) -> bool:
        """Take one record of `kind` (alert, incident or action); True when it changed the
        view."""
        self.records += 1
        if not isinstance(record, dict) or not isinstance(record.get("revision"), int):
            self.skipped += 1
            return False
        if kind == "alert":
            return self._alert(record)
        if kind == "incident":
            return self._incident(record)
        if kind == "action":
            return self._action(record)
        self.skipped += 1
        return False

    def _alert(self, alert: dict[str, Any]) -> bool:
        alert_id = alert.get("alert_id")
        if not isinstance(alert_id, str):
            self.skipped += 1
            return False
        revision = alert["revision"]
        if revision <= self.revisions.get(alert_id, 0):
            return False  # a repeat or an older revision
        first = alert_id not in self.revisions
        self.revisions[alert_id] = revision
        moment = _parse(alert.get("event_time"))
        self._saw(moment)
        if first:
            minute = _minute(alert.get("detected_at"))
            if minute is not None:
                self.rate[minute][str(alert.get("rule"))] += 1
        self.alerts.pop(alert_id, None)
        self.alerts[alert_id] = alert
        self._trim()
        return True

    def _trim(self) -> None:
        while len(self.alerts) > self.max_alerts:
            self.alerts.popitem(last=False)
        if len(self.rate) > CHART_MINUTES * 4:
            for minute in sorted(self.rate)[:-CHART_MINUTES * 2]:
                del self.rate[minute]

    def _incident(self, incident: dict[str, Any]) -> bool:
        incident_id = incident.get("incident_id")
        if not isinstance(incident_id, str):
            self.skipped += 1
            return False
        held = self.incidents.get(incident_id)
        if held is not None and incident["revision"] <= held["revision"]:
            return False
        self._saw(_parse(incident.get("ended_at")))
        self.incidents[incident_id] = incident
        return True

    def _action(self, action: dict[str, Any]) -> bool:
        action_id = action.get("action_id")
        if not isinstance(action_id, str):
            self.skipped += 1
            return False
        held = self.actions.get(action_id)
        if held is not None and action["revision"] <= held[0]:
            return False
        self.actions[action_id] = (action["revision"], str(action.get("action")),
                                   str(action.get("status")))
        return True

    # ------------------------------------------------------------ output

    def incident_rows(self) -> list[dict[str, Any]]:
        cut = self.cutoff()
        rows = []
        for incident in self.incidents.values():
            if incident.get("status") == "retracted":
                continue
            ended = _parse(incident.get("ended_at"))
            if cut is not None and incident.get("status") != "open" and ended and ended < cut:
                continue
            windows = incident.get("windows") or []
            rows.append({
                **{k: incident.get(k) for k in (
                    "incident_id", "carrier", "channel", "status", "revision", "started_at",
                    "ended_at", "resolved_at", "alerts", "labels", "sellers", "orders",
                    "by_rule", "refunds_owed", "sample")},
                "hourly": [[w.get("start"), w.get("alerts", 0)] for w in windows
                           if isinstance(w, dict)][-SPARK_HOURS:],
            })
        # open first, then the latest start first
        rows.sort(key=lambda r: str(r.get("started_at") or ""), reverse=True)
        rows.sort(key=lambda r: r.get("status") != "open")
        return rows

    def chart(self, now_minute: str | None = None) -> dict[str, Any]:
        """Alerts per detection minute by rule, the last CHART_MINUTES minutes up to the
        latest minute with alerts (or `now_minute`)."""
        last = max([*self.rate, now_minute or ""]) or None
        if last is None:
            return {"minutes": [], "rules": [], "counts": {}}
        end = datetime.strptime(last, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
        minutes = [(end - timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%MZ")
                   for i in range(CHART_MINUTES - 1, -1, -1)]
        rules = sorted({r for m in minutes for r in self.rate.get(m, {})})
        counts = {r: [self.rate.get(m, {}).get(r, 0) for m in minutes] for r in rules}
        return {"minutes": minutes, "rules": rules, "counts": counts}

    def action_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: {"due": 0, "cancelled": 0})
        for _, kind, status in self.actions.values():
            counts[kind][status] = counts[kind].get(status, 0) + 1
        return {kind: dict(counts[kind]) for kind in sorted(counts)}

    def alert_rows(self, rule: str = "", carrier: str = "", seller: str = "",
                   limit: int = ALERTS_SENT) -> list[dict[str, Any]]:
        rows = []
        for alert in reversed(self.alerts.values()):
            if (rule and alert.get("rule") != rule) or (
                    carrier and alert.get("carrier") != carrier) or (
                    seller and alert.get("seller_id") != seller):
                continue
            rows.append(alert)
            if len(rows) >= limit:
                break
        return rows

    def facets(self) -> dict[str, list[str]]:
        def values(name: str) -> list[str]:
            return sorted({str(a.get(name)) for a in self.alerts.values() if a.get(name)})

        return {"rule": values("rule"), "carrier": values("carrier"),
                "seller": values("seller_id")}

    def tidy(self) -> None:
        """Drop the alerts that fell out of the window (the window moves with the latest
        event time); cheap enough before each snapshot, too dear on each record."""
        cut = self.cutoff()
        if cut is not None:
            for alert_id in [a for a, x in self.alerts.items()
                             if (_parse(x.get("event_time")) or cut) < cut]:
                del self.alerts[alert_id]

    def snapshot(self, filters: dict[str, str] | None = None,
                 now_minute: str | None = None) -> dict[str, Any]:
        filters = filters or {}
        cut = self.cutoff()
        return {
            "window": {"from": None if cut is None else cut.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "latest_event": None if self.latest is None
                       else self.latest.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "incidents": self.incident_rows(),
            "chart": self.chart(now_minute),
            "alerts": self.alert_rows(filters.get("rule", ""), filters.get("carrier", ""),
                                      filters.get("seller", "")),
            "alerts_in_view": len(self.alerts),
            "facets": self.facets(),
            "actions": self.action_counts(),
            "records": self.records,
        }

