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
    """What the unit of service ``name`` on ``host`` waits for."""
    if name not in conf.services:
        raise UsageError(f"no service named {name!r} in {conf.path}{did_you_mean(name, list(conf.services))}")
    service = conf.services[name]
    where = graph.placements(conf, service)
    if host not in where:
        raise UsageError(f"{name} does not run on {host}; it runs on {', '.join(str(h) for h in where)} "
                         f"(pass --host to check from there)")
    plan = next(p for p in graph.plan(conf, host) if p.service.name == name)
    return plan.all_targets


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
