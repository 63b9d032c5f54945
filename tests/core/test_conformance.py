"""The public tracking_number_data v2.0.0 conformance suite (read from outside the repo).

Every valid test number must validate for its courier code, every invalid one must not.
The suite lives beside the repository (../shared/conformance/...) and is never copied in;
TRACKING_VALIDATOR_CONFORMANCE points at another `couriers` directory. Where it is absent
the tests skip, but under CI=true, where they fail: the suite must be there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import in_ci

from streams.core.validation import canonical, validate

DEFAULT_DIR = (
    Path(__file__).resolve().parents[3]
    / "shared" / "conformance" / "tracking_number_data_v2.0.0" / "couriers"
)
SUITE_DIR = Path(os.environ.get("TRACKING_VALIDATOR_CONFORMANCE") or DEFAULT_DIR)
MISSING = (f"conformance suite not found at {SUITE_DIR} (the repository's sibling "
           "../shared/conformance, or set TRACKING_VALIDATOR_CONFORMANCE)")


def suite_missing() -> None:
    """Under CI=true the suite must be there: fail; elsewhere skip, with where it was looked
    for."""
    if in_ci():
        pytest.fail(f"CI=true: {MISSING}")
    pytest.skip(MISSING)


def _cases() -> list[Any]:
    if not SUITE_DIR.is_dir():
        return [pytest.param(None, None, None, id="suite-missing")]
    cases = []
    for path in sorted(SUITE_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        code = doc["courier_code"]
        valid_in: dict[str, list[str]] = {}  # number -> the formats that list it valid
        for t in doc["tracking_numbers"]:
            for n in t["test_numbers"]["valid"]:
                valid_in.setdefault(canonical(n), []).append(t.get("id") or t["name"])
        for t in doc["tracking_numbers"]:
            fmt = t.get("id") or t["name"]
            for n in t["test_numbers"]["valid"]:
                cases.append(pytest.param(code, n, True, id=f"{code}/{fmt}/valid/{n.strip()}"))
            for n in t["test_numbers"]["invalid"]:
                marks = ()
                siblings = [f for f in valid_in.get(canonical(n), []) if f != fmt]
                if siblings:
                    # the suite's negatives are per format, validation is per courier: a
                    # number invalid for this format and listed valid for a sibling one
                    # (purolator_alpha's 331426749957, purolator_numeric's) is valid here
                    marks = (pytest.mark.skip(
                        reason=f"{code}/{fmt} lists {n.strip()} invalid, {code}/"
                               f"{', '.join(siblings)} lists it valid: validity is per "
                               "courier"),)
                cases.append(pytest.param(
                    code, n, False, marks=marks, id=f"{code}/{fmt}/invalid/{n.strip()}"))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("code", "number", "expected"), CASES)
def test_conformance(code: str, number: str, expected: bool) -> None:
    if code is None:
        suite_missing()
    v = validate(number, code)
    assert v.valid is expected, v


def test_suite_counts() -> None:
    if not SUITE_DIR.is_dir():
        suite_missing()
    codes = {c.values[0] for c in CASES}
    valid = sum(1 for c in CASES if c.values[2])
    invalid = sum(1 for c in CASES if not c.values[2])
    assert len(codes) == 18
    assert (valid, invalid) == (192, 88)
