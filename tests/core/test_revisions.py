"""Alert revisions: a late message corrects, retracts or re-opens what was published, so the
open alerts after all of a number's events equal the offline (event-time order) ones."""

from __future__ import annotations

from bisect import bisect_right
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_detection import (
    BAD,
    DAY,
    SECOND,
    STATUSES,
    T0,
    WINDOW,
    iso,
    latest,
    purchased,
    run,
    scan,
    voided,
)

from streams.core.detection import OPEN, RETRACTED, TrackingState, apply, order_key
from streams.core.events import Event
from streams.core.revisions import standing
from streams.core.settings import Settings
from streams.tools.offline import Processor

S = Settings()
# nothing expires in the tests below that use it (their span < window + lateness)
# moments() span -10 .. +34 days: allowed lateness keeps every fact (window + lateness > span)
PROP = Settings(reuse_window=timedelta(days=10), clock_skew=timedelta(hours=6),
                allowed_lateness=timedelta(days=60))
Key = tuple[str, str, str, str]  # (alert_id, rule, severity, label_id)


def open_set(alerts: list[dict[str, Any]]) -> set[Key]:
    return {(a["alert_id"], a["rule"], a["severity"], a["label_id"])
            for a in latest(alerts).values() if a["status"] == OPEN}


def history(alerts: list[dict[str, Any]], rule: str, label: str) -> list[tuple[int, str, str]]:
    return [(a["revision"], a["status"], a["severity"]) for a in alerts
            if a["rule"] == rule and a["label_id"] == label]


# --- the three arrival-order cases, and a late label that shrinks a hold -----------------------

def test_scan_before_its_own_label_is_retracted_from_the_earlier_label() -> None:
    l1 = purchased("L1", 0 * DAY, postal="10001")
    l2 = purchased("L2", 10 * DAY, postal="90210", event_id="buy-L2")
    delivered = scan(11 * DAY, "delivered", "90210", "US")
    alerts = run([l1, delivered, l2])
    assert history(alerts, "destination_mismatch", "L1") == [
        (1, OPEN, "warning"), (2, RETRACTED, "warning")]
    retraction = alerts[-1]
    assert retraction["evidence"] == {
        "retracted_because": {"event_id": "buy-L2", "type": "label.purchased"}}
    assert retraction["actions"] == [] and retraction["event_time"] == iso(10 * DAY)
    assert retraction["alert_id"] == alerts[0]["alert_id"]
    # L2 and L1 hold at once: L2's duplicate (same seller) stays; nothing else is open
    assert open_set(alerts) == open_set(run([l1, l2, delivered]))


def test_void_after_the_duplicate_it_cancels_retracts_it() -> None:
    events = [purchased("L1", 0 * DAY), purchased("L2", DAY, "s2"), voided("L1", DAY - SECOND)]
    alerts = run(events)
    assert history(alerts, "duplicate_tracking", "L2") == [
        (1, OPEN, "critical"), (2, RETRACTED, "critical")]
    assert alerts[-1]["evidence"]["retracted_because"]["type"] == "label.voided"
    assert open_set(alerts) == set() == open_set(run([events[0], events[2], events[1]]))


def test_another_sellers_holder_arriving_late_raises_the_severity() -> None:
    events = [purchased("L1", 0 * DAY, "s1"), purchased("L3", 2 * DAY, "s1"),
              purchased("L2", DAY, "s2")]
    alerts = run(events)
    assert history(alerts, "duplicate_tracking", "L3") == [
        (1, OPEN, "warning"), (2, OPEN, "critical")]
    revised = [a for a in alerts if a["label_id"] == "L3"][-1]
    assert [lb["label_id"] for lb in revised["labels"]] == ["L1", "L2", "L3"]
    assert revised["actions"] and revised["evidence"]["other_seller"] is True
    assert open_set(alerts) == open_set(run(sorted(events, key=order_key)))


def test_the_void_of_the_other_sellers_holder_lowers_the_severity() -> None:
    events = [purchased("L1", 0 * DAY, "s1"), purchased("L2", DAY, "s2"),
              purchased("L3", 2 * DAY, "s1"), voided("L2", DAY + SECOND)]
    alerts = run(events)
    assert history(alerts, "duplicate_tracking", "L3") == [
        (1, OPEN, "critical"), (2, OPEN, "warning")]


def test_a_late_label_that_takes_scans_away_shrinks_the_earlier_labels_hold() -> None:
    # L1's hold at L3's purchase rests on a scan at day 8; L2 (purchased day 4, voided day 6)
    # arrives late and takes that scan, so L1's last activity is day 0 again: out of window.
    window = PROP.reuse_window
    l1 = purchased("L1", 0 * DAY, "s1")
    moved = scan(8 * DAY, "in_transit")
    l3 = purchased("L3", 8 * DAY + window - SECOND, "s2")
    l2, void_l2 = purchased("L2", 4 * DAY, "s3"), voided("L2", 6 * DAY)
    alerts = run([l1, moved, l3, void_l2, l2], PROP)
    assert history(alerts, "duplicate_tracking", "L3") == [
        (1, OPEN, "critical"), (2, RETRACTED, "critical")]
    assert history(alerts, "voided_label_scanned", "L2") == [(1, OPEN, "warning")]
    assert open_set(alerts) == open_set(run(sorted([l1, moved, l3, void_l2, l2],
                                                   key=order_key), PROP))


def test_a_retracted_alert_is_reopened_by_a_higher_revision() -> None:
    l1 = purchased("L1", 0 * DAY, postal="10001")
    l2 = purchased("L2", 10 * DAY, postal="90210")
    alerts = run([l1, scan(11 * DAY, "delivered", "90210", "US"), l2,
                  scan(5 * DAY, "delivered", "90210", "US")])  # this one belongs to L1
    assert history(alerts, "destination_mismatch", "L1") == [
        (1, OPEN, "warning"), (2, RETRACTED, "warning"), (3, OPEN, "warning")]
    assert alerts[-1]["evidence"]["scan"]["occurred_at"] == iso(5 * DAY)


def test_numbering_continues_from_the_stored_state() -> None:
    # a restart, or another worker taking the partition over, reads the state's bytes
    events = [purchased("L1", 0 * DAY, "s1"), purchased("L3", 2 * DAY, "s1"),
              purchased("L2", DAY, "s2"), voided("L2", DAY + SECOND)]
    assert run(events, round_trip=True) == run(events)
    state = None
    for event in events[:3]:
        state, _ = apply(state, event, S)
    assert state is not None
    stored = TrackingState.from_bytes(state.to_bytes())
    raised = stored.labels["L3"].duplicate_tracking
    assert raised is not None and (raised.revision, raised.status, raised.severity) == (
        2, OPEN, "critical")
    _, alerts = apply(stored, events[3], S)
    assert [(a["revision"], a["severity"]) for a in alerts] == [(3, "warning")]


def test_redelivery_after_a_revision_changes_nothing() -> None:
    events = [purchased("L1", 0 * DAY), purchased("L2", DAY, "s2"), voided("L1", DAY - SECOND)]
    state = None
    for event in events:
        state, _ = apply(state, event, S)
    assert state is not None
    before = state.to_bytes()
    for event in events:
        state, again = apply(state, event, S)
        assert again == [] and state is not None and state.to_bytes() == before


def test_facts_dropped_by_the_bounds_retract_nothing() -> None:
    config = Settings(max_labels_per_key=2)
    state = None
    published: list[dict[str, Any]] = []
    for event in (purchased("L1", 0 * DAY, "s1"), purchased("L2", DAY, "s2"),
                  purchased("L3", 2 * DAY, "s3")):
        state, alerts = apply(state, event, config)
        published += alerts
    assert state is not None and list(state.labels) == ["L2", "L3"]  # L1 dropped
    # a void recomputes the findings around it: L2's duplicate rested on L1, now gone, and
    # stays open; L3's rested on L2 only as far as the void says
    state, alerts = apply(state, voided("L3", 3 * DAY), config)
    assert alerts == []
    assert state is not None and state.labels["L2"].duplicate_tracking.status == OPEN  # type: ignore[union-attr]
    # expiry: the newest event far ahead drops every fact; nothing is published
    state, alerts = apply(state, scan(5 * WINDOW, "pre_transit"), config)
    assert alerts == []


def test_offline_order_breaks_same_second_ties_so_that_nothing_is_revised() -> None:
    t = DAY
    events = [scan(t, "delivered", "90210", "US"), purchased("L2", t, "s2", postal="90210"),
              purchased("L1", 0 * DAY, "s1"), voided("L1", t)]
    alerts = run(sorted(events, key=order_key))
    assert all(a["revision"] == 1 for a in alerts)
    assert open_set(alerts) == open_set(run(events)) == set()


# --- property tests ---------------------------------------------------------------------------
# A number's events: labels of one or two sellers (one maybe invalid, one maybe reprinted),
# voids, scans of every status and several postal codes, at times on and around the edges of
# the reuse window and the clock skew (whole hours, so same-second ties are frequent), and a
# redelivery. Nothing expires: the span is below reuse window + allowed lateness.

_EDGES = [timedelta(0), PROP.clock_skew, PROP.reuse_window]


@st.composite
def moments(draw: st.DrawFn) -> timedelta:
    base = timedelta(hours=draw(st.integers(0, 24 * 24)))
    edge = draw(st.sampled_from(_EDGES)) * draw(st.sampled_from([0, 1, -1]))
    return base + edge + draw(st.sampled_from([0, 0, 0, 1, -1])) * SECOND


@st.composite
def numbers_events(draw: st.DrawFn, reprint_within: timedelta | None = None) -> list[Event]:
    """`reprint_within`: a reprint's purchase lies that close to the first one's (else anywhere)."""
    events: list[Event] = []
    for i in range(draw(st.integers(1, 4))):
        bought = draw(moments())
        seller = draw(st.sampled_from(["a", "b"]))
        postal = draw(st.sampled_from(["10001", "90210"]))
        number = BAD if draw(st.integers(0, 9)) == 0 else None
        kwargs: dict[str, Any] = {"postal": postal} | ({"number": number} if number else {})
        events.append(purchased(f"L{i}", bought, seller, **kwargs))
        if draw(st.integers(0, 4)) == 0:  # a reprint, maybe earlier, maybe other facts
            again = draw(moments()) if reprint_within is None else bought + timedelta(
                hours=draw(st.integers(-1, 1)) * reprint_within.total_seconds() // 3600)
            events.append(purchased(f"L{i}", again, seller,
                                    postal=draw(st.sampled_from(["10001", "90210"])),
                                    event_id=f"reprint-{i}", **({"number": number}
                                                                if number else {})))
        if draw(st.booleans()):
            events.append(voided(f"L{i}", draw(moments()), **({"number": number}
                                                              if number else {})))
    for _ in range(draw(st.integers(0, 6))):
        events.append(scan(draw(moments()), draw(st.sampled_from(STATUSES)),
                           draw(st.sampled_from([None, "10001", "90210"])),
                           draw(st.sampled_from([None, "US", "CA"]))))
    if draw(st.booleans()):
        events.append(events[draw(st.integers(0, len(events) - 1))])  # a redelivery
    return events


def _message(event: Event) -> bytes:
    """The event back as its contract message, for the offline mode."""
    if hasattr(event, "status"):
        msg: dict[str, Any] = {
            "type": "carrier.scan", "schema_version": 1, "event_id": event.event_id,
            "tracking_number": event.tracking_number, "carrier": event.carrier,
            "status": event.status, "occurred_at": iso(event.occurred_at - T0)}  # type: ignore[union-attr]
        location = {k: v for k, v in (("postal_code", event.postal_code),  # type: ignore[union-attr]
                                      ("country", event.country)) if v}  # type: ignore[union-attr]
        if location:
            msg["location"] = location
        return orjson.dumps(msg)
    if hasattr(event, "voided_at"):
        return orjson.dumps({
            "type": "label.voided", "schema_version": 1, "event_id": event.event_id,
            "label_id": event.label_id, "tracking_number": event.tracking_number,
            "carrier": event.carrier, "voided_at": iso(event.voided_at - T0)})  # type: ignore[union-attr]
    return orjson.dumps({
        "type": "label.purchased", "schema_version": 1, "event_id": event.event_id,
        "label_id": event.label_id, "tracking_number": event.tracking_number,  # type: ignore[union-attr]
        "carrier": event.carrier, "seller_id": event.seller_id,  # type: ignore[union-attr]
        "order_id": event.order_id, "channel": event.channel,  # type: ignore[union-attr]
        "ship_to": {"postal_code": event.ship_to_postal_code,  # type: ignore[union-attr]
                    "country": event.ship_to_country},  # type: ignore[union-attr]
        "purchased_at": iso(event.purchased_at - T0), "cost": event.cost})  # type: ignore[union-attr]


def offline(events: list[Event], config: Settings) -> list[dict[str, Any]]:
    """The offline mode's alerts (event-time order), fed the messages in the order given."""
    alerts: list[dict[str, Any]] = []
    processor = Processor(alerts.append, lambda dead: pytest.fail(str(dead)), config)
    for offset, event in enumerate(events):
        processor.feed(_message(event), source="t", partition=0, offset=offset)
    processor.finish()
    return alerts


def _well_formed(alerts: list[dict[str, Any]]) -> None:
    """Revisions strictly increase per alert_id, starting at 1, and a retraction always
    follows a publication of the same alert_id."""
    last: dict[str, int] = {}
    for alert in alerts:
        revision = alert["revision"]
        previous = last.get(alert["alert_id"], 0)
        assert revision > previous, alert
        if alert["status"] == RETRACTED:
            assert previous >= 1, alert
        last[alert["alert_id"]] = revision


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_arrival_order_ends_with_the_offline_open_alerts(data: st.DataObject) -> None:
    events = data.draw(numbers_events())
    expected = offline(events, PROP)
    # event-time order: every alert published once, open, at revision 1
    assert all(a["revision"] == 1 and a["status"] == OPEN for a in expected), expected
    assert len({a["alert_id"] for a in expected}) == len(expected)
    # whatever order the offline mode is fed in
    assert ([{**a, "detected_at": ""} for a in offline(events[::-1], PROP)]
            == [{**a, "detected_at": ""} for a in expected])
    shuffled = data.draw(st.permutations(events))
    alerts = run(shuffled, PROP, round_trip=data.draw(st.booleans()))
    _well_formed(alerts)
    assert standing(alerts) == standing(expected)


def test_offline_input_order_summary_counts_distinct_open_alerts() -> None:
    # the scan first, then its own label: L1's mismatch is published and retracted
    events = [purchased("L1", 0 * DAY, postal="10001"),
              scan(11 * DAY, "delivered", "90210", "US"),
              purchased("L2", 10 * DAY, "s2", postal="90210")]
    alerts: list[dict[str, Any]] = []
    processor = Processor(alerts.append, lambda dead: pytest.fail(str(dead)), S, order="input")
    for offset, event in enumerate(events):
        processor.feed(_message(event), source="t", partition=0, offset=offset)
    summary = processor.finish()
    assert [(a["rule"], a["status"]) for a in alerts] == [
        ("destination_mismatch", OPEN), ("duplicate_tracking", OPEN),
        ("destination_mismatch", RETRACTED)]
    assert summary.alerts == {"duplicate_tracking": 1} and summary.revisions == 1
    assert "1 alerts (duplicate_tracking=1; 1 revisions)" in summary.line("scan")
    assert open_set(alerts) == open_set(offline(events, S))


# --- the bound of the guarantee: allowed lateness, expiry and the per-key bounds --------------
# LATE keeps facts 1 day beyond the 10-day window while the events span 44 days: facts expire
# during the run. An event may arrive up to `allowed_lateness` behind the newest event of its
# number (delays drawn in [0, lateness]); within that, the guarantee holds with expiry at work.
LATE = Settings(reuse_window=timedelta(days=10), clock_skew=timedelta(hours=6),
                allowed_lateness=timedelta(days=1))


def within_lateness(draw: st.DrawFn, events: list[Event], lateness: timedelta) -> list[Event]:
    """An arrival order in which no event is later than `lateness` behind any event that
    arrived before it: each arrives at its event time plus a delay of at most `lateness`."""
    hours = int(lateness.total_seconds() // 3600)
    arrival = [event.event_ts + 3600 * draw(st.integers(0, hours)) for event in events]
    ties = draw(st.permutations(range(len(events))))
    return [events[i] for i in sorted(range(len(events)), key=lambda i: (arrival[i], ties[i]))]


def revives(events: list[Event], window: int) -> bool:
    """Whether a scan moves a number again after its label was idle for longer than the
    reuse window (no scan or purchase of it in between): expiry may have dropped that label
    in one arrival order and not in another, so the guarantee does not cover it (README)."""
    held = sorted({(e.event_ts, e.label_id) for e in events
                   if type(e).__name__ == "LabelPurchased" and e.validation.valid})
    bought = [t for t, _ in held]
    last: dict[int, int] = {}
    for e in sorted((e for e in events if type(e).__name__ == "CarrierScan"),
                    key=lambda e: e.event_ts):
        owner = bisect_right(bought, e.event_ts) - 1
        if owner >= 0:
            if e.event_ts - last.get(owner, bought[owner]) > window:
                return True
            last[owner] = e.event_ts
    return False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.filter_too_much])
@given(st.data())
def test_within_allowed_lateness_expiry_keeps_the_guarantee(data: st.DataObject) -> None:
    # a label's reprints lie within the reuse window of each other: reprints further apart
    # meet in one order and not in another once expiry has dropped the first (README)
    events = data.draw(numbers_events(reprint_within=LATE.reuse_window))
    events += [scan(timedelta(days=34) + i * DAY, "in_transit") for i in range(
        data.draw(st.integers(0, 2)))]  # the newest events push the horizon past the oldest
    # the event ids remembered may be fewer than the events: a redelivery then applies again
    # and must still change nothing (every fact is idempotent)
    assume(not revives(events, LATE.reuse_window_s))
    config = Settings(reuse_window=LATE.reuse_window, clock_skew=LATE.clock_skew,
                      allowed_lateness=LATE.allowed_lateness,
                      max_event_ids_per_key=data.draw(st.sampled_from([2, 64])))
    arrived = within_lateness(data.draw, events, config.allowed_lateness)
    alerts = run(arrived, config, round_trip=data.draw(st.booleans()))
    _well_formed(alerts)
    assert standing(alerts) == standing(offline(events, config))


def test_later_than_allowed_lateness_the_guarantee_can_break() -> None:
    # the other side of the bound: another label's void 20 days ahead moves the horizon
    # (20 - 10 - 1 days) past the label of day 0, so the label and the scan that shows the
    # number in use before it arrive too late to meet: offline (event time) raises
    # previously_used, the stream does not
    l1 = purchased("L1", 0 * DAY, "s1")
    used = scan(-5 * DAY, "delivered", "90210", "US")
    ahead = voided("L9", 20 * DAY)
    expected = standing(offline([l1, used, ahead], LATE))
    assert [a["rule"] for a in expected.values()] == ["previously_used"]
    assert standing(run([ahead, l1, used], LATE)) == {}
    # with the lateness that covers the delay, the same arrival order keeps the guarantee
    enough = Settings(reuse_window=LATE.reuse_window, clock_skew=LATE.clock_skew,
                      allowed_lateness=timedelta(days=25))
    assert standing(run([ahead, l1, used], enough)) == standing(offline([l1, used, ahead],
                                                                        enough))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_per_key_bounds_hold_and_the_guarantee_holds_while_facts_fit_them(
        data: st.DataObject) -> None:
    # bounds drawn small enough to be reached by the generated numbers: the state never holds
    # more than them, revisions stay well formed, and while a number's facts fit the bounds
    # its alerts are the offline ones field for field; beyond them the least recent facts go,
    # with what was published about them, and the guarantee is not claimed (README)
    events = data.draw(numbers_events())
    config = Settings(reuse_window=PROP.reuse_window, clock_skew=PROP.clock_skew,
                      allowed_lateness=PROP.allowed_lateness,
                      max_labels_per_key=data.draw(st.integers(1, 4)),
                      max_scans_per_key=data.draw(st.integers(1, 6)))
    shuffled = data.draw(st.permutations(events))
    state = None
    alerts: list[dict[str, Any]] = []
    for event in shuffled:
        state, new = apply(state, event, config)
        alerts += new
        if state is not None:
            assert len(state.labels) <= config.max_labels_per_key
            assert len(state.scans) <= config.max_scans_per_key
    labels = {e.label_id for e in events if hasattr(e, "label_id")}
    scans = {(e.event_ts, e.status, e.postal_code, e.country) for e in events
             if hasattr(e, "status")}
    if len(labels) <= config.max_labels_per_key and len(scans) <= config.max_scans_per_key:
        _well_formed(alerts)
        assert standing(alerts) == standing(offline(events, config))
