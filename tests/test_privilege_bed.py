"""A service's checks run as the service's user, wherever they run: in its
unit's ExecStartPre= probe, in unitgen-watch.service (root), and in
``unitgen probe`` run as root. Proved on a booted host: the exec check is a
script that records who runs it and which process started it."""

from __future__ import annotations

import json
import sys
import time

import yaml

CONF = "/etc/unitgen/conf.yaml"
RECORDS = "/var/lib/privtest/records"
CHECK = "/usr/local/bin/record-caller"
# The check: one JSON line per run with its ids and groups, and the command
# lines of the processes above it (the probe, the watcher's worker, ...).
RECORDER = f"""#!{sys.executable}
import json, os
chain, pid = [], os.getppid()
for _ in range(5):
    try:
        chain.append(open(f"/proc/{{pid}}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        pid = int(next(l for l in open(f"/proc/{{pid}}/status") if l.startswith("PPid:")).split()[1])
    except (OSError, StopIteration, ValueError):
        break
ids = os.getresuid() + os.getresgid()
with open({RECORDS!r}, "a") as f:
    f.write(json.dumps({{"ids": ids, "groups": sorted(os.getgroups()), "chain": chain}}) + "\\n")
"""


def _records(host):
    if not host.exists(RECORDS):
        return []
    return [json.loads(line) for line in host.read_file(RECORDS).splitlines() if line.strip()]


def _wait_for_record(host, what, by, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in _records(host) if by(" | ".join(r["chain"]))]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no record of the check run by {what}:\n{_records(host)}\n"
                                 f"{host.journal()[-3000:]}")
        time.sleep(0.2)


def _booted_with(make_fleet, services):
    """One host booted with this conf and the recorder, its units rendered."""
    host = make_fleet(["h1"])["h1"]
    host.write_file(CONF, yaml.safe_dump({"version": 1, "services": services}))
    host.write_file(CHECK, RECORDER, mode=0o755)
    host.boot()
    host.run(["install", "-d", "-m", "0777", "/var/lib/privtest"])
    host.run(["unitgen", "render", CONF, "-o", "/etc/systemd/system"])
    host.run(["systemctl", "daemon-reload"])
    return host


def test_an_exec_check_runs_as_the_services_user_in_the_probe_the_watcher_and_unitgen_probe(make_fleet):
    host = _booted_with(make_fleet, {"web": {
        "exec": ["/bin/sleep", "infinity"],
        "user": "daemon",
        "systemd": {"Service": {"SupplementaryGroups": "adm"}},
        "deps": [{"exec": CHECK, "name": "recorder"}],
        "on_dependency_loss": "restart",
    }})

    host.run(["systemctl", "start", "web.service"])  # its probe ran the check, or it would not be active
    probe = _wait_for_record(host, "the unit's probe",
                             lambda chain: ("unitgen-probe" in chain or "unitgen_probe/start.py" in chain)
                             and "serve" not in chain)
    host.run(["systemctl", "start", "unitgen-watch.service"])
    watcher = _wait_for_record(host, "the watcher", lambda chain: "unitgen_probe.serve" in chain and " watch " in chain)
    done = host.run(["unitgen", "probe", CONF, "web"])  # as root
    assert "recorder" in done.stdout and "ok" in done.stdout
    by_cli = _wait_for_record(host, "unitgen probe", lambda chain: "unitgen_probe.serve" in chain
                              and " probe " in chain and " watch " not in chain)

    daemon_ids = [1, 1, 1, 1, 1, 1]  # real, effective, saved uid; the same for the gid
    for record in probe + watcher + by_cli + _records(host):
        assert record["ids"] == daemon_ids, record
        assert record["groups"] == [1, 4], record  # daemon's own group, and adm from SupplementaryGroups=
    assert "not checked" not in host.journal("unitgen-watch.service")


def test_a_missing_user_or_a_dynamic_user_is_never_root_instead(make_fleet):
    host = _booted_with(make_fleet, {
        "ghost": {"exec": ["/bin/sleep", "infinity"], "user": "nosuchuser",
                  "deps": [{"exec": CHECK}], "on_dependency_loss": "restart"},
        "dyn": {"exec": ["/bin/sleep", "infinity"], "systemd": {"Service": {"DynamicUser": "yes"}},
                "deps": [{"exec": CHECK}], "on_dependency_loss": "restart"},
    })
    host.run(["systemctl", "start", "unitgen-watch.service"])
    for service in ("ghost", "dyn"):
        done = host.run(["unitgen", "probe", CONF, service], check=False)
        assert done.returncode == 1 and "not checked" in done.stdout, done.stdout
    deadline = time.monotonic() + 30
    while host.journal("unitgen-watch.service").count("not checked") < 2:
        assert time.monotonic() < deadline, host.journal("unitgen-watch.service")
        time.sleep(0.2)
    assert _records(host) == []  # nothing ran the check, as root or anyone else


def test_a_network_check_runs_as_the_services_user_too(make_fleet):
    """A unix socket in a directory only root may enter: the check of a
    daemon service fails there as its own probe's would, a root service's
    passes; unitgen probe, run as root, says so for each."""
    socket_path = "/run/private/s.sock"
    listen = f"import os, socket, time; s = socket.socket(socket.AF_UNIX); s.bind({socket_path!r}); " \
             "s.listen(); time.sleep(1e6)"
    host = _booted_with(make_fleet, {
        "listener": {"exec": [sys.executable, "-c", listen], "user": "root"},
        "as-daemon": {"exec": ["/bin/sleep", "infinity"], "user": "daemon", "deps": [{"unix": socket_path}]},
        "as-root": {"exec": ["/bin/sleep", "infinity"], "user": "root", "deps": [{"unix": socket_path}]},
    })
    host.run(["install", "-d", "-m", "0700", "/run/private"])
    host.run(["systemctl", "start", "listener.service"])
    deadline = time.monotonic() + 30
    while not host.exists(socket_path):
        assert time.monotonic() < deadline, host.journal("listener.service")
        time.sleep(0.1)
    by_root = host.run(["unitgen", "probe", CONF, "as-root", "--json"])
    assert json.loads(by_root.stdout)["ok"] is True
    by_daemon = host.run(["unitgen", "probe", CONF, "as-daemon", "--json"], check=False)
    row = json.loads(by_daemon.stdout)
    assert by_daemon.returncode == 1 and row["ok"] is False and row["reason"] == "permission denied"
