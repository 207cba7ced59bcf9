"""The power-cut drill on the test bed: a fleet of stand-in services, installed
as a user would, cut and restored, and judged from the stand-ins' own logs.

    topology = DRILL_TOPOLOGY                       # services on h1, h2, h3
    fleet = bed.Fleet(topology.hosts)
    install(fleet, topology, conf_text(fleet, topology))   # boots, renders, enables
    restored = power_cycle(fleet, random.Random(seed))     # cut all, boot in a random order
    wait_healthy(fleet, topology)
    events = read_events(fleet, topology, since=restored)
    assert not ordering_violations(events)

Used by tests/test_drill.py and bench/powercut.py. The stand-in program is
tests/standins/standin.py (see its docstring for the log format); it runs
with the test process's interpreter, which every host sees (DEVELOPERS.md).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

import bed
from unitgen import paths, systemd

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins", "standin.py")
CONF_PATH = "/etc/unitgen/conf.yaml"
UNIT_DIR = "/etc/systemd/system"
LOG_DIR = "/var/log/standins"
PID_DIR = "/run/standins"
RECOVERY_TIMEOUT = 90.0


@dataclass(frozen=True)
class Dep:
    """A dependency of a stand-in on another, written in one of the conf's shapes.

    ``shape``: "service" (``service: NAME``, native), "autoheal-tcp"
    (``{name, host, port}``) or "autoheal-url" (``{name, url}``), the last
    two as Autoheal confs write them.
    """

    service: str
    shape: str = "service"


@dataclass(frozen=True)
class Standin:
    """One stand-in service: where it runs and how it fails (see standin.py)."""

    name: str
    host: str
    port: int
    deps: Tuple[Dep, ...] = ()
    on_missing: str = "exit"        # "exit" (failure 1) or "degrade" (failure 2)
    daemon: bool = False            # failure 3: double fork and a pid file, Type=forking
    health: bool = True             # declares health: (dependents GET it) or only listen: (TCP)
    start_time: float = 0.3         # seconds it loads before it serves
    user: Optional[str] = None
    on_loss: str = "ignore"         # "break": broken for good when a dependency is lost at run time

    @property
    def unit(self) -> str:
        return systemd.unit_name(self.name)

    @property
    def pid_file(self) -> Optional[str]:
        return f"{PID_DIR}/{self.name}.pid" if self.daemon else None


@dataclass(frozen=True)
class Topology:
    """Stand-ins placed on hosts; no dependency cycles (unitgen refuses them anyway)."""

    hosts: Tuple[str, ...]
    services: Tuple[Standin, ...]

    def __getitem__(self, name: str) -> Standin:
        return next(s for s in self.services if s.name == name)

    def on(self, host: str) -> List[Standin]:
        return [s for s in self.services if s.host == host]

    def edges(self) -> List[Tuple[str, str]]:
        """(dependency, dependent) for every dependency."""
        return [(d.service, s.name) for s in self.services for d in s.deps]


# The drill's fleet: a chain db -> api -> web -> proxy four deep across three
# hosts, with every kind of dependency the brief asks for:
#   api -> db     another host, TCP (db has no health URL), native service:
#   api -> cache  the same host: Wants=/After= plus the probe, native service:
#   web -> api    another host, HTTP health URL, native service:
#   proxy -> web  another host, HTTP URL in Autoheal's {name, url} shape
#   proxy -> db   the same host by 127.0.0.1, Autoheal's {name, host, port}
#                 shape (the seed's nginx / web_service example)
# and each failure kind: api exits (1), web and proxy serve 503 forever (2),
# proxy daemonises with a pid file (3); web runs as nobody.
DRILL_TOPOLOGY = Topology(
    hosts=("h1", "h2", "h3"),
    services=(
        Standin("db", "h1", 7001, health=False),
        Standin("cache", "h2", 7002, health=False, start_time=0.2),
        Standin("api", "h2", 7003, deps=(Dep("db"), Dep("cache")), on_missing="exit"),
        Standin("web", "h3", 7004, deps=(Dep("api"),), on_missing="degrade", user="nobody"),
        Standin("proxy", "h1", 7005, deps=(Dep("web", "autoheal-url"), Dep("db", "autoheal-tcp")),
                on_missing="degrade", daemon=True),
    ),
)


# -- the conf and the units ---------------------------------------------------

def address_of(fleet: bed.Fleet, topology: Topology, dependency: str, seen_from: str) -> str:
    """What a dependent on host seen_from checks for ``dependency``, in standin.py's syntax.

    The same target unitgen's probe waits for: the health URL if the
    dependency has one, else its TCP port; at 127.0.0.1 on the same host.
    """
    target = topology[dependency]
    host = "127.0.0.1" if target.host == seen_from else fleet[target.host].address
    if target.health:
        return f"http://{host}:{target.port}/health"
    return f"tcp://{host}:{target.port}"


def command(fleet: bed.Fleet, topology: Topology, service: Standin) -> List[str]:
    """The stand-in's argv: absolute interpreter and script, its port and dependencies."""
    argv = [sys.executable, STANDIN, service.name, "--port", str(service.port),
            "--on-missing", service.on_missing, "--start-time", str(service.start_time)]
    for dep in service.deps:
        argv += ["--dep", f"{dep.service}={address_of(fleet, topology, dep.service, service.host)}"]
    if service.daemon:
        argv += ["--pid-file", service.pid_file]
    if service.on_loss != "ignore":
        argv += ["--on-loss", service.on_loss]
    return argv


def conf_dep(fleet: bed.Fleet, topology: Topology, service: Standin, dep: Dep) -> dict:
    """One item of deps: in the conf, in the dependency's shape."""
    if dep.shape == "service":
        return {"service": dep.service}
    address = address_of(fleet, topology, dep.service, service.host)
    if dep.shape == "autoheal-url":
        return {"name": dep.service, "url": address}
    host, _, port = address[len("tcp://"):].rpartition(":")
    return {"name": dep.service, "host": host, "port": int(port)}


def conf_text(fleet: bed.Fleet, topology: Topology, defaults: Optional[dict] = None) -> str:
    """One native conf for the whole fleet; each host renders its own part with --host."""
    services = {}
    for service in topology.services:
        entry = {"host": service.host, "exec": command(fleet, topology, service), "listen": service.port}
        if service.health:
            entry["health"] = f"http://{{host}}:{service.port}/health"
        if service.deps:
            entry["deps"] = [conf_dep(fleet, topology, service, dep) for dep in service.deps]
        if service.daemon:
            entry["pid_file"] = service.pid_file
        if service.user:
            entry["user"] = service.user
        services[service.name] = entry
    conf = {"version": 1, "hosts": {host.name: {"address": host.address} for host in fleet}, "services": services}
    if defaults:
        conf["defaults"] = defaults
    return yaml.safe_dump(conf, sort_keys=False)


def baseline_unit(fleet: bed.Fleet, topology: Topology, service: Standin) -> str:
    """The unit a user would write without unitgen: Restart=always, no probe,
    systemd's default start limits, After= for dependencies on the same host."""
    lines = ["[Unit]", f"Description={service.name} (without unitgen)",
             "Wants=network-online.target", "After=network-online.target"]
    for dep in service.deps:
        if topology[dep.service].host == service.host:
            lines += [f"Wants={topology[dep.service].unit}", f"After={topology[dep.service].unit}"]
    lines += ["", "[Service]", f"Type={'forking' if service.daemon else 'exec'}"]
    if service.daemon:
        lines.append(f"PIDFile={service.pid_file}")
    if service.user:
        lines.append(f"User={service.user}")
    lines += [f"ExecStart={systemd.exec_command(command(fleet, topology, service))}", "Restart=always",
              "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


# -- installing ---------------------------------------------------------------

def install(fleet: bed.Fleet, topology: Topology, conf: str, probe: Optional[str] = None) -> None:
    """Install the conf on every host as a user would, and enable the units.

    Boots every host that is off (nothing of the drill runs yet), then on
    each: the conf in /etc/unitgen/conf.yaml, ``unitgen render … --host NAME
    -o /etc/systemd/system``, ``systemctl daemon-reload``, ``systemctl
    enable``. The units start at the next boot. ``probe``: render with
    ``--probe PATH`` (another build of unitgen-probe, to compare).
    """
    _boot_off_hosts(fleet)
    for host in fleet:
        host.write_file(CONF_PATH, conf)
        host.run(["unitgen", "render", CONF_PATH, "--host", host.name, "-o", UNIT_DIR,
                  *(["--probe", probe] if probe else [])])
        _enable(host, topology)


def install_baseline(fleet: bed.Fleet, topology: Topology) -> None:
    """Install the units a user would write without unitgen (baseline_unit), enabled."""
    _boot_off_hosts(fleet)
    for host in fleet:
        for service in topology.on(host.name):
            host.write_file(f"{UNIT_DIR}/{service.unit}", baseline_unit(fleet, topology, service))
        _enable(host, topology)


def _boot_off_hosts(fleet: bed.Fleet) -> None:
    off = [host.name for host in fleet if not host.is_up]
    if off:
        fleet.boot_all(off)


def _enable(host: bed.Host, topology: Topology) -> None:
    """The stand-ins' log directory (the app's own install step), reload, enable."""
    host.run(["install", "-d", "-m", "1777", LOG_DIR])
    host.run(["systemctl", "daemon-reload"])
    units = [service.unit for service in topology.on(host.name)]
    if units:
        host.run(["systemctl", "enable", "--quiet", *units])


# -- power --------------------------------------------------------------------

def power_cycle(fleet: bed.Fleet, rng: random.Random, order: Optional[Sequence[str]] = None,
                delays: Tuple[float, float] = (0.0, 1.5)) -> float:
    """Cut every host, then boot them in ``order`` (default: a random one),
    each a random ``delays[0]..delays[1]`` s after the previous one.

    Returns time.time() of the first boot: when the power came back.
    """
    fleet.power_cut_all()
    if order is None:
        order = random_order(fleet, rng)
    gaps = [0.0] + [rng.uniform(*delays) for _ in order[1:]]
    restored = time.time()
    fleet.boot_all(order, gaps, wait=False)
    return restored


def random_order(fleet: bed.Fleet, rng: random.Random) -> List[str]:
    """The fleet's host names, shuffled."""
    order = list(fleet.hosts)
    rng.shuffle(order)
    return order


# -- watching -----------------------------------------------------------------

def health(fleet: bed.Fleet, topology: Topology) -> Dict[str, str]:
    """{service: "HTTP status 200" or why not}, seen from the bridge (outside every host).

    Asked with unitgen-probe itself, ``--once --json``: one attempt at every
    service's /health, in parallel.
    """
    argv = [paths.probe_command(), "--once", "--json", "--timeout", "1"]
    for service in topology.services:
        argv += ["http", f"http://{fleet[service.host].address}:{service.port}/health", "--name", service.name]
    result = fleet.run_on_bridge(argv)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    return {answer["label"]: ("healthy" if answer["ok"] else answer["reason"]) for answer in answers}


def wait_healthy(fleet: bed.Fleet, topology: Topology, timeout: float = RECOVERY_TIMEOUT) -> None:
    """Wait until every service's /health answers 200; BedError with a diagnosis if not."""
    deadline = time.monotonic() + timeout
    while True:
        state = health(fleet, topology)
        if all(value == "healthy" for value in state.values()):
            return
        if time.monotonic() > deadline:
            raise bed.BedError(f"not every service healthy after {timeout:.0f} s: {state}\n"
                               f"{diagnosis(fleet, topology)}")
        time.sleep(0.1)


def unit_states(fleet: bed.Fleet, topology: Topology,
                properties: Sequence[str] = ("ActiveState", "SubState", "Result", "NRestarts", "MainPID"),
                ) -> Dict[str, Dict[str, str]]:
    """{service: {property: value}} from ``systemctl show`` on each host that is up."""
    states = {}
    for host in fleet:
        services = topology.on(host.name)
        if not services or not host.is_up:
            continue
        shown = host.systemctl("show", "-p", ",".join(properties), *[s.unit for s in services])
        for service, block in zip(services, shown.strip().split("\n\n")):
            states[service.name] = dict(line.split("=", 1) for line in block.splitlines())
    return states


def settled_states(fleet: bed.Fleet, topology: Topology) -> Dict[str, Dict[str, str]]:
    """unit_states once every unit is active with a known MainPID: healthy is not yet that for a
    forking daemon (it answers before systemd has seen its parent exit and read its PID file)."""
    found: Dict[str, Dict[str, str]] = {}

    def settled() -> bool:
        found.update(unit_states(fleet, topology))
        return all(s["ActiveState"] == "active" and s["MainPID"] != "0" for s in found.values())

    bed._wait_until(settled, RECOVERY_TIMEOUT, "every unit active with its main process", interval=0.1)
    return found


def diagnosis(fleet: bed.Fleet, topology: Topology) -> str:
    """systemctl status of every stand-in, for a failure message."""
    parts = []
    for host in fleet:
        units = [s.unit for s in topology.on(host.name)]
        if units and host.is_up:
            parts.append(f"--- {host.name}\n" + host.systemctl("status", "--no-pager", "--full", "--lines=5",
                                                                *units, check=False))
        elif units:
            parts.append(f"--- {host.name}: powered off")
    return "\n".join(parts)


# -- the stand-ins' logs --------------------------------------------------------

def read_events(fleet: bed.Fleet, topology: Topology, since: float = 0.0) -> List[dict]:
    """Every stand-in's log events logged at or after ``since``, in time order."""
    events = []
    for service in topology.services:
        try:
            text = fleet[service.host].read_file(f"{LOG_DIR}/{service.name}.log")
        except FileNotFoundError:
            continue
        events += [json.loads(line) for line in text.splitlines()]
    return sorted((event for event in events if event["time"] >= since), key=lambda event: event["time"])


def ordering_violations(events: Sequence[dict]) -> List[str]:
    """Every start of a stand-in while one of its dependencies was down, as text.

    The evidence is the stand-in's own check of each dependency right after
    its exec: a dependency unreachable at that instant means systemd ran
    ExecStart before the dependency was up.
    """
    return [f"{event['service']}@{event['host']} started at {event['time']:.3f} while {event['dependency']} "
            f"was down ({event['reason']})"
            for event in events if event["event"] == "dependency unreachable at start"]


def starts(events: Sequence[dict], service: str) -> List[dict]:
    """The "exec started" events of one service."""
    return [e for e in events if e["service"] == service and e["event"] == "exec started"]


def ready_times(events: Sequence[dict], service: str) -> List[float]:
    """When the service began serving healthy, each time it did."""
    return [e["time"] for e in events
            if e["service"] == service and e["event"] == "serving" and e["healthy"]]
