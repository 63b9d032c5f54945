"""Check-digit algorithms: hand-worked examples, then properties against plain reference code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.checksums import (
    ALGORITHMS,
    ALNUM36,
    compile_algorithm,
    compute_check_digit,
    detects_all_substitutions,
    verify,
)

UPS = {"weights": [1, 2], "from_left": True, "values": "ups"}


# --- hand-worked examples -------------------------------------------------------------

def test_gs1_mod10_hand_worked() -> None:
    # GS1's own GTIN example 629104150021: from the right, weights 3,1:
    # 1*3 + 2 + 0*3 + 0 + 5*3 + 1 + 4*3 + 0 + 1*3 + 9 + 2*3 + 6 = 57 -> 10 - 7 = 3
    assert compute_check_digit("gs1_mod10", "629104150021") == "3"
    assert verify("gs1_mod10", "629104150021", "3")
    assert not verify("gs1_mod10", "629104150021", "4")


def test_gs1_mod10_parity_follows_the_right_end() -> None:
    # A leading zero changes nothing: the weights are anchored at the check digit.
    assert compute_check_digit("gs1_mod10", "0629104150021") == "3"
    # sum multiple of 10 -> check digit 0, not 10
    assert compute_check_digit("gs1_mod10", "0000") == "0"
    assert compute_check_digit("gs1_mod10", "55") == "0"  # 5*3 + 5 = 20


def test_luhn_hand_worked() -> None:
    # 1234567 from the right, doubling 7, 5, 3, 1: 14->5, 6, 10->1, 4, 6, 2, 2 = 26 -> 4
    assert compute_check_digit("luhn", "1234567") == "4"
    assert verify("luhn", "1234567", "4")
    assert not verify("luhn", "1234567", "3")


def test_ups_mod10_hand_worked() -> None:
    # UPS's published sample 1Z 999 AA1 01 2345 6784; after 1Z: 9 9 9 A A 1 0 1 2 3 4 5 6 7 8
    # with A = 2. Odd positions (weight 1): 9+9+2+0+2+4+6+8 = 40; even (weight 2):
    # 2*(9+2+1+1+3+5+7) = 56; 96 -> 10 - 6 = 4
    assert compute_check_digit("mod10", "999AA1012345678", **UPS) == "4"


def test_ups_letter_values() -> None:
    from streams.core.checksums import VALUE_MAPS

    ups = VALUE_MAPS["ups"]
    assert [ups[c] for c in "AHIJRSZ"] == [2, 9, 0, 1, 9, 0, 7]


def test_mod7_hand_worked() -> None:
    # 123456789 = 7 * 17636684 + 1
    assert compute_check_digit("mod7", "123456789") == "1"
    assert compute_check_digit("mod7", "7") == "0"


def test_mod11_mod10_hand_worked() -> None:
    # 12345678901 from the right, weights 1,3,7: 1+0+63+8+21+42+5+12+21+2+3 = 178;
    # 178 mod 11 = 2; 2 mod 10 = 2
    assert compute_check_digit("mod11_mod10", "12345678901") == "2"
    # "100": weights from the right 1,3,7 -> 1*7 = 7
    assert compute_check_digit("mod11_mod10", "100") == "7"
    # remainder 10 folds to 0: "31" -> 1*1 + 3*3 = 10; 10 mod 11 = 10; 10 mod 10 = 0
    assert compute_check_digit("mod11_mod10", "31") == "0"


def test_s10_hand_worked() -> None:
    # UPU S10 example serial 47312482, weights 8 6 4 2 3 5 9 7:
    # 32 + 42 + 12 + 2 + 6 + 20 + 72 + 14 = 200; 200 mod 11 = 2; 11 - 2 = 9
    assert compute_check_digit("s10", "47312482") == "9"
    # sum 0 -> 11 - 0 = 11 -> 5
    assert compute_check_digit("s10", "00000000") == "5"
    # 6 at weight 2 -> 12; 12 mod 11 = 1; 11 - 1 = 10 -> 0
    assert compute_check_digit("s10", "00060000") == "0"


def test_iso7064_mod37_36_hand_worked() -> None:
    # p = 36; '1': s = 37 mod 36 = 1, p = 2; '2': s = 4, p = 8; check = (37 - 8) mod 36 = 29 = T
    assert compute_check_digit("iso7064_mod37_36", "12") == "T"
    # 'A' = 10: s = 46 mod 36 = 10, p = 20; check = 17 = H
    assert compute_check_digit("iso7064_mod37_36", "A") == "H"
    # '0': s = 36 mod 36 = 0 -> 36, p = 72 mod 37 = 35; check = 2
    assert compute_check_digit("iso7064_mod37_36", "0") == "2"


def test_unknown_algorithm_and_value_map() -> None:
    with pytest.raises(ValueError):
        compile_algorithm("nope")
    with pytest.raises(ValueError):
        compile_algorithm("mod10", {"values": "nope"})


def test_substitution_guarantees() -> None:
    assert detects_all_substitutions("gs1_mod10")
    assert detects_all_substitutions("luhn")
    assert detects_all_substitutions("iso7064_mod37_36")
    assert detects_all_substitutions("mod10", {"weights": [3, 1]})
    assert detects_all_substitutions("mod10", {"weights": [2, 1], "sum_product_digits": True})
    assert not detects_all_substitutions("mod10", UPS)  # weight 2: 0 and 5 look alike
    assert not detects_all_substitutions("s10")  # remainders 0 and 6 both give 5
    assert not detects_all_substitutions("mod11_mod10")
    assert not detects_all_substitutions("mod7")


def test_ups_weight_two_misses_0_to_5() -> None:
    # the reason UPS numbers are left out of the substitution property
    a = compute_check_digit("mod10", "999AA1012345678", **UPS)
    b = compute_check_digit("mod10", "949AA1012345678", **UPS)  # 2nd char: 9 -> 4 (+-5)
    assert a == b


# --- properties against independent, plain implementations ---------------------------

def ref_weighted(serial: str, weights: list[int], from_left: bool, value) -> int:  # type: ignore[no-untyped-def]
    chars = serial if from_left else serial[::-1]
    return sum(value(c) * weights[i % len(weights)] for i, c in enumerate(chars))


digits = st.text(alphabet="0123456789", min_size=1, max_size=40)


@given(digits)
def test_gs1_matches_reference(serial: str) -> None:
    total = ref_weighted(serial, [3, 1], False, int)
    assert compute_check_digit("gs1_mod10", serial) == str((10 - total % 10) % 10)


@given(digits)
def test_luhn_matches_reference(serial: str) -> None:
    total = 0
    for i, c in enumerate(reversed(serial)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    assert compute_check_digit("luhn", serial) == str((10 - total % 10) % 10)
    # the Luhn property: the full number's Luhn sum is a multiple of 10
    full = serial + compute_check_digit("luhn", serial)
    s = sum((lambda d: d - 9 if d > 9 else d)(int(c) * (2 if i % 2 else 1))
            for i, c in enumerate(reversed(full)))
    assert s % 10 == 0


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=30))
def test_ups_matches_reference(serial: str) -> None:
    def value(c: str) -> int:
        return int(c) if c.isdigit() else (ord(c) - 63) % 10
    total = ref_weighted(serial, [1, 2], True, value)
    assert compute_check_digit("mod10", serial, **UPS) == str((10 - total % 10) % 10)


@pytest.mark.parametrize("length", [1, 2, 27, 28, 55, 56, 57, 58, 90])
def test_two_weight_checkers_at_the_lane_limit(length: int) -> None:
    # mod 10 with two weights sums byte lanes of serials up to 56 bytes, slices beyond: the
    # largest values everywhere give the largest lane sums
    for serial in ("9" * length, "Z" * length, ("9Z" * length)[:length]):
        if serial.isdigit():
            total = ref_weighted(serial, [3, 1], False, int)
            assert compute_check_digit("gs1_mod10", serial) == str(-total % 10)
            luhn = sum(sum(divmod(int(c) * (2 if i % 2 == 0 else 1), 10))
                       for i, c in enumerate(reversed(serial)))
            assert compute_check_digit("luhn", serial) == str(-luhn % 10)
        ups = ref_weighted(serial, [1, 2], True,
                           lambda c: int(c) if c.isdigit() else (ord(c) - 63) % 10)
        assert compute_check_digit("mod10", serial, **UPS) == str(-ups % 10)


@given(digits)
def test_mod11_mod10_matches_reference(serial: str) -> None:
    total = ref_weighted(serial, [1, 3, 7], False, int)
    assert compute_check_digit("mod11_mod10", serial) == str(total % 11 % 10)


@given(st.text(alphabet="0123456789", min_size=8, max_size=8))
def test_s10_matches_reference(serial: str) -> None:
    total = sum(int(c) * w for c, w in zip(serial, [8, 6, 4, 2, 3, 5, 9, 7], strict=True))
    c = 11 - total % 11
    assert compute_check_digit("s10", serial) == {10: "0", 11: "5"}.get(c, str(c))


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_mod7_matches_reference(serial: str) -> None:
    assert compute_check_digit("mod7", serial) == str(int(serial) % 7)


@given(st.text(alphabet=ALNUM36, min_size=1, max_size=30))
def test_iso7064_defining_property(serial: str) -> None:
    # ISO/IEC 7064 hybrid MOD 37,36: running the recurrence over data + check leaves s = 1
    full = serial + compute_check_digit("iso7064_mod37_36", serial)
    p = 36
    for ch in full:
        s = (p + ALNUM36.index(ch)) % 36 or 36
        p = (2 * s) % 37
    assert s == 1


@pytest.mark.parametrize("name", ["gs1_mod10", "luhn", "iso7064_mod37_36"])
@given(serial=st.text(alphabet="0123456789", min_size=2, max_size=30), data=st.data())
def test_single_substitution_detected(name: str, serial: str, data: st.DataObject) -> None:
    check = compute_check_digit(name, serial)
    full = serial + check
    i = data.draw(st.integers(0, len(full) - 1))
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != full[i]]))
    mutated = full[:i] + new + full[i + 1:]
    assert not verify(name, mutated[:-1], mutated[-1])


def test_registry_is_complete() -> None:
    assert set(ALGORITHMS) == {
        "mod10", "gs1_mod10", "luhn", "mod7", "mod11_mod10", "s10", "iso7064_mod37_36",
    }
