"""The response core (streams.core.response, incidents, actions): each definition of the
contract's "Incidents and actions" on small hand-made alert streams, expected values worked
out by hand; every record is validated against schemas/incident|action.schema.json."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import jsonschema
from response_helpers import BASE, Store, alert, at, epoch, retracted, ts, without

from streams.core import schema
from streams.core.response import Watermark, derive
from streams.core.settings import Settings

HOUR = 3600
SETTINGS = Settings()  # window 1 h, 10 alerts, 3 sellers, quiet 6 h
VALIDATORS = {name: jsonschema.Draft202012Validator(
    schema.load(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for name in ("incident", "action")}
STAMP = "2025-02-24T12:00:00.000Z"


def valid(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    for record in records:
        VALIDATORS[name].validate({**record, "detected_at": STAMP})
    return records


def incidents(alerts: list[dict[str, Any]], watermark: int = 0,
              settings: Settings = SETTINGS) -> list[dict[str, Any]]:
    found, actions = derive(alerts, watermark, settings)
    valid(actions, "action")
    return valid(found, "incident")


def burst(start_minute: float, count: int = 10, sellers: int = 3, prefix: str = "",
          **kw: Any) -> list[dict[str, Any]]:
    """`count` alerts one minute apart from `start_minute`, sellers s0..s<sellers-1> in turn."""
    return [alert(f"{prefix}l{start_minute}-{i}", start_minute + i, f"s{i % sellers}", **kw)
            for i in range(count)]


# --- qualifying alerts and windows ---------------------------------------------------------

def test_ten_alerts_of_three_sellers_in_one_window_make_an_incident_with_every_field() -> None:
    alerts = burst(0)
    [found] = incidents(alerts, epoch(at(60)))
    started = "2025-02-24T00:00:00Z"
    assert found == {
        "incident_id": hashlib.sha256(f"usps|buy_shipping|{started}".encode()).hexdigest()[:32],
        "carrier": "usps", "channel": "buy_shipping", "status": "open", "revision": 1,
        "started_at": started, "ended_at": "2025-02-24T01:00:00Z", "resolved_at": None,
        "alerts": 10, "labels": 10, "sellers": 3, "orders": 10,
        "by_rule": {"previously_used": 10},
        "refunds_owed": [{"currency": "USD", "amount": "54.00"}],  # 10 x 5.40
        "windows": [{"start": started, "alerts": 10, "sellers": 3}],
        "sample": [a["tracking_number"] for a in alerts],  # one a minute: label time order
        "actions": ["hold_label_sales"],
    }


def test_window_edges_are_epoch_aligned_and_the_end_is_exclusive() -> None:
    nine = burst(0, count=9)
    at_the_end = alert("edge", 60, "s9")  # 01:00:00 belongs to the next window
    assert incidents([*nine, at_the_end]) == []
    last_second = alert("edge", 59 + 59 / 60, "s9")  # 00:59:59
    [found] = incidents([*nine, last_second])
    assert (found["started_at"], found["alerts"], found["sellers"]) == (
        "2025-02-24T00:00:00Z", 10, 4)
    # 30 minutes into the hour to 30 minutes into the next: two windows of 5, no incident
    assert incidents([alert(f"x{i}", 30 + 6 * i, f"s{i % 3}") for i in range(10)]) == []


def test_minimum_sellers_and_alerts() -> None:
    assert incidents(burst(0, sellers=2)) == []  # 10 alerts of 2 sellers
    assert incidents(burst(0, count=9, sellers=9)) == []  # 9 alerts
    assert len(incidents(burst(0, count=10, sellers=3))) == 1
    loose = Settings(incident_min_alerts=2, incident_min_sellers=2)
    assert len(incidents(burst(0, count=2, sellers=2), settings=loose)) == 1


def test_only_open_critical_previously_used_and_duplicate_alerts_qualify() -> None:
    base = burst(0, count=9)
    for extra, qualifies in (
        (alert("x", 30, "s5", rule="duplicate_tracking"), True),
        (alert("x", 30, "s5", rule="duplicate_tracking", severity="warning"), False),
        (alert("x", 30, "s5", rule="destination_mismatch", severity="warning"), False),
        (alert("x", 30, "s5", rule="voided_label_scanned", severity="warning"), False),
        (retracted(alert("x", 30, "s5")), False),
    ):
        assert len(incidents([*base, extra])) == int(qualifies), extra["rule"]


def test_groups_are_carrier_and_channel_and_a_label_without_channel_is_its_own_group() -> None:
    mixed = [*burst(0, count=5), *burst(0, count=5, prefix="v", channel="veeqo")]
    assert incidents(mixed) == []
    [found] = incidents(burst(0, channel=None))
    assert found["channel"] == ""
    assert found["incident_id"] == hashlib.sha256(
        b"usps||2025-02-24T00:00:00Z").hexdigest()[:32]
    ups = incidents([*burst(0), *burst(0, prefix="u", carrier="ups")])
    assert [(f["carrier"], f["channel"]) for f in ups] == [("ups", "buy_shipping"),
                                                           ("usps", "buy_shipping")]


def test_the_time_is_the_labels_purchase_not_the_alert_event_time() -> None:
    alerts = burst(0)
    for a in alerts:
        a["event_time"] = ts(at(24 * 60))  # e.g. a scan that arrived a day later
    [found] = incidents(alerts)
    assert found["started_at"] == "2025-02-24T00:00:00Z"


# --- runs of windows: the quiet gap ----------------------------------------------------------

def test_windows_less_than_quiet_apart_are_one_incident_counting_the_gap() -> None:
    # qualifying windows 00:00 and 06:00: the gap 01:00..06:00 is 5 h < 6 h
    stray = [alert("stray1", 3 * 60 + 5, "s1"), alert("stray2", 3 * 60 + 7, "s2")]
    [found] = incidents([*burst(0), *stray, *burst(6 * 60, prefix="b")])
    assert (found["started_at"], found["ended_at"]) == ("2025-02-24T00:00:00Z",
                                                        "2025-02-24T07:00:00Z")
    assert found["alerts"] == 22 and found["sellers"] == 3
    assert [(w["start"][11:16], w["alerts"], w["sellers"]) for w in found["windows"]] == [
        ("00:00", 10, 3), ("01:00", 0, 0), ("02:00", 0, 0), ("03:00", 2, 2),
        ("04:00", 0, 0), ("05:00", 0, 0), ("06:00", 10, 3)]


def test_windows_exactly_quiet_apart_are_two_incidents() -> None:
    # 00:00-01:00 and 07:00-08:00: the next starts 6 h after the previous ends (not less)
    stray = alert("stray", 3 * 60, "s1")  # between the two: in neither span
    found = incidents([*burst(0), stray, *burst(7 * 60, prefix="b")])
    assert [(f["started_at"][11:16], f["ended_at"][11:16], f["alerts"]) for f in found] == [
        ("00:00", "01:00", 10), ("07:00", "08:00", 10)]
    shorter = Settings(incident_quiet=timedelta(hours=6, seconds=1))
    assert len(incidents([*burst(0), *burst(7 * 60, prefix="b")], settings=shorter)) == 1


# --- counts, refunds, sample -----------------------------------------------------------------

def test_counts_are_distinct_and_refunds_are_per_currency_each_label_once() -> None:
    alerts = [
        alert("a", 1, "s1", order="o1", cost=("5.40", "USD")),
        # the same label and order under a second rule: one label, one refund
        alert("a", 1, "s1", order="o1", cost=("5.40", "USD"), rule="duplicate_tracking"),
        alert("b", 2, "s1", order="o1", cost=("4.35", "USD")),  # a second label of order o1
        alert("c", 3, "s2", cost=("3.10", "EUR")),
        alert("d", 4, "s2", cost=("0.05", "EUR")),
        alert("e", 5, "s3", cost=None),  # no cost: nothing owed for it
        alert("f", 6, "s3", cost=("12", "GBP")),
        alert("g", 7, "s3", cost=("1.005", "USD")),
        alert("h", 8, "s4", cost=("2.50", "USD")),
        alert("i", 9, "s4", cost=("2.50", "USD")),
    ]
    [found] = incidents(alerts)
    assert (found["alerts"], found["labels"], found["sellers"], found["orders"]) == (10, 9, 4, 8)
    assert found["by_rule"] == {"duplicate_tracking": 1, "previously_used": 9}
    assert found["refunds_owed"] == [
        {"currency": "EUR", "amount": "3.15"},
        {"currency": "GBP", "amount": "12"},
        {"currency": "USD", "amount": "15.755"},  # 5.40 + 4.35 + 1.005 + 2.50 + 2.50
    ]


def test_the_sample_is_the_first_ten_distinct_numbers_by_label_time_then_number() -> None:
    alerts = [alert(f"l{i}", 59 - i, f"s{i % 3}", number=f"N{i:02d}") for i in range(12)]
    # two labels in the same second: the smaller number first
    alerts.append(alert("tie", 59 - 11, "s0", number="M00"))
    # a second alert about the same number: listed once
    alerts.append(alert("l11", 59 - 11, "s2", number="N11", rule="duplicate_tracking"))
    [found] = incidents(alerts)
    assert found["sample"] == ["M00", "N11", "N10", "N09", "N08", "N07", "N06", "N05", "N04",
                               "N03"]


# --- status by watermark ---------------------------------------------------------------------

def test_open_until_the_watermark_reaches_the_end_plus_quiet_then_resolved() -> None:
    alerts = burst(0)
    resolve = epoch(BASE) + HOUR + 6 * HOUR
    [still] = incidents(alerts, resolve - 1)
    assert (still["status"], still["resolved_at"], still["actions"]) == (
        "open", None, ["hold_label_sales"])
    [done] = incidents(alerts, resolve)
    assert (done["status"], done["resolved_at"], done["actions"]) == (
        "resolved", "2025-02-24T07:00:00Z", [])
    assert without([done], "status", "resolved_at", "actions") == without(
        [still], "status", "resolved_at", "actions")


def test_step_resolves_on_a_watermark_advance_and_ignores_a_lower_one() -> None:
    store = Store()
    for a in burst(0):
        store.feed(a)
    [opened] = store.incidents.values()
    assert (opened["status"], opened["revision"]) == ("open", 1)
    resolve = epoch(BASE) + 7 * HOUR
    early = store.feed(Watermark(resolve - 1))
    assert early.incidents == [] and set(early.states) == {"w"}  # nothing changes but the mark
    result = store.feed(Watermark(resolve))
    [resolved] = result.incidents
    assert (resolved["status"], resolved["revision"], resolved["resolved_at"]) == (
        "resolved", 2, "2025-02-24T07:00:00Z")
    assert store.feed(Watermark(resolve - 10)).states == {}  # lower: changes nothing
    assert store.feed(Watermark(resolve + 10)).incidents == []  # resolved stays resolved


# --- revisions: growth, retraction, re-opening -----------------------------------------------

def test_step_publishes_each_change_and_retracts_an_incident_a_retraction_removes() -> None:
    store = Store()
    alerts = burst(0)
    for a in alerts[:9]:
        assert store.feed(a).incidents == []
    [first] = store.feed(alerts[9]).incidents
    assert (first["status"], first["revision"], first["alerts"]) == ("open", 1, 10)
    [grown] = store.feed(alert("more", 30, "s7")).incidents
    assert (grown["revision"], grown["alerts"], grown["sellers"]) == (2, 11, 4)
    assert store.feed(alerts[9]).incidents == []  # a repeated revision publishes nothing
    assert store.feed(alerts[9]).states == {}
    # two retractions: 9 qualifying alerts left, the incident is gone
    store.feed(retracted(alerts[0]))
    [gone] = store.feed(retracted(alerts[1])).incidents
    assert (gone["status"], gone["revision"], gone["actions"]) == ("retracted", 4, [])
    assert gone["incident_id"] == first["incident_id"]
    # an older revision of a retracted alert arriving late changes nothing
    assert store.feed(alerts[1]).incidents == []
    # re-opened by a higher revision: the incident is back, under the same id
    [back] = store.feed({**alerts[1], "revision": 3}).incidents
    assert (back["status"], back["revision"], back["alerts"]) == ("open", 5, 10)
    valid([r for r in store.published if "action_id" not in r], "incident")
    valid([r for r in store.published if "action_id" in r], "action")


def test_an_incident_that_starts_elsewhere_is_retracted_and_the_new_one_published() -> None:
    store = Store()
    for a in burst(60):  # 01:00-02:00
        store.feed(a)
    # one alert in 00:00 does not qualify that window
    assert store.feed(alert("early", 0, "s1")).incidents == []
    result = None
    for a in burst(0, count=9, prefix="e"):  # 00:00 qualifies now: the incident starts there
        result = store.feed(a)
    assert result is not None
    by_status = {r["status"]: r for r in result.incidents}
    assert by_status["retracted"]["started_at"] == "2025-02-24T01:00:00Z"
    assert by_status["open"]["started_at"] == "2025-02-24T00:00:00Z"
    assert by_status["open"]["alerts"] == 20


# --- actions ---------------------------------------------------------------------------------

def test_one_action_per_order_and_asked_action_with_every_field() -> None:
    a = alert("lbl-1", 5, "s1", order="o-1", cost=("7.25", "USD"))
    found, actions = derive([a], 0, SETTINGS)
    assert found == []
    valid(actions, "action")
    assert [r["action"] for r in actions] == ["fund_a_to_z_claim", "notify_buyer",
                                              "protect_account_health", "refund_label"]
    common = {"status": "due", "revision": 1, "order_id": "o-1", "seller_id": "s1",
              "label_id": "lbl-1", "tracking_number": a["tracking_number"], "carrier": "usps",
              "channel": "buy_shipping", "alert_ids": [a["alert_id"]], "incident_id": None}
    for record in actions:
        assert record["action_id"] == hashlib.sha256(
            f"o-1|{record['action']}".encode()).hexdigest()[:32]
        assert {k: record[k] for k in common} == common
    by = {r["action"]: r for r in actions}
    assert by["refund_label"]["refund"] == {"amount": "7.25", "currency": "USD"}
    assert by["protect_account_health"]["metrics"] == [
        "valid_tracking_rate", "on_time_delivery_rate", "late_shipment_rate", "order_defect_rate"]
    message = by["notify_buyer"]["message"]
    assert message["audience"] == "buyer"
    assert "o-1" in message["subject"] + message["body"]
    assert "no fault of the seller" in message["body"] and "What happens next" in message["body"]
    for name in ("fund_a_to_z_claim", "notify_buyer", "protect_account_health"):
        assert by[name]["refund"] is None
    for name in ("fund_a_to_z_claim", "notify_buyer", "refund_label"):
        assert by[name]["metrics"] is None
    for name in ("fund_a_to_z_claim", "protect_account_health", "refund_label"):
        assert by[name]["message"] is None


def test_actions_are_those_the_alerts_ask_for_without_hold_label_sales() -> None:
    mismatch = alert("m", 5, "s1", order="o", rule="destination_mismatch", severity="warning")
    voided = alert("v", 6, "s1", order="o", rule="voided_label_scanned", severity="warning")
    _, actions = derive([mismatch, voided], 0, SETTINGS)
    by = {r["action"]: r for r in actions}
    # destination_mismatch: protect, a-to-z, notify; voided_label_scanned: protect (+ hold)
    assert sorted(by) == ["fund_a_to_z_claim", "notify_buyer", "protect_account_health"]
    assert by["protect_account_health"]["alert_ids"] == sorted([mismatch["alert_id"],
                                                                 voided["alert_id"]])
    assert by["protect_account_health"]["label_id"] == "v"  # purchased later
    assert by["notify_buyer"]["label_id"] == "m"  # the only label asked about


def test_the_latest_purchased_label_wins_and_a_tie_goes_to_the_greater_label_id() -> None:
    older = alert("lbl-9", 5, "s1", order="o", cost=("1.00", "USD"))
    newer = alert("lbl-1", 6, "s2", order="o", cost=("2.00", "USD"))
    _, actions = derive([older, newer], 0, SETTINGS)
    refund = next(r for r in actions if r["action"] == "refund_label")
    assert (refund["label_id"], refund["seller_id"], refund["refund"]["amount"]) == (
        "lbl-1", "s2", "2.00")
    tie_a = alert("lbl-a", 6, "s1", order="p", cost=("1.00", "USD"))
    tie_b = alert("lbl-b", 6, "s2", order="p", cost=("3.00", "USD"))
    _, actions = derive([tie_b, tie_a], 0, SETTINGS)
    refund = next(r for r in actions if r["action"] == "refund_label")
    assert (refund["label_id"], refund["refund"]["amount"]) == ("lbl-b", "3.00")


def test_an_action_is_cancelled_when_no_open_alert_asks_and_reopened_when_one_does() -> None:
    store = Store()
    a = alert("lbl-1", 5, "s1", order="o-1")
    due = store.feed(a).actions
    assert {(r["action"], r["status"], r["revision"]) for r in due} == {
        (name, "due", 1) for name in ("fund_a_to_z_claim", "notify_buyer",
                                      "protect_account_health", "refund_label")}
    gone = store.feed(retracted(a)).actions
    assert {(r["status"], r["revision"], tuple(r["alert_ids"])) for r in gone} == {
        ("cancelled", 2, ())}
    assert len(gone) == 4
    # the alert re-opened as a warning duplicate: it asks for three of the four again
    warning = {**alert("lbl-1", 5, "s1", order="o-1", rule="previously_used"), "revision": 3,
               "severity": "warning",
               "actions": ["protect_account_health", "refund_label", "notify_buyer"]}
    back = {r["action"]: r for r in store.feed(warning).actions}
    assert {(n, r["status"], r["revision"]) for n, r in back.items()} == {
        ("notify_buyer", "due", 3), ("protect_account_health", "due", 3),
        ("refund_label", "due", 3)}
    assert store.actions[next(r["action_id"] for r in gone
                              if r["action"] == "fund_a_to_z_claim")]["status"] == "cancelled"


def test_a_cancelled_action_never_published_due_is_not_published() -> None:
    store = Store()
    a = alert("lbl-1", 5, "s1", order="o-1")
    assert store.feed(retracted(a)).actions == []  # the retraction arrives first
    assert store.feed(a).actions == []  # then the older open revision: ignored
    assert store.actions == {}


def test_an_action_links_the_incident_whose_span_holds_its_labels_time() -> None:
    store = Store()
    outside = alert("late", 90, "s1", order="o-out")  # 01:30: after the span
    store.feed(outside)
    alerts = burst(0)
    for a in alerts[:9]:
        store.feed(a)
    assert {r["incident_id"] for r in store.actions.values()} == {None}
    result = store.feed(alerts[9])
    [incident] = result.incidents
    linked = [r for r in result.actions if r["order_id"] != alerts[9]["order_id"]]
    # the nine earlier orders are revised to link the new incident, the outside one is not
    assert {r["order_id"] for r in linked} == {a["order_id"] for a in alerts[:9]}
    assert {(r["incident_id"], r["revision"]) for r in linked} == {(incident["incident_id"], 2)}
    assert {r["incident_id"] for r in store.actions.values() if r["order_id"] == "o-out"} == {
        None}
    # another channel's label in the same hour links nothing
    _, actions = derive([*alerts, alert("v", 30, "s1", order="o-v", channel="veeqo")], 0,
                        SETTINGS)
    assert {r["incident_id"] for r in actions if r["order_id"] == "o-v"} == {None}
    # the incident retracted: the link goes too
    store.feed(retracted(alerts[0]))
    assert {r["incident_id"] for r in store.actions.values() if r["status"] == "due"} == {None}


def test_step_returns_state_bytes_and_deletes_what_is_empty() -> None:
    store = Store()
    a = alert("lbl-1", 5, "s1", order="o-1")
    window = epoch(at(5)) // 3600
    result = store.feed(a)
    # no incident: nothing written under i|
    assert set(result.states) == {f"a|{a['alert_id']}", "g|usps|buy_shipping", "o|o-1",
                                  f"l|usps|buy_shipping|{window}"}
    assert all(isinstance(v, bytes) for v in result.states.values())
    # retracted: the group and link keys have nothing left; the order keeps what it published
    result = store.feed(retracted(a))
    assert result.states["g|usps|buy_shipping"] is None
    assert result.states[f"l|usps|buy_shipping|{window}"] is None
    assert isinstance(result.states["o|o-1"], bytes)
    assert set(store.states) == {f"a|{a['alert_id']}", "o|o-1"}
    # a watermark advance that changes no incident writes only the watermark
    assert set(store.feed(Watermark(epoch(at(600)))).states) == {"w"}
