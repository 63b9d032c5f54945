"""Detection settings: one frozen object passed to the pure core.

Environment variables read by `Settings.from_env()` (unset = default):

    TRACKING_VALIDATOR_REUSE_WINDOW_DAYS     180   how long a number stays in use after its
                                                   label's last activity (purchase or scan)
    TRACKING_VALIDATOR_CLOCK_SKEW_HOURS      24    tolerance between label and carrier clocks
                                                   (previously_used)
    TRACKING_VALIDATOR_POSTAL_PREFIX         3     postal-code characters compared
                                                   (destination_mismatch)
    TRACKING_VALIDATOR_ALLOWED_LATENESS_DAYS 7     state is kept this long beyond the reuse
                                                   window, so an event arriving up to this far
                                                   behind the newest event of its number still
                                                   meets every fact it needs
    TRACKING_VALIDATOR_MAX_MESSAGE_BYTES     1048576  larger messages are dead letters
    TRACKING_VALIDATOR_MAX_LABELS_PER_KEY    16    state bounds per tracking number: beyond
    TRACKING_VALIDATOR_MAX_SCANS_PER_KEY     64    them the least recent facts are dropped
    TRACKING_VALIDATOR_MAX_EVENT_IDS_PER_KEY 64    (recent event ids remembered for de-dup)

The response (incidents and actions, streams/core/response.py):

    TRACKING_VALIDATOR_INCIDENT_WINDOW_MINUTES 60  windows of this length, aligned to the Unix
                                                   epoch, are counted per carrier and channel
    TRACKING_VALIDATOR_INCIDENT_MIN_ALERTS   10    a window qualifies with at least this many
    TRACKING_VALIDATOR_INCIDENT_MIN_SELLERS  3     qualifying alerts of this many sellers
    TRACKING_VALIDATOR_INCIDENT_QUIET_HOURS  6     qualifying windows closer than this belong to
                                                   one incident; it resolves this long after its
                                                   last one ends

Durations accept decimals (`TRACKING_VALIDATOR_CLOCK_SKEW_HOURS=0.5`); detection works in
whole seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta

ENV_PREFIX = "TRACKING_VALIDATOR_"


@dataclass(frozen=True, slots=True)
class Settings:
    reuse_window: timedelta = timedelta(days=180)
    clock_skew: timedelta = timedelta(hours=24)
    allowed_lateness: timedelta = timedelta(days=7)
    postal_prefix: int = 3
    max_message_bytes: int = 1 << 20
    max_labels_per_key: int = 16
    max_scans_per_key: int = 64
    max_event_ids_per_key: int = 64
    incident_min_alerts: int = 10
    incident_min_sellers: int = 3
    incident_window: timedelta = timedelta(hours=1)
    incident_quiet: timedelta = timedelta(hours=6)
    # whole seconds, derived once: the core reads them per event
    reuse_window_s: int = field(init=False, repr=False, compare=False)
    clock_skew_s: int = field(init=False, repr=False, compare=False)
    allowed_lateness_s: int = field(init=False, repr=False, compare=False)
    incident_window_s: int = field(init=False, repr=False, compare=False)
    incident_quiet_s: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.reuse_window <= timedelta(0):
            raise ValueError("reuse_window must be positive")
        if self.clock_skew < timedelta(0) or self.allowed_lateness < timedelta(0):
            raise ValueError("clock_skew and allowed_lateness must not be negative")
        for f in fields(self):
            if f.init and f.type == "int" and getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be at least 1")
        for name in ("reuse_window", "clock_skew", "allowed_lateness", "incident_window",
                     "incident_quiet"):
            object.__setattr__(self, f"{name}_s", int(getattr(self, name).total_seconds()))
        if self.incident_window_s < 1:
            raise ValueError("incident_window must be at least 1 second")
        if self.incident_quiet_s < 0:
            raise ValueError("incident_quiet must not be negative")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value.strip() if value and value.strip() else None

        kwargs: dict[str, object] = {}
        if (v := get("REUSE_WINDOW_DAYS")) is not None:
            kwargs["reuse_window"] = timedelta(days=float(v))
        if (v := get("CLOCK_SKEW_HOURS")) is not None:
            kwargs["clock_skew"] = timedelta(hours=float(v))
        if (v := get("ALLOWED_LATENESS_DAYS")) is not None:
            kwargs["allowed_lateness"] = timedelta(days=float(v))
        if (v := get("INCIDENT_WINDOW_MINUTES")) is not None:
            kwargs["incident_window"] = timedelta(minutes=float(v))
        if (v := get("INCIDENT_QUIET_HOURS")) is not None:
            kwargs["incident_quiet"] = timedelta(hours=float(v))
        for name, attr in (
            ("POSTAL_PREFIX", "postal_prefix"),
            ("MAX_MESSAGE_BYTES", "max_message_bytes"),
            ("MAX_LABELS_PER_KEY", "max_labels_per_key"),
            ("MAX_SCANS_PER_KEY", "max_scans_per_key"),
            ("MAX_EVENT_IDS_PER_KEY", "max_event_ids_per_key"),
            ("INCIDENT_MIN_ALERTS", "incident_min_alerts"),
            ("INCIDENT_MIN_SELLERS", "incident_min_sellers"),
        ):
            if (v := get(name)) is not None:
                kwargs[attr] = int(v)
        return cls(**kwargs)  # type: ignore[arg-type]
