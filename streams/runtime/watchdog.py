"""The stall watchdog: defence in depth against a partition that stops advancing. No Kafka here.

A partition is stalled when its committed offset has stayed flat for `stall_seconds` while it
has lag (highwater above the committed offset) and the stage did no work on it in that time.
The runtime feeds observations and recovers what this reports (a re-seek to the committed
offset: nothing is lost, and the stage drops the repeated event ids), logs it once at ERROR,
and reports the worker not ready until the partition advances again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class _Seen:
    committed: int | None
    since: float  # when `committed` last changed (or was first seen)


@dataclass
class Watchdog:
    stall_seconds: float = 30.0
    stalled: set[Any] = field(default_factory=set)
    _seen: dict[Any, _Seen] = field(default_factory=dict)

    def observe(self, tp: Any, committed: int | None, highwater: int | None,
                last_work: float | None, now: float) -> bool:
        """Record one observation of `tp`; True when it has just become stalled."""
        seen = self._seen.get(tp)
        if seen is None or seen.committed != committed:
            self._seen[tp] = _Seen(committed, now)
            self.stalled.discard(tp)
            return False
        lag = highwater is not None and highwater > (committed or 0)
        idle = last_work is None or now - last_work >= self.stall_seconds
        if lag and idle and now - seen.since >= self.stall_seconds and tp not in self.stalled:
            self.stalled.add(tp)
            seen.since = now  # a recovery gets another full period before the next alarm
            return True
        return False

    def forget(self, keep: set[Any]) -> None:
        """Drop partitions no longer assigned."""
        for tp in list(self._seen):
            if tp not in keep:
                del self._seen[tp]
                self.stalled.discard(tp)
