"""The worker's Prometheus metrics, and its `/metrics`, `/health` and `/ready` views.

One `CollectorRegistry` per app (tests build several apps in one process). The runtime counts
as it goes (ingest per batch, the stage's writer per durable batch); gauges that need a look
at the consumers or the table (lag, table keys, stalled partitions) are refreshed by
`Metrics.refresh`, which the runtime calls every few seconds and before each scrape.

    tracking_validator_events_total{topic,outcome}     input records: event | dead_letter
    tracking_validator_stage_events_total              events the stateful stage has applied
                                                       and made durable (changelog, RocksDB)
    tracking_validator_dead_letters_total{code}        by the contract's error.code
    tracking_validator_alerts_total{rule,severity}     distinct alerts (first publications)
    tracking_validator_alert_revisions_total{status}   revisions > 1: open | retracted
    tracking_validator_consumer_lag{topic,partition}   highwater - position, this worker's
    tracking_validator_event_to_alert_seconds          ingest read the input record -> alert
                                                       acked (processing latency)
    tracking_validator_event_age_seconds               wall clock - event time, as ingest reads
                                                       each event (lag in event time: imported
                                                       history is old, live traffic seconds)
    tracking_validator_table_keys                      tracking keys in this worker's table
    tracking_validator_stalled_partitions              partitions the watchdog saw stalled
    tracking_validator_incidents_open{carrier,channel} open incidents, from this worker's copy
                                                       of tracking.incidents (every worker
                                                       reports the same: aggregate with max)
    tracking_validator_actions_total{action,status}    action revisions published (due |
                                                       cancelled), by the response stage
    tracking_validator_response_records_total{step}    records of <app_id>-response (alerts
                                                       and watermark of a batch of frames):
                                                       `sent` by detection, `applied` and made
                                                       durable by the response stage

`/health` is 200 while the process serves; `/ready` is 200 only when the worker has
partitions assigned, its table is recovered and no partition is stalled, else 503 with a
JSON reason. Neither needs the API token: probes and scrapers do not carry one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# read-to-alert of a healthy worker is tens of ms; held alerts wait --alert-hold (2 s)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_DAY = 86400.0
# live traffic is seconds old; a lagging carrier feed hours; imported history months or years
AGE_BUCKETS = (1.0, 10.0, 60.0, 300.0, 3600.0, 6 * 3600.0, _DAY, 7 * _DAY, 30 * _DAY,
               180 * _DAY, 365 * _DAY, 730 * _DAY)


class BatchHistogram:
    """A histogram of ages observed a batch at a time: the event age is observed for every
    input event, and prometheus_client's `Histogram.observe` (a lock and a bucket search per
    value) took 2-4x the time of `observe_ages` per value, measured side by side. Same
    exposition as a Histogram (_bucket, _count, _sum)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        registry.register(self)

    def observe_ages(self, now: float, times: Iterable[float]) -> None:
        """`now - t` for each t, 0 for a t after `now`: bisects the times against the bounds
        turned into times (age <= bound <=> t >= now - bound), no subtraction per value."""
        counts, n = self.counts, len(self.bounds)
        cuts = [now - bound for bound in reversed(self.bounds)]  # ascending
        total = 0.0
        count = 0
        for t in times:
            counts[n - bisect_right(cuts, t)] += 1
            count += 1
            total += t if t < now else now
        self.sum += count * now - total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            cumulative.append((floatToGoString(bound), running))
        cumulative.append(("+Inf", running + self.counts[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative,
                                    sum_value=self.sum)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)



def set_partition_lags(gauge: Any, known: set[tuple[str, str]],
                       lags: Iterable[tuple[str, int, int]]) -> set[tuple[str, str]]:
    """Set a (topic, partition) lag gauge to `lags`, remove the partitions in `known` that
    are no longer listed (moved to another consumer); returns the partitions now shown."""
    seen = set()
    for topic, partition, lag in lags:
        key = (topic, str(partition))
        seen.add(key)
        gauge.labels(*key).set(lag)
    for key in known - seen:
        gauge.remove(*key)
    return seen

class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.events = Counter("tracking_validator_events", "Input records by outcome",
                              ["topic", "outcome"], registry=r)
        self.stage_events = Counter(
            "tracking_validator_stage_events",
            "Events the stateful stage has applied and made durable (changelog, RocksDB)",
            registry=r)
        self.dead_letters = Counter("tracking_validator_dead_letters",
                                    "Dead-lettered input records by error code", ["code"],
                                    registry=r)
        self.alerts = Counter("tracking_validator_alerts",
                              "Distinct alerts published (their first publication)",
                              ["rule", "severity"], registry=r)
        self.revisions = Counter("tracking_validator_alert_revisions",
                                 "Alert revisions published after the first, by status",
                                 ["status"], registry=r)
        self.lag = Gauge("tracking_validator_consumer_lag",
                         "Records not yet read by this worker (highwater - position)",
                         ["topic", "partition"], registry=r)
        self.event_to_alert = Histogram(
            "tracking_validator_event_to_alert_seconds",
            "From the moment ingest read the input record to the alert's acknowledgement",
            buckets=LATENCY_BUCKETS, registry=r)
        self.event_age = BatchHistogram(
            "tracking_validator_event_age_seconds",
            "Wall clock minus event time of each input event, as ingest reads it",
            AGE_BUCKETS, r)
        self.table_keys = Gauge("tracking_validator_table_keys",
                                "Tracking keys in this worker's table (RocksDB estimate)",
                                registry=r)
        self.stalled = Gauge("tracking_validator_stalled_partitions",
                             "Partitions the watchdog found stalled", registry=r)
        self.incidents_open = Gauge(
            "tracking_validator_incidents_open",
            "Open incidents by carrier and channel (this worker's copy of tracking.incidents)",
            ["carrier", "channel"], registry=r)
        self.actions = Counter("tracking_validator_actions",
                               "Action revisions published by the response stage",
                               ["action", "status"], registry=r)
        self.response_records = Counter(
            "tracking_validator_response_records",
            "Records of the response stage's input topic: sent (detection) or applied and "
            "made durable (response stage)", ["step"], registry=r)
        self._lag_labels: set[tuple[str, str]] = set()

    def count_alert(self, alert: dict[str, Any], read_ms: int, acked_s: float) -> None:
        """An alert acknowledged at `acked_s` (epoch s) from an input record ingest read at
        `read_ms` (epoch ms; 0 = unknown)."""
        revision = alert.get("revision", 1)
        if revision == 1:
            self.alerts.labels(alert["rule"], alert["severity"]).inc()
        else:
            self.revisions.labels(alert.get("status", "open")).inc()
        if read_ms > 0:
            self.event_to_alert.observe(max(0.0, acked_s - read_ms / 1000))

    def observe_event_ages(self, now_s: float, event_times: Iterable[int]) -> None:
        """The age of each event read at `now_s`, from its event time (epoch s); an event
        stamped in the future (clock skew) counts as 0."""
        self.event_age.observe_ages(now_s, event_times)

    def set_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """(topic, partition, lag) of this worker's partitions now; others are removed."""
        self._lag_labels = set_partition_lags(self.lag, self._lag_labels, lags)

    def set_incidents_open(self, counts: dict[tuple[str, str], int]) -> None:
        """Open incidents per (carrier, channel); a group seen before and now closed shows 0."""
        for (carrier, channel), n in counts.items():
            self.incidents_open.labels(carrier, channel).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def register_views(app: Any, metrics: Metrics, refresh: Callable[[], Any],
                   readiness: Callable[[], str | None]) -> None:
    """`/metrics`, `/health` and `/ready` on the Faust app's web server."""

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        await refresh()
        return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready_view(web: Any, request: Any) -> Any:
        reason = readiness()
        if reason is None:
            return web.json({"status": "ready"})
        return web.json({"status": "not_ready", "reason": reason}, status=503)
