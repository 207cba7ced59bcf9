"""unitgen-launch on real systemd with real daemons (tests/realdrill.py's set-up):
what the Autoheal shapes do beyond the drill's power cuts.

* A daemon already running when its unit starts (an operator migrating off
  cron) is adopted, never started twice: by pname (redis-server) and by
  pid_file (PostgreSQL's postmaster.pid, owned by postgres). systemd then
  supervises it: a SIGKILL brings it back, a stop stops all of it.
* A script that fails is a failed start (its exit status), retried.
* ``foreground: true``: Type=exec, the script's program is the main process.
"""

import os
import re
import time

import pytest

import realdrill

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(p) for p in ("/usr/bin/redis-server", "/usr/bin/pg_ctlcluster"))
    and os.environ.get("UNITGEN_REQUIRE_BED") != "1",
    reason="Debian's redis-server and PostgreSQL 15 are not installed")

REDIS = " ".join(["redis-server", *realdrill.REDIS_ARGS])
CONF = f"""\
cache:
    pname: redis-server
    script: sudo -u redis {REDIS}
db:
    pid_file: {realdrill.PG_DATA}/postmaster.pid
    script: sudo -u postgres pg_ctlcluster 15 main start
broken:
    pname: never-matches-anything
    script: echo starting; exit 3
sleeper:
    pname: sleep
    foreground: true
    script: exec sleep 1000
"""


def show(host, unit, *properties):
    out = host.systemctl("show", "-p", ",".join(properties), unit)
    return dict(line.split("=", 1) for line in out.splitlines())


def cgroup(host, pid):
    """The cgroup v2 path of ``pid`` in ``host``."""
    text = host.run(["cat", f"/proc/{pid}/cgroup"]).stdout  # in the host's cgroup namespace
    return next(line[3:] for line in text.splitlines() if line.startswith("0::"))


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_adopts_running_daemons_fails_failed_scripts_and_keeps_the_foreground(make_fleet):
    fleet = make_fleet(["m1"])
    host = fleet["m1"]
    host.write_file("/etc/postgresql/15/main/conf.d/drill.conf", realdrill.PG_CONF)
    fleet.boot_all()
    # started by hand, as cron did before the migration
    host.run(["setpriv", "--reuid=redis", "--regid=redis", "--init-groups", "redis-server", *realdrill.REDIS_ARGS])
    host.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
              "pg_ctlcluster", "15", "main", "start"])
    [redis] = realdrill.processes(host, "^redis-server")
    postmaster = int(host.read_file(f"{realdrill.PG_DATA}/postmaster.pid").split()[0])
    host.write_file(realdrill.CONF_PATH, CONF)
    host.run(["unitgen", "render", realdrill.CONF_PATH, "-o", realdrill.UNIT_DIR])
    host.systemctl("daemon-reload")
    host.systemctl("start", "cache.service", "db.service", "sleeper.service")

    # adopted: the same processes, now in the units' cgroups; no second copy
    assert show(host, "cache.service", "MainPID", "ActiveState") == {"MainPID": str(redis), "ActiveState": "active"}
    assert show(host, "db.service", "MainPID", "ActiveState") == {"MainPID": str(postmaster), "ActiveState": "active"}
    assert realdrill.processes(host, "^redis-server") == [redis]
    assert cgroup(host, redis) == "/system.slice/cache.service"
    assert cgroup(host, postmaster) == "/system.slice/db.service"
    # the root-owned copy systemd read; the launcher ran as root for it
    assert host.run(["stat", "-c", "%u", "/run/unitgen/db.service.pid"]).stdout.strip() == "0"

    # supervised: a SIGKILL of the adopted redis brings a new one, probe first
    host.run(["kill", "-KILL", str(redis)])
    wait_for(lambda: show(host, "cache.service", "MainPID")["MainPID"] not in ("0", str(redis)),
             "cache.service did not start a new redis-server")
    host.wait_active("cache.service")
    assert show(host, "cache.service", "NRestarts")["NRestarts"] == "1"
    assert len(realdrill.processes(host, "^redis-server")) == 1
    # a stop reaches the adopted postmaster and its children
    host.systemctl("stop", "db.service")
    assert realdrill.processes(host, "^postgres|bin/postgres") == []

    # a failing script is a failed start, with its status, and Restart= tries again
    host.systemctl("start", "--no-block", "broken.service")
    wait_for(lambda: show(host, "broken.service", "SubState")["SubState"] == "auto-restart",
             "broken.service did not fail and wait to restart")
    failed = show(host, "broken.service", "Result", "ExecStart")
    assert failed["Result"] == "exit-code"
    # ExecStart's last run, as systemd records it: the script's status was the launcher's
    assert re.search(r"; code=exited ; status=3 }", failed["ExecStart"]), failed["ExecStart"]
    wait_for(lambda: int(show(host, "broken.service", "NRestarts")["NRestarts"]) >= 1,
             "broken.service was not restarted")

    # foreground: Type=exec, the program the script exec'd is the service
    sleeper = show(host, "sleeper.service", "Type", "MainPID", "ActiveState")
    assert (sleeper["Type"], sleeper["ActiveState"]) == ("exec", "active")
    assert host.read_file(f"/proc/{sleeper['MainPID']}/cmdline").split("\0")[:2] == ["sleep", "1000"]
