"""The conf as a graph: where services run, what each waits for, cycles, and
how a fleet comes back after a full power cut.

    plan(conf, host) -> [UnitPlan]     # what one host renders
    check(conf) -> [Problem]           # what would break a power restore
    Graph(conf).recovery()             # waves, critical path, estimated time

Nodes are services on hosts ("api@app1"; host None in a conf without hosts:).
A ``service: X`` dependency is resolved for each host the dependent runs on:
* X runs on the same host: systemd orders them natively (Wants= + After=),
  and the probe also waits for X's readiness (its health URL, else its listen
  port), because After= orders start-up only, not readiness;
* X runs elsewhere: the probe waits for X's health URL, with ``{host}`` filled
  in, else for X's listen port at its host's address.

A direct ``tcp:``/``http:`` dependency that points at a service of the conf
is an edge too ("inferred"): at its host's name or address, or at loopback on
the same host, either on the service's listen (or health) port or, as
Autoheal confs have no listen:, named after the service. Autoheal confs spell
every dependency that way, and their cycles are cycles all the same. An
inferred edge to a service of the same host also becomes Wants= + After=,
as a ``service:`` dependency does; the probe keeps checking what the conf says.
A dependency cycle would deadlock a power restore (each side waits for the
other forever), so any cycle is an error, printed as its path across hosts.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from unitgen_probe import Target

from . import systemd
from .config import join_host_port
from .errors import ConfigError, Problem, UsageError
from .model import CheckDependency, Conf, Dependency, Service

# A node of the fleet graph: a service on a host (host None in a conf without hosts:).
Node = Tuple[str, Optional[str]]
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost", "localhost.localdomain"})
DEFAULT_START_TIME = 1.0  # seconds from exec to ready, for a service without start_time:


@dataclass(frozen=True)
class UnitPlan:
    """Everything the renderer needs for one service on one host."""

    service: Service
    host: Optional[str]
    unit: str
    targets: Tuple[Target, ...]  # what the ExecStartPre= probe waits for
    after: Tuple[str, ...]  # units on the same host: Wants= + After=
    remote: Tuple[Target, ...] = ()  # targets not on this host as units: what `unitgen watch` watches
    binds_to: Tuple[str, ...] = ()  # same-host units whose loss stops this one (on_dependency_loss)
    upholds: Tuple[str, ...] = ()  # same-host units this one starts again once it is back


@dataclass(frozen=True)
class Edge:
    """``source`` waits for ``target``, checking it by ``kind`` (tcp or http)."""

    source: Node
    target: Node
    kind: str
    dep: Dependency
    inferred: bool = False  # from a tcp:/http: dependency pointing at a service of the conf


@dataclass(frozen=True)
class Timing:
    """When a node comes back in the recovery estimate (seconds after power-on)."""

    node: Node
    wave: int
    start: float  # its probe lets it start
    ready: float  # it answers its dependents
    start_time: float
    assumed: bool  # start_time was not given
    waits_for: Optional[Node]  # the dependency that decided ``start``


@dataclass(frozen=True)
class Recovery:
    timings: Dict[Node, Timing]  # in an order where dependencies come first
    critical_path: List[Node]
    total: float

    def waves(self) -> List[List[Node]]:
        waves: List[List[Node]] = []
        for timing in self.timings.values():
            while len(waves) < timing.wave:
                waves.append([])
            waves[timing.wave - 1].append(timing.node)
        return waves


def placements(conf: Conf, service: Service) -> Tuple[Optional[str], ...]:
    """The hosts a service runs on; (None,) in a conf without hosts:."""
    return service.hosts if conf.multi_host else (None,)


def node_label(node: Node) -> str:
    name, host = node
    return name if host is None else f"{name}@{host}"


def local_host(conf: Conf, requested: Optional[str] = None, dns: bool = True,
               hint: str = "; pass --host NAME") -> Optional[str]:
    """The host to render for: ``requested``, else this machine by its hostname,
    the hostname's first label, then (``dns``) its fully qualified name, which
    asks DNS; a generator, running before the network, says dns=False.

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
    name = socket.gethostname()
    for candidate in (name, name.split(".")[0]):
        if candidate in conf.hosts:
            return candidate
    if dns and socket.getfqdn() in conf.hosts:
        return socket.getfqdn()
    raise UsageError(f"this machine ({name}) is not in the conf's hosts: ({', '.join(sorted(conf.hosts))}){hint}")


def plan(conf: Conf, host: Optional[str]) -> List[UnitPlan]:
    """The units ``host`` runs, with their dependencies resolved.

    Raises ConfigError for unresolvable dependencies and dependency cycles.
    """
    graph = Graph(conf)
    problems = check(conf, graph)
    if problems:
        raise ConfigError(problems)
    here = [s for s in conf.services.values() if host in placements(conf, s)]
    resolved = {s.name: _resolve(conf, s, host, graph) for s in here}
    upholds: Dict[str, List[str]] = {}
    for service in here:
        if service.on_dependency_loss != "ignore":
            for unit in resolved[service.name][1]:
                upholds.setdefault(unit, []).append(systemd.unit_name(service.name))
    plans = []
    for service in here:
        targets, after, remote = resolved[service.name]
        unit = systemd.unit_name(service.name)
        binds_to = after if service.on_dependency_loss != "ignore" else ()
        plans.append(UnitPlan(service, host, unit, targets, after, remote, binds_to, tuple(upholds.get(unit, ()))))
    return plans


def check(conf: Conf, graph: "Optional[Graph]" = None) -> List[Problem]:
    """Every problem of the graph as a whole: a dependency on a service nothing
    can tell is ready, two services on one host:port, dependency cycles."""
    problems: List[Problem] = []
    for service in conf.services.values():
        for dep in service.deps:
            if not isinstance(dep, CheckDependency):
                other = conf.services[dep.service]
                if not (other.health or other.listen):
                    problems.append(Problem(
                        f"depends on {other.name!r}, which has neither listen: nor health:, "
                        "so nothing can tell when it is ready", dep.mark))
    graph = graph or Graph(conf)
    problems.extend(graph.port_clashes())
    if not problems:
        problems.extend(graph.cycle_problems())
    return list(dict.fromkeys(problems))


def _resolve(conf: Conf, service: Service, host: Optional[str], graph: "Graph"):
    """(probe targets, same-host units, remote targets) of a service on a host.

    Remote targets are those no unit of this host stands for: other hosts'
    services, and direct dependencies on anything else. A direct dependency
    that points at a service of this host (an inferred edge: Autoheal's
    ``host: 127.0.0.1, port: 80`` for its nginx) orders the units natively
    too, and the probe still checks it. The conf is checked."""
    targets: List[Target] = []
    after: List[str] = []
    remote: List[Target] = []
    for dep in service.deps:
        if isinstance(dep, CheckDependency):
            targets.append(dep.target)
            here = [name for name, where in graph.pointed_at(dep.target, host) if where == host]
            after.extend(systemd.unit_name(name) for name in here)
            if not here:
                remote.append(dep.target)
            continue
        other = conf.services[dep.service]
        where = placements(conf, other)
        if host in where:
            after.append(systemd.unit_name(other.name))
            targets.append(_readiness(other, "localhost", dep.name or other.name, dep.timeout))
            continue
        for other_host in where:
            label = dep.name or (other.name if len(where) == 1 else f"{other.name}@{other_host}")
            target = _readiness(other, conf.hosts[other_host].reach, label, dep.timeout)
            targets.append(target)
            remote.append(target)
    return tuple(dict.fromkeys(targets)), tuple(dict.fromkeys(after)), tuple(dict.fromkeys(remote))


def _readiness(service: Service, address: str, label: str, timeout: Optional[float]) -> Target:
    """What tells that ``service`` at ``address`` is ready: its health URL, else its port."""
    if service.health:
        url_host = f"[{address}]" if ":" in address else address
        return Target("http", service.health.replace("{host}", url_host), name=label, timeout=timeout)
    return Target("tcp", join_host_port(address, service.listen), name=label, timeout=timeout)


def own_readiness(service: Service) -> Optional[Target]:
    """What tells, on its own host, that ``service`` is ready; None without listen: or health:."""
    if not (service.health or service.listen):
        return None
    return _readiness(service, "127.0.0.1", service.name, None)


class Graph:
    """The fleet: nodes, the edges between them, and dependencies outside the conf.

    Built once per conf in O(services + dependencies).
    """

    def __init__(self, conf: Conf):
        self.conf = conf
        self.nodes: List[Node] = [(s.name, h) for s in conf.services.values() for h in placements(conf, s)]
        self.out: Dict[Node, List[Edge]] = {n: [] for n in self.nodes}
        self.externals: Dict[Node, List[Target]] = {n: [] for n in self.nodes}
        self._listeners: Dict[Tuple[Optional[str], int], List[Node]] = {}
        self._served: Dict[Tuple[Optional[str], int], List[Node]] = {}
        self._index_ports()
        self._host_of = {}
        for name, host in conf.hosts.items():
            self._host_of[name.lower()] = name
            if host.address:
                self._host_of[host.address.lower()] = name
        for node in self.nodes:
            self._add_edges(node)

    # -- building ----------------------------------------------------------------

    def _index_ports(self) -> None:
        for service in self.conf.services.values():
            health_port = _url_port(service.health) if service.health else None
            for host in placements(self.conf, service):
                node = (service.name, host)
                if service.listen:
                    self._listeners.setdefault((host, service.listen), []).append(node)
                for port in {service.listen, health_port} - {None}:
                    self._served.setdefault((host, port), []).append(node)

    def _add_edges(self, node: Node) -> None:
        name, host = node
        for dep in self.conf.services[name].deps:
            if not isinstance(dep, CheckDependency):
                other = self.conf.services[dep.service]
                where = placements(self.conf, other)
                kind = "http" if other.health else "tcp"
                for target_host in ([host] if host in where else where):
                    self.out[node].append(Edge(node, (dep.service, target_host), kind, dep))
                continue
            pointed = self.pointed_at(dep.target, host)
            for target in pointed:
                self.out[node].append(Edge(node, target, dep.target.kind, dep, inferred=True))
            if not pointed:
                self.externals[node].append(dep.target)

    def pointed_at(self, target: Target, source_host: Optional[str]) -> List[Node]:
        """The services of the conf a tcp/http target reaches, if any."""
        if target.kind == "tcp":
            address, port = target.address
        elif target.kind == "http":
            address, port = target.address.hostname or "", _default_port(target.address)
        else:
            return []
        address = address.lower()
        if address in LOOPBACK:
            host = source_host
        elif address in self._host_of:
            host = self._host_of[address]
        else:
            return []
        served = self._served.get((host, port))
        if served:
            return list(served)
        # An Autoheal conf has no listen:, but names the dependency after the service.
        named = self.conf.services.get(target.name or "")
        return [(named.name, host)] if named and host in placements(self.conf, named) else []

    # -- questions ---------------------------------------------------------------

    def port_clashes(self) -> List[Problem]:
        problems = []
        for (host, port), nodes in self._listeners.items():
            if len(nodes) > 1:
                names = " and ".join(repr(name) for name, _ in nodes)
                where = f" on {host}" if host else ""
                second = self.conf.services[nodes[1][0]]
                problems.append(Problem(f"{names} both listen on port {port}{where}", second.mark))
        return problems

    def cycle_problems(self) -> List[Problem]:
        problems = []
        for cycle in self.find_cycles():
            edge = next(e for e in self.out[cycle[0]] if e.target == cycle[1 % len(cycle)])
            path = " → ".join(node_label(n) for n in cycle + [cycle[0]])
            problems.append(Problem(
                f"dependency cycle: {path}; after a power cut each would wait for the other forever",
                edge.dep.mark or self.conf.services[cycle[0][0]].mark))
        return problems

    def find_cycles(self) -> List[List[Node]]:
        """One cycle (as a node path) per strongly connected component that has one.

        Iterative Tarjan, O(nodes + edges): a fleet of ten thousand services
        must not hit Python's recursion limit.
        """
        successors = {n: [e.target for e in edges] for n, edges in self.out.items()}
        index: Dict[Node, int] = {}
        low: Dict[Node, int] = {}
        on_stack: Dict[Node, bool] = {}
        stack: List[Node] = []
        cycles: List[List[Node]] = []
        for root in self.nodes:
            if root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack[root] = True
            work = [(root, iter(successors[root]))]
            while work:
                node, children = work[-1]
                for child in children:
                    if child not in index:
                        index[child] = low[child] = len(index)
                        stack.append(child)
                        on_stack[child] = True
                        work.append((child, iter(successors[child])))
                        break
                    if on_stack.get(child):
                        low[node] = min(low[node], index[child])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        component = set()
                        while True:
                            member = stack.pop()
                            on_stack[member] = False
                            component.add(member)
                            if member == node:
                                break
                        if len(component) > 1 or node in successors[node]:
                            cycles.append(_cycle_within(component, successors, node))
        return cycles

    def recovery(self, default_start_time: float = DEFAULT_START_TIME) -> Recovery:
        """How the fleet comes back after a full power cut, every host up at t=0.

        Each service starts when its probe notices the last of its dependencies
        ready, and is ready ``start_time`` later. Noticing takes at most the
        probe's largest gap between attempts; a dependency ready only after the
        probe's deadline is noticed when the restarted unit probes again
        (deadline + RestartSec cycles). Dependencies outside the conf are taken
        as up. Waves: 1 for no dependency, else one more than the latest
        dependency's wave. O(nodes + edges), dependencies first (Kahn).
        """
        from unitgen_probe.wait import MAX_GAP

        waiting = {n: len(self.out[n]) for n in self.nodes}
        dependents: Dict[Node, List[Node]] = {n: [] for n in self.nodes}
        for node, edges in self.out.items():
            for edge in edges:
                dependents[edge.target].append(node)
        ready_queue = [n for n in self.nodes if waiting[n] == 0]
        timings: Dict[Node, Timing] = {}
        for node in ready_queue:  # the queue grows as nodes are settled
            service = self.conf.services[node[0]]
            wave, start, waits_for = 1, 0.0, None
            for edge in self.out[node]:
                dep = timings[edge.target]
                wave = max(wave, dep.wave + 1)
                noticed = _noticed_at(dep.ready, service, MAX_GAP)
                if waits_for is None or noticed > start:
                    start, waits_for = noticed, edge.target
            assumed = service.start_time is None
            start_time = default_start_time if assumed else service.start_time
            timings[node] = Timing(node, wave, start, start + start_time, start_time, assumed, waits_for)
            for dependent in dependents[node]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    ready_queue.append(dependent)
        if len(timings) != len(self.nodes):
            raise ConfigError(self.cycle_problems())
        last = max(timings.values(), key=lambda t: t.ready, default=None)
        path: List[Node] = []
        while last is not None:
            path.append(last.node)
            last = timings[last.waits_for] if last.waits_for else None
        total = timings[path[0]].ready if path else 0.0
        return Recovery(timings, list(reversed(path)), total)


def _noticed_at(ready: float, service: Service, gap: float) -> float:
    """When ``service``'s probe, started at t=0, notices a dependency ready at ``ready``."""
    deadline, period = service.probe.deadline, service.probe.deadline + service.restart_sec
    cycles, offset = divmod(ready, period)
    if offset <= deadline:
        return ready + gap
    return (cycles + 1) * period  # the probe was between runs: the next run's first attempt


def _default_port(url) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _url_port(url: str) -> int:
    from urllib.parse import urlsplit

    return _default_port(urlsplit(url.replace("{host}", "localhost")))


def _cycle_within(component: set, successors: Dict[Node, Sequence[Node]], start: Node) -> List[Node]:
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
