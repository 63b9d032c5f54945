"""The response to alerts: incidents and per-order actions (contract, "Incidents and actions").
Pure, deterministic, event time only (no Kafka, no wall clock).

    result = step(get, item, settings)      # item: an alert revision (dict) or a Watermark
    result = step_many(get, items, settings)  # a batch: each touched record refreshed once
    incidents, actions = derive(alerts, watermark, settings)   # the offline mode's answer

Both are functions of the set of highest alert revisions and the watermark alone, so any
order of items through `step` ends where `derive` is (field for field, `detected_at` and
`revision` aside). The definitions (incidents.py, actions.py) are shared by both.

State, kept per key as bytes (a Faust table with a changelog in the stream stage):

* ``"a|<alert_id>"`` (AlertIndex): the highest revision seen of the alert and the keys its
  facts were filed under, so a later revision can take them out again;
* ``"g|<carrier>|<channel>"`` (GroupState): the group's qualifying alerts (their facts);
* ``"i|<carrier>|<channel>"`` (IncidentState): the group's incidents published (last record
  per incident_id) and their current spans, apart from the facts so that an order reads
  only these few bytes to link its incident;
* ``"l|<carrier>|<channel>|<window>"`` (LinkState): the open alerts asking for actions whose
  label lies in that window of the group, with their orders: when the group's spans move,
  the orders of the windows whose incident changed are revised (only those keys are read);
* ``"o|<order_id>"`` (OrderState): the order's open alerts that ask for actions and the
  action records published (last record per action);
* ``"w"`` (WatermarkState): the greatest input event time seen and the groups with an open
  incident (a watermark advance can resolve only those).

A record is published again (revision + 1) whenever any field but `detected_at` changes; an
incident that no longer exists is published `retracted`, an action no open alert asks for
any more `cancelled` (only if it was ever published). Re-applying an item changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import orjson

from streams.core import revisions
from streams.core.actions import action_records
from streams.core.incidents import Fact, Span, epoch, fact_of, incident_records, link, qualifies
from streams.core.settings import Settings

__all__ = ["AlertIndex", "GroupState", "IncidentState", "LinkState", "OrderState",
           "StepResult", "Watermark", "WatermarkState", "derive", "group_key", "order_key",
           "step", "step_many"]

WATERMARK_KEY = "w"
RETRACTED = "retracted"
CANCELLED = "cancelled"


class Watermark(msgspec.Struct, frozen=True):
    """A watermark advance: the greatest input event time processed (epoch seconds)."""

    ts: int


class AlertIndex(msgspec.Struct, array_like=True, gc=False):
    revision: int
    group: str | None = None  # the group key its facts sit under (qualifying alerts)
    order: str | None = None  # the order key (alerts asking for actions)
    link: str | None = None  # the link key (the same alerts)


class Published(msgspec.Struct, array_like=True, gc=False):
    """The last publication of a record: its revision and its JSON without revision and
    detected_at (what a new revision is compared against)."""

    revision: int
    body: bytes


class GroupState(msgspec.Struct, array_like=True, gc=False):
    facts: dict[str, Fact] = {}  # alert_id -> facts of a qualifying alert of the group


class IncidentState(msgspec.Struct, array_like=True, gc=False):
    published: dict[str, Published] = {}  # incident_id -> last publication
    spans: list[Span] = []  # the current incidents: (started, ended, incident_id), oldest first


class LinkState(msgspec.Struct, array_like=True, gc=False):
    orders: dict[str, str] = {}  # alert_id -> order_id


class OrderState(msgspec.Struct, array_like=True, gc=False):
    facts: dict[str, Fact] = {}  # alert_id -> facts of an open alert asking for actions
    published: dict[str, Published] = {}  # action -> last publication


class WatermarkState(msgspec.Struct, array_like=True, gc=False):
    ts: int = 0
    open_groups: list[str] = []  # sorted group keys with an incident open at ts


class StepResult(msgspec.Struct):
    states: dict[str, bytes | None]  # key -> new bytes (None: delete the key)
    incidents: list[dict[str, Any]]  # records to publish, without detected_at
    actions: list[dict[str, Any]]


_encoder = msgspec.msgpack.Encoder()
_decoders = {kind: msgspec.msgpack.Decoder(kind)
             for kind in (AlertIndex, GroupState, IncidentState, LinkState, OrderState,
                          WatermarkState)}


def group_key(carrier: str, channel: str) -> str:
    return f"g|{carrier}|{channel}"


def order_key(order_id: str) -> str:
    return f"o|{order_id}"


def incident_key(group: str) -> str:
    """The incidents' key of a group key."""
    return f"i|{group[2:]}"


def link_key(group: str, window: int) -> str:
    """The link key of a group key's window (`t // incident_window_s`)."""
    return f"l|{group[2:]}|{window}"


def _body(record: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in record.items() if k != "revision"})


class _Context:
    """The states one step reads and changes, decoded once, encoded at the end."""

    def __init__(self, get: Callable[[str], bytes | None]) -> None:
        self.get = get
        self.cache: dict[str, Any] = {}
        self.dirty: set[str] = set()

    def load(self, key: str, kind: type) -> Any:
        if key not in self.cache:
            data = self.get(key)
            self.cache[key] = kind() if data is None else _decoders[kind].decode(data)
        return self.cache[key]

    def index(self, alert_id: str) -> AlertIndex | None:
        key = "a|" + alert_id
        if key not in self.cache:
            data = self.get(key)
            self.cache[key] = None if data is None else _decoders[AlertIndex].decode(data)
        return self.cache[key]

    def group(self, key: str) -> GroupState:
        return self.load(key, GroupState)

    def incidents(self, group: str) -> IncidentState:
        return self.load(incident_key(group), IncidentState)

    def order(self, key: str) -> OrderState:
        return self.load(key, OrderState)

    def link(self, key: str) -> LinkState:
        return self.load(key, LinkState)

    def watermark(self) -> WatermarkState:
        return self.load(WATERMARK_KEY, WatermarkState)

    def put(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.dirty.add(key)

    def touch(self, key: str) -> None:
        self.dirty.add(key)

    def states(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for key in sorted(self.dirty):
            value = self.cache[key]
            if ((isinstance(value, OrderState) and not value.facts and not value.published)
                    or (isinstance(value, GroupState) and not value.facts)
                    or (isinstance(value, IncidentState) and not value.published)
                    or (isinstance(value, LinkState) and not value.orders)):
                out[key] = None  # nothing left to keep
            else:
                out[key] = None if value is None else _encoder.encode(value)
        return out


# --- step -----------------------------------------------------------------------------------

def step(get: Callable[[str], bytes | None], item: dict[str, Any] | Watermark,
         settings: Settings) -> StepResult:
    """Apply one alert revision (the alert as published on tracking.alerts) or watermark
    advance to the states read through `get`; return the changed states and the incident
    and action records to publish (numbered, without detected_at)."""
    return step_many(get, (item,), settings)


def step_many(get: Callable[[str], bytes | None],
              items: Iterable[dict[str, Any] | Watermark], settings: Settings) -> StepResult:
    """`step` over a batch: the items applied in order, then every group and order they
    touched refreshed once, so a record that changes twice in the batch is published once,
    with its final fields (one revision). The final records are those of the items one by
    one (the same highest revisions and watermark); a batch costs about one item's refresh
    per group and order it touches, however many items it holds."""
    ctx = _Context(get)
    incidents: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    groups: set[str] = set()  # groups whose incidents may change
    orders: set[str] = set()  # orders whose actions may change
    for item in items:
        if isinstance(item, Watermark):
            mark = ctx.watermark()
            if item.ts > mark.ts:  # a lower one changes nothing
                mark.ts = item.ts
                ctx.touch(WATERMARK_KEY)
                groups.update(mark.open_groups)  # only an open incident can resolve
        else:
            _file(ctx, item, settings, groups, orders)

    width = settings.incident_window_s
    for key in sorted(groups):
        before = list(ctx.incidents(key).spans)  # spans change only here
        _refresh_group(ctx, key, settings, incidents)
        after = ctx.incidents(key).spans
        if before == after:
            continue
        # the orders of the windows whose incident changed are revised (their incident_id)
        windows = {w for started, ended, _ in (*before, *after)
                   for w in range(started // width, ended // width)}
        for w in sorted(windows):
            if link(before, w * width) != link(after, w * width):
                orders.update(order_key(o) for o in ctx.link(link_key(key, w)).orders.values())
    for key in sorted(orders):
        _refresh_order(ctx, key, actions)
    return StepResult(ctx.states(), incidents, actions)


def _file(ctx: _Context, item: dict[str, Any], settings: Settings, groups: set[str],
          orders: set[str]) -> None:
    """File an alert revision's facts in place of the previous revision's (an older or
    repeated revision changes nothing); note the groups and orders to refresh."""
    alert_id = item["alert_id"]
    revision = int(item["revision"])
    seen = ctx.index(alert_id)
    if seen is not None and seen.revision >= revision:
        return
    if seen is not None:  # take the previous revision's facts out
        if seen.group is not None:
            ctx.group(seen.group).facts.pop(alert_id, None)
            ctx.touch(seen.group)
            groups.add(seen.group)
        if seen.order is not None:
            ctx.order(seen.order).facts.pop(alert_id, None)
            ctx.touch(seen.order)
            orders.add(seen.order)
        if seen.link is not None:
            ctx.link(seen.link).orders.pop(alert_id, None)
            ctx.touch(seen.link)
    index = AlertIndex(revision)
    fact = fact_of(item)
    if fact is not None:  # and file this one's
        group = group_key(fact.carrier, fact.channel)
        if qualifies(fact):
            ctx.group(group).facts[alert_id] = fact
            ctx.touch(group)
            groups.add(group)
            index.group = group
        if fact.asks:
            index.order = order_key(fact.order_id)
            ctx.order(index.order).facts[alert_id] = fact
            ctx.touch(index.order)
            orders.add(index.order)
            index.link = link_key(group, fact.t // settings.incident_window_s)
            ctx.link(index.link).orders[alert_id] = fact.order_id
            ctx.touch(index.link)
    ctx.put("a|" + alert_id, index)


def _refresh_group(ctx: _Context, key: str, settings: Settings,
                   out: list[dict[str, Any]]) -> None:
    """Bring the group's published incidents in line with its facts and the watermark."""
    mark = ctx.watermark()
    records = incident_records(ctx.group(key).facts.values(), mark.ts, settings)
    state = ctx.incidents(key)
    published = len(out)
    current = {r["incident_id"] for r in records}
    for record in records:
        _publish(state.published, record["incident_id"], record, out)
    for incident_id in sorted(set(state.published) - current):
        last = state.published[incident_id]
        record = orjson.loads(last.body)
        if record["status"] != RETRACTED:
            record.update(status=RETRACTED, actions=[])
            _publish(state.published, incident_id, record, out)
    spans = [span_of(r) for r in records]
    if len(out) > published or spans != state.spans:  # else nothing to write back
        state.spans = spans
        ctx.touch(incident_key(key))
    is_open = any(r["status"] == "open" for r in records)
    groups = set(mark.open_groups)
    if is_open != (key in groups):
        groups.symmetric_difference_update({key})
        mark.open_groups = sorted(groups)
        ctx.touch(WATERMARK_KEY)


def span_of(record: dict[str, Any]) -> Span:
    return (epoch(record["started_at"]), epoch(record["ended_at"]), record["incident_id"])


def _refresh_order(ctx: _Context, key: str, out: list[dict[str, Any]]) -> None:
    order = ctx.order(key)
    published = len(out)
    spans_of: dict[str, list[Span]] = {}

    def spans(carrier: str, channel: str) -> list[Span]:
        gkey = group_key(carrier, channel)
        if gkey not in spans_of:
            spans_of[gkey] = ctx.incidents(gkey).spans
        return spans_of[gkey]

    records = action_records(order.facts.values(), spans)
    current = {r["action"] for r in records}
    for record in records:
        _publish(order.published, record["action"], record, out)
    for action in sorted(set(order.published) - current):
        record = orjson.loads(order.published[action].body)
        if record["status"] != CANCELLED:
            record.update(status=CANCELLED, alert_ids=[])
            _publish(order.published, action, record, out)
    if len(out) > published:
        ctx.touch(key)


def _publish(published: dict[str, Published], name: str, record: dict[str, Any],
             out: list[dict[str, Any]]) -> None:
    """Publish the record if any field (revision and detected_at aside) changed."""
    body = _body(record)
    last = published.get(name)
    if last is not None and last.body == body:
        return
    revision = 1 if last is None else last.revision + 1
    published[name] = Published(revision, body)
    out.append({**record, "revision": revision})


# --- derive ---------------------------------------------------------------------------------

def derive(alerts: Iterable[dict[str, Any]], watermark: int, settings: Settings,
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The final incidents and due actions (revision 1, no detected_at) of the alerts'
    highest revisions at `watermark`: the offline mode's output. Incidents by (carrier,
    channel, started_at), actions by (order_id, action)."""
    by_group: dict[tuple[str, str], list[Fact]] = {}
    by_order: dict[str, list[Fact]] = {}
    for alert in revisions.latest(alerts).values():
        fact = fact_of(alert)
        if fact is None:
            continue
        by_group.setdefault((fact.carrier, fact.channel), []).append(fact)
        if fact.asks:
            by_order.setdefault(fact.order_id, []).append(fact)
    incidents: list[dict[str, Any]] = []
    spans: dict[tuple[str, str], list[Span]] = {}
    for group in sorted(by_group):
        records = incident_records(by_group[group], watermark, settings)
        spans[group] = [span_of(r) for r in records]
        incidents.extend({**r, "revision": 1} for r in records)
    actions: list[dict[str, Any]] = []
    for order_id in sorted(by_order):
        for record in action_records(by_order[order_id],
                                     lambda carrier, channel: spans.get((carrier, channel), [])):
            actions.append({**record, "revision": 1})
    return incidents, actions
