"""Validate tracking numbers: one JSON line per number; exit 1 if any is invalid.

Numbers come from the arguments or, when there are none, from stdin, one per line, as
`NUMBER` or `CARRIER<TAB>NUMBER`. The carrier of a line is its CARRIER field, else
--carrier, else the number's own shape: identify() across every carrier, the first acceptor
in the order usps, ups, fedex, dhl, amazon, ontrac, lasership, canada_post, purolator, dpd,
canpar, gofo, landmark, old_dominion, speedee, yodel, yunexpress, s10 (then formats in
their file order). A number no carrier accepts is reported invalid: with the first carrier
and format whose shape it has and the reason (`check_digit`, `country_code`), or with
carrier null and reason `format`.

Output, one line per input in input order, exactly these keys:
    {"input", "valid", "carrier", "format", "number", "reason"}
where `input` is the NUMBER as given (without the CARRIER field) and `number` the canonical
number. Blank stdin lines are skipped (files end with them; they hold no number); an
explicitly empty argument is reported, invalid with reason `empty`.

Exit status: 0 when every number is valid (or there were none), 1 when any is invalid,
2 on a usage error (unknown --carrier code, bad arguments). Stdin is processed line by line
(never held in memory) and output goes through the buffered stdout, flushed per line only
when it is a terminal.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterable, Iterator
from typing import IO

import orjson

from streams.core.carriers import CARRIER_ORDER, carriers
from streams.core.validation import Validation, classify, validate


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "numbers", nargs="*", metavar="NUMBER",
        help="tracking numbers to check (default: read stdin, NUMBER or CARRIER<TAB>NUMBER a line)",
    )
    parser.add_argument(
        "--carrier", metavar="CODE",
        help="courier code for numbers without one (default: identify from the number): "
        + ", ".join(CARRIER_ORDER),
    )


def check_one(number: str, carrier: str | None) -> Validation:
    """The verdict for one number: for `carrier` when given, else by identification."""
    return validate(number, carrier) if carrier else classify(number)


def stdin_items(stream: IO[str], default: str | None) -> Iterator[tuple[str, str | None]]:
    """(number, carrier or `default`) per non-blank line `NUMBER` or `CARRIER<TAB>NUMBER`."""
    for raw in stream:
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        code, tab, number = line.partition("\t")
        if tab:
            yield number, code.strip().lower() or default
        else:
            yield line, default


def _emit(items: Iterable[tuple[str, str | None]], out: IO[bytes], flush_each: bool) -> int:
    status = 0
    dumps = orjson.dumps
    for number, carrier in items:
        v = check_one(number, carrier)
        if not v.valid:
            status = 1
        out.write(dumps({
            "input": number, "valid": v.valid, "carrier": v.carrier, "format": v.format,
            "number": v.number, "reason": v.reason,
        }) + b"\n")
        if flush_each:
            out.flush()
    out.flush()
    return status


def input_items(numbers: list[str], carrier: str | None, command: str = "check",
                ) -> Iterable[tuple[str, str | None]]:
    """(number, carrier) of the arguments, or else of stdin's lines (`stdin_items`). On a
    terminal, says first that it reads stdin (else it would seem to hang)."""
    if numbers:
        return ((n, carrier) for n in numbers)
    if getattr(sys.stdin, "isatty", lambda: False)():
        print(f"{command}: reading tracking numbers from stdin, one a line (NUMBER or "
              f"CARRIER<TAB>NUMBER); Ctrl-D to end. Or give them as arguments: "
              f"tracking-validator {command} NUMBER...", file=sys.stderr)
    stdin: IO[str] = sys.stdin
    if hasattr(stdin, "buffer"):  # undecodable bytes become U+FFFD (an invalid number)
        stdin = io.TextIOWrapper(stdin.buffer, encoding="utf-8", errors="replace")
    return stdin_items(stdin, carrier)


def run(args: argparse.Namespace) -> int:
    # courier codes are case-insensitive, as in events (--carrier UPS)
    carrier: str | None = None if args.carrier is None else args.carrier.strip().lower()
    if carrier is not None and carrier not in carriers():
        print(
            f"tracking-validator check: error: unknown courier code {carrier!r} "
            f"(known: {', '.join(carriers())})",
            file=sys.stderr,
        )
        return 2
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a text-only stdout (some embedders): encode ourselves
        out = _TextBytes(sys.stdout)
    else:
        sys.stdout.flush()  # keep anything already written as text ahead of our bytes
    flush_each = bool(getattr(sys.stdout, "isatty", lambda: False)())
    return _emit(input_items(args.numbers, carrier), out, flush_each)


class _TextBytes:
    """Bytes writes onto a text stream."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode())

    def flush(self) -> None:
        self.stream.flush()
