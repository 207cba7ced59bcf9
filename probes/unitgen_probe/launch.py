"""unitgen-launch: run an Autoheal-style start script under systemd, then tell
systemd which process is the service.

    unitgen-launch --pid-file /run/unitgen/UNIT.pid (--pname PATTERN | --from-pid-file PATH)
                   [--user USER] [--group GROUP] [--timeout SECONDS] -- COMMAND...

A unit that runs it is ``Type=forking`` with ``PIDFile=`` the ``--pid-file``
(under /run/unitgen, written by this launcher, as root). Autoheal's cron job
checked whether the process ran (``pgrep -f PNAME``, or the PID in a pid file)
and ran the script only when it did not; this does the same, once per start:

1. **Check before starting.** A process already runs (an operator migrating off
   cron): it is adopted, never started twice. With ``--pname``: the oldest
   process anywhere whose command line matches PATTERN as ``pgrep -f`` matches
   it (a regular expression searched in the arguments joined by spaces), except
   this launcher, its ancestors, and processes another unitgen-launched unit
   already supervises. With ``--from-pid-file``: the PID in that file, if it
   runs, started before the file was last written (a file left over from
   before a power cut names a PID some newer process now has), and runs as
   the file's owner (or the file is root's). The adopted process and its
   descendants are moved into the unit's cgroup, so that ``systemctl stop``
   and ``KillMode=control-group`` reach them.
2. **Otherwise run COMMAND** (as USER with its groups, HOME, USER, LOGNAME and
   SHELL when ``--user`` is given; the unit runs this launcher with ``+``) and
   wait for the process to appear in the unit's own cgroup: by PATTERN, or by
   the PID in the pid file (whoever owns it: the PID is trusted only if it is
   in the unit's cgroup, the rule systemd applies to a PID file not owned by
   root), and only once the file was written after COMMAND started (an older
   file is left over from a power cut or a kill, and names a PID that may now
   be anything). A COMMAND that exits non-zero is a failed start (its status
   is this launcher's). One that exits 0 without the process appearing within
   ``--timeout`` seconds is a failed start (status 1). A COMMAND still running
   ``FOREGROUND_AFTER`` seconds after the process appeared stays in the
   foreground: that is fine (a daemon forks and exits well before that, even
   the program COMMAND exec'd itself; ``foreground: true`` in the conf skips
   the launcher and the wait).
3. **Hand systemd the PID**: written atomically to ``--pid-file``, owned by
   root, then exit 0. systemd reads it, supervises that process, and
   ``Restart=`` brings the service back (probe first) when it dies.

Exit status: 0 started or adopted; 1 no process found; 2 usage error; the
COMMAND's status when it failed. Standard library only; never imports unitgen.
"""

from __future__ import annotations

import os
import sys
import time

PROG = "unitgen-launch"
RUN_DIR = "/run/unitgen"
DEFAULT_TIMEOUT = 30.0
FOREGROUND_AFTER = 3.0
MTIME_SLACK = 1.0  # file timestamps come from the kernel's coarse clock
POLL = 0.05
_MAX_PID_FILE = 64


class UsageError(Exception):
    pass


def _log(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def parse(argv):
    """Options as a dict; COMMAND after ``--``."""
    opts = {"pid_file": None, "pname": None, "from_pid_file": None, "user": None, "group": None,
            "timeout": DEFAULT_TIMEOUT, "command": None}
    names = {"--pid-file": "pid_file", "--pname": "pname", "--from-pid-file": "from_pid_file",
             "--user": "user", "--group": "group", "--timeout": "timeout"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            opts["command"] = list(argv[i + 1:])
            break
        key, _, inline = arg.partition("=")
        if key not in names:
            raise UsageError(f"unknown option {arg!r}")
        if inline or "=" in arg:
            value = inline
        else:
            i += 1
            if i >= len(argv):
                raise UsageError(f"{key} needs a value")
            value = argv[i]
        opts[names[key]] = value
        i += 1
    if not opts["command"]:
        raise UsageError("no command (give it after --)")
    if not opts["pid_file"] or not os.path.isabs(opts["pid_file"]):
        raise UsageError("--pid-file must be an absolute path")
    if (opts["pname"] is None) == (opts["from_pid_file"] is None):
        raise UsageError("give exactly one of --pname and --from-pid-file")
    if opts["from_pid_file"] is not None and not os.path.isabs(opts["from_pid_file"]):
        raise UsageError("--from-pid-file must be an absolute path")
    try:
        opts["timeout"] = float(opts["timeout"])
    except ValueError:
        raise UsageError(f"--timeout {opts['timeout']!r} is not a number of seconds") from None
    if opts["pname"] is not None:
        try:
            import re  # only to find a process by its command line: a start waits for this import

            opts["pattern"] = re.compile(opts["pname"].encode("utf-8", "surrogateescape"))
        except re.error as exc:
            raise UsageError(f"--pname {opts['pname']!r} is not a regular expression: {exc}") from None
    return opts


# --- /proc --------------------------------------------------------------------

def _read(path: str, limit: int = 1 << 16) -> bytes:
    with open(path, "rb") as file:
        return file.read(limit)


def _stat(pid: int):
    """(state, ppid, starttime in clock ticks) of ``pid``, or None if it is gone."""
    try:
        text = _read(f"/proc/{pid}/stat").decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _cmdline(pid: int) -> bytes:
    """The arguments joined by spaces, as ``pgrep -f`` matches them."""
    try:
        return _read(f"/proc/{pid}/cmdline").rstrip(b"\0").replace(b"\0", b" ")
    except OSError:
        return b""


def _cgroup(pid) -> str:
    """The cgroup v2 path of ``pid`` ("self" for this process), or "" if unknown."""
    try:
        for line in _read(f"/proc/{pid}/cgroup").decode("utf-8", "surrogateescape").splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return ""


def _cgroup_root() -> str:
    """Where cgroup v2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on
    a hybrid host (from /proc/self/mountinfo: the mount point, field 5, of the
    line whose filesystem type, after " - ", is cgroup2)."""
    try:
        for line in _read("/proc/self/mountinfo", 1 << 20).decode("utf-8", "surrogateescape").splitlines():
            fields, _, rest = line.partition(" - ")
            if rest.split(" ", 1)[0] == "cgroup2":
                return fields.split(" ")[4].replace("\\040", " ")
    except OSError:
        pass
    return "/sys/fs/cgroup"


def _pids():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _ancestors() -> set:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        stat = _stat(pid)
        if stat is None:
            break
        pid = stat[1]
    pids.add(1)
    return pids


def _oldest(pids):
    """The process started first (the parent of a daemon's workers), lowest PID on a tie."""
    stamped = [(stat[2], pid) for pid in pids for stat in [_stat(pid)] if stat and stat[0] not in ("Z", "X")]
    return min(stamped)[1] if stamped else None


def _supervised_elsewhere(cgroup: str) -> bool:
    """True for a process of another unit that unitgen-launch supervises."""
    unit = cgroup.rstrip("/").rsplit("/", 1)[-1]
    return unit.endswith(".service") and os.path.exists(os.path.join(RUN_DIR, unit + ".pid"))


# --- finding the service's process ---------------------------------------------

class Finder:
    def __init__(self, opts):
        self.pattern = opts.get("pattern")
        self.from_pid_file = opts["from_pid_file"]
        self.cgroup = _cgroup("self")
        self.cgroup_root = _cgroup_root()
        self.self_pid = os.getpid()
        self.spawned_at = time.time()  # set again when the script starts

    def in_unit(self, shell=None):
        """The service's process in the unit's own cgroup, or None. Processes
        whose command line is ``shell`` (the shell running the script, and its
        forks before they exec) are not the service."""
        if self.pattern is not None:
            try:
                members = _read(os.path.join(self.cgroup_root, self.cgroup.lstrip("/"), "cgroup.procs"), 1 << 22).split()
            except OSError:
                return None
            matches = [int(p) for p in members
                       if int(p) != self.self_pid
                       for cmd in [_cmdline(int(p))] if cmd != shell and self.pattern.search(cmd)]
            return _oldest(matches)
        pid, info = self._pid_from_file()
        # A file not written since the script started is left over from before
        # (a power cut, a SIGKILL): its PID may now be anything, even ours.
        if pid and info.st_mtime >= self.spawned_at - MTIME_SLACK and _alive(pid) and _cgroup(pid) == self.cgroup:
            return pid
        return None

    def running_already(self):
        """A process Autoheal's check would have found before starting, or None."""
        if self.pattern is not None:
            skip = _ancestors()
            matches = []
            for pid in _pids():
                if pid in skip:
                    continue
                cmd = _cmdline(pid)
                if cmd and self.pattern.search(cmd) and not _supervised_elsewhere(_cgroup(pid)):
                    matches.append(pid)
            return _oldest(matches)
        pid, info = self._pid_from_file()
        if not pid or not _alive(pid) or pid in _ancestors():
            return None
        try:
            proc = os.stat(f"/proc/{pid}")
        except OSError:
            return None
        if info.st_uid not in (0, proc.st_uid):
            _log(f"not adopting PID {pid} from {self.from_pid_file}: the file's owner (uid {info.st_uid}) "
                 f"is not the process's (uid {proc.st_uid})")
            return None
        if _start_time(pid) > info.st_mtime + 1.0:
            return None  # a file older than the process it names: left over from before
        return pid

    def _pid_from_file(self):
        """(PID, os.stat_result) from the pid file, else (None, None). Opened
        without following a symlink, read only if it is a regular file."""
        try:
            fd = os.open(self.from_pid_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None, None
        try:
            info = os.fstat(fd)
            if not _is_regular(info.st_mode):
                return None, None
            text = os.read(fd, _MAX_PID_FILE)
        finally:
            os.close(fd)
        first = text.split(b"\n", 1)[0].strip()
        if not first.isdigit() or len(first) > 10:
            return None, None
        pid = int(first)
        return (pid, info) if pid > 1 else (None, None)


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _start_time(pid: int) -> float:
    """When ``pid`` started, in seconds since the epoch."""
    ticks = os.sysconf("SC_CLK_TCK")
    boot = 0.0
    for line in _read("/proc/stat").splitlines():
        if line.startswith(b"btime "):
            boot = float(line.split()[1])
    stat = _stat(pid)
    return boot + (stat[2] / ticks if stat else 0.0)


def _descendants(root: int):
    children: "dict[int, list[int]]" = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat:
            children.setdefault(stat[1], []).append(pid)
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, ()))
    return found


def adopt(pid: int, finder: "Finder") -> None:
    """Move ``pid`` and its descendants into the unit's cgroup (best effort: a
    process that cannot move stays supervised by PID, as systemd allows for a
    root-owned PID file)."""
    procs = os.path.join(finder.cgroup_root, finder.cgroup.lstrip("/"), "cgroup.procs")
    source = _cgroup(pid)
    for member in _descendants(pid):
        try:
            with open(procs, "w") as file:
                file.write(str(member))
        except OSError as exc:
            _log(f"PID {member} stays in {source}: {exc.strerror}")
    _log(f"adopted PID {pid} ({_cmdline(pid).decode('utf-8', 'replace')[:200]}) from {source or 'an unknown cgroup'}: "
         "it was running already, so the script was not run")


def write_pid_file(path: str, pid: int) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as file:
        file.write(f"{pid}\n")
    os.replace(temporary, path)


# --- running the script ---------------------------------------------------------

def _credentials(user, group):
    """subprocess keyword arguments that run the command as ``user``."""
    if user is None and group is None:
        return {}, dict(os.environ)
    import grp
    import pwd

    env = dict(os.environ)
    kwargs = {}
    if user is not None:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        gid = entry.pw_gid
        kwargs.update(user=entry.pw_uid, extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid))
        env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name, SHELL=entry.pw_shell or "/bin/sh")
    if group is not None:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    kwargs["group"] = gid
    return kwargs, env


class _Spawned:
    """A child started by posix_spawn: ``poll()`` as subprocess.Popen's
    (None while it runs, then its exit status, -N for signal N)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: "int | None" = None

    def poll(self) -> "int | None":
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _spawn(command, env, kwargs):
    """Start *command*, stdin /dev/null. Without credentials to change, by
    posix_spawnp: subprocess (with locale, re, enum...) costs tens of
    milliseconds of a Type=forking unit's start at boot, when the machine
    is busiest. With them, subprocess.Popen, which drops to the user and
    its groups between fork and exec."""
    if not kwargs:
        return _Spawned(os.posix_spawnp(command[0], command, env,
                                        file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]))
    import subprocess

    return subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env, close_fds=True, **kwargs)


def launch(opts) -> int:
    finder = Finder(opts)
    pid_file = opts["pid_file"]
    existing = finder.running_already()
    if existing:
        adopt(existing, finder)
        write_pid_file(pid_file, existing)
        return 0
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    try:
        kwargs, env = _credentials(opts["user"], opts["group"])
    except (KeyError, ValueError) as exc:
        _log(f"no such user or group: {exc}")
        return 1
    command = opts["command"]
    finder.spawned_at = time.time()
    try:
        child = _spawn(command, env, kwargs)
    except OSError as exc:
        _log(f"cannot run {command[0]}: {exc.strerror}")
        return 1
    # A shell running a script (SHELL -c SCRIPT): its command line holds the
    # script, which may hold the pattern, and is not the service. Once it
    # exec'd a program, or when COMMAND is the program itself, it may be.
    spawned = b" ".join(os.fsencode(word) for word in command) if command[1:2] == ["-c"] else None
    exited_at = found_at = None
    what = f"a process matching {opts['pname']!r}" if opts["pname"] is not None else f"the PID in {opts['from_pid_file']}"
    while True:
        status = child.poll()
        if status:
            _log(f"the script failed (exit status {status}): a failed start")
            return status if 0 < status < 256 else 1
        pid = finder.in_unit(shell=spawned)
        now = time.monotonic()
        if pid:
            found_at = found_at or now
            # A program that daemonizes forks and exits, even when the shell
            # exec'd it: only one still running FOREGROUND_AFTER s later stays.
            if status == 0 or now - found_at >= FOREGROUND_AFTER:
                write_pid_file(pid_file, pid)
                how = "the script stays in the foreground" if status is None else "the script exited 0"
                _log(f"started: {what} is PID {pid} ({how})")
                return 0
        else:
            found_at = None
            if status == 0:
                exited_at = exited_at or now
                if now - exited_at >= opts["timeout"]:
                    _log(f"the script exited 0 but {what} did not appear within {opts['timeout']:g} s: a failed start")
                    return 1
        time.sleep(POLL)


def main(argv=None) -> int:
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    return launch(opts)


if __name__ == "__main__":
    sys.exit(main())
