"""The fleet recovery board: every service's readiness across the fleet, seen
from one machine that can reach it, with nothing installed on the hosts.

    board = Board(conf, in_flight=256, timeout=1.0, ssh=False)
    freeze()                        # a process that keeps a board: see freeze()
    document = board.refresh()      # one full round of checks: the document below

Each service on each host (a graph node, ``service@host``; ``service`` alone
in a conf without hosts:) is checked as its dependents' probes check it, with
the probe's own ``unitgen_probe.check``: its health URL, else its listen port,
at its host's address. A service with neither is checked as its dependents
check it (a tcp:/http: dependency that points at it, as Autoheal confs write
them); with none of these, ``--ssh`` asks systemd whether its unit is active,
and without it the service is "unknown" (not counted). At most ``in_flight``
checks run at once (threads), each bounded by ``timeout``.

States (one per service@host):

* ``ready``: its check answers;
* ``waiting``: down while something it needs is down (a replicated
  dependency: while fewer than its need of copies answer);
* ``root-cause``: down while everything it needs answers, or it needs
  nothing: where to look first;
* ``unknown``: nothing tells its readiness from here (see above).

The Board keeps history across refreshes: when it first saw each service in
its state, when one became ready, when an outage began (``down_since``: the
first refresh that saw a service not ready since all were last ready).

The document (one per refresh; ``unitgen board --json`` prints exactly this,
one line per refresh). The page (``--serve``) reads it too; change it only by
adding fields::

    {"version": 1, "time": <unix float>, "ready": <int>, "total": <int>, "all_ready": <bool>,
     "unknown": <int: services in state unknown, not in total>,
     "down_since": <unix float|null: start of the outage this board saw, null if it saw none>,
     "estimate_left": <seconds|null: the plan's estimate of what is left, every service not
                       ready starting now; 0 when all are ready>,
     "root_causes": ["<id>", ...],
     "hosts": [{"name": "h1", "address": "10.0.0.1",
                "ssh": <null: not asked (no --ssh, or nothing of it down) | "ok" | why it could not be>}, ...],
     "waves": [{"wave": 1, "ready": 3, "total": 4}, ...],       # unitgen plan's waves, from 1
     "services": [{"id": "db@h1", "service": "db", "host": "h1",
                   "state": "ready"|"down"|"waiting"|"root-cause"|"unknown",
                   "since": <unix float: when the board saw it enter this state>,
                   "ready_at": <unix float|null: when the board saw it become ready;
                                null while not ready, or ready since the board's first round>,
                   "wave": <int>,
                   "needs": ["<id>", ...],       # what it depends on (replicated: every copy)
                   "waiting_on": ["<id>", ...],  # those of needs that hold it back: not ready, in a
                                                 # requirement not met (a group short of its need)
                   "check": "<what is checked, credentials removed: http://10.0.0.1:8080/health>",
                   "detail": "<the check's reason: connection refused (port closed), HTTP status 503>",
                   "status_line": <str|null: its unit's STATUS= (--ssh), control characters escaped>,
                   "status_source": "ssh"|"inferred",
                   "unit_state": <str|null: "activating (start-pre)" (--ssh)>,
                   "replicas": {"ready": 2, "of": 3} | null,   # a replicated service's own copies
                   "groups": [{"name": "kv", "need": 2, "of": 3, "ready": 1, "ids": ["kv@h1", ...]}, ...]
                                 # what it needs N of (a replicated service, an any:/of: group)
                  }, ...]}

``down`` is in the vocabulary for the page; every service that is not ready
is ``waiting`` or ``root-cause`` here. ``graph_ids(graph)`` maps the node ids
of ``unitgen graph`` (dot, svg: a node's ``<title>``) to these ids.
"""

from __future__ import annotations

import gc
import resource
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from unitgen_probe import Result, Target, check
from unitgen_probe.checks import check_of, check_tcp_many
from unitgen_probe.net import is_address

from . import defaults, systemd
from . import graph as fleet
from .config import join_host_port
from .errors import ConfigError, one_line
from .interrupt import ctrl_c
from .graph import Edge, Graph, Node, node_label, placements
from .model import CheckDependency, Conf, GroupDependency

VERSION = 1
STATES = ("ready", "down", "waiting", "root-cause", "unknown")
SSH_TIMEOUT = 10.0  # seconds for one host's systemctl show over ssh
SSH_OUTPUT_LIMIT = 1 << 20  # bytes read from one host's ssh: a hostile host cannot fill our memory
SSH_IN_FLIGHT = 32
# The operator's ssh, never asking anything (no password prompt in the middle of a board).
SSH_COMMAND: Tuple[str, ...] = ("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5")


def ssh_command(ssh_config: Optional[str] = None) -> Tuple[str, ...]:
    """The ssh argv prefix: the operator's own config, or ``-F ssh_config`` (--ssh-config)."""
    return SSH_COMMAND + (("-F", ssh_config) if ssh_config else ())


STATUS_LIMIT = 300  # characters of a STATUS= line kept
ESTIMATE_CHEAP = 0.05  # seconds: an estimate this cheap is computed at every change
ESTIMATE_SHARE = 10  # else at most once per this many times its cost


def node_id(node: Node) -> str:
    """A node's id on the board: ``service@host`` (``service`` without hosts:)."""
    return node_label(node)


def graph_ids(graph: Graph) -> Dict[str, str]:
    """{id of a node in ``unitgen graph``'s dot/svg (its ``<title>``): board id},
    for every service node; a replicated service's extra node (the hexagon)
    maps to the service's name."""
    from .diagram import layout_ids

    return layout_ids(graph)


def incoming(graph: Graph) -> Dict[Node, List[Edge]]:
    """{node: the edges that point at it}."""
    into: Dict[Node, List[Edge]] = {}
    for edges in graph.out.values():
        for edge in edges:
            into.setdefault(edge.target, []).append(edge)
    return into


def readiness(conf: Conf, graph: Graph, node: Node,
              into: Optional[Dict[Node, List[Edge]]] = None) -> Optional[Target]:
    """What tells from outside its host that ``node`` is ready: its health URL,
    else its listen port, at its host's address; else what a dependent checks
    of it (a tcp:/http: dependency pointing at it, Autoheal's way); None if
    nothing does. ``into``: ``incoming(graph)``, computed once for many nodes."""
    name, host = node
    service = conf.services[name]
    reach = conf.hosts[host].reach if host is not None else "localhost"
    if service.health or service.listen:
        return fleet.readiness_at(service, reach, node_id(node))
    for edge in (into if into is not None else incoming(graph)).get(node, ()):
        if isinstance(edge.dep, (CheckDependency, GroupDependency)):
            targets = [edge.dep.target] if isinstance(edge.dep, CheckDependency) else list(edge.dep.targets)
            for target in targets:
                if node not in graph.pointed_at(target, edge.source[1]):
                    continue
                address = target.address.hostname if target.kind == "http" else target.address[0]
                if (address or "").lower() not in fleet.LOOPBACK:
                    return Target(target.kind, target.spec, name=node_id(node), status=target.status,
                                  body=target.body, ca_file=target.ca_file, insecure=target.insecure)
                # Checked at loopback by a dependent on its host: its port, at its host's address.
                port = target.address[1] if target.kind == "tcp" else fleet._default_port(target.address)
                return Target("tcp", join_host_port(reach, port), name=node_id(node))
    return None


def check_all(targets: Sequence[Target], in_flight: int, timeout: float,
              stop: Optional[threading.Event] = None) -> List[Result]:
    """One attempt at each target with the probe's own code, at most
    ``in_flight`` at once, each bounded by ``timeout``; results in target order.

    tcp targets at an IP address (most of a fleet's conf) are connected to
    from this thread in one poll loop (``unitgen_probe.checks.check_tcp_many``);
    every other target gets ``unitgen_probe.check`` on a thread (daemon
    threads: an interrupted round does not hold the process), the two
    sharing the bound."""
    fast = [i for i, t in enumerate(targets) if t.kind == "tcp" and is_address(t.address[0])]
    if not fast:
        return _check_threads(targets, in_flight, timeout, stop)
    others = [i for i, t in enumerate(targets) if not (t.kind == "tcp" and is_address(t.address[0]))]
    share = min(len(others), in_flight // 2) if others else 0
    slow: Dict[int, Result] = {}
    thread = None
    if others:
        def run_others() -> None:
            slow.update(zip(others, _check_threads([targets[i] for i in others], max(1, share), timeout, stop)))
        thread = threading.Thread(target=run_others, daemon=True)
        thread.start()
    results = dict(zip(fast, check_tcp_many([targets[i] for i in fast], timeout, max(1, in_flight - share), stop)))
    if thread is not None:
        while thread.is_alive():
            thread.join(0.1)  # Ctrl-C stays prompt
    results.update(slow)
    return [results[i] for i in range(len(targets))]


def _check_threads(targets: Sequence[Target], in_flight: int, timeout: float,
                   stop: Optional[threading.Event] = None) -> List[Result]:
    """``unitgen_probe.check`` of each target, on at most ``in_flight`` threads."""
    results: List[Optional[Result]] = [None] * len(targets)
    if not targets:
        return []
    for kind in {t.kind for t in targets}:
        check_of(kind)  # import each kind's code on the main thread (see check_of)
    jobs = iter(range(len(targets)))
    lock = threading.Lock()
    done = threading.Event()
    left = [min(in_flight, len(targets))]

    def work() -> None:
        try:
            while stop is None or not stop.is_set():
                with lock:
                    i = next(jobs, None)
                if i is None:
                    return
                results[i] = check(targets[i], timeout)
        finally:
            with lock:
                left[0] -= 1
                if not left[0]:
                    done.set()

    for _ in range(left[0]):
        threading.Thread(target=work, daemon=True).start()
    done.wait()
    return [r if r is not None else Result(False, "not checked: interrupted", 0.0) for r in results]


def fd_bound(in_flight: int) -> int:
    """``in_flight`` lowered to what the file-descriptor limit allows (a check
    holds up to two descriptors), keeping 64 for the rest of the process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return in_flight
    return max(1, min(in_flight, (soft - 64) // 2))


@dataclass
class _Seen:
    state: str
    since: float
    ready_at: Optional[float] = None


@dataclass(frozen=True)
class UnitSeen:
    """What systemd said of a unit over ssh (every text escaped)."""

    active: str
    sub: str
    status: str


class Board:
    """The fleet's readiness, refreshed on demand, with the history of what it saw."""

    def __init__(self, conf: Conf, *, in_flight: int = defaults.BOARD_IN_FLIGHT,
                 timeout: float = defaults.BOARD_TIMEOUT, ssh: bool = False,
                 clock: Callable[[], float] = time.time,
                 ssh_command: Sequence[str] = SSH_COMMAND):
        self.conf = conf
        self.graph = Graph(conf)
        problems = fleet.check(conf, self.graph)
        if problems:
            raise ConfigError(problems)
        self.in_flight = fd_bound(max(1, in_flight))
        self.timeout = timeout
        self.ssh = ssh
        self.ssh_command = tuple(ssh_command)
        self.clock = clock
        self.nodes: List[Node] = list(self.graph.nodes)
        self.ids = {node: node_id(node) for node in self.nodes}
        into = incoming(self.graph)
        self.targets = {node: readiness(conf, self.graph, node, into) for node in self.nodes}
        self.waves = {t.node: t.wave for t in self.graph.recovery().timings.values()}
        self.requirements = {node: self.graph.requirements(node) for node in self.nodes}
        self.needs = {node: list(dict.fromkeys(e.target for e in self.graph.out[node])) for node in self.nodes}
        self.copies = {name: placements(conf, s) for name, s in conf.services.items()}
        self.seen: Dict[Node, _Seen] = {}
        self.down_since: Optional[float] = None
        self.rounds = 0
        self._estimate: Tuple[Optional[frozenset], Optional[float], float, float] = (None, None, 0.0, 0.0)
        self.stop = threading.Event()

    # -- one round -------------------------------------------------------------------

    def refresh(self) -> Dict[str, Any]:
        """Check every service once and return the document (module docstring)."""
        checked = [n for n in self.nodes if self.targets[n] is not None]
        results = dict(zip(checked, check_all([self.targets[n] for n in checked],  # type: ignore[misc]
                                              self.in_flight, self.timeout, self.stop)))
        units, host_ssh = self._ask_systemd(results) if self.ssh else ({}, {})
        now = self.clock()
        ready: Dict[Node, Optional[bool]] = {}
        for node in self.nodes:
            if node in results:
                ready[node] = results[node].ok
            elif node in units:
                ready[node] = units[node].active == "active"
            else:
                ready[node] = None
        states: Dict[Node, Tuple[str, List[Node]]] = {n: self._state(n, ready) for n in self.nodes}
        for node, (state, _) in states.items():
            seen = self.seen.get(node)
            if seen is None:
                self.seen[node] = _Seen(state, now)
            elif seen.state != state:
                seen.state, seen.since = state, now
                if state == "ready":
                    seen.ready_at = now
        counted = [n for n in self.nodes if ready[n] is not None]
        all_ready = all(ready[n] for n in counted)
        if not all_ready and (self.down_since is None or self._was_all_ready):
            self.down_since = now  # an outage begins (the first, or after all were ready)
        self._was_all_ready = all_ready
        self.rounds += 1
        return self._document(now, ready, states, results, units, host_ssh, counted, all_ready)

    _was_all_ready = False

    def _state(self, node: Node, ready: Dict[Node, Optional[bool]]) -> Tuple[str, List[Node]]:
        """(state, what holds it back)."""
        if ready[node] is None:
            return "unknown", []
        if ready[node]:
            return "ready", []
        holding: List[Node] = []
        for need, nodes, bound in self.requirements[node]:
            if bound is not None:
                continue  # optional: it starts without it after its bound
            # "unknown" is not known to be down: it holds nothing back.
            if sum(ready[n] is not False for n in nodes) < need:
                holding.extend(n for n in nodes if ready[n] is False)
        return ("waiting" if holding else "root-cause"), list(dict.fromkeys(holding))

    def estimate_left(self, up: frozenset) -> Optional[float]:
        """The plan's estimate of what is left, ``up`` already ready.

        Computed again when ``up`` changed; when one computation costs more
        than ESTIMATE_CHEAP seconds (about 0.25 s at 10,000 services), at
        most once per ESTIMATE_SHARE times its cost, so that the estimate
        never takes more than a tenth of the board's time: it may lag by that."""
        known, total, at, cost = self._estimate
        if known != up and (cost < ESTIMATE_CHEAP or time.monotonic() - at >= ESTIMATE_SHARE * cost):
            started = time.monotonic()
            try:
                total = self.graph.recovery(up=up).total
            except ConfigError:
                total = None
            ended = time.monotonic()
            self._estimate = (up, total, ended, ended - started)
        return total

    def _document(self, now, ready, states, results, units, host_ssh, counted, all_ready) -> Dict[str, Any]:
        services = []
        root_causes = []
        waves: Dict[int, List[int]] = {}
        for node in self.nodes:
            state, holding = states[node]
            seen = self.seen[node]
            wave = self.waves.get(node, 0)
            if state != "unknown":
                tally = waves.setdefault(wave, [0, 0])
                tally[0] += state == "ready"
                tally[1] += 1
            if state == "root-cause":
                root_causes.append(self.ids[node])
            target = self.targets[node]
            result = results.get(node)
            unit = units.get(node)
            copies = self.copies[node[0]]
            services.append({
                "id": self.ids[node], "service": node[0], "host": node[1], "state": state,
                "since": seen.since, "ready_at": seen.ready_at if state == "ready" else None, "wave": wave,
                "needs": [self.ids[n] for n in self.needs[node]],
                "waiting_on": [self.ids[n] for n in holding],
                "check": one_line(target.safe_spec) if target is not None else
                ("systemd (ssh)" if unit is not None else ""),
                "detail": result.reason if result is not None else
                (f"unit {unit.active}" if unit is not None else "nothing tells its readiness from here"),
                "status_line": (unit.status or None) if unit is not None and state != "ready" else None,
                "status_source": "ssh" if unit is not None else "inferred",
                "unit_state": f"{unit.active} ({unit.sub})" if unit is not None else None,
                "replicas": None if len(copies) < 2 else {
                    "ready": sum(bool(ready[(node[0], h)]) for h in copies), "of": len(copies)},
                "groups": [{"name": self._group_name(nodes), "need": need, "of": len(nodes),
                            "ready": sum(bool(ready[n]) for n in nodes), "ids": [self.ids[n] for n in nodes]}
                           for need, nodes, _ in self.requirements[node] if len(nodes) > 1],
            })
        up = frozenset(n for n in self.nodes if ready[n] is not False)
        return {
            "version": VERSION, "time": now,
            "ready": sum(bool(ready[n]) for n in counted), "total": len(counted), "all_ready": all_ready,
            "unknown": len(self.nodes) - len(counted),
            "down_since": self.down_since,
            "estimate_left": 0.0 if all_ready else self.estimate_left(up),
            "root_causes": root_causes,
            "hosts": [{"name": h.name, "address": h.reach, "ssh": host_ssh.get(h.name) if self.ssh else None}
                      for h in self.conf.hosts.values()],
            "waves": [{"wave": w, "ready": r, "total": t} for w, (r, t) in sorted(waves.items())],
            "services": services,
        }

    def _group_name(self, nodes: Sequence[Node]) -> str:
        """A group of needs by name: the service whose copies they are, else their ids."""
        names = {n[0] for n in nodes}
        return next(iter(names)) if len(names) == 1 else "[" + ", ".join(self.ids[n] for n in nodes) + "]"

    # -- systemd over ssh ------------------------------------------------------------

    def _ask_systemd(self, results: Dict[Node, Result]) -> Tuple[Dict[Node, UnitSeen], Dict[str, str]]:
        """Each host's units that are not ready (or that nothing checks), from
        one ``systemctl show`` per host over the operator's ssh."""
        wanted: Dict[str, List[Node]] = {}
        for node in self.nodes:
            if node[1] is not None and (node not in results or not results[node].ok):
                wanted.setdefault(node[1], []).append(node)
        units: Dict[Node, UnitSeen] = {}
        verdicts: Dict[str, str] = {}
        lock = threading.Lock()
        hosts = iter(wanted.items())

        def work() -> None:
            while True:
                with lock:
                    item = next(hosts, None)
                if item is None:
                    return
                host, nodes = item
                try:
                    shown = show_units(self.ssh_command, host, [systemd.unit_name(n[0]) for n in nodes])
                except SshFailed as why:
                    verdicts[host] = str(why)
                    continue
                verdicts[host] = "ok"
                for node in nodes:
                    seen = shown.get(systemd.unit_name(node[0]))
                    if seen is not None:
                        units[node] = seen

        threads = [threading.Thread(target=work, daemon=True) for _ in range(min(SSH_IN_FLIGHT, len(wanted)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return units, verdicts


class SshFailed(Exception):
    """systemd on a host could not be asked over ssh; the message says why (escaped)."""


def show_units(ssh_command: Sequence[str], host: str, units: Sequence[str],
               timeout: float = SSH_TIMEOUT) -> Dict[str, UnitSeen]:
    """``systemctl show`` of ``units`` on ``host`` through ``ssh_command HOST``:
    {unit: UnitSeen}. Every byte of the answer is hostile: at most
    SSH_OUTPUT_LIMIT bytes are read, within ``timeout``, and every value kept
    is decoded with replacement and its control characters escaped."""
    remote = " ".join(shlex.quote(a) for a in
                      ["systemctl", "show", "-p", "Id,ActiveState,SubState,StatusText", "--", *units])
    argv = [*ssh_command, "--", host, remote]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as error:
        raise SshFailed(one_line(f"cannot run {ssh_command[0]}: {error.strerror or error}")) from None
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        assert process.stdout is not None and process.stderr is not None
        out = process.stdout.read(SSH_OUTPUT_LIMIT)
        process.stdout.close()
        err = process.stderr.read(4096)
        process.stderr.close()
        process.kill()
        code = process.wait()
    finally:
        timer.cancel()
    if code != 0 and not out:
        words = err.decode("utf-8", "replace").strip().splitlines()
        raise SshFailed(one_line(f"ssh {host}: exit {code}" + (f": {words[-1][:200]}" if words else "")))
    return parse_show(out)


def parse_show(data: bytes) -> Dict[str, UnitSeen]:
    """``systemctl show -p Id,ActiveState,SubState,StatusText`` output, blocks
    separated by an empty line, into {Id: UnitSeen}; anything else is ignored."""
    seen: Dict[str, UnitSeen] = {}
    for block in data.decode("utf-8", "replace").split("\n\n"):
        fields: Dict[str, str] = {}
        for line in block.split("\n"):
            key, sep, value = line.partition("=")
            if sep and key in ("Id", "ActiveState", "SubState", "StatusText") and key not in fields:
                fields[key] = one_line(value)[:STATUS_LIMIT]
        if "Id" in fields:
            seen[fields["Id"]] = UnitSeen(fields.get("ActiveState", ""), fields.get("SubState", ""),
                                          fields.get("StatusText", ""))
    return seen


# -- the terminal and the command -------------------------------------------------------

_ORDER = {"root-cause": 0, "down": 1, "waiting": 2, "unknown": 3, "ready": 4}
_STATE_COLOUR = {"ready": "green", "waiting": "yellow", "root-cause": "red", "down": "red"}


def freeze() -> None:
    """Put everything alive now (the conf, the graph, the board's targets: they
    live as long as the process) out of the garbage collector's way, which
    would walk them at every round: half of a round's own work at 10,000
    services. For a process that runs a board; not done by Board itself,
    since it is process-wide."""
    gc.freeze()


def view(document: Dict[str, Any], colour: bool, rows: Optional[int] = None) -> List[str]:
    """The document as terminal lines: a summary, the root causes, the waves,
    then one row per service, root causes first and ready ones last; at
    most ``rows`` service rows (the rest counted)."""
    from .status import _ANSI, _RESET, _age

    now = document["time"]
    head = f"{document['ready']} of {document['total']} ready"
    if document["unknown"]:
        head += f", {document['unknown']} unknown"
    if document["all_ready"]:
        head += " · all ready"
    if document["down_since"] is not None:
        head += f" · outage seen since {_age(now - document['down_since'])}"
    if document["estimate_left"] is not None and not document["all_ready"]:
        head += f" · plan: about {document['estimate_left']:.1f} s left"
    lines = [head]

    def paint(state: str, text: str) -> str:
        return _ANSI[_STATE_COLOUR[state]] + text + _RESET if colour and state in _STATE_COLOUR else text

    by_id = {s["id"]: s for s in document["services"]}
    if document["root_causes"]:
        lines.append(paint("root-cause", "root causes (down while all they need answers):"))
        for rid in document["root_causes"]:
            s = by_id[rid]
            extra = f"; systemd: {s['status_line']}" if s["status_line"] else ""
            lines.append(f"  {rid}: {s['detail']} ({s['check']}){extra}")
    lines.append("waves: " + "  ".join(f"{w['wave']}: {w['ready']}/{w['total']}" for w in document["waves"]))
    lines.append("")
    header = ("SERVICE", "STATE", "SINCE", "WAVE", "CHECK", "DETAIL")
    services = sorted(document["services"], key=lambda s: (_ORDER[s["state"]], s["wave"]))
    shown = services if rows is None else services[:max(rows, 0)]
    cells = []
    for s in shown:
        detail = s["detail"]
        if s["waiting_on"]:
            detail = f"waiting for {', '.join(s['waiting_on'])}" + \
                (f" ({s['status_source']})" if s["status_source"] == "inferred" else "") + f"; {detail}"
        if s["status_line"]:
            detail += f"; systemd: {s['status_line']}"
        for group in s["groups"]:
            detail += f"; {group['name']}: {group['ready']} of {group['of']} ready, need {group['need']}"
        if s["replicas"]:
            detail += f"; copies {s['replicas']['ready']} of {s['replicas']['of']} ready"
        cells.append((s["id"], s["state"], _age(now - s["since"]), str(s["wave"]), s["check"], detail))
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header) - 1)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths)) + "  " + header[-1])
    for s, row in zip(shown, cells):
        padded = [c.ljust(w) for c, w in zip(row, widths)]
        padded[1] = paint(s["state"], padded[1])
        lines.append(("  ".join(padded) + "  " + row[-1]).rstrip())
    if len(shown) < len(services):
        rest = services[len(shown):]
        lines.append(f"... and {len(rest)} more ({sum(s['state'] == 'ready' for s in rest)} ready)")
    return lines


def run(conf: Conf, *, watch: bool = False, interval: float = defaults.BOARD_INTERVAL, as_json: bool = False,
        in_flight: int = defaults.BOARD_IN_FLIGHT, timeout: float = defaults.BOARD_TIMEOUT, ssh: bool = False,
        ssh_config: Optional[str] = None, colour: bool = False, clear: bool = False, rows: Optional[int] = None,
        echo: Callable[[str], None] = print) -> int:
    """``unitgen board``: one round, or with ``watch`` one every ``interval``
    s until every service is ready or Ctrl-C. Exit 0 only when all are ready
    at the last round, else 1."""
    import json

    board = Board(conf, in_flight=in_flight, timeout=timeout, ssh=ssh, ssh_command=ssh_command(ssh_config))
    freeze()
    document: Optional[Dict[str, Any]] = None
    try:
        with ctrl_c():
            while True:
                started = time.monotonic()
                document = board.refresh()
                if as_json:
                    echo(json.dumps(document, ensure_ascii=False))
                else:
                    text = "\n".join(view(document, colour, rows))
                    echo(("\x1b[2J\x1b[1;1H" if clear else "\n" if board.rounds > 1 else "") + text)
                if not watch or document["all_ready"]:
                    break
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        board.stop.set()
    return 0 if document is not None and document["all_ready"] else 1
