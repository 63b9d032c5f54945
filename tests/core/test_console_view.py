"""The console's view: highest revisions, the event-time window, the rate chart, actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.core.console_view import CHART_MINUTES, ConsoleView


def alert(n: int, revision: int = 1, *, rule: str = "previously_used", status: str = "open",
          event_time: str = "2025-02-24T10:00:00Z", detected: str = "2026-01-01T12:00:30Z",
          seller: str = "S1", carrier: str = "usps") -> dict[str, Any]:
    return {"alert_id": f"a{n}", "rule": rule, "severity": "critical", "label_id": f"L{n}",
            "seller_id": seller, "order_id": f"O{n}", "tracking_number": f"N{n}",
            "carrier": carrier, "event_time": event_time, "detected_at": detected,
            "labels": [], "evidence": {"n": n}, "actions": [], "status": status,
            "revision": revision}


def incident(iid: str, revision: int, status: str = "open", started: str = "2025-02-24T10:00:00Z",
             ended: str = "2025-02-24T12:00:00Z") -> dict[str, Any]:
    return {"incident_id": iid, "carrier": "usps", "channel": "veeqo", "status": status,
            "revision": revision, "started_at": started, "ended_at": ended,
            "resolved_at": None, "alerts": 12, "labels": 12, "sellers": 4, "orders": 12,
            "by_rule": {}, "refunds_owed": [{"currency": "USD", "amount": "80.10"}],
            "windows": [{"start": "2025-02-24T10:00:00Z", "alerts": 10, "sellers": 3},
                        {"start": "2025-02-24T11:00:00Z", "alerts": 2, "sellers": 1}],
            "sample": [], "actions": ["hold_label_sales"], "detected_at": "x"}


def test_an_alert_is_kept_at_its_highest_revision_and_counted_once() -> None:
    view = ConsoleView()
    assert view.apply("alert", alert(1))
    assert view.apply("alert", alert(1, 2, status="retracted"))
    assert not view.apply("alert", alert(1, 1))  # an older revision changes nothing
    assert not view.apply("alert", alert(1, 2, status="retracted"))  # a repeat neither
    rows = view.snapshot()["alerts"]
    assert [(r["alert_id"], r["revision"], r["status"]) for r in rows] == [("a1", 2, "retracted")]
    chart = view.chart()
    assert chart["rules"] == ["previously_used"] and sum(chart["counts"]["previously_used"]) == 1


def test_the_window_is_the_last_days_before_the_latest_event_unless_from_is_given() -> None:
    view = ConsoleView(window_days=7)
    view.apply("alert", alert(1, event_time="2025-01-01T00:00:00Z"))
    view.apply("alert", alert(2, event_time="2025-02-24T00:00:00Z"))
    view.apply("alert", alert(3, event_time="2025-02-20T00:00:00Z"))
    view.tidy()
    assert [a["alert_id"] for a in view.alert_rows()] == ["a3", "a2"]
    since = ConsoleView(since=datetime(2024, 12, 1, tzinfo=UTC))
    for n, t in ((1, "2025-01-01T00:00:00Z"), (2, "2024-11-01T00:00:00Z")):
        since.apply("alert", alert(n, event_time=t))
    since.tidy()
    assert [a["alert_id"] for a in since.alert_rows()] == ["a1"]


def test_alerts_filter_by_rule_carrier_and_seller() -> None:
    view = ConsoleView()
    view.apply("alert", alert(1, rule="duplicate_tracking", seller="S1", carrier="usps"))
    view.apply("alert", alert(2, rule="previously_used", seller="S2", carrier="ups"))
    view.apply("alert", alert(3, rule="previously_used", seller="S1", carrier="usps"))
    assert [a["alert_id"] for a in view.alert_rows(rule="previously_used")] == ["a3", "a2"]
    assert [a["alert_id"] for a in view.alert_rows(carrier="ups")] == ["a2"]
    assert [a["alert_id"] for a in view.alert_rows(seller="S1", rule="duplicate_tracking")] == [
        "a1"]
    assert view.facets() == {"rule": ["duplicate_tracking", "previously_used"],
                             "carrier": ["ups", "usps"], "seller": ["S1", "S2"]}


def test_the_chart_counts_alerts_per_detection_minute_and_rule() -> None:
    view = ConsoleView()
    view.apply("alert", alert(1, detected="2026-01-01T12:00:01Z"))
    view.apply("alert", alert(2, detected="2026-01-01T12:00:59Z", rule="duplicate_tracking"))
    view.apply("alert", alert(3, detected="2026-01-01T12:02:00Z"))
    chart = view.chart()
    assert len(chart["minutes"]) == CHART_MINUTES and chart["minutes"][-1] == "2026-01-01T12:02Z"
    assert chart["counts"]["previously_used"][-3:] == [1, 0, 1]
    assert chart["counts"]["duplicate_tracking"][-3:] == [1, 0, 0]
    # a later wall-clock minute moves the chart on
    assert view.chart("2026-01-01T12:10Z")["minutes"][-1] == "2026-01-01T12:10Z"


def test_incidents_open_first_with_an_hourly_line_and_retracted_ones_gone() -> None:
    view = ConsoleView()
    view.apply("incident", incident("i1", 1, status="resolved", started="2025-02-25T10:00:00Z"))
    view.apply("incident", incident("i2", 1))
    view.apply("incident", incident("i3", 1))
    view.apply("incident", incident("i3", 2, status="retracted"))
    view.apply("incident", incident("i2", 1, status="resolved"))  # not newer: ignored
    rows = view.snapshot()["incidents"]
    assert [(r["incident_id"], r["status"]) for r in rows] == [("i2", "open"), ("i1", "resolved")]
    assert rows[0]["hourly"] == [["2025-02-24T10:00:00Z", 10], ["2025-02-24T11:00:00Z", 2]]
    assert rows[0]["refunds_owed"] == [{"currency": "USD", "amount": "80.10"}]


def test_actions_count_due_and_cancelled_per_kind_at_their_highest_revision() -> None:
    view = ConsoleView()

    def action(aid: str, kind: str, revision: int, status: str) -> dict[str, Any]:
        return {"action_id": aid, "action": kind, "status": status, "revision": revision}

    view.apply("action", action("x", "refund_label", 1, "due"))
    view.apply("action", action("y", "refund_label", 1, "due"))
    view.apply("action", action("x", "refund_label", 2, "cancelled"))
    view.apply("action", action("z", "notify_buyer", 1, "due"))
    view.apply("action", action("x", "refund_label", 1, "due"))  # older: ignored
    assert view.action_counts() == {"notify_buyer": {"due": 1, "cancelled": 0},
                                    "refund_label": {"due": 1, "cancelled": 1}}


def test_values_that_are_not_records_are_skipped() -> None:
    view = ConsoleView()
    assert not view.apply("alert", None)
    assert not view.apply("alert", {"revision": 1})
    assert not view.apply("incident", [1])
    assert not view.apply("nonsense", {"revision": 1})
    assert view.skipped == 4 and view.snapshot()["alerts"] == []
