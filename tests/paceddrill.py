"""The paced-release drill: a thundering herd on a real PostgreSQL 15, through
a full power cut.

    h1        db: PostgreSQL 15 (pg_ctlcluster), max_connections MAX_CONNECTIONS;
              ready: a port that answers once PostgreSQL accepts connections
              (its probe runs pg_isready on PostgreSQL's unix socket)
    h2 h3 h4  CLIENTS stand-in clients, a small sh script each: at its start it
              opens BURST connections at once with psql (each runs
              pg_sleep(HOLD)), and exits 1 if psql fails on any (psql's exit
              status 2: the connection was refused); then it idles

    fleet = bed.Fleet(HOSTS)
    run = herd(fleet, "5/s")     # or None: the control, no accepts:

``herd`` installs the fleet from one conf (db with or without ``accepts:``; each
client depends on db and on ready), brings it all up, cuts the power of
every host, boots them all again and waits until every client is up. Judged from
the daemons' own records: each client's log (start / refused / up, with the
time), PostgreSQL's log since the cut (``log_line_prefix`` carries the SQLSTATE,
so a refusal for too many clients is code 53300, not an English message;
``log_connections``/``log_disconnections`` give every backend's start and end in
the order PostgreSQL wrote them), and systemd's NRestarts of each client.
Used by tests/test_paced_bed.py and bench/paced.py.

Why ``ready`` rather than a ``pg_isready`` check in each client's probe: PostgreSQL
listens on its port while it replays its WAL after the cut (a client connecting
then gets 57P03 and would crash), and 100 probes each running ``pg_isready``
(a sh, a libpq connection, a backend forked) up to 10 times a second were a herd
of their own: on this 2-core machine, loaded by other work, PostgreSQL answered
none of them for 4 minutes (2026-12-01 06:14). Here one probe runs pg_isready, and
the clients' probes make a bare TCP check of a port opened after it passed.
"""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence

import yaml

import bed

HOSTS = ("h1", "h2", "h3", "h4")
CLIENT_HOSTS = ("h2", "h3", "h4")
CLIENTS = 100
BURST = 2          # connections each client opens at once at its start
HOLD = 1           # seconds it holds them (select pg_sleep(HOLD))
MAX_CONNECTIONS = 40
# 4 new clients a second, each holding BURST connections for HOLD s plus its
# start (1.2 s in all, seen here under load): about 10 backends at a time, and
# up to 19 seen at 5/s where the probes noticed the database over 1.4 s: under
# MAX_CONNECTIONS with room for a loaded machine.
# Without pacing the herd is 2 * CLIENTS = 200 connections within a second or
# two. The slots span (CLIENTS - 1) / 4 = 24.75 s.
RATE = "4/s"
TOO_MANY_CONNECTIONS = "53300"  # SQLSTATE of "sorry, too many clients already"
PG_DATA = "/var/lib/postgresql/15/main"
PG_LOG = "/var/log/postgresql/postgresql-15-main.log"
READY_PORT = 5433
CLIENT = "/opt/herd/client.sh"
READY = "/opt/herd/ready.py"
CLIENT_LOG = "/var/log/herd/clients.log"
CONF_PATH = "/etc/unitgen/conf.yaml"
UNIT_DIR = "/etc/systemd/system"
TIMEOUT = 240.0

PG_CONF = f"""\
# the herd drill: reachable from the fleet, few connections, every backend logged with its SQLSTATE
listen_addresses = '*'
max_connections = {MAX_CONNECTIONS}
superuser_reserved_connections = 0
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] sqlstate=%e '
"""

# One line per event, appended with one write: NAME EVENT TIME.
CLIENT_SOURCE = f"""\
#!/bin/sh
# a client of the herd drill: opens {BURST} connections at once, crashes if one is refused
name=$1 db=$2
log() {{ echo "$name $1 $(date +%s.%N)" >> {CLIENT_LOG}; }}
log start
pids=
for i in $(seq {BURST}); do
    psql -h "$db" -U postgres -d postgres -Atqc 'select pg_sleep({HOLD})' >/dev/null 2>&1 &
    pids="$pids $!"
done
failed=0
for pid in $pids; do wait "$pid" || failed=$?; done
if [ "$failed" -ne 0 ]; then log "refused/$failed"; exit 1; fi
log up
exec sleep infinity
"""

READY_SOURCE = f"""\
import socket
server = socket.create_server(("", {READY_PORT}))
while True:
    server.accept()[0].close()
"""

LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] sqlstate=(\w{5}) (\w+):  (.*)$")


def clients() -> List[tuple]:
    """[(service name, host)]: spread over CLIENT_HOSTS in turn."""
    return [(f"client{i:03d}", CLIENT_HOSTS[i % len(CLIENT_HOSTS)]) for i in range(CLIENTS)]


def client_units(host: str) -> List[str]:
    return [f"{name}.service" for name, where in clients() if where == host]


def conf_text(fleet: bed.Fleet, accepts: Optional[str]) -> str:
    db = fleet["h1"].address
    services: Dict[str, dict] = {
        "db": {"host": "h1", "user": "postgres", "pname": f"bin/postgres -D {PG_DATA}",
               "exec": ["/usr/bin/pg_ctlcluster", "15", "main", "start"], "listen": 5432},
    }
    if accepts:
        services["db"]["accepts"] = accepts
    # ready's one probe asks PostgreSQL itself, on its unix socket (not a service: dependency on db,
    # which would make ready a paced dependent with a slot of its own)
    services["ready"] = {"host": "h1", "user": "nobody", "exec": ["/usr/bin/python3", READY],
                         "listen": READY_PORT,
                         "deps": [{"exec": "pg_isready -q -h /var/run/postgresql -p 5432", "name": "db accepts"}]}
    for name, host in clients():
        services[name] = {"host": host, "exec": ["/bin/sh", CLIENT, name, db], "restart_sec": "1s",
                          "deps": [{"service": "db"}, {"service": "ready"}]}
    return yaml.safe_dump({"version": 1, "hosts": {h.name: {"address": h.address} for h in fleet},
                           "services": services}, sort_keys=False)


def install(fleet: bed.Fleet, accepts: Optional[str]) -> None:
    """Each host's disk (PostgreSQL's own config, the client), boot, render the
    conf on every host and enable its units, as a user would."""
    h1 = fleet["h1"]
    h1.write_file("/etc/postgresql/15/main/conf.d/herd.conf", PG_CONF)
    with open("/etc/postgresql/15/main/pg_hba.conf") as file:
        hba = file.read()
    h1.write_file("/etc/postgresql/15/main/pg_hba.conf", hba + "host all all 10.248.0.0/24 trust\n")
    h1.write_file(READY, READY_SOURCE)
    for host in CLIENT_HOSTS:
        fleet[host].write_file(CLIENT, CLIENT_SOURCE, mode=0o755)
    fleet.boot_all()
    text = conf_text(fleet, accepts)
    for host in fleet:
        host.run(["install", "-d", "/var/log/herd"])
        host.write_file(CONF_PATH, text)
        host.run(["unitgen", "render", CONF_PATH, "--host", host.name, "-o", UNIT_DIR])
        host.run(["systemctl", "daemon-reload"])
        units = ["db.service", "ready.service"] if host.name == "h1" else client_units(host.name)
        host.run(["systemctl", "enable", "--quiet", *units])


def show(host: bed.Host, units: Sequence[str], *properties: str) -> Dict[str, Dict[str, str]]:
    """{unit: {property: value}} from one ``systemctl show``."""
    out = host.run(["systemctl", "show", "-p", "Id", *(f"-p{p}" for p in properties), *units]).stdout
    result = {}
    for block in out.strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines())
        result[values.pop("Id")] = values
    return result


def client_events(fleet: bed.Fleet, since: float) -> Dict[str, List[tuple]]:
    """{client: [(event, time)]} from the clients' logs, events after ``since`` (time.time())."""
    events: Dict[str, List[tuple]] = {name: [] for name, _ in clients()}
    for host in CLIENT_HOSTS:
        out = fleet[host].run(["cat", CLIENT_LOG], check=False).stdout
        for line in out.splitlines():
            name, event, when = line.split()
            if float(when) > since:
                events[name].append((event, float(when)))
    return events


@dataclasses.dataclass
class Backends:
    """What PostgreSQL's log says of the backends it started (lines in the order it wrote them)."""
    peak: int            # most sessions authorized and not yet disconnected at once
    sessions: int        # sessions authorized
    too_many: int        # connections refused with SQLSTATE 53300


def backends(log: str) -> Backends:
    live, peak, sessions, too_many = set(), 0, 0, 0
    for line in log.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        pid, sqlstate, _, message = match.groups()
        if sqlstate == TOO_MANY_CONNECTIONS:
            too_many += 1
        elif message.startswith("connection authorized:"):
            live.add(pid)
            sessions += 1
            peak = max(peak, len(live))
        elif message.startswith("disconnection:"):
            live.discard(pid)
    return Backends(peak, sessions, too_many)


def unix_time(timestamp: str) -> float:
    """systemctl show --timestamp=us+utc's value as time.time()."""
    return datetime.strptime(timestamp, "%a %Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=timezone.utc).timestamp()


@dataclasses.dataclass
class Run:
    restarts: Dict[str, int]          # client: NRestarts since the boot after the cut
    states: Dict[str, str]            # client: ActiveState
    events: Dict[str, List[tuple]]    # client: [(event, time)] since the power came back
    pg_log: str                       # PostgreSQL's log since the cut
    backends: Backends
    from_power: float                 # s from the power's return to the last client up
    from_db: float                    # s from ready.service active (PostgreSQL accepts) to the last client up
    slots: Dict[str, float]           # client: its --slot (0 when it has none)


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def all_up(fleet: bed.Fleet, since: float) -> bool:
    return all(any(e == "up" for e, _ in ev) for ev in client_events(fleet, since).values())


def herd(fleet: bed.Fleet, accepts: Optional[str]) -> Run:
    """Install, bring everything up, cut the power of every host, boot them all;
    once every client is up again: the Run since the cut."""
    install(fleet, accepts)
    began = time.time()
    fleet["h1"].run(["systemctl", "start", "--no-block", "db.service", "ready.service"])
    for host in CLIENT_HOSTS:
        fleet[host].run(["systemctl", "start", "--no-block", *client_units(host)])
    wait_for(lambda: all_up(fleet, began), "every client up before the cut")
    fleet.power_cut_all()
    cut_at = len(fleet["h1"].read_file(PG_LOG))
    restored = time.time()
    fleet.boot_all(wait=False)
    wait_for(lambda: all_up(fleet, restored), "every client up after the power cut")
    events = client_events(fleet, restored)
    last_up = max(min(t for e, t in ev if e == "up") for ev in events.values())
    h1 = fleet["h1"]
    db_at = unix_time(h1.run(["systemctl", "show", "--timestamp=us+utc", "-P", "ActiveEnterTimestamp",
                              "ready.service"]).stdout.strip())
    pg_log = h1.read_file(PG_LOG)[cut_at:]
    restarts, states, slots = {}, {}, {}
    for host in CLIENT_HOSTS:
        for unit, values in show(fleet[host], client_units(host), "NRestarts", "ActiveState",
                                 "ExecStartPre").items():
            name = unit[:-len(".service")]
            restarts[name] = int(values["NRestarts"])
            states[name] = values["ActiveState"]
            slot = re.search(r"--slot=([0-9.]+)", values["ExecStartPre"])
            slots[name] = float(slot.group(1)) if slot else 0.0
    return Run(restarts, states, events, pg_log, backends(pg_log), last_up - restored, last_up - db_at, slots)
