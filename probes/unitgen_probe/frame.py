"""The frame every check works in: a `Budget` of time, `Failed` with a
reason, and the processes a check started (`children`), killed when the
probe stops. A leaf: it imports nothing of the probe, so that the code of
each kind (net, http_check, command) and `checks`, which dispatches to
them, all depend on it and never on each other in a circle.
"""

import _signal  # signal's C core: see wait.py
import _thread  # threading's C core: the lock below, nothing more
import posix  # os's C core: see wait.py
from time import monotonic

#: Process groups of the helpers in flight (exec commands, body matchers):
#: each leads a group of its own, so that killing it kills what it started.
children: "set[int]" = set()


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
        return Failed(f"timed out after {round(self.seconds, 1):g} s{during}{why}")


#: Set once the probe is stopping: a helper that starts after that is killed
#: as soon as it is known (`adopt`), not left running past the probe.
_stopping = False

#: Held by a check from a helper's start to its `adopt`, and by `kill_running`:
#: the probe must not exit (ending the check's thread) while a helper runs but
#: is not yet known, or the helper outlives it. `kill_running` is never called
#: inside a check (the wait loop raises Interrupted outside them, and the lock
#: is released as it unwinds), so a plain lock serves. How long
#: `kill_running` waits for it, at most.
spawning = _thread.allocate_lock()
_SPAWN_WAIT = 5.0


def adopt(group):
    """Count *group* among the helpers in flight, and kill it at once if the
    probe is stopping already: its child may run (and be seen running) before
    the thread that started it gets back here. Added first, then the flag
    read, while `kill_running` sets the flag first, then reads the set: one of
    the two always sees the other."""
    children.add(group)
    if _stopping:
        kill_group(group)


def kill_running():
    """Kill every helper process group in flight (the probe is stopping).

    Does not wait for them: a process stuck in the kernel must not hold the
    probe's exit back.
    """
    global _stopping
    _stopping = True
    held = spawning.acquire(timeout=_SPAWN_WAIT)  # a start takes milliseconds
    try:
        for group in list(children):
            kill_group(group)
    finally:
        if held:
            spawning.release()


def kill_group(group):
    try:
        posix.killpg(group, _signal.SIGKILL)
    except OSError:  # gone already
        pass
