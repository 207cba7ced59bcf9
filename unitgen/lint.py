"""Warnings from `unitgen check`: what is valid but likely a mistake.

* Everything that makes part of a unit run as root is reported: no ``user:``
  (nor a leading ``sudo -u`` lifted into User=), ``user: root`` or ``'0'``, a raw
  ``User=`` or ``PermissionsStartOnly=``, a ``+``/``!``/``!!`` prefix on a raw
  Exec line, and a ``sudo`` in a script that runs something as root
  (no ``-u``, ``-u root``, ``-u '#0'``).
* On the host being checked: a ``user:``/``group:`` that does not exist there,
  and a probe that the service's user cannot run (the probe runs as that
  user: every directory on the way to the script and to the interpreter of
  its #! line must let that user through).
* Secrets in the world-readable unit file: URL credentials in a dependency,
  and environment values whose names say they are secrets
  (environment_file: keeps them out of the unit).
* An optional dependency of a ``type: notify`` service: its own STATUS=
  replaces the probe's, which the watcher reads to know it started without
  the dependency, so it would not be restarted when the dependency returns.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from typing import Iterable, List, Optional, Tuple

from . import paths
from .errors import Problem, UnitgenError
from .graph import UnitPlan, needed, peer_edge, placements
from .model import CheckDependency, Conf, GroupDependency, Service, ServiceDependency, need_count, wait_at_most
from .systemd import has_credentials

_SECRET_NAME = re.compile(r"PASS(WORD|WD)?|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)


def lint(conf: Conf, host: Optional[str], probe: Optional[str], local: bool) -> List[Problem]:
    """Warnings for ``conf``; host-local ones (users, probe) when ``local``."""
    found: List[Problem] = []
    for service in conf.services.values():
        found.extend(_root(service))
        found.extend(_secrets(service, conf))
        found.extend(_needs(service, conf))
        found.extend(_optional(service))
        if local and host in placements(conf, service):
            found.extend(_accounts(service))
            if probe and service.deps:
                found.extend(_probe_reachable(service, probe))
    return found


def _warn(service: Service, message: str) -> Problem:
    return Problem(message, service.mark, service.name)


_ROOT_NAMES = ("root", "0")
# sudo that runs its command as root: no -u at all, or -u naming root or uid 0.
_SUDO_ROOT = re.compile(r"""(?:^|[\s;&|(`])sudo(?:\s+-[^u\s]\S*)*\s+(?!-)|"""
                        r"""(?:^|[\s;&|(`])sudo\s+(?:-\S+\s+)*-u\s*(?:root\b|['"]?\\?#0+['"]?(?:\s|$))""")
_EXEC_KEY = re.compile(r"Exec[A-Za-z]+\Z")
_ROOT_PREFIX = re.compile(r"[-@:]*[+!]")


def _root(service: Service) -> Iterable[Problem]:
    if service.user is None:
        yield _warn(service, "runs as root: it has no user: (nor a sudo -u that could become User=)")
    elif service.user in _ROOT_NAMES:
        yield _warn(service, f"runs as root: user: {service.user}")
    if service.script and _SUDO_ROOT.search(service.script):
        yield _warn(service, "its script runs a command as root through sudo (no -u, -u root or -u '#0')")
    for section, lines in service.raw:
        for key, text in lines:
            if section == "Service" and key == "User":
                yield _warn(service, f"a raw User= decides whom it runs as"
                                     f"{' (root)' if text.strip() in _ROOT_NAMES else ''}; prefer user:")
            elif section == "Service" and key == "PermissionsStartOnly" and text.strip().lower() in (
                    "1", "yes", "y", "true", "t", "on"):
                yield _warn(service, "PermissionsStartOnly= runs its ExecStartPre=/Post= lines as root")
            elif section == "Service" and _EXEC_KEY.match(key) and _ROOT_PREFIX.match(text.lstrip()):
                yield _warn(service, f"raw {key}= has a + or ! prefix: that command runs as root")


def _secrets(service: Service, conf: Conf) -> Iterable[Problem]:
    for name, value in service.environment:
        if _SECRET_NAME.search(name):
            yield _warn(service, f"environment {name} looks like a secret, and unit files are world-readable: "
                                 "put it in an environment_file: readable by root only")
        elif has_credentials(value):
            yield _warn(service, f"environment {name} holds a URL with credentials, and unit files are "
                                 "world-readable: put it in an environment_file: readable by root only")
    written = [("its command", " ".join(service.command)), ("its description", service.description or "")]
    written += [(f"raw {key}=", text) for _, lines in service.raw for key, text in lines]
    for what, text in written:
        if has_credentials(text):
            yield _warn(service, f"{what} holds a URL with credentials, which ends up in the world-readable "
                                 "unit file")
    for dep in service.deps:
        targets = dep.targets if isinstance(dep, GroupDependency) else (dep.target,) if isinstance(dep, CheckDependency) else ()
        if any(t.kind in ("http", "exec") and has_credentials(t.spec) for t in targets):
            yield Problem("a dependency URL holds credentials, which end up in the world-readable unit file",
                          dep.mark, service.name)
    if service.health and has_credentials(service.health):
        dependents = sorted(other.name for other in conf.services.values()
                            if any(isinstance(dep, ServiceDependency) and dep.service == service.name
                                   for dep in other.deps))
        where = f": {', '.join(dependents[:5])}{' ...' if len(dependents) > 5 else ''}" if dependents else ""
        yield _warn(service, "its health URL holds credentials, which are copied into the world-readable unit "
                             f"of every service that depends on it{where}")


def _needs(service: Service, conf: Conf) -> Iterable[Problem]:
    """A need the placement can never meet: the dependent would wait for ever."""
    if service.peers is not None and len(placements(conf, service)) < 2:
        yield _warn(service, "peers: on a service with one copy: there is no cluster to form")
    if service.peers is not None:
        copies = len(placements(conf, service))
        if need_count(service.peers, copies) > copies:
            yield _warn(service, f"peers: need {service.peers} of {copies} copies can never be met: "
                                 "whatever depends on it would wait for ever")
    for dep in service.deps:
        if isinstance(dep, CheckDependency) or (isinstance(dep, ServiceDependency) and peer_edge(conf, service.name, dep.service)):
            continue
        count, of = needed(conf, dep)
        if count > of:
            what = f"copies of {dep.service!r}, which the conf places on {of} host{'s' if of != 1 else ''}" \
                if isinstance(dep, ServiceDependency) else f"of {of} checks"
            yield Problem(f"needs {count} {what}: it can never be met, so {service.name} would wait for ever",
                          dep.mark, service.name)


def _optional(service: Service) -> Iterable[Problem]:
    if service.type == "notify" and any(wait_at_most(dep) is not None for dep in service.deps):
        yield _warn(service, "type: notify with an optional dependency: the STATUS= it sends replaces its "
                             "probe's, so unitgen watch cannot tell that it started without the dependency, "
                             "and does not restart it when the dependency returns")


def _accounts(service: Service) -> Iterable[Problem]:
    if service.user and not service.user.isdigit():
        try:
            pwd.getpwnam(service.user)
        except KeyError:
            yield _warn(service, f"user {service.user!r} does not exist on this host")
    if service.group and not service.group.isdigit():
        try:
            grp.getgrnam(service.group)
        except KeyError:
            yield _warn(service, f"group {service.group!r} does not exist on this host")


def _probe_reachable(service: Service, probe: str) -> Iterable[Problem]:
    why = probe_blocked(service, probe)
    if why:
        yield _warn(service, f"its dependency probe {why}; install unitgen where every user can run it, "
                             "e.g. /usr/local or /opt")


# What to do when the probe is out of a service user's reach (render and apply refuse).
UNREACHABLE_PROBE_HELP = ("install unitgen where every user can run it (python3 -m venv /opt/unitgen, as the "
                          "README's 'Putting it on a host' shows), "
                          "or pass --probe PATH of a unitgen-probe they can run; "
                          "--allow-unreachable-probe writes the units anyway")


def probe_blocked(service: Service, probe: str) -> Optional[str]:
    """Why the service's user cannot run ``probe`` on this machine
    (``runs as app, who cannot reach /root/v/bin/python (/root is mode 700)``), or None.

    The script, the interpreter of its #! line, and where symlinks lead (a
    venv's python is a link into the Python it was made from) must all be
    reachable: the kernel walks every one of those directories."""
    user = service.user or "root"
    try:
        account = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        return None  # reported by _accounts
    if account.pw_uid == 0:
        return None
    ids = (account.pw_uid, set(os.getgrouplist(account.pw_name, account.pw_gid)))
    argv = paths.probe_argv(probe)  # [probe], or [PYTHON, -IS, start.py], which PYTHON reads
    read = argv[2:]
    for path in [probe, *_interpreter(probe), *argv[:1], *read]:
        for candidate in _link_chain(path):
            blocked = _blocked_at(candidate, ids, read=path in read)
            if blocked:
                return f"runs as {user}, who cannot reach {candidate} ({blocked})"
    return None


def _link_chain(path: str, most: int = 40) -> List[str]:
    """``path`` and every path its symlinks lead to, one hop at a time (as the kernel walks them)."""
    chain = [os.path.abspath(path)]
    while len(chain) <= most:
        try:
            target = os.readlink(chain[-1])
        except OSError:
            break
        chain.append(os.path.normpath(os.path.join(os.path.dirname(chain[-1]), target)))
    return chain


def refuse_unreachable_probe(plans: Iterable[UnitPlan], probe: str) -> None:
    """Raise UnitgenError (one line) if a unit's probe would be out of its user's
    reach here: such a unit fails at every start with status 203/EXEC. A probe
    that does not exist on this machine is not judged (units for another one)."""
    if not os.path.exists(probe):
        return
    blocked = [(plan.service.name, why) for plan in plans if plan.all_targets
               for why in [probe_blocked(plan.service, probe)] if why]
    if blocked:
        name, why = blocked[0]
        more = f" (and {len(blocked) - 1} more service{'s' if len(blocked) > 2 else ''})" if len(blocked) > 1 else ""
        raise UnitgenError(f"{name}{more}: its dependency probe {why}, so its unit would fail at every start "
                           f"(status 203/EXEC); {UNREACHABLE_PROBE_HELP}")


def _interpreter(script: str) -> List[str]:
    try:
        with open(script, "rb") as f:
            first = f.readline(256)
    except OSError:
        return []
    if not first.startswith(b"#!"):
        return []
    words = first[2:].decode("utf-8", "replace").split()
    return words[:1]


def _blocked_at(path: str, ids: Tuple[int, set], read: bool = False) -> Optional[str]:
    """Where ``path`` stops a user (uid, gids) from executing it (``read``:
    reading it), or None: every directory on the way must let the user
    through, and the file must be executable (readable) by them."""
    parts = os.path.abspath(path).split("/")[1:]
    for depth in range(len(parts) + 1):
        current = "/" + "/".join(parts[:depth])
        try:
            info = os.stat(current)
        except OSError as exc:
            return f"{current}: {exc.strerror}"
        last = depth == len(parts) and read
        if not _allowed(info, ids, 4 if last else 1):
            return f"{current} is mode {stat.S_IMODE(info.st_mode):o}"
    return None


def _allowed(info: os.stat_result, ids: Tuple[int, set], bit: int) -> bool:
    """Whether the user may do ``bit`` (4 read, 1 execute/search) on the file, as the kernel decides."""
    uid, gids = ids
    if info.st_uid == uid:
        return bool(info.st_mode & (bit << 6))
    if info.st_gid in gids:
        return bool(info.st_mode & (bit << 3))
    return bool(info.st_mode & bit)
