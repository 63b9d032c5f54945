"""Throughput of the pure core on one core: decode + validate + apply, no Kafka.

    python benchmarks/core.py [--labels 40000] [--seed 7]

A realistic mix: labels (half USPS, half UPS, numbers with valid check digits), 3-4 carrier
scans per label, 1% duplicate labels (another seller buys the same number days later), all in
event-time order. Three figures:

  decode           bytes -> typed event (schema checks, validation, tracking key)
  core, in memory  decode + apply over a dict of TrackingState objects
  core, bytes      decode + apply with TrackingState.from_bytes/to_bytes around every event,
                   as a Faust table (RocksDB, bytes values) does

then decode per event type, apply alone (the core figures minus decode), apply with the
state bytes round trip measured directly on events decoded beforehand (less noisy than the
difference), and the msgpack round trip of decoded events in batches (`encode_events` /
`decode_events`, as the runtime ships them between its two stages).

Times are this process's CPU time (time.process_time), best of --repeat runs, so that other
load on a shared machine does not count against the figures; expect a wall-clock figure this
good only on an otherwise idle core.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.core.detection import TrackingState, apply
from streams.core.events import Event, decode, decode_events, encode_events
from streams.core.numbers import generate
from streams.core.settings import Settings

STATUS_RUNS = [
    ["pre_transit", "accepted", "in_transit", "delivered"],
    ["accepted", "in_transit", "out_for_delivery", "delivered"],
    ["accepted", "in_transit", "delivered"],
]


def _number(rng: random.Random, carrier: str) -> str:
    # USPS IMpb or UPS 1Z with a correct check digit, from the carrier definitions
    return generate(carrier, "usps_impb" if carrier == "usps" else "ups_1z", rng=rng)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def workload(labels: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    timed: list[tuple[datetime, bytes]] = []
    for i in range(labels):
        carrier = "usps" if i % 2 else "ups"
        number = _number(rng, carrier)
        bought = start + timedelta(seconds=rng.randrange(30 * 86400))
        zip5 = f"{rng.randrange(100000):05d}"
        buyers = [(f"L{i}", f"seller-{rng.randrange(5000)}", bought)]
        if rng.random() < 0.01:
            buyers.append((f"L{i}-dup", f"seller-{rng.randrange(5000)}",
                           bought + timedelta(days=rng.randrange(1, 10))))
        for label_id, seller, at in buyers:
            timed.append((at, orjson.dumps({
                "type": "label.purchased", "schema_version": 1, "event_id": f"e-{label_id}",
                "label_id": label_id, "tracking_number": number, "carrier": carrier,
                "service": "Ground", "seller_id": seller, "order_id": f"o-{label_id}",
                "channel": "buy_shipping", "ship_from": {"postal_code": "98109", "country": "US"},
                "ship_to": {"postal_code": zip5, "country": "US"}, "purchased_at": _iso(at),
                "cost": {"amount": f"{rng.randrange(400, 2500) / 100:.2f}", "currency": "USD"},
            })))
        at = bought
        for k, status in enumerate(rng.choice(STATUS_RUNS)):
            at += timedelta(hours=rng.randrange(2, 30))
            location = {"postal_code": zip5 if status != "in_transit" else "60601",
                        "city": "SOMEWHERE", "state": "XX", "country": "US"}
            timed.append((at, orjson.dumps({
                "type": "carrier.scan", "schema_version": 1, "event_id": f"s-{i}-{k}",
                "tracking_number": number, "carrier": carrier, "status": status,
                "code": "XX", "occurred_at": _iso(at), "location": location,
            })))
    timed.sort(key=lambda pair: pair[0])
    return [value for _, value in timed]


def bench_decode(values: list[bytes]) -> float:
    start = time.process_time()
    for value in values:
        decode(value)
    return time.process_time() - start


def bench_wire(values: list[bytes], batch: int) -> tuple[float, float, int]:
    """(encode_events, decode_events) CPU seconds over every event, and bytes per event."""
    decoded = [decode(value) for value in values]
    batches = [decoded[i:i + batch] for i in range(0, len(decoded), batch)]
    start = time.process_time()
    blobs = [encode_events(b) for b in batches]
    encoded = time.process_time() - start
    start = time.process_time()
    for blob in blobs:
        decode_events(blob)
    return encoded, time.process_time() - start, sum(map(len, blobs)) // len(decoded)


def bench_memory(values: list[bytes], settings: Settings) -> tuple[float, int]:
    table: dict[str, TrackingState] = {}
    alerts = 0
    start = time.process_time()
    for value in values:
        event = decode(value, settings.max_message_bytes)
        state, new = apply(table.get(event.key), event, settings)
        if state is None:
            table.pop(event.key, None)
        else:
            table[event.key] = state
        alerts += len(new)
    return time.process_time() - start, alerts


def bench_bytes(values: list[bytes], settings: Settings) -> tuple[float, int, int]:
    table: dict[str, bytes] = {}
    alerts = 0
    start = time.process_time()
    for value in values:
        event = decode(value, settings.max_message_bytes)
        stored = table.get(event.key)
        state, new = apply(None if stored is None else TrackingState.from_bytes(stored),
                           event, settings)
        if state is None:
            table.pop(event.key, None)
        else:
            table[event.key] = state.to_bytes()
        alerts += len(new)
    elapsed = time.process_time() - start
    return elapsed, alerts, sum(map(len, table.values())) // max(1, len(table))


def bench_apply_bytes(events: list[Event], settings: Settings) -> float:
    """from_bytes + apply + to_bytes per event, the events decoded beforehand."""
    table: dict[str, bytes] = {}
    start = time.process_time()
    for event in events:
        stored = table.get(event.key)
        state, _ = apply(None if stored is None else TrackingState.from_bytes(stored),
                         event, settings)
        if state is None:
            table.pop(event.key, None)
        else:
            table[event.key] = state.to_bytes()
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--batch", type=int, default=500, help="events per msgpack batch")
    args = parser.parse_args(argv)
    settings = Settings()
    values = workload(args.labels, args.seed)
    n = len(values)
    avg = sum(map(len, values)) // n
    print(f"{n} events ({args.labels} labels, ~{n / args.labels - 1:.1f} scans each, "
          f"1% duplicates), {avg} bytes on average")
    t_decode = min(bench_decode(values) for _ in range(args.repeat))
    by_type = {kind: [v for v in values if f'"type":"{kind}"'.encode() in v]
               for kind in ("label.purchased", "carrier.scan")}
    t_by_type = {kind: min(bench_decode(vs) for _ in range(args.repeat)) / len(vs)
                 for kind, vs in by_type.items()}
    wire = [bench_wire(values, args.batch) for _ in range(args.repeat)]
    t_encode = min(w[0] for w in wire)
    t_decode_wire = min(w[1] for w in wire)
    runs = [bench_memory(values, settings) for _ in range(args.repeat)]
    t_memory, alerts = min(runs)
    runs_b = [bench_bytes(values, settings) for _ in range(args.repeat)]
    t_bytes, alerts_b, state_size = min(runs_b)
    assert alerts == alerts_b, (alerts, alerts_b)
    for name, t in (("decode", t_decode), ("core, in memory", t_memory),
                    ("core, bytes state", t_bytes)):
        print(f"{name:<18} {n / t:>10,.0f} events/s  {t / n * 1e6:6.2f} us/event")
    for kind, t in t_by_type.items():
        print(f"  decode {kind:<16} {t * 1e6:6.2f} us/event")
    print(f"  apply, in memory   {(t_memory - t_decode) / n * 1e6:6.2f} us/event  "
          f"(with the state bytes round trip {(t_bytes - t_decode) / n * 1e6:.2f})")
    decoded = [decode(value, settings.max_message_bytes) for value in values]
    t_apply = min(bench_apply_bytes(decoded, settings) for _ in range(args.repeat))
    print(f"  apply + state bytes, measured alone {t_apply / n * 1e6:6.2f} us/event")
    print(f"  msgpack batches of {args.batch}: encode_events {t_encode / n * 1e6:.2f} us/event, "
          f"decode_events {t_decode_wire / n * 1e6:.2f} us/event, {wire[0][2]} bytes/event")
    print(f"alerts raised: {alerts}; state per tracking number: ~{state_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
