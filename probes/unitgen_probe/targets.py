"""What the probe waits for: `Target`, its validation, and how it is shown.

A `Target` is immutable and valid by construction: a malformed spec or an
option that does not fit the kind raises `UsageError` at once, so that
unitgen can validate a configuration without running anything, and the
probe can exit 2 before the first attempt.

Nothing here does I/O. Heavy modules (`re`, `urllib.parse`) are imported
only for the kinds that need them, because this module is on the probe's
start-up path.
"""

import _socket  # socket's C core: see net.py

KINDS = ("tcp", "http", "unix", "dns", "exec")

#: Per-attempt timeout in seconds when neither the target nor the command
#: line sets one: longer than the first TCP SYN retransmission (1 s), so one
#: lost SYN does not fail an attempt, yet short enough that an attempt at a
#: host that is down ends, and says why, within a couple of seconds.
DEFAULT_TIMEOUT = 2.0

# sun_path holds 108 bytes including the terminating NUL.
_UNIX_PATH_MAX = 107
_HTTP_ONLY = ("status", "body")
_HTTPS_ONLY = ("ca_file", "insecure")


class UsageError(ValueError):
    """A malformed command line, target spec or option (exit status 2).

    The message is one line, written for the operator: control characters
    are escaped and URL credentials removed here, whatever it quotes.
    """

    def __init__(self, message):
        super().__init__(redact(printable(message)))


class Frozen:
    """Base of the API's value objects: fields set once, by `_freeze`, then
    read-only; equal and hashed by the fields named in ``_FIELDS``."""

    __slots__: "tuple[str, ...]" = ()
    _FIELDS: "tuple[str, ...]" = ()

    def _freeze(self, **values):
        for attr, value in values.items():
            object.__setattr__(self, attr, value)

    def __setattr__(self, attr, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, attr):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _key(self):
        return tuple(getattr(self, attr) for attr in self._FIELDS)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())


class Target(Frozen):
    """One dependency to wait for: a kind, a spec and per-target options.

    ``Target(kind, spec, name=None, status=None, body=None, ca_file=None,
    insecure=False, timeout=None)``

    - kind: ``tcp`` (spec ``HOST:PORT`` or ``[V6ADDR]:PORT``), ``http``
      (spec an ``http://`` or ``https://`` URL), ``unix`` (spec a socket path,
      or ``@name`` for the abstract namespace), ``dns`` (spec a host name) or
      ``exec`` (spec one shell command, run with ``/bin/sh -c``).
    - name: the label used in messages instead of the spec.
    - status (http): accepted statuses, a comma list such as ``"200,204"``
      or ``"2xx,301"``, or an iterable of codes and classes; default 2xx.
    - body (http): a regular expression the body must match (re.search).
    - ca_file / insecure (https): verify against this CA bundle, or not at
      all; the default verifies against the system's trust store.
    - timeout: per-attempt timeout in seconds for this target.
    - wait_at_most: an optional target: seconds after the probe starts past
      which the wait goes on without it (a degraded start); None: required.

    Targets compare equal when all these fields are equal, and are hashable.
    The constructor raises `UsageError` for anything malformed.
    """

    _FIELDS = ("kind", "spec", "name", "status", "body", "ca_file", "insecure", "timeout", "wait_at_most")
    __slots__ = _FIELDS + ("_address",)
    # for type checkers only (annotations, not class attributes: __slots__ holds them)
    kind: str
    spec: str
    name: "str | None"
    status: "tuple[str, ...] | None"
    body: "str | None"
    ca_file: "str | None"
    insecure: bool
    timeout: "float | None"
    wait_at_most: "float | None"

    def __init__(self, kind, spec, name=None, status=None, body=None,
                 ca_file=None, insecure=False, timeout=None, wait_at_most=None):
        if kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r} (expected {_or_list(KINDS)})")
        if not isinstance(spec, str) or not spec:
            raise UsageError(f"{kind}: the spec is empty")
        if "\0" in spec:
            raise UsageError(f"{kind}: the spec contains a NUL byte")
        given = {"status": status is not None, "body": body is not None,
                 "ca_file": ca_file is not None, "insecure": bool(insecure)}
        address = _PARSERS[kind](spec)
        if kind != "http":
            _refuse_options(kind, given, _HTTP_ONLY + _HTTPS_ONLY, "http targets")
        elif not spec.lower().startswith("https:"):
            _refuse_options(kind, given, _HTTPS_ONLY, "https URLs")
        if ca_file is not None and insecure:
            raise UsageError("--ca-file and --insecure exclude each other")
        self._freeze(
            kind=kind,
            spec=spec,
            name=_label(name),
            status=None if status is None else _statuses(status),
            body=None if body is None else _regex(body),
            ca_file=None if ca_file is None else _path(ca_file, "--ca-file"),
            insecure=bool(insecure),
            timeout=None if timeout is None else seconds(timeout, "--timeout", allow_zero=False),
            wait_at_most=optional_bound(wait_at_most),
            _address=address,
        )

    def __repr__(self):
        # The spec is redacted: a repr ends up in logs and tracebacks.
        fields = [f"{self.kind!r}", f"{self.safe_spec!r}"]
        for attr, default in (("name", None), ("status", None), ("body", None),
                              ("ca_file", None), ("insecure", False), ("timeout", None),
                              ("wait_at_most", None)):
            value = getattr(self, attr)
            if value != default:
                fields.append(f"{attr}={value!r}")
        return f"Target({', '.join(fields)})"

    @property
    def safe_spec(self):
        """The spec as it may be printed: URL credentials removed."""
        if self.kind in ("http", "exec"):
            return redact(self.spec)
        return self.spec

    @property
    def label(self):
        """The label used in every message: the name, else the safe spec."""
        return self.name if self.name is not None else self.safe_spec

    @property
    def display(self):
        """How messages name the target: ``db (10.0.0.11:5432)``, or the safe spec."""
        shown = printable(self.safe_spec)
        return shown if self.name is None else f"{self.name} ({shown})"

    @property
    def address(self):
        """The parsed spec the checks use (kind-specific; see the parsers)."""
        return self._address


class Group(Frozen):
    """Targets of which ``need`` must answer: "2 of these 3".

    ``Group(label, targets, need=None)``: *label* names the group in every
    message (e.g. a replicated service, ``etcd``); *targets* are `Target`s;
    *need* is how many of them must have answered, 1 or more (None: all of
    them); *wait_at_most* makes the group optional, as for a `Target`.
    A need larger than the targets is allowed, and can never be met:
    the probe says so and waits until its deadline. Equal and hashable by
    label, need and targets; `UsageError` for anything malformed.
    """

    _FIELDS = ("label", "need", "targets", "wait_at_most")
    __slots__ = _FIELDS
    label: str
    need: int
    targets: "tuple[Target, ...]"
    wait_at_most: "float | None"

    def __init__(self, label, targets, need=None, wait_at_most=None):
        label = _label(label)
        if label is None:
            raise UsageError("group: the label is missing")
        targets = tuple(targets)
        if not targets or not all(isinstance(t, Target) for t in targets):
            raise UsageError(f"group {label}: no target in it")
        if need is None:
            need = len(targets)
        if isinstance(need, bool) or not isinstance(need, int) or need < 1:
            raise UsageError(f"group {label}: --need must be all, any or a whole number of 1 or more, got {need!r}")
        if any(t.wait_at_most is not None for t in targets):
            raise UsageError(f"group {label}: --wait-at-most applies to the group, not to a target in it")
        self._freeze(label=label, need=need, targets=targets, wait_at_most=optional_bound(wait_at_most))

    def __repr__(self):
        bound = "" if self.wait_at_most is None else f", wait_at_most={self.wait_at_most!r}"
        return f"Group({self.label!r}, {list(self.targets)!r}, need={self.need}{bound})"


def optional_bound(value):
    """--wait-at-most: seconds above 0, or None (a required target or group)."""
    return None if value is None else seconds(value, "--wait-at-most", allow_zero=False)


def need_of(text, label):
    """``--need`` of group *label* from the command line: ``all`` (None), ``any`` (1) or N >= 1."""
    if text == "all":
        return None
    if text == "any":
        return 1
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UsageError(f"group {label}: --need must be all, any or a whole number of 1 or more, got {text!r}")
    return int(text)


def _or_list(words):
    return ", ".join(words[:-1]) + " or " + words[-1]


def _refuse_options(kind, given, options, where):
    for option in options:
        if given[option]:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} applies to {where} only, not to {kind}")


# --- spec parsers: each returns the address the check uses ----------------

def _parse_tcp(spec):
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> (host, port)."""
    if spec.startswith("["):
        inside, sep, rest = spec[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise UsageError(f"tcp {spec}: expected [V6ADDR]:PORT")
        _ipv6(inside, spec)
        return inside, _port(rest[1:], spec)
    host, sep, port = spec.rpartition(":")
    if not sep:
        raise UsageError(f"tcp {spec}: expected HOST:PORT (the port is missing)")
    if ":" in host:
        raise UsageError(f"tcp {spec}: put an IPv6 address in brackets, e.g. [::1]:5432")
    return _hostname(host, "tcp " + spec), _port(port, spec)


class Url(Frozen):
    """An http:// or https:// URL, split as ``urllib.parse.urlsplit`` splits
    it: the same fields with the same values (``scheme``, ``netloc``,
    ``path``, ``query``, ``fragment``, ``username``, ``password``,
    ``hostname``, ``port``), for every URL `parse_url` accepts. Split by
    hand because urllib.parse loads re and more, several times what a
    plain-http probe needs to start; made by `parse_url` only."""

    _FIELDS = __slots__ = ("scheme", "netloc", "path", "query", "fragment",
                           "username", "password", "hostname", "port")
    scheme: str
    netloc: str
    path: str
    query: str
    fragment: str
    username: "str | None"
    password: "str | None"
    hostname: "str | None"
    port: "int | None"

    def __init__(self, scheme, netloc, path, query, fragment, port):
        userinfo, at, hostinfo = netloc.rpartition("@")
        username, colon, password = userinfo.partition(":")
        _, bracket, inside = hostinfo.partition("[")
        host = inside.partition("]")[0] if bracket else hostinfo.partition(":")[0]
        address, percent, zone = host.partition("%")  # an IPv6 zone keeps its case
        self._freeze(scheme=scheme, netloc=netloc, path=path, query=query, fragment=fragment,
                     username=username if at else None, password=password if at and colon else None,
                     hostname=address.lower() + percent + zone if host else None, port=port)

    def __repr__(self):
        return f"Url({redact(self.scheme + '://' + self.netloc + self.path)!r})"


def parse_url(spec, strict=True):
    """Validate an http:// or https:// URL -> `Url`.

    *strict* (a URL the operator wrote): an ``@`` after the host is refused,
    so that the credentials of an accepted URL are exactly what `redact`
    removes; an unencoded ``/``, ``#`` or ``?`` in a password would otherwise
    end the host early and put the rest of the password in the path, where
    it would be printed. A URL a server redirects to is not strict.
    """
    scheme = spec.partition(":")[0].lower()
    if scheme not in ("http", "https") or not spec[len(scheme):].startswith("://"):
        raise UsageError(f"http {_url_shown(spec)}: the URL must start with http:// or https://")
    bad = [c for c in spec if c <= " " or c == "\x7f"]
    if bad:
        raise UsageError(f"http {_url_shown(spec)}: the URL contains "
                         f"{'a space' if bad[0] == ' ' else 'a control character'}"
                         " (percent-encode it)")
    rest = spec[len(scheme) + 3:]
    ends = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0]
    netloc, rest = rest[:min(ends, default=len(rest))], rest[min(ends, default=len(rest)):]
    rest, _, fragment = rest.partition("#")
    path, _, query = rest.partition("?")
    where = "http " + _url_shown(spec)
    if ("[" in netloc) != ("]" in netloc):
        raise UsageError(f"{where}: Invalid IPv6 URL")
    if not netloc.isascii():
        _nfkc_check(spec, where)
    if strict and "@" in spec[len(scheme) + 3 + len(netloc):]:
        raise UsageError(f"{where}: an '@' after the host: percent-encode it as %40 "
                         "(and in a user name or password, / # ? @ as %2F %23 %3F %40)")
    hostinfo = netloc.rpartition("@")[2]
    port_text = (hostinfo.partition("]")[2] if "[" in hostinfo else hostinfo).partition(":")[2]
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else (None if not port_text else 0)
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"{where}: the port must be a number from 1 to 65535")
    url = Url(scheme, netloc, path, query, fragment, port)
    if "[" in netloc:
        _ipv6(url.hostname or "", where)
    else:
        _hostname(url.hostname or "", where)
    return url


def _nfkc_check(spec, where):
    """urlsplit's refusal of a non-ASCII host that NFKC normalization turns
    into one with ``/ ? # @ :`` (a different host once encoded)."""
    from urllib.parse import urlsplit

    try:
        urlsplit(spec)
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from None


def _parse_unix(spec):
    """A socket path, or ``@name`` (abstract namespace) -> str or bytes."""
    if len(spec.encode()) > _UNIX_PATH_MAX:
        raise UsageError(f"unix {spec}: longer than {_UNIX_PATH_MAX} bytes, "
                         "the limit of a unix socket address")
    return b"\0" + spec[1:].encode() if spec.startswith("@") else spec


def _parse_dns(spec):
    return _hostname(spec, "dns " + spec)


def _parse_exec(spec):
    if not spec.strip():
        raise UsageError("exec: the command is empty")
    return spec


_PARSERS = {"tcp": _parse_tcp, "http": parse_url, "unix": _parse_unix,
            "dns": _parse_dns, "exec": _parse_exec}


def _hostname(text, where):
    """Validate a host name or IPv4 address (letters, digits, ``-``, ``_``, dots)."""
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if not name or len(name) > 253 or not all(0 < len(label) <= 63 for label in labels):
        raise UsageError(f"{where}: {text!r} is not a valid host name")
    if name.startswith("-") or not all(c.isalnum() or c in "-_." for c in name):
        raise UsageError(f"{where}: {text!r} is not a valid host name")
    return text


def _ipv6(text, where):
    try:
        _socket.inet_pton(_socket.AF_INET6, text.partition("%")[0])
    except OSError:
        raise UsageError(f"{where}: {text!r} is not an IPv6 address") from None


def _port(text, spec):
    if not (text.isdigit() and text.isascii() and 0 < int(text) < 65536):
        raise UsageError(f"tcp {spec}: the port must be a number from 1 to 65535")
    return int(text)


# --- option values ---------------------------------------------------------

def seconds(value, option, allow_zero):
    """A duration in seconds from a number or decimal text; finite, >= 0."""
    if isinstance(value, bool):
        raise UsageError(f"{option}: expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: expected a number of seconds, got {value!r}") from None
    if not (0 <= number < float("inf")) or (number == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise UsageError(f"{option}: expected {bound} seconds, got {value!r}")
    return number


def _statuses(value):
    """Accepted HTTP statuses -> a tuple of tokens such as ('200', '2xx')."""
    items = value.split(",") if isinstance(value, str) else list(value)
    tokens = []
    for item in items:
        token = str(item).strip().lower()
        exact = token.isdigit() and len(token) == 3 and 100 <= int(token) <= 599
        klass = len(token) == 3 and token[0] in "12345" and token[1:] == "xx"
        if not (exact or klass):
            raise UsageError(f"--status: {str(item).strip()!r} is not a status code "
                             "(100-599) or class (1xx-5xx)")
        if token not in tokens:
            tokens.append(token)
    if not tokens:
        raise UsageError("--status: the list is empty")
    return tuple(tokens)


def accepts(statuses, code):
    """Whether HTTP status *code* is accepted (default: any 2xx)."""
    text = str(code)
    return any(token == text or token == text[0] + "xx" for token in statuses or ("2xx",))


def _regex(pattern):
    import re

    if not isinstance(pattern, str):
        raise UsageError("--body: expected a regular expression")
    try:
        re.compile(pattern)
    except re.error as error:
        raise UsageError(f"--body: bad regular expression: {error}") from None
    return pattern


def _label(name):
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise UsageError("--name: the label is empty")
    if printable(name) != name:
        raise UsageError(f"--name: the label contains a control character: {printable(name)}")
    return name


def _path(path, option):
    if not isinstance(path, str) or not path or "\0" in path:
        raise UsageError(f"{option}: expected a file path")
    return path


# --- showing ---------------------------------------------------------------

def redact(text):
    """Remove URL credentials from *text*: after each ``scheme://``, all up to
    the last ``@`` of that word (a word ends at ASCII white space only).

    Over-removing is the safe side: in a URL the probe accepts, an ``@`` can
    only end the credentials (parse_url), so there it removes exactly them;
    in any other text (a command, a server's redirect, a URL that was
    refused because a password held an unencoded ``/``, ``#``, ``?`` or
    ``@``) it may remove the host with them, never leave a secret.
    """
    if "@" not in text:
        return text
    import re

    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\t\n\v\f\r ]*@", r"\1", text)


def _url_shown(spec):
    """A URL for a message: credentials removed, control characters escaped,
    and, where a space may have split the password, everything up to its
    last ``@`` removed too."""
    head, sep, _ = spec.partition("://")
    shown = head + sep + spec.rpartition("@")[2] if sep and "@" in spec else spec
    return printable(shown)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}
_CONTROL.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def printable(text):
    """*text* on one line: control characters shown as escapes."""
    return text.translate(_CONTROL)
