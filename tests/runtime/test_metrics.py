"""`/metrics`, `/health` and `/ready` read from a real worker on a real broker (issue 12)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_worker_integration import (
    T0,
    feed,
    new_pipeline,
    wait_topics,
)

from streams.runtime.metrics import Metrics
from streams.tools.samples import journey, label_purchased, usps_number, wrong_check_digit

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(text: str, name: str) -> dict[str, float]:
    """'name{labels}' -> value for the lines of one metric family."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_metrics_health_and_ready_of_a_real_worker(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    import random

    port = free_port()
    p = new_pipeline(kafka_bootstrap, tmp_path, "metrics",
                     extra_args=["--web-port", str(port)])
    base = f"http://127.0.0.1:{port}"
    p.start()
    try:
        await wait_topics(kafka_bootstrap, [*p.topics.values(), p.internal_topic])
        deadline = time.monotonic() + 90
        while get_or_none(base + "/ready") != 200:
            assert time.monotonic() < deadline, f"never ready; log {p.log}"
            await asyncio.sleep(0.3)
        status, body = get(base + "/health")
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        status, body = get(base + "/ready")
        assert (status, orjson.loads(body)) == (200, {"status": "ready"})

        rng = random.Random(5)
        n = usps_number(rng)
        msgs: list[dict[str, Any]] = [
            label_purchased("m1", "L-bad", wrong_check_digit(usps_number(rng)), "s", T0),
            label_purchased("m2", "L-ok", n, "s", T0),
            *journey("m2", n, T0, "07302", "10001"),
        ]
        await feed(p, msgs)
        from test_worker_integration import produce, wait_idle

        await produce(p.bootstrap, p.topics["scans"], [b"[1]", b"{"])
        await wait_idle(p)

        status, body = get(base + "/metrics")
        assert status == 200
        text = body.decode()
        events = samples(text, "tracking_validator_events_total")
        assert events[f'tracking_validator_events_total{{outcome="event",'
                      f'topic="{p.topics["labels"]}"}}'] == 2
        assert events[f'tracking_validator_events_total{{outcome="dead_letter",'
                      f'topic="{p.topics["scans"]}"}}'] == 2
        # every event ingest passed on was applied and made durable by the stage
        applied = sum(v for k, v in events.items() if 'outcome="event"' in k)
        assert applied == len(msgs)  # the two labels and the journey's three scans
        assert samples(text, "tracking_validator_stage_events_total") == {
            "tracking_validator_stage_events_total": applied}
        dead = samples(text, "tracking_validator_dead_letters_total")
        assert dead['tracking_validator_dead_letters_total{code="not_an_object"}'] == 1
        assert dead['tracking_validator_dead_letters_total{code="invalid_json"}'] == 1
        alerts = samples(text, "tracking_validator_alerts_total")
        assert alerts['tracking_validator_alerts_total{rule="invalid_tracking",'
                      'severity="warning"}'] == 1
        latency = samples(text, "tracking_validator_event_to_alert_seconds_count")
        assert latency["tracking_validator_event_to_alert_seconds_count"] == 1
        # the events happened in February 2025: the latency counts from the moment ingest
        # read the record (seconds), the event age from the event time (more than 300 days)
        seconds = samples(text, "tracking_validator_event_to_alert_seconds_sum")[
            "tracking_validator_event_to_alert_seconds_sum"]
        assert 0 < seconds < 60
        ages = samples(text, "tracking_validator_event_age_seconds")
        assert ages["tracking_validator_event_age_seconds_count"] == applied
        mean_age = ages["tracking_validator_event_age_seconds_sum"] / applied
        assert 300 * 86400 < mean_age < time.time() - T0.timestamp() + 1
        assert ages['tracking_validator_event_age_seconds_bucket{le="2.592e+06"}'] == 0
        assert ages['tracking_validator_event_age_seconds_bucket{le="+Inf"}'] == applied
        lag = samples(text, "tracking_validator_consumer_lag")
        assert lag and all(v == 0 for v in lag.values())
        assert any(p.internal_topic in k for k in lag)
        assert samples(text, "tracking_validator_table_keys")[
            "tracking_validator_table_keys"] >= 1
        assert samples(text, "tracking_validator_stalled_partitions")[
            "tracking_validator_stalled_partitions"] == 0
        assert "tracking_validator_alert_revisions_total" in text
        # the table is never served: Faust's table views are off (its router view, the
        # partition map the lookup API's forwarding relies on, stays)
        assert get(base + "/table/")[0] == 404
        assert get(base + "/graph/")[0] == 404
    finally:
        rc = p.worker.stop() if p.worker else None
    assert rc == 0, f"log {p.log}"


def get_or_none(url: str) -> int | None:
    try:
        return get(url)[0]
    except OSError:
        return None


def test_metrics_count_distinct_alerts_and_revisions_apart() -> None:
    m = Metrics()
    m.count_alert({"rule": "duplicate_tracking", "severity": "warning", "revision": 1},
                  read_ms=1_000_000, acked_s=1_000.25)
    m.count_alert({"rule": "duplicate_tracking", "severity": "critical", "revision": 2,
                   "status": "open"}, read_ms=1_000_000, acked_s=1_001)
    m.count_alert({"rule": "duplicate_tracking", "severity": "critical", "revision": 3,
                   "status": "retracted"}, read_ms=0, acked_s=1_002)
    text = m.exposition().decode()
    assert samples(text, "tracking_validator_alerts_total") == {
        'tracking_validator_alerts_total{rule="duplicate_tracking",severity="warning"}': 1}
    assert samples(text, "tracking_validator_alert_revisions_total") == {
        'tracking_validator_alert_revisions_total{status="open"}': 1,
        'tracking_validator_alert_revisions_total{status="retracted"}': 1}
    assert samples(text, "tracking_validator_event_to_alert_seconds_count") == {
        "tracking_validator_event_to_alert_seconds_count": 2}
    m.set_lag([("t", 0, 5), ("t", 1, 0)])
    m.set_lag([("t", 1, 3)])  # partition 0 went to another worker
    assert samples(m.exposition().decode(), "tracking_validator_consumer_lag") == {
        'tracking_validator_consumer_lag{partition="1",topic="t"}': 3}


def test_event_age_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from streams.runtime.metrics import AGE_BUCKETS

    m = Metrics()
    registry = CollectorRegistry()
    reference = Histogram("tracking_validator_event_age_seconds", "x", buckets=AGE_BUCKETS,
                          registry=registry)
    now = 1_800_000_000.0
    times = [int(now) - age for age in (0, 1, 5, 60, 61, 86400, 86401, 400 * 86400, 10**9)]
    times.append(int(now) + 30)  # from the future (clock skew): age 0
    m.observe_event_ages(now, times)
    m.observe_event_ages(now, [])
    for t in times:
        reference.observe(max(0.0, now - t))
    name = "tracking_validator_event_age_seconds"

    def exposed(text: str) -> dict[str, float]:
        return {k: v for k, v in samples(text, name).items() if "_created" not in k}

    ours = exposed(m.exposition().decode())
    assert ours == exposed(generate_latest(registry).decode())
    assert ours[f'{name}_bucket{{le="1.0"}}'] == 3  # ages 0, 1 and the future one
    assert ours[f'{name}_bucket{{le="+Inf"}}'] == ours[f"{name}_count"] == len(times)
