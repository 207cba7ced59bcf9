"""`check`: one attempt at one target, and its `Result`; `check_of`: the
table from a kind to the function that checks it.

The code of each kind is imported on first use, so that a probe that waits
for a TCP port never loads http.client, ssl or subprocess. The frame they
work in (`Budget`, `Failed`) is the leaf module `frame`.
"""

from time import monotonic

from .frame import Budget, Failed
from .targets import DEFAULT_TIMEOUT, Frozen, printable, redact


class Result(Frozen):
    """The outcome of one attempt: ``ok``, ``reason`` (operator's words,
    never containing URL credentials) and ``latency`` (seconds the attempt
    took, monotonic clock). Immutable; compares equal field by field."""

    _FIELDS = __slots__ = ("ok", "reason", "latency")
    ok: bool
    reason: str
    latency: float

    def __init__(self, ok, reason, latency):
        self._freeze(ok=bool(ok), reason=reason, latency=latency)

    def __repr__(self):
        return f"Result(ok={self.ok!r}, reason={self.reason!r}, latency={self.latency!r})"


def check(target, timeout=None):
    """Make ONE attempt at *target*, blocking for at most about *timeout*
    seconds (default: the target's own timeout, else 2 s), and return its
    `Result`. Never raises for a failing or hostile dependency: every
    failure, expected or not, becomes ``Result(ok=False, reason=...)``.
    Safe to call from several threads at once.
    """
    seconds = timeout if timeout is not None else (target.timeout or DEFAULT_TIMEOUT)
    run = check_of(target.kind)
    start = monotonic()
    try:
        return Result(True, run(target, Budget(seconds)), monotonic() - start)
    except Failed as failure:
        words = str(failure)
    except Exception as error:  # a probe reports; it does not crash on one odd answer
        words = cannot_try(error)
    return Result(False, printable(redact(words)), monotonic() - start)


def cannot_try(error):
    """Words for an exception that is not a `Failed`: what the system refused
    (file descriptors, memory, threads), else an unexpected error."""
    if isinstance(error, MemoryError):
        return "cannot try: out of memory"
    if isinstance(error, RuntimeError) and "thread" in str(error):
        return f"cannot try: {error}"
    if isinstance(error, OSError) and error.errno:
        from posix import strerror

        text = strerror(error.errno)
        return "cannot try: " + text[:1].lower() + text[1:]
    return f"unexpected error: {type(error).__name__}: {error}"


def check_of(kind):
    """The function that checks targets of *kind*: f(target, budget) -> reason.

    Its module is imported on the first call: callers that start threads
    call this first, on the main thread (a module such as subprocess
    imports threading, which must not first be imported on another thread:
    threading would take that thread for the main one and wait for it at
    exit).
    """
    return CHECKS[kind]()  # after the first call, a lookup in sys.modules


def _tcp():
    from .net import check_tcp
    return check_tcp


def _unix():
    from .net import check_unix
    return check_unix


def _dns():
    from .net import check_dns
    return check_dns


def _http():
    from .http_check import check_http
    return check_http


def _exec():
    from .command import check_exec
    return check_exec


#: kind -> a function that imports that kind's code and returns its check.
CHECKS = {"tcp": _tcp, "unix": _unix, "dns": _dns, "http": _http, "exec": _exec}
