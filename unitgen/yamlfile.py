"""Read a YAML file into plain Python values that remember where they came from.

PyYAML's safe loader is used (never the full loader: a conf must never run
code), with three changes:

* every mapping is a MarkedMap and every sequence a MarkedList: they carry the
  Mark of each of their entries, so that validation can say ``conf.yaml:12:5``;
* a key given twice in one mapping is a problem (PyYAML silently keeps the last
  one, which hides typos that cost an outage); keys merged in with ``<<:`` may
  be overridden, as YAML intends;
* timestamps stay the text they were written as (no conf value is a date), and
  a NUL character anywhere is a problem (it cannot reach systemd).

Problems are collected, not raised one by one; load() raises them together.
"""

from __future__ import annotations

from typing import Any, List, Optional

import yaml

from .errors import ConfigError, Mark, Problem

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_FILE_BYTES = 16 * 1024 * 1024


class MarkedMap(dict):
    """A dict that knows the Mark of itself, of each key and of each value."""

    mark: Optional[Mark] = None

    def __init__(self) -> None:
        super().__init__()
        self.key_marks: dict = {}
        self.value_marks: dict = {}

    def mark_of(self, key: Any) -> Optional[Mark]:
        """Where the value of ``key`` starts (or the mapping, for a missing key)."""
        return self.value_marks.get(key, self.mark)

    def key_mark_of(self, key: Any) -> Optional[Mark]:
        return self.key_marks.get(key, self.mark)


class MarkedList(list):
    """A list that knows the Mark of itself and of each item."""

    mark: Optional[Mark] = None

    def __init__(self) -> None:
        super().__init__()
        self.marks: List[Mark] = []

    def mark_of(self, index: int) -> Optional[Mark]:
        return self.marks[index] if 0 <= index < len(self.marks) else self.mark


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _MarkingLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader that records marks and duplicate keys (see module doc)."""

    def __init__(self, stream: str, filename: str):
        super().__init__(stream)
        self.filename = filename
        self.problems: List[Problem] = []

    def mark(self, node: yaml.Node) -> Mark:
        return Mark(self.filename, node.start_mark.line + 1, node.start_mark.column + 1)

    def construct_marked_map(self, node: yaml.MappingNode):
        data = MarkedMap()
        data.mark = self.mark(node)
        yield data
        first_seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in first_seen:
                self.problems.append(
                    Problem(
                        f"duplicate key {key!r} (first given at line {first_seen[key].line}); "
                        "YAML would silently keep only the last one",
                        self.mark(key_node),
                    )
                )
            else:
                first_seen[key] = self.mark(key_node)
        self.flatten_mapping(node)  # resolves "<<:" merges, explicit keys last
        for key_node, value_node in node.value:
            key = self.construct_object(key_node)
            try:
                hash(key)
            except TypeError:
                self.problems.append(Problem("a key must be a plain value, not a list or mapping", self.mark(key_node)))
                continue
            data[key] = self.construct_object(value_node)
            data.key_marks[key] = self.mark(key_node)
            data.value_marks[key] = self.mark(value_node)

    def construct_marked_list(self, node: yaml.SequenceNode):
        data = MarkedList()
        data.mark = self.mark(node)
        yield data
        for item in node.value:
            data.append(self.construct_object(item))
            data.marks.append(self.mark(item))

    def construct_checked_str(self, node: yaml.ScalarNode) -> str:
        value = self.construct_scalar(node)
        if "\x00" in value:
            self.problems.append(Problem("contains a NUL character, which systemd cannot carry", self.mark(node)))
        return value

    def construct_text(self, node: yaml.ScalarNode) -> str:
        return self.construct_scalar(node)


def _reject_tag(loader: _MarkingLoader, node: yaml.Node):
    raise yaml.constructor.ConstructorError(
        None, None, f"the tag {node.tag!r} is not allowed in a conf (plain values only)", node.start_mark
    )


_MarkingLoader.add_constructor("tag:yaml.org,2002:map", _MarkingLoader.construct_marked_map)
_MarkingLoader.add_constructor("tag:yaml.org,2002:seq", _MarkingLoader.construct_marked_list)
_MarkingLoader.add_constructor("tag:yaml.org,2002:str", _MarkingLoader.construct_checked_str)
_MarkingLoader.add_constructor("tag:yaml.org,2002:timestamp", _MarkingLoader.construct_text)
# Not plain data, and every tag PyYAML does not know (``!!python/object`` ...):
for _tag in ("omap", "pairs", "set", "binary"):
    _MarkingLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _reject_tag)
_MarkingLoader.add_constructor(None, _reject_tag)


def load(path: str, text: Optional[bytes] = None) -> Any:
    """Load one YAML document from ``path`` (or from ``text``, named ``path``).

    Returns MarkedMap / MarkedList / scalars. Raises ConfigError with every
    problem found, each with its file, line and column.
    """
    if text is None:
        text = _read_bytes(path)
    source = _decode(path, text)
    loader = _MarkingLoader(source, path)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([Problem("the file is empty; it needs a mapping of services", Mark(path, 1, 1))])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(loader.problems + [_yaml_problem(path, exc)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow in a file
        line = source.count("\n", 0, exc.position) + 1
        column = exc.position - (source.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError([Problem(
            f"the character {chr(exc.character)!r} is not allowed raw in YAML; write it as an escape "
            "in a double-quoted string", Mark(path, line, column))]) from None
    except RecursionError:
        raise ConfigError([Problem("the YAML is nested too deeply to be a conf", Mark(path, 1, 1))]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise ConfigError(loader.problems)
    return data


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read the conf: {exc.strerror}", Mark(path, 1, 1))]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([Problem(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", Mark(path, 1, 1))])
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
    text = exc.problem or exc.context or "invalid YAML"
    if isinstance(exc, yaml.constructor.ConstructorError):
        return Problem(text, where)
    if exc.context and "expected a single document" in exc.context:
        text = "expected a single YAML document, found more than one"
    return Problem(f"YAML syntax error: {text}", where)
