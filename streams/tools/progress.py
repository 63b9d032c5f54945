"""A small progress line on stderr for the long-running operator commands.

Drawn only when stderr is a terminal, so pipes, CI logs and tests stay clean; no dependency.
Redraws at most ten times a second: formatting on every record would cost more than the work.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_INTERVAL = 0.1


class Progress:
    """`update(n)` as work is done; `close()` erases the line. `total` may be unknown (None)."""

    def __init__(
        self,
        label: str,
        total: float | None = None,
        unit: str = "events",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0.0
        self.count = 0  # records, for the rate, whatever `done` measures (bytes, offsets)
        self.started = time.monotonic()
        self._drawn_at = 0.0

    def update(self, done: float = 1, count: int = 1) -> None:
        self.done += done
        self.count += count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn_at >= _INTERVAL:
            self._drawn_at = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            head = f"{self.label} [{bar}] {fraction:6.1%}"
            if 0 < fraction < 1:
                left = elapsed * (1 - fraction) / fraction
                head += f"  ETA {int(left // 60)}:{int(left % 60):02d}"
        else:
            head = f"{self.label}"
        self.stream.write(f"\r{head}  {self.count:,} {self.unit}  {rate:,.0f}/s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
