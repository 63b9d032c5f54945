"""msgspec types built from the JSON Schema files under schemas/, at import.

The schema files are the single source of truth. `input_type(name)` translates the subset of
draft 2020-12 the input schemas use into a `msgspec.Struct` (nested objects become nested
structs, the `type` const becomes the struct's tag), so that `msgspec.json.Decoder` decodes
AND validates a message in one pass of C:

    type, required, properties      fields; a property not required defaults to None, but an
                                    explicit null is still refused (JSON Schema does too)
    additionalProperties: true      msgspec ignores unknown fields
    minLength, maxLength, pattern   msgspec.Meta (pattern is re.search, as in JSON Schema)
    const, enum (strings)           Literal
    const (integer)                 float with ge == le == const: JSON Schema's integer 1
                                    includes 1.0, which msgspec's int refuses
    format: date-time               the string is checked by its pattern here; the calendar
                                    (02-30) is `parse_timestamp`'s, run by streams.core.events

`translate(..., deferred=paths)` leaves the `pattern` of those fields out of the struct and
hands it to the caller (`InputType.patterns`), who must check it: msgspec calls a regex per
value (~0.5 us for a timestamp), a caller can memoise values that repeat (countries,
currencies) or prove a common shape cheaper.

Any other keyword is refused with ValueError at import, so a schema edit can never be silently
ignored by the code. tests/core/test_schemas.py proves the decoder accepts and rejects exactly what
`jsonschema` (with an RFC 3339 date-time format checker) does, with the same JSON Pointer.
"""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson

# schemas/ sits beside the package in the repository (installs are editable, and the
# Docker image copies the whole tree); TRACKING_VALIDATOR_SCHEMAS overrides it.
SCHEMAS_DIR = Path(
    os.environ.get("TRACKING_VALIDATOR_SCHEMAS")
    or Path(__file__).resolve().parents[2] / "schemas"
)

# Keywords that only annotate; everything else must be translated below.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})
_STRING = frozenset({"type", "minLength", "maxLength", "pattern", "format", "const", "enum"})
_INTEGER = frozenset({"type", "const"})
_OBJECT = frozenset({"type", "required", "properties", "additionalProperties"})
_TAG = frozenset({"type", "const"})


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed schema file schemas/<name>.schema.json (e.g. `label.purchased`)."""
    return orjson.loads((SCHEMAS_DIR / f"{name}.schema.json").read_bytes())


def parse_timestamp(text: str) -> datetime | None:
    """An aware datetime for an RFC 3339 string that already matched the schema pattern.

    fromisoformat is the fast path; RFC 3339 also allows a lower-case `z` and the leap
    second `:60`, which it refuses, so those are normalised (a leap second reads as :59).
    None when the date does not exist (02-30) or the text is not RFC 3339 at all.
    """
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    fixed = text.upper()
    if len(fixed) > 18 and fixed[17:19] == "60":
        fixed = fixed[:17] + "59" + fixed[19:]
    try:
        moment = datetime.fromisoformat(fixed)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class InputType:
    """The msgspec type of one input schema, and what msgspec cannot check itself."""

    name: str  # the schema's `type` const: the struct's tag
    struct: type[msgspec.Struct]
    date_times: tuple[tuple[str, ...], ...]  # attribute paths of `format: date-time` strings
    patterns: dict[tuple[str, ...], str]  # deferred path -> the pattern the caller checks


@dataclass(slots=True)
class _Found:
    """What a translation collects on its way down."""

    deferred: frozenset[tuple[str, ...]]
    date_times: list[tuple[str, ...]] = field(default_factory=list)
    patterns: dict[tuple[str, ...], str] = field(default_factory=dict)


def _where(path: tuple[str, ...]) -> str:
    return pointer_of(path) or "/"


def _refuse_others(schema: dict[str, Any], allowed: frozenset[str],
                   path: tuple[str, ...]) -> None:
    extra = set(schema) - allowed - _ANNOTATIONS
    if extra:
        raise ValueError(f"schema at {_where(path)}: unsupported keywords {sorted(extra)}")


def _string(schema: dict[str, Any], path: tuple[str, ...], found: _Found) -> Any:
    _refuse_others(schema, _STRING, path)
    lo, hi = schema.get("minLength", 0), schema.get("maxLength")
    pattern = schema.get("pattern")
    if "format" in schema:
        if schema["format"] != "date-time":
            raise ValueError(f"schema at {_where(path)}: unsupported format {schema['format']!r}")
        if pattern is None:  # parse_timestamp relies on the pattern for the grammar
            raise ValueError(f"schema at {_where(path)}: a date-time needs its RFC 3339 pattern")
        found.date_times.append(path)
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        if "enum" in schema:
            values = [v for v in values if v in schema["enum"]]
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"schema at {_where(path)}: non-string const/enum on a string")
        # the length and pattern keywords apply too: keep only the values that meet them
        values = [v for v in values if lo <= len(v) and (hi is None or len(v) <= hi)
                  and (pattern is None or re.search(pattern, v))]
        if not values:
            raise ValueError(f"schema at {_where(path)}: no string can be valid")
        return Literal[tuple(values)]  # type: ignore[valid-type]
    meta: dict[str, Any] = {}
    if lo:
        meta["min_length"] = lo
    if hi is not None:
        meta["max_length"] = hi
    if pattern is not None and path in found.deferred:
        found.patterns[path] = pattern
    elif pattern is not None:
        meta["pattern"] = pattern
    return Annotated[str, msgspec.Meta(**meta)] if meta else str


def _integer(schema: dict[str, Any], path: tuple[str, ...]) -> Any:
    _refuse_others(schema, _INTEGER, path)
    const = schema.get("const")
    if type(const) is not int:
        # msgspec's int refuses 1.0, JSON Schema's integer does not: only a const (any number
        # equal to it is integral) is translated exactly
        raise ValueError(f"schema at {_where(path)}: only an integer const is supported")
    return Annotated[float, msgspec.Meta(ge=const, le=const)]


def _object(schema: dict[str, Any], path: tuple[str, ...], name: str, found: _Found,
            tag: str | None = None) -> Any:
    _refuse_others(schema, _OBJECT, path)
    if schema.get("additionalProperties", True) is not True:
        raise ValueError(f"schema at {_where(path)}: only additionalProperties: true is supported")
    required = set(schema.get("required", ()))
    properties = schema.get("properties", {})
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for prop in [*properties, *sorted(required - properties.keys())]:
        if not prop.isidentifier() or keyword.iskeyword(prop):
            raise ValueError(f"schema at {_where(path)}: property {prop!r} is not an identifier")
        if tag is not None and prop == "type":
            continue  # the struct's tag
        sub = properties.get(prop)
        kind = Any if sub is None else _translate(sub, (*path, prop), f"{name}_{prop}", found)
        fields.append((prop, kind) if prop in required else (prop, kind, None))
    options: dict[str, Any] = {"tag_field": "type", "tag": tag} if tag is not None else {}
    # gc=False: decoded messages hold only strings, numbers and these structs (no cycles)
    return msgspec.defstruct(name, fields, kw_only=True, gc=False, module=__name__, **options)


def _translate(schema: dict[str, Any], path: tuple[str, ...], name: str, found: _Found) -> Any:
    kind = schema.get("type")
    if kind == "string":
        return _string(schema, path, found)
    if kind == "integer":
        return _integer(schema, path)
    if kind == "object":
        return _object(schema, path, name, found)
    raise ValueError(f"schema at {_where(path)}: needs a single supported type, got {kind!r}")


def translate(schema: dict[str, Any], struct_name: str = "Message",
              deferred: Collection[tuple[str, ...]] = ()) -> InputType:
    """The msgspec struct of a message schema: an object whose required `type` is a string
    const, which becomes the struct's tag (so a union of them is a tagged union). The
    patterns of the `deferred` paths are left to the caller (each must have one)."""
    tag_schema = schema.get("properties", {}).get("type", {})
    tag = tag_schema.get("const")
    if schema.get("type") != "object" or "type" not in schema.get("required", ()) or (
            tag_schema.get("type") != "string" or not isinstance(tag, str)):
        raise ValueError("schema at /: a message needs a required string const `type`")
    _refuse_others(tag_schema, _TAG, ("type",))
    found = _Found(frozenset(deferred))
    struct = _object(schema, (), struct_name, found, tag=tag)
    missing = found.deferred - found.patterns.keys()
    if missing:
        raise ValueError(f"deferred patterns not in the schema: {sorted(map(pointer_of, missing))}")
    return InputType(tag, struct, tuple(found.date_times), found.patterns)


@cache
def input_type(name: str, deferred: frozenset[tuple[str, ...]] = frozenset()) -> InputType:
    """The msgspec type of schemas/<name>.schema.json (a message type, e.g. `carrier.scan`)."""
    struct_name = "".join(part.title() for part in re.split(r"[._]", name)) + "Message"
    if deferred:
        struct_name += "Deferred"
    return translate(load(name), struct_name, deferred)


# --- msgspec's error locations as JSON Pointers --------------------------------------------

_AT = re.compile(r" - at `(\$[^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING = re.compile(r"^Object missing required field `([^`]*)`")


def pointer_of(path: tuple[str, ...]) -> str:
    """The JSON Pointer (RFC 6901) of a path of property names / array indexes."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


def explain(error: msgspec.ValidationError) -> tuple[str, str]:
    """(message, JSON Pointer) of a msgspec validation error.

    msgspec says ``Expected `str` - at `$.ship_to.postal_code` `` (`$.labels[0]` for an array
    item); a missing field is reported at its object, and named by the pointer here:
    ``Object missing required field `postal_code` - at `$.ship_to` `` -> /ship_to/postal_code.
    """
    text = str(error)
    at = _AT.search(text)
    message = text if at is None else text[:at.start()]
    parts = [] if at is None else [
        name if index == "" else index for name, index in _STEP.findall(at.group(1))]
    missing = _MISSING.match(message)
    if missing is not None:
        parts.append(missing.group(1))
    return message, pointer_of(tuple(parts))
