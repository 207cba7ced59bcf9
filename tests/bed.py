"""A test bed of real systemd "hosts" booted on this machine.

Each host is systemd 252 running as PID 1 of its own PID, mount, UTS, IPC,
network and cgroup namespaces, on a root that is an overlay of the machine's
``/``. The overlay's upper layer is the host's *disk*: it lives on a tmpfs
that only the fleet's keeper process can see, and it is kept across power
cuts of that host. ``/run`` and ``/tmp`` are fresh tmpfs on every boot.

    with Fleet(["h1", "h2", "h3"]) as fleet:        # disks, bridge; nothing booted
        h1 = fleet["h1"]
        h1.name, h1.address                          # "h1", "10.248.0.11"
        h1.write_file("/etc/unitgen/conf.yaml", text)   # powered off or on
        fleet.boot_all()                             # parallel; each waits for multi-user.target
        h1.run(["systemctl", "is-active", "dbus.service"]).stdout
        h1.bus_address                               # "unix:path=/proc/PID/root/run/dbus/system_bus_socket"
        h1.last_boot_seconds                         # spawn -> boot finished, wall clock
        h1.power_cut()                               # SIGKILL of its PID 1; the disk stays
        h1.boot()                                    # same disk, fresh /run and /tmp

Layout, for one fleet:

* The *keeper* (this module run as ``python3 bed.py keeper``, under
  ``unshare --mount --net``) holds two namespaces: a mount namespace in which
  a tmpfs is mounted on an empty directory ``/run/unitgen-bed-XXXX`` (one
  directory per host: ``upper``, ``work``, ``root``, ``console.log``), and
  the network namespace of the bridge ``br0`` (10.248.0.1/24). The machine's
  own mount table and network never see any of it.
* Every host has a cgroup ``<cgroup2 mount>/unitgen-bed-XXXX/<name>``; its
  processes (and only those) live there, and its cgroup namespace is rooted
  there, so its systemd sees a private cgroup v2 tree.
* A boot runs ``boot.sh`` (below) as PID 1 of new namespaces entered from the
  keeper's mount namespace: it joins the host's cgroup, wires a veth ``eth0``
  (fixed MAC, so neighbours' ARP caches stay valid across reboots) into the
  bridge, mounts the overlay, a fresh /proc (with /proc/sys read-only), a
  read-only /sys with a cgroup2 on /sys/fs/cgroup, a minimal /dev, /run and
  /tmp, pivots into the overlay, checks that / is the overlay, and execs
  systemd with ``container=unitgen-bed`` and a reduced capability bounding set.
* Cleanup has one owner: the keeper. It blocks reading its stdin; when that
  reaches EOF (``Fleet.close()``, or the test process dying in any way, even
  by SIGKILL) it kills every host cgroup, removes the cgroups, unmounts the
  disks and removes the directory, and exits, which frees its namespaces.

Safety: systemd is only ever exec'd after the pivot, on the overlay;
``run`` is refused until a host's PID 1 is that systemd; file access always
goes through the host's root (live, or its disk mounted offline), so paths
and symlinks resolve in the host. Nothing of a host touches the real root.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Union

SYSTEMD = "/lib/systemd/systemd"
CONTAINER = "unitgen-bed"
NETWORK = "10.248.0"
PREFIX_LENGTH = 24
BRIDGE_ADDRESS = f"{NETWORK}.1"
FIRST_HOST_OCTET = 11
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Commands run in hosts find the test interpreter's scripts first (unitgen,
# unitgen-probe, python3 of the same environment): the lower layer is "/".
RUN_PATH = f"{os.path.dirname(sys.executable)}:{HOST_PATH}"
BOOT_TIMEOUT = 30.0
REQUIRED_COMMANDS = ("unshare", "nsenter", "ip", "mount", "umount", "pivot_root", "setpriv", "chroot")

# Units linked to /dev/null on every disk, and why.
MASKED_UNITS = {
    "postgresql.service": "the machine's PostgreSQL server: 2.3 s of every boot",
    "e2scrub_reap.service": "scans ext4 volumes the host does not have",
    "getty@.service": "no terminals in a host",
    "console-getty.service": "no console in a host",
    "apt-daily.timer": "apt jobs would run inside hosts during long drills",
    "apt-daily-upgrade.timer": "apt jobs would run inside hosts during long drills",
    "dpkg-db-backup.timer": "background job, irrelevant to a host",
    "e2scrub_all.timer": "background job, irrelevant to a host",
    "man-db.timer": "background job, irrelevant to a host",
    # Daemons installed on the machine for the real-software tests: a host
    # starts none of them unless a test puts its own unit in their place.
    "nginx.service": "Debian's nginx, installed for the real-software drills",
    "redis-server.service": "Debian's redis-server, installed for the real-software drills",
    "etcd.service": "Debian's etcd-server (alias etcd2.service), installed for the replicated-cluster drill",
}

# Every boot after a power cut starts a new journal file (the old one is
# dirty) and journald preallocates it; without a cap that is 8 MiB of RAM per
# boot, up to 1.1 GiB per host.
JOURNALD_CONF = "[Journal]\nSystemMaxUse=64M\nSystemMaxFileSize=4M\n"

# Capabilities a host's systemd never gets: each would act on the machine,
# not on the host (kernel modules, raw I/O, the clock, the kernel log, LSMs).
DROPPED_CAPABILITIES = (
    "sys_module", "sys_rawio", "sys_time", "wake_alarm", "syslog", "mac_admin", "mac_override",
)

BOOT_SCRIPT = r"""
# Run as PID 1 of a host's new namespaces: "stage1", then "stage2" as PID 1
# of a cgroup namespace rooted at the host's cgroup; or "offline CMD..." to
# run CMD chrooted in the host's disk, in a throwaway mount namespace.
# Environment: BED_DISK BED_NAME BED_CGROUP BED_KEEPER BED_ADDRESS BED_MAC
# BED_CONTAINER BED_SYSTEMD BED_CAPS (setpriv --bounding-set argument)
# BED_BINDS (paths the overlay of / cannot show, bound in at the same path).
set -eu
root=$BED_DISK/root
keeper_net=/proc/$BED_KEEPER/ns/net

mount_disk() {
    # The previous user of the disk (a boot, an offline file access) may take
    # a moment to release it: overlayfs refuses an upper dir still in use.
    options="lowerdir=/,upperdir=$BED_DISK/upper,workdir=$BED_DISK/work"
    tries=0
    until error=$(mount -t overlay overlay -o "$options" "$root" 2>&1); do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { echo "bed: $error" >&2; exit 1; }
        sleep 0.05
    done
}

wire_network() {
    nsenter --net="$keeper_net" ip link del "b-$BED_NAME" 2>/dev/null || true
    ip link add name eth0 address "$BED_MAC" type veth peer name "b-$BED_NAME" netns "$keeper_net"
    nsenter --net="$keeper_net" ip link set "b-$BED_NAME" master br0 up
    ip link set lo up
    ip address add "$BED_ADDRESS" dev eth0
    ip link set eth0 up
}

mount_api_filesystems() {
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mount --bind "$root/proc/sys" "$root/proc/sys"
    mount -o remount,bind,ro "$root/proc/sys"
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
}

bind_project() {
    # The checkout and the interpreter, where the overlay cannot show them
    # (under /tmp or /run, or on another filesystem): same path inside.
    printf '%s\n' "$BED_BINDS" | while IFS= read -r path; do
        [ -n "$path" ] || continue
        mkdir -p "$root$path"
        mount --rbind "$path" "$root$path"
    done
}

make_dev() {
    dev=$root/dev
    mount -t tmpfs -o mode=755,nosuid,size=4m tmpfs "$dev"
    mknod -m 666 "$dev/null" c 1 3
    mknod -m 666 "$dev/zero" c 1 5
    mknod -m 666 "$dev/full" c 1 7
    mknod -m 666 "$dev/random" c 1 8
    mknod -m 666 "$dev/urandom" c 1 9
    mknod -m 666 "$dev/tty" c 5 0
    mkdir "$dev/pts" "$dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$dev/pts"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dev/shm"
    ln -s pts/ptmx "$dev/ptmx"
    ln -s /proc/self/fd "$dev/fd"
    ln -s /proc/self/fd/0 "$dev/stdin"
    ln -s /proc/self/fd/1 "$dev/stdout"
    ln -s /proc/self/fd/2 "$dev/stderr"
}

case "$1" in
stage1)
    echo 0 > "$BED_CGROUP/cgroup.procs"
    exec unshare --cgroup -- /bin/sh "$0" stage2
    ;;
stage2)
    wire_network
    hostname "$BED_NAME"
    mount_disk
    mount_api_filesystems
    bind_project
    make_dev
    cd "$root"
    pivot_root . .
    umount -l .
    if [ "$(stat -f -c %T /)" != overlayfs ]; then
        echo "bed: / is not the host's overlay; not starting systemd" >&2
        exit 1
    fi
    exec env -i container=$BED_CONTAINER \
        setpriv --bounding-set "$BED_CAPS" \
        "$BED_SYSTEMD" --system --unit=multi-user.target
    ;;
offline)
    shift
    mount_disk
    exec chroot "$root" "$@"
    ;;
esac
echo "bed: unknown stage $1" >&2
exit 2
"""

# Shell snippets run with the host's root as "/" (see Host._disk_command).
_WRITE = 'set -e; mkdir -p -- "$(dirname -- "$1")"; cat > "$1.bed-new"; chmod "$2" "$1.bed-new"; mv -f -- "$1.bed-new" "$1"'
_READ = '[ -e "$1" ] || exit 3; exec cat -- "$1"'
_EXISTS = '[ -e "$1" ] || [ -L "$1" ]'
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,12}$")  # "b-" + name must fit IFNAMSIZ


class BedError(RuntimeError):
    """The bed could not do what was asked (setup, boot, power cut, teardown)."""


class BootError(BedError):
    """A host did not reach multi-user.target cleanly."""


class CommandFailed(subprocess.CalledProcessError):
    """A command run in a host exited non-zero; its stderr is in the message."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}".rstrip()


def unavailable_reason() -> Optional[str]:
    """Why this machine cannot boot a bed host, in one line; None if it can."""
    if os.geteuid() != 0:
        return "the systemd test bed needs root"
    if not os.access(SYSTEMD, os.X_OK):
        return f"the systemd test bed needs {SYSTEMD}"
    for command in REQUIRED_COMMANDS:
        if not shutil.which(command, path=HOST_PATH):
            return f"the systemd test bed needs the {command} command"
    with open("/proc/filesystems") as filesystems:
        if "overlay" not in filesystems.read():
            return "the systemd test bed needs overlayfs"
    if cgroup2_mount() is None:
        return "the systemd test bed needs a cgroup v2 hierarchy"
    return None


def hidden_from_hosts() -> List[str]:
    """The project's checkout and this interpreter's prefixes, where a host's
    overlay of / would not show them: under /tmp or /run (fresh in every
    host), or on another filesystem than / (an overlay shows one filesystem).
    Hosts see them bound in at the same path, so that unitgen, unitgen-probe
    and the stand-ins run there wherever CI put the clone or its venv."""
    root_device = os.stat("/").st_dev
    candidates = {os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.prefix, sys.base_prefix}
    hidden = []
    for path in sorted(os.path.realpath(p) for p in candidates):
        under_fresh = any(path == top or path.startswith(top + "/") for top in ("/tmp", "/run"))
        if under_fresh or os.stat(path).st_dev != root_device:
            if not any(path.startswith(h + "/") for h in hidden):
                hidden.append(path)
    return hidden


def cgroup2_mount() -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted, or None."""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    return None


def _wait_until(predicate, timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BedError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _cgroup_empty(path: str) -> bool:
    try:
        with open(os.path.join(path, "cgroup.events")) as events:
            return "populated 0" in events.read()
    except FileNotFoundError:
        return True


def _execute(argv: Sequence[str], *, input: Optional[bytes] = None, timeout: float,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run argv in a session of its own; on timeout kill what it started."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(process)
        raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL every process of process's session but process itself, then reap it.

    process is nsenter, which forked the command into a host's PID namespace
    and exits once it has reaped it. Killed first, it would orphan the
    command to the machine's init, whose late reaping would hold up that
    host's next power cut (the PID namespace ends only when all are reaped).
    """
    for pid in _session_members(process.pid):
        if pid != process.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()  # nsenter had not forked yet: nothing to orphan
    process.communicate()


def _session_members(session: int) -> list:
    members = []
    for entry in os.listdir("/proc"):
        stat = _read_text(f"/proc/{entry}/stat") if entry.isdigit() else ""
        if stat and int(stat.rsplit(")", 1)[1].split()[3]) == session:
            members.append(int(entry))
    return members


def _decoded(argv: Sequence[str], result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """result as text, with argv (not the nsenter wrapping) as its args."""
    return subprocess.CompletedProcess(list(argv), result.returncode, result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


class Host:
    """One systemd host of a Fleet. Get it with ``fleet[name]``."""

    def __init__(self, fleet: Fleet, name: str, index: int):
        octet = FIRST_HOST_OCTET + index
        self.fleet = fleet
        self.name = name
        self.address = f"{NETWORK}.{octet}"
        self.mac = f"02:00:0a:f8:00:{octet:02x}"
        self.pid: Optional[int] = None            # PID 1 of the host, as seen from here
        self.boots = 0
        self.last_boot_seconds: Optional[float] = None
        self.boot_seconds: list = []               # every boot waited for, in order
        self._process: Optional[subprocess.Popen] = None   # unshare, parent of PID 1
        self._pidfd: Optional[int] = None
        self._spawned_at = 0.0
        self._spawned_wall = 0.0
        self._timing = False                       # a boot not yet waited for
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = f"up, pid {self.pid}" if self.is_up else "off"
        return f"<Host {self.name} {self.address} {state}>"

    # -- where things are -------------------------------------------------

    @property
    def is_up(self) -> bool:
        """True while the host's PID 1 runs (between boot and power cut)."""
        return self._process is not None and self._process.poll() is None

    @property
    def bus_address(self) -> str:
        """D-Bus address of the host's system bus, usable from this machine."""
        return f"unix:path=/proc/{self._require_up()}/root/run/dbus/system_bus_socket"

    @property
    def cgroup(self) -> str:
        """This host's cgroup on the machine; every process of the host is below it."""
        return os.path.join(self.fleet.cgroup, self.name)

    @property
    def disk(self) -> str:
        """The host's directory in the keeper's mount namespace."""
        return os.path.join(self.fleet.directory, self.name)

    def console(self) -> str:
        """What the boot script printed, every boot (why a boot failed before systemd)."""
        with open(self.fleet.keeper_path(self.disk, "console.log"), errors="replace") as log:
            return log.read()

    # -- power ------------------------------------------------------------

    def boot(self, wait: bool = True, timeout: float = BOOT_TIMEOUT) -> None:
        """Power on: a new systemd on the same disk, fresh /run and /tmp.

        Returns once PID 1 is systemd (so ``run`` is safe), and with ``wait``
        once the boot has finished (see ``wait_booted``).
        """
        with self._lock:
            if self.is_up:
                raise BedError(f"{self.name} is already up")
            self._await_down()  # forget a previous boot that ended by itself
            self._spawn()
            self._await_systemd(timeout)
        if wait:
            self.wait_booted(timeout)

    def wait_booted(self, timeout: float = BOOT_TIMEOUT, allow_degraded: bool = False) -> str:
        """Wait until systemd has finished booting; return its state.

        "running" is success; "degraded" raises BootError naming the failed
        units unless ``allow_degraded``. Sets ``last_boot_seconds``.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_up:
                raise BootError(f"{self.name} went down while booting\n{self._console_tail()}")
            state = self._system_state(max(deadline - time.monotonic(), 0.1))
            if state == "running" or (state == "degraded" and allow_degraded):
                break
            if state == "degraded":
                failed = self.systemctl("--failed", "--no-legend", "--plain", check=False)
                raise BootError(f"{self.name} booted degraded; failed units:\n{failed}")
            if state not in ("", "initializing", "starting"):
                raise BootError(f"{self.name}: system state {state!r}\n{self._diagnosis()}")
            if time.monotonic() > deadline:
                raise BootError(f"{self.name} did not finish booting in {timeout:.0f} s\n{self._diagnosis()}")
            time.sleep(0.02)
        if self._timing:
            self._timing = False
            self.last_boot_seconds = time.monotonic() - self._spawned_at
            self.boot_seconds.append(self.last_boot_seconds)
        return state

    def wait_active(self, *units: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until every one of units is "active"; BedError with their status if not.

        For hosts whose boot is held by units still starting (a probe waiting
        for another host): boot(wait=False), then wait for what matters.
        """
        deadline = time.monotonic() + timeout
        while set(self.run(["systemctl", "is-active", *units], check=False).stdout.split()) != {"active"}:
            if time.monotonic() > deadline:
                status = self.systemctl("status", "--no-pager", "--full", *units, check=False)
                raise BedError(f"{self.name}: not all active after {timeout:.0f} s:\n{status}")
            time.sleep(0.05)

    def power_cut(self) -> None:
        """SIGKILL the host's PID 1 and wait until everything in it is gone.

        A no-op on a host that is off. The disk stays as the kill left it.
        """
        with self._lock:
            self._kill()
            self._await_down()

    # -- commands ---------------------------------------------------------

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            input: Union[str, bytes, None] = None, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Run argv inside the host (all its namespaces) as root; text result.

        The environment is RUN_PATH, LANG, HOME plus ``env``. With ``check``
        a non-zero exit raises CommandFailed (stderr in the message). On
        timeout the command is killed (inside the host too).
        """
        pid = self._require_up()
        environment = {"PATH": RUN_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        data = input.encode() if isinstance(input, str) else input
        result = _decoded(argv, _execute(["nsenter", "-t", str(pid), "-a", "--", *argv],
                                         input=data, timeout=timeout, env=environment))
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, result.args, result.stdout, f"[{self.name}] {result.stderr}")
        return result

    def systemctl(self, *args: str, check: bool = True) -> str:
        """``systemctl ARGS`` in the host; its stdout."""
        return self.run(["systemctl", *args], check=check).stdout

    def journal(self, unit: Optional[str] = None, this_boot: bool = True) -> str:
        """The host's journal (of one unit), ``short-precise`` format.

        The journal is persistent (/var/log/journal is on the disk), so
        ``this_boot=False`` shows every boot since the fleet was made. A host
        shares the machine's kernel, hence its boot ID, so journalctl --boot
        cannot tell its boots apart: this boot is "since its PID 1 was spawned".
        """
        argv = ["journalctl", "--no-pager", "--quiet", "-o", "short-precise"]
        if this_boot:
            argv.append(f"--since=@{self._spawned_wall:.6f}")
        if unit:
            argv += ["--unit", unit]
        return self.run(argv).stdout

    # -- the disk ---------------------------------------------------------

    def write_file(self, path: str, content: Union[str, bytes], mode: int = 0o644) -> None:
        """Write a file (and its parent directories) onto the host's disk.

        Works powered off or on; the file is replaced atomically, owned by root.
        """
        data = content.encode() if isinstance(content, str) else content
        self._disk_shell(_WRITE, path, f"{mode:o}", input=data, check=True)

    def read_file(self, path: str) -> str:
        """Text of a file of the host (its live root when up, else its disk)."""
        result = self._disk_shell(_READ, path)
        if result.returncode == 3:
            raise FileNotFoundError(f"{self.name}:{path}")
        if result.returncode != 0:
            raise BedError(f"{self.name}: cannot read {path}: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode()

    def exists(self, path: str) -> bool:
        """Whether path exists in the host (a dangling symlink counts)."""
        return self._disk_shell(_EXISTS, path).returncode == 0

    # -- internals --------------------------------------------------------

    def _require_up(self) -> int:
        if not self.is_up or self.pid is None:
            raise BedError(f"{self.name} is powered off")
        return self.pid

    def _spawn(self) -> None:
        self.boots += 1
        with open(self.fleet.keeper_path(self.disk, "console.log"), "ab") as log:
            log.write(f"--- boot {self.boots} of {self.name}\n".encode())
            log.flush()
            self._spawned_at = time.monotonic()
            self._spawned_wall = time.time()  # hosts share the machine's clock
            self._timing = True
            self._process = subprocess.Popen(
                self.fleet.keeper_command("-m", "unshare", "--pid", "--fork", "--kill-child=SIGKILL",
                                          "--mount", "--uts", "--ipc", "--net", "--propagation", "private",
                                          "--", "/bin/sh", self.fleet.boot_script, "stage1"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._boot_environment(), start_new_session=True)

    def _boot_environment(self) -> dict:
        return {
            "PATH": HOST_PATH,
            "BED_DISK": self.disk,
            "BED_NAME": self.name,
            "BED_CGROUP": self.cgroup,
            "BED_KEEPER": str(self.fleet.keeper_pid),
            "BED_ADDRESS": f"{self.address}/{PREFIX_LENGTH}",
            "BED_MAC": self.mac,
            "BED_CONTAINER": CONTAINER,
            "BED_SYSTEMD": SYSTEMD,
            "BED_CAPS": ",".join(f"-{capability}" for capability in DROPPED_CAPABILITIES),
            "BED_BINDS": "\n".join(hidden_from_hosts()),
        }

    def _await_systemd(self, timeout: float) -> None:
        """Wait until PID 1 of the new namespaces has exec'd systemd."""
        process = self._process
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise BootError(f"{self.name}: boot script failed (exit {process.returncode})\n"
                                f"{self._console_tail()}")
            pid = self._pid1_candidate()
            if pid is not None and _read_text(f"/proc/{pid}/comm") == "systemd\n":
                break
            if time.monotonic() > deadline:
                self._kill()
                self._await_down()
                raise BootError(f"{self.name}: systemd not started in {timeout:.0f} s\n{self._console_tail()}")
            time.sleep(0.005)
        self._pidfd = os.pidfd_open(pid)
        self.pid = pid

    def _pid1_candidate(self) -> Optional[int]:
        pid = self._process.pid
        children = _read_text(f"/proc/{pid}/task/{pid}/children").split()
        return int(children[0]) if children else None

    def _system_state(self, timeout: float) -> str:
        """``systemctl is-system-running --wait``; "" while systemd cannot answer yet."""
        if not os.path.exists(f"/proc/{self._require_up()}/root/run/systemd/private"):
            return ""
        try:
            result = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "starting"
        state = result.stdout.strip()
        return "" if state == "offline" else state  # "offline": no answer from systemd

    def _diagnosis(self) -> str:
        if not self.is_up:
            return self._console_tail()
        jobs = self.systemctl("list-jobs", "--no-pager", check=False)
        failed = self.systemctl("--failed", "--no-legend", "--plain", check=False)
        return f"jobs:\n{jobs}\nfailed units:\n{failed}"

    def _console_tail(self, lines: int = 30) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def _kill(self) -> None:
        """SIGKILL PID 1 (by pidfd: never a recycled PID)."""
        if self._pidfd is not None and self.is_up:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.is_up:  # PID 1 not yet known: kill its parent, whose death kills it
            self._process.kill()

    def _await_down(self) -> None:
        """Wait until unshare reaped PID 1 and the host's cgroup is empty."""
        if self._process is not None:
            self._process.wait(timeout=BOOT_TIMEOUT)
        _wait_until(lambda: _cgroup_empty(self.cgroup), BOOT_TIMEOUT, f"{self.name}'s processes to end")
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd = None
        self.pid = None

    def _disk_shell(self, script: str, *args: str, input: Optional[bytes] = None,
                    check: bool = False) -> subprocess.CompletedProcess:
        """Run ``sh -c script`` with the host's root as "/", bytes result."""
        if not args or not args[0].startswith("/"):
            raise ValueError(f"need an absolute path in the host, not {args[:1]}")
        with self._lock:
            result = _execute(self._disk_command(["/bin/sh", "-c", script, "sh", *args]),
                              input=input, timeout=BOOT_TIMEOUT, env=self._boot_environment())
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, result.args, result.stdout,
                                f"[{self.name}] {result.stderr.decode(errors='replace')}")
        return result

    def _disk_command(self, argv: list) -> list:
        """argv wrapped to run chrooted in the host's root.

        Up: in the host's mount namespace (its live root). Off: the disk is
        mounted in a throwaway mount namespace made from the keeper's, which
        vanishes with the command. Either way symlinks resolve in the host.
        """
        if self.is_up:
            return ["nsenter", "-t", str(self._require_up()), "-m", "--", *argv]
        return self.fleet.keeper_command("-m", "unshare", "--mount", "--propagation", "private", "--",
                                         "/bin/sh", self.fleet.boot_script, "offline", *argv)


def _read_text(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class Fleet:
    """A set of hosts on one bridge; a context manager that tears all down.

    Creating it starts the keeper and prepares each host's disk (hostname,
    /etc/hosts naming every host, its own machine-id, masked units, /root
    made traversable); it boots nothing. ``unmask``: units of MASKED_UNITS
    left as the machine has them (e.g. Debian's nginx.service, enabled).
    """

    def __init__(self, names: Iterable[str], *, parent_directory: str = "/run",
                 unmask: Iterable[str] = ()):
        names = list(names)
        _check_names(names)
        self.unmask = frozenset(unmask)  # units of MASKED_UNITS this fleet's hosts keep
        unknown = self.unmask - set(MASKED_UNITS)
        if unknown:
            raise ValueError(f"unmask: not masked by the bed: {sorted(unknown)}")
        reason = unavailable_reason()
        if reason:
            raise BedError(reason)
        self.directory = tempfile.mkdtemp(prefix="unitgen-bed-", dir=parent_directory)
        self.cgroup = os.path.join(cgroup2_mount(), os.path.basename(self.directory))
        self.boot_script = os.path.join(self.directory, "boot.sh")
        self.hosts = {name: Host(self, name, index) for index, name in enumerate(names)}
        self._keeper: Optional[subprocess.Popen] = None
        self._closed = False
        atexit.register(self.close)
        try:
            self._start_keeper()
            for host in self:
                self._prepare_disk(host)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def keeper_pid(self) -> int:
        return self._keeper.pid

    def keeper_path(self, *parts: str) -> str:
        """A path of the keeper's mount namespace, openable from here."""
        return os.path.join(f"/proc/{self.keeper_pid}/root", *(part.lstrip("/") for part in parts))

    def keeper_command(self, namespaces: str, *argv: str) -> list:
        """argv entered into the keeper's namespaces ("-m" mount, "-n" network)."""
        return ["nsenter", "-t", str(self.keeper_pid), namespaces, "--", *argv]

    # -- power ------------------------------------------------------------

    def boot_all(self, order: Optional[Sequence[str]] = None, delays: Optional[Sequence[float]] = None,
                 wait: bool = True, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot hosts (all, or those named in ``order``, in that order).

        ``delays[i]`` seconds pass before the i-th boot. Boots overlap; with
        ``wait`` this returns when every one has finished (BootError naming
        each host that failed).
        """
        hosts = [self[name] for name in (order if order is not None else self.hosts)]
        delays = list(delays) if delays is not None else [0.0] * len(hosts)
        if len(delays) != len(hosts):
            raise ValueError("one delay per booted host")
        for host, delay in zip(hosts, delays):
            time.sleep(delay)
            host.boot(wait=False, timeout=timeout)
        if wait:
            self._wait_all(hosts, timeout)

    def power_cut_all(self) -> None:
        """Cut every host at once (all PID 1s killed before waiting for any)."""
        for host in self:
            host._kill()
        for host in self:
            host._await_down()

    def run_on_bridge(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """Run argv from the bridge's address (10.248.0.1), outside every host: an observer.

        Only the network is the fleet's; files and processes are the machine's.
        """
        return _decoded(argv, _execute(self.keeper_command("-n", *argv), timeout=timeout))

    def close(self) -> None:
        """Power everything off and remove every trace; idempotent.

        The keeper does the removal (see the module docstring); this waits for
        it and raises BedError if it reports a problem.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            if self._keeper is not None:
                self.power_cut_all()
        finally:
            self._stop_keeper()

    # -- internals --------------------------------------------------------

    def _start_keeper(self) -> None:
        self._keeper = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             sys.executable, os.path.abspath(__file__), "keeper", self.directory, self.cgroup, *self.hosts],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        if self._keeper.stdout.readline() != b"ready\n":
            raise BedError("the bed's keeper did not start (its error follows)")

    def _stop_keeper(self) -> None:
        """Close the keeper's stdin (its signal to clean up) and wait for it."""
        if self._keeper is None:
            os.rmdir(self.directory)
            return
        _, errors = self._keeper.communicate(timeout=2 * BOOT_TIMEOUT)
        if self._keeper.returncode != 0:
            raise BedError(f"the bed's keeper failed (exit {self._keeper.returncode}): "
                           f"{errors.decode(errors='replace').strip()}")

    def _prepare_disk(self, host: Host) -> None:
        """Write the host's identity and masks into its (fresh, empty) upper layer."""
        upper = self.keeper_path(host.disk, "upper")
        hosts_file = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts_file += "".join(f"{other.address}\t{other.name}\n" for other in self)
        _make_dirs(upper, "etc/systemd/system", 0o755)
        _make_dirs(upper, "etc/systemd/journald.conf.d", 0o755)
        _make_dirs(upper, "root", 0o711)  # let non-root services run /root/.pyenv's python
        for relative, text in (("etc/hostname", f"{host.name}\n"), ("etc/hosts", hosts_file),
                               ("etc/machine-id", f"{uuid.uuid4().hex}\n"),
                               ("etc/systemd/journald.conf.d/unitgen-bed.conf", JOURNALD_CONF)):
            with open(os.path.join(upper, relative), "w") as file:
                file.write(text)
            os.chmod(os.path.join(upper, relative), 0o644)
        for unit in set(MASKED_UNITS) - self.unmask:
            os.symlink("/dev/null", os.path.join(upper, "etc/systemd/system", unit))

    def _wait_all(self, hosts: Sequence[Host], timeout: float) -> None:
        with ThreadPoolExecutor(max_workers=len(hosts) or 1) as pool:
            futures = {host.name: pool.submit(host.wait_booted, timeout) for host in hosts}
        failures = [f"{name}: {future.exception()}" for name, future in futures.items() if future.exception()]
        if failures:
            raise BootError("\n".join(failures))


def _check_names(names: Sequence[str]) -> None:
    if not names or len(set(names)) != len(names):
        raise ValueError(f"need distinct host names, got {names}")
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"host name {name!r}: lowercase letters, digits, '-', at most 13 characters")
    if len(names) > 254 - FIRST_HOST_OCTET:
        raise ValueError("too many hosts for one /24")


def _make_dirs(base: str, relative: str, mode: int) -> None:
    """Create base/relative with every component mode 0o755, the last ``mode``."""
    path = base
    for part in relative.split("/"):
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path)
            os.chmod(path, 0o755)
    os.chmod(path, mode)


# -- the keeper: ``python3 bed.py keeper DIRECTORY CGROUP NAME...`` ---------
# Run by Fleet under ``unshare --mount --net``: sets up, says "ready", waits
# for EOF on stdin, then removes everything, whatever happened meanwhile.

def _keeper_main(directory: str, cgroup: str, names: Sequence[str]) -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(1))
    errors: list = []
    try:
        _keeper_setup(directory, cgroup, names)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.buffer.read()
    except BaseException as error:  # reported below, after the teardown
        errors.append(f"setup: {error}")
    finally:
        errors += _keeper_teardown(directory, cgroup, names)
    if errors:
        try:
            sys.stderr.write("\n".join(errors) + "\n")
        except OSError:
            pass  # nobody is listening any more
    return 1 if errors else 0


def _keeper_setup(directory: str, cgroup: str, names: Sequence[str]) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=700", "unitgen-bed", directory], check=True)
    with open(os.path.join(directory, "boot.sh"), "w") as script:
        script.write(BOOT_SCRIPT)
    os.mkdir(cgroup)
    for name in names:
        os.mkdir(os.path.join(cgroup, name))
        for part in ("upper", "work", "root"):
            os.makedirs(os.path.join(directory, name, part))
    for command in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "br0", "type", "bridge"],
                    ["ip", "address", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LENGTH}", "dev", "br0"],
                    ["ip", "link", "set", "br0", "up"]):
        subprocess.run(command, check=True)


def _keeper_teardown(directory: str, cgroup: str, names: Sequence[str]) -> list:
    """Kill and remove the host cgroups, unmount and remove the directory."""
    errors = []
    for name in names:
        try:
            _remove_cgroup(os.path.join(cgroup, name))
        except (OSError, BedError) as error:
            errors.append(f"cgroup {name}: {error}")
    for step in (lambda: _rmdir_patiently(cgroup),
                 # Lazy: a dead fleet's orphans may hold files (console logs)
                 # on the disks for a few more milliseconds.
                 lambda: subprocess.run(["umount", "--lazy", directory], check=True, capture_output=True),
                 lambda: _rmdir_patiently(directory)):
        try:
            step()
        except (OSError, BedError, subprocess.CalledProcessError) as error:
            errors.append(str(error))
    return errors


def _remove_cgroup(path: str) -> None:
    if not os.path.isdir(path):
        return
    if not _cgroup_empty(path):
        with open(os.path.join(path, "cgroup.kill"), "w") as kill:
            kill.write("1")
        _wait_until(lambda: _cgroup_empty(path), BOOT_TIMEOUT, f"{path} to empty")
    for directory in sorted((entry[0] for entry in os.walk(path)), key=len, reverse=True):
        _rmdir_patiently(directory)


def _rmdir_patiently(path: str) -> None:
    """rmdir, retried while the kernel still calls the directory busy."""
    def removed() -> bool:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            return False
        return True
    _wait_until(removed, 5, f"removal of {path}")


if __name__ == "__main__" and sys.argv[1:2] == ["keeper"]:
    sys.exit(_keeper_main(sys.argv[2], sys.argv[3], sys.argv[4:]))
