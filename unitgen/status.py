"""``unitgen status``: what systemd says of each service of the conf on this host.

One line per unit: its state, since when, its restarts, and its status text
(the probe's "waiting for db (...)"), with what the run-time watcher found
lost. A unit that systemd restarted LOOP_RESTARTS times or more in the last
LOOP_WINDOW seconds is a **restart loop**, shown as such, with the reason its
last main process ended (exit status or signal, Result=) and the last lines it
logged: "active" for a moment between two restarts is not health.

Restarts in the last minute come from the journal's "restart scheduled" entries
of each unit (journal.py) when this host's journal is readable, else, with
``--watch``, from NRestarts read over time (D-Bus). A probe that gives up
and tries again is waiting, never a loop.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import bus, graph, journal
from .interrupt import stop_on_interrupt
from .model import Conf

LOOP_WINDOW = 60.0
LOOP_RESTARTS = 2
LAST_LINES = 3

_ANSI = {"green": "\x1b[32m", "yellow": "\x1b[33m", "red": "\x1b[31m"}
_RESET = "\x1b[0m"
_CLEAR = "\x1b[2J\x1b[1;1H"
_COLOURS = {"ok": "green", "waiting": "yellow", "bad": "red"}

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Seen:
    """One unit as systemd reports it, with its recent restarts when known."""

    state: bus.UnitState
    recent_restarts: Optional[int] = None  # in the last LOOP_WINDOW seconds; None: unknown
    last_lines: Tuple[str, ...] = ()  # what its processes logged last (for a unit in trouble)

    @property
    def looping(self) -> bool:
        """Restarted again and again, and not because its probe waits for a dependency."""
        return ((self.recent_restarts or 0) >= LOOP_RESTARTS
                and not self.state.status_text.startswith(bus.PROBE_WAITING))

    @property
    def in_trouble(self) -> bool:
        state = self.state
        return self.looping or state.active_state == "failed" or (
            state.sub_state == "auto-restart" and not state.waiting)

    @property
    def health(self) -> str:
        """ok (active), waiting (held by its probe, or starting), bad (failed, looping, restarting
        after its own process failed, not loaded), or inactive."""
        if self.in_trouble:
            return "bad"
        return health(self.state)

    @property
    def reason(self) -> str:
        """``exit status 3, result exit-code: <last line logged>``; "" when not in trouble."""
        if not self.in_trouble:
            return ""
        return last_reason(self.state, self.last_lines)


def health(state: bus.UnitState) -> str:
    if state.load_state not in ("loaded", "") or state.active_state == "failed":
        return "bad"
    if state.active:
        return "ok"
    return "waiting" if state.waiting else state.active_state


def last_reason(state: bus.UnitState, lines: Sequence[str] = ()) -> str:
    """Why the unit's last run ended, from systemd: exit status or signal, Result=, and its last lines."""
    parts = [p for p in (state.exit_reason,
                         f"result {state.result}" if state.result not in ("", "success") else "") if p]
    text = ", ".join(parts)
    if lines:
        text += (": " if text else "") + " | ".join(lines)
    return text


def state_cell(state: bus.UnitState) -> str:
    if state.load_state not in ("loaded", ""):
        return state.load_state
    return f"{state.active_state} ({state.sub_state})"


def state_text(state: bus.UnitState) -> str:
    """``activating (start-pre): waiting for db (…)``, or ``bad-setting: Unit x has a bad …``."""
    extra = state.status_text or state.load_error
    return state_cell(state) + (f": {extra}" if extra else "")


# -- reading -------------------------------------------------------------------------

def units_of(conf: Conf, host: Optional[str]) -> List[str]:
    """The units of the conf's services on this host, in conf order, and the
    run-time watcher's where this host has one."""
    from .model import WATCH_UNIT
    from .watch import watched_services

    plans = graph.plan(conf, graph.local_host(conf, host))
    return [p.unit for p in plans] + ([WATCH_UNIT] if watched_services(plans) else [])


class Restarts:
    """Restarts in the last minute: from the journal when it can be read, else
    from NRestarts sampled over time (each call to ``seen`` is a sample)."""

    def __init__(self, use_journal: bool):
        self.use_journal = use_journal
        self.samples: Dict[str, List[Tuple[float, int]]] = {}

    def seen(self, states: Sequence[bus.UnitState], now: float) -> List[Seen]:
        counts = journal.restarts_since([s.unit for s in states], now - LOOP_WINDOW) if self.use_journal else None
        result = []
        for state in states:
            recent = counts.get(state.unit) if counts is not None else self._sampled(state, now)
            seen = Seen(state, recent)
            if seen.in_trouble and self.use_journal:
                seen = Seen(state, recent, tuple(journal.last_lines(state.unit, LAST_LINES)))
            result.append(seen)
        return result

    def _sampled(self, state: bus.UnitState, now: float) -> Optional[int]:
        samples = self.samples.setdefault(state.unit, [])
        samples.append((now, state.n_restarts))
        while len(samples) > 1 and samples[1][0] <= now - LOOP_WINDOW:
            samples.pop(0)
        if len(samples) < 2:
            return None  # one reading says nothing about a rate
        return max(0, state.n_restarts - samples[0][1])


# -- showing -------------------------------------------------------------------------

def colour_wanted(stream: object, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not environ.get("NO_COLOR")


def table(rows: Sequence[Seen], colour: bool, now: Optional[float] = None,
          watched: Optional[Dict[str, Dict[str, Any]]] = None) -> List[str]:
    """One line per unit under a header: UNIT, STATE, SINCE, RESTARTS, STATUS.

    ``watched``: the run-time watcher's view (watch.read_state()); a lost
    dependency is added to the unit's STATUS, with since when and why."""
    now = time.time() if now is None else now
    header = ("UNIT", "STATE", "SINCE", "RESTARTS", "STATUS")
    cells = []
    for seen in rows:
        s = seen.state
        state = "restart loop" if seen.looping else state_cell(s)
        restarts = str(s.n_restarts) + (f" ({seen.recent_restarts} in 1 min)" if seen.recent_restarts else "")
        reason = f"last: {seen.reason}" if seen.reason else ""
        status = "; ".join(filter(None, [s.status_text or s.load_error, reason, *_lost_texts(watched, s.unit, now)]))
        cells.append((s.unit, state, _age(now - s.since) if s.since else "-", restarts, status))
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)) + "  " + header[-1]]
    for seen, row in zip(rows, cells):
        padded = [cell.ljust(w) for cell, w in zip(row, widths)]
        if colour and seen.health in _COLOURS:
            padded[1] = _ANSI[_COLOURS[seen.health]] + padded[1] + _RESET
        lines.append(("  ".join(padded) + "  " + row[-1]).rstrip())
    return lines


def json_lines(rows: Sequence[Seen], watched: Optional[Dict[str, Dict[str, Any]]] = None) -> List[str]:
    """One JSON object per unit, one per line (``lost``: the watcher's lost dependencies)."""
    watched = watched or {}
    return [json.dumps({
        "unit": s.unit, "health": seen.health, "load_state": s.load_state, "load_error": s.load_error,
        "active_state": s.active_state, "sub_state": s.sub_state, "since": _iso(s.since),
        "active_since": _iso(s.active_since), "n_restarts": s.n_restarts,
        "restarts_last_minute": seen.recent_restarts, "restart_loop": seen.looping,
        "status_text": s.status_text, "main_pid": s.main_pid, "result": s.result,
        "exit": s.exit_reason or None, "last_reason": seen.reason or None,
        "lost": [{**lost, "since": _iso(lost.get("since"))} for lost in watched.get(s.unit, {}).get("lost", [])],
        "watcher_action": _last_action(watched, s.unit),
    }, ensure_ascii=False) for seen in rows for s in [seen.state]]


def _lost_texts(watched: Optional[Dict[str, Dict[str, Any]]], unit: str, now: float) -> List[str]:
    """``lost postgres (10.0.0.11:5432) 40 s ago: connection refused`` per lost dependency."""
    texts = []
    for lost in (watched or {}).get(unit, {}).get("lost", []):
        since = lost.get("since")
        when = f" {_age(now - since)}" if since else ""
        texts.append(f"lost {lost.get('dependency')}{when}: {lost.get('reason')}")
    last = _raw_last_action(watched, unit)
    if last and last.get("reason"):
        at = last.get("at")
        when = f" {_age(now - at)}" if isinstance(at, (int, float)) else ""
        texts.append(f"watcher: {last.get('action')}{when}: {last['reason']}")
    return texts


def _raw_last_action(watched: Optional[Dict[str, Dict[str, Any]]], unit: str) -> Optional[Dict[str, Any]]:
    actions = (watched or {}).get(unit, {}).get("actions")
    last = actions[-1] if isinstance(actions, list) and actions else None
    return last if isinstance(last, dict) else None


def _last_action(watched: Optional[Dict[str, Dict[str, Any]]], unit: str) -> Optional[Dict[str, Any]]:
    """The watcher's last action on ``unit`` (restart, stop, start) with its reason, or None."""
    last = _raw_last_action(watched, unit)
    if last is None:
        return None
    at = last.get("at")
    return {"action": str(last.get("action")), "at": _iso(at) if isinstance(at, (int, float)) else None,
            "reason": str(last.get("reason") or "") or None}


def _age(seconds: float) -> str:
    """``8 s ago``, ``5 min ago``, ``2 h 5 min ago``, ``3 d 4 h ago``."""
    seconds = max(0, int(seconds))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        text = f"{seconds} s"
    elif hours < 1:
        text = f"{minutes} min"
    elif days < 1:
        text = f"{hours} h {minutes % 60} min"
    else:
        text = f"{days} d {hours % 24} h"
    return text + " ago"


def _iso(stamp: Optional[float]) -> Optional[str]:
    if stamp is None:
        return None
    return datetime.datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


# -- the command ---------------------------------------------------------------------

def run(conf: Conf, *, host: Optional[str] = None, bus_address: Optional[str] = None, as_json: bool = False,
        watch: bool = False, interval: float = 2.0, colour: bool = False, clear: bool = False,
        echo: Echo = print) -> int:
    """Show the conf's units on this host, once or every ``interval`` s until
    interrupted (``clear``: redraw the screen). Exit code 0 only when every unit
    is active and none is in a restart loop."""
    from .watch import read_state

    units = units_of(conf, host)
    restarts = Restarts(use_journal=bus.address(bus_address) == bus.SYSTEM_BUS and journal.readable())
    last: List[Seen] = []

    def show(states: List[bus.UnitState]) -> None:
        rows = restarts.seen(states, time.time())
        watched = read_state()
        body = "\n".join(json_lines(rows, watched) if as_json else table(rows, colour, watched=watched))
        echo((_CLEAR if clear else "\n" if last else "") + body)
        last[:] = rows

    shown: List[bool] = []

    async def loop() -> None:
        interrupted = stop_on_interrupt() if watch else lambda: False
        async with bus.connect(bus_address) as manager:
            while not interrupted():
                show(await manager.unit_states(units))
                shown.append(True)
                if not watch or interrupted():
                    return
                await asyncio.sleep(interval)

    try:
        asyncio.run(loop())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return 0 if shown and all(seen.health == "ok" for seen in last) else 1

