"""Tracking-number validation: canonical form, format and check digit, per carrier.

    validate("9400 1112 0620 6406 2607 87", "usps")  -> Validation(valid=True, ...)
    canonical("420 90245 9261 2903 ...", "usps")    -> "92612903..."  (routing prefix gone)
    identify("1Z...")                                -> [Validation, ...] every acceptor
    classify("1Z...")                                -> one Validation (check command)

Canonical form (the `number` of every Validation, and the tracking key's number): all
whitespace (Unicode included), dashes (ASCII and Unicode) and parentheses removed, upper
case. For carriers with routing prefixes (USPS: 420 + ZIP+4 or 420 + ZIP5 ahead of the
tracking number in barcode data, also printed as "(420) 12345 ..." / "(420)12345(92)...")
the prefix is removed: the readings are tried in the order as-is, ZIP+4, ZIP5 and the first
that passes a format and its check digit wins (so a 34-digit 420+ZIP+4+22-digit number is
read as that, not as 420+ZIP5+26 digits, when both would pass). A USPS 20-digit number that
only passes as a 22-digit "91" Confirmation number printed without its 91 canonicalises to
the 22 digits, so both printings give one key. An invalid number keeps the reading whose
pattern matched (if any), else the normalised input.

Reasons (`Validation.reason`; None when valid):
    unknown_carrier  no definition for the courier code
    empty            nothing left after canonicalisation
    format           no format of the carrier matches the number's shape
    check_digit      a format matches but the check digit is wrong
    country_code     (S10) the country code is not ISO 3166-1 alpha-2; more generally the
                     `reason` of a failing constraint in the carrier file
When several formats match the shape, the first in file order is reported with its reason.

`validate` with a known carrier is the hot path (the stream processor calls it per label):
formats are pre-filtered by length, patterns precompiled, digit sums run in C
(bytes.translate + sum), and nothing is cached per number.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streams.core.carriers import Carrier, carriers

__all__ = ["REASONS", "Validation", "canonical", "classify", "identify", "validate"]

REASONS = ("unknown_carrier", "empty", "format", "check_digit", "country_code")


class Validation(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A validator's verdict. A msgspec struct: built in C (a frozen dataclass's __init__
    costs 3x as much), and shipped inside decoded events as a compact msgpack array."""

    valid: bool
    carrier: str | None
    format: str | None
    number: str  # canonical number (always set, even when invalid)
    serial: str | None
    check_digit: str | None
    reason: str | None  # None when valid

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid, "carrier": self.carrier, "format": self.format,
            "number": self.number, "serial": self.serial, "check_digit": self.check_digit,
            "reason": self.reason,
        }


# Characters that printing adds and the number does not hold (whitespace is handled by
# str.split, which knows every Unicode space).
_DROP = str.maketrans("", "", "-()\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u00ad")


def _strip_separators(number: str) -> str:
    # The common case, nothing to remove: only a shortcut, as an alnum string holds no
    # whitespace and nothing of _DROP. bytes.isalnum reads a 256-entry table; str.isalnum
    # looks every character up in the Unicode tables (140 ns for 26 digits, 55 this way).
    if number.isascii() and number.encode().isalnum():
        return number.upper()
    return "".join(number.translate(_DROP).split()).upper()


def _attempt(c: Carrier, n: str) -> Validation | None:
    """The first format of `c` that accepts reading `n`, else the first near miss, else None."""
    miss = None
    formats = c.by_length.get(len(n))
    if formats is None:
        formats = c.candidates(len(n))
    for f in formats:
        s = f.prefix + n if f.prefix else n
        m = f.fullmatch(s)
        if m is None:
            continue
        serial = m["serial"]
        check = f.check
        if check is None:
            cd = None
        else:
            cd = m["check_digit"]
            if check(serial) != cd:
                if miss is None:
                    miss = Validation(False, c.code, f.id, n, serial, cd, "check_digit")
                continue
        if f.constraints:
            failed = next((r for g, ok, r in f.constraints if m[g] not in ok), None)
            if failed is not None:
                if miss is None:
                    miss = Validation(False, c.code, f.id, n, serial, cd, failed)
                continue
        return Validation(True, c.code, f.id, s, serial, cd, None)
    return miss


def _validate(c: Carrier, n: str) -> Validation:
    v = _attempt(c, n)
    if v is not None and v.valid:
        return v
    for match_prefix in c.routing:
        m = match_prefix(n)
        if m is not None and m.end() < len(n):
            r = _attempt(c, n[m.end():])
            if r is not None:
                if r.valid:
                    return r
                if v is None:
                    v = r
    if v is not None:
        return v
    return Validation(False, c.code, None, n, None, None, "format" if n else "empty")


def validate(number: str, carrier: str) -> Validation:
    """Validate `number` (as printed) for the courier code `carrier`."""
    # Hot path, inlined: the first format that accepts the number as given (upper-cased;
    # a pattern match proves there was nothing to strip, since patterns admit no
    # separators). Anything else (printed forms, near misses, routing or implied
    # prefixes) goes to _validate on the fully normalised number.
    c = _CARRIERS.get(carrier)
    if c is None:
        c = _load().get(carrier) or _CARRIERS.get(carrier.strip().lower())
        if c is None:
            return Validation(False, carrier, None, _strip_separators(number), None, None,
                              "unknown_carrier")
    n = number.upper()
    formats = c.by_length.get(len(n))
    if formats:
        for f in formats:
            if f.prefix:
                break
            m = f.fullmatch(n)
            if m is None:
                continue
            serial = m["serial"]
            check = f.check
            if check is None:
                cd = None
            else:
                cd = m["check_digit"]
                if check(serial) != cd:
                    break
            if f.constraints:
                break
            return Validation(True, c.code, f.id, n, serial, cd, None)
    return _validate(c, _strip_separators(number))


def canonical(number: str, carrier: str | None = None) -> str:
    """The canonical form of `number` (see the module docstring); cheap.

    Without a carrier only the generic normalisation applies, plus the USPS reading when
    the number is a valid USPS number behind a 420 routing prefix or without its 91.
    """
    n = (number.upper() if number.isascii() and number.encode().isalnum()
         else _strip_separators(number))  # _strip_separators with its shortcut inlined
    if carrier is None:
        if n.isdigit() and (len(n) == 20 or (len(n) >= 28 and n.startswith("420"))):
            v = validate(n, "usps")
            if v.valid:
                return v.number
        return n
    c = _CARRIERS.get(carrier) if _CARRIERS else _load().get(carrier)
    if c is None or not c.reinterprets:
        return n
    if len(n) not in c.prefixed_lengths and (
            c.routed is None or not n.startswith(c.route_starts) or not c.routed(n)):
        return n  # no reading can change it: skip the validation
    return _validate(c, n).number


def _accepting(c: Carrier, n: str) -> list[Validation]:
    """Every format of `c` (once each) that accepts `n` in some reading."""
    found: dict[str, Validation] = {}
    readings = [n]
    for match_prefix in c.routing:
        m = match_prefix(n)
        if m is not None and m.end() < len(n):
            readings.append(n[m.end():])
    for reading in readings:
        for f in c.candidates(len(reading)):
            if f.id in found:
                continue
            v = _attempt_one(c, f, reading)
            if v is not None:
                found[f.id] = v
    return list(found.values())


def _attempt_one(c: Carrier, f: Any, n: str) -> Validation | None:
    s = f.prefix + n if f.prefix else n
    m = f.fullmatch(s)
    if m is None:
        return None
    serial = m["serial"]
    cd = None
    if f.check is not None:
        cd = m["check_digit"]
        if f.check(serial) != cd:
            return None
    if any(m[g] not in ok for g, ok, _r in f.constraints):
        return None
    return Validation(True, c.code, f.id, s, serial, cd, None)


def identify(number: str) -> list[Validation]:
    """Every (carrier, format) that accepts `number`, in CARRIER_ORDER then file order."""
    n = _strip_separators(number)
    if not n:
        return []
    result: list[Validation] = []
    for c in (_CARRIERS or _load()).values():
        result.extend(_accepting(c, n))
    return result


def classify(number: str) -> Validation:
    """One verdict for a number of unknown carrier (the `check` command's answer).

    The first acceptor in identify()'s order; else the first carrier (same order) whose
    format matches the shape but not the check digit or a constraint (carrier and format
    set, reason says why); else invalid with reason `format` (or `empty`), carrier None.
    """
    found = identify(number)
    if found:
        return found[0]
    n = _strip_separators(number)
    if n:
        for c in (_CARRIERS or _load()).values():
            v = _validate(c, n)
            if v.reason != "format":
                return v
    return Validation(False, None, None, n, None, None, "format" if n else "empty")


_CARRIERS: dict[str, Carrier] = {}


def _load() -> dict[str, Carrier]:
    """Fill the module-level carrier table on first use (a dict lookup beats a call)."""
    if not _CARRIERS:
        _CARRIERS.update(carriers())
    return _CARRIERS
