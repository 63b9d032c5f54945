"""The lookup core (streams.core.lookup), black-box: state is built by feeding events through
detection.apply, then `status` is asked. Boundaries of every definition by hand, then a
simulated history checked against an independent reading of the contract computed from
the simulator's own shipments (never from the state)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams.core import lookup
from streams.core.detection import STATUSES, TrackingState, apply, rfc3339
from streams.core.events import decode
from streams.core.lookup import RequestError, parse_at, parse_check, query
from streams.core.numbers import generate, printed
from streams.core.settings import Settings
from streams.tools.samples import carrier_scan, label_purchased, label_voided, wrong_check_digit
from streams.tools.simulation import ACCEPTED_OR_LATER, Params, simulate

S = Settings()
W = S.reuse_window_s
T0 = datetime(2025, 1, 1, tzinfo=UTC)
E0 = int(T0.timestamp())
DAY = 86400
NUM = generate("usps", "usps_impb", rng=random.Random(3))


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


class History:
    """A number's state, built by the detection core from contract messages."""

    def __init__(self, number: str = NUM, carrier: str = "usps") -> None:
        self.number, self.carrier = number, carrier
        self.state: TrackingState | None = None
        self.n = 0

    def _feed(self, msg: dict[str, Any]) -> History:
        event = decode(orjson.dumps(msg))
        assert event.key == f"{self.carrier}:{query(self.carrier, self.number).validation.number}"
        self.state, _ = apply(self.state, event, S)
        return self

    def _id(self) -> str:
        self.n += 1
        return f"evt-{self.n}"

    def buy(self, label: str, t: int, seller: str = "s1") -> History:
        return self._feed(label_purchased(self._id(), label, self.number, seller, at(t),
                                          carrier=self.carrier))

    def void(self, label: str, t: int) -> History:
        return self._feed(label_voided(self._id(), label, self.number, at(t),
                                       carrier=self.carrier))

    def scan(self, t: int, status: str = "accepted", postal: str = "10001") -> History:
        return self._feed(carrier_scan(self._id(), self.number, status, at(t),
                                       carrier=self.carrier, postal_code=postal))

    def ask(self, t: int, number: str | None = None) -> dict[str, Any]:
        q = query(self.carrier, number or self.number)
        return lookup.status(self.state, q.carrier, q.number, E0 + t, S)


def iso(t: int) -> str:
    return rfc3339(E0 + t)


FIELDS = ["tracking_number", "carrier", "valid", "reason", "status", "holders", "last_scan",
          "free_after"]


def test_never_seen_is_free_with_exactly_the_contract_fields() -> None:
    r = History().ask(0)
    assert list(r) == FIELDS
    assert r == {"tracking_number": NUM, "carrier": "usps", "valid": True, "reason": None,
                 "status": "free", "holders": [], "last_scan": None, "free_after": None}


def test_a_label_holds_from_its_purchase_until_the_window_after_its_last_activity() -> None:
    h = History().buy("L1", 100, "s1")
    assert h.ask(99)["status"] == "free"  # not yet purchased
    r = h.ask(100)
    assert r["status"] == "held"
    assert r["holders"] == [{"label_id": "L1", "seller_id": "s1", "order_id": "order-L1",
                             "purchased_at": iso(100)}]
    assert r["free_after"] == iso(100 + W)
    assert h.ask(100 + W - 1)["status"] == "held"
    r = h.ask(100 + W)
    assert (r["status"], r["holders"], r["free_after"]) == ("free", [], None)


def test_a_scan_of_the_label_extends_its_hold_and_recently_used_follows_accepted_scans() -> None:
    h = History().buy("L1", 0).scan(10 * DAY, "delivered", "94103")
    r = h.ask(10 * DAY)
    assert r["status"] == "held" and r["free_after"] == iso(10 * DAY + W)
    assert r["last_scan"] == {"status": "delivered", "occurred_at": iso(10 * DAY),
                              "postal_code": "94103", "country": "US"}
    assert h.ask(10 * DAY - 1)["last_scan"] is None  # only scans at or before `at`
    assert h.ask(10 * DAY - 1)["free_after"] == iso(W)  # the later scan is not known yet
    assert h.ask(10 * DAY + W - 1)["status"] == "held"
    assert h.ask(10 * DAY + W)["status"] == "free"


def test_a_pre_transit_scan_is_activity_but_not_use() -> None:
    h = History().scan(0, "pre_transit")  # no label: nothing holds, nothing was used
    assert h.ask(5)["status"] == "free"
    assert h.ask(5)["last_scan"]["status"] == "pre_transit"
    h = History().buy("L1", 0).scan(DAY, "pre_transit")
    assert h.ask(DAY)["free_after"] == iso(DAY + W)  # it extends the label's hold


def test_scans_without_a_label_make_it_recently_used_for_the_window() -> None:
    h = History().scan(0, "accepted").scan(DAY, "delivered")
    r = h.ask(DAY)
    assert (r["status"], r["holders"], r["free_after"]) == ("recently_used", [], iso(DAY + W))
    assert h.ask(DAY + W - 1)["status"] == "recently_used"
    assert h.ask(DAY + W)["status"] == "free"
    assert h.ask(-1)["status"] == "free"  # before the scans


def test_a_void_ends_the_hold_at_the_void_time() -> None:
    h = History().buy("L1", 0).void("L1", DAY)
    assert h.ask(DAY - 1)["status"] == "held"
    r = h.ask(DAY)
    assert (r["status"], r["holders"], r["free_after"]) == ("free", [], None)


def test_a_voided_label_that_shipped_is_recently_used_not_held() -> None:
    h = History().buy("L1", 0).void("L1", 3600).scan(7200, "accepted")
    r = h.ask(7200)
    assert (r["status"], r["free_after"]) == ("recently_used", iso(7200 + W))


def test_a_reissue_holders_oldest_first_and_scans_belong_to_the_latest_label() -> None:
    h = History().buy("old", 0, "s1").scan(DAY, "delivered").buy("new", 60 * DAY, "s2")
    before = h.ask(60 * DAY - 1)
    assert [x["label_id"] for x in before["holders"]] == ["old"]
    after = h.ask(60 * DAY)
    assert [x["label_id"] for x in after["holders"]] == ["old", "new"]
    assert after["free_after"] == iso(60 * DAY + W)
    # a scan after the reissue belongs to the new label: the old one's hold does not grow
    h.scan(61 * DAY, "accepted")
    r = h.ask(DAY + W)
    assert [x["label_id"] for x in r["holders"]] == ["new"]
    assert h.ask(DAY + W - 1)["holders"][0]["label_id"] == "old"


def test_same_second_labels_the_greater_label_id_is_later_and_owns_the_scan() -> None:
    h = History().buy("b", 0).buy("a", 0).scan(10 * DAY)
    r = h.ask(10 * DAY)
    assert [x["label_id"] for x in r["holders"]] == ["a", "b"]  # purchase, then label_id
    r = h.ask(W)  # "a" expired (purchase only); "b" owns the scan
    assert [x["label_id"] for x in r["holders"]] == ["b"]


def test_a_reprint_is_one_holder() -> None:
    h = History().buy("L1", 0).buy("L1", 0)
    assert len(h.ask(1)["holders"]) == 1


def test_printed_forms_give_the_same_answer() -> None:
    h = History().buy("L1", 0).scan(DAY)
    rng = random.Random(5)
    for _ in range(10):
        assert h.ask(DAY, printed("usps", NUM, rng)) == h.ask(DAY)


def test_invalid_number() -> None:
    bad = wrong_check_digit(NUM)
    h = History(bad).buy("L1", 0).scan(DAY)
    r = h.ask(DAY)
    assert (r["valid"], r["reason"], r["status"]) == (False, "check_digit", "invalid")
    assert (r["holders"], r["free_after"]) == ([], None)
    assert r["last_scan"]["occurred_at"] == iso(DAY)  # a fact of the number, still reported
    r = lookup.status(None, "ups", "NOT-A-NUMBER", E0, S)
    assert (r["tracking_number"], r["status"], r["reason"]) == ("NOTANUMBER", "invalid",
                                                                "format")


# ---------------------------------------------------------------- requests


def test_query_normalises_and_rejects() -> None:
    q = query(" USPS ", "420 10001 " + NUM)
    assert (q.carrier, q.key) == ("usps", f"usps:{NUM}")
    for carrier, number, code in [("nope", NUM, "unknown_carrier"), ("usps", "", "empty"),
                                  ("usps", " - ", "empty"), (3, NUM, "schema"),
                                  ("usps", None, "schema"), ("", NUM, "unknown_carrier")]:
        with pytest.raises(RequestError) as err:
            query(carrier, number)
        assert err.value.code == code
        assert err.value.to_dict()["error"]["code"] == code


@pytest.mark.parametrize("text,expected", [
    ("2025-02-24T15:04:05Z", 1740409445), ("2025-02-24t15:04:05.999z", 1740409445),
    ("2025-02-24T16:04:05+01:00", 1740409445), ("2025-02-24T15:04:60Z", 1740409499),
])
def test_parse_at(text: str, expected: int) -> None:
    assert parse_at(text) == expected


@pytest.mark.parametrize("text", ["2025-02-24T15:04:05", "2025-02-30T00:00:00Z", "yesterday",
                                  "", 1740409445, None, "2025-02-24 15:04:05Z"])
def test_parse_at_rejects(text: Any) -> None:
    with pytest.raises(RequestError) as err:
        parse_at(text)
    assert err.value.code == "invalid_at"


def test_parse_check() -> None:
    body = orjson.dumps({"numbers": [{"carrier": "usps", "number": NUM, "x": 1}],
                         "at": "2025-01-01T00:00:00Z", "extra": True})
    queries, when = parse_check(body)
    assert [q.key for q in queries] == [f"usps:{NUM}"] and when == E0
    assert parse_check(b'{"numbers": []}') == ([], None)


@pytest.mark.parametrize("body,code", [
    (b"", "invalid_json"), (b"{", "invalid_json"), (b'{"numbers": "\xff"}', "encoding"),
    (b"[]", "not_an_object"), (b'{"numbers": {}}', "schema"), (b"{}", "schema"),
    (b'{"numbers": [1]}', "schema"), (b'{"numbers": [{"carrier": "usps"}]}', "schema"),
    (b'{"numbers": [{"carrier": "zz", "number": "1"}]}', "unknown_carrier"),
    (b'{"numbers": [{"carrier": "usps", "number": ""}]}', "empty"),
    (b'{"numbers": [], "at": "soon"}', "invalid_at"),
    (orjson.dumps({"numbers": [{"carrier": "usps", "number": NUM}] * 1001}),
     "too_many_numbers"),
    (b" " * (lookup.MAX_BODY_BYTES + 1), "too_large"),
])
def test_parse_check_rejects(body: bytes, code: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_check(body)
    assert err.value.code == code
    assert err.value.status == 400


def test_a_full_batch_is_accepted() -> None:
    queries, _ = parse_check(orjson.dumps(
        {"numbers": [{"carrier": "usps", "number": NUM}] * lookup.MAX_NUMBERS}))
    assert len(queries) == lookup.MAX_NUMBERS


# ---------------------------------------------------------------- a simulated history


def expected(shipments: list[Any], t: int, window: int) -> dict[str, Any]:
    """The contract's definitions, read directly off the simulator's shipments of one number
    (an independent implementation: no detection code)."""
    labels = sorted((s for s in shipments if s.label_id is not None and s.kind != "invalid"),
                    key=lambda s: (s.purchased_at, s.label_id))
    scans = sorted((sc.at, STATUSES.index(sc.status), sc.place[0], "US")
                   for s in shipments for sc in s.scans)
    seen = [sc for sc in scans if sc[0] <= t]

    def owner(ts: int) -> Any:
        before = [lb for lb in labels if lb.purchased_at <= ts]
        return before[-1] if before else None

    holders, ends = [], []
    for lb in labels:
        if lb.purchased_at > t or (lb.voided_at is not None and lb.voided_at <= t):
            continue
        last = max([lb.purchased_at] + [sc[0] for sc in seen if owner(sc[0]) is lb])
        if t - last < window:
            holders.append(lb)
            ends.append(last + window)
    used = [sc[0] for sc in seen if STATUSES[sc[1]] in ACCEPTED_OR_LATER and t - sc[0] < window]
    ends += [u + window for u in used]
    status = "held" if holders else "recently_used" if used else "free"
    return {
        "status": status,
        "holders": [lb.label_id for lb in holders],
        "last_scan": seen[-1] if seen else None,
        "free_after": rfc3339(max(ends)) if ends else None,
    }


def test_simulated_history_agrees_with_the_contract_at_every_boundary() -> None:
    start = datetime(2024, 12, 1, tzinfo=UTC)
    world = simulate(Params(seed=23, labels=1500, days=80, start=start,
                            incident_start=start + timedelta(days=64), incident_share=0.6,
                            void_share=0.05, voided_shipped_share=0.02, settings=S))
    states: dict[str, TrackingState | None] = {}
    for m in world.messages:  # arrival order, as a worker reads them
        event = decode(orjson.dumps(m.value))
        states[event.key], _ = apply(states.get(event.key), event, S)
    by_number: dict[tuple[str, str], list[Any]] = {}
    for s in world.shipments:
        by_number.setdefault((s.carrier, s.number), []).append(s)

    kinds: dict[str, int] = {}
    statuses: dict[str, int] = {}
    rng = random.Random(1)
    for (carrier, number), group in by_number.items():
        for s in group:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        times: set[int] = set()
        for s in group:
            times.update((s.purchased_at - 1, s.purchased_at))  # before/after (re-)issue
            if s.voided_at is not None:
                times.update((s.voided_at - 1, s.voided_at))
            for sc in s.scans:  # the scan itself, and the end of its window
                times.update((sc.at - 1, sc.at, sc.at + W - 1, sc.at + W))
            times.update((s.purchased_at + W - 1, s.purchased_at + W))
        asked = printed(carrier, number, rng) if group[0].kind != "invalid" else number
        q = query(carrier, asked)
        state = states.get(q.key)
        assert state is not None
        for t in sorted(times):
            got = lookup.status(state, q.carrier, q.number, t, S, q.validation)
            if group[0].kind == "invalid":
                assert (got["status"], got["valid"], got["reason"]) == (
                    "invalid", False, group[0].invalid_reason)
                statuses["invalid"] = statuses.get("invalid", 0) + 1
                continue
            want = expected(group, t, W)
            assert got["tracking_number"] == number and got["carrier"] == carrier
            assert got["status"] == want["status"], (number, rfc3339(t), got, want)
            assert [h["label_id"] for h in got["holders"]] == want["holders"], (number, t)
            assert got["free_after"] == want["free_after"], (number, rfc3339(t), got, want)
            scan = want["last_scan"]
            assert got["last_scan"] == (None if scan is None else {
                "status": STATUSES[scan[1]], "occurred_at": rfc3339(scan[0]),
                "postal_code": scan[2], "country": scan[3]}), (number, t)
            statuses[got["status"]] = statuses.get(got["status"], 0) + 1
    # the history has every case the issue names, and every status occurs
    for kind in ("reused", "void", "voided_shipped", "in_house", "invalid", "normal"):
        assert kinds.get(kind, 0) > 0, kinds
    assert all(statuses.get(s, 0) > 50 for s in ("held", "recently_used", "free")), statuses
    assert statuses.get("invalid", 0) > 0, statuses

    # numbers never seen: free; their check digit broken: invalid
    gen = random.Random(2)
    for carrier in ("usps", "ups", "fedex", "dhl"):
        for _ in range(20):
            number = generate(carrier, rng=gen)
            q = query(carrier, number)
            if q.key in states:
                continue
            r = lookup.status(None, carrier, number, E0, S)
            assert (r["status"], r["valid"], r["last_scan"]) == ("free", True, None)
    bad = [s for s in world.shipments if s.kind == "invalid"]
    assert bad and all(lookup.status(None, s.carrier, s.number, E0, S)["status"] == "invalid"
                       for s in bad)


def test_expected_reads_scan_ownership_like_the_contract() -> None:
    """The reference above, on a hand-made case, so that the comparison cannot pass with a
    reference that shares a mistake with the core: a scan after a re-issue does not extend
    the earlier label."""

    class Sh:
        def __init__(self, label_id: str | None, p: int, scans: list[tuple[int, str]],
                     voided: int | None = None) -> None:
            self.label_id, self.purchased_at, self.voided_at, self.kind = (
                label_id, p, voided, "normal")
            self.scans = [type("Sc", (), {"at": a, "status": st, "place": ("10001",)})()
                          for a, st in scans]

    old = Sh("old", 0, [(DAY, "delivered")])
    new = Sh("new", 60 * DAY, [(61 * DAY, "accepted")])
    got = expected([old, new], DAY + W, W)
    assert got["holders"] == ["new"] and got["free_after"] == rfc3339(61 * DAY + W)


# ---------------------------------------------------------------- the circuit breaker


def _incident(incident_id: str, revision: int, status: str, channel: str = "buy_shipping",
              started_at: str = "2025-02-24T10:00:00Z", alerts: int = 12) -> dict:
    return {"incident_id": incident_id, "carrier": "usps", "channel": channel,
            "status": status, "revision": revision, "started_at": started_at,
            "alerts": alerts, "sellers": 4, "labels": alerts}


def test_open_incidents_follow_the_highest_revision_in_any_order() -> None:
    seen = lookup.OpenIncidents()
    assert seen.update(_incident("i1", 2, "resolved"))
    assert not seen.update(_incident("i1", 1, "open"))  # older: ignored
    assert seen.find("usps", "buy_shipping") is None
    assert seen.update(_incident("i2", 1, "open", alerts=15))
    assert seen.find("usps", "buy_shipping") == {
        "incident_id": "i2", "started_at": "2025-02-24T10:00:00Z", "alerts": 15, "sellers": 4}
    assert seen.find("usps", "veeqo") is None and seen.find("ups", "buy_shipping") is None
    assert seen.counts() == {("usps", "buy_shipping"): 1}
    assert seen.update(_incident("i2", 2, "retracted"))
    assert seen.find("usps", "buy_shipping") is None
    assert seen.counts() == {("usps", "buy_shipping"): 0}  # the gauge goes back to 0


def test_the_latest_started_open_incident_of_a_group_is_the_answer() -> None:
    seen = lookup.OpenIncidents()
    seen.update(_incident("old", 1, "open", started_at="2025-02-24T10:00:00Z"))
    seen.update(_incident("new", 1, "open", started_at="2025-02-25T10:00:00Z"))
    assert seen.find("usps", "buy_shipping")["incident_id"] == "new"  # type: ignore[index]


def test_with_incident_adds_the_advice_only_for_a_channel_with_an_open_incident() -> None:
    seen = lookup.OpenIncidents()
    seen.update(_incident("i1", 1, "open"))
    answer = {"status": "free"}
    asked = lookup.query("usps", "9400 1112 0620 6406 2607 87", channel="buy_shipping")
    got = lookup.with_incident(answer, seen, asked)
    assert got["status"] == "free" and got["advice"] == lookup.HOLD_LABEL_SALES
    assert got["incident"]["incident_id"] == "i1"
    for other in (lookup.query("usps", "9400 1112 0620 6406 2607 87", channel="veeqo"),
                  lookup.query("usps", "9400 1112 0620 6406 2607 87")):
        assert lookup.with_incident(answer, seen, other) == answer
    assert lookup.with_incident(answer, None, asked) == answer


def test_a_channel_that_is_not_a_string_is_a_400() -> None:
    body = orjson.dumps({"numbers": [{"carrier": "usps", "number": "9400 1112 0620 6406 2607 87",
                                      "channel": 7}]})
    with pytest.raises(lookup.RequestError) as caught:
        lookup.parse_check(body)
    assert caught.value.code == "schema" and "channel" in caught.value.message
    queries, _ = lookup.parse_check(orjson.dumps({"numbers": [
        {"carrier": "usps", "number": "9400 1112 0620 6406 2607 87", "channel": "veeqo"}]}))
    assert queries[0].channel == "veeqo"
