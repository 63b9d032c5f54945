"""The response core's state stays small per key however many alerts a group gets (the
stream stage stores each key as one changelog record, capped at 8 MB), and a refresh reads
only the fact keys of the incidents that changed."""

from __future__ import annotations

from typing import Any

from response_helpers import BASE, Store, alert, epoch, without

from streams.core.response import Watermark, derive, step_many
from streams.core.settings import Settings

HOUR = 3600
SETTINGS = Settings()  # window 1 h, 10 alerts, 3 sellers, quiet 6 h


def day_and_night(hours: int, per_hour: int) -> list[dict[str, Any]]:
    """`per_hour` qualifying alerts of one group every hour, in label-time order: 12 hours
    of 40 sellers (qualifying windows: one incident) then 12 hours of one seller (facts
    kept, no incident), and so on."""
    alerts = []
    for h in range(hours):
        busy = (h // 12) % 2 == 0
        for i in range(per_hour):
            seller = f"s{i % 40}" if busy else "s0"
            alerts.append(alert(f"l{h}-{i}", 60 * h + 60 * i / per_hour, seller,
                                order=f"o{h}-{i}"))
    return alerts


def test_fifty_thousand_alerts_of_one_group_keep_every_state_value_under_one_mb() -> None:
    alerts = day_and_night(hours=500, per_hour=100)  # 50,000 alerts, 20+ days
    store = Store(SETTINGS)
    for lo in range(0, len(alerts), 500):
        batch = alerts[lo:lo + 500]
        store.feed_many([*batch, Watermark(epoch(BASE) + (lo + 500) // 100 * HOUR)])
    sizes = {key: len(value) for key, value in store.states.items()}
    largest = max(sizes, key=sizes.__getitem__)
    assert sizes[largest] < 1_000_000, (largest, sizes[largest])
    # not vacuous: the facts alone are far over the 8 MB a single group key could hold
    assert sum(n for key, n in sizes.items() if key.startswith("f|")) > 8_000_000
    assert sizes["g|usps|buy_shipping"] < 10_000  # per-window counts only
    incidents, actions = store.final()
    expected_incidents, expected_actions = derive(alerts, epoch(BASE) + 500 * HOUR, SETTINGS)
    assert len(incidents) == 21
    assert without(incidents, "revision") == without(expected_incidents, "revision")
    assert len(actions) == len(expected_actions) == 4 * len(alerts)


def test_a_refresh_reads_only_the_fact_keys_of_the_incident_that_changed() -> None:
    alerts = day_and_night(hours=48, per_hour=20)  # incidents in hours 0-11 and 24-35
    store = Store(SETTINGS)
    store.feed_many([*alerts, Watermark(epoch(BASE) + 30 * HOUR)])
    read: list[str] = []

    def get(key: str) -> bytes | None:
        read.append(key)
        return store.states.get(key)

    # a watermark advance that resolves the second incident reads no facts
    result = step_many(get, [Watermark(epoch(BASE) + 48 * HOUR)], SETTINGS)
    assert [r["status"] for r in result.incidents] == ["resolved"]
    assert not [key for key in read if key.startswith("f|")]
    # an alert in hour 26 reads that incident's windows (24-35) only, not the first one's
    read.clear()
    result = step_many(get, [alert("new", 60 * 26 + 1, "s1")], SETTINGS)
    assert [r["alerts"] for r in result.incidents] == [12 * 20 + 1]
    windows = {int(key.rpartition("|")[2]) - epoch(BASE) // HOUR
               for key in read if key.startswith("f|")}
    assert windows == set(range(24, 36))
