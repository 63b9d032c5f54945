"""The carrier definition files: schema-valid, one per contract courier code, loadable."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import jsonschema
import pytest

from streams.core.carriers import CARRIER_ORDER, carrier, carriers
from streams.core.numbers import generate
from streams.core.schema import SCHEMAS_DIR
from streams.core.validation import validate

CARRIERS_DIR = SCHEMAS_DIR / "carriers"
SCHEMA = json.loads((SCHEMAS_DIR / "carrier.schema.json").read_text())

# The contract's courier codes (shared/contract.md, label.purchased.carrier)
CONTRACT_CODES = {
    "usps", "ups", "fedex", "dhl", "amazon", "ontrac", "lasership", "canada_post",
    "purolator", "dpd", "canpar", "gofo", "landmark", "old_dominion", "speedee", "yodel",
    "yunexpress", "s10",
}
FILES = sorted(CARRIERS_DIR.glob("*.json"))


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_one_file_per_contract_code() -> None:
    assert {p.stem for p in FILES} == CONTRACT_CODES
    assert set(CARRIER_ORDER) == CONTRACT_CODES
    assert list(carriers()) == list(CARRIER_ORDER)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_file_matches_schema(path: Path) -> None:
    doc = json.loads(path.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert doc["carrier"] == path.stem


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_patterns_compile_with_required_groups(path: Path) -> None:
    doc = json.loads(path.read_text())
    for fmt in doc["formats"]:
        pattern = re.compile(fmt["pattern"])
        assert "serial" in pattern.groupindex, fmt["id"]
        if fmt["check_digit"] is not None:
            assert "check_digit" in pattern.groupindex, fmt["id"]
        # canonical numbers hold no whitespace: patterns must not deal with it
        assert r"\s" not in fmt["pattern"] and " " not in fmt["pattern"], fmt["id"]
        for constraint in fmt.get("constraints", ()):
            assert constraint["group"] in pattern.groupindex, fmt["id"]


def test_format_ids_unique_across_carriers() -> None:
    ids = [f.id for c in carriers().values() for f in c.formats]
    assert len(ids) == len(set(ids))


def test_s10_country_codes_are_iso_3166_alpha2() -> None:
    (constraint,) = carrier("s10").definition["formats"][0]["constraints"]  # type: ignore[union-attr]
    codes = set(constraint["one_of"])
    assert len(codes) == 249  # ISO 3166-1 officially assigned alpha-2 codes
    assert {"US", "GB", "DE", "CN", "CV", "CF"} <= codes
    assert "XK" not in codes and "UK" not in codes  # user-assigned / reserved, not official
    assert all(re.fullmatch("[A-Z]{2}", c) for c in codes)


def test_usps_routing_prefixes_zip4_first() -> None:
    routing = carrier("usps").definition["routing_prefixes"]  # type: ignore[union-attr]
    assert [r["pattern"] for r in routing] == ["420[0-9]{9}", "420[0-9]{5}"]


@pytest.mark.parametrize(
    ("code", "format_id"),
    [(c.code, f.id) for c in carriers().values() for f in c.formats],
)
def test_generate_gives_valid_numbers_of_each_format(code: str, format_id: str) -> None:
    rng = random.Random(f"{code}/{format_id}")
    for _ in range(20):
        number = generate(code, format_id, rng)
        v = validate(number, code)
        assert v.valid and v.format == format_id, (number, v)


def test_unknown_carrier_definition_lookup() -> None:
    assert carrier("nope") is None
    with pytest.raises(KeyError):
        generate("nope")


@pytest.mark.parametrize("code", [c for c in CARRIER_ORDER if carrier(c).routing])
def test_routed_answers_as_every_routing_prefix_does(code: str) -> None:
    c = carrier(code)
    rng = random.Random(5)
    texts = ["", "4", "42", "420", "4201234", "42012345", "420123456789", "9400", "(420)1"]
    for _ in range(300):
        number = generate(code, rng=rng)
        texts += [number, "420" + number, "420" + number[:5], number[3:],
                  "".join(rng.choices("0123456789", k=rng.randrange(1, 40)))]
    for text in texts:
        assert bool(c.routed(text)) == any(r(text) for r in c.routing), text


def test_carriers_without_routing_have_no_routed_check() -> None:
    assert all(carrier(c).routed is None for c in CARRIER_ORDER if not carrier(c).routing)
