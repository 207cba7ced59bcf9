"""`check`: one attempt at one target, and its `Result`; `check_of`: the
table from a kind to the function that checks it; `check_tcp_many`: one
attempt at each of many tcp targets from one thread (unitgen board).

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



def check_tcp_many(targets, timeout, in_flight, stop=None):
    """One attempt at each tcp target at an IP address, all from this thread:
    non-blocking connects (`_start_connect`, as `connect_any` starts them),
    at most *in_flight* pending at once, each given *timeout* seconds (else
    its own timeout, else 2 s), in one poll loop; for a board of thousands of
    services, where a thread per check would cost more than the check.
    Returns a `Result` per target, in order, in `check_tcp`'s words;
    *stop* (a threading.Event) ends the round early ("not checked")."""
    import _socket
    import errno
    import select
    from heapq import heappop, heappush

    from .net import _start_connect, reason, resolve

    results = [None] * len(targets)
    pending = {}  # fd -> (socket, index, started, budget)
    deadlines = []  # (deadline, index, fd, entry of pending), a heap; answered entries stay until popped
    poller = select.poll()
    todo = iter(range(len(targets)))
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < in_flight:
                i = next(todo, None)
                if i is None:
                    exhausted = True
                    break
                target = targets[i]
                started = monotonic()
                budget = Budget(timeout if timeout is not None else (target.timeout or DEFAULT_TIMEOUT))
                try:
                    (address,) = resolve(*target.address, budget)
                    sock, error = _start_connect(address)
                except (Failed, ValueError, OSError) as why:
                    results[i] = Result(False, str(why) if isinstance(why, Failed) else reason(why),
                                        monotonic() - started)
                    continue
                if error == errno.EINPROGRESS:
                    entry = pending[sock.fileno()] = (sock, i, started, budget)
                    heappush(deadlines, (budget.deadline, i, sock.fileno(), entry))
                    poller.register(sock, select.POLLOUT)
                    continue
                if not error:
                    sock.close()
                    results[i] = Result(True, "connected", monotonic() - started)
                else:
                    results[i] = Result(False, reason(error), monotonic() - started)
            if not pending or (stop is not None and stop.is_set()):
                break
            while deadlines[0][3] is not pending.get(deadlines[0][2]):
                heappop(deadlines)  # answered already
            now = monotonic()
            for fd, _ in poller.poll(max(0, int((deadlines[0][0] - now) * 1000)) + 1):
                sock, i, started, _ = entry = pending.pop(fd)
                poller.unregister(fd)
                error = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                sock.close()
                results[i] = Result(not error, reason(error) if error else "connected", monotonic() - started)
            now = monotonic()
            while deadlines and deadlines[0][0] <= now:
                _, _, fd, entry = heappop(deadlines)
                if pending.get(fd) is entry:
                    sock, i, started, budget = pending.pop(fd)
                    poller.unregister(fd)
                    sock.close()
                    results[i] = Result(False, str(budget.timed_out(why="host down or SYN dropped")),
                                        now - started)
    finally:
        for sock, *_ in pending.values():
            sock.close()
    return [r if r is not None else Result(False, "not checked: interrupted", 0.0) for r in results]


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
