"""`check`: one attempt at one target, and its `Result`; the frame the
checks of each kind work in: a `Budget` of time, and `Failed` with a reason.

The code of each kind is imported on first use, so that a probe that waits
for a TCP port never loads http.client, ssl or subprocess.
"""

from time import monotonic

from .targets import DEFAULT_TIMEOUT, Frozen, printable, redact


class Failed(Exception):
    """A check failed; the message is the reason, in words for an operator."""


class Budget:
    """The time one attempt may take: *seconds* from now, on the monotonic clock."""

    __slots__ = ("seconds", "deadline")

    def __init__(self, seconds):
        self.seconds = seconds
        self.deadline = monotonic() + seconds

    def left(self):
        """Seconds left, never negative."""
        return max(0.0, self.deadline - monotonic())

    def timed_out(self, during="", why=""):
        """The `Failed` for running out of time, e.g. "timed out after 2 s (host down)"."""
        during = f" {during}" if during else ""
        why = f" ({why})" if why else ""
        return Failed(f"timed out after {self.seconds:g} s{during}{why}")


class Result(Frozen):
    """The outcome of one attempt: ``ok``, ``reason`` (operator's words,
    never containing URL credentials) and ``latency`` (seconds the attempt
    took, monotonic clock). Immutable; compares equal field by field."""

    _FIELDS = __slots__ = ("ok", "reason", "latency")

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
        words = f"unexpected error: {type(error).__name__}: {error}"
    return Result(False, printable(redact(words)), monotonic() - start)


def check_of(kind):
    """The function that checks targets of *kind*: f(target, budget) -> reason.

    Its module is imported on the first call: callers that start threads
    call this first, on the main thread (a module such as subprocess
    imports threading, which must not first be imported on another thread:
    threading would take that thread for the main one and wait for it at
    exit).
    """
    if kind == "http":
        from .http_check import check_http
        return check_http
    if kind == "exec":
        from .command import check_exec
        return check_exec
    from . import net
    return getattr(net, "check_" + kind)
