"""The wait loop: every target in parallel, retries with backoff and jitter,
an overall deadline, and a prompt stop on SIGTERM or SIGINT.

Threads: each attempt runs `check` on a daemon thread of its own; the main
thread only schedules and waits, in select() on a pipe that the attempts
write to when they finish and that _signal.set_wakeup_fd() writes the signal
number to. So a signal is seen within milliseconds whatever the attempts
are blocked in (getaddrinfo, a TLS handshake, a hung command), and attempts
in flight are simply abandoned.

Timing (monotonic clock throughout):
- the first attempt of every target starts at once;
- after a failed attempt ends, the next one starts after a random gap
  between `MIN_GAP` and a bound that grows by `GROWTH` per failure up to
  `MAX_GAP`: at most 4 attempts per second per target, a dependency that
  starts answering is noticed within about 0.45 s, and probes started
  together (a thousand units after a power restore) drift apart at once;
  attempts that fail slowly (timeouts) are spaced by their own duration;
- a target that passed is not checked again;
- with a deadline, no attempt outlives it: each attempt's timeout is cut
  to the time left, and no retry starts in the last `MIN_GAP` seconds.
"""

import _signal  # signal's C core: _signal.py's enums cost 0.5 ms at start-up
import os
import select
import threading
from time import monotonic

from .checks import check

MIN_GAP = 0.25
MAX_GAP = 0.45
GROWTH = 1.25
#: How long after the deadline the loop waits for attempts still in flight
#: (their timeouts end at the deadline), so that the final message gives
#: their reason rather than "first attempt running".
DEADLINE_GRACE = 0.25

_SIGNALS = (_signal.SIGTERM, _signal.SIGINT)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; ``signum`` says which."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class Probe:
    """One target's state in the loop (read by the `Reporter`)."""

    __slots__ = ("target", "timeout", "attempts", "result", "passed", "busy", "next_at")

    def __init__(self, target, timeout):
        self.target = target
        self.timeout = timeout
        self.attempts = 0  # finished attempts
        self.result = None  # the last Result
        self.passed = False
        self.busy = False  # an attempt is in flight
        self.next_at = 0.0


class Waiter:
    """Runs the probe for an `Invocation`, telling a `Reporter` as it goes."""

    def __init__(self, inv, reporter):
        self._inv = inv
        self._reporter = reporter
        self._probes = [Probe(t, inv.timeout_for(t)) for t in inv.targets]
        self._results = []  # (probe, Result) appended by attempt threads
        self._lock = threading.Lock()  # guards _results and _wake_fd
        self._wake_fd = None
        self._deadline = None

    def run(self):
        """Wait; return True when ready (exit 0), False when not (exit 1).

        Raises `Interrupted` on SIGTERM/SIGINT. Must run on the main thread.
        """
        read_fd, self._wake_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_fd = _signal.set_wakeup_fd(self._wake_fd, warn_on_full_buffer=False)
        old_handlers = [_signal.signal(s, _note_signal) for s in _SIGNALS]
        try:
            return self._loop(read_fd)
        finally:
            for signum, handler in zip(_SIGNALS, old_handlers):
                _signal.signal(signum, handler)
            _signal.set_wakeup_fd(old_fd)
            with self._lock:
                os.close(self._wake_fd)
                self._wake_fd = None
            os.close(read_fd)

    def _loop(self, read_fd):
        inv, reporter = self._inv, self._reporter
        now = monotonic()
        self._deadline = now + inv.deadline if inv.deadline else None
        reporter.start(self._probes, now)
        for probe in self._probes:
            self._launch(probe, now)
        while True:
            now = monotonic()
            self._collect(now)
            if inv.once:  # every target gets its one result line
                if not any(p.busy for p in self._probes):
                    return self._finish(self._ready(), now)
            elif self._ready():
                return self._finish(True, now)
            if self._deadline is not None and now >= self._give_up_at():
                return self._finish(False, now)
            wake = reporter.tick(now)
            for probe in self._probes:
                if probe.passed or probe.busy or inv.once:
                    continue
                if probe.next_at <= now:
                    self._launch(probe, now)
                else:
                    wake = min(wake, probe.next_at)
            if self._deadline is not None:
                wake = min(wake, self._give_up_at())
            self._sleep(read_fd, wake - monotonic())

    def _ready(self):
        passed = [p.passed for p in self._probes]
        return any(passed) if self._inv.any else all(passed)

    def _give_up_at(self):
        busy = any(p.busy and not p.passed for p in self._probes)
        return self._deadline + (DEADLINE_GRACE if busy else 0.0)

    def _launch(self, probe, now):
        timeout = probe.timeout
        if self._deadline is not None:
            left = self._deadline - now
            if left <= 0 or (probe.attempts and left < MIN_GAP):
                probe.next_at = float("inf")  # no retry can finish in time
                return
            timeout = min(timeout, left)
        probe.busy = True
        threading.Thread(target=self._attempt, args=(probe, timeout), daemon=True,
                         name=f"attempt {probe.target.kind}").start()

    def _attempt(self, probe, timeout):
        """On an attempt thread: one check, then wake the main thread."""
        result = check(probe.target, timeout)
        with self._lock:
            self._results.append((probe, result))
            if self._wake_fd is not None:
                try:
                    os.write(self._wake_fd, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups already

    def _collect(self, now):
        with self._lock:
            results, self._results = self._results, []
        for probe, result in results:
            probe.busy = False
            probe.attempts += 1
            probe.result = result
            probe.passed = result.ok
            if not result.ok:
                probe.next_at = now + _gap(probe.attempts)
            self._reporter.attempted(probe, now)

    def _sleep(self, read_fd, seconds):
        """Wait for a wake-up byte or *seconds*; raise `Interrupted` on a _signal."""
        if select.select([read_fd], [], [], max(0.0, seconds))[0]:
            for byte in os.read(read_fd, 4096):
                if byte:  # set_wakeup_fd writes the signal number
                    raise Interrupted(byte)

    def _finish(self, ready, now):
        self._reporter.finish(ready, now)
        return ready


def _gap(failures):
    """Seconds to wait before the next attempt after *failures* failures."""
    import random

    return random.uniform(MIN_GAP, min(MAX_GAP, MIN_GAP * GROWTH ** failures))


def _note_signal(signum, frame):
    """The handler of SIGTERM/SIGINT: the wake-up pipe does the work; a
    handler is still needed for the signal to be caught at all."""
