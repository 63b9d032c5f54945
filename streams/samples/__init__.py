"""Bundled sample data and small builders of contract messages.

`incident.jsonl` (INCIDENT) reproduces the February 2025 USPS number-reuse incident in
miniature: December 2024 labels of several sellers with their carrier scans, normal February
traffic, then February labels issued with numbers that were used about two months earlier,
by other sellers (outside reuse) and by the same seller (in-house reuse), plus one label with a
wrong check digit and some noise that must raise nothing (a reprint, a producer retry, a
voided label that never shipped). One JSON object per line; its `type` decides the topic
(`carrier.scan` -> scans, the rest -> labels). The `simulate` command may regenerate the file:
the demo derives the alerts it expects from the file itself (streams.offline), not from a list.

`python -m streams.samples` rewrites incident.jsonl from `build_incident()` (seeded).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

SAMPLES_DIR = Path(__file__).resolve().parent
INCIDENT = SAMPLES_DIR / "incident.jsonl"

Message = dict[str, Any]


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def label_purchased(
    event_id: str,
    label_id: str,
    tracking_number: str,
    seller_id: str,
    purchased_at: datetime,
    *,
    carrier: str = "usps",
    order_id: str | None = None,
    ship_to: tuple[str, str] = ("10001", "US"),
    channel: str | None = "buy_shipping",
    cost: str | None = "5.40",
    service: str | None = "USPS Ground Advantage",
) -> Message:
    msg: Message = {
        "type": "label.purchased",
        "schema_version": 1,
        "event_id": event_id,
        "label_id": label_id,
        "tracking_number": tracking_number,
        "carrier": carrier,
        "seller_id": seller_id,
        "order_id": order_id or f"order-{label_id}",
        "ship_to": {"postal_code": ship_to[0], "country": ship_to[1]},
        "purchased_at": ts(purchased_at),
    }
    if service is not None:
        msg["service"] = service
    if channel is not None:
        msg["channel"] = channel
    if cost is not None:
        msg["cost"] = {"amount": cost, "currency": "USD"}
    return msg


def label_voided(
    event_id: str, label_id: str, tracking_number: str, voided_at: datetime,
    *, carrier: str = "usps",
) -> Message:
    return {
        "type": "label.voided",
        "schema_version": 1,
        "event_id": event_id,
        "label_id": label_id,
        "tracking_number": tracking_number,
        "carrier": carrier,
        "voided_at": ts(voided_at),
    }


def carrier_scan(
    event_id: str,
    tracking_number: str,
    status: str,
    occurred_at: datetime,
    *,
    carrier: str = "usps",
    postal_code: str | None = None,
    country: str = "US",
) -> Message:
    msg: Message = {
        "type": "carrier.scan",
        "schema_version": 1,
        "event_id": event_id,
        "tracking_number": tracking_number,
        "carrier": carrier,
        "status": status,
        "occurred_at": ts(occurred_at),
    }
    if postal_code is not None:
        msg["location"] = {"postal_code": postal_code, "country": country}
    return msg


def topic_of(message: Message) -> str:
    """'scans' or 'labels': the input topic a message belongs to, by its type."""
    return "scans" if message.get("type") == "carrier.scan" else "labels"


def journey(
    prefix: str, number: str, start: datetime, origin: str, destination: str
) -> list[Message]:
    """Accepted at `origin`, in transit, delivered at `destination` two days later."""
    return [
        carrier_scan(f"{prefix}-acc", number, "accepted", start, postal_code=origin),
        carrier_scan(f"{prefix}-tr", number, "in_transit", start + timedelta(hours=20),
                     postal_code="60601"),
        carrier_scan(f"{prefix}-dlv", number, "delivered", start + timedelta(days=2),
                     postal_code=destination),
    ]


def usps_number(rng: random.Random) -> str:
    from streams.carriers import generate

    return generate("usps", "usps_impb", rng=rng)


def spaced(number: str) -> str:
    """As printed on a label: groups of four."""
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def wrong_check_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def build_incident(seed: int = 2025) -> list[Message]:
    """The sample incident, in the order the demo produces it."""
    rng = random.Random(seed)
    zips = ["10001", "30303", "60601", "75201", "80202", "90012", "98101", "02108"]
    out: list[Message] = []

    # December 2024: ordinary shipments of several sellers, delivered. Their numbers come back.
    december = datetime(2024, 12, 9, 15, 0, tzinfo=UTC)
    old = []
    for i in range(6):
        number = usps_number(rng)
        seller = f"seller-{'ABCDEF'[i]}"
        dest = zips[i]
        when = december + timedelta(hours=7 * i)
        out.append(label_purchased(f"dec-{i}", f"L-dec-{i}", number, seller, when,
                                   ship_to=(dest, "US")))
        out += journey(f"dec-{i}", number, when + timedelta(hours=6), "07302", dest)
        old.append((number, seller, dest))

    # February 2025: normal traffic (new numbers), plus noise that must raise nothing.
    february = datetime(2025, 2, 10, 9, 0, tzinfo=UTC)
    for i in range(8):
        number = usps_number(rng)
        seller = f"seller-{'GHJKLMNP'[i]}"
        dest = zips[(i + 3) % len(zips)]
        when = february + timedelta(hours=3 * i)
        purchase = label_purchased(f"feb-{i}", f"L-feb-{i}", spaced(number), seller, when,
                                   ship_to=(dest, "US"))
        out.append(purchase)
        if i == 1:
            out.append(dict(purchase))  # a producer retry: same event_id
        if i == 2:  # a reprint: same label_id, new event
            out.append({**purchase, "event_id": "feb-2-reprint",
                        "purchased_at": ts(when + timedelta(minutes=5))})
        if i == 3:  # voided before shipping, never scanned
            out.append(label_voided("feb-3-void", "L-feb-3", number, when + timedelta(hours=2)))
            continue
        out += journey(f"feb-{i}", number, when + timedelta(hours=5), "07302", dest)

    # The incident, 17-18 Feb 2025: the label provider re-issues numbers used ~2 months ago.
    incident = datetime(2025, 2, 17, 13, 0, tzinfo=UTC)
    for i, (number, seller, _dest) in enumerate(old[:5]):
        in_house = i == 4  # the same seller gets its own old number again
        new_seller = seller if in_house else f"seller-{'QRSTU'[i]}"
        dest = zips[(i + 5) % len(zips)]
        when = incident + timedelta(hours=5 * i)
        out.append(label_purchased(f"inc-{i}", f"L-inc-{i}", number, new_seller, when,
                                   ship_to=(dest, "US"), channel="veeqo"))
        out += journey(f"inc-{i}", number, when + timedelta(hours=4), "07302", dest)

    # A label whose number fails its check digit.
    bad = wrong_check_digit(usps_number(rng))
    out.append(label_purchased("feb-bad", "L-feb-bad", bad, "seller-V",
                               incident + timedelta(days=1), ship_to=("98101", "US")))
    return out


def read_jsonl(path: Path = INCIDENT) -> Iterator[bytes]:
    """The non-blank lines of a JSON Lines file, as bytes (what goes on the wire)."""
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def write_jsonl(messages: list[Message], path: Path = INCIDENT) -> None:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
