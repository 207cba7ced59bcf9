"""systemd's unit-file syntax, in one place: quoting, escaping, names, time spans.

Every user string reaches a unit through one of the functions here, which
return ``Escaped`` strings. The renderer's jinja2 environment refuses to print
any plain ``str`` (see render.py), so a template cannot bypass them.

The rules (systemd.syntax(7), systemd.service(5) "COMMAND LINES", systemd.unit(5)
"SPECIFIERS", verified against systemd 252's parser with ``systemd-analyze
verify`` in the tests):

* ``%`` starts a specifier in almost every setting: write ``%%``.
* In Exec*= lines, words are unquoted with C escapes processed both inside and
  outside quotes, ``$VAR``/``${VAR}`` are expanded (``$$`` is a literal ``$``)
  and a lone ``;`` separates commands. Each word here is double-quoted unless it
  is plainly safe, with ``\\``, ``"``, control characters and non-printable
  characters C-escaped: no value can split a word, add a command or a line.
* ``Environment=`` unquotes and C-unescapes too, but does not expand ``$``.
* Plain settings (Description=, User=, paths, ...) take the rest of the line
  verbatim after specifier expansion, with surrounding whitespace stripped: a
  value with a control character, surrounding whitespace or a trailing
  backslash (which would join the next line) cannot be expressed, and is an
  error rather than a silent change.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) less its NUL
NAME_MAX = 255  # bytes in one file name (Linux)
LINE_MAX = 1024 * 1024  # systemd's LONG_LINE_MAX: a longer line fails the whole unit
_VALUE_MAX = LINE_MAX - 64  # room for the longest directive name and its "="


class Escaped(str):
    """Text already in unit-file syntax; the only kind the templates print."""


class Unexpressible(ValueError):
    """A value that no unit-file syntax can carry exactly."""


_C_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
_QUOTED_TABLE = str.maketrans(
    {**_C_ESCAPES, **{chr(c): f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if chr(c) not in _C_ESCAPES}, "%": "%%"}
)
_EXEC_TABLE = str.maketrans({**{k: v for k, v in _QUOTED_TABLE.items()}, ord("$"): "$$"})
# Characters Python deems non-printable beyond ASCII control (e.g. U+2028, NBSP,
# bidi controls): written as \u escapes, so that the unit file shows them.
_NONPRINTABLE = re.compile(r"[^\x20-\x7e]")
_BARE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+\Z")
_EXEC_PREFIX = set("@-:+!|")


def _escape_nonprintable(text: str) -> str:
    def one(match: "re.Match[str]") -> str:
        ch = match.group()
        if ch.isprintable():
            return ch
        code = ord(ch)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

    return _NONPRINTABLE.sub(one, text) if not text.isascii() else text


def _quoted_word(text: str, table) -> str:
    escaped = _escape_nonprintable(text.translate(table))
    if escaped and _BARE_WORD.match(escaped):
        return escaped
    return f'"{escaped}"'


def exec_command(argv: Iterable[str]) -> Escaped:
    """An argv list as the value of ExecStart=/ExecStartPre= (one command).

    The program (first item) must be what systemd 252 runs: an absolute path
    (not naming a directory) or a bare program name looked up in PATH. A
    relative path (``bin/true``, ``./x``, ``~/x``, ``%h/x``: no ~ or specifier
    is expanded in a program unitgen writes) is refused, as systemd would;
    a leading @-:+! would be read as flags, so such a name is refused too.
    """
    words = list(argv)
    if not words:
        raise Unexpressible("an empty command")
    check_program(words[0])
    return _fits(" ".join(_quoted_word(w, _EXEC_TABLE) for w in words))


def _fits(text: str) -> Escaped:
    """``text`` as a setting's value, if its line stays within systemd's LINE_MAX."""
    if len(text) > _VALUE_MAX // 4 and len(text.encode("utf-8")) > _VALUE_MAX:
        raise Unexpressible(f"would make a unit line of {len(text.encode('utf-8'))} bytes, over systemd's "
                            f"limit of {LINE_MAX} (1 MiB), and systemd would refuse the whole unit")
    return Escaped(text)


def check_program(program: str) -> None:
    """Raise Unexpressible unless systemd runs ``program`` as the conf means it."""
    if not program or program[0] in _EXEC_PREFIX:
        raise Unexpressible(f"the program {_short(program)} must be an absolute path or a program name")
    if _UNSAFE.search(program):
        raise Unexpressible("the program path contains a control character or a line separator")
    if any(c in program for c in "\"'\\"):
        raise Unexpressible("the program path contains a quote or a backslash, which systemd refuses in a "
                            "program (\"Executable name contains special characters\")")
    if program.startswith("/"):
        if program.endswith("/"):
            raise Unexpressible(f"the program {_short(program)} names a directory")
    elif "/" in program or program in (".", ".."):
        raise Unexpressible(f"the program {_short(program)} is a relative path, which systemd refuses "
                            "(~ and % are not expanded here): give an absolute path, or a bare name found in PATH")
    elif len(program.encode("utf-8")) > NAME_MAX:
        raise Unexpressible(f"the program name is longer than {NAME_MAX} bytes")


def environment(name: str, value: str) -> Escaped:
    """One Environment= assignment, NAME=value, quoted ($ is literal there)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise Unexpressible(f"{name!r} is not a valid environment variable name")
    return _fits(f'"{_escape_nonprintable((name + "=" + value).translate(_QUOTED_TABLE))}"')


def value(text: str) -> Escaped:
    """A plain single-line setting value (Description=, User=, paths ...)."""
    check_plain(text)
    return Escaped(text.replace("%", "%%"))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What no single-line setting may hold: C0 and C1 controls (U+0085 is a line
# break to Python and others), DEL, and the Unicode line and paragraph
# separators. systemd splits lines only on \n and \r, but a reader that splits
# like Python's str.splitlines() must never see more lines than systemd does.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# systemd's WHITESPACE (what it strips around a value); not Python's str.strip(),
# which also strips NBSP and other Unicode spaces that systemd keeps.
WHITESPACE = " \t\n\r"


def has_control(text: str) -> bool:
    """Whether ``text`` holds a C0 control character or DEL."""
    return bool(_CONTROL.search(text))


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_plain(text: str) -> None:
    """Raise Unexpressible unless ``text`` survives a plain setting unchanged."""
    if not text:
        raise Unexpressible("is empty")
    _one_line(text.replace("%", "%%"))


def raw(text: str) -> Escaped:
    """A raw directive value from the conf's ``systemd:`` section, verbatim.

    It is systemd syntax already (``%`` is a specifier there), so it is not
    escaped; it only must not add a line (no control character, no line
    separator), lose surrounding blanks, or join the next line.
    """
    for match in _SPECIFIER.finditer(text):
        if match.group(1) and match.group(1) not in _SPECIFIERS:
            raise Unexpressible(f"%{match.group(1)} is not a specifier systemd 252 knows (it would refuse the "
                                "line); write %% for a %")
    return _one_line(text)


# The specifiers systemd 252 resolves in unit files (tried one by one with
# systemd-analyze verify): any other ASCII letter or digit after % fails the line.
_SPECIFIERS = frozenset("abcdfghijlmnopqrstuvwyABCEGHIJLMNPRSTUVWY%")
_SPECIFIER = re.compile(r"%([A-Za-z0-9%]?)")


def _one_line(text: str) -> Escaped:
    """``text`` as the rest of a setting's line, if systemd reads exactly it there."""
    if _UNSAFE.search(text):
        raise Unexpressible("contains a control character or a line separator (newline, tab, U+0085, U+2028 "
                            "...), which a setting's line cannot carry")
    if text != text.strip(WHITESPACE):
        raise Unexpressible("starts or ends with whitespace, which systemd would strip")
    if text.endswith("\\"):
        raise Unexpressible("ends with a backslash, which systemd reads as a line continuation")
    return _fits(text)


def comment(text: str) -> Escaped:
    """Text for a ``#`` comment line: shown as is when harmless, else JSON-quoted."""
    import json

    if text.isprintable() and not text.endswith("\\"):
        return Escaped(text)
    return Escaped(_escape_nonprintable(json.dumps(text, ensure_ascii=False)))


# --- unit names -----------------------------------------------------------

_UNIT_SAFE = re.compile(r"[A-Za-z0-9:_.-]")
_PLAIN_UNIT_NAME = re.compile(r"[A-Za-z0-9:_-][A-Za-z0-9:_.-]*\Z")


def unit_name(name: str, suffix: str = ".service") -> str:
    """The unit name for a service name, escaped the way systemd-escape does.

    Characters valid in a unit name are kept, except that a leading "." is
    escaped; every other byte becomes ``\\xNN``. Unlike ``systemd-escape`` a
    "-" is kept, not written ``\\x2d``: it is valid in unit names, and means
    "/" only to ``systemd-escape --unescape --path``, which unitgen never uses.
    Operators get ``web-api.service``, not ``web\\x2dapi.service``. The mapping
    stays one-to-one (a "\\" is itself escaped).
    """
    if _PLAIN_UNIT_NAME.match(name) and len(name) + len(suffix) <= UNIT_NAME_MAX:
        return name + suffix
    out = []
    for i, ch in enumerate(name):
        if _UNIT_SAFE.match(ch) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    escaped = "".join(out) + suffix
    if not name:
        raise Unexpressible("an empty name cannot become a unit name")
    if len(escaped) > UNIT_NAME_MAX:
        raise Unexpressible(f"the unit name would be {len(escaped)} characters long, over systemd's limit of {UNIT_NAME_MAX}")
    return escaped


_UNIT_REF = re.compile(r"[A-Za-z0-9:_.@\\-]+\.(service|socket|target|device|mount|automount|swap|path|timer|slice|scope)\Z")


def check_unit_reference(name: str) -> None:
    """Raise Unexpressible unless ``name`` is a full unit name (e.g. multi-user.target)."""
    if len(name) > UNIT_NAME_MAX or not _UNIT_REF.match(name):
        raise Unexpressible(f"{name!r} is not a unit name (such as multi-user.target)")


# [Install] settings that ``systemctl enable`` turns into links: the suffix of
# the target's directory, or None for Alias= (a link beside the unit).
# (systemd 252 ignores [Install] UpheldBy=, which later versions read: unitgen refuses it.)
INSTALL_LINKS = {"WantedBy": ".wants", "RequiredBy": ".requires", "Alias": None}
_INSTALL_SEPARATOR = re.compile(r"[ \t]+")  # systemd's WHITESPACE, less the line breaks raw() refuses


def install_words(text: str) -> "list[str]":
    """The unit names of a raw [Install] WantedBy=/RequiredBy=/Alias=
    value, split as systemd splits it (on spaces and tabs), each checked to be
    a unit name that systemd reads exactly as written: quotes, escapes and %
    specifiers, which systemd would unquote or expand, are refused."""
    words = [w for w in _INSTALL_SEPARATOR.split(text) if w]
    if not words:
        raise Unexpressible("names no unit")
    for word in words:
        if "\\" in word or not _UNIT_REF.match(word) or len(word) > UNIT_NAME_MAX:
            raise Unexpressible(f"{word!r} is not a unit name (such as multi-user.target; "
                                "quotes, \\ escapes and % specifiers are not read as written here)")
    return words


# --- time spans -------------------------------------------------------------

_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_SPAN_DECIMAL = {unit: __import__("decimal").Decimal(repr(factor)) for unit, factor in _SPAN_UNITS.items()}
_SPAN_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*")


MAX_SPAN_SECONDS = 10**9  # about 31 years: any longer wait is a typo, and overflows timers


def parse_timespan(value: "float | int | str") -> float:
    """Seconds from a number or a systemd-style span ("1min 30s", "500ms").

    Raises ValueError for what systemd (or the probe's timers) would read
    differently: nan, infinities, negative or huge values, and anything finer
    than a microsecond (systemd's unit), which would be rounded silently.
    """
    from decimal import Decimal, InvalidOperation

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            total = Decimal(repr(value))
        except InvalidOperation:  # pragma: no cover - repr of a number is always a Decimal
            raise ValueError(f"{value!r} is not a time span") from None
        if not total.is_finite():
            raise ValueError(f"{value!r} is not a time span (it must be a finite number of seconds)")
        if total < 0:
            raise ValueError("a time span cannot be negative")
    else:
        total, pos, text = Decimal(0), 0, str(value)
        while pos < len(text):
            match = _SPAN_PART.match(text, pos)
            if not match or match.end() == pos or match.group(2) not in _SPAN_UNITS:
                raise ValueError(f"{_short(text)} is not a time span")
            total += Decimal(match.group(1)) * _SPAN_DECIMAL[match.group(2)]
            pos = match.end()
        if not text.strip():
            raise ValueError("an empty time span")
    if total > MAX_SPAN_SECONDS:
        raise ValueError(f"a time span above {MAX_SPAN_SECONDS} seconds (31 years) is refused")
    if (total * 1_000_000) % 1:
        raise ValueError("a time span is counted in whole microseconds: a finer one would be rounded")
    return float(total)


def timespan(seconds: float) -> Escaped:
    """Seconds as a systemd time span: 3 -> "3s", 0.5 -> "500ms"."""
    micro = round(seconds * 1_000_000)
    if micro % 1_000_000 == 0:
        return Escaped(f"{micro // 1_000_000}s")
    if micro % 1000 == 0:
        return Escaped(f"{micro // 1000}ms")
    return Escaped(f"{micro}us")


# --- version gates ------------------------------------------------------------

# Directives newer than systemd 252 (the oldest systemd unitgen is tested on),
# with the version that added each. Older systemd logs "Unknown key" and
# ignores them, so they are rendered only for a systemd known to understand them.
DIRECTIVE_SINCE = {"RestartMode": 254, "RestartSteps": 254, "RestartMaxDelaySec": 254}


def major_version(text: str) -> Optional[int]:
    """systemd's major version from Manager.Version ("252.38-1~deb12u1" -> 252), None if unreadable."""
    match = re.match(r"v?(\d+)", text.strip())
    return int(match.group(1)) if match else None


def understood(directive: str, version: Optional[int]) -> bool:
    """Whether systemd ``version`` knows ``directive``; an unknown version (None) is assumed to."""
    since = DIRECTIVE_SINCE.get(directive)
    return version is None or since is None or version >= since


# --- secrets ------------------------------------------------------------------

# A URL in free text: scheme:// up to a blank, a quote or an angle bracket (a
# URL the probe accepts holds none of them). Its userinfo is everything up to
# the *last* "@" in it: a password may hold an unencoded "#", "/", "?" or "@",
# and hiding a little too much in a message is better than showing a secret.
_URL = re.compile(r"""\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s"'<>]*)""")


def _hide_userinfo(match: "re.Match[str]") -> str:
    rest = match.group(2)
    at = rest.rfind("@")
    return match.group(0) if at < 0 else f"{match.group(1)}***{rest[at:]}"


def redact_credentials(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host``, whatever the password holds."""
    return _URL.sub(_hide_userinfo, text) if "@" in text else text


def has_credentials(url: str) -> bool:
    """Whether ``url`` (or a URL in it) carries a userinfo (user, password)."""
    return redact_credentials(url) != url


_ENVIRONMENT_LINE = re.compile(r'^(Environment="[A-Za-z_][A-Za-z0-9_]*=)((?:[^"\\]|\\.)*)(")', re.M)


def redact_unit(text: str) -> str:
    """A unit for display (diffs, logs): Environment= values and URL credentials
    hidden. A value is replaced by a short hash of it, so a change still shows."""
    import hashlib

    def hide(match: "re.Match[str]") -> str:
        mark = hashlib.sha256(match.group(2).encode("utf-8", "surrogateescape")).hexdigest()[:6]
        return f"{match.group(1)}<redacted {mark}>{match.group(3)}"

    return redact_credentials(_ENVIRONMENT_LINE.sub(hide, text))
