"""The frame every check works in: a `Budget` of time, and `Failed` with a
reason. A leaf: it imports nothing of the probe, so that the code of each
kind (net, http_check, command) and `checks`, which dispatches to them,
all depend on it and never on each other in a circle.
"""

from time import monotonic


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
