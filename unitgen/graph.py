"""The conf as a graph: where services run, what each waits for, cycles.

    plan(conf, host) -> [UnitPlan]     # what one host renders

A ``service: X`` dependency is resolved for each host the dependent runs on:
* X runs on the same host: systemd orders them natively (Wants= + After=),
  and the probe also waits for X's readiness (its health URL, else its listen
  port), because After= orders start-up only, not readiness;
* X runs elsewhere: the probe waits for X's health URL, with ``{host}`` filled
  in, else for X's listen port at its host's address.

A dependency cycle would deadlock a power restore (each side waits for the
other forever), so any cycle is an error, printed as its path across hosts.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from unitgen_probe import Target

from . import systemd
from .config import join_host_port
from .errors import ConfigError, Problem, UsageError
from .model import Conf, Dependency, Service

# A node of the fleet graph: a service on a host (host None in a conf without hosts:).
Node = Tuple[str, Optional[str]]


@dataclass(frozen=True)
class UnitPlan:
    """Everything the renderer needs for one service on one host."""

    service: Service
    host: Optional[str]
    unit: str
    targets: Tuple[Target, ...]  # what the ExecStartPre= probe waits for
    after: Tuple[str, ...]  # units on the same host: Wants= + After=


def placements(conf: Conf, service: Service) -> Tuple[Optional[str], ...]:
    """The hosts a service runs on; (None,) in a conf without hosts:."""
    return service.hosts if conf.multi_host else (None,)


def local_host(conf: Conf, requested: Optional[str] = None) -> Optional[str]:
    """The host to render for: ``requested``, else this machine by its hostname.

    A conf without hosts: runs every service wherever it is rendered (None).
    """
    if not conf.multi_host:
        if requested:
            raise UsageError(f"--host {requested}: this conf has no hosts: section; every service runs on every host")
        return None
    if requested:
        if requested not in conf.hosts:
            raise UsageError(f"--host {requested}: not in the conf's hosts: ({', '.join(sorted(conf.hosts))})")
        return requested
    names = {socket.gethostname(), socket.gethostname().split(".")[0], socket.getfqdn()}
    for name in names:
        if name in conf.hosts:
            return name
    raise UsageError(
        f"this machine ({socket.gethostname()}) is not in the conf's hosts: ({', '.join(sorted(conf.hosts))}); "
        "pass --host NAME"
    )


def plan(conf: Conf, host: Optional[str]) -> List[UnitPlan]:
    """The units ``host`` runs, with their dependencies resolved.

    Raises ConfigError for unresolvable dependencies and dependency cycles.
    """
    problems = check(conf)
    if problems:
        raise ConfigError(problems)
    plans = []
    for service in conf.services.values():
        if host in placements(conf, service):
            targets, after = _resolve(conf, service, host)
            plans.append(UnitPlan(service, host, systemd.unit_name(service.name), targets, after))
    return plans


def check(conf: Conf) -> List[Problem]:
    """Every problem of the graph as a whole: unresolvable dependencies, cycles."""
    problems: List[Problem] = []
    for service in conf.services.values():
        for dep in service.deps:
            if dep.service is not None:
                other = conf.services[dep.service]
                if not (other.health or other.listen):
                    problems.append(Problem(
                        f"depends on {other.name!r}, which has neither listen: nor health:, "
                        "so nothing can tell when it is ready", dep.mark))
    if not problems:
        problems.extend(_cycle_problems(conf))
    return _unique(problems)


def edges(conf: Conf, node: Node) -> Iterator[Tuple[Node, Dependency]]:
    """The nodes ``node`` waits for through its service: dependencies."""
    name, host = node
    for dep in conf.services[name].deps:
        if dep.service is None:
            continue
        target = conf.services[dep.service]
        where = placements(conf, target)
        for other in ([host] if host in where else where):
            yield (dep.service, other), dep


def _resolve(conf: Conf, service: Service, host: Optional[str]):
    """(probe targets, same-host units) of a service on a host; the conf is checked."""
    targets: List[Target] = []
    after: List[str] = []
    for dep in service.deps:
        if dep.target is not None:
            targets.append(dep.target)
            continue
        other = conf.services[dep.service]
        where = placements(conf, other)
        if host in where:
            after.append(systemd.unit_name(other.name))
            addresses = [(None, "localhost")]
        else:
            addresses = [(h, conf.hosts[h].reach) for h in where]
        for other_host, address in addresses:
            label = dep.name or (other.name if len(addresses) == 1 else f"{other.name}@{other_host}")
            targets.append(_readiness(other, address, label, dep.timeout))
    return tuple(dict.fromkeys(targets)), tuple(dict.fromkeys(after))


def _readiness(service: Service, address: str, label: str, timeout: Optional[float]) -> Target:
    """What tells that ``service`` at ``address`` is ready: its health URL, else its port."""
    if service.health:
        url_host = f"[{address}]" if ":" in address else address
        return Target("http", service.health.replace("{host}", url_host), name=label, timeout=timeout)
    return Target("tcp", join_host_port(address, service.listen), name=label, timeout=timeout)


def _cycle_problems(conf: Conf) -> List[Problem]:
    problems = []
    for cycle in find_cycles(conf):
        first = conf.services[cycle[0][0]]
        dep = next(d for n, d in edges(conf, cycle[0]) if n == cycle[1 % len(cycle)])
        path = " → ".join(node_label(conf, n) for n in cycle + [cycle[0]])
        problems.append(Problem(
            f"dependency cycle: {path}; after a power cut each would wait for the other forever",
            dep.mark or first.mark))
    return problems


def node_label(conf: Conf, node: Node) -> str:
    name, host = node
    return name if host is None else f"{name}@{host}"


def find_cycles(conf: Conf) -> List[List[Node]]:
    """One cycle (as a node path) per strongly connected component that has one.

    Iterative Tarjan, O(nodes + edges): a fleet of ten thousand services must
    not hit Python's recursion limit.
    """
    nodes = [(s.name, h) for s in conf.services.values() for h in placements(conf, s)]
    successors = {n: [m for m, _ in edges(conf, n)] for n in nodes}
    index: Dict[Node, int] = {}
    low: Dict[Node, int] = {}
    on_stack: Dict[Node, bool] = {}
    stack: List[Node] = []
    cycles: List[List[Node]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(successors[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack[child] = True
                    work.append((child, iter(successors[child])))
                    advanced = True
                    break
                if on_stack.get(child):
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in successors[node]:
                    cycles.append(_cycle_within(set(component), successors, node))
    return cycles


def _cycle_within(component: set, successors: Dict[Node, List[Node]], start: Node) -> List[Node]:
    """A simple cycle through ``start`` inside one strongly connected component (BFS)."""
    parent: Dict[Node, Optional[Node]] = {start: None}
    queue = [start]
    for node in queue:
        for child in successors[node]:
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return list(reversed(path))
            if child in component and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError("a strongly connected component without a cycle")


def _unique(problems: Sequence[Problem]) -> List[Problem]:
    return list(dict.fromkeys(problems))
