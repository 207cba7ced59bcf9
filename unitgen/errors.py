"""One exception family for everything unitgen reports to an operator.

Every problem that comes from a conf file carries where it comes from (file,
line, column, key path), so that the CLI can print it once, in one format:

    conf.yaml:12:5: services.web.deps[0].port: 70000 is above the maximum 65535

Validation collects every problem it finds and raises them together as a
ConfigError, so an operator fixes a file in one pass, not one error at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Tuple


@dataclass(frozen=True)
class Mark:
    """A position in a source file; line and column are 1-based."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One problem found in a conf: where, under which key, and what."""

    message: str
    mark: Optional[Mark] = None
    path: str = ""
    keys: Tuple[Any, ...] = field(default=(), compare=False)  # path as raw keys

    def __str__(self) -> str:
        return self.format()

    def format(self, label: str = "") -> str:
        """``FILE:LINE:COL: key.path: [label: ]message`` on one line: control
        characters escaped, URL credentials hidden, at most MAX_MESSAGE characters."""
        from .systemd import redact_credentials

        where = f"{self.mark}: " if self.mark else ""
        key = f"{self.path}: " if self.path else ""
        text = one_line(redact_credentials(f"{where}{key}{label}{self.message}"))
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE] + f"… ({len(text) - MAX_MESSAGE} more characters)"
        return text


MAX_MESSAGE = 1000  # characters of one printed problem: a huge value is never printed whole


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\x85"})


def one_line(text: str) -> str:
    """``text`` with every control character escaped: one problem, one line, and
    no value can forge lines in a terminal or a log."""
    return text.translate(_CONTROL)


MAX_PROBLEMS = 100  # printed at most (the CLI, apply --json): a hostile file must not flood the terminal
BUG_EXIT = 3  # an exception unitgen did not expect: a bug, never the operator's doing


def write_traceback(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a new file of its own (mode 600, in the
    temporary directory) and return its path, for a one-line bug report."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="unitgen-bug-", suffix=".txt")
    with open(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


class UnitgenError(Exception):
    """Base of every error unitgen reports; the CLI catches this class once."""

    exit_code = 1


class ConfigError(UnitgenError):
    """The conf cannot be used. Holds every problem found, in file order."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=_problem_order)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(UnitgenError):
    """A command was called in a way that cannot work (bad option values)."""

    exit_code = 2


class OwnershipError(UnitgenError):
    """The output directory holds files unitgen did not write (or that changed)."""


def _problem_order(problem: Problem):
    if problem.mark is None:
        return ("", 0, 0, problem.path)
    return (problem.mark.file, problem.mark.line, problem.mark.column, problem.path)
