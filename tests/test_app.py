"""The Faust adapter without a broker: agents driven with `agent.test_context()` and an
in-memory table (store='memory://'), sends captured instead of produced."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import events
from streams.app import Forward, build_app, decode_event, encode_event, ingest_record
from streams.samples import journey, label_purchased, label_voided, spaced
from streams.settings import Settings
from streams.stream_config import StreamConfig

T0 = datetime(2025, 2, 10, 9, 0, tzinfo=UTC)
DEC = datetime(2024, 12, 10, 9, 0, tzinfo=UTC)
N1 = "9400111206206406260787"  # a valid USPS IMpb number (GS1 mod 10 check digit 7)


def test_wire_format_round_trips_every_event_type() -> None:
    msgs = [
        label_purchased("e1", "L1", spaced(N1), "s1", T0, cost="12.34"),
        label_purchased("e2", "L2", N1[:-1] + "0", "s1", T0, channel=None, cost=None,
                        service=None),  # invalid number: carries its Validation
        label_voided("e3", "L1", N1, T0 + timedelta(hours=1)),
        *journey("e4", N1, T0 + timedelta(hours=2), "07302", "10001"),
    ]
    for msg in msgs:
        event = events.decode(orjson.dumps(msg))
        assert decode_event(encode_event(event)) == event


def test_ingest_record_dead_letters_with_the_decode_error() -> None:
    out = ingest_record("scans", 2, 41, b"k", b"[1]", 1 << 20)
    assert isinstance(out, dict)
    assert out["error"] == {"code": "not_an_object", "message": out["error"]["message"],
                            "path": None}
    assert (out["source_topic"], out["partition"], out["offset"]) == ("scans", 2, 41)
    big = ingest_record("labels", 0, 0, None, b"{" + b" " * 100 + b"}", 50)
    assert isinstance(big, dict) and big["error"]["code"] == "too_large"
    ok = ingest_record("labels", 0, 0, None,
                       orjson.dumps(label_purchased("e1", "L1", spaced(N1), "s1", T0)), 1 << 20)
    assert isinstance(ok, Forward) and ok.key == f"usps:{N1}".encode()


class Captured:
    """Stands in for the app producer's `send`: records what the agents produce; the
    returned future is already acknowledged, as the broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, *_: Any) -> Any:
        self.sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def to(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        return [(k, v) for t, k, v in self.sent if t == topic]


@pytest.fixture
def app(tmp_path: Path) -> Any:
    config = StreamConfig(app_id="unit-test", store="memory://", state_dir=tmp_path,
                          settings=Settings(max_message_bytes=2048))
    app = build_app(config)
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    captured = Captured()
    app.producer.send = captured.send  # the agents produce through the app's producer
    app.tracking["captured"] = captured
    return app


async def test_agents_route_decode_detect_and_dead_letter(app: Any) -> None:
    h = app.tracking
    ingest, detect, table = h["ingest"], h["detect"], h["table"]
    inputs = [
        label_purchased("d1", "L-old", N1, "seller-A", DEC),
        *journey("d1", N1, DEC + timedelta(hours=4), "07302", "10001"),
        label_purchased("f1", "L-new", spaced(N1), "seller-B", T0),
        label_purchased("f1", "L-new", spaced(N1), "seller-B", T0),  # redelivery
    ]
    async with ingest.test_context() as agent:
        for msg in inputs:
            await agent.put(orjson.dumps(msg), key=b"order-1")
        await agent.put(b"\xff", key=b"order-2")
        await agent.put(b"x" * 3000, key=b"order-3")

    config = h["config"]
    captured = h["captured"]
    forwarded = captured.to(config.tracking_events_topic)
    assert len(forwarded) == len(inputs)
    assert {key for key, _ in forwarded} == {f"usps:{N1}".encode()}
    dead = [orjson.loads(v) for _, v in captured.to(config.deadletter_topic)]
    assert [d["error"]["code"] for d in dead] == ["encoding", "too_large"]

    async with detect.test_context() as agent:
        for key, value in forwarded:
            await agent.put(value, key=key)
        # the state is the core's, stored as bytes under the tracking key
        stored = table[f"usps:{N1}".encode()]
        assert isinstance(stored, bytes) and b"L-new" in stored

    alerts = [orjson.loads(v) for _, v in captured.to(config.alerts_topic)]
    assert sorted((a["rule"], a["label_id"], a["severity"]) for a in alerts) == [
        ("duplicate_tracking", "L-new", "critical"),
        ("previously_used", "L-new", "critical"),
    ]
    assert {k for k, _ in captured.to(config.alerts_topic)} == {N1.encode()}  # by number
    assert all(a["detected_at"].endswith("Z") for a in alerts)
