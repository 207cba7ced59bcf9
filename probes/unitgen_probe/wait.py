"""The wait loop: every target in parallel, retries with backoff and jitter,
an overall deadline, and a prompt stop on SIGTERM or SIGINT.

Threads: each target has a thread of its own that runs `check`, sleeps,
and checks again until the target passes; nothing waits for these threads
at exit. The main thread only waits, in select() on a pipe that the target threads write to when a
target's state changes and that signal.set_wakeup_fd() writes the signal
number to. So a signal is seen within milliseconds whatever an attempt is
blocked in (getaddrinfo, a TLS handshake, a hung command), attempts in
flight are simply abandoned, and a target that keeps failing for the same
reason costs one wake-up per attempt, on its own thread.

Timing (monotonic clock throughout):
- the first attempt of every target starts at once;
- after a failed attempt ends, the next one starts after a random gap
  between `MIN_GAP` and a bound that grows by `GROWTH` per failure up to
  `MAX_GAP`: at most 10 attempts per second per target, a dependency that
  starts answering is noticed within about 0.2 s, and probes started
  together (a thousand units after a power restore) drift apart at once;
  attempts that fail slowly (timeouts) are spaced by their own duration;
- while a tcp target at an IP address keeps refusing, each retry is a bare
  connect() and nothing else (no Result, no reason, no event): a connection
  accepted is the answer (the same Result a full attempt would give, without
  connecting twice); any other answer (no answer in time, anything else) is
  followed at once by a full attempt, which says what it is. Waiting then
  costs one socket per attempt;
- a target that passed is not checked again;
- an optional target or group (``--wait-at-most``) counts as met once its
  bound has passed since the start, answered or not: the probe then exits 0
  without it (a degraded start, which the Reporter announces); if it answers
  before the probe exits, the start is not degraded;
- with a deadline, no attempt outlives it: each attempt's timeout is cut
  to the time left, and no retry starts in the last `MIN_GAP` seconds.
"""

import _signal  # signal's C core: signal.py's enums cost 0.5 ms at start-up
import _thread  # threading's C core, documented: threading costs 1 ms at start-up
import _socket
import errno  # net.py, which every tcp target loads, imports it too
import posix  # os's C core: os.py and the collections ABCs it loads cost 1 ms at start-up
import select
import time

from .checks import Result, cannot_try, check, check_of

MIN_GAP = 0.10
MAX_GAP = 0.20
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
    """One target in the loop. Its thread writes these fields; the main
    thread and the `Reporter` read them."""

    __slots__ = ("target", "timeout", "attempts", "result", "busy", "group")

    def __init__(self, target, timeout, group=None):
        self.target = target
        self.group = group  # the `Group` it counts towards, None when it must pass on its own
        self.timeout = timeout  # per attempt
        self.attempts = 0  # finished attempts
        self.result = None  # the last Result
        self.busy = False  # an attempt is in flight

    @property
    def passed(self):
        return self.result is not None and self.result.ok

    def record(self, result):
        """Count a finished attempt; return whether the target's state
        (passed, or the reason it fails) changed with it."""
        last = self.result
        self.result = result
        self.attempts += 1
        self.busy = False
        return last is None or (last.ok, last.reason) != (result.ok, result.reason)


class Waiter:
    """Runs the probe for an `Invocation`, telling a `Reporter` as it goes."""

    def __init__(self, inv, reporter):
        self._inv = inv
        self._reporter = reporter
        self._probes = [Probe(t, inv.timeout_for(t), g) for g, t in inv.members()]
        self._events = []  # (probe, result, attempt number, changed), from the target threads
        self._lock = _thread.allocate_lock()  # guards _events and _wake_fd
        self._wake_fd = None
        self._deadline = None
        self._started = 0.0  # monotonic: optional targets' bounds count from here

    def run(self):
        """Wait; return True when ready (exit 0), False when not (exit 1).

        Raises `Interrupted` on SIGTERM/SIGINT. Must run on the main thread.
        """
        read_fd, self._wake_fd = posix.pipe2(posix.O_NONBLOCK | posix.O_CLOEXEC)
        old_fd = _signal.set_wakeup_fd(self._wake_fd, warn_on_full_buffer=False)
        old_handlers = [_signal.signal(s, _note_signal) for s in _SIGNALS]
        try:
            return self._loop(read_fd)
        finally:
            for signum, handler in zip(_SIGNALS, old_handlers):
                _signal.signal(signum, handler)
            _signal.set_wakeup_fd(old_fd)
            with self._lock:
                posix.close(self._wake_fd)
                self._wake_fd = None
            posix.close(read_fd)

    def _loop(self, read_fd):
        inv, reporter = self._inv, self._reporter
        now = self._started = time.monotonic()
        self._deadline = now + inv.deadline if inv.deadline else None
        reporter.start(self._probes, now)
        for kind in {p.target.kind for p in self._probes}:
            check_of(kind)  # import the check code here, on the main thread
        unstarted = list(self._probes)
        retry_at = now
        while True:
            now = time.monotonic()
            if unstarted and now >= retry_at:
                unstarted = [p for p in unstarted if not self._start(p, now)]
                retry_at = now + MIN_GAP
            with self._lock:
                events, self._events = self._events, []
            for event in events:
                reporter.attempted(*event, now)
            elapsed = now - self._started
            if inv.once:  # every target gets its one result line; an optional one never fails it
                if all(p.attempts for p in self._probes):
                    return self._finish(ready(self._probes, inv.any, float("inf")), now)
            elif ready(self._probes, inv.any, elapsed):
                if inv.slot:
                    self._slot(read_fd, now)
                return self._finish(True, time.monotonic())
            wake = reporter.tick(now)
            if self._deadline is not None:
                busy = any(p.busy for p in self._probes)
                give_up_at = self._deadline + (DEADLINE_GRACE if busy else 0.0)
                if now >= give_up_at:
                    return self._finish(False, now)
                wake = min(wake, give_up_at)
            if unstarted:
                wake = min(wake, retry_at)
            wake = min(wake, self._started + next_bound(self._probes, elapsed))
            self._sleep(read_fd, wake - time.monotonic())

    def _follow(self, probe):
        """A target's thread: check, and check again after a gap, until the
        target passes (or --once, or the deadline leaves no time).

        It never dies of what the system refuses: an attempt that cannot
        even be made (no file descriptor, no memory, no thread: anything
        `check` itself could not turn into a reason) is a failed attempt
        with that reason, and the target is tried again after the gap.
        """
        while True:
            try:
                if self._attempt(probe):
                    return
            except Exception as error:  # e.g. MemoryError, or an import that found no fd
                try:
                    self._record(probe, Result(False, cannot_try(error), 0.0))
                except Exception:
                    pass  # not even that: the next attempt will say it
            try:
                time.sleep(_gap(probe.attempts))
                if self._while_refused(probe):
                    return
            except Exception:
                time.sleep(MAX_GAP)

    def _while_refused(self, probe):
        """The lean retry path (see the module doc): bare connects, a gap
        apart, while *probe*'s tcp target keeps refusing. Returns True when
        one was accepted (recorded as the passed attempt it is: a full
        attempt would make the same connection and say the same), False
        when the next attempt must be a full one."""
        address = _refusing(probe, self._inv.verbose)
        if address is None:
            return False
        from .net import connected  # loaded already: the target is a tcp one

        family, sockaddr = address
        while True:
            timeout = probe.timeout
            start = time.monotonic()
            if self._deadline is not None:
                left = self._deadline - start
                if left < MIN_GAP:
                    return False  # the full attempt decides what happens at the end
                timeout = min(timeout, left)
            sock = _socket.socket(family, _socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                error = sock.connect_ex(sockaddr)
                if not error:
                    words = connected(sock, probe.target.address[0])
            finally:
                sock.close()
            if not error:
                self._record(probe, Result(True, words, time.monotonic() - start))
                return True
            if error != errno.ECONNREFUSED:
                return False
            probe.attempts += 1  # the same count, and so the same gaps, as full attempts
            time.sleep(_gap(probe.attempts))

    def _attempt(self, probe):
        """One attempt; whether the thread is done (passed, --once, or no time left)."""
        timeout = probe.timeout
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0 or (probe.attempts and left < MIN_GAP):
                return True
            timeout = min(timeout, left)
        probe.busy = True
        result = check(probe.target, timeout)
        self._record(probe, result)
        return result.ok or self._inv.once

    def _record(self, probe, result):
        changed = probe.record(result)
        if changed or self._inv.verbose or self._inv.once:
            self._post((probe, result, probe.attempts, changed))

    def _start(self, probe, now):
        """Start *probe*'s thread; when the system refuses one, record why
        (once per reason) and return False: the loop tries again later."""
        try:
            _thread.start_new_thread(self._follow, (probe,))
            return True
        except RuntimeError as error:  # "can't start new thread": no memory or no pids left
            result = Result(False, f"cannot start a thread: {error}", 0.0)
        changed = probe.record(result)
        self._reporter.attempted(probe, result, probe.attempts, changed, now)
        return False

    def _post(self, event):
        """From a target's thread: queue *event* and wake the main thread."""
        with self._lock:
            self._events.append(event)
            if self._wake_fd is not None:
                try:
                    posix.write(self._wake_fd, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups already

    def _slot(self, read_fd, now):
        """Ready: wait for this unit's slot (--slot) before exiting, so that
        the dependents of a paced service do not all start at once."""
        self._reporter.slot(now)
        end = now + self._inv.slot
        left = self._inv.slot
        while left > 0:
            self._sleep(read_fd, left)  # raises Interrupted on SIGTERM/SIGINT
            left = end - time.monotonic()

    def _sleep(self, read_fd, seconds):
        """Wait for a wake-up byte or *seconds* (inf: no limit); raise
        `Interrupted` on a signal."""
        timeout = None if seconds == float("inf") else max(0.0, seconds)
        if select.select([read_fd], [], [], timeout)[0]:
            for byte in posix.read(read_fd, 4096):
                if byte:  # set_wakeup_fd writes the signal number
                    raise Interrupted(byte)

    def _finish(self, ready, now):
        self._reporter.finish(ready, now)
        return ready


def ready(probes, any_, elapsed=0.0):
    """Whether the targets that passed end the wait: every target outside a
    group and every group (``need`` of its targets), or any one of them.
    An optional one whose bound is not above *elapsed* (seconds since the
    start) counts as met (excused): the wait goes on without it."""
    met = [met or excused(group, probes, elapsed) for group, met, probes in standing(probes)]
    return any(met) if any_ else all(met)


def bound_of(group, probes):
    """The --wait-at-most of a target on its own (*probes* is [it]) or of a group; None: required."""
    return probes[0].target.wait_at_most if group is None else group.wait_at_most


def excused(group, probes, elapsed):
    """Whether an optional target or group is past its bound after *elapsed* seconds."""
    bound = bound_of(group, probes)
    return bound is not None and elapsed >= bound


def without(probes, elapsed):
    """[(group or None, probes)] of the optional targets and groups not met
    but excused: what a probe that is ready now starts without."""
    return [(group, ps) for group, met, ps in standing(probes) if not met and excused(group, ps, elapsed)]


def next_bound(probes, elapsed):
    """Seconds from the start to the next bound still ahead of *elapsed* (inf: none)."""
    ahead = [b for b in (bound_of(g, ps) for g, met, ps in standing(probes) if not met)
             if b is not None and b > elapsed]
    return min(ahead, default=float("inf"))


def standing(probes):
    """[(group or None, met, probes)]: each target outside a group on its
    own, then each group with its targets, in the order of *probes*."""
    items, groups = [], {}
    for probe in probes:
        if probe.group is None:
            items.append((None, probe.passed, [probe]))
        elif id(probe.group) in groups:
            groups[id(probe.group)].append(probe)
        else:
            groups[id(probe.group)] = [probe]
            items.append((probe.group, None, groups[id(probe.group)]))
    return [(g, met if g is None else sum(p.passed for p in ps) >= g.need, ps) for g, met, ps in items]


def _refusing(probe, verbose):
    """(family, sockaddr) for a bare connect when *probe*'s last attempt was
    refused by the one address of a tcp target given as an IP address; else
    None (names are resolved anew at every attempt; verbose reports every
    attempt)."""
    result = probe.result
    if verbose or result is None or result.ok or probe.target.kind != "tcp":
        return None
    from .net import _numeric, reason

    host, port = probe.target.address
    addresses = _numeric(host, port)
    if not addresses or len(addresses) != 1 or result.reason != reason(errno.ECONNREFUSED):
        return None
    return addresses[0][0], addresses[0][4]


def _gap(failures):
    """Seconds to wait before the next attempt after *failures* failures.

    The jitter comes from getrandom(2) (os.urandom, from posix): no module to import on
    a target's thread, where an import can fail for want of a file descriptor.
    """
    fraction = int.from_bytes(posix.urandom(4), "little") / 0x100000000
    high = min(MAX_GAP, MIN_GAP * GROWTH ** failures)
    return MIN_GAP + (high - MIN_GAP) * fraction


def _note_signal(signum, frame):
    """The handler of SIGTERM/SIGINT: the wake-up pipe does the work; a
    handler is still needed for the signal to be caught at all."""
