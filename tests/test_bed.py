"""Tests of the systemd test bed itself (tests/bed.py).

Timings are printed (run with -s to see them), never asserted.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import bed
from conftest import bed_available

LISTENER = textwrap.dedent("""
    import socket
    server = socket.create_server(("0.0.0.0", 7000))
    while True:
        connection, _ = server.accept()
        connection.sendall(socket.gethostname().encode())
        connection.close()
""")

CLIENT = textwrap.dedent("""
    import socket, sys, time
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((sys.argv[1], 7000), timeout=1) as connection:
                print(connection.recv(100).decode())
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
""")


def host_processes(host):
    """PIDs (as seen from here) of every process in the host's cgroup tree."""
    pids = []
    for directory, _, files in os.walk(host.cgroup):
        if "cgroup.procs" in files:
            with open(os.path.join(directory, "cgroup.procs")) as procs:
                pids += [int(pid) for pid in procs.read().split()]
    return pids


def host_processes_in(host, relative_cgroup):
    with open(os.path.join(host.cgroup, relative_cgroup, "cgroup.procs")) as procs:
        return [int(pid) for pid in procs.read().split()]


def alive(pid):
    """Whether pid is a live process (a zombie awaiting its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def network_namespace(pid):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def live_network_namespaces():
    """Inodes of the network namespaces of every process on the machine."""
    inodes = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                inodes.add(network_namespace(entry))
            except (FileNotFoundError, PermissionError):
                pass
    return inodes


def named_network_namespaces():
    """Inodes of the namespaces ``ip netns`` names (other engineers' tests make some)."""
    inodes = set()
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
        try:
            inodes.add(os.stat(os.path.join("/run/netns", name)).st_ino)
        except OSError:
            pass
    return inodes


def traces(directory, cgroup, pids, namespaces):
    """What is left of a fleet on the machine; empty when all is gone."""
    left = []
    if os.path.exists(directory):
        left.append(f"directory {directory}")
    if os.path.exists(cgroup):
        left.append(f"cgroup {cgroup}")
    with open("/proc/self/mountinfo") as mountinfo:
        left += [f"mount {line.strip()}" for line in mountinfo if directory in line]
    left += [f"process {pid}" for pid in pids if alive(pid)]
    left += [f"network namespace {inode}" for inode in namespaces & live_network_namespaces()]
    left += [f"ip netns entry for {inode}" for inode in namespaces & named_network_namespaces()]
    return left


def wait_for_no_traces(directory, cgroup, pids, namespaces, timeout=30.0):
    deadline = time.monotonic() + timeout
    while traces(directory, cgroup, pids, namespaces) and time.monotonic() < deadline:
        time.sleep(0.1)
    return traces(directory, cgroup, pids, namespaces)


def test_host_boots_to_multi_user_target(make_fleet):
    host = make_fleet(["h1"])["h1"]
    host.boot()
    print(f"\nh1 booted in {host.last_boot_seconds * 1000:.0f} ms")
    assert host.is_up
    assert host.systemctl("is-active", "multi-user.target").strip() == "active"
    assert host.systemctl("is-system-running").strip() == "running"
    assert host.run(["hostname"]).stdout.strip() == "h1"
    assert host.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert host.run(["stat", "-f", "-c", "%T", "/"]).stdout.strip() == "overlayfs"
    assert host.run(["systemd-detect-virt", "--container"], check=False).stdout.strip() == "container-other"
    assert host.run(["python3", "-c", "import sys; print(sys.prefix)"]).stdout.strip() == sys.prefix
    for unit in bed.MASKED_UNITS:
        assert host.systemctl("is-enabled", unit, check=False).strip() == "masked"


def test_disk_persists_across_power_cut_while_run_and_tmp_are_fresh(make_fleet):
    host = make_fleet(["h1"])["h1"]
    host.write_file("/etc/unitgen/conf.yaml", "written: while off\n", mode=0o600)
    host.boot()
    host.run(["sh", "-c", "echo disk > /var/lib/bed-marker; echo run > /run/bed-marker; echo tmp > /tmp/bed-marker"])
    host.write_file("/etc/unitgen/extra.yaml", "written: while on\n")
    machine_id = host.read_file("/etc/machine-id")

    host.power_cut()
    assert not host.is_up
    assert host.read_file("/var/lib/bed-marker") == "disk\n"
    host.boot()

    assert host.read_file("/etc/unitgen/conf.yaml") == "written: while off\n"
    assert host.run(["stat", "-c", "%a %U", "/etc/unitgen/conf.yaml"]).stdout.strip() == "600 root"
    assert host.read_file("/etc/unitgen/extra.yaml") == "written: while on\n"
    assert host.read_file("/var/lib/bed-marker") == "disk\n"
    assert not host.exists("/run/bed-marker")
    assert not host.exists("/tmp/bed-marker")
    assert host.read_file("/etc/machine-id") == machine_id
    with pytest.raises(FileNotFoundError):
        host.read_file("/etc/unitgen/missing.yaml")


def test_hosts_reach_each_other_by_name_over_tcp(make_fleet):
    fleet = make_fleet(["h1", "h2", "h3"])
    fleet.boot_all()
    print("\nparallel boots: " + ", ".join(f"{h.name} {h.last_boot_seconds * 1000:.0f} ms" for h in fleet))
    fleet["h2"].run(["systemd-run", "--unit=bed-listener", sys.executable, "-c", LISTENER])

    assert fleet["h1"].run([sys.executable, "-c", CLIENT, "h2"]).stdout.strip() == "h2"
    assert fleet["h3"].run([sys.executable, "-c", CLIENT, "h2"]).stdout.strip() == "h2"
    from_bridge = fleet.run_on_bridge([sys.executable, "-c", CLIENT, fleet["h2"].address])
    assert from_bridge.stdout.strip() == "h2", from_bridge.stderr
    assert f"{fleet['h3'].address}\th3" in fleet["h1"].read_file("/etc/hosts")


def test_transient_service_runs_under_the_hosts_systemd(make_fleet):
    host = make_fleet(["h1"])["h1"]
    host.boot()
    host.run(["systemd-run", "--unit=bed-sleep", "sh", "-c", "echo sleeping; exec sleep infinity"])
    host.wait_active("bed-sleep.service", "dbus.service")
    main_pid = int(host.systemctl("show", "-p", "MainPID", "--value", "bed-sleep.service"))
    assert main_pid > 1
    assert "0::/system.slice/bed-sleep.service" in host.run(["cat", f"/proc/{main_pid}/cgroup"]).stdout.split()

    (outer_pid,) = host_processes_in(host, "system.slice/bed-sleep.service")
    with open(f"/proc/{outer_pid}/status") as status:
        namespace_pids = next(line for line in status if line.startswith("NSpid:")).split()[1:]
    assert int(namespace_pids[-1]) == main_pid
    assert "sleeping" in host.journal("bed-sleep.service")


def test_power_cut_kills_everything_in_the_host_and_reboots_repeatedly(make_fleet):
    host = make_fleet(["h1"])["h1"]
    for cycle in range(3):
        host.boot()
        host.run(["systemd-run", "--unit=bed-sleep", "sleep", "infinity"])
        pids = host_processes(host)
        assert host.pid in pids and len(pids) > 3
        host.power_cut()
        assert not host.is_up and host.pid is None
        assert [pid for pid in pids if alive(pid)] == []
        assert host_processes(host) == []
        with pytest.raises(bed.BedError, match="powered off"):
            host.run(["true"])
    print("\nboots: " + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in host.boot_seconds))


def test_run_timeout_kills_the_command_inside_the_host(make_fleet):
    host = make_fleet(["h1"])["h1"]
    host.boot()
    with pytest.raises(subprocess.TimeoutExpired):
        host.run(["sh", "-c", "sleep 101 & sleep 102"], timeout=0.5)
    assert "sleep" not in host.run(["ps", "-e", "-o", "comm="]).stdout.split()
    host.power_cut()  # not held up by orphans of the killed command


def wanted_at_boot(host, unit, service_section):
    """Install unit on the host's disk, wanted by multi-user.target (a drop-in: no enable)."""
    host.write_file(f"/etc/systemd/system/{unit}", f"[Service]\nType=oneshot\n{service_section}\n")
    host.write_file(f"/etc/systemd/system/multi-user.target.d/{unit}.conf", f"[Unit]\nWants={unit}\n")


def test_failed_unit_at_boot_is_reported(make_fleet):
    host = make_fleet(["h1"])["h1"]
    wanted_at_boot(host, "bed-fail.service", "ExecStart=/bin/false")
    with pytest.raises(bed.BootError, match="bed-fail.service"):
        host.boot()
    assert host.wait_booted(allow_degraded=True) == "degraded"


def test_boot_that_does_not_finish_names_the_waiting_jobs(make_fleet):
    host = make_fleet(["h1"])["h1"]
    wanted_at_boot(host, "bed-slow.service", "ExecStart=/bin/sleep 600")
    with pytest.raises(bed.BootError, match="did not finish booting(.|\n)*bed-slow.service"):
        host.boot(timeout=2)
    host.power_cut()
    assert not host.is_up


def test_system_bus_is_reachable_from_the_machine(make_fleet):
    host = make_fleet(["h1"])["h1"]
    host.boot()
    version = subprocess.run(
        ["busctl", f"--address={host.bus_address}", "get-property", "org.freedesktop.systemd1",
         "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Version"],
        capture_output=True, text=True, check=True).stdout
    assert version.startswith('s "')


def test_non_root_service_can_run_the_test_python(make_fleet):
    """/root is mode 700 on the machine and 711 on a host's disk."""
    host = make_fleet(["h1"])["h1"]
    host.boot()
    result = host.run(["systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=nobody",
                       sys.executable, "-c", "import yaml, os; print(os.getuid())"])
    assert result.stdout.strip() == "65534"


def test_machine_tmp_is_untouched_by_boots(make_fleet):
    host = make_fleet(["h1"])["h1"]
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="bed-marker-") as marker:
        host.boot()
        host.power_cut()
        host.boot()
        assert os.path.exists(marker.name)
        assert not host.exists(marker.name)


def test_teardown_after_a_failing_test_leaves_nothing_behind():
    bed_available()
    with pytest.raises(RuntimeError, match="a test failed"):
        with bed.Fleet(["h1", "h2"]) as fleet:
            fleet.boot_all()
            fleet["h1"].run(["systemd-run", "--unit=bed-sleep", "sleep", "infinity"])
            pids = [fleet.keeper_pid] + [pid for host in fleet for pid in host_processes(host)]
            namespaces = {network_namespace(pid) for pid in pids}
            directory, cgroup = fleet.directory, fleet.cgroup
            raise RuntimeError("a test failed")
    assert traces(directory, cgroup, pids, namespaces) == []


KILLED_OWNER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import bed
    fleet = bed.Fleet(["h1", "h2"])
    fleet.boot_all()
    fleet["h1"].run(["systemd-run", "--unit=bed-sleep", "sleep", "infinity"])
    pids = [fleet.keeper_pid] + [int(pid) for host in fleet for directory, _, _ in os.walk(host.cgroup)
                                 for pid in open(os.path.join(directory, "cgroup.procs")).read().split()]
    print(json.dumps({"directory": fleet.directory, "cgroup": fleet.cgroup, "pids": pids,
                      "namespaces": [os.stat(f"/proc/{pid}/ns/net").st_ino for pid in pids]}), flush=True)
    os.kill(os.getpid(), 9)
""")


def test_keeper_cleans_up_when_the_test_process_is_killed():
    """SIGKILL of the process owning a fleet: no atexit, yet nothing is left."""
    bed_available()
    owner = subprocess.run([sys.executable, "-c", KILLED_OWNER, os.path.dirname(bed.__file__)],
                           capture_output=True, text=True, check=False)
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    left = json.loads(owner.stdout)
    assert wait_for_no_traces(left["directory"], left["cgroup"], left["pids"], set(left["namespaces"])) == []
