"""The stream runtime: plain aiokafka ingest, Faust stages. No rules here.

    labels, scans ──ingest──> <app_id>-tracking-events ──detection──> tracking.alerts
                 (aiokafka group   frames: the events of one         (Faust agent; RocksDB
                  <app_id>-ingest;  internal partition per            table per tracking key,
                  decode, validate, record, partitioned by the        its changelog, recovery,
                  re-key, batch)    tracking key)                     the partition assignment)
                        └────────> tracking.deadletter

One module per stage: `ingest` (a plain aiokafka consumer group: batched reads, batched
produce, input offsets committed after the frames are acknowledged), `detection_stage` (the
stateful stage: the core's rules over a RocksDB table, at least once). Around them:
`topics` (declaration, the shared producer), `lifecycle` (the Faust app, start and stop in
order, the watchdog's loop, replay's stop, fatal errors), `health` (/ready, /metrics gauges)
and `web_api` (the lookup API).

`build_app(config)` builds an independent app (tests and benchmarks build several).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.runtime import detection_stage, web_api
from streams.runtime.health import Health
from streams.runtime.lifecycle import Lifecycle
from streams.runtime.metrics import Metrics
from streams.runtime.stream_config import StreamConfig

if TYPE_CHECKING:
    import faust


def build_app(config: StreamConfig) -> faust.App:
    """A new Faust app for `config`: its own id, topics, table, stages and ingest (started by
    the lifecycle's hooks once Faust starts)."""
    metrics = Metrics()
    life = Lifecycle(config, metrics)
    app = life.new_app()
    detection = detection_stage.attach(app, config, metrics, life.fatal)
    life.stages.append(detection.stage)
    health = Health(life, detection.table)
    health.register()
    web_api.register(app, detection.table, config)  # the lookup API on the web server, if any

    app.tracking = {  # type: ignore[attr-defined]  # handles for tests, commands, benchmarks
        "config": config,
        "tracking_events": detection.topic,
        "table": detection.table,
        "detect": detection.agent,
        "stage": detection.stage,
        "runtime": life.runtime,
        "watchdog": life.watchdog,
        "metrics": metrics,
        "readiness": health.readiness,
    }
    return app
