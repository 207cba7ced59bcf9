"""What the probe tells: log lines (stderr, the journal), STATUS= for
systemd, and result lines (stdout, text or JSON).

Logging is by change, not by attempt: one line when a target's state
changes (a new reason, or ready), a reminder every `REMINDER` seconds while
waiting, and a final line; ``-v`` logs every attempt instead, ``-q`` only
a final failure. STATUS= is sent when what the probe waits for changes,
refreshed every `STATUS_REFRESH` seconds (so that the attempt count and
the time in ``systemctl status`` stay current), and once more at the end.
"""

import sys

from .targets import printable

from .wait import bound_of, ready, standing, without

#: How the final line and STATUS= of a probe that starts without an optional
#: target or group begin; `unitgen watch` reads STATUS= with `started_without`.
DEGRADED = "started degraded after "

REMINDER = 30.0
STATUS_REFRESH = 5.0


class Reporter:
    """Turns the wait loop's events into lines and STATUS messages.

    *inv* is the `Invocation`; *notifier* a `Notifier` or None; *out* and
    *err* text streams (default stdout and stderr).
    """

    def __init__(self, inv, notifier=None, out=None, err=None):
        self._inv = inv
        self._notifier = None if inv.once else notifier
        self._narrate = not (inv.once or inv.quiet or inv.verbose)  # changes and reminders
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._probes = ()
        self._start = self._last_log = self._last_status = 0.0

    # --- events from the wait loop ---------------------------------------

    def start(self, probes, now):
        self._probes = tuple(probes)
        self._start = self._last_log = self._last_status = now

    def attempted(self, probe, result, attempt, changed, now):
        """Attempt number *attempt* at *probe* gave *result*; *changed* says
        whether the target's state changed with it."""
        display = probe.target.display
        if self._inv.verbose:
            word = "ok" if result.ok else "failed"
            self._log(f"attempt {attempt} of {display}: {word}: {result.reason} ({_ms(result.latency)})", now)
        if not changed or ready(self._probes, self._inv.any):
            return  # finish() has the last word
        if self._narrate:
            took = duration(now - self._start)
            if result.ok:
                self._log(f"ready: {_phrase(probe.target, result, attempt)}, {took}", now)
            elif probe.group is not None:
                members = [p for p in self._probes if p.group is probe.group]
                self._log(f"waiting for {_group_phrase(probe.group, members)}, {took}", now)
            else:
                self._log(self._waiting_for([(probe.target, result, attempt)], now), now)
        self._send_status(now)

    def tick(self, now):
        """Send the reminder and the STATUS refresh that are due; return
        when the next one is due (inf: none will be)."""
        due = float("inf")
        if self._narrate:
            if now - self._last_log >= REMINDER:
                self._log("still " + self.waiting_text(now), now)
            due = self._last_log + REMINDER
        if self._notifier is not None:
            if now - self._last_status >= STATUS_REFRESH:
                self._send_status(now)
            due = min(due, self._last_status + STATUS_REFRESH)
        return due

    def finish(self, ready, now):
        """The wait is over: *ready*, or not (the deadline passed, or a
        target failed its one attempt with --once)."""
        if self._inv.once:
            self._results()
            return
        took = duration(now - self._start)
        missing = without(self._probes, now - self._start) if ready else []
        if missing:
            final = DEGRADED + f"{took}: " + "; ".join(_without_phrase(g, ps) for g, ps in missing)
            passed = ", ".join(p.target.display for p in self._probes if p.passed)
            final += f"; ready: {passed}" if passed else ""
        elif ready:
            final = f"ready after {took}: " + ", ".join(p.target.display for p in self._probes if p.passed)
        else:
            final = f"gave up after {took} (--deadline {self._inv.deadline:g}): " + self._summary()
        if missing or not (ready and self._inv.quiet):  # a degraded start is always told
            self._log(final, now)
        self._status(final)
        if self._inv.json:
            self._results()

    def slot(self, now):
        """Ready; now waiting for the slot of --slot."""
        line = f"ready after {duration(now - self._start)}; waiting for its slot: {duration(self._inv.slot)} (paced release)"
        if not self._inv.quiet:
            self._log(line, now)
        self._status(line)

    def stopped(self, signal_name, now):
        """The probe was stopped by a signal (e.g. "SIGTERM")."""
        final = f"stopped by {signal_name} after {duration(now - self._start)}"
        if any(not p.passed for p in self._probes):
            final += ": " + self._summary()
        self._log(final, now)
        self._status(final)

    # --- texts -----------------------------------------------------------

    def waiting_text(self, now):
        """``waiting for db (10.0.0.11:5432): connection refused (port closed), attempt 7, 12 s``;
        with groups, ``waiting for etcd: 1 of 3 answer, need 2 (etcd@h2: connection refused
        (port closed), etcd@h3: timed out after 2 s (host down or SYN dropped)), 12 s``"""
        if not self._grouped():
            return self._waiting_for(self._waiting(), now)
        phrases = self._unmet()
        took = duration(now - self._start)
        if self._inv.any:
            return f"waiting for any of {len(standing(self._probes))} ({took}): " + "; ".join(phrases)
        return f"waiting for {'; '.join(phrases)}, {took}"

    def _grouped(self):
        return any(p.group is not None for p in self._probes)

    def _unmet(self):
        """A phrase for each target outside a group, and each group, not ready yet."""
        return [_phrase(ps[0].target, ps[0].result, ps[0].attempts) if group is None else _group_phrase(group, ps)
                for group, met, ps in standing(self._probes) if not met]

    def _waiting_for(self, entries, now):
        took = duration(now - self._start)
        phrases = "; ".join(_phrase(*entry) for entry in entries)
        if len(entries) == 1:
            return f"waiting for {phrases}, {took}"
        scope = "any" if self._inv.any else len(entries)
        return f"waiting for {scope} of {len(self._probes)} ({took}): {phrases}"

    def _summary(self):
        if self._grouped():
            return "; ".join(self._unmet())
        return "; ".join(_phrase(*entry) for entry in self._waiting())

    def _waiting(self):
        """(target, last result, attempts) of every target not passed yet."""
        return [(p.target, p.result, p.attempts) for p in self._probes if not p.passed]

    def _results(self):
        for probe in self._probes:
            self._out.write(self._result_line(probe))
        self._out.flush()

    def _result_line(self, probe):
        result = probe.result
        reason = result.reason if result else "no answer yet"
        if self._inv.json:
            import json

            return json.dumps({
                "target": probe.target.safe_spec, "label": probe.target.label,
                "kind": probe.target.kind, "ok": probe.passed, "reason": reason,
                "latency_ms": round(result.latency * 1000, 1) if result else None,
                "attempts": probe.attempts}, ensure_ascii=False) + "\n"
        word = "ok" if probe.passed else "FAIL"
        latency = _ms(result.latency) if result else "-"
        return f"{word:<4} {latency:>10}  {probe.target.display}: {reason}\n"

    # --- plumbing ----------------------------------------------------------

    def _log(self, line, now):
        self._err.write(line + "\n")
        self._err.flush()
        self._last_log = now

    def _send_status(self, now):
        self._last_status = now
        self._status(self.waiting_text(now))

    def _status(self, text):
        if self._notifier is not None:
            self._notifier.status(text)


def _phrase(target, result, attempts):
    """``db (10.0.0.11:5432): connection refused (port closed), attempt 7``"""
    optional = "" if target.wait_at_most is None else f" (optional, at most {duration(target.wait_at_most)})"
    if result is None:
        return f"{target.display}{optional}: first attempt running"
    return f"{target.display}{optional}: {result.reason}, attempt {attempts}"


def _without_phrase(group, probes):
    """``without cache (10.0.0.12:6379) (connection refused (port closed), attempt 9; waited at most 30 s)``"""
    waited = f"waited at most {duration(bound_of(group, probes))}"
    if group is None:
        probe = probes[0]
        why = f"{probe.result.reason}, attempt {probe.attempts}" if probe.result else "first attempt running"
        return f"{started_without(probe.target.display)}{why}; {waited})"
    answered = sum(p.passed for p in probes)
    return f"{started_without(printable(group.label))}{answered} of {len(probes)} answer, need {group.need}; {waited})"


def started_without(display):
    """What a degraded start's line and STATUS= hold for each optional target
    (its ``display``) or group (its label) it starts without."""
    return f"without {display} ("


def _group_phrase(group, probes):
    """``etcd: 1 of 3 answer, need 2 (etcd@h2: connection refused (port closed), etcd@h3: ...)``"""
    answered = sum(p.passed for p in probes)
    verb = "answers" if answered == 1 and len(probes) == 1 else "answer"
    text = f"{printable(group.label)}: {answered} of {len(probes)} {verb}, need {group.need}"
    if group.need > len(probes):
        text += " (can never be met)"
    reasons = [f"{printable(p.target.label)}: {p.result.reason if p.result else 'first attempt running'}"
               for p in probes if not p.passed]
    return text + (f" ({', '.join(reasons)})" if reasons else "")


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
