"""The response's guarantee, as a property: any arrival order of the alert revisions and
watermark advances through `step` (with crash-like repeats of items) ends with exactly the
non-retracted incidents and due actions `derive` gives for the highest revisions and the
greatest watermark, field for field (`revision` aside: a stream numbers its revisions,
the offline mode publishes revision 1; `detected_at` is stamped by the runtime)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from response_helpers import BASE, Store, alert, epoch, without

from streams.core import schema
from streams.core.response import Watermark, derive
from streams.core.settings import Settings

# small thresholds, so that a dozen labels make, grow, split and retract incidents
SETTINGS = Settings(incident_window=timedelta(hours=1), incident_min_alerts=2,
                    incident_min_sellers=2, incident_quiet=timedelta(hours=2))
CHANNELS = ("buy_shipping", "buy_shipping", "veeqo", None)
COSTS = (("5.40", "USD"), ("4.35", "USD"), ("3.10", "EUR"), None)
# the severities each rule can have
SEVERITIES = {"previously_used": ("critical",), "duplicate_tracking": ("critical", "warning"),
              "destination_mismatch": ("warning",)}
VALIDATORS = {name: jsonschema.Draft202012Validator(schema.load(name))
              for name in ("incident", "action")}


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Any], int]:
    """Every revision of a few alerts about a dozen labels, and watermark advances, shuffled,
    with some items delivered twice; returns (items, greatest watermark)."""
    items: list[Any] = []
    for n in range(draw(st.integers(1, 14))):
        minute = draw(st.integers(0, 180))
        seller = f"s{draw(st.integers(0, 2))}"
        order = f"o{draw(st.integers(0, 4))}"
        channel = draw(st.sampled_from(CHANNELS))
        cost = draw(st.sampled_from(COSTS))
        for rule in sorted(draw(st.sets(st.sampled_from(sorted(SEVERITIES)), min_size=1))):
            for revision in range(1, draw(st.integers(1, 3)) + 1):
                severity = draw(st.sampled_from(SEVERITIES[rule]))
                status = draw(st.sampled_from(("open", "open", "retracted")))
                # now and then a revision moves the label to another channel (a reprint's
                # facts won): its facts must leave the old group and order
                moved = draw(st.sampled_from(CHANNELS)) if draw(st.booleans()) and \
                    revision > 1 else channel
                made = alert(f"l{n}", minute, seller, rule=rule, severity=severity,
                             order=order, channel=moved, cost=cost, revision=revision)
                if status == "retracted":
                    made = {**made, "status": "retracted", "actions": [],
                            "evidence": {"retracted_because": {"event_id": "e",
                                                               "type": "label.voided"}}}
                items.append(made)
    marks = draw(st.lists(st.integers(0, 12 * 60), min_size=1, max_size=4))
    items.extend(Watermark(epoch(BASE) + 60 * m) for m in marks)
    items = draw(st.permutations(items))
    for index in draw(st.lists(st.integers(0, len(items) - 1), max_size=6)):
        items.insert(draw(st.integers(index, len(items))), items[index])  # a redelivery
    return items, max((epoch(BASE) + 60 * m for m in marks), default=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_any_order_of_items_ends_with_derives_records(history: tuple[list[Any], int]) -> None:
    items, watermark = history
    store = Store(SETTINGS)
    for item in items:
        store.feed(item)  # asserts every record's revisions go 1, 2, 3, ... per id
    incidents, actions = store.final()
    expected_incidents, expected_actions = derive(
        [i for i in items if isinstance(i, dict)], watermark, SETTINGS)
    assert without(incidents, "revision") == without(expected_incidents, "revision")
    assert without(actions, "revision") == without(expected_actions, "revision")
    for record in store.published:
        name = "action" if "action_id" in record else "incident"
        VALIDATORS[name].validate({**record, "detected_at": "2025-02-24T00:00:00Z"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.data())
def test_any_batching_through_step_many_ends_with_derives_records(
        history: tuple[list[Any], int], data: st.DataObject) -> None:
    """The batched step: the same items cut into batches of any sizes, each batch applied
    at once (a repeated item may fall in the same batch), end where derive is."""
    items, watermark = history
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(items) - 1)), max_size=8)))
    store = Store(SETTINGS)
    for lo, hi in zip([0, *cuts], [*cuts, len(items)], strict=True):
        store.feed_many(items[lo:hi])
    incidents, actions = store.final()
    expected_incidents, expected_actions = derive(
        [i for i in items if isinstance(i, dict)], watermark, SETTINGS)
    assert without(incidents, "revision") == without(expected_incidents, "revision")
    assert without(actions, "revision") == without(expected_actions, "revision")


def test_a_batch_publishes_each_changed_record_once_with_its_final_fields() -> None:
    alerts = [alert(f"l{i}", 5 * i, f"s{i % 2}", order="o") for i in range(4)]
    store = Store(SETTINGS)
    result = store.feed_many([*alerts, alerts[0], Watermark(epoch(BASE) + 10 * 3600)])
    [incident] = result.incidents
    assert (incident["revision"], incident["alerts"], incident["status"]) == (1, 4, "resolved")
    assert sorted((r["action"], r["revision"], len(r["alert_ids"])) for r in result.actions) == [
        ("fund_a_to_z_claim", 1, 4), ("notify_buyer", 1, 4), ("protect_account_health", 1, 4),
        ("refund_label", 1, 4)]
    assert store.feed_many([*alerts, Watermark(epoch(BASE))]).states == {}  # all seen


def test_the_property_sees_incidents_and_actions() -> None:
    """The generator is not vacuous: a plain history of it has both."""
    alerts = [alert(f"l{i}", 5 * i, f"s{i % 2}", order=f"o{i % 3}") for i in range(4)]
    incidents, actions = derive(alerts, 0, SETTINGS)
    assert len(incidents) == 1 and len(actions) == 12
