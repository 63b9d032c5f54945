"""The public tracking_number_data v2.0.0 conformance suite (read from outside the repo).

Every valid test number must validate for its courier code, every invalid one must not.
The suite lives beside the repository (../shared/conformance/...) and is never copied in;
TRACKING_VALIDATOR_CONFORMANCE points at another `couriers` directory. Where it is absent
the tests skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from streams.core.validation import canonical, validate

DEFAULT_DIR = (
    Path(__file__).resolve().parents[3]
    / "shared" / "conformance" / "tracking_number_data_v2.0.0" / "couriers"
)
SUITE_DIR = Path(os.environ.get("TRACKING_VALIDATOR_CONFORMANCE") or DEFAULT_DIR)


def _cases() -> list[Any]:
    if not SUITE_DIR.is_dir():
        return [pytest.param(
            None, None, None,
            marks=pytest.mark.skip(reason=f"conformance suite not found at {SUITE_DIR} "
                                          "(set TRACKING_VALIDATOR_CONFORMANCE)"),
            id="suite-missing",
        )]
    cases = []
    for path in sorted(SUITE_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        code = doc["courier_code"]
        valid_here = {
            canonical(n) for t in doc["tracking_numbers"] for n in t["test_numbers"]["valid"]
        }
        for t in doc["tracking_numbers"]:
            fmt = t.get("id") or t["name"]
            for n in t["test_numbers"]["valid"]:
                cases.append(pytest.param(code, n, True, id=f"{code}/{fmt}/valid/{n.strip()}"))
            for n in t["test_numbers"]["invalid"]:
                marks = ()
                if canonical(n) in valid_here:
                    # e.g. a number invalid for one format but listed valid for a sibling
                    # format of the same courier: the suite's negative is per format
                    marks = (pytest.mark.skip(
                        reason="also listed valid for another format of this courier"),)
                cases.append(pytest.param(
                    code, n, False, marks=marks, id=f"{code}/{fmt}/invalid/{n.strip()}"))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("code", "number", "expected"), CASES)
def test_conformance(code: str, number: str, expected: bool) -> None:
    v = validate(number, code)
    assert v.valid is expected, v


def test_suite_counts() -> None:
    if not SUITE_DIR.is_dir():
        pytest.skip(f"conformance suite not found at {SUITE_DIR}")
    codes = {c.values[0] for c in CASES}
    valid = sum(1 for c in CASES if c.values[2])
    invalid = sum(1 for c in CASES if not c.values[2])
    assert len(codes) == 18
    assert (valid, invalid) == (192, 88)
