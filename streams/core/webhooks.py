"""The pure parts of webhook delivery (`tracking-validator notify`): what identifies a record,
how a request is signed and verified, which answers are retried, and how long to wait.

Signature header, as a receiver checks it:

    X-Tracking-Validator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

`verify(header, body, secret, tolerance=300)` recomputes the HMAC over the raw body bytes,
compares in constant time, and refuses a `t` further than `tolerance` seconds from now (a
replayed old request). Several `v1=` entries are accepted (one per secret during a rotation).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-Tracking-Validator-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SECRET_ENV = "TRACKING_VALIDATOR_WEBHOOK_SECRET"
DEFAULT_TOLERANCE = 300.0  # seconds a receiver accepts between t and its clock

# the field that names a record, by what the record is
ID_FIELDS = ("action_id", "incident_id", "alert_id")

# answers worth another try: the receiver is slow, busy or broken, not refusing the record
RETRY_STATUSES = frozenset({408, 429})


class NotARecord(ValueError):
    """The value has no id field or no revision: nothing to deliver under a stable key."""


def record_id(record: object) -> str:
    """The record's own id (action_id, incident_id or alert_id)."""
    if isinstance(record, dict):
        for name in ID_FIELDS:
            value = record.get(name)
            if isinstance(value, str) and value:
                return value
    raise NotARecord(f"no {', '.join(ID_FIELDS[:-1])} or {ID_FIELDS[-1]} string")


def idempotency_key(record: object) -> str:
    """`<id>:<revision>`: the same for every delivery of one revision, new for the next."""
    rid = record_id(record)
    revision = record.get("revision") if isinstance(record, dict) else None
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise NotARecord("no positive integer revision")
    return f"{rid}:{revision}"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(header: str, body: bytes, secret: bytes, tolerance: float = DEFAULT_TOLERANCE,
           now: float | None = None) -> bool:
    """True when `header` signs `body` with `secret` and its t is within `tolerance` seconds
    of `now` (default: the clock)."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            macs.append(value)
    if timestamp is None or not macs:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def outcome_of(status: int) -> str:
    """`delivered` (2xx), `retry` (408, 429, 5xx) or `rejected` (anything else)."""
    if 200 <= status < 300:
        return "delivered"
    if status in RETRY_STATUSES or 500 <= status < 600:
        return "retry"
    return "rejected"


def backoff(attempt: int, base: float = 0.5, cap: float = 300.0,
            rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (1 for the first retry): "full jitter", a uniform
    draw in [0, min(cap, base * 2**(attempt-1))], so receivers that come back are not hit by
    every sender at the same instant."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 60))
    return (rng or random).uniform(0.0, ceiling)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); None if absent
    or unreadable. (Not email.utils: it imports socket, which the core must not load.)"""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:  # an HTTP date, IMF-fixdate (RFC 9110: what senders generate)
        when = datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def next_delay(attempt: int, retry_after_s: float | None, base: float = 0.5,
               cap: float = 300.0, rng: random.Random | None = None) -> float:
    """The wait before retry `attempt`: the receiver's Retry-After when it gave one (capped, a
    receiver may not park a record for a day by asking), else the jittered backoff."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), cap)
    return backoff(attempt, base, cap, rng)
