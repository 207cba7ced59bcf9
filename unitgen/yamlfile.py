"""Read a YAML file into plain Python values that remember where they came from.

Values are built straight from the events of PyYAML's parser (libyaml when
installed) with PyYAML's safe resolver: only plain data, never code. Compared
with yaml.safe_load:

* every mapping is a MarkedMap and every sequence a MarkedList: they carry the
  Mark of each of their entries, so that validation can say ``conf.yaml:12:5``;
* a key given twice in one mapping is a problem (PyYAML silently keeps the last
  one, which hides typos that cost an outage); keys merged in with ``<<:`` may
  be overridden, as YAML intends;
* timestamps stay the text they were written as (no conf value is a date), and
  a NUL character or a lone surrogate anywhere is a problem (neither can reach
  systemd, which reads UTF-8);
* YAML 1.1 surprises are never taken silently: a plain number whose YAML
  reading differs from its text (``0077`` is 63, ``1:30`` is 90, ``0x1f``,
  ``1_000``) becomes an ``Ambiguous`` value, which the schema refuses wherever
  a conf needs text or a number (with "quote it"); a null key (``~:``, ``null:``,
  an empty ``? ``) is a problem.

Problems are collected, not raised one by one; load() raises them together.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional

import yaml

from .errors import ConfigError, Mark, Problem
from . import limits

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present

MAX_DEPTH = 200


class MarkedMap(dict):
    """A dict that knows the Mark of itself, of each key and of each value."""

    __slots__ = ("mark", "key_marks", "value_marks", "file", "bool_texts")

    def __init__(self, file: str = "", mark: Any = None) -> None:
        super().__init__()
        self.file = file
        self.mark = mark if mark is None or isinstance(mark, Mark) else _mark(file, mark)
        self.key_marks: dict = {}
        self.value_marks: dict = {}
        self.bool_texts: dict = {}  # key -> the text of a plain boolean value (yes, On ...)

    def text_of(self, key: Any) -> Any:
        """The value of ``key``; for a plain boolean, the word the conf wrote."""
        return self.bool_texts.get(key, self[key]) if self[key].__class__ is bool else self[key]

    def mark_of(self, key: Any) -> Optional[Mark]:
        """Where the value of ``key`` starts (or the mapping, for a missing key)."""
        raw = self.value_marks.get(key)
        return self.mark if raw is None else _mark(self.file, raw)

    def key_mark_of(self, key: Any) -> Optional[Mark]:
        raw = self.key_marks.get(key)
        return self.mark if raw is None else _mark(self.file, raw)


class MarkedList(list):
    """A list that knows the Mark of itself and of each item."""

    __slots__ = ("mark", "marks", "file", "bool_texts")

    def __init__(self, file: str = "", mark: Any = None) -> None:
        super().__init__()
        self.file = file
        self.mark = mark if mark is None or isinstance(mark, Mark) else _mark(file, mark)
        self.marks: list = []
        self.bool_texts: dict = {}  # index -> the text of a plain boolean item

    def text_of(self, index: int) -> Any:
        """Item ``index``; for a plain boolean, the word the conf wrote."""
        return self.bool_texts.get(index, self[index]) if self[index].__class__ is bool else self[index]

    def mark_of(self, index: int) -> Optional[Mark]:
        return _mark(self.file, self.marks[index]) if 0 <= index < len(self.marks) else self.mark


def _mark(file: str, raw: Any) -> Mark:
    """A Mark from a parser mark (0-based), made only when a message needs it."""
    return raw if isinstance(raw, Mark) else Mark(file, raw.line + 1, raw.column + 1)


_TAG = "tag:yaml.org,2002:"
_MERGE = object()  # the "<<" key of a merge
_NO_KEY = object()  # a mapping waiting for a key (None is a key YAML can write)

# A plain number whose text reads back as itself: decimal, no leading zero, no
# "_", no ":" (YAML 1.1 reads 0077 as octal 63, 1:30 as 90, 1_000 as 1000).
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_PLAIN_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)?\.[0-9]*(?:[eE][-+]?[0-9]+)?\Z|[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Ambiguous:
    """A plain scalar that YAML 1.1 reads as something other than its text
    (``0077`` -> 63): no conf key accepts it, so the schema says "quote it"."""

    __slots__ = ("text", "value")

    def __init__(self, text: str, value: Any):
        self.text = text
        self.value = value

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Ambiguous) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("Ambiguous", self.text))

    def __repr__(self) -> str:
        return f"Ambiguous({self.text!r})"

    def explain(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:40] + "…"
        return (f"the plain {text}, which YAML 1.1 reads as the number {self.value!r}, not as written: "
                f"quote it ('{text}') for text, or write the number in plain decimal")


class _Frame:
    """An open mapping or sequence while its events arrive."""

    __slots__ = ("value", "anchor", "key", "key_mark", "merges", "first_seen")

    def __init__(self, value, anchor):
        self.value = value
        self.anchor = anchor
        self.key = _NO_KEY  # a mapping's key waiting for its value
        self.key_mark = None
        self.merges: list = []
        self.first_seen: dict = {}


class _Builder:
    """Builds MarkedMap/MarkedList/scalars straight from libyaml's events.

    PyYAML's own path composes a node tree first, which costs more than the
    parse itself; building from events keeps a 10,000-service conf fast.
    The same resolver decides what a plain scalar is (YAML 1.1: yes/no are
    booleans, 0x1f an int ...); only plain-data tags are accepted; an alias
    shares its anchor's value (an alias bomb stays linear) and may not refer
    to a node that is still open (no cyclic data).
    """

    def __init__(self, parser, filename: str):
        self.parser = parser
        self.file = filename
        self.problems: List[Problem] = []
        self.anchors: dict = {}
        self.open_anchors: set = set()
        self.resolved: dict = {}
        self.bool_texts: dict = {}  # anchor -> the word of an anchored plain boolean
        construct = yaml.constructor.SafeConstructor
        self.scalars = {
            _TAG + "str": None,
            _TAG + "int": construct.construct_yaml_int,
            _TAG + "float": construct.construct_yaml_float,
            _TAG + "bool": construct.construct_yaml_bool,
            _TAG + "null": construct.construct_yaml_null,
            _TAG + "timestamp": None,  # no conf value is a date: keep the text
            _TAG + "value": None,
            _TAG + "merge": None,  # "<<", a merge key: see _attach
        }

    def build(self) -> Any:
        get, check = self.parser.get_event, self.parser.check_event
        get()  # stream start
        if check(yaml.StreamEndEvent):
            return _EMPTY
        get()  # document start
        root = self._node(get)
        get()  # document end
        if not check(yaml.StreamEndEvent):
            event = get()
            raise _Failure("expected a single YAML document, found more than one", event.start_mark, syntax=True)
        return root

    def _node(self, get) -> Any:
        stack: List[_Frame] = []
        while True:
            event = get()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                value = self._scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = value
                    if value.__class__ is bool:
                        self.bool_texts[event.anchor] = event.value
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self._check_tag(event, "map" if kind is yaml.MappingStartEvent else "seq")
                if len(stack) >= MAX_DEPTH:
                    raise _Failure(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
                container = (MarkedMap if kind is yaml.MappingStartEvent else MarkedList)(self.file, event.start_mark)
                if event.anchor is not None:
                    self.anchors[event.anchor] = container
                    self.open_anchors.add(event.anchor)
                stack.append(_Frame(container, event.anchor))
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    _apply_merges(frame.value, frame.merges)
                if frame.anchor is not None:
                    self.open_anchors.discard(frame.anchor)
                value = frame.value
                event = _Start(value)
            elif kind is yaml.AliasEvent:
                if event.anchor not in self.anchors:
                    raise _Failure(f"found undefined alias {event.anchor!r}", event.start_mark, syntax=True)
                if event.anchor in self.open_anchors:
                    raise _Failure(f"the alias *{event.anchor} refers to a node that contains it", event.start_mark)
                value = self.anchors[event.anchor]
            else:
                raise _Failure(f"unexpected {kind.__name__}", event.start_mark, syntax=True)
            if not stack:
                return value
            self._attach(stack[-1], value, event, kind)

    def _attach(self, frame: _Frame, value: Any, event: Any, kind: type) -> None:
        container = frame.value
        mark = event.start_mark
        if value is _MERGE and (frame.key is not _NO_KEY or type(container) is MarkedList):
            raise _Failure("<< is a merge key; it cannot be a value", mark)
        if type(container) is MarkedList:
            if value.__class__ is bool:
                container.bool_texts[len(container)] = self._bool_text(event, kind)
            container.append(value)
            container.marks.append(mark)
            return
        if frame.key is _NO_KEY:  # this is a key
            if value is _MERGE:
                frame.key, frame.key_mark = _MERGE, mark
                return
            if value is None:
                self.problems.append(Problem(
                    "a key is null (YAML reads a plain ~, null or an empty key as null): quote it, "
                    "or remove the entry", _mark(self.file, mark)))
            try:
                hash(value)
            except TypeError:
                raise _Failure("a key must be a plain value, not a list or mapping", mark) from None
            first = frame.first_seen.get(value)
            if first is not None:
                self.problems.append(Problem(
                    f"duplicate key {value!r} (first given at line {first.line + 1}); "
                    "YAML would silently keep only the last one", _mark(self.file, mark)))
            else:
                frame.first_seen[value] = mark
            frame.key, frame.key_mark = value, mark
            return
        key, frame.key = frame.key, _NO_KEY
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(src, dict) for src in sources):
                raise _Failure("a merge (<<) takes a mapping or a list of mappings", mark)
            frame.merges.extend(sources)
            return
        container[key] = value
        container.key_marks[key] = frame.key_mark
        container.value_marks[key] = mark
        if value.__class__ is bool:
            container.bool_texts[key] = self._bool_text(event, kind)

    def _bool_text(self, event: Any, kind: type) -> str:
        if kind is yaml.AliasEvent:
            return self.bool_texts[event.anchor]
        return event.value

    def _scalar(self, event) -> Any:
        value = event.value
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:  # quoted: always text
                tag = _TAG + "str"
            else:  # plain: the resolver decides, by the text alone (cached: keys repeat)
                tag = self.resolved.get(value)
                if tag is None:
                    tag = self.resolved[value] = self.parser.resolve(yaml.ScalarNode, value, event.implicit)
        if tag not in self.scalars:
            raise _Failure(f"the tag {tag!r} is not allowed in a conf (plain values only)", event.start_mark)
        construct = self.scalars[tag]
        if tag == _TAG + "merge":
            return _MERGE
        if construct is not None:
            result = construct(self.parser, yaml.ScalarNode(tag, value))
            if event.implicit[0] and (
                    (tag == _TAG + "int" and not _PLAIN_INT.match(value))
                    or (tag == _TAG + "float" and not _PLAIN_FLOAT.match(value))):
                return Ambiguous(value, result)
            return result
        if "\x00" in value:
            self.problems.append(Problem("contains a NUL character, which systemd cannot carry",
                                         _mark(self.file, event.start_mark)))
        if _SURROGATE.search(value):
            self.problems.append(Problem("contains a lone surrogate (\\ud800-\\udfff), which is not a character "
                                         "and cannot be written as UTF-8", _mark(self.file, event.start_mark)))
        return value

    def _check_tag(self, event, kind: str) -> None:
        if event.tag not in (None, "!", _TAG + kind):
            raise _Failure(f"the tag {event.tag!r} is not allowed in a conf (plain values only)", event.start_mark)


class _Start:
    """Stands in for a container's start event when the container is attached."""

    __slots__ = ("start_mark",)

    def __init__(self, container):
        self.start_mark = container.mark


def _apply_merges(target: MarkedMap, sources: list) -> None:
    """YAML merge keys: explicit keys win, then the first merged mapping, ..."""
    explicit = dict(target)
    key_marks, value_marks = dict(target.key_marks), dict(target.value_marks)
    target.clear()
    bool_texts = dict(target.bool_texts)
    for source in reversed(sources):
        target.update(source)
        if isinstance(source, MarkedMap):
            target.key_marks.update({k: source.key_mark_of(k) for k in source})
            target.value_marks.update({k: source.mark_of(k) for k in source})
            target.bool_texts.update(source.bool_texts)
    target.update(explicit)
    target.key_marks.update(key_marks)
    target.value_marks.update(value_marks)
    target.bool_texts.update(bool_texts)


class _Failure(Exception):
    def __init__(self, message: str, mark: Any, syntax: bool = False):
        super().__init__(message)
        self.message = message
        self.raw_mark = mark
        self.syntax = syntax


_EMPTY = object()


def load(path: str, text: Optional[bytes] = None) -> Any:
    """Load one YAML document from ``path`` (or from ``text``, named ``path``).

    Returns MarkedMap / MarkedList / scalars. Raises ConfigError with every
    problem found, each with its file, line and column.
    """
    if text is None:
        text = _read_bytes(path)
    source = _decode(path, text)
    parser = _Parser(source)
    builder = _Builder(parser, path)
    try:
        data = builder.build()
    except _Failure as exc:
        prefix = "YAML syntax error: " if exc.syntax else ""
        raise ConfigError(builder.problems + [Problem(prefix + exc.message, _mark(path, exc.raw_mark))]) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(builder.problems + [_yaml_problem(path, exc)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow in a file
        line = source.count("\n", 0, exc.position) + 1
        column = exc.position - (source.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError([Problem(
            f"the character {chr(exc.character)!r} is not allowed raw in YAML; write it as an escape "
            "in a double-quoted string", Mark(path, line, column))]) from None
    finally:
        parser.dispose()
    if data is _EMPTY:
        raise ConfigError([Problem("the file is empty; it needs a mapping of services", Mark(path, 1, 1))])
    if builder.problems:
        raise ConfigError(builder.problems)
    return data


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limits.MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read the conf: {exc.strerror}", Mark(path, 1, 1))]) from None
    if len(data) > limits.MAX_FILE_BYTES:
        raise ConfigError([Problem(f"the file is larger than {limits.MAX_FILE_BYTES // (1024 * 1024)} MiB", Mark(path, 1, 1))])
    return data


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([Problem("the file is not valid UTF-8", Mark(path, line, column))]) from None


def _yaml_problem(path: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    where = Mark(path, mark.line + 1, mark.column + 1) if mark else Mark(path, 1, 1)
    if "nesting depth" in (exc.problem or ""):  # libyaml >= 0.2.5 scans ahead to its own limit (1000)
        return Problem(f"nested more than {MAX_DEPTH} levels deep", where)
    return Problem(f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}", where)
