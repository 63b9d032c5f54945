"""CPU of the response core's batched step on one group, in process (dict store, no Kafka).

    python benchmarks/response.py [--alerts 3000] [--hours 30] [--batches 50,500] [--repeat 3]

One carrier and channel gets --alerts qualifying alerts (previously_used, critical, 40 sellers)
spread evenly over --hours hours in label-time order, so that they form one long incident,
and a watermark at the last one's time. They go through `step_many` in batches of each size
(a watermark closing every batch, as the stream stage sends them) over a dict of state bytes,
as the stage's table keeps them. Printed per batch size: CPU ms per alert (this process's
time.process_time, best of --repeat), the largest state value at the end and its key.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.core.response import Watermark, step_many
from streams.core.settings import Settings

START = 1_740_355_200  # 2025-02-24T00:00:00Z, an epoch-aligned hour


def rfc3339(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def alert(n: int, t: int) -> dict[str, Any]:
    label = f"lbl-{n}"
    number = f"9400{int(hashlib.sha256(label.encode()).hexdigest()[:12], 16):018d}"
    entry = {"label_id": label, "seller_id": f"s{n % 40}", "order_id": f"order-{n}",
             "channel": "buy_shipping", "purchased_at": rfc3339(t),
             "cost": {"amount": "5.40", "currency": "USD"}}
    return {
        "alert_id": hashlib.sha256(f"a|{label}".encode()).hexdigest()[:32],
        "rule": "previously_used", "severity": "critical", "label_id": label,
        "seller_id": entry["seller_id"], "order_id": entry["order_id"],
        "tracking_number": number, "carrier": "usps", "event_time": rfc3339(t),
        "detected_at": "2026-01-01T00:00:00.000Z", "labels": [entry], "evidence": {},
        "actions": ["fund_a_to_z_claim", "notify_buyer", "protect_account_health",
                    "refund_label"],
        "status": "open", "revision": 1,
    }


def run(alerts: list[dict[str, Any]], times: list[int], size: int,
        settings: Settings) -> tuple[float, dict[str, bytes]]:
    states: dict[str, bytes] = {}
    started = time.process_time()
    for lo in range(0, len(alerts), size):
        last = times[min(lo + size, len(alerts)) - 1]
        batch: list[Any] = [*alerts[lo:lo + size], Watermark(last)]
        for key, value in step_many(states.get, batch, settings).states.items():
            if value is None:
                states.pop(key, None)
            else:
                states[key] = value
    return time.process_time() - started, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=3000)
    parser.add_argument("--hours", type=float, default=30)
    parser.add_argument("--batches", default="50,500")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    span = int(args.hours * 3600)
    times = [START + span * n // args.alerts for n in range(args.alerts)]
    alerts = [alert(n, t) for n, t in enumerate(times)]
    print(f"{args.alerts} qualifying alerts of usps/buy_shipping over {args.hours:g} h")
    for size in (int(s) for s in args.batches.split(",")):
        best = min(run(alerts, times, size, settings)[0] for _ in range(args.repeat))
        _, states = run(alerts, times, size, settings)
        key = max(states, key=lambda k: len(states[k]))
        print(f"batches of {size:4d}: {1000 * best / args.alerts:.3f} ms CPU per alert; "
              f"largest state {len(states[key]):,} bytes ({key.split('|')[0]}|...)")


if __name__ == "__main__":
    main()
