"""Configuration of the stream worker: Kafka, topics, state and client tuning.

Kept apart from `streams.runtime.app` so that the command-line layer can build and print it
without importing Faust. Every field has an environment variable (`StreamConfig.from_env`) so
that containers and the `worker` command agree; command-line flags override the environment.
Detection settings (reuse window, clock skew, maximum message size, ...) live in
`streams.core.settings.Settings` and are carried here as `settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streams.runtime.kafka_security import CONFIG_ENV, DEFAULT_BOOTSTRAP, KafkaClientConfig
from streams.runtime.logs import FORMATS

DEFAULT_APP_ID = "tracking-validator"


def _default_settings() -> Any:
    from streams.core.settings import Settings

    return Settings()


@dataclass(frozen=True)
class StreamConfig:
    app_id: str = DEFAULT_APP_ID
    bootstrap: str = DEFAULT_BOOTSTRAP
    # Faust's datadir: RocksDB tables live in <state_dir>/v1/tables/. One per worker.
    state_dir: Path = Path("tracking-validator-state")
    # Partition count of the internal re-keyed topic and of the table changelog (they must
    # match: the table is partitioned by the internal topic's partitions), and of the input
    # and output topics when this worker creates them.
    partitions: int = 8
    # replicas of the topics the worker creates; 0: automatic, 3 on three brokers or more
    # with min.insync.replicas 2, else one per broker (streams.runtime.replication)
    replication: int = 0
    min_insync_replicas: int = 0  # 0: automatic (2 with 3 replicas, else the broker's)
    # Faust's standby table replicas: a worker keeps a warm copy of another's partitions
    # (it reads their changelog), so that it takes them over without rebuilding them; none
    # is assigned while a worker is alone (benchmarks/failover.py: 9 s against 14 s)
    standby_replicas: int = 1
    labels_topic: str = "labels"
    scans_topic: str = "scans"
    alerts_topic: str = "tracking.alerts"
    deadletter_topic: str = "tracking.deadletter"
    incidents_topic: str = "tracking.incidents"
    actions_topic: str = "tracking.actions"
    # the response stage (incidents and actions from the alerts, streams.runtime.response_stage);
    # False: alerts only (benchmarks measure the stage's cost against it)
    response: bool = True
    internal_topic: str = ""  # "" -> "<app_id>-tracking-events"
    create_topics: bool = True  # declare input/output topics at start when missing
    store: str = "rocksdb://"
    web_port: int = 0  # 0 disables Faust's web server
    # The host other workers reach this one's web server at (its canonical URL, for the
    # lookup API's forwarding) and the address it listens on; "" = Faust's defaults
    # (this machine's host name; all interfaces).
    web_host: str = ""
    # "earliest": a new consumer group reads the whole topic (nothing is skipped).
    auto_offset_reset: str = "earliest"
    # A worker that dies holds its partitions until this expires (Faust's default is 60 s);
    # 6 s is the least a broker accepts by default (group.min.session.timeout.ms), and the
    # heartbeat is a quarter of it: the survivors answer a dead worker's lookups again
    # within 15 s (benchmarks/failover.py)
    session_timeout: float = 6.0
    # -- client tuning (measured with benchmarks/pipeline.py; see its docstring)
    commit_interval: float = 1.0  # seconds between offset commits
    producer_linger: float = 0.005  # seconds the producer waits to fill a batch
    producer_max_batch_size: int = 256 * 1024
    # bytes of record batches in one produce request, 0: no cap (aiokafka has none). Under
    # half a G1 region of a broker with a heap under 2 GB (448 KiB leaves room for the
    # request's own headers): a larger request is a humongous allocation there
    # (streams.runtime.faust_transport, fix 3)
    producer_max_request_bytes: int = 448 * 1024
    producer_acks: int = -1  # all in-sync replicas: an acked alert survives a broker loss
    max_poll_records: int = 5000  # input records ingest takes per getmany
    fetch_max_wait_ms: int = 50  # ingest's fetch wait when the inputs are quiet
    frame_max_events: int = 2000  # events per internal-topic record (one stage step)
    stage_max_pending: int = 64  # frames applied but not yet durable (group commit)
    stall_seconds: float = 30.0  # the watchdog's alarm: a partition flat this long with lag
    # seconds of arrival an alert that a late message could still change (duplicate_tracking,
    # previously_used, destination_mismatch, voided_label_scanned) is held back before it is
    # published: a correction that arrives within that time after the message it corrects
    # replaces it, a retraction cancels it; 0: publish at once and correct by revision. Live,
    # that is this long after the stage applied it; in a backlog, until the inputs are read
    # through its arrival + this (streams.runtime.detection_stage). benchmarks/arrival.py, a
    # 9,100-record backlog with the labels 3-14 days of event time behind the scans: 4-9
    # alerts published then retracted with 0, none with 2 s (or 5 s); invalid_tracking is
    # never held
    alert_hold: float = 2.0
    produce_timeout: float = 300.0  # a send waits this long through a broker outage
    ingest: bool = True  # False: run the stateful stage only (benchmarks, tests)
    # replay: read the inputs up to the end offsets seen at start (from replay_from_ms, epoch
    # ms, or the beginning), then stop once the whole group is done (streams.commands.replay)
    replay: bool = False
    replay_from_ms: int | None = None
    settings: Any = field(default_factory=_default_settings)
    # Security (SASL/TLS) of every client the worker makes; its bootstrap is kept equal to
    # `bootstrap` above (set from it when None). See streams.runtime.kafka_security.
    kafka: KafkaClientConfig | None = None
    # streams.runtime.logs: "text" or "json" (one JSON object per line), and the id every line
    # carries ("" -> <hostname>-<pid>)
    log_format: str = "text"
    worker_id: str = ""

    def __post_init__(self) -> None:
        if self.log_format not in FORMATS:
            raise ValueError(f"log format {self.log_format!r} is not one of {', '.join(FORMATS)}")
        if self.kafka is None or self.kafka.bootstrap != self.bootstrap:
            kafka = self.kafka or KafkaClientConfig(bootstrap=self.bootstrap)
            object.__setattr__(self, "kafka", kafka.with_bootstrap(self.bootstrap))

    @property
    def internal_topic_name(self) -> str:
        return self.internal_topic or f"{self.app_id}-tracking-events"

    @property
    def ingest_group(self) -> str:
        """Ingest's consumer group (the stage's is the Faust app's: `app_id`)."""
        return f"{self.app_id}-ingest"

    @property
    def table_name(self) -> str:
        return "tracking-state"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-{self.table_name}-changelog"

    @property
    def response_topic_name(self) -> str:
        """The response stage's input, one partition: alert revisions and watermarks."""
        return f"{self.app_id}-response"

    @property
    def response_table_name(self) -> str:
        return "response-state"

    @property
    def response_changelog_topic(self) -> str:
        return f"{self.app_id}-{self.response_table_name}-changelog"

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{s.strip()}" for s in self.bootstrap.split(",") if s.strip())

    def with_(self, **changes: Any) -> StreamConfig:
        """A copy with `changes`; None values are ignored (unset command-line flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamConfig:
        env = os.environ if env is None else env
        from streams.core.settings import Settings

        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("settings", "kafka"):
                continue
            name = ENV_NAMES.get(f.name, f"TRACKING_VALIDATOR_{f.name.upper()}")
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw)
        # KAFKA_BOOTSTRAP_SERVERS is read by both; the security settings by KafkaClientConfig
        # (the file of TRACKING_VALIDATOR_KAFKA_CONFIG wins over the environment, key by key)
        kafka = KafkaClientConfig.load(env.get(CONFIG_ENV) or None, env=env)
        values["bootstrap"] = kafka.bootstrap
        return cls(settings=Settings.from_env(env), kafka=kafka, **values)


ENV_NAMES = {"bootstrap": "KAFKA_BOOTSTRAP_SERVERS"}

_INT_FIELDS = {
    "partitions",
    "replication",
    "min_insync_replicas",
    "standby_replicas",
    "web_port",
    "producer_max_batch_size",
    "producer_max_request_bytes",
    "producer_acks",
    "max_poll_records",
    "fetch_max_wait_ms",
    "frame_max_events",
    "stage_max_pending",
    "replay_from_ms",
}
_FLOAT_FIELDS = {"commit_interval", "producer_linger", "session_timeout", "produce_timeout",
                 "stall_seconds", "alert_hold"}


def _parse(name: str, raw: str) -> Any:
    if name in _INT_FIELDS:
        return int(raw)
    if name in _FLOAT_FIELDS:
        return float(raw)
    if name in ("create_topics", "ingest", "replay", "response"):
        return raw.strip().lower() not in {"0", "false", "no", "off"}
    if name == "state_dir":
        return Path(raw)
    return raw
