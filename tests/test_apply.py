"""unitgen apply and unitgen status against real systemd 252 and dbus-daemon (test bed hosts).

Each test boots one host and runs unitgen inside it, as an operator would
(the system bus, /etc/systemd/system); the services are python3 -m
http.server stand-ins on loopback ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from clirunner import with_sigint

CONF_PATH = "/etc/unitgen/conf.yaml"
UNITS = "/etc/systemd/system"
WANTS = f"{UNITS}/multi-user.target.wants"


def server(port: int) -> str:
    return f'[{sys.executable}, -m, http.server, "{port}", --bind, 127.0.0.1]'


def conf(*services: str) -> str:
    """A native conf of the named stand-ins (see SERVICES)."""
    return "version: 1\nservices:\n" + "".join(SERVICES[name] for name in services)


SERVICES = {
    "db": f"  db:\n    exec: {server(8001)}\n    listen: 8001\n",
    "web": f"  web:\n    exec: {server(8002)}\n    listen: 8002\n    deps:\n      - service: db\n",
    # ignores SIGTERM: systemd kills it after 1 s, and the unit ends "failed"
    "stubborn": "  stubborn:\n    script: \"trap '' TERM; sleep 1000000\"\n"
                "    systemd:\n      Service:\n        TimeoutStopSec: 1\n",
    # exits at once, every time: Restart= loops
    "crash": "  crash:\n    exec: [/bin/sh, -c, 'echo crash-says-why >&2; exit 3']\n",
    # starts a daemon and exits 0: under Type=exec systemd kills the daemon and starts it again
    "forks": "  forks:\n    exec: [/bin/sh, -c, 'sleep 100000 & echo forked']\n",
    # up for two seconds, then exits: within apply's settle period
    "late": "  late:\n    exec: [/bin/sh, -c, 'sleep 2; exit 4']\n",
    # waits for a port nobody listens on
    "lonely": f"  lonely:\n    exec: {server(8003)}\n    deps:\n      - tcp: 127.0.0.1:9\n        name: nothing\n",
}


@pytest.fixture
def host(make_fleet):
    fleet = make_fleet(["ap1"])
    fleet.boot_all()
    return fleet["ap1"]


def unitgen(host, *args, conf_text=None, check=True, as_nobody=False):
    """Run unitgen in the host, as root or nobody; exit status 0 expected unless ``check`` is False."""
    if conf_text is not None:
        host.write_file(CONF_PATH, conf_text)
    argv = ["unitgen", *args]
    if as_nobody:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    result = host.run(argv, check=False, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def main_pids(host, *units):
    return {u: int(host.systemctl("show", "-P", "MainPID", u).strip()) for u in units}


def show(host, unit, *props):
    return host.systemctl("show", "-P", ",".join(props), unit).split()


def last_reload(host) -> int:
    """When systemd last reloaded its units: 0 after boot, changed by every
    daemon-reload (a D-Bus property, not the journal's wording; systemd 252's
    UnitsLoadStartTimestamp is the boot's and never moves)."""
    return int(host.systemctl("show", "-P", "UnitsLoadTimestampMonotonic").strip())


def test_apply_brings_a_fresh_host_up_and_enables_it_for_the_next_boot(host):
    text = conf("db", "web") + "    systemd:\n      Service:\n        RestartSteps: 5\n"
    booted = last_reload(host)
    result = unitgen(host, "apply", CONF_PATH, conf_text=text)
    out = result.stdout
    assert "added     db.service\nadded     web.service\n" in out
    assert "reloaded  systemd 252" in out
    assert last_reload(host) > booted  # the reload is seen: the checks of "no reload" below can fail
    assert "started   db.service: active (running)" in out
    assert "started   web.service: active (running): ready after" in out
    assert result.stderr == ""
    for unit in ("db.service", "web.service"):
        assert host.systemctl("is-enabled", unit).strip() == "enabled"
        assert host.exists(f"{WANTS}/{unit}")
    # the version gate: systemd 252 does not know RestartSteps= (254)
    web = host.read_file(f"{UNITS}/web.service")
    assert "# Left out RestartSteps=5: it needs systemd 254, this one is 252.\n" in web
    assert "\nRestartSteps=" not in web
    assert "Unknown key" not in host.journal()

    status = unitgen(host, "status", CONF_PATH)
    rows = status.stdout.splitlines()
    assert rows[0].split() == ["UNIT", "STATE", "SINCE", "RESTARTS", "STATUS"]
    assert rows[1].split()[:3] == ["db.service", "active", "(running)"]
    assert rows[2].split()[:3] == ["web.service", "active", "(running)"]
    assert "ready after" in rows[2]

    host.power_cut()  # enabled: both come back by themselves, in order
    host.boot()
    host.wait_active("db.service", "web.service")
    unitgen(host, "status", CONF_PATH)


def test_a_second_apply_restarts_only_the_changed_unit(host):
    unitgen(host, "apply", CONF_PATH, conf_text=conf("db", "web"))
    before = main_pids(host, "db.service", "web.service")
    result = unitgen(host, "apply", CONF_PATH, conf_text=conf("db", "web").replace('"8002"', '"8012"'))
    assert "changed   web.service\nunchanged 1 unit\n" in result.stdout
    assert "restarted web.service: active (running)" in result.stdout
    assert "db.service" not in result.stdout
    after = main_pids(host, "db.service", "web.service")
    assert after["db.service"] == before["db.service"]
    assert after["web.service"] not in (before["web.service"], 0)
    assert " 8012 " in host.read_file(f"{UNITS}/web.service")

    reloaded = last_reload(host)
    again = unitgen(host, "apply", CONF_PATH)
    assert again.stdout == "unchanged 2 units\n"
    assert main_pids(host, "db.service", "web.service") == after
    assert last_reload(host) == reloaded  # nothing changed: no reload either


def test_json_reports_units_jobs_changed_and_redacted_diffs(host):
    """apply --json, what the Ansible module reads (ansible_collections/unitgen/fleet)."""
    def apply_json(*args, conf_text=None, conf_path=CONF_PATH):
        result = unitgen(host, "apply", conf_path, "--json", *args, conf_text=conf_text)
        (line,) = result.stdout.splitlines()
        return json.loads(line)

    secret = lambda n: f'    environment: {{TOKEN: "hunter2-{n}"}}\n'
    first = apply_json(conf_text=conf("db", "web") + secret(1))
    assert first["changed"] is True and first["failed"] is False and first["exit_code"] == 0
    assert first["units"] == {"added": ["db.service", "web.service"], "changed": [], "removed": [], "unchanged": []}
    assert [(j["unit"], j["job"], j["result"]) for j in first["jobs"]] == [
        ("db.service", "start", "ok"), ("web.service", "start", "ok")]
    assert first["diff"] == [] and "reloaded  systemd 252" in "\n".join(first["log"])
    pids = main_pids(host, "db.service", "web.service")

    again = apply_json()
    assert again["changed"] is False and again["jobs"] == [] and again["units"]["unchanged"] == ["db.service", "web.service"]

    # the new conf staged elsewhere (as the Ansible role does in check mode): --source names its place
    host.write_file("/tmp/staged.yaml", conf("db", "web") + secret(2))
    reloaded = last_reload(host)
    dry = apply_json("--dry-run", "--diff", "--source", CONF_PATH, conf_path="/tmp/staged.yaml")
    assert dry["changed"] is True and dry["dry_run"] is True and dry["units"]["changed"] == ["web.service"]
    assert dry["intended"] == {"stop": [], "enable": [], "start": [], "restart": ["web.service"], "reload": True}
    (diff,) = dry["diff"]
    assert (diff["unit"], diff["action"], diff["path"]) == ("web.service", "update", f"{UNITS}/web.service")
    assert "-Environment=\"TOKEN=<redacted " in diff["unified"] and "+Environment=\"TOKEN=<redacted " in diff["unified"]
    assert "hunter2" not in json.dumps(dry)
    assert "hunter2-1" in host.read_file(f"{UNITS}/web.service")  # nothing written, nothing restarted
    assert main_pids(host, "db.service", "web.service") == pids and last_reload(host) == reloaded

    assert "/tmp/staged.yaml" not in json.dumps(dry)
    host.write_file(CONF_PATH, conf("db", "web") + secret(2))
    human = unitgen(host, "apply", CONF_PATH, "--dry-run", "--diff").stdout  # the human lines, with the diff
    assert human.startswith("change    web.service\nunchanged 1 unit\n") and diff["unified"] in human + "\n"

    done = apply_json("--diff")
    assert done["changed"] is True and done["units"]["changed"] == ["web.service"] and done["diff"] == dry["diff"]
    assert [(j["unit"], j["job"], j["result"]) for j in done["jobs"]] == [("web.service", "restart", "ok")]
    after = main_pids(host, "db.service", "web.service")
    assert after["db.service"] == pids["db.service"] and after["web.service"] not in (pids["web.service"], 0)


def test_services_that_left_the_conf_are_stopped_disabled_reset_and_their_files_gone(host):
    unitgen(host, "apply", CONF_PATH, conf_text=conf("db", "web", "stubborn"))
    db_pid = main_pids(host, "db.service")
    result = unitgen(host, "apply", CONF_PATH, conf_text=conf("db"))
    assert "removed   stubborn.service\nremoved   web.service\nunchanged 1 unit\n" in result.stdout
    for unit in ("web.service", "stubborn.service"):
        assert f"stopped   {unit}: inactive (dead)\n" in result.stdout
        assert not host.exists(f"{UNITS}/{unit}")
        assert not host.exists(f"{WANTS}/{unit}")
        assert show(host, unit, "LoadState", "ActiveState") == ["not-found", "inactive"]
    # stopped with its own TimeoutStopSec=1 (the default is 90 s), failed, and was reset
    assert "stubborn.service: Failed with result 'timeout'" in host.journal()
    assert host.systemctl("list-units", "--failed", "--plain", "--no-legend").strip() == ""
    assert "service" not in host.read_file(f"{UNITS}/.unitgen-manifest.json").replace("db.service", "")
    assert main_pids(host, "db.service") == db_pid


def test_a_file_unitgen_does_not_own_stops_apply_before_systemd_is_touched(host):
    host.write_file(f"{UNITS}/web.service", "[Service]\nExecStart=/bin/sleep 1000\n")
    reloaded = last_reload(host)
    result = unitgen(host, "apply", CONF_PATH, conf_text=conf("db", "web"), check=False)
    assert result.returncode == 1
    assert "nothing was written" in result.stderr
    assert "web.service exists and was not written by unitgen (--force takes it over)" in result.stderr
    assert not host.exists(f"{UNITS}/db.service")
    assert last_reload(host) == reloaded
    result = unitgen(host, "apply", CONF_PATH, "--force")  # takes web.service over
    assert "added     db.service\nchanged   web.service\n" in result.stdout
    assert "restarted web.service: active (running)" in result.stdout


def test_a_broken_dependency_is_waiting_not_failed_and_status_shows_the_probe(host):
    result = unitgen(host, "apply", CONF_PATH, "--wait", "2", conf_text=conf("db", "lonely"))
    assert "started   db.service: active (running)" in result.stdout
    assert "waiting   lonely.service: activating (start-pre): waiting for nothing (127.0.0.1:9): " \
           "connection refused" in result.stdout
    assert "1 unit still on the way up" in result.stdout

    status = unitgen(host, "status", CONF_PATH, check=False)
    assert status.returncode == 1  # not every service is active
    lonely = next(line for line in status.stdout.splitlines() if line.startswith("lonely.service"))
    assert "activating (start-pre)" in lonely and "waiting for nothing (127.0.0.1:9): connection refused" in lonely
    rows = [json.loads(line) for line in unitgen(host, "status", CONF_PATH, "--json", check=False).stdout.splitlines()]
    assert [(r["unit"], r["health"]) for r in rows] == [("db.service", "ok"), ("lonely.service", "waiting")]
    assert rows[1]["status_text"].startswith("waiting for nothing (127.0.0.1:9)")


def test_a_unit_that_loops_fails_apply_with_systemds_reason(host):
    result = unitgen(host, "apply", CONF_PATH, "--settle", "6", conf_text=conf("db", "crash", "forks", "late"),
                     check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = {line.split()[1].rstrip(":"): line for line in result.stdout.splitlines() if line.startswith(
        ("started ", "failed ", "waiting "))}
    assert lines["db.service"].startswith("started   db.service: active (running)")
    assert lines["crash.service"].startswith("failed    crash.service: ")
    assert "exit status 3" in lines["crash.service"] and "crash-says-why" in lines["crash.service"]
    assert lines["forks.service"].startswith("failed    forks.service: ")
    assert "exit status 0" in lines["forks.service"] and "forked" in lines["forks.service"]
    assert lines["late.service"].startswith("failed    late.service: ") and "exit status 4" in lines["late.service"]
    for unit in ("crash.service", "forks.service", "late.service"):
        assert lines[unit].endswith(f"(journalctl -b -u {unit})")

    # status, once each has been restarted twice or more within a minute: a restart loop, with the reason
    restarted = lambda: min(int(show(host, u, "NRestarts")[0]) for u in ("crash.service", "forks.service"))
    host.run(["sh", "-c", "until [ $(systemctl show -P NRestarts forks.service) -ge 2 ] && "
                          "[ $(systemctl show -P NRestarts crash.service) -ge 2 ]; do sleep 0.2; done"], timeout=60)
    assert restarted() >= 2
    status = unitgen(host, "status", CONF_PATH, check=False)
    assert status.returncode == 1
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert rows["db.service"].split()[1:3] == ["active", "(running)"]
    for unit, why in (("crash.service", "exit status 3"), ("forks.service", "exit status 0")):
        assert rows[unit].split()[1:3] == ["restart", "loop"], rows[unit]
        assert "in 1 min)" in rows[unit] and f"last: {why}" in rows[unit]
    data = {r["unit"]: r for r in map(json.loads, unitgen(host, "status", CONF_PATH, "--json", check=False)
                                      .stdout.splitlines())}
    assert data["crash.service"]["restart_loop"] and data["crash.service"]["health"] == "bad"
    assert data["crash.service"]["restarts_last_minute"] >= 2 and data["crash.service"]["exit"] == "exit status 3"
    assert not data["db.service"]["restart_loop"] and data["db.service"]["restarts_last_minute"] == 0


def test_a_real_daemon_that_forks_under_type_exec_fails_apply(host):
    """Issue 19's case with Debian's redis-server: --daemonize yes forks, its parent
    exits 0, systemd kills the daemon with the unit's cgroup and loops."""
    text = ("version: 1\nservices:\n  cache:\n    exec: [/usr/bin/redis-server, /etc/redis/redis.conf, "
            "--daemonize, 'yes']\n    user: redis\n    listen: 6379\n")
    result = unitgen(host, "apply", CONF_PATH, conf_text=text, check=False)
    assert result.returncode == 1, result.stdout
    line = next(line for line in result.stdout.splitlines() if "cache.service:" in line)
    assert line.startswith("failed    cache.service: ") and "exit status 0" in line


def test_dry_run_touches_nothing(host):
    reloaded = last_reload(host)
    result = unitgen(host, "apply", CONF_PATH, "--dry-run", conf_text=conf("db", "web"))
    assert result.stdout == ("add       db.service\nadd       web.service\n"
                             "would reload systemd and enable: db.service web.service\n"
                             "would start: db.service web.service\n")
    assert not host.exists(f"{UNITS}/db.service") and not host.exists(f"{UNITS}/.unitgen-manifest.json")
    assert show(host, "db.service", "LoadState") == ["not-found"]
    assert last_reload(host) == reloaded

    unitgen(host, "apply", CONF_PATH)
    pids, reloaded, text = main_pids(host, "db.service", "web.service"), last_reload(host), host.read_file(f"{UNITS}/web.service")
    result = unitgen(host, "apply", CONF_PATH, "--dry-run", conf_text=conf("db"))
    assert "remove    web.service" in result.stdout and "would disable and stop: web.service" in result.stdout
    assert host.read_file(f"{UNITS}/web.service") == text
    assert host.systemctl("is-enabled", "web.service").strip() == "enabled"
    assert main_pids(host, "db.service", "web.service") == pids
    assert last_reload(host) == reloaded


def test_no_start_writes_enables_and_reloads_only(host):
    result = unitgen(host, "apply", CONF_PATH, "--no-start", conf_text=conf("db", "web"))
    assert "reloaded  systemd 252" in result.stdout
    assert "not started (--no-start): db.service web.service" in result.stdout
    assert host.systemctl("is-enabled", "db.service").strip() == "enabled"
    assert show(host, "db.service", "LoadState", "ActiveState") == ["loaded", "inactive"]
    # the next apply starts what is not running, and restarts nothing that is
    result = unitgen(host, "apply", CONF_PATH)
    assert "started   db.service: active (running)" in result.stdout
    assert "started   web.service: active (running)" in result.stdout


def test_a_unit_systemd_refuses_fails_with_systemds_message(host):
    bad = conf("db", "web") + "    systemd:\n      Service:\n        Type: oneshot\n"  # with Restart=always
    result = unitgen(host, "apply", CONF_PATH, conf_text=bad, check=False)
    assert result.returncode == 1
    assert "failed    web.service: Unit web.service has a bad unit file setting. " \
           "(journalctl -b -u web.service)" in result.stdout
    assert "started   db.service: active (running)" in result.stdout
    status = unitgen(host, "status", CONF_PATH, check=False)
    assert status.returncode == 1
    assert "web.service  bad-setting" in status.stdout


def test_not_root_gets_a_clear_error_but_may_read_status(host):
    host.write_file(CONF_PATH, conf("db"))
    result = unitgen(host, "apply", CONF_PATH, "-o", "/tmp/units", as_nobody=True, check=False)
    assert result.returncode == 1
    assert "unitgen: permission denied: systemd refused EnableUnitFiles" in result.stderr
    assert "run as root" in result.stderr
    result = unitgen(host, "apply", CONF_PATH, as_nobody=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"unitgen: {UNITS}: cannot write: ") and result.stderr.count("\n") == 1
    assert "(unitgen must run as root to write there); nothing was changed\n" in result.stderr
    unitgen(host, "apply", CONF_PATH)
    status = unitgen(host, "status", CONF_PATH, as_nobody=True)
    assert "db.service  active (running)" in status.stdout


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_status_watch_from_outside_the_host_until_interrupted(host, tmp_path, sigint):
    """``ignored``: started as a script's ``cmd &`` starts it (no job control:
    SIGINT inherited ignored, which Python keeps); Ctrl-C ends it all the same."""
    unitgen(host, "apply", CONF_PATH, conf_text=conf("db"))
    local_conf = tmp_path / "conf.yaml"
    local_conf.write_text(conf("db"))
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": host.bus_address}
    argv = with_sigint(sigint, [sys.executable, "-m", "unitgen", "status", str(local_conf), "--watch",
                                "--interval", "0.2"])
    watch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        frames = 0
        for line in watch.stdout:
            frames += line.startswith("UNIT ")
            if frames == 3:
                break
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert frames == 3, err
    assert watch.returncode == 0, err  # every service active when interrupted
    assert "Traceback" not in err
    assert "\x1b[" not in out  # no colour off a terminal


def test_a_probe_its_user_cannot_run_is_refused_and_would_have_failed_with_203(host):
    """unitgen installed in a venv under /root (mode 700), services as another user."""
    host.run(["chmod", "700", "/root"])  # as on a stock machine (the bed's disks have 711)
    text = conf("db") + ("  shy:\n    exec: [/bin/sleep, '100000']\n    user: nobody\n"
                         "    deps:\n      - service: db\n")
    refused = unitgen(host, "apply", CONF_PATH, conf_text=text, check=False)
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert line.startswith("unitgen: shy: its dependency probe runs as nobody, who cannot reach ")
    assert "(/root is mode 700)" in line and "--allow-unreachable-probe" in line
    assert not host.exists(f"{UNITS}/shy.service") and not host.exists(f"{UNITS}/db.service")

    # what the refusal spared the operator: the unit cannot start, ever
    forced = unitgen(host, "apply", CONF_PATH, "--allow-unreachable-probe", check=False)
    assert forced.returncode == 1
    assert "failed    shy.service: " in forced.stdout and "started   db.service" in forced.stdout
    assert "status=203" in host.systemctl("show", "-P", "ExecStartPre", "shy.service")


def test_the_readme_example_postgres_runs_on_debian(make_fleet):
    """examples/conf.yaml (the README's native example) on its host db1, with
    Debian's PostgreSQL 15: check says ok, and the unit serves."""
    from pathlib import Path

    fleet = make_fleet(["db1"])
    fleet.boot_all()
    db1 = fleet["db1"]
    text = (Path(__file__).resolve().parent.parent / "examples" / "conf.yaml").read_text()
    unitgen(db1, "check", CONF_PATH, conf_text=text)
    result = unitgen(db1, "apply", CONF_PATH, "--settle", "8")
    assert "started   postgres.service: active (running)" in result.stdout
    # wait until it accepts connections (exit 0), however slow the machine; a unit that failed never does
    db1.run(["sh", "-c", "until pg_isready -q -h 127.0.0.1 -p 5432; do "
                         "systemctl is-failed -q postgres.service && exit 1; sleep 0.2; done"], timeout=60)
    assert show(db1, "postgres.service", "NRestarts") == ["0"]
    # the same counter moves when systemd restarts it: the zero above is not a counter that never counts
    db1.run(["kill", "-KILL", show(db1, "postgres.service", "MainPID")[0]])
    db1.run(["sh", "-c", "until [ $(systemctl show -P NRestarts postgres.service) -ge 1 ]; do sleep 0.2; done"],
            timeout=60)
