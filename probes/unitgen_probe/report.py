"""What the probe tells: log lines (stderr, the journal), STATUS= for
systemd, and result lines (stdout, text or JSON).

Logging is by change, not by attempt: one line when a target's state
changes (a new reason, or ready), a reminder every `REMINDER` seconds while
waiting, and a final line. STATUS= is sent when what the probe waits for
changes, refreshed every `STATUS_REFRESH` seconds (so the attempt count and
time in ``systemctl status`` stay current), and once more at the end.
"""

import sys

REMINDER = 30.0
STATUS_REFRESH = 5.0


class Reporter:
    """Turns the wait loop's events into lines and STATUS messages.

    *inv* is the `Invocation` (for once/any/verbose/quiet/json); *notifier*
    a `Notifier` or None; *out* and *err* text streams.
    """

    def __init__(self, inv, notifier=None, out=None, err=None):
        self._inv = inv
        self._notifier = None if inv.once else notifier
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._probes = ()
        self._start = 0.0
        self._logged = {}  # probe -> state last logged ("ready" or a reason)
        self._last_log = 0.0
        self._status_key = None
        self._last_status = 0.0

    # --- events from the wait loop ---------------------------------------

    def start(self, probes, now):
        self._probes = tuple(probes)
        self._start = self._last_log = self._last_status = now

    def attempted(self, probe, now):
        """A result came in for *probe* (its fields are already updated)."""
        result = probe.result
        if self._inv.verbose:
            word = "ok" if result.ok else "failed"
            self._log(f"attempt {probe.attempts} of {probe.target.display}: {word}: "
                      f"{result.reason} ({_ms(result.latency)})", now)
        state = "ready" if result.ok else result.reason
        if self._logged.get(probe) != state:
            self._logged[probe] = state
            if not (self._inv.verbose or self._inv.quiet or self._inv.once or self._finishing()):
                line = (f"ready: {probe.target.display}: {result.reason}, "
                        f"attempt {probe.attempts}, {duration(now - self._start)}"
                        if result.ok else self._waiting_for((probe,), now))
                self._log(line, now)
        self._send_status(now, changed_only=True)

    def tick(self, now):
        """Reminders and STATUS refreshes that are due; returns when the next one is."""
        waiting = not self._finishing() and not self._inv.once
        if waiting and not (self._inv.quiet or self._inv.verbose) \
                and now - self._last_log >= REMINDER:
            self._log("still " + self.waiting_text(now), now)
        if self._notifier and now - self._last_status >= STATUS_REFRESH:
            self._send_status(now, changed_only=False)
        return min(self._last_log + REMINDER, self._last_status + STATUS_REFRESH)

    def finish(self, ready, now):
        """The wait is over: *ready* or not (deadline passed, --once failed)."""
        took = duration(now - self._start)
        if self._inv.once:
            for probe in self._probes:
                self._out.write(self._result_line(probe))
        else:
            if ready:
                passed = ", ".join(p.target.display for p in self._probes if p.passed)
                final = f"ready after {took}: {passed}"
            else:
                final = f"gave up after {took} (--deadline {self._inv.deadline:g}): " \
                        + self._summary(self._waiting())
            if not (ready and self._inv.quiet):
                self._log(final, now)
            self._status(final)
            if self._inv.json:
                for probe in self._probes:
                    self._out.write(self._result_line(probe))
        self._out.flush()

    def stopped(self, name, now):
        """The probe was stopped by signal *name* (e.g. "SIGTERM")."""
        final = f"stopped by {name} after {duration(now - self._start)}"
        waiting = self._waiting()
        if waiting:
            final += ": " + self._summary(waiting)
        self._log(final, now)
        self._status(final)

    # --- texts -----------------------------------------------------------

    def waiting_text(self, now):
        """``waiting for db (10.0.0.11:5432): connection refused (port closed), attempt 7, 12 s``"""
        return self._waiting_for(self._waiting(), now)

    def _waiting_for(self, probes, now):
        took = duration(now - self._start)
        if len(probes) == 1:
            return f"waiting for {self._summary(probes)}, {took}"
        scope = "any" if self._inv.any else f"{len(probes)}"
        return f"waiting for {scope} of {len(self._probes)} ({took}): {self._summary(probes)}"

    @staticmethod
    def _summary(probes):
        parts = []
        for probe in probes:
            if probe.result is None:
                parts.append(f"{probe.target.display}: first attempt running")
            else:
                parts.append(f"{probe.target.display}: {probe.result.reason}, attempt {probe.attempts}")
        return "; ".join(parts)

    def _result_line(self, probe):
        result = probe.result
        if self._inv.json:
            import json

            return json.dumps({
                "target": probe.target.safe_spec, "label": probe.target.label,
                "kind": probe.target.kind, "ok": probe.passed,
                "reason": result.reason if result else "no answer yet",
                "latency_ms": round(result.latency * 1000, 1) if result else None,
                "attempts": probe.attempts}, ensure_ascii=False) + "\n"
        word = "ok" if probe.passed else "FAIL"
        latency = _ms(result.latency) if result else "-"
        reason = result.reason if result else "no answer yet"
        return f"{word:<4} {latency:>10}  {probe.target.display}: {reason}\n"

    # --- plumbing ----------------------------------------------------------

    def _waiting(self):
        return tuple(p for p in self._probes if not p.passed)

    def _finishing(self):
        """Whether the targets that passed already end the wait."""
        passed = [p.passed for p in self._probes]
        return any(passed) if self._inv.any else all(passed)

    def _log(self, line, now):
        self._err.write(line + "\n")
        self._err.flush()
        self._last_log = now

    def _send_status(self, now, changed_only):
        if self._notifier is None or self._finishing():
            return  # finish() sends the last one
        waiting = self._waiting()
        key = tuple((p, p.result and p.result.reason) for p in waiting)
        if changed_only and key == self._status_key:
            return
        self._status_key = key
        self._last_status = now
        self._notifier.status(self._waiting_for(waiting, now))

    def _status(self, text):
        if self._notifier is not None:
            self._notifier.status(text)


def duration(seconds):
    """``0.4 s``, ``12 s``, ``5 min 3 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _ms(seconds):
    return f"{seconds * 1000:.1f} ms"
