"""Compile the JSON Schema files under schemas/ into fast specialised checks.

The schema files are the single source of truth; running the generic `jsonschema` validator on
every message would cost tens of microseconds, so this module compiles the small subset of
draft 2020-12 the input schemas use (type, required, properties, const, enum, minLength,
maxLength, pattern, minimum, format date-time) once, at import, into two forms:

* `compile_fast`: one generated Python function per schema, every keyword inlined, that only
  answers valid/invalid (the hot path: no call per field);
* `compile_schema`: closures that raise `Invalid` with a JSON Pointer and a message, run only
  when the fast check said no (dead letters are rare), to say why.

Any other keyword is refused at compile time, so a schema edit can never be silently ignored
by the code. tests/test_schemas.py proves both forms accept and reject exactly what
`jsonschema` (with a date-time format checker) does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson

from streams import SCHEMAS_DIR

try:  # the pattern parser tells whether `match` may stand in for `search`
    from re import _constants as _sre_constants  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _sre_constants  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

Check = Callable[[Any], None]

# Keywords that only annotate; everything else must be compiled below.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "additionalProperties"}
)
_STRING_KEYWORDS = frozenset({"minLength", "maxLength", "pattern", "format", "const", "enum"})
_INTEGER_KEYWORDS = frozenset({"minimum", "const"})
_OBJECT_KEYWORDS = frozenset({"required", "properties"})
_MISSING = object()


class Invalid(Exception):
    """A value breaks its schema. `path` is a JSON Pointer (RFC 6901) to the field."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '/'}: {message}")
        self.path = path
        self.message = message


def parse_timestamp(text: str) -> datetime | None:
    """An aware datetime for an RFC 3339 string that already matched the schema pattern.

    fromisoformat is the fast path; RFC 3339 also allows a lower-case `t`/`z` and the leap
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


def _date_time(text: str) -> bool:
    return parse_timestamp(text) is not None


FORMATS: dict[str, Callable[[str], bool]] = {"date-time": _date_time}


def _pointer(path: str, name: str) -> str:
    return f"{path}/{name.replace('~', '~0').replace('/', '~1')}"


def _unsupported(schema: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    extra = set(schema) - allowed - _ANNOTATIONS - {"type"}
    if extra:
        raise ValueError(f"schema at {path or '/'}: unsupported keywords {sorted(extra)}")


def _compile_string(schema: dict[str, Any], path: str) -> Check:
    _unsupported(schema, _STRING_KEYWORDS, path)
    lo = schema.get("minLength", 0)
    hi = schema.get("maxLength")
    regex = re.compile(schema["pattern"]) if "pattern" in schema else None
    if "format" in schema and schema["format"] not in FORMATS:
        raise ValueError(f"schema at {path or '/'}: unsupported format {schema['format']!r}")
    fmt = FORMATS[schema["format"]] if "format" in schema else None
    allowed: frozenset[str] | None = None
    if "const" in schema:
        allowed = frozenset([schema["const"]])
    if "enum" in schema:
        values = frozenset(schema["enum"])
        allowed = values if allowed is None else allowed & values
    if allowed is not None and not all(isinstance(v, str) for v in allowed):
        raise ValueError(f"schema at {path or '/'}: non-string const/enum on a string")

    def check(value: Any) -> None:
        if type(value) is not str:
            raise Invalid(path, "expected a string")
        n = len(value)
        if n < lo or (hi is not None and n > hi):
            raise Invalid(path, f"length {n} outside {lo}..{hi}")
        if allowed is not None and value not in allowed:
            raise Invalid(path, f"must be one of {sorted(allowed)}")
        # search, not match: JSON Schema patterns are unanchored unless they say otherwise
        if regex is not None and regex.search(value) is None:
            raise Invalid(path, f"does not match {regex.pattern}")
        if fmt is not None and not fmt(value):
            raise Invalid(path, f"not a valid {schema['format']}")

    return check


def _compile_integer(schema: dict[str, Any], path: str) -> Check:
    _unsupported(schema, _INTEGER_KEYWORDS, path)
    minimum = schema.get("minimum")
    has_const = "const" in schema
    const = schema.get("const")
    if has_const and (type(const) is not int):
        raise ValueError(f"schema at {path or '/'}: non-integer const on an integer")

    def check(value: Any) -> None:
        # JSON Schema: true is not an integer, 1.0 is
        kind = type(value)
        if kind is not int and not (kind is float and value.is_integer()):
            raise Invalid(path, "expected an integer")
        if has_const and value != const:
            raise Invalid(path, f"must be {const}")
        if minimum is not None and value < minimum:
            raise Invalid(path, f"must be >= {minimum}")

    return check


def _compile_object(schema: dict[str, Any], path: str) -> Check:
    _unsupported(schema, _OBJECT_KEYWORDS, path)
    required = tuple(schema.get("required", ()))
    properties = tuple(
        (name, _pointer(path, name), compile_schema(sub, _pointer(path, name)))
        for name, sub in schema.get("properties", {}).items()
    )
    if schema.get("additionalProperties", True) is not True:
        raise ValueError(f"schema at {path or '/'}: only additionalProperties: true is supported")

    def check(value: Any) -> None:
        if type(value) is not dict:
            raise Invalid(path, "expected an object")
        for name in required:
            if name not in value:
                raise Invalid(_pointer(path, name), "required field missing")
        get = value.get
        for name, _, sub in properties:
            item = get(name, _MISSING)
            if item is not _MISSING:
                sub(item)

    return check


_COMPILERS = {"string": _compile_string, "integer": _compile_integer, "object": _compile_object}


def compile_schema(schema: dict[str, Any], path: str = "") -> Check:
    """A function that returns None for a valid instance and raises `Invalid` otherwise."""
    kind = schema.get("type")
    if kind not in _COMPILERS:
        raise ValueError(f"schema at {path or '/'}: needs a single supported type, got {kind!r}")
    return _COMPILERS[kind](schema, path)


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed schema file schemas/<name>.schema.json (e.g. `label.purchased`)."""
    return orjson.loads((SCHEMAS_DIR / f"{name}.schema.json").read_bytes())


def compile_fast(schema: dict[str, Any], extract: Sequence[str] = ()) -> Callable[[Any], Any]:
    """A generated function returning whether an instance is valid (no error detail).

    With `extract` (property paths such as "location/postal_code") it returns instead the
    tuple of those values, None where absent, or None when the instance is invalid: decode
    then reads each field once. A date-time field gives its parsed, aware datetime.
    """
    # builtins bound as defaults too: LOAD_FAST is cheaper than a global/builtin lookup
    consts: dict[str, Any] = {"_FROMISO": datetime.fromisoformat, "_PARSE": parse_timestamp,
                              "type": type, "len": len, "str": str, "dict": dict, "int": int,
                              "float": float}
    captures = {tuple(path.split("/")): f"x{i}" for i, path in enumerate(extract)}
    unknown = set(captures) - {path for path, _ in _properties(schema, ())}
    if unknown:
        raise ValueError(f"extract: no such properties {sorted('/'.join(p) for p in unknown)}")
    fail = "None" if captures else "False"
    body: list[str] = [f"        {' = '.join(captures.values())} = None"] if captures else []
    _emit(schema, "v0", 0, 2, body, consts, (), captures, fail)
    # constants bound as defaults: local lookups, the cheapest Python has
    params = "".join(f", {name}={name}" for name in consts)
    done = f"({', '.join(captures.values())},)" if captures else "True"
    # Required properties are read with v[name]: a KeyError is the missing field, which
    # costs nothing on the valid path (3.11 zero-cost try) where `required <= v.keys()`
    # built a keys view and compared sets per object.
    source = "\n".join([f"def fast(v0{params}):", "    try:", *body,
                         "    except KeyError:", f"        return {fail}", f"    return {done}"])
    namespace: dict[str, Any] = dict(consts)
    # the source is generated from our schema files only, never from message data
    exec(compile(source, "<schema>", "exec"), namespace)
    fast = namespace["fast"]
    fast.source = source  # for debugging: print(validator(name).fast.source)
    return fast


def _properties(schema: dict[str, Any], path: tuple[str, ...],
                ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every (path, subschema) under an object schema's properties, nested ones included."""
    found = []
    for name, sub in schema.get("properties", {}).items():
        found.append(((*path, name), sub))
        found.extend(_properties(sub, (*path, name)))
    return found


def _iso_shortcut(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "date-time" and FORMATS["date-time"] is _date_time


def _searcher(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """`re.search` of the pattern, or the cheaper `re.match` where they agree: the pattern
    starts with `^` (or `\\A`) outside any alternation and without MULTILINE."""
    regex = re.compile(pattern)
    parsed = _sre_parse.parse(pattern)
    anchored = (not parsed.state.flags & re.MULTILINE and len(parsed) > 0
                and parsed[0] in ((_sre_constants.AT, _sre_constants.AT_BEGINNING),
                                  (_sre_constants.AT, _sre_constants.AT_BEGINNING_STRING)))
    return regex.match if anchored else regex.search


def _char_run(pattern: str) -> tuple[int, int, str] | None:
    """(min, max, characters) when `pattern` is exactly `^[class]{min,max}$` of plain
    characters and ranges, else None: a string of that length made of those characters
    certainly matches (the converse needs the regex: `$` also matches before a final \\n)."""
    parsed = _sre_parse.parse(pattern)
    if parsed.state.flags & ~re.UNICODE or len(parsed) != 3:
        return None
    (op0, av0), (op1, av1), (op2, av2) = parsed
    if (op0, av0) != (_sre_constants.AT, _sre_constants.AT_BEGINNING) or (
            (op2, av2) != (_sre_constants.AT, _sre_constants.AT_END)):
        return None
    if op1 is _sre_constants.MAX_REPEAT and len(av1[2]) == 1:
        lo, hi, ((op1, av1),) = av1
    else:
        lo = hi = 1
    if op1 is not _sre_constants.IN or hi == _sre_constants.MAXREPEAT:
        return None
    chars = []
    for op, av in av1:
        if op is _sre_constants.LITERAL:
            chars.append(chr(av))
        elif op is _sre_constants.RANGE and av[1] - av[0] < 128:
            chars.extend(map(chr, range(av[0], av[1] + 1)))
        else:  # negation, categories (\\d is Unicode): leave it to the regex
            return None
    return lo, hi, "".join(chars)


def _emit(schema: dict[str, Any], var: str, depth: int, indent: int, lines: list[str],
          consts: dict[str, Any], path: tuple[str, ...] = (),
          captures: dict[tuple[str, ...], str] | None = None, fail: str = "False") -> None:
    """Append statements that `return {fail}` when `var` breaks `schema`, and that copy the
    value at `path` into its `captures` variable (a date-time: its parsed datetime)."""
    pad = "    " * indent
    captures = captures or {}
    capture = captures.get(path)

    def const(value: Any) -> str:
        name = f"_C{len(consts)}"
        consts[name] = value
        return name

    failures: list[str] = []  # one `if a or b or ...` per value: fewer bytecode dispatches
    kind = schema["type"]
    if kind == "string":
        failures.append(f"type({var}) is not str")
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        if hi is not None and lo == hi:
            failures.append(f"len({var}) != {hi}")
        elif hi is not None and lo:
            failures.append(f"not {lo} <= len({var}) <= {hi}")
        elif hi is not None:
            failures.append(f"len({var}) > {hi}")
        elif lo:
            failures.append(f"len({var}) < {lo}")
        allowed = [schema["const"]] if "const" in schema else []
        if "enum" in schema:
            allowed = [v for v in schema["enum"] if not allowed or v in allowed]
        if "const" in schema or "enum" in schema:
            failures.append(f"{var} not in {const(frozenset(allowed))}")
        if "pattern" in schema:
            search = const(_searcher(schema["pattern"]))
            chars = _char_run(schema["pattern"])
            if chars is None:
                failures.append(f"{search}({var}) is None")
            else:  # a run of one character class: str.strip decides most strings (~5x
                # cheaper than a regex call, measured); the regex has the last word
                lo, hi, allowed = chars
                failures.append(f"(not ({lo} <= len({var}) <= {hi} and not {var}.strip("
                                f"{const(allowed)})) and {search}({var}) is None)")
        if "format" in schema and not _iso_shortcut(schema):
            failures.append(f"not {const(FORMATS[schema['format']])}({var})")
    elif kind == "integer":
        failures.append(
            f"(type({var}) is not int and not (type({var}) is float and {var}.is_integer()))")
        if "const" in schema:
            failures.append(f"{var} != {schema['const']!r}")
        if "minimum" in schema:
            failures.append(f"{var} < {schema['minimum']!r}")
    else:  # object (compile_schema has already refused anything else)
        failures.append(f"type({var}) is not dict")
        required = schema.get("required", ())
        properties = schema.get("properties", {})
        unread = frozenset(required) - properties.keys()  # the rest raise KeyError when read
        if unread:
            failures.append(f"not {const(unread)} <= {var}.keys()")
    lines.append(f"{pad}if {' or '.join(failures)}: return {fail}")
    if kind == "string" and _iso_shortcut(schema):
        # fromisoformat accepting the text proves the format (parse_timestamp's first try);
        # only what it refuses (lower-case t/z, :60) needs the full check
        if capture is not None:  # the parsed value, as parse_timestamp gives it
            lines.append(f"{pad}try: {capture} = _FROMISO({var})")
            lines.append(f"{pad}except ValueError:")
            lines.append(f"{pad}    {capture} = _PARSE({var})")
            lines.append(f"{pad}    if {capture} is None: return {fail}")
            capture = None
        else:
            lines.append(f"{pad}try: _FROMISO({var})")
            lines.append(f"{pad}except ValueError:")
            lines.append(f"{pad}    if not {const(FORMATS['date-time'])}({var}): return {fail}")
    elif kind == "string" and capture is not None and "format" in schema:
        raise ValueError(f"extract: cannot parse {'/'.join(path)} (format {schema['format']})")
    if capture is not None:
        lines.append(f"{pad}{capture} = {var}")
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            item = f"v{depth + 1}"
            if name in required:
                lines.append(f"{pad}{item} = {var}[{name!r}]")
                _emit(sub, item, depth + 1, indent, lines, consts, (*path, name), captures,
                      fail)
            else:
                lines.append(f"{pad}if {name!r} in {var}:")
                lines.append(f"{pad}    {item} = {var}[{name!r}]")
                _emit(sub, item, depth + 1, indent + 1, lines, consts, (*path, name),
                      captures, fail)


@cache
def validator(name: str) -> Check:
    """The check for schemas/<name>.schema.json: None if valid, else raises `Invalid`."""
    schema = load(name)
    explain = compile_schema(schema)  # also refuses unsupported keywords
    fast = compile_fast(schema)

    def check(value: Any) -> None:
        if not fast(value):
            explain(value)
            raise Invalid("", "invalid")  # unreachable while the two forms agree (tested)

    check.fast = fast  # type: ignore[attr-defined]
    check.explain = explain  # type: ignore[attr-defined]
    return check
