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
                  input_ts_ms=1_000_000, acked_s=1_000.25)
    m.count_alert({"rule": "duplicate_tracking", "severity": "critical", "revision": 2,
                   "status": "open"}, input_ts_ms=1_000_000, acked_s=1_001)
    m.count_alert({"rule": "duplicate_tracking", "severity": "critical", "revision": 3,
                   "status": "retracted"}, input_ts_ms=0, acked_s=1_002)
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
