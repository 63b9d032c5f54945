"""The worker's health: `/ready`'s answer (partitions assigned, table recovered, nothing
stalled, no fatal error) and the gauges refreshed before each `/metrics` scrape (consumer lag,
table keys, stalled partitions). Served on the web server by `metrics.register_views`."""

from __future__ import annotations

import contextlib
from typing import Any

from streams.runtime.lifecycle import Lifecycle
from streams.runtime.metrics import register_views


class Health:
    def __init__(self, life: Lifecycle, table: Any) -> None:
        self.life = life
        self.table = table

    def register(self) -> None:
        """`/metrics`, `/health` and `/ready`, when the worker has a web server."""
        if self.life.config.web_port > 0:
            register_views(self.life.app, self.life.metrics, self.refresh_metrics,
                           self.readiness)

    async def refresh_metrics(self) -> None:
        """The gauges that need a look at the consumers, the table and the watchdog."""
        life, config = self.life, self.life.config
        lags: list[tuple[str, int, int]] = []
        ingest = life.runtime["ingest"]
        if ingest is not None and ingest.consumer is not None:
            consumer = ingest.consumer
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    lags.append((tp.topic, tp.partition,
                                 max(0, high - await consumer.position(tp))))
        with contextlib.suppress(Exception):  # not started yet
            consumer = life.app.consumer
            for tp in consumer.assignment():
                if tp.topic == config.internal_topic_name:
                    high = consumer.highwater(tp)
                    done = consumer._committed_offset.get(tp) or 0
                    if high is not None:
                        lags.append((tp.topic, tp.partition, max(0, high - done)))
        life.metrics.set_lag(lags)
        life.metrics.stalled.set(len(life.watchdog.stalled))
        life.metrics.table_keys.set(self.table_keys())

    def table_keys(self) -> int:
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None:
            return len(getattr(store, "data", {}))
        total = 0
        for db in list(dbs.values()):
            with contextlib.suppress(Exception):
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        return total

    def readiness(self) -> str | None:
        """None when ready, else why not."""
        life, app = self.life, self.life.app
        if life.runtime["fatal"] is not None:
            return f"stopped on an error: {type(life.runtime['fatal']).__name__}"
        if not app.tables.recovery.completed.is_set():
            return "table recovery in progress"
        try:
            assigned = app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            assigned = set()
        if not [tp for tp in assigned if tp.topic == life.config.internal_topic_name]:
            return "no partitions assigned"
        if life.watchdog.stalled:
            return "stalled partitions: " + ", ".join(
                f"{tp.topic}/{tp.partition}" for tp in sorted(life.watchdog.stalled))
        return None
