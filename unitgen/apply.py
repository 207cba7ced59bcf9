"""``unitgen apply`` and ``unitgen status``: this host's systemd, made to match the conf.

apply, step by step (each checked on systemd 252 in tests/test_apply.py):

1. connect to systemd and read Manager.Version: the renderer leaves out
   directives this systemd does not know (systemd.DIRECTIVE_SINCE);
2. render and plan with OutputDir, as ``unitgen render`` does (manifest,
   atomic writes, files it does not own are refused): a conflict stops apply
   here, before systemd or any file is touched;
3. disable and stop the units that left the conf, wait for the stops, and
   ResetFailedUnit them, all while their files are still loaded: after a
   Reload without the file, systemd would stop a unit without its own settings
   (ExecStop=, TimeoutStopSec= ... are gone; seen on 252);
4. write the files;
5. enable the conf's units (re-enable changed ones, whose [Install] may have
   changed; enabling an enabled unit changes nothing) and Reload once: enable
   only edits symlinks, so one Reload after both loads files and links together;
6. start added units (and unchanged ones that are not running), restart
   changed ones; unchanged running units get no job, so their main PID stays;
7. wait up to ``wait`` seconds for those jobs (JobRemoved) and judge each by
   its result and its unit's state.

A start job of a unit whose probe waits for a dependency stays running until
the probe ends (its deadline, 60 s by default). Such a unit is "waiting", not
failed: a job still running when the wait ends, a unit "activating", or one
whose StatusText is the probe's "waiting for ..." / "gave up after ..." (the
probe passed its deadline and Restart= tries again). systemd carries on
without apply; ``unitgen status`` shows what each unit waits for.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Literal, Optional, Sequence

from . import bus, graph, systemd
from .errors import UnitgenError
from .install import OutputDir, Plan
from .model import Conf
from .render import Renderer

DEFAULT_OUTPUT = "/etc/systemd/system"
# How long apply waits for its jobs: long enough for a service whose
# dependencies are up (the probe answers within seconds, local dependencies
# start first), short enough that a dependency that is down does not hold the
# terminal for the probe's whole deadline. Past it, a start job still running
# is reported as waiting and systemd goes on with it.
DEFAULT_WAIT = 30.0

Echo = Callable[[str], None]
JobKind = Literal["start", "restart", "stop"]
Verdict = Literal["ok", "waiting", "failed"]


@dataclass
class Outcome:
    """What became of one unit apply queued a job for (or tried to)."""

    unit: str
    kind: JobKind
    verdict: Verdict
    detail: str

    @property
    def failed(self) -> bool:
        return self.verdict == "failed"


@dataclass
class Changes:
    """A plan sorted by what each unit needs from systemd."""

    added: List[str]  # new, or adopted (identical file not yet in the manifest)
    changed: List[str]
    removed: List[str]  # left the conf (file removed now, or already gone)
    unchanged: List[str]

    @classmethod
    def of(cls, plan: Plan) -> "Changes":
        return cls(plan.named("create", "adopt"), plan.named("update"),
                   plan.named("remove", "forget"), plan.named("unchanged"))


def apply(conf: Conf, *, output: str = DEFAULT_OUTPUT, host: Optional[str] = None,
          probe: Optional[str] = None, bus_address: Optional[str] = None, dry_run: bool = False,
          start: bool = True, force: bool = False, wait: float = DEFAULT_WAIT,
          echo: Echo = print) -> List[Outcome]:
    """Make this host's systemd match ``conf``; returns the outcome of every job.

    ``start=False`` (--no-start) writes, enables and reloads, and queues no
    job but the stops of units that left the conf (nothing would track them
    afterwards).
    """
    where = graph.local_host(conf, host)
    return asyncio.run(_apply(conf, where, output, probe, bus_address, dry_run, start, force, wait, echo))


async def _apply(conf: Conf, host: Optional[str], output: str, probe: Optional[str],
                 bus_address: Optional[str], dry_run: bool, start: bool, force: bool, wait: float,
                 echo: Echo) -> List[Outcome]:
    async with bus.connect(bus_address) as manager:
        version = await manager.version()
        units = Renderer(probe, systemd_version=systemd.major_version(version)).render(conf, host)
        try:
            with OutputDir(output, create=not dry_run, lock=not dry_run) as out:
                plan = out.plan(units, os.path.abspath(conf.path), force)
                out.refuse_conflicts(plan)  # before anything is written or asked of systemd
                changes = Changes.of(plan)
                _print_changes(changes, dry_run, echo)
                idle = await _not_running(manager, changes.unchanged)
                if dry_run:
                    _print_intended_jobs(changes, idle, start, echo)
                    return []
                outcomes = await _remove(manager, changes.removed, plan.named("remove"), wait, echo)
                out.apply(plan)
                linked = await manager.enable(changes.added + changes.unchanged)
                linked += await manager.reenable(changes.changed)
                if plan.writes or linked:
                    await manager.reload()
                    echo(f"reloaded  systemd {version}")
                return outcomes + await _start(manager, changes, idle, start, wait, echo)
        except PermissionError as exc:
            raise UnitgenError(f"{output}: {exc.strerror} (unitgen apply must run as root)") from None


async def _not_running(manager: bus.Systemd, units: Sequence[str]) -> List[str]:
    """The units among ``units`` that are inactive or failed: apply starts them."""
    states = await manager.unit_states(units)
    return [s.unit for s in states if s.active_state in ("inactive", "failed")]


async def _remove(manager: bus.Systemd, removed: List[str], with_files: List[str], wait: float,
                  echo: Echo) -> List[Outcome]:
    """Disable, stop and reset the units that left the conf, while their files are
    still loaded: a Reload after the files are gone would leave systemd stopping
    them without their own settings (ExecStop=, TimeoutStopSec= ...)."""
    await manager.disable(with_files)
    jobs = _Jobs(manager)
    for unit in removed:
        await jobs.queue(manager.stop_unit, unit, "stop")
    await jobs.wait(wait, echo)
    for unit in removed:
        await manager.reset_failed(unit)
    return await jobs.outcomes(echo)


async def _start(manager: bus.Systemd, changes: Changes, idle: List[str], start: bool, wait: float,
                 echo: Echo) -> List[Outcome]:
    """Start added and idle units, restart changed ones; wait and judge each."""
    to_start = changes.added + idle
    if not start:
        if to_start or changes.changed:
            echo(f"not started (--no-start): {' '.join(to_start + changes.changed)}")
        return []
    jobs = _Jobs(manager)
    for unit in to_start:
        await jobs.queue(manager.start_unit, unit, "start")
    for unit in changes.changed:
        await jobs.queue(manager.restart_unit, unit, "restart")
    await jobs.wait(wait, echo)
    outcomes = await jobs.outcomes(echo)
    waiting = sum(o.verdict == "waiting" for o in outcomes)
    if waiting:
        echo(f"{waiting} unit{'s' if waiting != 1 else ''} still on the way up: systemd carries on; "
             "unitgen status shows what each waits for")
    return outcomes


class _Jobs:
    """The jobs of one step, and the units systemd refused a job for."""

    def __init__(self, manager: bus.Systemd):
        self.manager = manager
        self.jobs: List[bus.Job] = []
        self.refused: List[Outcome] = []

    async def queue(self, method, unit: str, kind: str) -> None:
        """Queue a job with ``method`` (e.g. manager.start_unit); a refusal is a failed outcome."""
        try:
            job = await method(unit)
        except bus.UnitError as exc:
            self.refused.append(Outcome(unit, kind, "failed", f"{exc.message} (journalctl -b -u {unit})"))
            return
        if job is not None:
            self.jobs.append(job)

    async def wait(self, wait: float, echo: Echo) -> None:
        if self.jobs:
            count = len(self.jobs)
            echo(f"waiting up to {wait:g} s for {count} job{'s' if count != 1 else ''}")
            await self.manager.wait(self.jobs, wait)

    async def outcomes(self, echo: Echo) -> List[Outcome]:
        """Each job judged by its result and its unit's state now; printed."""
        states = await self.manager.unit_states([job.unit for job in self.jobs])
        outcomes = self.refused + [_outcome(job, state) for job, state in zip(self.jobs, states)]
        for outcome in outcomes:
            echo(_outcome_line(outcome))
        return outcomes


def _outcome(job: bus.Job, state: bus.UnitState) -> Outcome:
    """Judge one job by its result and its unit's state now (see the module doc)."""
    if job.kind == "stop":  # (its last STATUS= would be stale news)
        detail = _state_cell(state)
        if job.result is None:
            return Outcome(job.unit, job.kind, "waiting", f"still stopping: {detail}")
        return Outcome(job.unit, job.kind, "ok" if job.ok else "failed",
                       detail if job.ok else f"stop job {job.result}: {detail}")
    detail = _state_text(state)
    if job.result is None:
        return Outcome(job.unit, job.kind, "waiting",
                       detail if state.active_state != "inactive" else f"{detail}: start job still queued")
    if state.waiting:
        return Outcome(job.unit, job.kind, "waiting", detail)
    if job.ok and state.active:
        return Outcome(job.unit, job.kind, "ok", detail)
    why = f"{job.kind} job {job.result}" if not job.ok else "not running"
    result = f", result {state.result}" if state.result not in ("", "success") else ""
    return Outcome(job.unit, job.kind, "failed", f"{why}: {detail}{result} (journalctl -b -u {job.unit})")


def _state_text(state: bus.UnitState) -> str:
    """``activating (start-pre): waiting for db (…)``, or ``bad-setting: Unit x has a bad …``."""
    extra = state.status_text or state.load_error
    return _state_cell(state) + (f": {extra}" if extra else "")


_DONE = {"start": "started", "restart": "restarted", "stop": "stopped"}


def _outcome_line(outcome: Outcome) -> str:
    verb = _DONE[outcome.kind] if outcome.verdict == "ok" else outcome.verdict
    return f"{verb:9} {outcome.unit}: {outcome.detail}"


def _print_changes(changes: Changes, dry_run: bool, echo: Echo) -> None:
    words = ("add", "change", "remove") if dry_run else ("added", "changed", "removed")
    for word, units in zip(words, (changes.added, changes.changed, changes.removed)):
        for unit in units:
            echo(f"{word:9} {unit}")
    if changes.unchanged:
        count = len(changes.unchanged)
        echo(f"{'unchanged':9} {count} unit{'s' if count != 1 else ''}")


def _print_intended_jobs(changes: Changes, idle: List[str], start: bool, echo: Echo) -> None:
    """What a real run would ask of systemd (a dry run asks nothing)."""
    if changes.removed:
        echo(f"would disable and stop: {' '.join(changes.removed)}")
    if changes.added or changes.changed or changes.removed:
        echo("would reload systemd" + (f" and enable: {' '.join(changes.added)}" if changes.added else ""))
    if start and changes.added + idle:
        echo(f"would start: {' '.join(changes.added + idle)}")
    if start and changes.changed:
        echo(f"would restart: {' '.join(changes.changed)}")


# -- status -----------------------------------------------------------------

_COLOURS = {"ok": "green", "waiting": "yellow", "bad": "red"}


def status_units(conf: Conf, host: Optional[str]) -> List[str]:
    """The units of the conf's services on this host, in conf order, and the
    run-time watcher's where this host has one."""
    from .render import WATCH_UNIT
    from .watch import watched_services

    plans = graph.plan(conf, graph.local_host(conf, host))
    return [p.unit for p in plans] + ([WATCH_UNIT] if watched_services(plans) else [])


def read_states(units: Sequence[str], bus_address: Optional[str]) -> List[bus.UnitState]:
    """The state of each unit, read once."""
    async def read():
        async with bus.connect(bus_address) as manager:
            return await manager.unit_states(units)

    return asyncio.run(read())


def watch_states(units: Sequence[str], bus_address: Optional[str], interval: float,
                 show: Callable[[List[bus.UnitState]], None]) -> None:
    """Call ``show`` with the units' states every ``interval`` seconds, until interrupted."""
    async def loop():
        async with bus.connect(bus_address) as manager:
            while True:
                show(await manager.unit_states(units))
                await asyncio.sleep(interval)

    asyncio.run(loop())


def all_active(states: Sequence[bus.UnitState]) -> bool:
    return all(s.active for s in states)


def colour_wanted(stream, environ: Dict[str, str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not environ.get("NO_COLOR")


def status_table(states: Sequence[bus.UnitState], colour: bool, now: Optional[float] = None,
                 watched: Optional[Dict[str, dict]] = None) -> List[str]:
    """One line per unit under a header: UNIT, STATE, SINCE, RESTARTS, STATUS.

    ``watched``: the run-time watcher's view (watch.read_state()); a lost
    dependency is added to the unit's STATUS, with since when and why."""
    import click

    now = time.time() if now is None else now
    header = ("UNIT", "STATE", "SINCE", "RESTARTS", "STATUS")
    rows = [(s.unit, _state_cell(s), _age(now - s.since) if s.since else "-", str(s.n_restarts),
             "; ".join(filter(None, [s.status_text or s.load_error, *_lost_texts(watched, s.unit, now)])))
            for s in states]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)) + "  " + header[-1]]
    for state, row in zip(states, rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths)]
        if colour:
            cells[1] = click.style(cells[1], fg=_COLOURS.get(_health(state)))
        lines.append(("  ".join(cells) + "  " + row[-1]).rstrip())
    return lines


def status_json(states: Sequence[bus.UnitState], watched: Optional[Dict[str, dict]] = None) -> List[str]:
    """One JSON object per unit, one per line (``lost``: the watcher's lost dependencies)."""
    watched = watched or {}
    return [json.dumps({
        "unit": s.unit, "health": _health(s), "load_state": s.load_state, "load_error": s.load_error,
        "active_state": s.active_state, "sub_state": s.sub_state, "since": _iso(s.since),
        "active_since": _iso(s.active_since), "n_restarts": s.n_restarts, "status_text": s.status_text,
        "main_pid": s.main_pid, "result": s.result,
        "lost": [{**lost, "since": _iso(lost.get("since"))} for lost in watched.get(s.unit, {}).get("lost", [])],
    }, ensure_ascii=False) for s in states]


def _lost_texts(watched: Optional[Dict[str, dict]], unit: str, now: float) -> List[str]:
    """``lost postgres (10.0.0.11:5432) 40 s ago: connection refused`` per lost dependency."""
    texts = []
    for lost in (watched or {}).get(unit, {}).get("lost", []):
        since = lost.get("since")
        when = f" {_age(now - since)}" if since else ""
        texts.append(f"lost {lost.get('dependency')}{when}: {lost.get('reason')}")
    return texts


def _state_cell(state: bus.UnitState) -> str:
    if state.load_state not in ("loaded", ""):
        return state.load_state
    return f"{state.active_state} ({state.sub_state})"


def _health(state: bus.UnitState) -> str:
    """ok (active), waiting (held by its probe, or starting), bad (failed, not loaded), or inactive."""
    if state.load_state not in ("loaded", "") or state.active_state == "failed":
        return "bad"
    if state.active:
        return "ok"
    return "waiting" if state.waiting else state.active_state


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
