"""Configuration of the stream worker: Kafka, topics, state and client tuning.

Kept apart from `streams.app` so that the command-line layer can build and print it without
importing Faust. Every field has an environment variable (`StreamConfig.from_env`) so that
`faust -A streams.app:app worker`, containers and the `worker` command agree; command-line
flags override the environment. Detection settings (reuse window, clock skew, maximum message
size, ...) live in `streams.settings.Settings` and are carried here as `settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_APP_ID = "tracking-validator"


def _default_settings() -> Any:
    from streams.settings import Settings

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
    replication: int = 1
    labels_topic: str = "labels"
    scans_topic: str = "scans"
    alerts_topic: str = "tracking.alerts"
    deadletter_topic: str = "tracking.deadletter"
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
    # A worker that dies holds its partitions until this expires (Faust's default is 60 s).
    session_timeout: float = 10.0
    # -- client tuning (measured with benchmarks/pipeline.py; see its docstring)
    commit_interval: float = 1.0  # seconds between offset commits
    producer_linger: float = 0.005  # seconds the producer waits to fill a batch
    producer_max_batch_size: int = 256 * 1024
    producer_acks: int = -1  # all in-sync replicas: an acked alert survives a broker loss
    max_poll_records: int = 2000
    stream_buffer_maxsize: int = 8192
    settings: Any = field(default_factory=_default_settings)

    @property
    def tracking_events_topic(self) -> str:
        return self.internal_topic or f"{self.app_id}-tracking-events"

    @property
    def table_name(self) -> str:
        return "tracking-state"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-{self.table_name}-changelog"

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{s.strip()}" for s in self.bootstrap.split(",") if s.strip())

    def with_(self, **changes: Any) -> StreamConfig:
        """A copy with `changes`; None values are ignored (unset command-line flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamConfig:
        env = os.environ if env is None else env
        from streams.settings import Settings

        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "settings":
                continue
            name = ENV_NAMES.get(f.name, f"TRACKING_VALIDATOR_{f.name.upper()}")
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw)
        return cls(settings=Settings.from_env(env), **values)


ENV_NAMES = {"bootstrap": "KAFKA_BOOTSTRAP_SERVERS"}

_INT_FIELDS = {
    "partitions",
    "replication",
    "web_port",
    "producer_max_batch_size",
    "producer_acks",
    "max_poll_records",
    "stream_buffer_maxsize",
}
_FLOAT_FIELDS = {"commit_interval", "producer_linger", "session_timeout"}


def _parse(name: str, raw: str) -> Any:
    if name in _INT_FIELDS:
        return int(raw)
    if name in _FLOAT_FIELDS:
        return float(raw)
    if name == "create_topics":
        return raw.strip().lower() not in {"0", "false", "no", "off"}
    if name == "state_dir":
        return Path(raw)
    return raw
