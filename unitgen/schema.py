"""Validate a loaded conf against unitgen/schema.json, the one source of truth.

The schema file serves editors (yaml-language-server) and this module alike.
It is compiled once into closures, each returning the problems it finds (an
empty tuple when the value is valid), so validating ten thousand services
stays cheap. Only the JSON Schema keywords the file uses are supported; a
keyword this module does not know is refused at compile time, so the schema
and the validator cannot silently drift apart.

Messages are for operators: where (FILE:LINE:COL from the YAML marks), under
which key path, what is wrong, and "did you mean" for misspelt keys. A
schema may carry ``errorMessage`` (the ajv-errors convention) to explain a
pattern in words.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import Mark, Problem
from .yamlfile import Ambiguous, MarkedList, MarkedMap

SCHEMA_PATH = Path(__file__).with_name("schema.json")

KeyPath = Tuple[Any, ...]
Check = Callable[[Any, KeyPath, Optional[Mark]], Sequence[Problem]]

_OK: Tuple[Problem, ...] = ()

# Keywords that only describe (for editors and readers); they validate nothing.
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "errorMessage", "default", "examples"}

_TYPE_TESTS: Dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}

_PYTHON_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
                 "boolean": bool, "null": ()}
_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def format_path(path: KeyPath) -> str:
    """("services", "web", "deps", 0, "port") -> services.web.deps[0].port"""
    out = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(str(part), ensure_ascii=False)}]")
    return "".join(out)


def describe(value: Any) -> str:
    """A value as an operator would name it in a sentence."""
    if isinstance(value, Ambiguous):
        return value.explain()
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def did_you_mean(word: Any, choices: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _short(text: str, limit: int = 40) -> str:
    """A value quoted in a message: cut short, URL credentials hidden."""
    from .systemd import redact_credentials

    text = redact_credentials(str(text))
    return repr(text if len(text) <= limit else text[:limit] + "…")


quote = _short  # the one way a message quotes a value of the conf


def _problem(message: str, path: KeyPath, where: Any) -> Tuple[Problem]:
    return (Problem(message, _resolve(where), format_path(path), path),)


# Where a value is, passed down while validating: a Mark, or (container, key),
# turned into a Mark only when a problem is reported (most values have none).
def _child_mark(container: Any, key: Any, default: Any) -> Any:
    if isinstance(container, (MarkedMap, MarkedList)):
        return (container, key)
    return default


def _resolve(where: Any) -> Optional[Mark]:
    if isinstance(where, tuple):
        container, key, *of_key = where
        return container.key_mark_of(key) if of_key else container.mark_of(key)
    return where


class _Compiler:
    """Turns schema dicts into Check closures; $ref targets are compiled once."""

    def __init__(self, root: dict):
        self.root = root
        self.refs: Dict[str, Check] = {}

    def resolve(self, ref: str) -> dict:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, not {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def deref(self, schema: dict) -> dict:
        while "$ref" in schema and len(schema) == 1 + len(set(schema) & _ANNOTATIONS):
            schema = self.resolve(schema["$ref"])
        return schema

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return lambda value, path, mark: _OK
        if schema is False:
            return lambda value, path, mark: _problem("is not allowed here", path, mark)
        unknown = set(schema) - _ANNOTATIONS - set(_KEYWORDS)
        if unknown:
            raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")
        checks: List[Check] = []
        type_check = _compile_type(schema.get("type"))
        for keyword, builder in _KEYWORDS.items():
            if keyword in schema and keyword != "type":
                built = builder(self, schema)
                if built is not None:
                    checks.append(built)
        return _sequence(type_check, checks)

    def compile_ref(self, ref: str) -> Check:
        if ref not in self.refs:
            cell: List[Check] = []
            self.refs[ref] = lambda value, path, mark: cell[0](value, path, mark)
            cell.append(self.compile(self.resolve(ref)))
        return self.refs[ref]


def _sequence(type_check: Optional[Check], checks: List[Check]) -> Check:
    def run(value, path, mark):
        if type_check is not None:
            problems = type_check(value, path, mark)
            if problems:
                return problems  # nothing else is meaningful on the wrong type
        found: List[Problem] = []
        for check in checks:
            problems = check(value, path, mark)
            if problems:
                found.extend(problems)
        return found or _OK

    return run


def _type_names(spec: Any) -> List[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def _compile_type(spec: Any) -> Optional[Check]:
    if spec is None:
        return None
    names = _type_names(spec)
    wanted = " or ".join(_TYPE_WORDS[n] for n in names)
    hint = "; quote it to make it text" if "string" in names else ""
    classes = tuple({_PYTHON_TYPES[n] for n in names if n != "null"} - {()})
    allow_none = "null" in names
    # bool is an int in Python, but not an integer or a number in JSON Schema
    refuse_bool = "boolean" not in names

    def check(value, path, mark):
        if isinstance(value, classes) and not (refuse_bool and value.__class__ is bool):
            return _OK
        if value is None and allow_none:
            return _OK
        if isinstance(value, Ambiguous):
            return _problem(f"expected {wanted}, got {describe(value)}", path, mark)
        return _problem(f"expected {wanted}, got {describe(value)}{hint}", path, mark)

    return check


def _k_ref(c: _Compiler, s: dict) -> Check:
    return c.compile_ref(s["$ref"])


def _k_const(c: _Compiler, s: dict) -> Check:
    const = s["const"]

    def check(value, path, mark):
        if value == const and type(value) is type(const):
            return _OK
        return _problem(f"must be {json.dumps(const)}, got {describe(value)}", path, mark)

    return check


def _k_enum(c: _Compiler, s: dict) -> Check:
    allowed = s["enum"]
    words = ", ".join(json.dumps(a) for a in allowed)
    names = [a for a in allowed if isinstance(a, str)]

    def check(value, path, mark):
        if any(value == a and type(value) is type(a) for a in allowed):
            return _OK
        return _problem(f"must be one of {words}, got {describe(value)}{did_you_mean(value, names)}", path, mark)

    return check


def _k_properties(c: _Compiler, s: dict) -> Check:
    """properties + patternProperties + additionalProperties, as one pass over the keys."""
    props = {k: c.compile(v) for k, v in s.get("properties", {}).items()}
    patterns = [(re.compile(p), c.compile(v)) for p, v in s.get("patternProperties", {}).items()]
    extra = s.get("additionalProperties", True)
    extra_check = c.compile(extra) if isinstance(extra, dict) else None
    known = list(props)

    def check(value, path, mark):
        if not isinstance(value, dict):
            return _OK
        found: List[Problem] = []
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(key, str):
                sub = next((chk for rx, chk in patterns if rx.search(key)), None)
            if sub is None:
                if extra is False:
                    where = value.key_mark_of(key) if isinstance(value, MarkedMap) else mark
                    message = f"unknown key {_short(str(key))}{did_you_mean(key, known)}"
                    found.append(Problem(message, _resolve(where), format_path(path), path + (key,)))
                    continue
                sub = extra_check
            if sub is not None:
                problems = sub(item, path + (key,), _child_mark(value, key, mark))
                if problems:
                    found.extend(problems)
        return found or _OK

    return check


def _k_required(c: _Compiler, s: dict) -> Check:
    required = s["required"]

    def check(value, path, mark):
        if not isinstance(value, dict):
            return _OK
        missing = [k for k in required if k not in value]
        if not missing:
            return _OK
        return _problem("missing " + ", ".join(repr(k) for k in missing), path, mark)

    return check


def _k_property_names(c: _Compiler, s: dict) -> Check:
    sub = c.compile(s["propertyNames"])

    def check(value, path, mark):
        if not isinstance(value, dict):
            return _OK
        found: List[Problem] = []
        for key in value:
            where = (value, key, "key") if isinstance(value, MarkedMap) else mark
            if not isinstance(key, str):
                hint = "" if isinstance(key, Ambiguous) else "; quote it"
                found.extend(_problem(f"a name must be text, got {describe(key)}{hint}", path, where))
                continue
            for p in sub(key, path, where):
                found.append(Problem(f"name {_short(key)} {p.message}", _resolve(p.mark), p.path, p.keys))
        return found or _OK

    return check


def _k_items(c: _Compiler, s: dict) -> Check:
    sub = c.compile(s["items"])

    def check(value, path, mark):
        if not isinstance(value, list):
            return _OK
        found: List[Problem] = []
        for i, item in enumerate(value):
            problems = sub(item, path + (i,), _child_mark(value, i, mark))
            if problems:
                found.extend(problems)
        return found or _OK

    return check


def _bound(keyword: str, applies: Callable[[Any], bool], measure: Callable[[Any], Any], fails, message: str):
    def builder(c: _Compiler, s: dict) -> Check:
        limit = s[keyword]

        def check(value, path, mark):
            if applies(value) and fails(measure(value), limit):
                return _problem(message.format(value=value, limit=limit, s="" if limit == 1 else "s"), path, mark)
            return _OK

        return check

    return builder


def _is_number(v: Any) -> bool:
    return _TYPE_TESTS["number"](v)


def _k_pattern(c: _Compiler, s: dict) -> Check:
    rx = re.compile(s["pattern"])
    message = s.get("errorMessage") or f"does not match the pattern {s['pattern']}"

    def check(value, path, mark):
        if isinstance(value, str) and not rx.search(value):
            return _problem(f"{_short(value)} {message}" if "errorMessage" in s else message, path, mark)
        return _OK

    return check


class _Branch:
    """One alternative of anyOf/oneOf, with what is needed to rank its failure."""

    def __init__(self, c: _Compiler, schema: dict):
        target = c.deref(schema)
        self.check = c.compile(schema)
        self.title = target.get("title")
        self.types = _type_names(target["type"]) if "type" in target else None
        self.required = target.get("required", [])
        self.keys = list(target.get("properties", {}))

    def accepts_type(self, value: Any) -> bool:
        return self.types is None or any(_TYPE_TESTS[t](value) for t in self.types)



def _alternatives(exactly_one: bool):
    keyword = "oneOf" if exactly_one else "anyOf"

    def builder(c: _Compiler, s: dict) -> Check:
        branches = [_Branch(c, b) for b in s[keyword]]
        all_keys = sorted({k for b in branches for k in b.keys})
        keyless = [b for b in branches if not b.required]
        by_key: Dict[str, List[_Branch]] = {}
        for b in branches:
            if b.required:
                by_key.setdefault(b.required[0], []).append(b)

        def candidates_for(value):
            if not isinstance(value, dict):
                return [b for b in branches if b.accepts_type(value)]
            found = [b for b in keyless if b.accepts_type(value)]
            for key in value:
                for b in by_key.get(key, ()):
                    if all(k in value for k in b.required) and b.accepts_type(value):
                        found.append(b)
            return found

        def check(value, path, mark):
            # A branch of the wrong type or missing a required key cannot pass:
            # skipping it keeps the semantics and spares building its messages.
            candidates = candidates_for(value)
            results = [(b, b.check(value, path, mark)) for b in candidates]
            passing = [b for b, problems in results if not problems]
            if len(passing) == 1 or (passing and not exactly_one):
                return _OK
            if passing:
                titles = ", ".join(b.title or "?" for b in passing)
                return _problem(f"is ambiguous: it fits several forms ({titles})", path, mark)
            if len(results) != len(branches):
                results = [(b, b.check(value, path, mark)) for b in branches]
            return _explain_failure(results, all_keys, value, path, mark)

        return check

    return builder


def _explain_failure(results, all_keys, value, path, mark) -> Sequence[Problem]:
    """Report the errors of the alternative the author most likely meant."""
    typed = [(b, p) for b, p in results if b.accepts_type(value)]
    if not typed:
        words = sorted({_TYPE_WORDS[t] for b, _ in results for t in (b.types or [])})
        return _problem(f"expected {' or '.join(words)}, got {describe(value)}", path, mark)
    if isinstance(value, dict):
        meant = [(b, p) for b, p in typed if b.required and all(k in value for k in b.required)]
        if not meant:
            forms = "; ".join(b.title for b, _ in typed if b.title)
            hints = "".join(
                f" (unknown key {k!r}{did_you_mean(k, all_keys)})" for k in value if k not in all_keys
            )
            return _problem(f"needs one of these forms: {forms}{hints}", path, mark)
        typed = meant
    return min(typed, key=lambda bp: len(bp[1]))[1]


def _k_all_of(c: _Compiler, s: dict) -> Check:
    subs = [c.compile(x) for x in s["allOf"]]
    return _sequence(None, subs)


def _k_if(c: _Compiler, s: dict) -> Check:
    test = c.compile(s["if"])
    then = c.compile(s.get("then", True))
    otherwise = c.compile(s.get("else", True))

    def check(value, path, mark):
        return (otherwise if test(value, path, mark) else then)(value, path, mark)

    return check


def _ignored(c: _Compiler, s: dict) -> None:
    return None  # handled by another keyword's builder


_KEYWORDS: Dict[str, Callable[[_Compiler, dict], Optional[Check]]] = {
    "type": _ignored,
    "$ref": _k_ref,
    "const": _k_const,
    "enum": _k_enum,
    "properties": _k_properties,
    "patternProperties": lambda c, s: None if "properties" in s else _k_properties(c, s),
    "additionalProperties": lambda c, s: None if ("properties" in s or "patternProperties" in s) else _k_properties(c, s),
    "required": _k_required,
    "propertyNames": _k_property_names,
    "minProperties": _bound("minProperties", lambda v: isinstance(v, dict), len, lambda n, m: n < m, "must not be empty"),
    "items": _k_items,
    "minItems": _bound("minItems", lambda v: isinstance(v, list), len, lambda n, m: n < m, "needs at least {limit} item{s}"),
    "minimum": _bound("minimum", _is_number, lambda v: v, lambda n, m: n < m, "{value} is below the minimum {limit}"),
    "maximum": _bound("maximum", _is_number, lambda v: v, lambda n, m: n > m, "{value} is above the maximum {limit}"),
    "minLength": _bound("minLength", lambda v: isinstance(v, str), len, lambda n, m: n < m, "must not be empty"),
    "maxLength": _bound("maxLength", lambda v: isinstance(v, str), len, lambda n, m: n > m, "is longer than {limit} characters"),
    "pattern": _k_pattern,
    "anyOf": _alternatives(exactly_one=False),
    "oneOf": _alternatives(exactly_one=True),
    "allOf": _k_all_of,
    "if": _k_if,
    "then": _ignored,
    "else": _ignored,
}


class Validator:
    """The compiled schema. validate(data, "#/$defs/x") -> list of Problems."""

    def __init__(self, schema: Optional[dict] = None):
        self.schema = schema if schema is not None else json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        self._compiler = _Compiler(self.schema)
        self._root = self._compiler.compile(self.schema)

    def validate(self, data: Any, ref: Optional[str] = None, path: KeyPath = ()) -> List[Problem]:
        check = self._compiler.compile_ref(ref) if ref else self._root
        mark = data.mark if isinstance(data, (MarkedMap, MarkedList)) else None
        return list(check(data, path, mark))

    def property_names(self, ref: str) -> List[str]:
        return list(self._compiler.resolve(ref).get("properties", {}))


_shared: Optional[Validator] = None


def validator() -> Validator:
    """The validator for the shipped schema, compiled on first use."""
    global _shared
    if _shared is None:
        _shared = Validator()
    return _shared
