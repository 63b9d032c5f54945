"""The stream runtime: plain aiokafka ingest, Faust stages. No rules here.

    labels, scans ──ingest──> <app_id>-tracking-events ──detection──> tracking.alerts
                 (aiokafka group   frames: the events of one    (Faust agent; RocksDB table
                  <app_id>-ingest;  internal partition per       per tracking key, changelog)
                  decode, validate, record, partitioned by the          │ alert revisions,
                  re-key, batch)    tracking key)                       ▼ watermarks
                        └────────> tracking.deadletter    <app_id>-response ──response──>
                                                          (one partition)  tracking.incidents
                                                                           tracking.actions

One module per stage: `ingest` (a plain aiokafka consumer group: batched reads, batched
produce, input offsets committed after the frames are acknowledged), `detection_stage` (the
core's rules over a RocksDB table per tracking key, at least once), `response_stage`
(incidents and actions from the alerts, at least once). Around them: `topics` (declaration,
the shared producer), `lifecycle` (the Faust app, start and stop in order, the watchdog's
loop, replay's stop, fatal errors), `health` (/ready, /metrics gauges), `incidents_view`
(each worker's copy of the open incidents) and `web_api` (the lookup API).

`build_app(config)` builds an independent app (tests and benchmarks build several).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.runtime import detection_stage, web_api
from streams.runtime.health import Health
from streams.runtime.incidents_view import IncidentsView
from streams.runtime.lifecycle import Lifecycle
from streams.runtime.metrics import Metrics
from streams.runtime.stream_config import StreamConfig

if TYPE_CHECKING:
    import faust


def build_app(config: StreamConfig) -> faust.App:
    """A new Faust app for `config`: its own id, topics, tables, stages and ingest (started
    by the lifecycle's hooks once Faust starts)."""
    metrics = Metrics()
    life = Lifecycle(config, metrics)
    app = life.new_app()

    detection = detection_stage.attach(app, config, metrics, life.fatal)
    life.stages.append(detection.stage)
    life.stage_topics[config.internal_topic_name] = detection.stage
    response = None
    if config.response:
        from streams.runtime import response_stage  # the core's response rules

        response = response_stage.attach(app, config, metrics, life.fatal)
        life.stages.append(response.stage)
        life.stage_topics[config.response_topic_name] = response.stage

    incidents = None
    if response is not None and config.web_port > 0:  # the circuit breaker's copy
        incidents = IncidentsView(config, metrics)
        life.services.append(incidents)
    health = Health(life, detection.table)
    health.register()
    web_api.register(app, detection.table, config, incidents and incidents.open)

    app.tracking = {  # type: ignore[attr-defined]  # handles for tests, commands, benchmarks
        "config": config,
        "tracking_events": detection.topic,
        "table": detection.table,
        "detect": detection.agent,
        "stage": detection.stage,
        "response": response,
        "incidents": incidents,
        "runtime": life.runtime,
        "watchdog": life.watchdog,
        "metrics": metrics,
        "readiness": health.readiness,
    }
    return app
