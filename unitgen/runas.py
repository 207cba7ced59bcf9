"""Who a service's checks run as, and a way to run them as that user.

The unit's own probe is an ExecStartPre= without ``+`` or ``!``: systemd runs
it with the unit's User=, Group= and supplementary groups. The watcher
(``unitgen-watch.service``, root) and ``unitgen probe`` (usually run with
sudo) must do the same, or whoever can edit an ``exec:`` script gets root.
So a service's checks run in a worker process (``unitgen_probe.serve``, from
the same place unitgen imports the probe)
started with the identity systemd would give the unit, dropped before exec:

* User=: the conf's ``user:``, or the last raw ``systemd: {Service: {User:}}``
  (an empty one means root again), looked up by name or number; a user that
  does not exist is refused, as systemd refuses it (status 217/USER), never
  run as root instead.
* Group=: likewise, else the user's primary group.
* supplementary groups: the user's groups from the group database
  (initgroups, as systemd, unless the group is 0) plus SupplementaryGroups=.
* DynamicUser=yes: the uid exists only while the unit runs; the checks are
  not run at all (`CannotCheck`), never as root.
* the environment systemd gives: PATH, HOME, USER, LOGNAME, SHELL, and the
  conf's ``environment:`` (not EnvironmentFile=, which unitgen does not
  read); the working directory, entered after the drop.

A service without any of these runs as root, as its unit does: its checks
run in the caller's own process. A caller that is not root cannot switch
users; it runs every check as itself (no one gains anything by that).

The worker's answers are untrusted: the service's user can write into the
worker's process. Lines are bounded, types checked, reasons redacted again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO, Dict, Optional, Tuple

import unitgen_probe
from unitgen_probe import DEFAULT_TIMEOUT, Result, Target, check, format_argv
from unitgen_probe.targets import printable, redact

from .model import Service

#: systemd's PATH for system services (systemd.exec(5), "Environment variables in spawned processes").
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: How long past a check's own timeout the worker may take to answer before
#: unitgen gives up on it and starts another (a stopped or wedged worker).
ANSWER_GRACE = 5.0
#: How long a worker may take to exit on EOF before it is killed.
CLOSE_GRACE = 1.0
#: The longest answer line read from a worker.
MAX_LINE = 65536
_TRUE = {"1", "yes", "y", "true", "t", "on"}
_FALSE = {"0", "no", "n", "false", "f", "off"}


class CannotCheck(Exception):
    """The checks cannot run as the service's user; the message says why.
    Not a failed check: the dependency was not asked at all."""


@dataclass(frozen=True)
class RunAs:
    """What systemd's unit settings say about who runs it (unresolved)."""

    user: Optional[str] = None
    group: Optional[str] = None
    supplementary: Tuple[str, ...] = ()
    dynamic: bool = False
    working_dir: Optional[str] = None
    environment: Tuple[Tuple[str, str], ...] = ()

    @property
    def is_root(self) -> bool:
        """Root with root's groups: the unit's process is what the caller is."""
        return not (self.user or self.group or self.supplementary or self.dynamic)


@dataclass(frozen=True)
class Identity:
    """A `RunAs` resolved on this host: ids, groups and what the worker gets."""

    uid: int
    gid: int
    groups: Tuple[int, ...]
    env: Tuple[Tuple[str, str], ...]
    cwd: Optional[str]


def run_as(service: Service) -> RunAs:
    """The identity settings of ``service``'s unit: its conf keys, then its raw
    Service directives, in the order systemd reads them (the later wins)."""
    user, group = service.user, service.group
    supplementary: Tuple[str, ...] = ()
    dynamic = False
    for section, directives in service.raw:
        if section != "Service":
            continue
        for key, text in directives:
            value = text.strip()
            if key == "User":
                user = value or None
            elif key == "Group":
                group = value or None
            elif key == "SupplementaryGroups":
                supplementary = supplementary + tuple(value.split()) if value else ()
            elif key == "DynamicUser":
                dynamic = value.lower() in _TRUE if value.lower() in _TRUE | _FALSE else True
    return RunAs(user, group, supplementary, dynamic, service.working_dir, tuple(service.environment))


def resolve(settings: RunAs) -> Identity:
    """The uid, gid, groups, environment and directory of ``settings`` on this
    host, as systemd would find them; `CannotCheck` where systemd would refuse
    to start the unit, or where unitgen cannot know the identity."""
    import grp
    import pwd

    if settings.dynamic:
        raise CannotCheck("the unit has DynamicUser=yes: its user exists only while it runs, "
                          "and its checks are never run as root instead")
    for value in (settings.user, settings.group, *settings.supplementary):
        if value is not None and "%" in value:
            raise CannotCheck(f"{printable(value)!r} has a systemd specifier: unitgen cannot tell who that is")
    env = {"PATH": SYSTEMD_PATH}
    uid, gid, name = 0, 0, None
    if settings.user is not None:
        entry = _lookup(pwd.getpwnam, pwd.getpwuid, settings.user, "user")
        uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
        env.update(HOME=entry.pw_dir, USER=name, LOGNAME=name, SHELL=entry.pw_shell or "/bin/sh")
    if settings.group is not None:
        gid = _lookup(grp.getgrnam, grp.getgrgid, settings.group, "group").gr_gid
    groups = list(os.getgrouplist(name, gid)) if name is not None and gid != 0 else []
    for extra in settings.supplementary:
        number = _lookup(grp.getgrnam, grp.getgrgid, extra, "group").gr_gid
        if number not in groups:
            groups.append(number)
    env.update(settings.environment)
    cwd = settings.working_dir
    if cwd == "~":  # WorkingDirectory=~: the user's home (root's without a user)
        cwd = env.get("HOME") or pwd.getpwuid(0).pw_dir
    return Identity(uid, gid, tuple(groups), tuple(env.items()), cwd)


def _lookup(by_name, by_id, value: str, what: str):
    """A passwd/group entry by name, or by number as systemd allows; a number
    must exist too (systemd refuses a User= id without an entry)."""
    try:
        return by_name(value)
    except KeyError:
        pass
    if value.isdigit() and value.isascii():
        try:
            return by_id(int(value))
        except (KeyError, OverflowError):
            pass
    raise CannotCheck(f"{what} {printable(value)!r} does not exist on this host "
                      f"(systemd refuses to start the unit too)")


class Checker:
    """Runs checks as one `RunAs`; thread-safe. ``check`` never raises for a
    failing dependency, only `CannotCheck` when it could not ask at all."""

    def __init__(self, settings: RunAs):
        self.settings = settings
        self._lock = threading.Lock()
        self._worker: Optional[_Worker] = None

    @property
    def in_process(self) -> bool:
        """Whether checks run in this process: the service runs as root, or
        this process cannot switch users."""
        return self.settings.is_root or os.geteuid() != 0

    def check(self, target: Target, timeout: Optional[float] = None) -> Result:
        if self.in_process:
            return check(target, timeout)
        with self._lock:
            worker = self._worker
            if worker is None or not worker.alive:
                worker = self._worker = _Worker(resolve(self.settings))
        return worker.ask(target, timeout)

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None


class _Worker:
    """One ``unitgen_probe.serve`` process as an `Identity`, and its answers."""

    def __init__(self, identity: Identity):
        # As units run the probe (unitgen_probe/start.py): -I (no PYTHON*
        # variables, no user site, not the working directory) and -S (no site,
        # no .pth file), the probe's code from where unitgen itself found it,
        # after the standard library, so that nothing beside it shadows that.
        where = os.path.dirname(os.path.dirname(os.path.abspath(unitgen_probe.__file__)))
        args = [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.append({where!r}); "
                "from unitgen_probe.serve import main; sys.exit(main())"]
        if identity.cwd:
            args += ["--cwd", identity.cwd]
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                cwd="/", env=dict(identity.env), user=identity.uid, group=identity.gid,
                extra_groups=list(identity.groups), start_new_session=True)
        except OSError as error:
            raise CannotCheck(f"cannot start a check process as uid {identity.uid}: {error.strerror}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._requests: IO[bytes] = self.proc.stdin
        self._answers: IO[bytes] = self.proc.stdout
        self._lock = threading.Lock()
        self._waiting: Dict[int, list] = {}  # id -> [event, Result or CannotCheck]
        self._next = 0
        self._error: Optional[str] = None
        threading.Thread(target=self._read, daemon=True, name="unitgen-check-reader").start()

    @property
    def alive(self) -> bool:
        return self._error is None

    def ask(self, target: Target, timeout: Optional[float]) -> Result:
        argv = format_argv([target])
        with self._lock:
            if self._error is not None:
                raise CannotCheck(self._error)
            self._next += 1
            ident = self._next
            slot = self._waiting[ident] = [threading.Event(), None]
            line = json.dumps({"id": ident, "argv": argv, "timeout": timeout})
            try:
                self._requests.write(line.encode() + b"\n")
                self._requests.flush()
            except OSError:
                self._fail_locked("the check process is gone")
        limit = (timeout if timeout is not None else (target.timeout or DEFAULT_TIMEOUT)) + ANSWER_GRACE
        if not slot[0].wait(limit):
            self._fail("the check process did not answer in time")
        answer = slot[1]
        if isinstance(answer, CannotCheck):
            raise answer
        assert isinstance(answer, Result)
        return answer

    def _read(self) -> None:
        why = "the check process exited"
        while True:
            line = self._answers.readline(MAX_LINE)
            if not line:
                break
            if not line.endswith(b"\n"):
                why = "the check process wrote a line too long"
                break
            ident, answer = _parse(line)
            if isinstance(answer, CannotCheck) and ident is None:
                why = str(answer)
                break
            with self._lock:
                slot = self._waiting.pop(ident, None)
            if slot is not None:
                slot[1] = answer
                slot[0].set()
        self._fail(why)

    def _fail(self, why: str) -> None:
        with self._lock:
            self._fail_locked(why)

    def _fail_locked(self, why: str) -> None:
        """Every check in flight ends with ``why``; the next one starts another worker."""
        if self._error is None:
            self._error = why
            self._kill()
        for slot in self._waiting.values():
            slot[1] = CannotCheck(self._error)
            slot[0].set()
        self._waiting.clear()

    def _kill(self) -> None:
        """End the worker: EOF first (it kills the commands it runs, each in a
        session of its own, and exits), then SIGKILL if it has not exited
        within `CLOSE_GRACE` (stopped, or wedged); reaped on a thread."""
        try:
            self._requests.close()
        except OSError:
            pass
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        try:
            self.proc.wait(CLOSE_GRACE)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait()

    def close(self) -> None:
        self._fail("closed")


def _parse(line: bytes):
    """(id, Result) from one answer line, or (None, CannotCheck) for anything else."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None, CannotCheck("the check process wrote something that is not an answer")
    if not isinstance(obj, dict):
        return None, CannotCheck("the check process wrote something that is not an answer")
    if isinstance(obj.get("error"), str):
        return None, CannotCheck(_shown(obj["error"]))
    ident, ok, reason, latency = obj.get("id"), obj.get("ok"), obj.get("reason"), obj.get("latency")
    if not (isinstance(ident, int) and isinstance(ok, bool) and isinstance(reason, str)
            and isinstance(latency, (int, float)) and not isinstance(latency, bool)):
        return None, CannotCheck("the check process wrote something that is not an answer")
    latency = float(latency)
    return ident, Result(ok, _shown(reason), latency if 0 <= latency < 1e6 else 0.0)


def _shown(text: str) -> str:
    text = printable(redact(text))
    return text if len(text) <= 500 else text[:499] + "…"
