"""Check-digit algorithms, each written once and parameterised by data.

Every algorithm computes the check character of a serial; verifying is computing and
comparing. The carrier definitions (schemas/carriers/*.json) name an algorithm from
`ALGORITHMS` and give its parameters, so one function serves every carrier that shares a
scheme (GS1 mod 10 for USPS, SSCC and Canada Post; the same scheme with letter values for
UPS and OnTrac; and so on).

    compute_check_digit("gs1_mod10", "940011120620640626078")         # -> "7"
    verify("s10", "12345678", "5")                                       # -> True
    checker = compile_algorithm("mod10", {"weights": [2, 1], "values": "ups"})
    checker("5R8939035756712")                                          # -> "7"

`compile_algorithm` does the parameter work once (translation tables, slices) and returns
a `serial -> check character` function: the validator's hot path calls only that.

Algorithms (`ALGORITHMS` keys) and parameters:

- ``mod10``: weighted sum mod 10, check = (10 - sum mod 10) mod 10. ``weights`` repeat
  from the right end of the serial (the digit next to the check digit takes the first
  weight) unless ``from_left`` is true; ``values`` maps characters to numbers
  (``digits``; ``ups``: letters as UPS numbers them, A=2 ... H=9, I=0 ... , i.e.
  (ord - 63) mod 10; ``alnum36``: 0-9 then A=10 ... Z=35); ``sum_product_digits``
  adds the digits of each product (Luhn's doubling).
- ``gs1_mod10``: ``mod10`` with weights 3,1 from the right (GS1 General Specifications
  7.9.1; USPS Publication 199 "MOD 10"; SSCC-18).
- ``luhn``: ``mod10`` with weights 2,1 from the right and product digits summed (ISO/IEC
  7812-1 annex B).
- ``mod7``: the serial read as a number, mod 7 (DHL Express waybills).
- ``mod11_mod10``: weighted sum mod 11, then mod 10 (a remainder of 10 gives 0); the
  weights repeat from the right (FedEx Express: 1,3,7).
- ``s10``: UPU S10 weights 8,6,4,2,3,5,9,7 over the 8 serial digits, check = 11 - (sum mod
  11), with 10 -> 0 and 11 -> 5.
- ``iso7064_mod37_36``: the ISO/IEC 7064 hybrid system MOD 37,36 over digits and letters
  (DPD parcel numbers); the check character is one of 0-9A-Z.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

Checker = Callable[[str], str]

DIGITS = "0123456789"
ALNUM36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Character -> value maps, by name (the carrier files refer to them by these names).
VALUE_MAPS: dict[str, dict[str, int]] = {
    "digits": {c: i for i, c in enumerate(DIGITS)},
    # UPS numbers letters on from A=2 and wraps at 10: (ord(c) - 63) mod 10.
    "ups": {**{c: i for i, c in enumerate(DIGITS)},
            **{c: (ord(c) - 63) % 10 for c in ALNUM36[10:]}},
    "alnum36": {c: i for i, c in enumerate(ALNUM36)},
}


def _table(values: Mapping[str, int], fn: Callable[[int], int]) -> bytes:
    """A 256-byte translation table: character byte -> fn(value) (0 for other bytes).

    bytes.translate + sum runs in C, so a weighted digit sum over a slice costs well
    under a microsecond; fn's results must fit in a byte (we reduce by the modulus).
    """
    table = bytearray(256)
    for char, value in values.items():
        table[ord(char)] = fn(value)
    return bytes(table)


def _weighted_sum_fn(
    weights: Sequence[int], modulus: int, values: Mapping[str, int], from_left: bool,
    sum_product_digits: bool = False,
) -> Callable[[str], int]:
    """serial -> (sum of weight * value) mod modulus, the weights repeating along the serial."""
    k = len(weights)

    def product(w: int) -> Callable[[int], int]:
        if sum_product_digits:
            return lambda v: sum(divmod(v * w, 10)) % modulus
        return lambda v: (v * w) % modulus

    tables = [_table(values, product(w)) for w in weights]
    if k == 2:  # the common case, unrolled
        t0, t1 = tables
        if from_left:
            def weighted(serial: str) -> int:
                b = serial.encode()
                return sum(b[0::2].translate(t0)) + sum(b[1::2].translate(t1))
        else:
            def weighted(serial: str) -> int:
                b = serial.encode()
                return sum(b[-1::-2].translate(t0)) + sum(b[-2::-2].translate(t1))
        return weighted
    pairs = list(enumerate(tables))
    if from_left:
        def weighted(serial: str) -> int:
            b = serial.encode()
            return sum(sum(b[j::k].translate(t)) for j, t in pairs)
    else:
        def weighted(serial: str) -> int:
            b = serial.encode()
            return sum(sum(b[-1 - j::-k].translate(t)) for j, t in pairs)
    return weighted


def _values(name: str) -> dict[str, int]:
    try:
        return VALUE_MAPS[name]
    except KeyError:
        raise ValueError(f"unknown value map {name!r}; known: {sorted(VALUE_MAPS)}") from None


# Two weights (GS1, UPS, Luhn: the hot path) sum lanes instead of slices. The serial,
# translated to values 0-9 (one byte each) and read as a base-256 integer X, satisfies
# X % (256**2 - 1) == 256 * H + L with L, H the sums of the bytes at even and odd distances
# from its right end: 256**2 is 1 modulo 256**2 - 1, so X reduces to the sum of its byte
# pairs, and a lane of at most 28 values of 9 (252) never carries into the next. One
# translate, one from_bytes and one modulo (3.5k instructions) instead of two slices,
# two translates and two sums over bytes (6.2k). Longer serials take the slices.
_LANE_BYTES = 56
_from_bytes = int.from_bytes


def make_mod10(
    weights: Sequence[int] = (3, 1), from_left: bool = False, values: str = "digits",
    sum_product_digits: bool = False,
) -> Checker:
    if len(weights) != 2:
        weighted = _weighted_sum_fn(weights, 10, _values(values), from_left,
                                    sum_product_digits)

        def check(serial: str) -> str:
            return DIGITS[-weighted(serial) % 10]
        return check
    # hot path (GS1, UPS, Luhn): one flat function, no inner call
    t0, t1 = (
        _table(_values(values), (lambda v, w=w: sum(divmod(v * w, 10)) % 10)
               if sum_product_digits else (lambda v, w=w: (v * w) % 10))
        for w in weights
    )
    if from_left:
        def sliced(serial: str) -> str:
            b = serial.encode()
            return DIGITS[-(sum(b[0::2].translate(t0)) + sum(b[1::2].translate(t1))) % 10]
    else:
        def sliced(serial: str) -> str:
            b = serial.encode()
            return DIGITS[-(sum(b[-1::-2].translate(t0)) + sum(b[-2::-2].translate(t1))) % 10]
    # the weight of the low lane (even distances from the right end), by len(serial) % 2;
    # from the left, the first byte is in the low lane when the length is odd
    w0, w1 = weights
    low_weight_first = (not from_left, True)
    if not sum_product_digits:  # weight * value: one lane sum per weight, one translate
        tv = _table(_values(values), lambda v: v % 10)
        lane_weights = tuple((w0, w1) if first else (w1, w0) for first in low_weight_first)

        def check2(serial: str) -> str:
            b = serial.encode()
            if len(b) > _LANE_BYTES:
                return sliced(serial)
            x = _from_bytes(b.translate(tv)) % 65535
            wl, wh = lane_weights[len(b) & 1]
            return DIGITS[-(wl * (x & 255) + wh * (x >> 8)) % 10]
        return check2

    def check2_products(serial: str) -> str:  # Luhn: the weighted values differ per weight
        b = serial.encode()
        if len(b) > _LANE_BYTES:
            return sliced(serial)
        x0 = _from_bytes(b.translate(t0)) % 65535
        x1 = _from_bytes(b.translate(t1)) % 65535
        if low_weight_first[len(b) & 1]:
            return DIGITS[-((x0 & 255) + (x1 >> 8)) % 10]
        return DIGITS[-((x1 & 255) + (x0 >> 8)) % 10]
    return check2_products


def make_gs1_mod10(values: str = "digits") -> Checker:
    return make_mod10((3, 1), False, values)


def make_luhn() -> Checker:
    return make_mod10((2, 1), False, "digits", sum_product_digits=True)


def make_mod7() -> Checker:
    def check(serial: str) -> str:
        return DIGITS[int(serial) % 7]
    return check


def make_mod11_mod10(weights: Sequence[int] = (1, 3, 7), from_left: bool = False) -> Checker:
    weighted = _weighted_sum_fn(weights, 11, VALUE_MAPS["digits"], from_left)

    def check(serial: str) -> str:
        return DIGITS[weighted(serial) % 11 % 10]
    return check


S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def make_s10(weights: Sequence[int] = S10_WEIGHTS) -> Checker:
    # The weights run from the left over exactly len(weights) digits (the pattern fixes 8).
    weighted = _weighted_sum_fn(weights, 11, VALUE_MAPS["digits"], from_left=True)

    def check(serial: str) -> str:
        c = 11 - weighted(serial) % 11
        return "0" if c == 10 else "5" if c == 11 else DIGITS[c]
    return check


def make_iso7064_mod37_36(alphabet: str = ALNUM36) -> Checker:
    m = len(alphabet)  # 36: the hybrid system MOD (M+1),M
    value = {c: i for i, c in enumerate(alphabet)}

    def check(serial: str) -> str:
        p = m
        for ch in serial:
            s = (p + value[ch]) % m or m
            p = (2 * s) % (m + 1)
        return alphabet[(m + 1 - p) % m]
    return check


ALGORITHMS: dict[str, Callable[..., Checker]] = {
    "mod10": make_mod10,
    "gs1_mod10": make_gs1_mod10,
    "luhn": make_luhn,
    "mod7": make_mod7,
    "mod11_mod10": make_mod11_mod10,
    "s10": make_s10,
    "iso7064_mod37_36": make_iso7064_mod37_36,
}

def detects_all_substitutions(name: str, params: Mapping[str, Any] | None = None) -> bool:
    """True when `name` with `params` rejects every single-digit substitution in the digits it
    covers (serial and check digit).

    GS1 mod 10, Luhn and ISO 7064 do; a mod 10 whose weights are all coprime with 10 does.
    Others do not: a weight of 2 (UPS, OnTrac) cannot tell 0 from 5; S10 maps both
    remainders 0 and 6 to the check digit 5; mod 11 then mod 10 folds 10 onto 0; mod 7
    cannot tell digits 7 apart.
    """
    p = dict(params or {})
    if name in ("gs1_mod10", "luhn", "iso7064_mod37_36"):
        return True
    if name != "mod10":
        return False

    # mod 10 detects a substitution at a position exactly when that position's digit ->
    # contribution map is injective over 0-9.
    def contribution(d: int, w: int) -> int:
        return (sum(divmod(d * w, 10)) if p.get("sum_product_digits") else d * w) % 10

    return all(
        len({contribution(d, w) for d in range(10)}) == 10 for w in p.get("weights", (3, 1))
    )


def compile_algorithm(name: str, params: Mapping[str, Any] | None = None) -> Checker:
    """The `serial -> check character` function of algorithm `name` with `params`."""
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown check-digit algorithm {name!r}") from None
    return factory(**dict(params or {}))


@lru_cache(maxsize=256)
def _cached(name: str, frozen_params: tuple[tuple[str, Any], ...]) -> Checker:
    return compile_algorithm(name, dict(frozen_params))


def _freeze(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def compute_check_digit(algorithm: str, serial: str, **params: Any) -> str:
    """The check character that `algorithm` (with `params`) gives `serial`."""
    return _cached(algorithm, _freeze(params))(serial)


def verify(algorithm: str, serial: str, check_digit: str, **params: Any) -> bool:
    """True when `check_digit` is the one `algorithm` computes for `serial`."""
    return compute_check_digit(algorithm, serial, **params) == check_digit
