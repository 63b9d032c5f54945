"""Detection rules at their boundaries, idempotence, bounded state, arrival-order independence."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from itertools import permutations
from typing import Any

import jsonschema
import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core import schema as schemas
from streams.core.detection import (
    ACTIONS,
    FORMAT,
    OPEN,
    RULES,
    TrackingState,
    _body,
    alert_id,
    apply,
    content_digest,
    findings,
    order_key,
)
from streams.core.events import CarrierScan, Event, LabelPurchased, LabelVoided, decode
from streams.core.outputs import stamp_alert
from streams.core.revisions import standing
from streams.core.settings import Settings

NUM = "1Z999AA10123456784"  # a valid UPS number
BAD = "1Z999AA10123456785"  # check digit wrong
KEY = f"ups:{NUM}"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
S = Settings()
DAY = timedelta(days=1)
SKEW = S.clock_skew
WINDOW = S.reuse_window
SECOND = timedelta(seconds=1)
ALERT_SCHEMA = jsonschema.Draft202012Validator(schemas.load("alert"))


def iso(t: timedelta) -> str:
    return (T0 + t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_id(*parts: object) -> str:
    # derived from the content, so that the same fact twice is a redelivery
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def purchased(label: str, t: timedelta, seller: str = "s1", *, postal: str = "10001",
              country: str = "US", number: str = NUM, carrier: str = "ups",
              event_id: str | None = None, cost: dict | None = None) -> LabelPurchased:
    msg = {
        "type": "label.purchased", "schema_version": 1,
        "event_id": event_id or _event_id("p", label, t, seller, postal, number),
        "label_id": label, "tracking_number": number, "carrier": carrier, "seller_id": seller,
        "order_id": f"order-{label}", "channel": "buy_shipping",
        "ship_to": {"postal_code": postal, "country": country}, "purchased_at": iso(t),
        "cost": cost or {"amount": "7.45", "currency": "USD"},
    }
    event = decode(orjson.dumps(msg))
    assert isinstance(event, LabelPurchased)
    return event


def voided(label: str, t: timedelta, *, number: str = NUM) -> LabelVoided:
    event = decode(orjson.dumps({
        "type": "label.voided", "schema_version": 1, "event_id": _event_id("v", label, t),
        "label_id": label, "tracking_number": number, "carrier": "ups", "voided_at": iso(t),
    }))
    assert isinstance(event, LabelVoided)
    return event


def scan(t: timedelta, status: str = "accepted", postal: str | None = None,
         country: str | None = None, *, number: str = NUM,
         event_id: str | None = None) -> CarrierScan:
    msg: dict[str, Any] = {
        "type": "carrier.scan", "schema_version": 1,
        "event_id": event_id or _event_id("s", t, status, postal, country, number),
        "tracking_number": number, "carrier": "ups", "status": status, "occurred_at": iso(t),
    }
    location = {k: v for k, v in (("postal_code", postal), ("country", country)) if v}
    if location:
        msg["location"] = location
    event = decode(orjson.dumps(msg))
    assert isinstance(event, CarrierScan)
    return event


def run(events: list[Event], config: Settings = S, *, round_trip: bool = False,
        ) -> list[dict[str, Any]]:
    """Apply events in order over an in-memory table; every alert, schema-checked."""
    table: dict[str, TrackingState] = {}
    alerts = []
    for event in events:
        state = table.get(event.key)
        if round_trip and state is not None:
            state = TrackingState.from_bytes(state.to_bytes())
        state, new = apply(state, event, config)
        if state is None:
            table.pop(event.key, None)
        else:
            table[event.key] = state
        for alert in new:
            ALERT_SCHEMA.validate(stamp_alert(alert, "2025-06-01T00:00:00.000Z"))
        alerts.extend(new)
    return alerts


def latest(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """alert_id -> its highest revision, as consumers keep it."""
    out: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        if alert["revision"] > out.get(alert["alert_id"], {"revision": 0})["revision"]:
            out[alert["alert_id"]] = alert
    return out


def found(events: list[Event], config: Settings = S) -> set[tuple[str, str]]:
    """(rule, label_id) of the alerts whose highest revision is open."""
    return {(a["rule"], a["label_id"]) for a in latest(run(events, config)).values()
            if a["status"] == OPEN}


def only(alerts: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    matching = [a for a in alerts if a["rule"] == rule]
    assert len(matching) == 1, alerts
    return matching[0]


# --- invalid_tracking -----------------------------------------------------------------------

def test_invalid_tracking_check_digit() -> None:
    alerts = run([purchased("L1", 0 * DAY, number=BAD)])
    alert = only(alerts, "invalid_tracking")
    assert alert["severity"] == "warning"
    assert alert["alert_id"] == "474649bbfbcf571823edd870bca38d87"
    assert alert["tracking_number"] == BAD and alert["carrier"] == "ups"
    assert alert["evidence"]["reason"] == "check_digit"
    assert alert["evidence"]["format"] == "ups_1z"
    assert alert["actions"] == ACTIONS["invalid_tracking"]["warning"]
    assert alert["event_time"] == iso(0 * DAY)
    assert [lb["label_id"] for lb in alert["labels"]] == ["L1"]


def test_invalid_tracking_unknown_carrier_keeps_the_key() -> None:
    event = purchased("L1", 0 * DAY, carrier="Pigeon-Post")
    alert = only(run([event]), "invalid_tracking")
    assert alert["evidence"]["reason"] == "unknown_carrier"
    assert alert["carrier"] == "pigeon-post"
    assert alert["alert_id"] == alert_id("invalid_tracking", f"pigeon-post:{NUM}", "L1")


def test_invalid_labels_take_no_part_in_other_rules() -> None:
    events = [
        scan(-10 * DAY, "delivered", "99999", "US", number=BAD),
        purchased("L1", 0 * DAY, number=BAD),
        purchased("L2", 1 * DAY, "s2", number=BAD),
        voided("L2", 2 * DAY, number=BAD),
        scan(3 * DAY, "delivered", "55555", "CA", number=BAD),
    ]
    assert found(events) == {("invalid_tracking", "L1"), ("invalid_tracking", "L2")}


def test_valid_label_no_alert() -> None:
    assert run([purchased("L1", 0 * DAY), scan(1 * DAY), scan(2 * DAY, "delivered", "10001")]
               ) == []


# --- duplicate_tracking ---------------------------------------------------------------------

def test_duplicate_same_seller_is_warning_other_seller_critical() -> None:
    same = only(run([purchased("L1", 0 * DAY), purchased("L2", DAY)]), "duplicate_tracking")
    assert same["severity"] == "warning" and same["label_id"] == "L2"
    assert same["actions"] == ACTIONS["duplicate_tracking"]["warning"]
    other = only(run([purchased("L1", 0 * DAY), purchased("L2", DAY, "s2")]),
                 "duplicate_tracking")
    assert other["severity"] == "critical" and other["seller_id"] == "s2"
    assert other["alert_id"] == "9362e7ace339e4031d5344c0789fabc4"
    assert other["actions"] == ACTIONS["duplicate_tracking"]["critical"]
    assert other["evidence"]["other_seller"] is True


def test_duplicate_lists_every_holder_oldest_first() -> None:
    events = [purchased("L1", 0 * DAY, "s1"), purchased("L2", DAY, "s2"),
              purchased("L3", 2 * DAY, "s1")]
    about_l3 = next(a for a in run(events) if a["label_id"] == "L3")
    assert [lb["label_id"] for lb in about_l3["labels"]] == ["L1", "L2", "L3"]
    assert about_l3["severity"] == "critical"  # L2 belongs to another seller
    assert about_l3["labels"][0] == {
        "label_id": "L1", "seller_id": "s1", "order_id": "order-L1", "channel": "buy_shipping",
        "purchased_at": iso(0 * DAY), "cost": {"amount": "7.45", "currency": "USD"},
    }
    # Out of order, the same findings: L3 is first raised as a warning with the holders known
    # then, and revised to critical when L2 (another seller) arrives.
    shuffled = [events[2], events[0], events[1]]
    assert found(shuffled) == found(events) == {("duplicate_tracking", "L2"),
                                                ("duplicate_tracking", "L3")}
    about_l3 = [a for a in run(shuffled) if a["label_id"] == "L3"]
    assert [(a["revision"], a["severity"], [lb["label_id"] for lb in a["labels"]])
            for a in about_l3] == [(1, "warning", ["L1", "L3"]),
                                   (2, "critical", ["L1", "L2", "L3"])]


@pytest.mark.parametrize(("void_at", "dup"), [
    (DAY - SECOND, False), (DAY, False), (DAY + SECOND, True)])
def test_duplicate_void_timing(void_at: timedelta, dup: bool) -> None:
    events = [purchased("L1", 0 * DAY), voided("L1", void_at), purchased("L2", DAY, "s2")]
    assert (("duplicate_tracking", "L2") in found(events)) is dup


@pytest.mark.parametrize(("gap", "dup"), [(WINDOW - SECOND, True), (WINDOW, False)])
def test_duplicate_window_edge_from_purchase(gap: timedelta, dup: bool) -> None:
    assert (("duplicate_tracking", "L2") in found(
        [purchased("L1", 0 * DAY), purchased("L2", gap, "s2")])) is dup


@pytest.mark.parametrize(("gap", "dup"), [(WINDOW - SECOND, True), (WINDOW, False)])
def test_duplicate_window_counts_from_the_latest_scan(gap: timedelta, dup: bool) -> None:
    events = [purchased("L1", 0 * DAY), scan(100 * DAY, "in_transit"),
              purchased("L2", 100 * DAY + gap, "s2")]
    assert (("duplicate_tracking", "L2") in found(events)) is dup


def test_reprint_is_not_a_duplicate() -> None:
    first = purchased("L1", 0 * DAY)
    reprint = purchased("L1", DAY, event_id="reprint-1")
    assert run([first, reprint]) == []
    assert run([reprint, first]) == []


def test_same_second_tie_raises_one_duplicate_about_the_greater_label_id() -> None:
    for order in permutations([purchased("A", DAY), purchased("B", DAY, "s2")]):
        assert found(list(order)) == {("duplicate_tracking", "B")}


# --- previously_used ------------------------------------------------------------------------

@pytest.mark.parametrize(("before", "fires"), [
    (SKEW, False), (SKEW + SECOND, True), (WINDOW - SECOND, True), (WINDOW, False),
    (timedelta(0), False)])
def test_previously_used_boundaries(before: timedelta, fires: bool) -> None:
    p = 200 * DAY
    for events in ([scan(p - before), purchased("L1", p)], [purchased("L1", p), scan(p - before)]):
        assert (("previously_used", "L1") in found(events)) is fires


def test_previously_used_ignores_pre_transit_and_reports_the_earlier_label() -> None:
    p = 30 * DAY
    assert found([scan(p - 5 * DAY, "pre_transit"), purchased("L2", p)]) == set()
    alerts = run([purchased("L1", 0 * DAY, "s9"), scan(DAY), purchased("L2", p, "s2")])
    alert = only(alerts, "previously_used")
    assert alert["severity"] == "critical" and alert["label_id"] == "L2"
    assert [lb["label_id"] for lb in alert["labels"]] == ["L1", "L2"]
    assert alert["evidence"]["scans"] == [
        {"occurred_at": iso(DAY), "status": "accepted", "postal_code": None, "country": None}]
    assert alert["actions"] == ACTIONS["previously_used"]["critical"]


# --- destination_mismatch -------------------------------------------------------------------

@pytest.mark.parametrize(("status", "postal", "country", "fires"), [
    ("delivered", "10099", "US", False),  # same first three characters
    ("delivered", "10101", "US", True),
    ("out_for_delivery", "90210", None, True),
    ("delivery_attempted", "90210", "US", True),
    ("in_transit", "90210", "US", False),  # not at the door
    ("returned", "90210", "US", False),
    ("delivered", None, "CA", True),  # country alone
    ("delivered", "10001", "CA", True),
    ("delivered", None, None, False),  # nothing to compare
    ("delivered", "100-01", "US", False),  # dashes and spaces do not count
])
def test_destination_mismatch(status: str, postal: str | None, country: str | None,
                              fires: bool) -> None:
    events = [purchased("L1", 0 * DAY, postal="10001"), scan(DAY, status, postal, country)]
    assert (("destination_mismatch", "L1") in found(events)) is fires


def test_destination_mismatch_evidence_and_postal_normalisation() -> None:
    gb = [purchased("L1", 0 * DAY, postal="SW1A 1AA", country="GB"),
          scan(DAY, "delivered", "sw1a1aa", "GB")]
    assert found(gb) == set()
    alert = only(run([purchased("L1", 0 * DAY), scan(DAY, "delivered", "94103", "US")]),
                 "destination_mismatch")
    assert alert["evidence"] == {
        "scan": {"occurred_at": iso(DAY), "status": "delivered", "postal_code": "94103",
                 "country": "US"},
        "ship_to": {"postal_code": "10001", "country": "US"},
        "compared": "postal_prefix", "postal_prefix": 3,
    }


def test_destination_mismatch_uses_the_label_the_scan_belongs_to() -> None:
    events = [purchased("L1", 0 * DAY, postal="10001"),
              purchased("L2", 10 * DAY, postal="90210"),
              scan(11 * DAY, "delivered", "90210", "US")]
    assert ("destination_mismatch", "L1") not in found(events)
    events[-1] = scan(11 * DAY, "delivered", "10001", "US")
    assert ("destination_mismatch", "L2") in found(events)
    # a scan before the later label's purchase belongs to the earlier one
    early = scan(5 * DAY, "delivered", "90210", "US")
    assert ("destination_mismatch", "L1") in found([*events[:2], early])


def test_postal_prefix_setting() -> None:
    events = [purchased("L1", 0 * DAY, postal="10001"), scan(DAY, "delivered", "10099")]
    assert found(events, Settings(postal_prefix=5)) == {("destination_mismatch", "L1")}


# --- voided_label_scanned -------------------------------------------------------------------

@pytest.mark.parametrize(("scan_at", "status", "fires"), [
    (2 * DAY + SECOND, "accepted", True), (2 * DAY, "accepted", False),
    (DAY, "accepted", False), (3 * DAY, "pre_transit", False), (3 * DAY, "exception", True)])
def test_voided_label_scanned(scan_at: timedelta, status: str, fires: bool) -> None:
    facts = [purchased("L1", 0 * DAY), voided("L1", 2 * DAY), scan(scan_at, status)]
    for order in permutations(facts):
        assert (("voided_label_scanned", "L1") in found(list(order))) is fires


def test_voided_label_scanned_evidence() -> None:
    alert = only(run([purchased("L1", 0 * DAY), voided("L1", DAY), scan(2 * DAY)]),
                 "voided_label_scanned")
    assert alert["evidence"]["voided_at"] == iso(DAY)
    assert alert["evidence"]["scan"]["occurred_at"] == iso(2 * DAY)
    assert alert["actions"] == ACTIONS["voided_label_scanned"]["warning"]


# --- at most once, redelivery, ids ----------------------------------------------------------

def test_each_rule_at_most_once_per_label() -> None:
    events = [purchased("L1", 0 * DAY), voided("L1", DAY)] + [
        scan(2 * DAY + i * SECOND, "delivered", "90210") for i in range(5)]
    alerts = run(events)
    assert sorted((a["rule"], a["label_id"]) for a in alerts) == [
        ("destination_mismatch", "L1"), ("voided_label_scanned", "L1")]


def test_redelivery_changes_nothing_and_raises_nothing() -> None:
    event = purchased("L2", DAY, "s2")
    state, _ = apply(None, purchased("L1", 0 * DAY), S)
    state, first = apply(state, event, S)
    assert state is not None and len(first) == 1
    before = state.to_bytes()
    state, again = apply(state, event, S)
    assert again == [] and state is not None and state.to_bytes() == before


def test_alert_ids_are_stable_and_computed_per_rule_key_label() -> None:
    assert alert_id("duplicate_tracking", KEY, "L2") == "9362e7ace339e4031d5344c0789fabc4"
    assert alert_id("duplicate_tracking", KEY, "L2") != alert_id("previously_used", KEY, "L2")
    alerts = run([purchased("L1", 0 * DAY), voided("L1", DAY), scan(2 * DAY, "delivered", "9")])
    for alert in alerts:
        assert alert["alert_id"] == alert_id(alert["rule"], KEY, alert["label_id"])


# --- state: expiry, bounds, serialisation ---------------------------------------------------

def test_expiry_by_event_time() -> None:
    horizon = WINDOW + S.allowed_lateness
    state, _ = apply(None, purchased("L1", 0 * DAY), S)
    state, _ = apply(state, scan(DAY), S)
    state, alerts = apply(state, purchased("L2", DAY + horizon + SECOND), S)
    assert state is not None and alerts == []
    assert list(state.labels) == ["L2"] and state.scans == []
    # an event older than the horizon of a state leaves nothing behind
    empty = TrackingState(max_ts=int((T0 + 10 * horizon).timestamp()))
    assert apply(empty, scan(DAY), S) == (None, [])


def test_state_stays_bounded_under_a_flood() -> None:
    config = Settings(max_labels_per_key=4, max_scans_per_key=8, max_event_ids_per_key=16)
    state = None
    for i in range(2000):
        event: Event = (scan(i * SECOND, "in_transit", f"{i:05d}") if i % 3 else
                        purchased(f"L{i:06d}", i * SECOND, f"seller-{i}"))
        state, _ = apply(state, event, config)
    assert state is not None
    assert len(state.labels) <= 4 and len(state.scans) <= 8 and len(state.event_ids) <= 16
    assert len(state.to_bytes()) < 2000
    full = None
    for i in range(500):
        full, _ = apply(full, scan(i * SECOND, "in_transit", "12345", "US"), S)
    assert full is not None and len(full.to_bytes()) < S.max_scans_per_key * 40 + 1500


def test_to_bytes_from_bytes_round_trip() -> None:
    events = [purchased("L1", 0 * DAY, "s1", cost=None), voided("L3", 9 * DAY),
              scan(DAY, "delivered", "10001", "US"), purchased("L2", 2 * DAY, "s2", postal="9"),
              purchased("L3", 3 * DAY, number=BAD)]
    state = None
    for event in events:
        state, _ = apply(state, event, S)
    assert state is not None
    data = state.to_bytes()
    copy = TrackingState.from_bytes(data)
    assert copy == state and copy.to_bytes() == data
    assert copy.labels["L2"].duplicate_tracking == state.labels["L2"].duplicate_tracking
    assert msgspec.msgpack.decode(data)[0] == FORMAT  # format version first
    for unknown in (msgspec.msgpack.encode([99, 0, {}, [], []]), b"", b"\x01",
                    orjson.dumps([7, 0, [], [], []])):
        with pytest.raises(ValueError, match="unknown TrackingState format"):
            TrackingState.from_bytes(unknown)
    with pytest.raises(ValueError, match="corrupt TrackingState"):
        TrackingState.from_bytes(data[:-3])


def test_stored_format_1_is_read_and_written_back_as_format_2() -> None:
    # orjson label rows ending with rule bits (bit 3: destination_mismatch raised)
    data = (b'[1,1740909401,[["L1","s1","o1","buy_shipping",1740787961,null,"10001","US",'
            b'"7.45","USD",8],["L2","","",null,null,1740800000,"","",null,null,0]],'
            b'[[1740795161,1,"10001","US"],[1740860361,4,"","US"]],[251891725589660,7]]')
    state = TrackingState.from_bytes(data)
    assert TrackingState.from_bytes(state.to_bytes()) == state
    assert state.max_ts == 1740909401 and list(state.labels) == ["L1", "L2"]
    l1 = state.labels["L1"]
    assert (l1.seller_id, l1.purchased, l1.postal_code, l1.amount, l1.invalid) == (
        "s1", 1740787961, "10001", "7.45", False)
    assert l1.destination_mismatch is not None and l1.destination_mismatch.revision == 1
    assert l1.duplicate_tracking is None and state.labels["L2"].voided == 1740800000
    assert state.event_ids == [251891725589660, 7]
    assert state.scans == [(1740795161, 1, "10001", "US"), (1740860361, 4, "", "US")]
    again, alerts = apply(state, scan(DAY, "delivered", "99999", "US"), S)
    # a delivered scan two months before L1's purchase: the loaded facts take part in the rules
    assert again is not None and [a["rule"] for a in alerts] == ["previously_used"]


def test_round_trip_per_event_gives_the_same_alerts() -> None:
    events = [scan(-20 * DAY), purchased("L1", 0 * DAY), voided("L1", DAY), purchased("L2", 2 * DAY,
              "s2"), scan(3 * DAY, "delivered", "90210"), purchased("L3", 4 * DAY, number=BAD)]
    assert run(events, round_trip=True) == run(events)


# --- arrival order ---------------------------------------------------------------------------
# Scenarios where no finding depends on arrival order even before revisions (tests/
# test_revisions.py covers the general case): the open set and the alerts raised are equal.
#   A. one valid label (plus invalid ones, reprints, redeliveries, voids, scans anywhere);
#   B. several valid labels, scans only before the first purchase (they belong to none), and
#      voids only after the last purchase (a void never cancels a hold).
# Event times span less than reuse window + allowed lateness, so nothing expires.

PROP = Settings(reuse_window=timedelta(days=10), clock_skew=timedelta(hours=6),
                allowed_lateness=timedelta(days=30))
STATUSES = ["pre_transit", "accepted", "in_transit", "out_for_delivery", "delivered",
            "delivery_attempted", "returned", "exception"]
hours = st.integers(0, 24 * 20).map(lambda h: timedelta(hours=h))


@st.composite
def scenario_a(draw: st.DrawFn) -> list[Event]:
    p = draw(hours)
    events: list[Event] = [purchased("L1", p, postal=draw(st.sampled_from(["10001", "10099"])))]
    if draw(st.booleans()):
        events.append(purchased("L1", p, event_id="reprint"))
    for i in range(draw(st.integers(0, 2))):
        events.append(purchased(f"X{i}", draw(hours), number=BAD))
    if draw(st.booleans()):
        events.append(voided("L1", draw(hours)))
    for _ in range(draw(st.integers(0, 4))):
        events.append(scan(draw(hours), draw(st.sampled_from(STATUSES)),
                           draw(st.sampled_from([None, "10001", "90210"])),
                           draw(st.sampled_from([None, "US", "CA"]))))
    if draw(st.booleans()):
        events.append(events[draw(st.integers(0, len(events) - 1))])  # a redelivery
    return events


@st.composite
def scenario_b(draw: st.DrawFn) -> list[Event]:
    times = sorted(draw(st.lists(st.integers(24 * 5, 24 * 28), min_size=2, max_size=4,
                                 unique=True)))
    events: list[Event] = [purchased(f"L{i}", timedelta(hours=h), draw(st.sampled_from(["a", "b"])))
                           for i, h in enumerate(times)]
    first, last = times[0], times[-1]
    for _ in range(draw(st.integers(0, 3))):
        events.append(scan(timedelta(hours=draw(st.integers(0, first - 1))),
                           draw(st.sampled_from(STATUSES)), "90210", "US"))
    for i in range(len(times)):
        if draw(st.booleans()):
            events.append(voided(f"L{i}", timedelta(hours=draw(st.integers(last + 1,
                                                                           24 * 32)))))
    return events


def _same_alerts_in_every_order(events: list[Event], order: list[int]) -> None:
    expected = found(events, PROP)
    shuffled = [events[i] for i in order]
    assert found(shuffled, PROP) == expected
    alerts = run(shuffled, PROP, round_trip=True)
    assert {(a["rule"], a["label_id"]) for a in alerts} == expected
    # field for field: event_time, labels, evidence and actions too
    assert standing(alerts) == standing(run(sorted(events, key=order_key), PROP))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_arrival_order_single_label(data: st.DataObject) -> None:
    events = data.draw(scenario_a())
    _same_alerts_in_every_order(events, data.draw(st.permutations(range(len(events)))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_arrival_order_several_labels(data: st.DataObject) -> None:
    events = data.draw(scenario_b())
    _same_alerts_in_every_order(events, data.draw(st.permutations(range(len(events)))))


# --- the incremental paths miss nothing ------------------------------------------------------

@st.composite
def any_scenario(draw: st.DrawFn) -> list[Event]:
    """Anything goes: several labels, sellers, voids, scans, invalid labels, any order."""
    events: list[Event] = []
    for i in range(draw(st.integers(1, 4))):
        events.append(purchased(f"L{i}", draw(hours), draw(st.sampled_from(["a", "b"])),
                                postal=draw(st.sampled_from(["10001", "90210"])),
                                number=draw(st.sampled_from([NUM, NUM, NUM, BAD]))))
        if draw(st.booleans()):
            events.append(voided(f"L{i}", draw(hours)))
    for _ in range(draw(st.integers(0, 6))):
        events.append(scan(draw(hours), draw(st.sampled_from(STATUSES)),
                           draw(st.sampled_from([None, "10001", "90210"])),
                           draw(st.sampled_from([None, "US", "CA"]))))
    return draw(st.permutations(events))


def _open_records(state: TrackingState) -> set[tuple[str, str, str, int]]:
    return {(rule, lb.label_id, raised.severity, raised.digest) for lb in state.labels.values()
            for rule in RULES[1:] if (raised := getattr(lb, rule)) and raised.status == OPEN}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_scenario())
def test_open_alerts_equal_the_full_findings_after_any_event(events: list[Event]) -> None:
    # the fast paths (one label, a scan in order, a purchase after everything) and the
    # before/after comparison of purchases and voids keep the open alerts equal to the
    # findings of every fact, after every event, whatever the order
    states: dict[str, TrackingState] = {}
    for event in events:
        state, _ = apply(states.get(event.key), event, PROP)
        assert state is not None
        states[event.key] = state
        full = findings(TrackingState.from_bytes(state.to_bytes()), PROP)
        # the published content too (its digest): every field of the alert, not only its rule
        assert _open_records(state) == {(rule, lid, f[1], content_digest(_body(f, event)))
                                        for (rule, lid), f in full.items()}


def test_settings_from_env() -> None:
    config = Settings.from_env({
        "TRACKING_VALIDATOR_REUSE_WINDOW_DAYS": "30", "TRACKING_VALIDATOR_CLOCK_SKEW_HOURS": "0.5",
        "TRACKING_VALIDATOR_ALLOWED_LATENESS_DAYS": "0", "TRACKING_VALIDATOR_POSTAL_PREFIX": "5",
        "TRACKING_VALIDATOR_MAX_MESSAGE_BYTES": "1000", "TRACKING_VALIDATOR_MAX_SCANS_PER_KEY": " ",
    })
    assert (config.reuse_window, config.clock_skew, config.allowed_lateness) == (
        timedelta(days=30), timedelta(minutes=30), timedelta(0))
    assert (config.reuse_window_s, config.clock_skew_s, config.allowed_lateness_s) == (
        30 * 86400, 1800, 0)
    assert (config.postal_prefix, config.max_message_bytes, config.max_scans_per_key) == (
        5, 1000, 64)
    assert Settings.from_env({}) == Settings()
    with pytest.raises(ValueError):
        Settings(postal_prefix=0)
    with pytest.raises(ValueError):
        Settings(reuse_window=timedelta(0))
