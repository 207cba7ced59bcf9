"""The conf, once read and validated: plain dataclasses, no YAML, no files.

Both input formats (Autoheal and native) end up as one Conf. A dependency is
either a check the probe runs as is (a ``unitgen_probe.Target``: the probe's
own type, so that whatever a conf may say, the probe understands), or a
reference to another service of the conf, resolved per host by graph.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Union

from unitgen_probe import DEFAULT_TIMEOUT, Target

from . import defaults
from .errors import Mark, Problem

# What a conf may say (schema.json's enums; tests/test_schema.py holds them equal).
Format = Literal["autoheal", "native"]
ServiceType = Literal["exec", "simple", "forking", "notify"]
OnLoss = Literal["ignore", "restart", "stop"]
OnUnhealthy = Literal["ignore", "restart"]
# How many copies of a replicated service (or members of a group of checks) a
# dependency needs: all, any (1), quorum (more than half), or at least N.
Need = Union[Literal["all", "any", "quorum"], int]

# TimeoutStartSec= applies to the probe (an ExecStartPre=): it must outlast
# the probe's deadline, so that the probe, not systemd, decides when to give up.
START_TIMEOUT_MARGIN = 30.0
# The run-time watcher's unit (render.py); no service or alias may take its name.
WATCH_UNIT = "unitgen-watch.service"
# Scripts run with bash: Autoheal's generated script was #!/bin/bash, and its
# users' scripts use bash (source, [[ ]], arrays); /bin/sh is dash on Debian.
SCRIPT_SHELL = "/bin/bash"
# Where unitgen-launch hands systemd the PID of a launched service (root's).
LAUNCH_PID_DIR = "/run/unitgen"


@dataclass(frozen=True)
class ProbeSettings:
    """How a service's ExecStartPre= probe waits."""

    deadline: float = defaults.PROBE_DEADLINE
    timeout: float = DEFAULT_TIMEOUT  # the probe's own: it never imports unitgen
    any: bool = False


@dataclass(frozen=True)
class LossThreshold:
    """When a remote dependency counts as lost at run time (unitgen watch)."""

    failures: int = defaults.LOSS_FAILURES
    seconds: float = defaults.LOSS_SECONDS


@dataclass(frozen=True)
class CheckDependency:
    """A check the probe runs as is (tcp:, http:, ...): the probe's own Target,
    which carries its name and timeout."""

    target: Target
    mark: Optional[Mark] = field(default=None, compare=False)


@dataclass(frozen=True)
class ServiceDependency:
    """Another service of the conf, by name; graph.py resolves it per host into
    ordering and checks of that service's listen:/health:."""

    service: str
    name: Optional[str] = None
    timeout: Optional[float] = None
    # Of a replicated service, how many copies; None: the service's peers: need,
    # else any (graph.default_need). A single-copy service needs its one copy.
    need: Optional[Need] = None
    wait_at_most: Optional[float] = None  # optional: true: start without it after this long; None: required
    mark: Optional[Mark] = field(default=None, compare=False)


@dataclass(frozen=True)
class GroupDependency:
    """Checks of which ``need`` must answer (``any: [...]``, or ``of: [...]``
    with ``need:``); the probe waits for them as one group named ``name``."""

    targets: Tuple[Target, ...]
    need: Need = "all"
    name: Optional[str] = None
    wait_at_most: Optional[float] = None  # optional: true: start without the group after this long
    mark: Optional[Mark] = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return self.name or "[" + ", ".join(t.label for t in self.targets) + "]"


# One thing a service needs: a check, another service, or a group of checks.
Dependency = Union[CheckDependency, ServiceDependency, GroupDependency]


def wait_at_most(dep: Dependency) -> Optional[float]:
    """How long the probe waits for an optional dependency before the service
    starts without it (a degraded start); None: a required one."""
    return dep.target.wait_at_most if isinstance(dep, CheckDependency) else dep.wait_at_most


def need_count(need: Need, copies: int) -> int:
    """How many of ``copies`` a need asks for (may exceed them: never met)."""
    if need == "all":
        return copies
    if need == "any":
        return 1
    if need == "quorum":
        return copies // 2 + 1
    return int(need)


@dataclass(frozen=True)
class Service:
    name: str
    command: Tuple[str, ...]
    description: str
    script: Optional[str] = None
    user: Optional[str] = None
    group: Optional[str] = None
    working_dir: Optional[str] = None
    environment: Tuple[Tuple[str, str], ...] = ()
    environment_files: Tuple[str, ...] = ()
    pid_file: Optional[str] = None
    type: ServiceType = "exec"
    restart_sec: float = defaults.RESTART_SEC
    wanted_by: Tuple[str, ...] = ("multi-user.target",)
    # The rest of [Install] that makes links (raw Install: RequiredBy=, Alias=):
    # kept typed, so that the generator links from these, never from text.
    required_by: Tuple[str, ...] = ()
    aliases: Tuple[str, ...] = ()
    hosts: Tuple[str, ...] = ()
    listen: Optional[int] = None
    health: Optional[str] = None
    deps: Tuple[Dependency, ...] = ()
    probe: ProbeSettings = ProbeSettings()
    # A cluster (etcd, Consul servers, Galera): its copies never wait for each
    # other, and a dependency on it needs this many copies by default.
    peers: Optional[Need] = None
    on_dependency_loss: OnLoss = "ignore"
    accepts: Optional[float] = None  # new dependents per second it takes (paced release); None: no pacing
    on_unhealthy: OnUnhealthy = "ignore"  # restart it when its own health: fails while its deps answer
    loss_threshold: LossThreshold = LossThreshold()
    start_time: Optional[float] = None
    raw: Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...] = ()
    pname: Optional[str] = None
    foreground: bool = False
    mark: Optional[Mark] = field(default=None, compare=False)

    @property
    def launched(self) -> bool:
        """Started through unitgen-launch: the command starts a process that
        ``pname`` or ``pid_file`` finds (Autoheal's semantics), unless the conf
        says it stays in the foreground."""
        return bool(self.pname is not None or self.pid_file) and not self.foreground


@dataclass(frozen=True)
class Host:
    name: str
    address: Optional[str] = None

    @property
    def reach(self) -> str:
        """How other hosts reach this one: its address, else its name."""
        return self.address or self.name


@dataclass
class Conf:
    path: str
    format: Format
    services: Dict[str, Service]
    hosts: Dict[str, Host] = field(default_factory=dict)
    warnings: List[Problem] = field(default_factory=list)

    @property
    def multi_host(self) -> bool:
        return bool(self.hosts)
