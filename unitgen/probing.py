"""Check a service's dependencies from unitgen, with the probe's own checks.

The targets are exactly those of the service's rendered ExecStartPre= on that
host (graph.plan), and each is checked by ``unitgen_probe.check``: the CLI and
the watcher never carry check code of their own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

from unitgen_probe import Result, Target

from . import graph
from .errors import UsageError
from .model import Conf, Service
from .runas import CannotCheck, Checker, run_as
from .schema import did_you_mean


def targets_of(conf: Conf, name: str, host: Optional[str]) -> Tuple[Target, ...]:
    """What the unit of service ``name`` on ``host`` waits for, in groups or not."""
    return plan_of(conf, name, host).all_targets


def short_groups(plan: "graph.UnitPlan", results: Sequence[Result]) -> List[str]:
    """``etcd: 1 of 3 answer, need 2`` for each group of the plan that ``results``
    (in ``plan.all_targets`` order) leave short of its need."""
    ok = dict(zip(plan.all_targets, (r.ok for r in results)))
    short = []
    for group in plan.groups:
        answering = sum(ok[t] for t in group.targets)
        if answering < group.need:
            short.append(f"{group.label}: {answering} of {len(group.targets)} answer, need {group.need}")
    return short


def ready(plan: "graph.UnitPlan", results: Sequence[Result]) -> bool:
    """Whether the probe would be done: every target on its own answers, every group has its need;
    an optional one never holds it (its unit starts without it after its bound)."""
    ok = dict(zip(plan.all_targets, (r.ok for r in results)))
    short = {line.split(": ", 1)[0] for line in short_groups(plan, results)}
    return all(ok[t] for t in plan.targets if t.wait_at_most is None) and \
        not any(g.label in short for g in plan.groups if g.wait_at_most is None)


def optional_bound(plan: "graph.UnitPlan", target: Target) -> Optional[float]:
    """The wait_at_most of ``target`` in ``plan`` (its own, or its group's); None: required."""
    if target.wait_at_most is not None:
        return target.wait_at_most
    return next((g.wait_at_most for g in plan.groups if target in g.targets and g.wait_at_most is not None), None)


def plan_of(conf: Conf, name: str, host: Optional[str]) -> "graph.UnitPlan":
    """The unit plan of service ``name`` on ``host``."""
    if name not in conf.services:
        raise UsageError(f"no service named {name!r} in {conf.path}{did_you_mean(name, list(conf.services))}")
    service = conf.services[name]
    where = graph.placements(conf, service)
    if host not in where:
        raise UsageError(f"{name} does not run on {host}; it runs on {', '.join(str(h) for h in where)} "
                         f"(pass --host to check from there)")
    return next(p for p in graph.plan(conf, host) if p.service.name == name)


def check_all(service: Service, targets: Sequence[Target], timeout: Optional[float] = None) -> List[Result]:
    """One attempt at each target, all in parallel, as ``service``'s unit
    runs them (its user and groups: runas.py); results in target order. A
    check that cannot run as that user fails with the reason, unasked."""
    if not targets:
        return []
    checker = Checker(run_as(service))

    def one(target: Target) -> Result:
        try:
            return checker.check(target, timeout)
        except CannotCheck as why:
            return Result(False, f"not checked: {why}", 0.0)

    try:
        with ThreadPoolExecutor(max_workers=min(len(targets), 32)) as pool:
            return list(pool.map(one, targets))
    finally:
        checker.close()
