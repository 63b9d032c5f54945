"""The schema files, their examples, and the compiled checks agreeing with `jsonschema`."""

from __future__ import annotations

import calendar
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import SCHEMAS_DIR
from streams import schema as compiled

EXAMPLES = SCHEMAS_DIR / "examples"
MESSAGE_TYPES = ("label.purchased", "label.voided", "carrier.scan")
ALL_SCHEMAS = (*MESSAGE_TYPES, "alert", "deadletter")

# An independent RFC 3339 date-time check for jsonschema's format checker (the optional
# rfc3339-validator package is not a dependency): the grammar, then the calendar.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _RFC3339.fullmatch(value)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return False
    if hour > 23 or minute > 59 or second > 60:
        return False
    return m.group(9) is None or (int(m.group(9)) <= 23 and int(m.group(10)) <= 59)


FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
FORMAT_CHECKER.checks("date-time")(_is_date_time)


def reference(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(compiled.load(name), format_checker=FORMAT_CHECKER)


def examples(kind: str) -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.json") if f".{kind}." in p.name)


def schema_of(path: Path) -> str:
    return path.name.split(f".{'valid' if '.valid.' in path.name else 'invalid'}.")[0]


def accepts(check: compiled.Check, instance: Any) -> bool:
    """The verdict of the compiled check, after asserting its two forms agree."""
    fast = check.fast(instance)  # type: ignore[attr-defined]
    try:
        check.explain(instance)  # type: ignore[attr-defined]
    except compiled.Invalid:
        assert not fast, "fast check accepted what the explaining check rejects"
        return False
    assert fast, "fast check rejected what the explaining check accepts"
    return True


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    schema = compiled.load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_timestamp_uses_the_same_pattern() -> None:
    patterns = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("format") == "date-time" and "pattern" in node:
                patterns.add(node["pattern"])
            for value in node.values():
                walk(value)

    for name in ALL_SCHEMAS:
        walk(compiled.load(name))
    assert len(patterns) == 1


def test_alert_actions_table_covers_every_rule_with_known_actions() -> None:
    alert = compiled.load("alert")
    rules = set(alert["properties"]["rule"]["enum"])
    known = set(alert["properties"]["actions"]["items"]["enum"])
    table = alert["x-actions"]
    assert set(table) == rules
    for by_severity in table.values():
        assert set(by_severity) <= {"critical", "warning", "info"}
        for actions in by_severity.values():
            assert set(actions) <= known and len(actions) == len(set(actions))


def test_there_are_valid_and_invalid_examples_of_every_schema() -> None:
    for name in ALL_SCHEMAS:
        assert any(schema_of(p) == name for p in examples("valid")), name
        assert any(schema_of(p) == name for p in examples("invalid")), name


@pytest.mark.parametrize("path", examples("valid"), ids=lambda p: p.name)
def test_valid_examples_pass(path: Path) -> None:
    instance = json.loads(path.read_text())
    reference(schema_of(path)).validate(instance)
    if schema_of(path) in MESSAGE_TYPES:
        compiled.validator(schema_of(path))(instance)


@pytest.mark.parametrize("path", examples("invalid"), ids=lambda p: p.name)
def test_invalid_examples_fail(path: Path) -> None:
    instance = json.loads(path.read_text())
    assert not reference(schema_of(path)).is_valid(instance)
    if schema_of(path) in MESSAGE_TYPES:
        assert not accepts(compiled.validator(schema_of(path)), instance)


def test_compiler_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        compiled.compile_schema({"type": "string", "format": "email"})
    with pytest.raises(ValueError, match="unsupported"):
        compiled.compile_schema({"type": "object", "patternProperties": {}})
    with pytest.raises(ValueError):
        compiled.compile_schema(compiled.load("alert"))  # arrays, oneOf: not compiled
    with pytest.raises(ValueError):
        compiled.compile_schema({"type": "object", "additionalProperties": False})


def test_invalid_reports_a_json_pointer() -> None:
    check = compiled.validator("label.purchased")
    instance = json.loads((EXAMPLES / "label.purchased.valid.full.json").read_text())
    del instance["ship_to"]["postal_code"]
    with pytest.raises(compiled.Invalid) as err:
        check(instance)
    assert err.value.path == "/ship_to/postal_code"


# --- agreement with jsonschema on mutated messages ---------------------------------------

TRICKY_STRINGS = [
    "", " ", "x", "US", "us", "USA", "U", "USD", "usd", "EURO", "12.34", "12.", ".5", "-1",
    "1e3", "0", "007.10", "1234567890123456", "12.1234567", "x" * 127, "x" * 128, "x" * 129,
    "2025-02-24T15:04:05Z", "2025-02-24t15:04:05z", "2025-02-24 15:04:05Z",
    "2025-02-24T15:04:05", "2025-02-24T15:04:05Z\n", "2025-02-24T15:04:05.5+05:30",
    "2024-02-29T00:00:00Z", "2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z",
    "2025-12-31T23:59:60Z", "2025-02-24T24:00:00Z", "2025-02-24T15:60:00Z",
    "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+01:00", "2999-12-31T23:59:59-23:59",
    "3000-01-01T00:00:00Z", "2025-02-24T15:04:05+24:00", "2025-02-24T15:04:05.Z",
    "２０２５-02-24T15:04:05Z", "label.purchased", "label.voided", "carrier.scan",
    "delivered", "pre_transit", "Delivered", "ups", "1Z999AA10123456784", "\u00e9\u00e9",
]

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([1.0, 1.5, 2.0, 0.0, -1.0]),
    st.sampled_from(TRICKY_STRINGS), st.text(max_size=6),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["postal_code", "country", "amount",
                                                             "currency", "a"]), inner,
                                            max_size=3)),
    max_leaves=5,
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    path = draw(st.sampled_from([p for p in examples("valid") if schema_of(p) in MESSAGE_TYPES]))
    instance = json.loads(path.read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(instance)
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent = instance
        for part in where[:-1]:
            parent = parent[part]
        key = where[-1]
        op = draw(st.sampled_from(["delete", "replace", "edit", "edit", "add"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(JSON_VALUES)
        elif op == "add":
            parent[draw(st.sampled_from(["extra", "ship_to", "cost", "location", "ship_by",
                                         "channel", "code"]))] = draw(JSON_VALUES)
        elif isinstance(parent[key], str):
            text = parent[key]
            edit = draw(st.sampled_from(["append", "drop", "upper", "lower", "digit"]))
            if edit == "append":
                text += draw(st.sampled_from(["\n", " ", "x", "Z", "0", "\u00e9"]))
            elif edit == "drop":
                text = text[:-1]
            elif edit == "upper":
                text = text.upper()
            elif edit == "lower":
                text = text.lower()
            elif text:
                i = draw(st.integers(0, len(text) - 1))
                text = text[:i] + draw(st.sampled_from("0123456789")) + text[i + 1:]
            parent[key] = text
        else:
            parent[key] = draw(JSON_VALUES)
    return schema_of(path), copy.deepcopy(instance)


_REFERENCES = {name: reference(name) for name in MESSAGE_TYPES}


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_compiled_checks_agree_with_jsonschema(case: tuple[str, Any]) -> None:
    name, instance = case
    expected = _REFERENCES[name].is_valid(instance)
    assert accepts(compiled.validator(name), instance) == expected, instance


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MESSAGE_TYPES), JSON_VALUES)
def test_compiled_checks_agree_on_arbitrary_values(name: str, instance: Any) -> None:
    assert accepts(compiled.validator(name), instance) == _REFERENCES[name].is_valid(instance)


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_timestamps_agree_with_jsonschema(text: str) -> None:
    for name, field in (("label.purchased", "purchased_at"), ("carrier.scan", "occurred_at")):
        source = next(p for p in examples("valid") if schema_of(p) == name)
        instance = json.loads(source.read_text())
        instance[field] = text
        assert accepts(compiled.validator(name), instance) == _REFERENCES[name].is_valid(
            instance), text


# --- the fast form's shortcuts -----------------------------------------------------------

@pytest.mark.parametrize("pattern", ["^a|b", "(?m)^x", "x^", "(^a)|b", "a", "(?:^a|b)"])
def test_unanchored_patterns_keep_search(pattern: str) -> None:
    assert compiled._searcher(pattern) == re.compile(pattern).search


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    return []


@pytest.mark.parametrize("pattern", sorted({p for name in MESSAGE_TYPES
                                            for p in _patterns(compiled.load(name))}))
def test_anchored_schema_patterns_match_as_search_does(pattern: str) -> None:
    fast = compiled._searcher(pattern)
    assert fast == re.compile(pattern).match  # every pattern of ours starts with ^
    for text in [*TRICKY_STRINGS, "xUS", "US\n", "\nUS", "x2025-02-24T15:04:05Z"]:
        assert (fast(text) is None) == (re.search(pattern, text) is None), text


def test_required_fields_without_properties_are_still_required() -> None:
    fast = compiled.compile_fast({"type": "object", "required": ["a", "b"],
                                  "properties": {"a": {"type": "integer"}}})
    assert fast({"a": 1, "b": None})
    assert not fast({"a": 1})
    assert not fast({"b": 1})
    assert not fast({"a": "1", "b": 1})


@pytest.mark.parametrize("pattern", ["^[A-Z]{2}$", "^[0-9a-f]{3}$", "^[ab]{0,2}$", "^[A-Z]$"])
def test_character_run_shortcut_agrees_with_the_regex(pattern: str) -> None:
    run = compiled._char_run(pattern)
    assert run is not None
    fast = compiled.compile_fast({"type": "string", "pattern": pattern})
    for text in [*TRICKY_STRINGS, "", "US", "USA", "us", "U", "US\n", "\nUS", "0af", "ab",
                 "aba", "ÉU", "U S", "abc\n", "A\n"]:
        assert fast(text) == (re.search(pattern, text) is not None), text


@pytest.mark.parametrize("pattern", ["^[a-z][a-z0-9_]*$", "^[^A-Z]{2}$", "(?i)^[A-Z]{2}$",
                                     "^\\d{2}$", "[A-Z]{2}", "^[A-Z]+$"])
def test_other_patterns_take_no_character_run_shortcut(pattern: str) -> None:
    assert compiled._char_run(pattern) is None


def test_extract_gives_the_fields_read_while_checking() -> None:
    schema = compiled.load("carrier.scan")
    check = compiled.validator("carrier.scan").fast
    extract = compiled.compile_fast(schema, ("event_id", "code", "occurred_at",
                                             "location/country", "location/city"))
    scan = json.loads((EXAMPLES / "carrier.scan.valid.delivered.json").read_text())
    event_id, code, occurred_at, country, city = extract(scan)
    assert (event_id, code, country, city) == (scan["event_id"], scan.get("code"),
                                               scan["location"].get("country"),
                                               scan["location"].get("city"))
    assert occurred_at == compiled.parse_timestamp(scan["occurred_at"])
    del scan["location"]
    scan.pop("code", None)
    scan["occurred_at"] = "2024-12-31t23:59:60z"  # only parse_timestamp reads it
    assert extract(scan)[1:] == (None, compiled.parse_timestamp(scan["occurred_at"]), None,
                                 None)
    for broken in ({**scan, "occurred_at": "2025-02-30T00:00:00Z"}, {**scan, "code": 1},
                   {k: v for k, v in scan.items() if k != "event_id"}, [], None):
        assert extract(broken) is None and not check(broken)
    with pytest.raises(ValueError, match="no such properties"):
        compiled.compile_fast(schema, ("location/zip",))
