"""Carrier definitions: schemas/carriers/<code>.json, loaded and compiled once, on first use.

    carrier("usps")        -> Carrier (formats compiled, check-digit functions bound)
    carriers()             -> {code: Carrier} in CARRIER_ORDER

Numbers made from these definitions (simulator, benchmarks, tests) are streams.core.numbers'.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from streams.core.checksums import Checker, compile_algorithm
from streams.core.schema import SCHEMAS_DIR

# The contract's courier codes, in the order identify() reports them: the big carriers
# first (most traffic), the catch-all S10 last.
CARRIER_ORDER: tuple[str, ...] = (
    "usps", "ups", "fedex", "dhl", "amazon", "ontrac", "lasership", "canada_post",
    "purolator", "dpd", "canpar", "gofo", "landmark", "old_dominion", "speedee", "yodel",
    "yunexpress", "s10",
)

# Lengths above this go to every format whose pattern allows them (no per-length table).
_MAX_INDEXED_LENGTH = 64

try:  # the pattern parser gives each pattern's (min, max) width: a cheap pre-filter
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_parse as _sre_parse  # type: ignore[no-redef]


def carriers_dir() -> Path:
    return SCHEMAS_DIR / "carriers"


class Format:
    """One compiled tracking-number format of a carrier."""

    __slots__ = (
        "carrier", "check", "constraints", "definition", "fullmatch", "id", "max_len",
        "min_len", "name", "pattern", "prefix",
    )

    def __init__(self, carrier: str, definition: dict[str, Any]) -> None:
        self.carrier = carrier
        self.definition = definition
        self.id: str = definition["id"]
        self.name: str = definition["name"]
        self.pattern: re.Pattern[str] = re.compile(definition["pattern"])
        self.fullmatch = self.pattern.fullmatch
        self.prefix: str = definition.get("implied_prefix", "")
        spec = definition.get("check_digit")
        self.check: Checker | None = (
            compile_algorithm(spec["algorithm"], spec.get("params")) if spec else None
        )
        self.constraints: tuple[tuple[str, frozenset[str], str], ...] = tuple(
            (c["group"], frozenset(c["one_of"]), c["reason"])
            for c in definition.get("constraints", ())
        )
        groups = self.pattern.groupindex
        if "serial" not in groups or (self.check is not None and "check_digit" not in groups):
            raise ValueError(f"{carrier}/{self.id}: pattern needs groups serial and check_digit")
        lo, hi = _sre_parse.parse(definition["pattern"]).getwidth()
        self.min_len = max(lo - len(self.prefix), 0)
        self.max_len = hi - len(self.prefix)

    def __repr__(self) -> str:
        return f"<Format {self.carrier}/{self.id}>"


class Carrier:
    """A carrier's compiled formats, indexed by number length."""

    __slots__ = (
        "by_length", "code", "definition", "formats", "long_formats", "name",
        "prefixed_lengths", "reinterprets", "route_starts", "routed", "routing",
    )

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.code: str = definition["carrier"]
        self.name: str = definition["name"]
        self.formats: tuple[Format, ...] = tuple(
            Format(self.code, f) for f in definition["formats"]
        )
        patterns = [r["pattern"] for r in definition.get("routing_prefixes", ())]
        self.routing: tuple[Callable[[str], re.Match[str] | None], ...] = tuple(
            re.compile(p).match for p in patterns
        )
        # whether any routing prefix matches at the start, in one regex call (canonical()
        # asks this of every scan's number)
        self.routed: Callable[[str], object] | None = None
        if patterns:
            try:
                self.routed = re.compile("|".join(f"(?:{p})" for p in patterns)).match
            except re.error:  # e.g. a global inline flag inside one pattern: ask each
                routing = self.routing
                self.routed = lambda n: any(r(n) for r in routing)
        # what every routing prefix starts with ("" when a pattern has no literal start):
        # str.startswith rules most numbers out for a tenth of a regex call (measured)
        self.route_starts: tuple[str, ...] = tuple({_literal_start(p): 0 for p in patterns})
        # canonical() must run the full validation only where a reading can change the number
        self.reinterprets = bool(self.routing) or any(f.prefix for f in self.formats)
        # number lengths at which a format with an implied prefix may apply
        self.prefixed_lengths = frozenset(
            n for f in self.formats if f.prefix
            for n in range(f.min_len, min(f.max_len, _MAX_INDEXED_LENGTH) + 1)
        )
        # length -> formats that can match a number of that length, in file order
        self.by_length: dict[int, tuple[Format, ...]] = {
            n: tuple(f for f in self.formats if f.min_len <= n <= f.max_len)
            for n in range(_MAX_INDEXED_LENGTH + 1)
        }
        self.long_formats = tuple(f for f in self.formats if f.max_len > _MAX_INDEXED_LENGTH)

    def candidates(self, length: int) -> tuple[Format, ...]:
        if length <= _MAX_INDEXED_LENGTH:
            return self.by_length[length]
        return self.long_formats

    def format(self, format_id: str) -> Format:
        for f in self.formats:
            if f.id == format_id:
                return f
        raise KeyError(f"{self.code} has no format {format_id!r}")

    def __repr__(self) -> str:
        return f"<Carrier {self.code}: {', '.join(f.id for f in self.formats)}>"


def _literal_start(pattern: str) -> str:
    """The literal text that every match of `pattern` starts with ("" if none is known)."""
    parsed = _sre_parse.parse(pattern)
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return ""
    start = []
    for op, av in parsed:
        if op is not _sre_parse.LITERAL:
            break
        start.append(chr(av))
    return "".join(start)


def load_definition(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return json.load(fh)


@cache
def carriers() -> dict[str, Carrier]:
    """Every carrier definition, compiled, in CARRIER_ORDER (then any extra files by name)."""
    found = {p.stem: p for p in carriers_dir().glob("*.json")}
    order = [c for c in CARRIER_ORDER if c in found] + sorted(set(found) - set(CARRIER_ORDER))
    result: dict[str, Carrier] = {}
    for code in order:
        c = Carrier(load_definition(found[code]))
        if c.code != code:
            raise ValueError(f"{found[code]}: carrier {c.code!r} does not match the file name")
        result[code] = c
    return result


def carrier(code: str) -> Carrier | None:
    return carriers().get(code)
