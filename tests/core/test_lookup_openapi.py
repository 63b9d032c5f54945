"""schemas/lookup.openapi.json describes the lookup API of the contract ("Lookup API"): the
endpoints, their fields, errors and token, checked against the contract's text and against
what `streams.core.lookup` answers (every answer of a simulated history validates). The live
worker's responses and the fuzzing are in tests/runtime/test_web_api.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from streams.core import lookup
from streams.core.carriers import carriers
from streams.core.detection import STATUSES, apply
from streams.core.events import decode
from streams.core.schema import SCHEMAS_DIR
from streams.core.settings import Settings
from streams.tools.simulation import Params, simulate

DOC = json.loads((SCHEMAS_DIR / "lookup.openapi.json").read_text())
SCHEMAS = DOC["components"]["schemas"]
CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "contract.md"


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for components.schemas[name], its $refs resolved in the document."""
    registry = Registry().with_resource("doc", Resource(DOC, DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"doc#/components/schemas/{name}"},
                                           registry=registry)


def contract_section() -> str:
    if not CONTRACT.is_file():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"the contract is not at {CONTRACT} (CI=true)")
        pytest.skip(f"the contract is not at {CONTRACT}")
    text = CONTRACT.read_text()
    start = text.index("## Lookup API")
    return text[start:text.index("\n## ", start + 1)]


def test_it_is_an_openapi_3_1_document() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert DOC["openapi"].startswith("3.1.")
    jsonschema.validate(DOC, OPENAPI_31)


def test_the_endpoints_and_their_parameters() -> None:
    assert {(path, method) for path, ops in DOC["paths"].items() for method in ops} == {
        ("/v1/tracking/{carrier}/{number}", "get"), ("/v1/tracking/check", "post"),
        ("/v1/openapi.json", "get")}
    get = DOC["paths"]["/v1/tracking/{carrier}/{number}"]["get"]
    params = [DOC["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
              for p in get["parameters"]]
    assert [(p["name"], p["in"], p["required"]) for p in params] == [
        ("carrier", "path", True), ("number", "path", True), ("at", "query", False),
        ("channel", "query", False)]
    check = SCHEMAS["CheckRequest"]
    assert check["required"] == ["numbers"]
    assert check["properties"]["numbers"]["maxItems"] == lookup.MAX_NUMBERS
    assert set(SCHEMAS["NumberRef"]["properties"]) == {"carrier", "number", "channel"}
    assert SCHEMAS["NumberRef"]["required"] == ["carrier", "number"]
    assert SCHEMAS["CheckResponse"]["properties"]["results"]["items"] == {
        "$ref": "#/components/schemas/LookupResult"}


def test_the_answer_has_the_contracts_fields() -> None:
    section = contract_section()
    table = re.findall(r"^\| (`[^|]+`) \|", section, re.M)
    fields = {name for cell in table for name in re.findall(r"`([a-z_]+)`", cell)}
    # the circuit breaker's two fields (issue 21) come only with an open incident
    assert set(SCHEMAS["LookupResult"]["properties"]) == fields | {"incident", "advice"}
    assert set(SCHEMAS["LookupResult"]["required"]) == fields
    assert set(SCHEMAS["OpenIncident"]["properties"]) == {"incident_id", "started_at",
                                                          "alerts", "sellers"}
    assert SCHEMAS["LookupResult"]["properties"]["advice"]["enum"] == [lookup.HOLD_LABEL_SALES]
    holder = re.search(r"`holders` \| array of `\{([^}]*)\}`", section).group(1)
    assert set(SCHEMAS["Holder"]["properties"]) == {f.strip() for f in holder.split(",")}
    scan = re.search(r"`last_scan` \| `\{([^}]*)\}` or null", section).group(1)
    assert set(SCHEMAS["LastScan"]["properties"]) == {f.strip() for f in scan.split(",")}
    statuses = re.search(r"`status` \| ([^|]*) \|", section).group(1)
    assert SCHEMAS["LookupResult"]["properties"]["status"]["enum"] == re.findall(
        r"`([a-z_]+)`", statuses)
    assert "at most 1,000 numbers" in section and lookup.MAX_NUMBERS == 1000
    assert '`{"error": {"code", "message"}}`' in section
    assert set(SCHEMAS["Error"]["properties"]["error"]["properties"]) == {"code", "message"}


def test_errors_and_the_bearer_token() -> None:
    responses = DOC["components"]["responses"]
    for path, method in (("/v1/tracking/{carrier}/{number}", "get"),
                         ("/v1/tracking/check", "post")):
        codes = DOC["paths"][path][method]["responses"]
        assert set(codes) == {"200", "400", "401", "503"}
    for name in ("BadRequest", "Unauthorized", "Unavailable"):
        assert responses[name]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    for code in ("unknown_carrier", "empty", "invalid_at", "too_many_numbers", "too_large",
                 "encoding", "invalid_json", "not_an_object", "schema"):
        assert f"`{code}`" in responses["BadRequest"]["description"]
    assert DOC["components"]["securitySchemes"]["bearerToken"] == {
        **DOC["components"]["securitySchemes"]["bearerToken"], "type": "http",
        "scheme": "bearer"}
    assert DOC["security"] == [{"bearerToken": []}, {}]  # needed only when configured
    assert DOC["paths"]["/v1/openapi.json"]["get"]["security"] == []  # served without it


def test_courier_codes_in_any_case_and_only_those() -> None:
    code = validator("CourierCode")
    assert SCHEMAS["CourierCode"]["x-courier-codes"] == list(carriers())
    for c in carriers():
        assert code.is_valid(c) and code.is_valid(c.upper())
    assert not code.is_valid("nope") and not code.is_valid("usps2") and not code.is_valid("")


def test_scan_statuses_and_timestamps_are_the_event_schemas() -> None:
    assert SCHEMAS["LastScan"]["properties"]["status"]["enum"] == list(STATUSES)
    event = json.loads((SCHEMAS_DIR / "label.purchased.schema.json").read_text())
    assert SCHEMAS["Timestamp"]["pattern"] == event["properties"]["purchased_at"]["pattern"]


def _answers() -> list[dict[str, Any]]:
    """lookup.status of every number of a simulated incident at a few moments."""
    settings = Settings()
    world = simulate(Params(seed=5, labels=300, incident_start=Params().start.replace(day=20),
                            void_share=0.05))
    states: dict[str, Any] = {}
    for m in world.messages:
        if isinstance(m.value, bytes):
            continue  # malformed on purpose
        try:
            event = decode(json.dumps(m.value).encode())
        except Exception:
            continue
        states[event.key], _ = apply(states.get(event.key), event, settings)
    ends = [m.event_time for m in world.messages]
    moments = [min(ends), (min(ends) + max(ends)) // 2, max(ends), max(ends) + 200 * 86400]
    answers = []
    for key, state in states.items():
        carrier, number = key.split(":", 1)
        for at in moments:
            answers.append(lookup.status(state, carrier, number, at, settings))
    answers.append(lookup.status(None, "usps", "not a number", moments[0], settings))
    return answers


def test_every_answer_of_a_simulated_history_validates() -> None:
    result = validator("LookupResult")
    answers = _answers()
    for answer in answers:
        errors = [e.message for e in result.iter_errors(answer)]
        assert errors == [], answer
    statuses = {a["status"] for a in answers}
    assert statuses == {"invalid", "held", "recently_used", "free"}
    assert any(a["last_scan"] for a in answers) and any(a["holders"] for a in answers)
    validator("CheckResponse").validate({"results": answers[:1000]})
    assert not result.is_valid({**answers[0], "extra": 1})  # a new field needs the document
