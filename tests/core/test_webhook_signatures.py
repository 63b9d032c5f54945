"""The pure parts of webhook delivery: ids, signatures, retry classes, waits."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from streams.core import webhooks

SECRET = b"whsec-test"


def test_idempotency_key_names_the_record_and_its_revision() -> None:
    assert webhooks.idempotency_key({"action_id": "a1", "revision": 3}) == "a1:3"
    assert webhooks.idempotency_key({"incident_id": "i9", "revision": 1}) == "i9:1"
    assert webhooks.idempotency_key({"alert_id": "x", "revision": 2}) == "x:2"


@pytest.mark.parametrize("record", [{}, {"action_id": "a"}, {"action_id": "a", "revision": 0},
                                    {"action_id": "a", "revision": True}, [1], "x",
                                    {"action_id": "", "revision": 1}])
def test_a_value_without_id_or_revision_is_not_a_record(record: object) -> None:
    with pytest.raises(webhooks.NotARecord):
        webhooks.idempotency_key(record)


def test_signature_is_the_hmac_of_t_dot_body() -> None:
    body = b'{"action_id":"a","revision":1}'
    header = webhooks.sign(SECRET, body, 1_700_000_000)
    mac = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"


def test_verify_accepts_a_fresh_signature_and_refuses_tampering_and_old_ones() -> None:
    body = b'{"k":1}'
    header = webhooks.sign(SECRET, body, 1000)
    assert webhooks.verify(header, body, SECRET, tolerance=300, now=1200)
    assert not webhooks.verify(header, body + b" ", SECRET, now=1200)
    assert not webhooks.verify(header, body, b"other", now=1200)
    assert not webhooks.verify(header, body, SECRET, tolerance=300, now=1301)
    assert not webhooks.verify("v1=abc", body, SECRET, now=1000)
    assert not webhooks.verify("", body, SECRET, now=1000)
    # a rotation: one of several v1 entries matches
    rotated = f"t=1000,v1={'0' * 64},{header.split(',')[1]}"
    assert webhooks.verify(rotated, body, SECRET, now=1000)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "delivered"), (201, "delivered"), (204, "delivered"), (299, "delivered"),
    (408, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"),
    (599, "retry"), (301, "rejected"), (400, "rejected"), (401, "rejected"),
    (404, "rejected"), (409, "rejected"), (410, "rejected"), (422, "rejected"),
])
def test_outcome_of_a_status(status: int, outcome: str) -> None:
    assert webhooks.outcome_of(status) == outcome


def test_backoff_grows_exponentially_with_full_jitter_under_a_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
        draws = [webhooks.backoff(attempt, 0.5, 60.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # it does reach up to the ceiling
        assert len(set(draws)) > 150  # jittered, not one fixed wait
    assert webhooks.backoff(10_000, 1.0, 5.0, rng) <= 5.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert webhooks.retry_after("3") == 3.0
    assert webhooks.retry_after(" 0 ") == 0.0
    assert webhooks.retry_after(None) is None
    assert webhooks.retry_after("soon") is None
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert webhooks.retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
    assert webhooks.retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0


def test_next_delay_honours_retry_after_up_to_the_cap() -> None:
    assert webhooks.next_delay(1, 2.0, cap=60) == 2.0
    assert webhooks.next_delay(1, 3600.0, cap=60) == 60.0
    assert 0.0 <= webhooks.next_delay(3, None, base=1.0, cap=60) <= 4.0
