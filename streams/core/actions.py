"""Per-order actions: one record per (order, action) that the order's open alerts ask for
(contract, "tracking.actions"), so that account health, billing, claims and buyer messaging
act on each affected order exactly once. Pure; shared by the stream step and the offline mode.

The record is about the latest-purchased label (ties: the greater label_id) among the labels
that the alerts asking for the action are about; it links the incident of that label's
carrier and channel whose span holds the label's purchase, if any.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from streams.core.incidents import Fact, Span, link

METRICS = ("valid_tracking_rate", "on_time_delivery_rate", "late_shipment_rate",
           "order_defect_rate")


def action_id(order_id: str, action: str) -> str:
    return hashlib.sha256(f"{order_id}|{action}".encode()).hexdigest()[:32]


def buyer_message(order_id: str, carrier: str, tracking_number: str) -> dict[str, str]:
    """The plain-text message to the buyer (deterministic: the same facts, the same text)."""
    return {
        "audience": "buyer",
        "subject": f"Update on the tracking of your order {order_id}",
        "body": (
            f"Hello,\n\n"
            f"The tracking number shown for your order {order_id} ({carrier.upper()} "
            f"{tracking_number}) was wrong: the carrier had already used it for another "
            f"package, so the tracking updates you saw may not be about your order. This "
            f"happened in the shipping label system and is no fault of the seller.\n\n"
            f"What happens next: the seller's account is not penalised for it, the seller "
            f"will share correct tracking if your package needs a new label, and if your "
            f"order does not arrive you are covered by the A-to-z Guarantee. You do not need "
            f"to do anything now; we will write again if anything changes.\n"
        ),
    }


def action_records(facts: Iterable[Fact], spans: Callable[[str, str], list[Span]],
                   ) -> list[dict[str, Any]]:
    """The due actions of one order's open alerts, by action name, as records without
    detected_at (revision 0: the publisher numbers them). `spans(carrier, channel)` gives
    the current incidents of a group."""
    by_action: dict[str, list[Fact]] = {}
    for fact in facts:
        for action in fact.actions:
            by_action.setdefault(action, []).append(fact)
    records = []
    for action in sorted(by_action):
        asking = by_action[action]
        label = max(asking, key=lambda f: (f.t, f.label_id, f.alert_id))
        refund = None
        if action == "refund_label" and label.amount is not None:
            refund = {"amount": label.amount, "currency": label.currency}
        records.append({
            "action_id": action_id(label.order_id, action),
            "action": action,
            "status": "due",
            "revision": 0,
            "order_id": label.order_id,
            "seller_id": label.seller_id,
            "label_id": label.label_id,
            "tracking_number": label.tracking_number,
            "carrier": label.carrier,
            "channel": label.channel,
            "alert_ids": sorted({f.alert_id for f in asking}),
            "incident_id": link(spans(label.carrier, label.channel), label.t),
            "refund": refund,
            "metrics": list(METRICS) if action == "protect_account_health" else None,
            "message": (buyer_message(label.order_id, label.carrier, label.tracking_number)
                        if action == "notify_buyer" else None),
        })
    return records
