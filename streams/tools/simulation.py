"""Realistic label and carrier-scan traffic, with the alerts the contract demands of it.

`simulate(params)` builds a seeded world: sellers buying labels through several channels
(mostly USPS IMpb numbers, then UPS, FedEx, DHL), the platform's own in-house shipments
(carrier scans only, no label events), and for every package a carrier scan history with
realistic delays and postal codes (acceptance at the seller's ZIP, hubs, out for delivery and
delivery at the buyer's ZIP). Noise the detector must shrug off: voids before shipping,
reprints (same label_id again), producer retries (same event_id again), label events that
arrive after their first scans, carrier clocks a few hours ahead of the label platform.

Injected faults, each recorded with the alerts it must raise (`ground_truth`, computed from the
simulator's own knowledge and the contract's rule definitions, never by running the detector):
- the incident: inside [incident_start, incident_start + incident_days) the label platform
  re-issues USPS numbers first used about `reuse_age_days` earlier by another seller's label
  (duplicate_tracking, critical, while that label still holds the number, and
  previously_used) or by an in-house shipment (previously_used); only through
  `incident_channel` when given (the February 2025 pattern: one carrier and channel), and
  `incident_labels` more such labels, of sellers drawn evenly (many sellers), make it an
  incident of the response (with no earlier package at hand to take a number from, a
  warehouse shipment of about `reuse_age_days` earlier is the donor);
- labels with a wrong check digit (invalid_tracking);
- labels voided and shipped anyway (voided_label_scanned);
- packages delivered at another ZIP region than the label's ship_to (destination_mismatch).

`ground_truth` lists the expected alerts; `incidents` and `actions` the expected response
records (streams.core.response.derive over those alerts, built from the simulator's own
label facts, at the watermark of the greatest event time).

Messages are returned in arrival order (what a consumer would read), which is not event-time
order. Valid numbers come from streams.core.carriers (check digits computed there, not here).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from streams.core.settings import Settings
from streams.tools.progress import Progress

HOUR = 3600
DAY = 86400
DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)

# Real ZIP codes, one per 3-digit prefix, with city, state and UTC offset (standard time).
PLACES: tuple[tuple[str, str, str, int], ...] = (
    ("10001", "New York", "NY", -5), ("11201", "Brooklyn", "NY", -5),
    ("07302", "Jersey City", "NJ", -5), ("19103", "Philadelphia", "PA", -5),
    ("02108", "Boston", "MA", -5), ("20001", "Washington", "DC", -5),
    ("21201", "Baltimore", "MD", -5), ("30303", "Atlanta", "GA", -5),
    ("33130", "Miami", "FL", -5), ("32801", "Orlando", "FL", -5),
    ("28202", "Charlotte", "NC", -5), ("27601", "Raleigh", "NC", -5),
    ("37203", "Nashville", "TN", -6), ("38103", "Memphis", "TN", -6),
    ("40202", "Louisville", "KY", -5), ("43215", "Columbus", "OH", -5),
    ("44113", "Cleveland", "OH", -5), ("48226", "Detroit", "MI", -5),
    ("46204", "Indianapolis", "IN", -5), ("60601", "Chicago", "IL", -6),
    ("53202", "Milwaukee", "WI", -6), ("55401", "Minneapolis", "MN", -6),
    ("63101", "St. Louis", "MO", -6), ("64105", "Kansas City", "MO", -6),
    ("68102", "Omaha", "NE", -6), ("70112", "New Orleans", "LA", -6),
    ("73102", "Oklahoma City", "OK", -6), ("75201", "Dallas", "TX", -6),
    ("77002", "Houston", "TX", -6), ("78701", "Austin", "TX", -6),
    ("78205", "San Antonio", "TX", -6), ("80202", "Denver", "CO", -7),
    ("84101", "Salt Lake City", "UT", -7), ("85004", "Phoenix", "AZ", -7),
    ("87102", "Albuquerque", "NM", -7), ("89101", "Las Vegas", "NV", -8),
    ("90012", "Los Angeles", "CA", -8), ("92101", "San Diego", "CA", -8),
    ("94103", "San Francisco", "CA", -8), ("95814", "Sacramento", "CA", -8),
    ("97204", "Portland", "OR", -8), ("98101", "Seattle", "WA", -8),
    ("99501", "Anchorage", "AK", -9), ("96813", "Honolulu", "HI", -10),
    ("83702", "Boise", "ID", -7), ("59601", "Helena", "MT", -7),
    ("57104", "Sioux Falls", "SD", -6), ("50309", "Des Moines", "IA", -6),
    ("72201", "Little Rock", "AR", -6), ("35203", "Birmingham", "AL", -6),
    ("39201", "Jackson", "MS", -6), ("29201", "Columbia", "SC", -5),
    ("23219", "Richmond", "VA", -5), ("15222", "Pittsburgh", "PA", -5),
    ("14202", "Buffalo", "NY", -5), ("06103", "Hartford", "CT", -5),
    ("04101", "Portland", "ME", -5), ("03101", "Manchester", "NH", -5),
)  # fmt: skip

# Sort hubs and network distribution centres, by carrier.
HUBS: dict[str, tuple[tuple[str, str, str, int], ...]] = {
    "usps": (
        ("07097", "Jersey City", "NJ", -5), ("60808", "Forest Park", "IL", -6),
        ("75261", "Dallas", "TX", -6), ("30320", "Atlanta", "GA", -5),
        ("91730", "Rancho Cucamonga", "CA", -8), ("80249", "Denver", "CO", -7),
    ),
    "ups": (("40209", "Louisville", "KY", -5), ("60638", "Chicago", "IL", -6)),
    "fedex": (("38118", "Memphis", "TN", -6), ("46241", "Indianapolis", "IN", -5)),
    "dhl": (("41048", "Hebron", "KY", -5),),
}  # fmt: skip

# carrier -> share of labels, services (name, share, transit days low/high, cost low/high)
CARRIERS: dict[str, tuple[float, tuple[tuple[str, float, int, int, float, float], ...]]] = {
    "usps": (0.56, (
        ("USPS Ground Advantage", 0.68, 2, 5, 4.35, 9.80),
        ("USPS Priority Mail", 0.27, 1, 3, 8.45, 17.90),
        ("USPS Priority Mail Express", 0.05, 1, 2, 28.75, 44.50),
    )),
    "ups": (0.20, (
        ("UPS Ground", 0.80, 2, 5, 9.20, 18.40),
        ("UPS 2nd Day Air", 0.15, 2, 2, 18.90, 32.00),
        ("UPS Next Day Air", 0.05, 1, 1, 31.50, 58.00),
    )),
    "fedex": (0.17, (
        ("FedEx Home Delivery", 0.75, 2, 5, 9.10, 17.60),
        ("FedEx 2Day", 0.20, 2, 2, 19.40, 33.20),
        ("FedEx Priority Overnight", 0.05, 1, 1, 34.00, 61.00),
    )),
    "dhl": (0.07, (("DHL Express Worldwide", 1.0, 1, 3, 26.00, 64.00),)),
}  # fmt: skip

CHANNELS = (("buy_shipping", 0.55), ("veeqo", 0.2), ("shipstation", 0.12),
            ("shipping_api", 0.08), ("easyship", 0.05))  # fmt: skip

# status -> carrier event code, per carrier (the carriers' own vocabularies, abridged)
CODES: dict[str, dict[str, str]] = {
    "usps": {"pre_transit": "GX", "accepted": "OA", "in_transit": "10",
             "out_for_delivery": "OF", "delivered": "01", "delivery_attempted": "02",
             "exception": "07", "returned": "09"},
    "ups": {"pre_transit": "MP", "accepted": "OR", "in_transit": "AR",
            "out_for_delivery": "OT", "delivered": "KB", "delivery_attempted": "48",
            "exception": "X", "returned": "RS"},
    "fedex": {"pre_transit": "OC", "accepted": "PU", "in_transit": "AR",
              "out_for_delivery": "OD", "delivered": "DL", "delivery_attempted": "DE",
              "exception": "SE", "returned": "RS"},
    "dhl": {"pre_transit": "PU", "accepted": "PL", "in_transit": "AF",
            "out_for_delivery": "WC", "delivered": "OK", "delivery_attempted": "NH",
            "exception": "MS", "returned": "RT"},
}  # fmt: skip

ACCEPTED_OR_LATER = frozenset(
    {"accepted", "in_transit", "out_for_delivery", "delivered", "delivery_attempted",
     "returned", "exception"}
)  # fmt: skip
DESTINATION = frozenset({"delivered", "out_for_delivery", "delivery_attempted"})


@dataclass(slots=True)
class Params:
    seed: int = 1
    labels: int = 2000
    days: float = 90.0
    start: datetime = DEFAULT_START
    sellers: int | None = None  # default: one per 25 labels, at least 8
    in_house_share: float = 0.2  # in-house shipments per label
    incident_start: datetime | None = None
    incident_days: float = 3.0
    incident_share: float = 0.3  # of USPS labels bought in the window
    reuse_age_days: float = 60.0
    incident_channel: str | None = None  # re-issue only through this channel (None: any)
    incident_labels: int = 0  # more re-issued labels in the window, of sellers drawn evenly
    invalid_share: float = 0.005
    void_share: float = 0.03
    voided_shipped_share: float = 0.003
    mismatch_share: float = 0.003
    reprint_share: float = 0.02
    retry_share: float = 0.01
    late_label_share: float = 0.01
    skew_share: float = 0.01
    malformed: int = 0  # messages that must be dead-lettered
    settings: Settings = field(default_factory=Settings)


@dataclass(slots=True)
class Seller:
    seller_id: str
    home: tuple[str, str, str, int]
    channel_weights: tuple[float, ...]
    accounts: dict[str, str]  # carrier -> shipper account (UPS, FedEx Ground)


@dataclass(slots=True)
class Scan:
    status: str
    at: int  # epoch seconds
    place: tuple[str, str, str, int]


@dataclass(slots=True)
class Shipment:
    """One package: a label bought by a seller, or an in-house shipment (label_id None)."""

    carrier: str
    service: str
    number: str  # canonical
    purchased_at: int
    ship_to: tuple[str, str, str, int]
    ship_from: tuple[str, str, str, int]
    ship_to_code: str = ""  # the postal code on the label: ZIP or ZIP+4
    label_id: str | None = None
    seller: Seller | None = None
    order_id: str | None = None
    channel: str | None = None
    cost: str | None = None
    printed: str = ""  # the number as on the label
    voided_at: int | None = None
    scans: list[Scan] = field(default_factory=list)
    kind: str = "normal"  # normal|invalid|void|voided_shipped|mismatch|reused|in_house
    donor: Shipment | None = None
    reused: bool = False  # its number was re-issued later (donors are used once)
    invalid_reason: str | None = None
    skewed: bool = False  # the carrier's acceptance clock runs ahead of the label platform

    def last_activity(self, until: int) -> int:
        times = [self.purchased_at, *(s.at for s in self.scans if s.at <= until)]
        return max(t for t in times if t <= until)

    def holds(self, t: int, window: int) -> bool:
        """The contract's definition of a label holding its number at time t."""
        if self.label_id is None or self.purchased_at > t:
            return False
        if self.voided_at is not None and self.voided_at <= t:
            return False
        return self.last_activity(t) > t - window


@dataclass(slots=True)
class Message:
    topic: str  # labels | scans
    arrival: float  # epoch seconds, decides the order
    key: str | None
    event_time: int
    value: dict[str, Any] | bytes  # bytes: a deliberately malformed message


@dataclass(slots=True)
class World:
    params: Params
    shipments: list[Shipment]
    messages: list[Message]  # arrival order
    ground_truth: list[dict[str, Any]]
    malformed: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)  # expected, no detected_at
    actions: list[dict[str, Any]] = field(default_factory=list)


# Structure of the numbers printed, per carrier and service: (format id, leading fields).
# USPS IMpb: application identifier + service type code + the mailer's Mailer ID + serial
# (94 = online postage with a 6-digit MID, 92 = commercial with a 9-digit MID starting 9,
# 93 = commercial with a 6-digit MID); UPS 1Z: shipper account + service code + package;
# FedEx Ground 15: shipper id + package. Check digits come from the carrier definitions.
USPS_SERVICE_TYPES = {
    "USPS Ground Advantage": "001",
    "USPS Priority Mail": "055",
    "USPS Priority Mail Express": "701",
}
UPS_SERVICE_CODES = {"UPS Ground": "03", "UPS 2nd Day Air": "02", "UPS Next Day Air": "01"}
USPS_LENGTH = 22


class Numbers:
    """Unique tracking numbers with real structure; check digits computed by the carrier
    definitions (streams.core.carriers), and checked back with streams.core.validation."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[tuple[str, str]] = set()

    def _digits(self, count: int) -> str:
        return "".join(self.rng.choices("0123456789", k=count))

    def mailer_id(self, application_identifier: str) -> str:
        if application_identifier == "92":
            return "9" + self._digits(8)
        return str(self.rng.randint(0, 8)) + self._digits(5)

    def account(self, carrier: str) -> str:
        """A shipper account as it appears inside the carrier's numbers."""
        if carrier == "ups":
            return "".join(self.rng.choices("0123456789ABCDEFGHJKLMNPRSTUVWXYZ", k=6))
        return self._digits(7)

    def _body(self, carrier: str, service: str, mailer: tuple[str, str], account: str
              ) -> tuple[str, str]:  # fmt: skip
        if carrier == "usps":
            ai, mid = mailer
            head = ai + USPS_SERVICE_TYPES[service] + mid
            return "usps_impb", head + self._digits(USPS_LENGTH - 1 - len(head))
        if carrier == "ups":
            return "ups_1z", "1Z" + account + UPS_SERVICE_CODES[service] + self._digits(7)
        if carrier == "fedex" and service == "FedEx Home Delivery":
            return "fedex_ground_15", account + self._digits(7)
        if carrier == "fedex":
            return "fedex_express_12", self._digits(11)
        return "dhl_express", self._digits(9)

    def _complete(self, carrier: str, fmt_id: str, body: str) -> str:
        from streams.core.carriers import carrier as definition

        fmt = definition(carrier).format(fmt_id)  # type: ignore[union-attr]
        match = fmt.fullmatch(body + "0")
        if match is None or fmt.check is None:
            raise ValueError(f"{carrier}/{fmt_id}: {body!r} does not fit the format")
        return body + fmt.check(match["serial"])

    def valid(self, carrier: str, service: str, mailer: tuple[str, str], account: str) -> str:
        from streams.core.validation import validate

        while True:
            fmt_id, body = self._body(carrier, service, mailer, account)
            number = self._complete(carrier, fmt_id, body)
            if (carrier, number) in self.used:
                continue
            check = validate(number, carrier)
            if not (check.valid and check.number == number):
                raise AssertionError(f"generated {carrier} number {number} fails: {check}")
            self.used.add((carrier, number))
            return number

    def bad_check_digit(self, carrier: str, service: str, mailer: tuple[str, str], account: str
                        ) -> tuple[str, str]:  # fmt: skip
        """A number of the right shape whose check digit is wrong; (number, reason)."""
        from streams.core.validation import validate

        while True:
            good = self.valid(carrier, service, mailer, account)
            number = good[:-1] + str((int(good[-1]) + self.rng.randint(1, 9)) % 10)
            check = validate(number, carrier)
            if not check.valid and (carrier, check.number) not in self.used:
                self.used.add((carrier, check.number))
                return check.number, check.reason or "check_digit"


def _weighted(rng: random.Random, items: tuple[tuple[Any, float], ...]) -> Any:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items])[0]


def _rfc3339(epoch: float, offset_hours: int = 0) -> str:
    zone = UTC if offset_hours == 0 else timezone(timedelta(hours=offset_hours))
    text = datetime.fromtimestamp(int(epoch), zone).isoformat()
    return text.replace("+00:00", "Z")


class _Builder:
    def __init__(self, params: Params) -> None:
        self.p = params
        self.rng = random.Random(params.seed)
        self.numbers = Numbers(random.Random(params.seed ^ 0x5EED))
        self.start = int(params.start.timestamp())
        self.span = int(params.days * DAY)
        self.window = params.settings.reuse_window_s
        self.skew = params.settings.clock_skew_s
        self.shipments: list[Shipment] = []
        # USPS Mailer IDs: the label platforms' (per channel) and the in-house warehouses'
        self.mailers = {
            name: (ai, self.numbers.mailer_id(ai))
            for name, ai in (("buy_shipping", "94"), ("veeqo", "92"), ("shipstation", "93"),
                             ("shipping_api", "94"), ("easyship", "92"), ("in_house", "92"))
        }  # fmt: skip
        self.messages: list[Message] = []
        self._ids = 0

    # ------------------------------------------------------------------ identities

    def _id(self, prefix: str, bits: int = 64) -> str:
        return f"{prefix}{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _seller_id(self) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return "A" + "".join(self.rng.choices(alphabet, k=12))

    def _order_id(self) -> str:
        r = self.rng
        return f"{r.randint(111, 114)}-{r.randint(0, 9999999):07d}-{r.randint(0, 9999999):07d}"

    def _sellers(self) -> list[Seller]:
        count = self.p.sellers or max(8, self.p.labels // 25)
        sellers = []
        for _ in range(count):
            weights = tuple(w * self.rng.uniform(0.2, 3.0) for _, w in CHANNELS)
            accounts = {c: self.numbers.account(c) for c in ("ups", "fedex")}
            sellers.append(Seller(self._seller_id(), self.rng.choice(PLACES), weights, accounts))
        return sellers

    # ------------------------------------------------------------------ time

    def _business_time(self, offset: int) -> int:
        """A purchase time: more on weekdays and in local business hours."""
        while True:
            t = self.start + self.rng.randrange(self.span)
            local = datetime.fromtimestamp(t + offset * HOUR, UTC)
            hour_weight = 1.0 if 8 <= local.hour < 20 else 0.15
            day_weight = 1.0 if local.weekday() < 5 else 0.55
            if self.rng.random() < hour_weight * day_weight:
                return t

    @staticmethod
    def _local_day_at(t: int, days: int, hour: float, offset: int) -> int:
        """Epoch of `hour` local time, `days` local days after the local day of t."""
        local_day = (t + offset * HOUR) // DAY
        return int((local_day + days) * DAY + hour * HOUR - offset * HOUR)

    # ------------------------------------------------------------------ scans

    def _journey(self, s: Shipment, accepted_at: int, deliver_to: tuple | None = None) -> None:
        """Acceptance at the origin, hubs, out for delivery and delivery at the destination."""
        rng, carrier = self.rng, s.carrier
        lo, hi = next((lo, hi) for name, _, lo, hi, _, _ in _services(carrier) if name == s.service)
        dest = deliver_to or s.ship_to
        if rng.random() < 0.6:
            s.scans.append(Scan("pre_transit", s.purchased_at + rng.randint(30, 1200), s.ship_from))
        s.scans.append(Scan("accepted", accepted_at, s.ship_from))
        transit = rng.randint(lo, hi)
        ofd = self._local_day_at(accepted_at, transit, rng.uniform(7.0, 9.5), dest[3])
        while ofd < accepted_at + 8 * HOUR:
            transit += 1
            ofd = self._local_day_at(accepted_at, transit, rng.uniform(7.0, 9.5), dest[3])
        hubs = HUBS[carrier]
        stops = rng.randint(1, 3)
        for i in range(stops):
            at = accepted_at + (ofd - accepted_at) * (i + 1) // (stops + 1)
            at += rng.randint(-1800, 1800)
            s.scans.append(Scan("in_transit", at, rng.choice(hubs)))
        if rng.random() < 0.01:  # weather or sort delay at a hub: one day late
            s.scans.append(
                Scan("exception", s.scans[-1].at + rng.randint(HOUR, 4 * HOUR), s.scans[-1].place)
            )
            ofd += DAY
        delivered = ofd + rng.randint(int(1.5 * HOUR), 9 * HOUR)
        s.scans.append(Scan("out_for_delivery", ofd, dest))
        if rng.random() < 0.03:  # nobody home: notice left, delivered the next day
            s.scans.append(Scan("delivery_attempted", delivered, dest))
            if rng.random() < 0.15:  # never collected: back to the sender
                back = delivered + rng.randint(5, 9) * DAY
                s.scans.append(Scan("in_transit", back - 2 * DAY, rng.choice(hubs)))
                s.scans.append(Scan("returned", back, s.ship_from))
                return
            s.scans.append(Scan("out_for_delivery", ofd + DAY, dest))
            delivered += DAY
        s.scans.append(Scan("delivered", delivered, dest))

    # ------------------------------------------------------------------ shipments

    def _ship_to(self) -> tuple[tuple[str, str, str, int], str]:
        place = self.rng.choice(PLACES)
        code = place[0]
        if self.rng.random() < 0.3:
            code += f"-{self.rng.randint(1, 9999):04d}"
        return place, code

    def _in_house(self, t: int) -> Shipment:
        place, code = self._ship_to()
        number = self.numbers.valid("usps", "USPS Ground Advantage", self.mailers["in_house"], "")
        s = Shipment("usps", "USPS Ground Advantage", number, t, place, self.rng.choice(PLACES),
                     code, kind="in_house")  # fmt: skip
        self._journey(s, t + self.rng.randint(HOUR, 12 * HOUR))
        return s

    def _label(self, t: int, seller: Seller, donors: list[Shipment], times: list[int],
               burst: bool = False) -> Shipment:
        """A label bought at t; `burst`: one of the incident's extra labels (USPS, through
        the incident channel, always given a used number)."""
        rng, p = self.rng, self.p
        if burst:
            carrier = "usps"
        else:
            carrier = _weighted(rng, tuple((c, share) for c, (share, _) in CARRIERS.items()))
        offer = _weighted(rng, tuple((sv, sv[1]) for sv in _services(carrier)))
        service, low, high = offer[0], offer[4], offer[5]
        place, code = self._ship_to()
        s = Shipment(
            carrier, service, "", t, place, seller.home, code,
            label_id=self._id("lbl-", 64), seller=seller, order_id=self._order_id(),
            channel=(p.incident_channel or "buy_shipping") if burst
            else rng.choices([c for c, _ in CHANNELS], weights=seller.channel_weights)[0],
            cost=f"{rng.uniform(low, high):.2f}",
        )  # fmt: skip
        incident = burst or (
            p.incident_start is not None
            and carrier == "usps"
            and self._incident[0] <= t < self._incident[1]
            and (p.incident_channel is None or s.channel == p.incident_channel)
            and rng.random() < p.incident_share
        )
        donor = self._donor(t, seller, donors, times, burst) if incident else None
        assert s.channel is not None
        issuer = (carrier, service, self.mailers[s.channel], seller.accounts.get(carrier, ""))
        if donor is not None:
            s.kind, s.number, s.donor, donor.reused = "reused", donor.number, donor, True
        else:
            r = rng.random()
            for kind, share in (("invalid", p.invalid_share), ("void", p.void_share),
                                ("voided_shipped", p.voided_shipped_share),
                                ("mismatch", p.mismatch_share)):  # fmt: skip
                if r < share:
                    s.kind = kind
                    break
                r -= share
            if s.kind == "invalid":
                s.number, s.invalid_reason = self.numbers.bad_check_digit(*issuer)
            else:
                s.number = self.numbers.valid(*issuer)
        accepted = t + rng.randint(2 * HOUR, 30 * HOUR)
        if s.kind == "invalid":
            pass  # the carrier never sees a package under a number that does not exist
        elif s.kind == "void":
            s.voided_at = t + rng.randint(600, 48 * HOUR)
            if rng.random() < 0.5:
                s.scans.append(Scan("pre_transit", t + rng.randint(30, 500), s.ship_from))
        elif s.kind == "voided_shipped":
            s.voided_at = t + rng.randint(HOUR, 8 * HOUR)
            self._journey(s, s.voided_at + rng.randint(4 * HOUR, 30 * HOUR))
        elif s.kind == "mismatch":
            elsewhere = rng.choice([pl for pl in PLACES if pl[0][:3] != place[0][:3]])
            self._journey(s, accepted, deliver_to=elsewhere)
        else:
            if s.kind == "normal" and rng.random() < p.skew_share:
                s.skewed, accepted = True, t - rng.randint(HOUR, 6 * HOUR)
            self._journey(s, accepted)
        return s

    def _donor(
        self, t: int, seller: Seller, donors: list[Shipment], times: list[int],
        make: bool = False,
    ) -> Shipment | None:
        """A delivered USPS shipment of another seller (or in-house) about reuse_age_days old,
        whose facts sit clear of every rule boundary, so the expected alerts are certain.
        `make`: when there is none, a new in-house shipment of that age is the donor."""
        target = t - int(self.p.reuse_age_days * DAY)
        lo = bisect.bisect_left(times, target - 3 * DAY)
        hi = bisect.bisect_right(times, target + 3 * DAY)
        pool = [
            d for d in donors[lo:hi]
            if not d.reused and (d.seller is None or d.seller.seller_id != seller.seller_id)
            and self._clear(d, t)
        ]  # fmt: skip
        if pool:
            return self.rng.choice(pool)
        for _ in range(20 if make else 0):
            made = self._in_house(target + self.rng.randint(-2 * DAY, 2 * DAY))
            if self._clear(made, t):
                made.reused = True
                self.shipments.append(made)
                return made
        return None

    def _clear(self, d: Shipment, t: int) -> bool:
        edges = (t - self.window, t - self.skew)
        if any(s.at > t - HOUR for s in d.scans) or d.purchased_at > t - HOUR:
            return False  # its scans would belong to the new label
        times = [s.at for s in d.scans if s.status in ACCEPTED_OR_LATER]
        times.append(d.last_activity(t))
        return all(abs(x - e) > HOUR for x in times for e in edges)

    # ------------------------------------------------------------------ the world

    def build(self, progress: Progress | None = None) -> World:
        """The world; `progress` (if any) advances once per shipment planned and emitted."""
        p, rng = self.p, self.rng
        if p.incident_start is not None:
            begin = int(p.incident_start.timestamp())
            self._incident = (begin, begin + int(p.incident_days * DAY))
        sellers = self._sellers()
        weights = [1 / (i + 1) ** 1.1 for i in range(len(sellers))]  # a few big sellers
        plans: list[tuple[int, Seller | None, bool]] = []
        for _ in range(p.labels):
            seller = rng.choices(sellers, weights=weights)[0]
            plans.append((self._business_time(seller.home[3]), seller, False))
        for _ in range(int(p.labels * p.in_house_share)):
            # warehouses run 24/7
            plans.append((self.start + rng.randrange(self.span), None, False))
        if p.incident_start is not None:
            begin, end = self._incident
            for _ in range(p.incident_labels):  # the incident's labels: many sellers
                plans.append((begin + rng.randrange(max(1, end - begin)), rng.choice(sellers),
                              True))
        plans.sort(key=lambda plan: plan[0])
        if progress is not None:
            progress.total = 2 * len(plans)
        donors: list[Shipment] = []
        times: list[int] = []
        for t, seller, burst in plans:
            s = (self._in_house(t) if seller is None
                 else self._label(t, seller, donors, times, burst))
            self.shipments.append(s)
            if (
                s.carrier == "usps"
                and s.kind in ("normal", "in_house")
                and any(sc.status == "delivered" for sc in s.scans)
            ):
                donors.append(s)
                times.append(t)
            if progress is not None:
                progress.update()
        for s in self.shipments:
            self._emit(s)
            if progress is not None:
                progress.update()
        self._noise()
        self.messages.sort(key=lambda m: m.arrival)
        truth = self._ground_truth()
        world = World(p, self.shipments, self.messages, truth, self._malformed())
        world.incidents, world.actions = self._response(truth)
        return world

    _incident: tuple[int, int] = (0, 0)

    # ------------------------------------------------------------------ messages

    def _label_value(self, s: Shipment) -> dict[str, Any]:
        from streams.core.numbers import printed

        assert s.seller is not None and s.label_id is not None
        number = s.number
        if s.kind != "invalid" and self.rng.random() < 0.3:
            number = printed(s.carrier, s.number, self.rng)
        return {
            "type": "label.purchased",
            "schema_version": 1,
            "event_id": self._id("evt-", 96),
            "label_id": s.label_id,
            "tracking_number": number,
            "carrier": s.carrier,
            "service": s.service,
            "seller_id": s.seller.seller_id,
            "order_id": s.order_id,
            "channel": s.channel,
            "ship_from": {"postal_code": s.ship_from[0], "country": "US"},
            "ship_to": {"postal_code": s.ship_to_code, "country": "US"},
            "purchased_at": _rfc3339(s.purchased_at),
            "ship_by": _rfc3339(self._local_day_at(s.purchased_at, 1, 23.99, s.ship_from[3])),
            "cost": {"amount": s.cost, "currency": "USD"},
        }

    def _scan_number(self, s: Shipment, scan: Scan) -> str:
        from streams.core.validation import canonical

        r = self.rng.random()
        if s.carrier == "usps" and r < 0.3:  # barcode data: 420 + destination ZIP + number
            routed = "420" + s.ship_to[0] + s.number
            if canonical(routed, "usps") == s.number:
                return routed
        if r > 0.97:
            return s.number.lower()
        return s.number

    def _emit(self, s: Shipment) -> None:
        rng = self.rng
        first_scan_arrival = None
        for scan in sorted(s.scans, key=lambda sc: sc.at):
            arrival = scan.at + rng.uniform(60, 2 * HOUR)
            if rng.random() < 0.02:  # a carrier feed that catches up a day later
                arrival += rng.uniform(6 * HOUR, 48 * HOUR)
            if first_scan_arrival is None and scan.status in ACCEPTED_OR_LATER:
                first_scan_arrival = arrival
            offset = scan.place[3] if rng.random() < 0.25 else 0
            value = {
                "type": "carrier.scan",
                "schema_version": 1,
                "event_id": self._id("scn-", 96),
                "tracking_number": self._scan_number(s, scan),
                "carrier": s.carrier,
                "status": scan.status,
                "code": CODES[s.carrier][scan.status],
                "occurred_at": _rfc3339(scan.at, offset),
                "location": {"postal_code": scan.place[0], "city": scan.place[1],
                             "state": scan.place[2], "country": "US"},
            }  # fmt: skip
            key = value["tracking_number"]
            self.messages.append(Message("scans", arrival, key, scan.at, value))
        if s.label_id is None:
            return
        value = self._label_value(s)
        key = None if s.channel == "shipping_api" else s.order_id  # some producers send no key
        arrival = s.purchased_at + rng.uniform(0.1, 3)
        if first_scan_arrival is not None and rng.random() < self.p.late_label_share:
            arrival = first_scan_arrival + rng.uniform(HOUR, 6 * HOUR)  # label feed outage
        self.messages.append(Message("labels", arrival, key, s.purchased_at, value))
        if rng.random() < self.p.reprint_share:  # printer jam: the same label bought once
            reprint = {**value, "event_id": self._id("evt-", 96)}
            again = arrival + rng.uniform(300, 3 * HOUR)
            self.messages.append(Message("labels", again, key, s.purchased_at, reprint))
        if s.voided_at is not None:
            void = {
                "type": "label.voided",
                "schema_version": 1,
                "event_id": self._id("evt-", 96),
                "label_id": s.label_id,
                "tracking_number": value["tracking_number"],
                "carrier": s.carrier,
                "voided_at": _rfc3339(s.voided_at),
            }
            self.messages.append(
                Message("labels", s.voided_at + rng.uniform(0.1, 3), key, s.voided_at, void)
            )

    def _noise(self) -> None:
        """Producer retries: the same event (same event_id) delivered again, a bit later."""
        retries = [
            Message(m.topic, m.arrival + self.rng.uniform(0.05, 30), m.key, m.event_time, m.value)
            for m in self.messages
            if self.rng.random() < self.p.retry_share
        ]
        self.messages.extend(retries)

    def _malformed(self) -> int:
        """`malformed` messages that must end up dead-lettered, one of each contract code."""
        count = self.p.malformed
        samples: list[tuple[str, bytes]] = [
            ("labels", b'{"type": "label.purchased", "event_id": "evt-truncated"'),
            ("scans", b'["carrier.scan", "not an object"]'),
            ("labels", b'{"type": "label.printed", "schema_version": 1, "event_id": "x"}'),
            ("scans", b'{"type": "carrier.scan", "schema_version": 1, "event_id": "x"}'),
            ("labels", b'{"type": "label.voided", "note": "caf\xe9"}'),
        ]
        for i in range(count):
            topic, value = samples[i % len(samples)]
            arrival = self.start + self.rng.randrange(self.span)
            self.messages.append(Message(topic, arrival, None, int(arrival), value))
        self.messages.sort(key=lambda m: m.arrival)
        return count

    # ------------------------------------------------------------------ expectations

    def _ground_truth(self) -> list[dict[str, Any]]:
        truth: list[dict[str, Any]] = []

        def expect(s: Shipment, rule: str, severity: str) -> None:
            truth.append({"rule": rule, "tracking_number": s.number, "carrier": s.carrier,
                          "label_id": s.label_id, "severity": severity})  # fmt: skip

        for s in self.shipments:
            if s.kind == "invalid":
                expect(s, "invalid_tracking", "warning")
            elif s.kind == "voided_shipped":
                expect(s, "voided_label_scanned", "warning")
            elif s.kind == "mismatch":
                expect(s, "destination_mismatch", "warning")
            elif s.kind == "reused" and s.donor is not None:
                d, t = s.donor, s.purchased_at
                if d.holds(t, self.window):
                    assert d.seller is not None and s.seller is not None
                    other = d.seller.seller_id != s.seller.seller_id
                    expect(s, "duplicate_tracking", "critical" if other else "warning")
                if any(
                    sc.status in ACCEPTED_OR_LATER and t - self.window < sc.at < t - self.skew
                    for sc in d.scans
                ):
                    expect(s, "previously_used", "critical")
        return truth

    def _response(self, truth: list[dict[str, Any]],
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The incidents and actions the expected alerts must give: each alert rebuilt from
        the simulator's own facts (the label it is about), then the contract's definitions
        (streams.core.response.derive) at the greatest event time of the messages."""
        from streams.core.detection import ACTIONS, alert_id
        from streams.core.response import derive

        labels = {s.label_id: s for s in self.shipments if s.label_id is not None}
        alerts = []
        for g in truth:
            s = labels[g["label_id"]]
            assert s.seller is not None
            purchased = _rfc3339(s.purchased_at)
            alerts.append({
                "alert_id": alert_id(g["rule"], f"{s.carrier}:{s.number}", g["label_id"]),
                "rule": g["rule"], "severity": g["severity"], "label_id": g["label_id"],
                "seller_id": s.seller.seller_id, "order_id": s.order_id,
                "tracking_number": s.number, "carrier": s.carrier, "event_time": purchased,
                "labels": [{"label_id": s.label_id, "seller_id": s.seller.seller_id,
                            "order_id": s.order_id, "channel": s.channel,
                            "purchased_at": purchased,
                            "cost": {"amount": s.cost, "currency": "USD"}}],
                "actions": list(ACTIONS[g["rule"]][g["severity"]]),
                "status": "open", "revision": 1,
            })  # fmt: skip
        watermark = max((m.event_time for m in self.messages if not isinstance(m.value, bytes)),
                        default=0)
        return derive(alerts, watermark, self.p.settings)


def _services(carrier: str) -> tuple[tuple[str, float, int, int, float, float], ...]:
    return CARRIERS[carrier][1]


def simulate(params: Params, progress: Progress | None = None) -> World:
    return _Builder(params).build(progress)


def serialize(value: dict[str, Any] | bytes) -> bytes:
    import orjson

    return value if isinstance(value, bytes) else orjson.dumps(value)


def lines(messages: list[Message], topic: str | None = None) -> Iterator[bytes]:
    for m in messages:
        if topic is None or m.topic == topic:
            yield serialize(m.value) + b"\n"
