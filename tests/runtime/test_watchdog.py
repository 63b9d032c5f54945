"""The stall watchdog's rule: flat committed offset + lag + no work, for stall_seconds."""

from __future__ import annotations

from streams.runtime.watchdog import Watchdog


def test_a_flat_partition_with_lag_and_no_work_is_stalled_once() -> None:
    dog = Watchdog(stall_seconds=30)
    assert not dog.observe("p0", 100, 500, last_work=0, now=0)
    assert not dog.observe("p0", 100, 500, last_work=0, now=29)
    assert dog.observe("p0", 100, 500, last_work=0, now=31)  # alarm: recover it
    assert dog.stalled == {"p0"}
    assert not dog.observe("p0", 100, 500, last_work=0, now=40)  # said once
    assert not dog.observe("p0", 120, 500, last_work=41, now=45)  # advancing again
    assert dog.stalled == set()


def test_caught_up_busy_or_advancing_partitions_are_not_stalled() -> None:
    dog = Watchdog(stall_seconds=30)
    dog.observe("idle", 500, 500, last_work=None, now=0)
    assert not dog.observe("idle", 500, 500, last_work=None, now=100)  # no lag
    dog.observe("busy", 100, 900, last_work=0, now=0)
    assert not dog.observe("busy", 100, 900, last_work=95, now=100)  # a long frame, working
    for t in range(0, 100, 10):
        assert not dog.observe("moving", 100 + t, 900, last_work=None, now=t)


def test_forget_drops_partitions_no_longer_assigned() -> None:
    dog = Watchdog(stall_seconds=1)
    dog.observe("a", 1, 5, None, 0)
    assert dog.observe("a", 1, 5, None, 2)
    dog.forget(set())
    assert dog.stalled == set()
    assert not dog.observe("a", 1, 5, None, 3)  # starts over


def test_a_worker_with_a_stalled_partition_is_not_ready(tmp_path: object) -> None:
    from streams.runtime.app import build_app
    from streams.runtime.stream_config import StreamConfig

    app = build_app(StreamConfig(app_id="ready-unit", store="memory://",
                                 state_dir=tmp_path))  # type: ignore[arg-type]
    readiness = app.tracking["readiness"]
    assert readiness() == "table recovery in progress"
    app.tables.recovery.completed.set()
    assert readiness() == "no partitions assigned"
