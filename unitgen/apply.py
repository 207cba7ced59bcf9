"""``unitgen apply``: this host's systemd, made to match the conf.

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
   then, where a conf's name takes over a package's unit (takeover.py), stop
   and disable that unit (redis-server.service behind Debian's alias
   redis.service) or disable its links (a same-named nginx.service), so that
   ours is the one unit of that name, enabled;
4. write the files;
5. enable the conf's units (re-enable changed ones, whose [Install] may have
   changed; enabling an enabled unit changes nothing) and Reload once: enable
   only edits symlinks, so one Reload after both loads files and links together;
6. start added units (and unchanged ones that are not running), restart
   changed ones, and added ones already running (a package's process under
   the name ours took over); unchanged running units get no job, so their
   main PID stays;
7. wait up to ``wait`` seconds for those jobs (JobRemoved) and judge each by
   its result and its unit's state;
8. watch every unit that came up for ``settle`` seconds (5 by default): one
   whose main process ends or changes, or that systemd restarts, meanwhile has
   failed (a script that daemonizes under Type=exec, a port already in use);
   one whose own health (listen:/health:) answers is settled after 1 s. A
   failure is reported with systemd's reason (exit status or signal, Result=,
   NRestarts) and the last lines the unit logged (this host's journal), and
   apply exits 1.

A start job of a unit whose probe waits for a dependency stays running until
the probe ends (its deadline, 60 s by default). Such a unit is "waiting", not
failed: a job still running when the wait ends, a unit "activating", or one
whose StatusText is the probe's "waiting for ..." / "gave up after ..." (the
probe passed its deadline and Restart= tries again). systemd carries on
without apply; ``unitgen status`` shows what each unit waits for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Optional, Sequence

from unitgen_probe import Target

from . import bus, defaults, graph, journal, lint, paths, systemd, takeover
from .bus import JobKind
from .errors import MAX_PROBLEMS, UnitgenError, one_line
from .install import OutputDir, Plan
from .model import Conf
from .render import Renderer
from .rendering import UnitDiff, unit_diffs
from .status import last_reason, state_cell, state_text

DEFAULT_OUTPUT = "/etc/systemd/system"
# A unit that came up is watched for defaults.APPLY_SETTLE s (see _settle),
# polled every SETTLE_POLL s; one whose own health answers is settled after
# HEALTH_MIN_UP s.
SETTLE_POLL = 0.25
HEALTH_MIN_UP = 1.0
LAST_LINES = 3

Echo = Callable[[str], None]
Verdict = Literal["ok", "waiting", "failed"]


@dataclass
class Outcome:
    """What became of one unit apply queued a job for (or tried to)."""

    unit: str
    kind: JobKind
    verdict: Verdict
    detail: str
    state: Optional[bus.UnitState] = field(default=None, repr=False, compare=False)  # when judged

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


@dataclass
class Intended:
    """What a dry run would ask of systemd (a dry run asks nothing)."""

    stop: List[str]  # disabled and stopped: units that left the conf, packages' units taken over
    enable: List[str]
    start: List[str]
    restart: List[str]
    reload: bool


@dataclass
class Report:
    """What one ``unitgen apply --json`` did, filled in as apply goes: one JSON
    object for a machine (an Ansible module), the human lines kept in ``log``."""

    dry_run: bool = False
    host: Optional[str] = None
    changes: Optional[Changes] = None
    written: bool = False  # the plan's files were written (changed is then true, whatever fails later)
    intended: Optional[Intended] = None
    outcomes: List[Outcome] = field(default_factory=list)
    takeovers: List[str] = field(default_factory=list)
    diffs: List[UnitDiff] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    log: List[str] = field(default_factory=list)
    error: Optional[str] = None
    problems: List[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def changed(self) -> bool:
        """A unit was (or, in a dry run, would be) added, changed or removed; jobs alone change nothing."""
        c = self.changes
        return bool(c and (c.added or c.changed or c.removed) and (self.written or self.dry_run))

    def fail(self, exc: UnitgenError) -> None:
        """Record unitgen's own error, as the CLI prints it, and its exit code."""
        problems = getattr(exc, "problems", None)
        self.problems = [str(p) for p in problems[:MAX_PROBLEMS]] if problems else []
        self.error = self.problems[0] if self.problems else one_line(f"unitgen: {exc}")
        if problems and len(problems) > 1:
            self.error += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        self.exit_code = exc.exit_code

    def as_dict(self) -> dict:
        c = self.changes or Changes([], [], [], [])
        return {
            "changed": self.changed, "failed": self.exit_code != 0, "exit_code": self.exit_code,
            "dry_run": self.dry_run, "host": self.host,
            "units": {"added": c.added, "changed": c.changed, "removed": c.removed, "unchanged": c.unchanged},
            "jobs": [{"unit": o.unit, "job": o.kind, "result": o.verdict, "detail": o.detail} for o in self.outcomes],
            "intended": None if self.intended is None else vars(self.intended),
            "takeovers": self.takeovers,
            "diff": [vars(d) for d in self.diffs],
            "warnings": self.warnings, "log": self.log, "error": self.error, "problems": self.problems,
        }


def run(conf: Conf, **options) -> int:
    """``unitgen apply``: the exit code, 1 if a job or a unit failed (see ``apply``)."""
    return 1 if any(o.failed for o in apply(conf, **options)) else 0


def run_json(load: Callable[[], Conf], out: Echo, **options) -> int:
    """``unitgen apply --json``: one JSON object on ``out`` (Report.as_dict),
    also when unitgen fails (its own one-line error and exit code are in it;
    the error is raised again, for the CLI to print and exit with)."""
    import json

    report = Report(dry_run=options.get("dry_run", False))
    try:
        conf = load()
        report.warnings = [w.format("warning: ") for w in conf.warnings]
        report.outcomes = apply(conf, report=report, echo=report.log.append, **options)
    except UnitgenError as exc:
        report.fail(exc)
        out(json.dumps(report.as_dict()))
        raise
    report.exit_code = 1 if any(o.failed for o in report.outcomes) else 0
    out(json.dumps(report.as_dict()))
    return report.exit_code


def apply(conf: Conf, *, output: str = DEFAULT_OUTPUT, host: Optional[str] = None,
          probe: Optional[str] = None, bus_address: Optional[str] = None, dry_run: bool = False,
          start: bool = True, force: bool = False, wait: float = defaults.APPLY_WAIT,
          settle: float = defaults.APPLY_SETTLE, allow_unreachable_probe: bool = False,
          show_diff: bool = False, source: Optional[str] = None, report: Optional[Report] = None,
          echo: Echo = print) -> List[Outcome]:
    """Make this host's systemd match ``conf``; returns the outcome of every job.

    ``start=False`` (--no-start) writes, enables and reloads, and queues no
    job but the stops of units that left the conf (nothing would track them
    afterwards). ``show_diff`` prints each unit's redacted diff (--diff);
    ``report`` (--json) is filled in with what was planned and done.
    ``source`` (--source): the conf's own place, when ``conf`` was read from
    a copy staged elsewhere (a dry run of a conf not yet in its place): the
    units, their watcher and the manifest name it, as if read from there.
    """
    if source:
        conf = dataclasses.replace(conf, path=source)
    report = report if report is not None else Report()
    where = graph.local_host(conf, host)
    report.host = where
    plans = graph.plan(conf, where)
    probe = paths.probe_command(probe)
    if not allow_unreachable_probe:
        lint.refuse_unreachable_probe(plans, probe)  # before systemd or any file is touched
    return asyncio.run(_apply(conf, where, plans, output, probe, bus_address, dry_run, start, force, wait,
                              settle, show_diff, report, echo))


async def _apply(conf: Conf, host: Optional[str], plans: List[graph.UnitPlan], output: str, probe: Optional[str],
                 bus_address: Optional[str], dry_run: bool, start: bool, force: bool, wait: float,
                 settle: float, show_diff: bool, report: Report, echo: Echo) -> List[Outcome]:
    async with bus.connect(bus_address) as manager:
        version = await manager.version()
        units = Renderer(probe, systemd_version=systemd.major_version(version)).render(conf, host)
        try:
            with OutputDir(output, create=not dry_run, lock=not dry_run) as out:
                system = takeover.system_dir(output)
                taken = takeover.for_plans(plans, system, out.read_manifest()) if system else {}
                plan = out.plan(units, os.path.abspath(conf.path), force,
                                replace_links=takeover.links_to_replace(taken, system or ""))
                out.refuse_conflicts(plan)  # before anything is written or asked of systemd
                changes = report.changes = Changes.of(plan)
                _print_changes(changes, dry_run, echo)
                if show_diff:
                    report.diffs = unit_diffs(plan, output)
                    for diff in report.diffs:
                        echo(diff.unified.rstrip("\n"))
                for t in taken.values():
                    report.takeovers.append(f"{t.describe()}; {takeover.advice(t)}")
                    echo(f"takeover  {report.takeovers[-1]}")
                leaving = list(dict.fromkeys(t.unit for t in taken.values() if t.to_disable and not t.same_name))
                relinked = [t.name for t in taken.values() if t.to_disable and t.same_name]
                idle = await _not_running(manager, changes.unchanged)
                if dry_run:
                    report.intended = _intended_jobs(changes, idle, start, leaving)
                    _print_intended_jobs(report.intended, echo)
                    return []
                outcomes = await _remove(manager, changes.removed, plan.named("remove"), wait, echo)
                # the package's units leave before ours is written: their links (an alias
                # in ours' place, wants links) go with DisableUnitFiles, while their files decide
                outcomes += await _remove(manager, leaving, leaving, wait, echo)
                await manager.disable(relinked)
                out.apply(plan)
                report.written = True
                linked = await manager.enable(changes.added + changes.unchanged)
                linked += await manager.reenable(changes.changed)
                if plan.writes or linked:
                    await manager.reload()
                    echo(f"reloaded  systemd {version}")
                health = {p.unit: t for p in plans for t in [graph.own_readiness(p.service)] if t}
                local = bus.address(bus_address) == bus.SYSTEM_BUS and journal.readable()
                return outcomes + await _start(manager, changes, idle, start, wait, settle, health, local, echo)
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
                 settle: float, health: Dict[str, Target], journal_lines: bool, echo: Echo) -> List[Outcome]:
    """Start added and idle units, restart changed ones; wait, watch each one
    that came up for the settle period, and judge it."""
    to_start = changes.added + idle
    if not start:
        if to_start or changes.changed:
            echo(f"not started (--no-start): {' '.join(to_start + changes.changed)}")
        return []
    # An added unit already active runs a process started under that name by
    # another unit file (a package's nginx.service that ours now overrides): restart it.
    running = {s.unit for s in await manager.unit_states(changes.added) if s.active_state in ("active", "reloading")}
    jobs = _Jobs(manager)
    for unit in to_start:
        if unit not in running:
            await jobs.queue(manager.start_unit, unit, "start")
    for unit in changes.changed + [u for u in changes.added if u in running]:
        await jobs.queue(manager.restart_unit, unit, "restart")
    await jobs.wait(wait, echo)
    outcomes = await jobs.judge()
    outcomes = await _settle(manager, outcomes, settle, health, echo)
    if journal_lines:
        outcomes = [_with_last_lines(o) for o in outcomes]
    for outcome in outcomes:
        echo(_outcome_line(outcome))
    waiting = sum(o.verdict == "waiting" for o in outcomes)
    if waiting:
        echo(f"{waiting} unit{'s' if waiting != 1 else ''} still on the way up: systemd carries on; "
             "unitgen status shows what each waits for")
    return outcomes


async def _settle(manager: bus.Systemd, outcomes: List[Outcome], settle: float, health: Dict[str, Target],
                  echo: Echo) -> List[Outcome]:
    """Watch every unit whose start or restart succeeded for ``settle`` seconds:
    one whose main process ends, changes or is restarted by systemd meanwhile
    failed (a daemonizing script under Type=exec, a port already in use ...).
    A unit is settled early once its own health (listen:/health:, checked on
    this host by the probe's check) answers and it has been up HEALTH_MIN_UP s."""
    watched = [o for o in outcomes if o.verdict == "ok" and o.state is not None]
    if not watched or settle <= 0:
        return outcomes
    echo(f"watching {len(watched)} unit{'s' if len(watched) != 1 else ''} for up to {settle:g} s")
    begun = time.monotonic()
    pending = {o.unit: o for o in watched}
    at_start = {o.unit: o.state for o in watched if o.state is not None}
    judged: Dict[str, Outcome] = {}
    while pending:
        elapsed = time.monotonic() - begun
        states = await manager.unit_states(list(pending))
        answered = await _answering([s.unit for s in states if elapsed >= HEALTH_MIN_UP and s.unit in health],
                                    health)
        for state in states:
            first = pending[state.unit]
            trouble = _trouble(at_start[state.unit], state)
            if trouble:
                judged[state.unit] = Outcome(state.unit, first.kind, "failed",
                                             f"{trouble}: {state_text(state)}{_reason(state)}", state)
            elif state.unit in answered or elapsed >= settle:
                judged[state.unit] = Outcome(state.unit, first.kind, "ok", state_text(state), state)
        for unit in judged:
            pending.pop(unit, None)
        if pending:
            await asyncio.sleep(SETTLE_POLL)
    return [judged.get(o.unit, o) for o in outcomes]


def _trouble(first: bus.UnitState, now: bus.UnitState) -> str:
    """What went wrong since ``first``, or "": restarted, main process gone or replaced."""
    if now.n_restarts > first.n_restarts:
        count = now.n_restarts - first.n_restarts
        return f"restarted by systemd {count} time{'s' if count != 1 else ''} within the settle period " \
               f"(NRestarts {now.n_restarts})"
    if not now.active:
        return "its main process ended after it started"
    if first.main_pid and now.main_pid != first.main_pid:
        return f"its main process changed ({first.main_pid} -> {now.main_pid})"
    return ""


async def _answering(units: List[str], health: Dict[str, Target]) -> set:
    """The units among ``units`` whose own health answers now (one attempt each, in parallel)."""
    if not units:
        return set()
    from unitgen_probe import check

    results = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(None, check, health[u], None)
                                     for u in units))
    return {unit for unit, result in zip(units, results) if result.ok}


def _reason(state: bus.UnitState) -> str:
    reason = last_reason(state)
    return f" ({reason})" if reason else ""


def _with_last_lines(outcome: Outcome) -> Outcome:
    """A failed outcome with the last lines the unit logged (this host's journal)."""
    if outcome.verdict != "failed" or outcome.kind == "stop":
        return outcome
    lines = journal.last_lines(outcome.unit, LAST_LINES)
    if not lines:
        return outcome
    return Outcome(outcome.unit, outcome.kind, outcome.verdict,
                   f"{outcome.detail}; last logged: {' | '.join(lines)}", outcome.state)


class _Jobs:
    """The jobs of one step, and the units systemd refused a job for."""

    def __init__(self, manager: bus.Systemd):
        self.manager = manager
        self.jobs: List[bus.Job] = []
        self.refused: List[Outcome] = []

    async def queue(self, method, unit: str, kind: JobKind) -> None:
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

    async def judge(self) -> List[Outcome]:
        """Each job judged by its result and its unit's state now."""
        states = await self.manager.unit_states([job.unit for job in self.jobs])
        return self.refused + [_outcome(job, state) for job, state in zip(self.jobs, states)]

    async def outcomes(self, echo: Echo) -> List[Outcome]:
        """Judged, and printed."""
        outcomes = await self.judge()
        for outcome in outcomes:
            echo(_outcome_line(outcome))
        return outcomes


def _outcome(job: bus.Job, state: bus.UnitState) -> Outcome:
    """Judge one job by its result and its unit's state now (see the module doc)."""
    if job.kind == "stop":  # (its last STATUS= would be stale news)
        detail = state_cell(state)
        if job.result is None:
            return Outcome(job.unit, job.kind, "waiting", f"still stopping: {detail}")
        return Outcome(job.unit, job.kind, "ok" if job.ok else "failed",
                       detail if job.ok else f"stop job {job.result}: {detail}")
    detail = state_text(state)
    if job.result is None:
        return Outcome(job.unit, job.kind, "waiting",
                       detail if state.active_state != "inactive" else f"{detail}: start job still queued")
    if state.waiting:
        return Outcome(job.unit, job.kind, "waiting", detail)
    if job.ok and state.active:
        return Outcome(job.unit, job.kind, "ok", detail, state)
    why = f"{job.kind} job {job.result}" if not job.ok else "not running"
    restarts = f", NRestarts {state.n_restarts}" if state.n_restarts else ""
    return Outcome(job.unit, job.kind, "failed", f"{why}: {detail}{_reason(state)}{restarts}", state)


_DONE = {"start": "started", "restart": "restarted", "stop": "stopped"}


def _outcome_line(outcome: Outcome) -> str:
    verb = _DONE[outcome.kind] if outcome.verdict == "ok" else outcome.verdict
    see = f" (journalctl -b -u {outcome.unit})" if outcome.verdict == "failed" and outcome.kind != "stop" \
        and outcome.state is not None else ""
    return f"{verb:9} {outcome.unit}: {outcome.detail}{see}"


def _print_changes(changes: Changes, dry_run: bool, echo: Echo) -> None:
    words = ("add", "change", "remove") if dry_run else ("added", "changed", "removed")
    for word, units in zip(words, (changes.added, changes.changed, changes.removed)):
        for unit in units:
            echo(f"{word:9} {unit}")
    if changes.unchanged:
        count = len(changes.unchanged)
        echo(f"{'unchanged':9} {count} unit{'s' if count != 1 else ''}")


def _intended_jobs(changes: Changes, idle: List[str], start: bool, leaving: Sequence[str] = ()) -> Intended:
    """What a real run would ask of systemd."""
    return Intended(stop=[*changes.removed, *leaving], enable=changes.added, start=changes.added + idle if start else [],
                    restart=changes.changed if start else [],
                    reload=bool(changes.added or changes.changed or changes.removed))


def _print_intended_jobs(intended: Intended, echo: Echo) -> None:
    if intended.stop:
        echo(f"would disable and stop: {' '.join(intended.stop)}")
    if intended.reload:
        echo("would reload systemd" + (f" and enable: {' '.join(intended.enable)}" if intended.enable else ""))
    if intended.start:
        echo(f"would start: {' '.join(intended.start)}")
    if intended.restart:
        echo(f"would restart: {' '.join(intended.restart)}")
