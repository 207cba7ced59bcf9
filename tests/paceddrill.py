"""The paced-release drill: a real PostgreSQL 15 on h1 with few connections,
and stand-in clients on h2 and h3 that each open a burst of connections at
start and crash (exit 1) if one is refused. Used by tests/test_paced_bed.py
and bench/paced.py.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import yaml

CLIENTS = 16
BURST = 2
MAX_CONNECTIONS = 10
PG_DATA = "/var/lib/postgresql/15/main"
CLIENT = "/opt/paced/client.py"
LOG_DIR = "/var/log/paced"
CONF_PATH = "/etc/unitgen/conf.yaml"
# a backend serving one of the clients, as ps shows it on h1
BACKEND = "postgres: 15/main: postgres postgres 10.248."

CLIENT_SOURCE = f"""\
import os, signal, subprocess, sys, time
name, db = sys.argv[1], sys.argv[2]
def log(event):
    with open(os.path.join({LOG_DIR!r}, name + ".log"), "a") as f:
        f.write(event + "\\n")
log("start")
argv = ["psql", "-h", db, "-U", "postgres", "-d", "postgres", "-Atqc", "select pg_sleep(2)"]
burst = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range({BURST})]
if any(p.wait() for p in burst):
    log("refused")
    sys.exit(1)  # its pool could not fill: it crashes, and systemd restarts it
log("up")
signal.pause()
"""


def clients():
    return [(f"client{i:02d}", "h2" if i % 2 else "h3") for i in range(CLIENTS)]


def conf_text(fleet, accepts):
    db = fleet["h1"].address
    services = {
        "db": {"host": "h1", "user": "postgres", "pname": f"bin/postgres -D {PG_DATA}",
               "exec": ["/usr/bin/pg_ctlcluster", "15", "main", "start"], "listen": 5432},
    }
    if accepts:
        services["db"]["accepts"] = accepts
    for name, host in clients():
        services[name] = {"host": host, "exec": ["/usr/bin/python3", CLIENT, name, db], "restart_sec": "1s",
                          "deps": [{"service": "db"}, {"exec": f"pg_isready -q -h {db} -p 5432", "name": "db ready"}]}
    return yaml.safe_dump({"version": 1, "hosts": {h.name: {"address": h.address} for h in fleet},
                           "services": services}, sort_keys=False)


def prepare(fleet, accepts: Optional[str]) -> None:
    """Each host's disk (PostgreSQL's own config, the client), boot, render the conf."""
    h1 = fleet["h1"]
    h1.write_file("/etc/postgresql/15/main/conf.d/paced.conf",
                  f"listen_addresses = '*'\nmax_connections = {MAX_CONNECTIONS}\n"
                  "superuser_reserved_connections = 0\n")
    hba = open("/etc/postgresql/15/main/pg_hba.conf").read()
    h1.write_file("/etc/postgresql/15/main/pg_hba.conf", hba + "host all all 10.248.0.0/24 trust\n")
    for host in ("h2", "h3"):
        fleet[host].write_file(CLIENT, CLIENT_SOURCE)
    fleet.boot_all()
    text = conf_text(fleet, accepts)
    for host in fleet:
        host.run(["install", "-d", LOG_DIR])
        host.write_file(CONF_PATH, text)
        host.run(["unitgen", "render", CONF_PATH, "--host", host.name, "-o", "/etc/systemd/system"])
        host.run(["systemctl", "daemon-reload"])


def wait_for(condition, what, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def prop(host, unit, name):
    return host.run(["systemctl", "show", "-P", name, unit]).stdout.strip()


def herd(fleet, accepts: Optional[str]) -> Tuple[Dict[str, int], int, float]:
    """Start every client while the database is down, then bring it back; once
    every client is up: ({client: NRestarts}, the most client backends seen at
    once on h1, seconds from the database's start to the last client up)."""
    prepare(fleet, accepts)
    for host in ("h2", "h3"):
        mine = [f"{name}.service" for name, where in clients() if where == host]
        fleet[host].run(["systemctl", "start", "--no-block", *mine])
    # every probe is waiting for the database (a refused start would show as a restart below)
    wait_for(lambda: all(prop(fleet[h], f"{n}.service", "ActiveState") == "activating" for n, h in clients()),
             "every client's probe to wait for the database")
    fleet["h1"].run(["systemctl", "start", "--no-block", "db.service"])
    started, peak = time.monotonic(), 0
    deadline = started + 300
    while True:
        peak = max(peak, len(fleet["h1"].run(["pgrep", "-f", BACKEND], check=False).stdout.split()))
        ups = sum(fleet[h].run(["sh", "-c", f"cat {LOG_DIR}/*.log"], check=False).stdout.split().count("up")
                  for h in ("h2", "h3"))
        if ups >= CLIENTS:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"only {ups} of {CLIENTS} clients came up")
        time.sleep(0.1)
    recovered = time.monotonic() - started
    return {n: int(prop(fleet[h], f"{n}.service", "NRestarts")) for n, h in clients()}, peak, recovered


