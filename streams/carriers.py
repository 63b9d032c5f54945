"""Carrier definitions: schemas/carriers/<code>.json, loaded and compiled once, on first use.

    carrier("usps")        -> Carrier (formats compiled, check-digit functions bound)
    carriers()             -> {code: Carrier} in CARRIER_ORDER
    generate("usps", rng=random.Random(7))           -> a valid canonical USPS number
    generate("ups", "ups_1z", rng=rng)                -> a valid 1Z number
    printed("usps", number, rng)                      -> the number as a person or a
                                                         scanner might give it (spaces,
                                                         dashes, lower case, 420+ZIP ...)

`generate` and `printed` are for simulators, benchmarks and property tests: they build
numbers from the format patterns and compute check digits with streams.checksums, so they
never need a list of sample numbers.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import streams
from streams.checksums import Checker, compile_algorithm

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
    return streams.SCHEMAS_DIR / "carriers"


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


# --- generating numbers (simulator, benchmark, tests) ---------------------------------

_CATEGORY_CHARS = {
    _sre_parse.CATEGORY_DIGIT: "0123456789",
}


def _gen(tokens: Any, rng: random.Random, out: list[str], spans: dict[str, tuple[int, int]],
         names: dict[int, str]) -> None:
    """Append a random string matching the parsed `tokens` (lookarounds ignored) to out."""
    for op, av in tokens:
        if op is _sre_parse.LITERAL:
            out.append(chr(av))
        elif op is _sre_parse.IN:
            chars: list[str] = []
            for iop, iav in av:
                if iop is _sre_parse.LITERAL:
                    chars.append(chr(iav))
                elif iop is _sre_parse.RANGE:
                    chars.extend(chr(c) for c in range(iav[0], iav[1] + 1))
                elif iop is _sre_parse.CATEGORY:
                    chars.extend(_CATEGORY_CHARS[iav])
                else:  # NEGATE etc.: not used in our patterns
                    raise ValueError(f"cannot generate from set item {iop}")
            out.append(rng.choice(chars))
        elif op in (_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT):
            lo, hi, sub = av
            for _ in range(rng.randint(lo, min(hi, lo + 8))):
                _gen(sub, rng, out, spans, names)
        elif op is _sre_parse.SUBPATTERN:
            group, _add, _del, sub = av
            if group in names:
                start = sum(map(len, out))
                _gen(sub, rng, out, spans, names)
                spans[names[group]] = (start, sum(map(len, out)))
            else:
                _gen(sub, rng, out, spans, names)
        elif op is _sre_parse.BRANCH:
            _gen(rng.choice(av[1]), rng, out, spans, names)
        elif op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT, _sre_parse.AT):
            continue  # generate-and-test: validate() rejects what a lookahead forbids
        else:
            raise ValueError(f"cannot generate from pattern op {op}")


@cache
def _parsed(pattern: str) -> tuple[Any, dict[int, str]]:
    compiled = re.compile(pattern)
    return _sre_parse.parse(pattern), {v: k for k, v in compiled.groupindex.items()}


def _random_candidate(fmt: Format, rng: random.Random) -> str:
    parsed, names = _parsed(fmt.pattern.pattern)
    out: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    _gen(parsed, rng, out, spans, names)
    text = "".join(out)
    if fmt.prefix and not text.startswith(fmt.prefix):
        return ""
    for group, allowed, _reason in fmt.constraints:  # pick an allowed value outright
        if group in spans:
            a, b = spans[group]
            text = text[:a] + rng.choice(sorted(allowed)) + text[b:]
    if fmt.check is not None:
        m = fmt.fullmatch(text)
        if m is None:
            return ""
        a, b = m.span("check_digit")
        text = text[:a] + fmt.check(m["serial"]) + text[b:]
    return text[len(fmt.prefix):]


def generate(code: str, format_id: str | None = None, rng: random.Random | None = None) -> str:
    """A random valid number of carrier `code` (format `format_id`, or a random one), as printed.

    The result is what validate() accepts; validate(result, code).number is its canonical
    form (the same string except for formats with an implied prefix, e.g. usps_91_short).
    """
    from streams.validation import validate  # circular at import time only

    rng = rng or random.Random()
    c = carrier(code)
    if c is None:
        raise KeyError(f"unknown carrier {code!r}")
    for _ in range(200):
        fmt = c.format(format_id) if format_id else rng.choice(c.formats)
        number = _random_candidate(fmt, rng)
        if not number:
            continue
        v = validate(number, code)
        # the number must be read as the format asked for (another format may claim it)
        if v.valid and (format_id is None or v.format == format_id):
            return number
    raise RuntimeError(f"could not generate a valid {code}/{format_id or '*'} number")


def printed(code: str, number: str, rng: random.Random) -> str:
    """A printed/scanned variant of a valid `number`: what the label platforms may send.

    Spaces in groups of 4, dashes, lower case, and for USPS the 420+ZIP5 / 420+ZIP+4
    routing prefix, plain or in the GS1 human-readable "(420) ZIP" form.
    """
    style = rng.randrange(6)
    if code == "usps" and number.isdigit() and style >= 3:
        zip_ = "".join(rng.choices("0123456789", k=rng.choice((5, 9))))
        from streams.validation import validate
        # routing prefix + 34 digits is ambiguous; use only a prefix that reads back the same
        candidate = "420" + zip_ + number
        if validate(candidate, code).number != validate(number, code).number:
            candidate = "420" + zip_[:5] + number
            if validate(candidate, code).number != validate(number, code).number:
                return number
        if style == 3:
            return candidate
        if style == 4:
            return f"(420) {zip_} {number}"
        return f"(420){zip_}({number[:2]}){number[2:]}"
    if style == 0:
        return " ".join(number[i:i + 4] for i in range(0, len(number), 4))
    if style == 1:
        return "-".join(number[i:i + 5] for i in range(0, len(number), 5))
    if style == 2:
        return number.lower()
    return f"  {number}\t"
