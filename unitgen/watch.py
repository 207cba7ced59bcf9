"""`unitgen watch`: recover from a dependency lost at run time.

The ExecStartPre= probe covers start-up only. A service that started, then
lost its dependency (the database host lost power alone), may run broken for
good. For each service of this host with ``on_dependency_loss: restart`` or
``stop``, the watcher probes its remote dependencies (other hosts, and
direct tcp:/http:/... targets) with the probe's own checks, and through
systemd's D-Bus API:

* restart: when a dependency is lost, restarts the service (only if it is
  active); its ExecStartPre= probe then holds it until the dependency is
  back, so it comes back healthy with nobody touching it;
* stop: stops it while the dependency is lost (only if it is running), and
  starts it again once every lost dependency answers.

A dependency is lost after ``loss_threshold.failures`` failed checks in a row
spanning at least ``loss_threshold.seconds`` (defaults 3 and 10 s): a
network blip does not restart a fleet. One success ends a loss. A replicated
dependency (the copies of a service on several hosts, an any:/of: group) is
lost only when fewer than its ``need`` copies answer, each copy judged as
above; it is back once ``need`` of them answer again. A service is
never restarted more often than once per ``defaults.RESTART_INTERVAL`` seconds, even if
its dependency flaps. Same-host dependencies need no watcher: the units say
BindsTo=/Upholds= (see graph.py). Decisions are logged (the journal, under
unitgen-watch.service) and the current view is kept in STATE_FILE for
`unitgen status`.

Liveness: a service with ``on_unhealthy: restart`` has its own health: URL
checked on its host too. When it fails ``loss_threshold.failures`` times in
a row over at least ``loss_threshold.seconds`` while everything it depends on
(every target and group its probe waits for, on any host) answered its last
check, the service is broken on its own: the watcher restarts it (the same
once-per-interval limit). A failure while a dependency does not answer is not
counted, and the count starts again: a dependency outage is not the service's
fault. After a restart, its health is not judged before its start_time: has
passed since the restart job ended.

Optional dependencies (``optional: true``): a service whose probe started it
without one (its STATUS= says ``started degraded after …: without LABEL (…``,
the probe's own words, unitgen_probe.report) is restarted once that
dependency answers again, so that it starts with it: the same
once-per-interval limit, the reason in the journal and in `unitgen status`.
The start-time state is read from systemd (the unit's StatusText over D-Bus),
which PID 1 attributes to the unit's own probe and a new start replaces: no
file to trust, nothing left over from an earlier start. A service whose
optional dependency was there at its start is never restarted for it.
Nothing reads StatusText but its own unit's decision, so a service that
overwrites it (Type=notify sends its own STATUS=) can only cost itself that
restart.

Checks run every ``defaults.WATCH_INTERVAL`` seconds per dependency, in threads: a
watcher of a thousand dependencies costs a few threads' worth of sockets.
They run as the service's own user and groups, never as root (runas.py):
one worker process per identity, each with threads of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence, Tuple

from unitgen_probe import Result, Target
from unitgen_probe.report import DEGRADED, started_without
from unitgen_probe.targets import printable

from .graph import own_readiness
from .runas import CannotCheck, Checker, RunAs, run_as

from . import defaults

STATE_FILE = "/run/unitgen/watch.json"

Mode = Literal["restart", "stop", "ignore"]  # on_dependency_loss
WatchAction = Literal["restart", "stop", "start", "none"]


@dataclass
class Dependency:
    """One watched dependency of one service, and how it has been answering;
    a copy in a ``group`` counts towards it instead of being lost on its own."""

    target: Target
    failures: int = 0
    failing_since: Optional[float] = None  # monotonic
    lost_since: Optional[float] = None  # monotonic
    lost_at: Optional[float] = None  # wall clock, for people
    reason: str = ""
    group: "Optional[DependencyGroup]" = field(default=None, repr=False)
    acts: bool = True  # its loss is acted on (on_dependency_loss); else it only gates the health judgement
    returning: "Optional[Returning]" = field(default=None, repr=False)  # a member of an optional dependency
    answered: bool = False  # its last check passed (optional dependencies)

    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    @property
    def display(self) -> str:
        return self.target.display


@dataclass(eq=False)
class DependencyGroup:
    """Copies of which ``need`` must answer: lost when fewer do."""

    label: str
    need: int
    members: List[Dependency] = field(default_factory=list)
    lost_since: Optional[float] = None  # monotonic
    lost_at: Optional[float] = None  # wall clock

    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    @property
    def answering(self) -> int:
        return sum(not m.lost for m in self.members)

    @property
    def display(self) -> str:
        return self.label

    @property
    def reason(self) -> str:
        """``1 of 3 answer, need 2 (etcd@h2: connection refused, etcd@h3: timed out ...)``"""
        down = ", ".join(f"{m.target.label}: {m.reason}" for m in self.members if m.lost)
        return f"{self.answering} of {len(self.members)} answer, need {self.need}" + (f" ({down})" if down else "")


@dataclass(eq=False)
class Returning:
    """An optional dependency of a service (a target, or a group of which
    ``need`` must answer): once it answers, a service that started without
    it is restarted, to start with it."""

    display: str  # as the probe names it
    need: int
    members: List[Dependency] = field(default_factory=list)
    told: bool = False  # a restart it asked for was refused (interval), and the journal was told once

    @property
    def mark(self) -> str:
        """What a degraded start's STATUS= holds when it started without this."""
        return started_without(self.display)

    def answers(self) -> bool:
        return sum(m.answered for m in self.members) >= self.need


@dataclass
class Watched:
    """A service the watcher acts on, with its remote dependencies."""

    unit: str
    mode: Mode
    failures: int  # loss threshold
    seconds: float
    dependencies: List[Dependency]
    last_restart: Optional[float] = None  # monotonic
    stopped_by_us: bool = False
    actions: List[dict] = field(default_factory=list)  # the last few decisions, for status
    run_as: RunAs = RunAs()  # who its checks run as: the unit's own user (runas.py)
    health: Optional[Dependency] = None  # its own health URL, judged (on_unhealthy: restart)
    start_time: float = defaults.START_TIME  # after a restart, its health is not judged before this
    judge_after: float = 0.0  # monotonic
    optional: List[Returning] = field(default_factory=list)  # optional dependencies: restart once they return

    def checked(self) -> List[Dependency]:
        """Every dependency whose checks this service's decisions use."""
        return self.dependencies + ([self.health] if self.health else []) + \
            [m for returning in self.optional for m in returning.members]

    def answering(self) -> bool:
        """Everything it depends on answered its last check (a group: at least its need of copies)."""
        counts: Dict[DependencyGroup, int] = {}
        for dep in self.dependencies:
            if dep.group is None and dep.failures:
                return False
            if dep.group is not None:
                counts[dep.group] = counts.get(dep.group, 0) + (dep.failures == 0)
        return all(count >= group.need for group, count in counts.items())

    def lost(self) -> "List[Dependency | DependencyGroup]":
        """What is lost: dependencies on their own, and groups short of their need."""
        groups = list(dict.fromkeys(d.group for d in self.dependencies if d.group is not None))
        return [d for d in self.dependencies if d.lost and d.group is None] + [g for g in groups if g.lost]


@dataclass(frozen=True)
class Decision:
    """What the watcher does about one service after one check."""

    unit: str
    action: WatchAction
    message: str


class Policy:
    """The decisions, apart from any I/O: record() is fed check results and the
    time and says when a dependency is lost or back; decide() says what to do
    then. The Watcher only carries decisions out."""

    def __init__(self, restart_interval: float = defaults.RESTART_INTERVAL):
        self.restart_interval = restart_interval

    def record(self, service: Watched, dep: Dependency, result: Result, now: float, wall: float) -> Optional[str]:
        """Note one check of ``dep``: "lost", "back", or None when nothing changed.
        For a copy in a group, the event is the group's: lost when fewer than
        its need answer, back when that many answer again; else "copy lost" or
        "copy back", which change nothing but are worth a line in the log."""
        event = self._record(service, dep, result, now, wall)
        group = dep.group
        if group is None or event is None:
            return event
        if event == "lost" and not group.lost and group.answering < group.need:
            group.lost_since, group.lost_at = now, wall
            return "lost"
        if event == "back" and group.lost and group.answering >= group.need:
            group.lost_since = group.lost_at = None
            return "back"
        return "copy " + event

    def _record(self, service: Watched, dep: Dependency, result: Result, now: float, wall: float) -> Optional[str]:
        if result.ok:
            dep.failures, dep.failing_since = 0, None
            if dep.lost_since is None:
                return None
            dep.reason = f"lost for {now - dep.lost_since:.0f} s"
            dep.lost_since = dep.lost_at = None
            return "back"
        dep.reason = result.reason
        dep.failures += 1
        if dep.failing_since is None:
            dep.failing_since = now
        if dep.lost or dep.failures < service.failures or now - dep.failing_since < service.seconds:
            return None
        dep.lost_since, dep.lost_at = now, wall
        return "lost"

    def judge(self, service: Watched, result: Result, now: float) -> bool:
        """Note one check of the service's own health: True once it failed
        ``service.failures`` times over ``service.seconds`` while everything it
        depends on answered. A failure while a dependency does not, or before
        its start time has passed since a restart, starts the count again."""
        own = service.health
        assert own is not None, "judge() is for a service whose health is watched"
        own.reason = result.reason
        if result.ok or now < service.judge_after or not service.answering():
            own.failures, own.failing_since = 0, None
            return False
        own.failures += 1
        if own.failing_since is None:
            own.failing_since = now
        return own.failures >= service.failures and now - own.failing_since >= service.seconds

    def decide_unhealthy(self, service: Watched, now: float, running: bool) -> Decision:
        """What to do about ``service`` now that judge() found it unhealthy; the count starts again."""
        own = service.health
        assert own is not None and own.failing_since is not None, "decide_unhealthy() follows judge()"
        what = f"unhealthy: {own.target.display}: {own.reason}, {own.failures} failed checks over " \
               f"{now - own.failing_since:.0f} s while its dependencies answer"
        own.failures, own.failing_since = 0, None
        if not running:
            return Decision(service.unit, "none", f"{what}; it is not running, nothing to do")
        return self._restart(service, now, what, "restarting it")

    def decide(self, service: Watched, dep: Dependency, event: str, now: float, running: bool) -> Decision:
        """What to do about ``service`` now that ``dep`` (or its group) is ``event`` ("lost" or "back";
        "copy lost" or "copy back": one copy of a group whose state did not change)."""
        if event.startswith("copy "):
            group = dep.group
            assert group is not None  # only a group's copies are "copy" events
            change = f"lost {dep.target.display}: {dep.reason}" if event == "copy lost" else \
                f"{dep.target.display} answers again"
            state = "still lost" if group.lost else "still has its need"
            return Decision(service.unit, "none", f"{change}; {group.label} {state}: {group.reason}; nothing to do")
        if event == "back":
            message = f"{dep.target.display} answers again ({dep.reason})"
            if dep.group is not None:
                message = f"{dep.group.label} answers again: {dep.group.reason} ({dep.target.label} {dep.reason})"
            if service.mode == "stop" and service.stopped_by_us and not service.lost():
                service.stopped_by_us = False
                return Decision(service.unit, "start", message + ": starting it")
            return Decision(service.unit, "none", message)
        since = now if dep.failing_since is None else dep.failing_since  # set by the failure that lost it
        what = f"lost {dep.target.display}: {dep.reason}, {dep.failures} failed checks over " \
               f"{now - since:.0f} s"
        if dep.group is not None:
            what = f"lost {dep.group.label}: {dep.group.reason}"
        if not running:
            return Decision(service.unit, "none", f"{what}; it is not running, nothing to do")
        if service.mode == "stop":
            if service.stopped_by_us:
                return Decision(service.unit, "none", f"{what}; already stopped")
            service.stopped_by_us = True
            return Decision(service.unit, "stop", f"{what}: stopping it until it answers again")
        return self._restart(service, now, what, "restarting it (its probe holds it until the dependency is back)")

    def decide_returned(self, service: Watched, returning: Returning, active: bool, status_text: str,
                        now: float) -> Optional[Decision]:
        """What to do now that the optional ``returning`` answers: restart
        ``service`` if it runs and its probe started it without it (its
        StatusText says so), else nothing (None). A restart the interval
        refuses is told once, not at every check."""
        if not (active and status_text.startswith(DEGRADED) and returning.mark in status_text):
            returning.told = False
            return None
        what = f"{returning.display} answers; it started degraded without it (optional)"
        decision = self._restart(service, now, what, "restarting it once, to start with it")
        if decision.action == "none":
            if returning.told:
                return None
            returning.told = True
        return decision

    def _restart(self, service: Watched, now: float, what: str, doing: str) -> Decision:
        """Restart ``service``, unless it was restarted less than an interval ago (for either reason)."""
        if service.last_restart is not None and now - service.last_restart < self.restart_interval:
            ago = now - service.last_restart
            return Decision(service.unit, "none", f"{what}; not restarting: restarted {ago:.0f} s ago, "
                                                  f"at most once every {self.restart_interval:.0f} s")
        service.last_restart = now
        return Decision(service.unit, "restart", f"{what}: {doing}")


def watched_services(plans) -> List[Watched]:
    """The services of these unit plans that act on a lost remote dependency
    (on its own, or a group with a copy on another host), on their own health,
    or on an optional dependency that returns."""
    return [_watched(p) for p in plans if p.watched]


def _watched(plan) -> Watched:
    service = plan.service
    acts = service.on_dependency_loss != "ignore"
    dependencies: List[Dependency] = []
    if acts or service.on_unhealthy != "ignore":  # else watched for its optional dependencies only
        dependencies = [Dependency(t, acts=acts) for t in plan.remote] + _grouped(plan.remote_groups, acts)
    own = None
    if service.on_unhealthy != "ignore":
        # judged only while everything its probe waits for answers: the rest of it is checked too
        dependencies += [Dependency(t, acts=False) for t in plan.targets if t not in plan.remote]
        dependencies += _grouped([g for g in plan.groups if g not in plan.remote_groups], False)
        health = own_readiness(service)
        assert health is not None, "config: on_unhealthy needs health:"
        own = Dependency(health, acts=False)
    return Watched(plan.unit, service.on_dependency_loss, service.loss_threshold.failures,
                   service.loss_threshold.seconds, dependencies, run_as=run_as(service), health=own,
                   start_time=defaults.START_TIME if service.start_time is None else service.start_time,
                   optional=[_returning(item) for item in plan.optional])


def _returning(item) -> Returning:
    """The Returning of an optional probe target or Group."""
    if isinstance(item, Target):
        returning = Returning(item.display, 1)
        targets: Sequence[Target] = (item,)
    else:
        returning = Returning(printable(item.label), item.need)
        targets = item.targets
    returning.members = [Dependency(t, acts=False, returning=returning) for t in targets]
    return returning


def _grouped(groups, acts: bool = True) -> List[Dependency]:
    """A Dependency per copy of each probe group, sharing one DependencyGroup."""
    dependencies = []
    for group in groups:
        shared = DependencyGroup(group.label, group.need)
        shared.members = [Dependency(t, group=shared, acts=acts) for t in group.targets]
        dependencies += shared.members
    return dependencies


async def run(services: List[Watched], bus_address: Optional[str], **options) -> None:
    """Watch until cancelled (SIGTERM/SIGINT end the process)."""
    from . import bus

    async with bus.connect(bus_address) as systemd:
        await Watcher(services, systemd, **options).run()


class Watcher:
    """Runs the Policy against real checks and a real systemd."""

    def __init__(self, services: List[Watched], systemd, state_file: str = STATE_FILE,
                 interval: float = defaults.WATCH_INTERVAL, restart_interval: float = defaults.RESTART_INTERVAL,
                 log=None):
        self.services = services
        self.systemd = systemd
        self.policy = Policy(restart_interval)
        self.state_file = state_file
        self.interval = interval
        self.log = log or _log
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        # A target is checked once per identity that needs it: two services
        # with different users each get their own answer (runas.py).
        targets: Dict[Tuple[RunAs, Target], List[Tuple[Watched, Dependency]]] = {}
        for service in self.services:
            for dep in service.checked():
                targets.setdefault((service.run_as, dep.target), []).append((service, dep))
        # Each identity has its checker and threads of its own: a worker that
        # its user keeps from answering delays that user's checks, no one else's.
        counts = Counter(who for who, _ in targets)
        checkers = {who: (Checker(who), ThreadPoolExecutor(min(count, 32), thread_name_prefix="check"))
                    for who, count in counts.items()}
        self.log(f"watching {sum(len(s.checked()) for s in self.services)} dependencies of "
                 f"{len(self.services)} services: {', '.join(s.unit for s in self.services)}")
        self._save()
        try:
            await asyncio.gather(*(self._watch(*checkers[who], target, users)
                                   for (who, target), users in targets.items()))
        finally:
            for checker, threads in checkers.values():
                checker.close()
                threads.shutdown(wait=False)

    async def _watch(self, checker: Checker, threads: Executor, target: Target,
                     users: List[Tuple[Watched, Dependency]]) -> None:
        loop = asyncio.get_running_loop()
        cannot = ""
        while True:
            started = time.monotonic()
            try:
                result = await loop.run_in_executor(threads, checker.check, target)
            except CannotCheck as why:  # not an answer of the dependency: nothing to decide on
                if str(why) != cannot:
                    self.log(f"{', '.join(s.unit for s, _ in users)}: {target.display} not checked: {why}")
                cannot = str(why)
            else:
                cannot = ""
                for service, dep in users:
                    async with self.lock:
                        await self._observe(service, dep, result)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _observe(self, service: Watched, dep: Dependency, result: Result) -> None:
        now = time.monotonic()
        if dep.returning is not None:
            dep.answered, dep.reason = result.ok, result.reason
            if result.ok and dep.returning.answers():
                state = await self.systemd.unit_state(service.unit)
                decision = self.policy.decide_returned(service, dep.returning, state.active_state == "active",
                                                       state.status_text, now)
                if decision is not None:
                    await self._carry_out(service, decision)
            return
        if dep is service.health:
            if self.policy.judge(service, result, now):
                state = await self.systemd.unit_state(service.unit)
                if state.active_state == "active":  # else stopped, or its probe holds it: nothing to judge
                    await self._carry_out(service, self.policy.decide_unhealthy(service, now, True))
            return
        event = self.policy.record(service, dep, result, now, time.time())
        if event is None or not dep.acts:
            return
        running = True
        if event == "lost":
            state = await self.systemd.unit_state(service.unit)
            # a unit whose probe is waiting is "activating": already held back, no restart needed
            running = state.active_state == "active" or (service.mode == "stop" and state.active_state == "activating")
        await self._carry_out(service, self.policy.decide(service, dep, event, now, running))

    async def _carry_out(self, service: Watched, decision: Decision) -> None:
        self.log(f"{decision.unit}: {decision.message}")
        if decision.action != "none":
            job = await getattr(self.systemd, f"{decision.action}_unit")(decision.unit)
            service.actions = (service.actions + [{"action": decision.action, "at": time.time(),
                                                   "reason": decision.message}])[-10:]
            if job is not None:
                await self.systemd.wait([job], 30.0)
            # its health is judged again once it has had its start time
            service.judge_after = time.monotonic() + service.start_time
        self._save()

    def _save(self) -> None:
        save_state(self.state_file, self.services)


def save_state(path: str, services: Sequence[Watched]) -> None:
    """The watcher's view, for `unitgen status`: atomically replaced."""
    view = {
        "pid": os.getpid(),
        "updated": time.time(),
        "units": {
            s.unit: {
                "mode": s.mode,
                "on_unhealthy": "restart" if s.health else "ignore",
                "lost": [{"dependency": d.display, "since": d.lost_at, "reason": d.reason} for d in s.lost()],
                "actions": s.actions,
            } for s in services
        },
    }
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(view, f, ensure_ascii=False)
    os.replace(temp, path)


def read_state(path: str = STATE_FILE) -> Dict[str, dict]:
    """The watcher's view by unit, or {} when no watcher runs here."""
    try:
        with open(path, encoding="utf-8") as f:
            view = json.load(f)
    except (OSError, ValueError):
        return {}
    return view.get("units", {}) if isinstance(view, dict) else {}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
