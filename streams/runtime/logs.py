"""Logging of the long-running commands: one handler on stderr, text or JSON, storms collapsed.

`configure_logging(fmt, level, worker_id)` replaces whatever handlers the root logger has
(Faust's Worker is told not to install its own: `override_logging=False`), so Faust, mode,
aiokafka and our modules all log through it. With `fmt="json"` every line on stdout and stderr
is one JSON object:

    {"time": "2026-11-30T14:03:01.123Z", "level": "WARNING", "logger": "aiokafka.conn",
     "message": "...", "worker_id": "host-1234"}

plus `"repeated": N` on a collapsed line and `"exception"` (the traceback text) when there is
one. Stray writes to sys.stdout / sys.stderr (prints, tracebacks printed by libraries,
warnings) become log records too, one per line, so nothing non-JSON slips out.

When the broker is down aiokafka logs the same warnings ("Unable connect to node ...",
"Unable to update metadata ...") many times a second. `RepeatFilter` lets the first record
of each (logger, message template) through, swallows the repeats for `interval` seconds, and
then lets the next one through carrying the number swallowed.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

import orjson

FORMATS = ("text", "json")
REPEAT_INTERVAL = 10.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RepeatFilter(logging.Filter):
    """Collapse repeats of one (logger, message template) at `min_level` or above into one
    record per `interval` seconds; the record let through after a quiet-down carries
    `repeated`, the number of records swallowed since the previous one went out."""

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.min_level = min_level
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [time the last record went out, records swallowed since]
        self._seen: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or getattr(record, "no_collapse", False):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.interval:
                if entry is not None and entry[1]:
                    record.repeated = int(entry[1])
                self._seen[key] = [now, 0]
                if len(self._seen) > 10_000:  # templates are few; guard against odd callers
                    self._seen = {key: self._seen[key]}
                return True
            entry[1] += 1
            return False


def _repeat_note(record: logging.LogRecord) -> str:
    repeated = getattr(record, "repeated", 0)
    return f" (and {repeated} more like it since the last one)" if repeated else ""


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage() + _repeat_note(record),
            "worker_id": self.worker_id,
        }
        if getattr(record, "repeated", 0):
            out["repeated"] = record.repeated
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exception"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL [worker id] logger: message`, with Faust's readable tables (partition
    sets, subscriptions) as its own formatter draws them."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(
            f"%(asctime)s %(levelname)s [{worker_id.replace('%', '%%')}] %(name)s: %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        _apply_mode_formatters(record)
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record) + _repeat_note(record)


def _apply_mode_formatters(record: logging.LogRecord) -> None:
    """The argument formatters Faust registers with mode (`mode.utils.logging.formatter2`:
    a set of TopicPartition becomes a table), as mode's own ExtensionFormatter applies them;
    nothing when mode is not loaded (the commands other than the worker)."""
    mode_logging = sys.modules.get("mode.utils.logging")
    if mode_logging is None or not record.args or getattr(record, "_mode_formatted", False):
        return
    record._mode_formatted = True  # a record goes through format() once per handler

    def format_arg(arg: Any) -> Any:
        for fun in getattr(mode_logging, "_formatter_registry", ()):
            arg = value if (value := fun(arg)) is not None else arg
        for fun in getattr(mode_logging, "_formatter_registry2", ()):
            arg = value if (value := fun(arg, record)) is not None else arg
        return arg

    try:
        if isinstance(record.args, dict):
            record.args = {k: format_arg(v) for k, v in record.args.items()}
        else:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(format_arg(arg) for arg in args)
    except Exception:  # a formatter that fails must not lose the line: keep the raw args
        return


class _LogWriter:
    """A file-like object in place of sys.stdout / sys.stderr: each complete line becomes a
    log record of `logger` (so it is formatted like every other line)."""

    def __init__(self, logger: logging.Logger, level: int, original: IO[str]) -> None:
        self.logger = logger
        self.level = level
        self.original = original
        self._buffer = ""
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._log(line)
        return len(text)

    def _log(self, line: str) -> None:
        # stray output is not a storm: a traceback printed twice keeps all its lines
        if line.strip():
            self.logger.log(self.level, "%s", line.rstrip(), extra={"no_collapse": True})

    def flush(self) -> None:
        with self._lock:
            line, self._buffer = self._buffer, ""
        self._log(line)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")


def configure_logging(
    fmt: str = "text", level: str | int = "warning", worker_id: str | None = None
) -> logging.Handler:
    """Route every logger through one stderr handler in `fmt` ("text" or "json") at `level`;
    returns the handler. Idempotent: calling it again replaces the previous set-up."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    worker_id = worker_id or default_worker_id()
    # the real stderr, even if an earlier call put a _LogWriter there
    stream = sys.__stderr__ if isinstance(sys.stderr, _LogWriter) else sys.stderr
    assert stream is not None
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker_id) if fmt == "json" else TextFormatter(worker_id))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)
    if fmt == "json":
        _redirect_std_streams(stream)
    return handler


def _redirect_std_streams(stream: IO[str]) -> None:
    if not isinstance(sys.stdout, _LogWriter):
        sys.stdout = _LogWriter(logging.getLogger("stdout"), logging.INFO, sys.stdout)
    if not isinstance(sys.stderr, _LogWriter):
        sys.stderr = _LogWriter(logging.getLogger("stderr"), logging.ERROR, stream)

    # an uncaught exception: one record with its traceback, not a traceback in lines
    def excepthook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            return
        logging.getLogger("uncaught").critical(
            "uncaught %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb)
        )

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        logging.getLogger("uncaught").critical(
            "uncaught %s in thread %s: %s",
            args.exc_type.__name__,
            getattr(args.thread, "name", "?"),
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


__all__ = [
    "FORMATS",
    "JsonFormatter",
    "RepeatFilter",
    "TextFormatter",
    "configure_logging",
    "default_worker_id",
]
