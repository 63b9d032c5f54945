"""Valid tracking numbers made from the carrier definitions, never taken from a list.

    generate("usps", rng=random.Random(7))           -> a valid canonical USPS number
    generate("ups", "ups_1z", rng=rng)                -> a valid 1Z number
    printed("usps", number, rng)                      -> the number as a person or a
                                                         scanner might give it (spaces,
                                                         dashes, lower case, 420+ZIP ...)

For simulators, benchmarks and property tests: numbers are built from the format patterns
and their check digits computed by the formats' own algorithms (streams.core.checksums).
"""

from __future__ import annotations

import random
import re
from functools import cache
from typing import Any

from streams.core.carriers import Format, _sre_parse, carrier
from streams.core.validation import validate

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
