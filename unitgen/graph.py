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

import heapq
import socket
from dataclasses import dataclass, field, replace
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from unitgen_probe import Target
from unitgen_probe.targets import Group

from . import defaults, systemd
from .config import join_host_port
from .errors import ConfigError, Problem, UsageError
from .model import (CheckDependency, Conf, Dependency, GroupDependency, Need, Service, ServiceDependency, need_count,
                    wait_at_most)

# A node of the fleet graph: a service on a host (host None in a conf without hosts:).
Node = Tuple[str, Optional[str]]
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost", "localhost.localdomain"})


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
    groups: Tuple[Group, ...] = ()  # what the probe waits for ``need`` of: replicated services, any:/of: checks
    remote_groups: Tuple[Group, ...] = ()  # those with a member on another host: what `unitgen watch` watches
    slot: float = 0.0  # paced release: seconds its probe waits once ready (Graph.slots)
    wants: Tuple[str, ...] = ()  # same-host units of optional dependencies: Wants= only, never waited for

    @property
    def watched(self) -> bool:
        """`unitgen watch` acts on this service: its own health (on_unhealthy:),
        a remote dependency lost (on_dependency_loss:), or an optional one
        that answers after it started without it."""
        s = self.service
        loss = s.on_dependency_loss != "ignore" and bool(self.remote or self.remote_groups)
        return s.on_unhealthy != "ignore" or loss or bool(self.optional)

    @property
    def optional(self) -> "Tuple[Union[Target, Group], ...]":
        """The optional targets and groups its probe starts without after their bound."""
        return tuple(t for t in self.targets if t.wait_at_most is not None) + \
            tuple(g for g in self.groups if g.wait_at_most is not None)

    @property
    def all_targets(self) -> Tuple[Target, ...]:
        """Every target the probe checks, in groups or not."""
        return self.targets + tuple(t for g in self.groups for t in g.targets)


@dataclass(frozen=True)
class Edge:
    """``source`` waits for ``target``, checking it by ``kind`` (tcp or http).

    ``need`` 0: ``target`` must be ready itself. Else the edges of one ``dep``
    of ``source`` form a group, of which ``need`` targets must be ready: the
    copies of a replicated service, or an any:/of: group of checks."""

    source: Node
    target: Node
    kind: str
    dep: Dependency
    inferred: bool = False  # from a tcp:/http: dependency pointing at a service of the conf
    need: int = 0

    @property
    def wait_at_most(self) -> Optional[float]:
        """An optional edge's bound (its source starts without it after this long); None: required."""
        return wait_at_most(self.dep)


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
    slot: float = 0.0  # paced release: included in ``start``
    # Optional dependencies not ready within their wait_at_most: it starts without them (degraded).
    without: Tuple[Node, ...] = ()


@dataclass(frozen=True)
class Recovery:
    timings: Dict[Node, Timing]  # in an order where dependencies come first
    critical_path: List[Node]
    total: float
    down: Tuple[str, ...] = ()  # hosts that never come back
    # Services of the hosts that do come back that wait for ever, and why.
    stuck: Dict[Node, str] = field(default_factory=dict)

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
    return plans_by_host(conf, [host])[host]


def plans_by_host(conf: Conf, hosts: Sequence[Optional[str]]) -> Dict[Optional[str], List[UnitPlan]]:
    """plan() of each of ``hosts``, the graph built and checked once for all
    (check renders every host of a fleet: O(services), not O(hosts x services))."""
    graph = Graph(conf)
    problems = check(conf, graph)
    if problems:
        raise ConfigError(problems)
    here: Dict[Optional[str], List[Service]] = {host: [] for host in hosts}
    for service in conf.services.values():  # conf order, on each host
        for host in placements(conf, service):
            if host in here:
                here[host].append(service)
    slots = graph.slots()
    return {host: _plan(conf, graph, host, services, slots) for host, services in here.items()}


def _plan(conf: Conf, graph: "Graph", host: Optional[str], here: List[Service],
          slots: Dict[Node, float]) -> List[UnitPlan]:
    resolved = {s.name: _resolve(conf, s, host, graph) for s in here}
    upholds: Dict[str, List[str]] = {}
    for service in here:
        if service.on_dependency_loss != "ignore":
            for unit in resolved[service.name].binds:
                upholds.setdefault(unit, []).append(systemd.unit_name(service.name))
    plans = []
    for service in here:
        r = resolved[service.name]
        unit = systemd.unit_name(service.name)
        # A copy of a replicated service on this host is one of several: its loss is not the dependency's.
        binds_to = r.binds if service.on_dependency_loss != "ignore" else ()
        plans.append(UnitPlan(service, host, unit, tuple(r.targets), tuple(r.after), tuple(r.remote),
                              tuple(binds_to), tuple(upholds.get(unit, ())), tuple(r.groups),
                              tuple(r.remote_groups), slots.get((service.name, host), 0.0),
                              tuple(u for u in r.wants if u not in r.after)))
    return plans


def default_need(conf: Conf, dep: ServiceDependency) -> Need:
    """What a ``service:`` dependency needs when it does not say: the cluster's
    ``peers:`` need, else any one copy (replication exists so that the rest
    carries on when a host does not come back)."""
    other = conf.services[dep.service]
    if dep.need is not None:
        return dep.need
    return other.peers if other.peers is not None else "any"


def needed(conf: Conf, dep: Union[ServiceDependency, GroupDependency]) -> Tuple[int, int]:
    """(how many, of how many) a service:/any:/of: dependency needs."""
    if isinstance(dep, GroupDependency):
        return need_count(dep.need, len(dep.targets)), len(dep.targets)
    copies = len(placements(conf, conf.services[dep.service]))
    return need_count(default_need(conf, dep), copies), copies


def peer_edge(conf: Conf, source: str, target: str) -> bool:
    """Whether ``source`` waiting for ``target`` is a copy of a cluster waiting for
    its peers, which it never does (peers:)."""
    return source == target and conf.services[source].peers is not None


def check(conf: Conf, graph: "Optional[Graph]" = None) -> List[Problem]:
    """Every problem of the graph as a whole: a dependency on a service nothing
    can tell is ready, two services on one host:port, dependency cycles."""
    problems: List[Problem] = []
    for service in conf.services.values():
        for dep in service.deps:
            if isinstance(dep, ServiceDependency):
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


@dataclass
class _Resolved:
    targets: List[Target]
    groups: List[Group]
    after: List[str]
    remote: List[Target]
    remote_groups: List[Group]
    binds: List[str]
    wants: List[str] = field(default_factory=list)


def _resolve(conf: Conf, service: Service, host: Optional[str], graph: "Graph") -> "_Resolved":
    """What a service on a host waits for: probe targets (each on its own) and
    groups (need of them), same-host units, remote targets and groups, and the
    same-host units whose loss is its own (binds).

    Remote targets are those no unit of this host stands for: other hosts'
    services, and direct dependencies on anything else. A direct dependency
    that points at a service of this host (an inferred edge: Autoheal's
    ``host: 127.0.0.1, port: 80`` for its nginx) orders the units natively
    too, and the probe still checks it. A copy of a replicated service on
    this host is ordered natively as well, and counts in its group like any
    other copy. The conf is checked."""
    r = _Resolved([], [], [], [], [], [])
    for dep in service.deps:
        optional = wait_at_most(dep) is not None
        if isinstance(dep, CheckDependency):
            pointed = graph.pointed_at(dep.target, host)
            if pointed and all(peer_edge(conf, service.name, name) for name, _ in pointed):
                continue  # a peer of its cluster: copies never wait for each other
            r.targets.append(dep.target)
            here = [systemd.unit_name(name) for name, where in pointed if where == host]
            if optional:  # pulled in, never waited for by systemd nor lost: the probe bounds the wait
                r.wants.extend(here)
                continue
            r.after.extend(here)
            r.binds.extend(here)
            if not here:
                r.remote.append(dep.target)
            continue
        if isinstance(dep, GroupDependency):
            group = Group(_unique(dep.label, r.groups), dep.targets, need_count(dep.need, len(dep.targets)),
                          dep.wait_at_most)
            r.groups.append(group)
            for target in dep.targets:
                here = [systemd.unit_name(name) for name, where in graph.pointed_at(target, host) if where == host]
                (r.wants if optional else r.after).extend(here)
                if not here and not optional:
                    r.remote_groups.append(group)
            continue
        if peer_edge(conf, service.name, dep.service):
            continue
        other = conf.services[dep.service]
        where = placements(conf, other)
        if len(where) == 1:
            if host in where:
                unit = systemd.unit_name(other.name)
                if optional:
                    r.wants.append(unit)
                else:
                    r.after.append(unit)
                    r.binds.append(unit)
                r.targets.append(_readiness(other, "localhost", dep.name or other.name, dep.timeout, dep.wait_at_most))
            else:
                assert where[0] is not None  # another host: a conf with hosts:
                target = _readiness(other, conf.hosts[where[0]].reach, dep.name or other.name, dep.timeout,
                                    dep.wait_at_most)
                r.targets.append(target)
                if not optional:
                    r.remote.append(target)
            continue
        members = []
        for other_host in where:
            label = f"{other.name}@{other_host}"
            if other_host == host:
                (r.wants if optional else r.after).append(systemd.unit_name(other.name))
                members.append(_readiness(other, "localhost", label, dep.timeout))
            else:
                assert other_host is not None  # another host: a conf with hosts:
                members.append(_readiness(other, conf.hosts[other_host].reach, label, dep.timeout))
        group = Group(_unique(dep.name or other.name, r.groups), members, needed(conf, dep)[0], dep.wait_at_most)
        r.groups.append(group)
        if any(h != host for h in where) and not optional:
            r.remote_groups.append(group)
    r.targets = list(dict.fromkeys(r.targets))
    r.after = list(dict.fromkeys(r.after))
    r.binds = list(dict.fromkeys(r.binds))
    r.wants = list(dict.fromkeys(r.wants))
    r.remote = list(dict.fromkeys(r.remote))
    r.remote_groups = list(dict.fromkeys(r.remote_groups))
    for name in ("targets", "groups", "after", "remote", "remote_groups", "binds", "wants"):
        setattr(r, name, tuple(getattr(r, name)))
    return r


def _unique(label: str, groups: Sequence[Group]) -> str:
    """A group label no earlier group of the unit has (the probe names each group once)."""
    taken = {g.label for g in groups}
    candidate, n = label, 1
    while candidate in taken:
        n += 1
        candidate = f"{label} ({n})"
    return candidate


def _readiness(service: Service, address: str, label: str, timeout: Optional[float],
               bound: Optional[float] = None) -> Target:
    """What tells that ``service`` at ``address`` is ready: its health URL, else its port;
    ``bound``: an optional dependency's wait_at_most."""
    if service.health:
        url_host = f"[{address}]" if ":" in address else address
        return Target("http", service.health.replace("{host}", url_host), name=label, timeout=timeout,
                      wait_at_most=bound)
    assert service.listen is not None  # graph.check() refused a dependency on a service with neither
    return Target("tcp", join_host_port(address, service.listen), name=label, timeout=timeout, wait_at_most=bound)


def readiness_at(service: Service, address: str, label: str, timeout: Optional[float] = None) -> Target:
    """What tells that ``service`` at ``address`` is ready, as its dependents
    on another host check it: its health URL, else its listen port. It must
    have one of them."""
    return _readiness(service, address, label, timeout)


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
                for port in {p for p in (service.listen, health_port) if p is not None}:
                    self._served.setdefault((host, port), []).append(node)

    def _add_edges(self, node: Node) -> None:
        name, host = node
        for dep in self.conf.services[name].deps:
            if isinstance(dep, ServiceDependency):
                if peer_edge(self.conf, name, dep.service):
                    continue
                other = self.conf.services[dep.service]
                where = placements(self.conf, other)
                kind = "http" if other.health else "tcp"
                need = needed(self.conf, dep)[0] if len(where) > 1 else 0
                for target_host in where:
                    self.out[node].append(Edge(node, (dep.service, target_host), kind, dep, need=need))
                continue
            if isinstance(dep, GroupDependency):
                pointed = {t: [n for n in self.pointed_at(t, host) if not peer_edge(self.conf, name, n[0])]
                           for t in dep.targets}
                outside = [t for t, nodes in pointed.items() if not nodes]
                self.externals[node].extend(outside)
                # Checks outside the conf are taken as answering: they lower what the conf must provide.
                need = need_count(dep.need, len(dep.targets)) - len(outside)
                if need > 0:
                    for target, nodes in pointed.items():
                        for found in nodes:
                            self.out[node].append(Edge(node, found, target.kind, dep, inferred=True, need=need))
                continue
            reached = [n for n in self.pointed_at(dep.target, host) if not peer_edge(self.conf, name, n[0])]
            for found in reached:
                self.out[node].append(Edge(node, found, dep.target.kind, dep, inferred=True))
            if not reached and not any(n[0] == name for n in self.pointed_at(dep.target, host)):
                self.externals[node].append(dep.target)

    def slots(self) -> Dict[Node, float]:
        """Paced release: the seconds each dependent's probe waits once ready.

        The dependents of a service with ``accepts: R/s`` (every node with an
        edge to one of its copies, across the fleet) are ordered by a hash of
        their service and host, and the k-th gets the slot k/R: R a second,
        evenly. The order depends on nothing else, so a new dependent never
        reorders the others (those after it move by 1/R). A node that depends
        on several paced services waits the longest of its slots. O(edges)."""
        dependents: Dict[str, Dict[Node, None]] = {}
        for node, edges in self.out.items():
            for edge in edges:
                if self.conf.services[edge.target[0]].accepts and edge.target[0] != node[0]:
                    dependents.setdefault(edge.target[0], {})[node] = None
        slots: Dict[Node, float] = {}
        for name, nodes in dependents.items():
            rate = self.conf.services[name].accepts
            assert rate is not None
            for rank, node in enumerate(sorted(nodes, key=_slot_key)):
                slots[node] = max(slots.get(node, 0.0), rank / rate)
        return slots

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
            edge = next(e for e in self.out[cycle[0]] if e.target == cycle[1 % len(cycle)] and e.wait_at_most is None)
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
        # An optional edge never deadlocks: its source starts without it after its bound.
        successors = {n: [e.target for e in edges if e.wait_at_most is None] for n, edges in self.out.items()}
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

    def requirements(self, node: Node) -> List[Tuple[int, List[Node], Optional[float]]]:
        """What ``node`` waits for, as (need, nodes, wait_at_most): 1 of one node
        for a plain edge (that node itself), else need of a group's nodes; an
        optional one's bound, else None."""
        groups: Dict[Tuple[int, int], Tuple[int, List[Node], Optional[float]]] = {}
        plain: List[Tuple[int, List[Node], Optional[float]]] = []
        for edge in self.out[node]:
            if edge.need:
                key = (id(edge.dep), edge.need)
                groups.setdefault(key, (edge.need, [], edge.wait_at_most))[1].append(edge.target)
            else:
                plain.append((1, [edge.target], edge.wait_at_most))
        return plain + [(need, list(dict.fromkeys(nodes)), bound) for need, nodes, bound in groups.values()]

    def recovery(self, default_start_time: float = defaults.START_TIME, down: Sequence[str] = (),
                 up: Collection[Node] = ()) -> Recovery:
        """How the fleet comes back after a full power cut, every host up at
        t=0 but those of ``down``, which never come back.

        Each service starts when its probe notices the last of its dependencies
        ready (of a group, the ``need``-th copy to be ready), and is ready
        ``start_time`` later. An optional dependency counts at its
        wait_at_most if it is not noticed before (the service starts without
        it: ``Timing.without``), so it never holds a service longer. Noticing takes at most the probe's largest gap
        between attempts; a dependency ready only after the probe's deadline
        is noticed when the restarted unit probes again (deadline + RestartSec
        cycles). Dependencies outside the conf are taken as up. Waves: 1 for
        no dependency, else one more than the latest dependency it waited for.
        Nodes settle in the order they become ready (a heap), so that a group
        is met by its earliest copies: O((nodes + edges) log nodes).

        A service of a host that comes back but never starts (what it needs
        never is ready: hosts down, a need larger than the copies) is in
        ``stuck`` with the reason. A cycle raises ConfigError.

        ``up``: services that already run and answer (the board's view during
        a recovery): ready at t=0 whatever they need, so that ``total`` is
        what is left of the recovery from now.
        """
        from unitgen_probe.wait import MAX_GAP

        slots = self.slots()
        down_set = set(down)
        requirements = {n: self.requirements(n) for n in self.nodes}
        counts = {n: [0] * len(reqs) for n, reqs in requirements.items()}
        # (start, wave, waits_for) so far
        start_at: Dict[Node, Tuple[float, int, Optional[Node]]] = {n: (0.0, 1, None) for n in self.nodes}
        where_needed: Dict[Node, List[Tuple[Node, int]]] = {n: [] for n in self.nodes}
        for node, reqs in requirements.items():
            for i, (_, nodes, _) in enumerate(reqs):
                for target in nodes:
                    where_needed[target].append((node, i))
        missing = {n: sum(1 for need, _, _ in reqs if need > 0) for n, reqs in requirements.items()}
        # (at, order, node, requirement): a node ready at ``at`` (requirement -1), or the
        # bound of ``node``'s optional requirement passing: met then if not before
        heap: List[Tuple[float, int, Node, int]] = []
        order = {n: i for i, n in enumerate(self.nodes)}
        for node, reqs in requirements.items():
            for i, (_, _, bound) in enumerate(reqs):
                if bound is not None:
                    heapq.heappush(heap, (bound, order[node], node, i))
        without: Dict[Node, List[Node]] = {}
        timings: Dict[Node, Timing] = {}

        def schedule(node: Node) -> None:
            if node[1] in down_set:
                return
            service = self.conf.services[node[0]]
            start, wave, waits_for = start_at[node]
            slot = slots.get(node, 0.0)  # its probe waits its slot once what it needs is ready
            start += slot
            assumed = service.start_time is None
            start_time = default_start_time if service.start_time is None else service.start_time
            if node in up:
                start, slot, start_time = 0.0, 0.0, 0.0
            timings[node] = Timing(node, wave, start, start + start_time, start_time, assumed, waits_for, slot,
                                   tuple(without.get(node, ())))
            heapq.heappush(heap, (start + start_time, order[node], node, -1))

        up = frozenset(up)
        for node in self.nodes:
            if missing[node] == 0 or node in up:
                schedule(node)
        # A cluster (peers:) is ready only once its need of copies run: a copy that
        # runs before is held in ``running`` until then, and is ready with the last.
        quorum = {name: need_count(s.peers, len(placements(self.conf, s)))
                  for name, s in self.conf.services.items() if s.peers is not None}
        running: Dict[str, List[Node]] = {name: [] for name in quorum}
        formed: Dict[str, float] = {}
        settled: List[Node] = []
        settled_set: set = set()
        while heap:
            at, _, node, expired = heapq.heappop(heap)
            if expired >= 0:  # an optional requirement's bound: met now, without what it waited for
                need, nodes, _ = requirements[node][expired]
                if counts[node][expired] >= need or node in up:
                    continue  # met before its bound, or it runs already
                counts[node][expired] = need
                without.setdefault(node, []).extend(n for n in nodes if n not in settled_set)
                start, wave, waits_for = start_at[node]
                if at > start:
                    start, waits_for = at, None
                start_at[node] = (start, wave, waits_for)
                missing[node] -= 1
                if missing[node] == 0:
                    schedule(node)
                continue
            if node[0] in quorum and node[0] not in formed:
                running[node[0]].append(node)
                if len(running[node[0]]) < quorum[node[0]]:
                    continue
                formed[node[0]] = at
                for copy in running[node[0]][:-1]:
                    timings[copy] = replace(timings[copy], ready=at, waits_for=node)
                    heapq.heappush(heap, (at, order[copy], copy, -1))
            settled.append(node)
            settled_set.add(node)
            ready = timings[node]
            for dependent, i in where_needed[node]:
                need, _, bound = requirements[dependent][i]
                counts[dependent][i] += 1
                if counts[dependent][i] != need:
                    continue  # not yet met, or met already by earlier copies (or by its bound)
                service = self.conf.services[dependent[0]]
                noticed = _noticed_at(ready.ready, service, MAX_GAP)
                if bound is not None and noticed > bound:  # noticed after its bound: it started without it
                    noticed = bound
                    without.setdefault(dependent, []).append(node)
                start, wave, waits_for = start_at[dependent]
                if waits_for is None or noticed > start:
                    start, waits_for = noticed, node
                start_at[dependent] = (start, max(wave, ready.wave + 1), waits_for)
                missing[dependent] -= 1
                if missing[dependent] == 0 and dependent not in up:
                    schedule(dependent)
        stuck: Dict[Node, str] = {}
        done = set(settled)
        if len(done) + sum(n[1] in down_set for n in self.nodes) != len(self.nodes):
            cycles = self.cycle_problems()
            if cycles:
                raise ConfigError(cycles)
            for node in self.nodes:
                if node in done or node[1] in down_set:
                    continue
                if node in timings:  # it runs, but its cluster never has its need of copies
                    copies = [(node[0], h) for h in placements(self.conf, self.conf.services[node[0]])]
                    stuck[node] = "runs, but its cluster is never ready: " + self._why_stuck(
                        node, [(quorum[node[0]], copies)], set(running[node[0]]), down_set).replace(" back (", " up (")
                else:
                    stuck[node] = self._why_stuck(node, requirements[node], done, down_set)
        # Dependencies first: by wave (a dependency's is lower), then in conf order.
        timings = {n: timings[n] for n in sorted(settled, key=lambda n: (timings[n].wave, order[n]))}
        last = max(timings.values(), key=lambda t: t.ready, default=None)
        path: List[Node] = []
        while last is not None:
            path.append(last.node)
            last = timings[last.waits_for] if last.waits_for else None
        total = timings[path[0]].ready if path else 0.0
        return Recovery(timings, list(reversed(path)), total, tuple(down), stuck)

    def _why_stuck(self, node: Node, requirements, timings, down: set) -> str:
        """Why ``node`` never starts: ``needs 2 of the 3 copies of etcd, 1 comes back
        (etcd@h2: host down, etcd@h3: host down)``; ``timings``: the nodes that are ready."""
        reasons = []
        for need, nodes, *_ in requirements:
            back = sum(n in timings for n in nodes)
            if back >= need:
                continue
            names = {n[0] for n in nodes}
            what = (f"the {len(nodes)} copies of {nodes[0][0]}" if len(names) == 1 and len(nodes) > 1
                    else node_label(nodes[0]) if len(nodes) == 1 else "[" + ", ".join(map(node_label, nodes)) + "]")
            if need > len(nodes):
                reasons.append(f"needs {need} of {what}: can never be met")
                continue
            never = ", ".join(f"{node_label(n)}: {'host down' if n[1] in down else 'never ready'}"
                              for n in nodes if n not in timings)
            head = f"needs {what}" if len(nodes) == 1 else \
                f"needs {need} of {what}, {back} come{'s' if back == 1 else ''} back"
            reasons.append(f"{head} ({never})")
        return "; ".join(reasons)


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


def _cycle_within(component: set, successors: Mapping[Node, Sequence[Node]], start: Node) -> List[Node]:
    """A simple cycle through ``start`` inside one strongly connected component (BFS)."""
    parent: Dict[Node, Optional[Node]] = {start: None}
    queue = [start]
    for node in queue:
        for child in successors[node]:
            if child == start:
                path = [node]
                step = parent[node]
                while step is not None:
                    path.append(step)
                    step = parent[step]
                return list(reversed(path))
            if child in component and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError("a strongly connected component without a cycle")


def _slot_key(node: Node) -> bytes:
    """A dependent's place in a paced service's order: a hash of its service
    and host, the same on every host and every render."""
    import hashlib

    return hashlib.sha256(f"{node[0]}@{node[1] or ''}".encode()).digest()
