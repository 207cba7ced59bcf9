"""The real-software drill: PostgreSQL 15, Redis and nginx from Debian, and a
small app of our own, written as Autoheal's users write them, on three hosts.

    h1 db     PostgreSQL 15 (pg_ctlcluster; postmaster.pid, owned by postgres)
    h3 cache  redis-server --daemonize yes
    h2 app    tests/standins/drillapp.py, started by a startup.sh with nohup … &;
              broken for good if the database is missing at its start
    h2 web    nginx in front of the app (a dependency on 127.0.0.1:8080: same host)

    fleet = bed.Fleet(HOSTS)
    prepare(fleet)                          # daemons' own config on each disk, then boot
    install_autoheal(fleet)  # or install_native(fleet): one conf per host / one for all
    wait_healthy(fleet)
    since = time.time(); ... ; problems = judge(fleet, since)

Judged from the daemons' own records, never from unitgen's: the app logs, at
each start, whether PostgreSQL and Redis answered it (``select 1`` and
``PING``); PostgreSQL's log (log_connections) shows each of those connections
by the start's tag; nginx's master process started after the app served
(kernel start time of the process against the app's log). Used by
tests/test_realdrill.py and bench/autoheal_control.py.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional

import yaml

import bed
from unitgen import paths

HOSTS = ("h1", "h2", "h3")
PLACEMENT = {"db": "h1", "cache": "h3", "app": "h2", "web": "h2"}
PORTS = {"db": 5432, "cache": 6379, "app": 8080, "web": 80}
APP_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins", "drillapp.py")
APP = "/opt/drillapp/drillapp.py"
APP_START = "/opt/drillapp/startup.sh"
APP_LOG = "/var/log/drillapp/app.log"
PG_DATA = "/var/lib/postgresql/15/main"
PG_LOG = "/var/log/postgresql/postgresql-15-main.log"
REDIS_PID = "/var/lib/redis/redis-server.pid"
CONF_PATH = "/etc/unitgen/conf.yaml"
UNIT_DIR = "/etc/systemd/system"
RECOVERY_TIMEOUT = 120.0

NGINX_CONF = """\
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log notice;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 80 default_server;
        location / { proxy_pass http://127.0.0.1:8080; }
    }
}
"""

PG_CONF = """\
# the drill: reachable from the fleet, every connection logged
listen_addresses = '*'
log_connections = on
log_line_prefix = '%m [%p] '
"""


def address(fleet: bed.Fleet, service: str) -> str:
    return fleet[PLACEMENT[service]].address


def app_argv(fleet: bed.Fleet) -> List[str]:
    return ["/usr/bin/python3", APP, "--port", str(PORTS["app"]),
            "--db", f"{address(fleet, 'db')}:{PORTS['db']}",
            "--redis", f"{address(fleet, 'cache')}:{PORTS['cache']}", "--log", APP_LOG]


REDIS_ARGS = ["/etc/redis/redis.conf", "--daemonize", "yes", "--bind", "0.0.0.0", "--protected-mode", "no",
              "--pidfile", REDIS_PID]


def prepare(fleet: bed.Fleet) -> None:
    """Each host's disk as its admin set it up, then boot them all: PostgreSQL
    listening on the fleet's network with log_connections, nginx proxying to the
    app, the app and its startup script (Autoheal's startup.sh: nohup … &)."""
    h1, h2 = fleet[PLACEMENT["db"]], fleet[PLACEMENT["app"]]
    h1.write_file("/etc/postgresql/15/main/conf.d/drill.conf", PG_CONF)
    hba = open("/etc/postgresql/15/main/pg_hba.conf").read()
    h1.write_file("/etc/postgresql/15/main/pg_hba.conf", hba + "host all all 10.248.0.0/24 trust\n")
    h2.write_file("/etc/nginx/nginx.conf", NGINX_CONF)
    with open(APP_SOURCE) as file:
        h2.write_file(APP, file.read())
    argv = " ".join(app_argv(fleet))
    h2.write_file(APP_START, f"#!/bin/bash\nnohup {argv} >/dev/null 2>&1 &\n", mode=0o755)
    fleet.boot_all()
    h2.run(["install", "-d", "-o", "www-data", "-g", "www-data", os.path.dirname(APP_LOG)])


def autoheal_confs(fleet: bed.Fleet) -> Dict[str, str]:
    """One Autoheal conf.yaml per host, as its users write them: pid_file and
    pname, scripts that start daemons and exit, sudo -u, dependencies by
    host and port (127.0.0.1 for the same host)."""
    db, cache = address(fleet, "db"), address(fleet, "cache")
    redis = " ".join(["redis-server", *REDIS_ARGS])
    return {
        "h1": f"""\
db:
    pid_file: {PG_DATA}/postmaster.pid
    script: sudo -u postgres pg_ctlcluster 15 main start
""",
        "h3": f"""\
cache:
    pname: redis-server
    script: sudo -u redis {redis}
""",
        "h2": f"""\
app:
    pname: drillapp.py
    dep:
        - name: db
          host: {db}
          port: {PORTS['db']}
        - name: cache
          host: {cache}
          port: {PORTS['cache']}
    script: sudo -u www-data {APP_START}
web:
    pname: nginx
    dep:
        - name: app
          host: 127.0.0.1
          port: {PORTS['app']}
    script: /usr/sbin/nginx
""",
    }


def native_conf(fleet: bed.Fleet) -> str:
    """The same fleet in the native format: one file; pname for PostgreSQL, a
    pid_file written by redis, the app in the foreground (found by pname), and
    what the native format adds: pg_isready as a dependency check."""
    conf = {
        "version": 1,
        "hosts": {host.name: {"address": host.address} for host in fleet},
        "services": {
            "db": {"host": "h1", "user": "postgres", "pname": f"bin/postgres -D {PG_DATA}",
                   "exec": ["/usr/bin/pg_ctlcluster", "15", "main", "start"], "listen": PORTS["db"]},
            "cache": {"host": "h3", "user": "redis", "pid_file": REDIS_PID,
                      "exec": ["/usr/bin/redis-server", *REDIS_ARGS], "listen": PORTS["cache"]},
            "app": {"host": "h2", "user": "www-data", "pname": "drillapp.py", "exec": app_argv(fleet),
                    "listen": PORTS["app"], "health": f"http://{{host}}:{PORTS['app']}/health",
                    # the native format can ask PostgreSQL itself: it listens before it is ready
                    "deps": [{"service": "db"}, {"service": "cache"},
                             {"exec": f"pg_isready -q -h {address(fleet, 'db')} -p {PORTS['db']}",
                              "name": "db ready"}]},
            "web": {"host": "h2", "pname": "nginx", "exec": ["/usr/sbin/nginx"], "listen": PORTS["web"],
                    "deps": [{"service": "app"}]},
        },
    }
    return yaml.safe_dump(conf, sort_keys=False)


def units_on(host: str) -> List[str]:
    return [f"{name}.service" for name, where in PLACEMENT.items() if where == host]


def install(fleet: bed.Fleet, confs: Dict[str, str], host_option: bool) -> None:
    """Render and enable on every host, as a user would (started at the next boot)."""
    for host in fleet:
        host.write_file(CONF_PATH, confs[host.name])
        host.run(["unitgen", "render", CONF_PATH, *(["--host", host.name] if host_option else []),
                  "-o", UNIT_DIR])
        host.run(["systemctl", "daemon-reload"])
        host.run(["systemctl", "enable", "--quiet", *units_on(host.name)])


def install_autoheal(fleet: bed.Fleet) -> None:
    install(fleet, autoheal_confs(fleet), host_option=False)


def install_native(fleet: bed.Fleet) -> None:
    text = native_conf(fleet)
    install(fleet, {host.name: text for host in fleet}, host_option=True)


def start_all(fleet: bed.Fleet) -> None:
    for host in fleet:
        host.run(["systemctl", "start", "--no-block", *units_on(host.name)])


# -- watching --------------------------------------------------------------------

def health(fleet: bed.Fleet) -> Dict[str, str]:
    """{what: "healthy" or why not} from the bridge: nginx → app → PostgreSQL and
    Redis (one request through the whole chain), and the app directly."""
    h2 = fleet[PLACEMENT["web"]].address
    argv = [paths.probe_command(), "--once", "--json", "--timeout", "2",
            "http", f"http://{h2}:{PORTS['web']}/health", "--name", "web",
            "http", f"http://{h2}:{PORTS['app']}/health", "--name", "app"]
    result = fleet.run_on_bridge(argv)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    return {a["label"]: ("healthy" if a["ok"] else a["reason"]) for a in answers}


def wait_healthy(fleet: bed.Fleet, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Wait until the chain answers 200 end to end; time.time() then. BedError if not."""
    deadline = time.monotonic() + timeout
    while True:
        state = health(fleet)
        if all(v == "healthy" for v in state.values()):
            return time.time()
        if time.monotonic() > deadline:
            raise bed.BedError(f"not healthy after {timeout:.0f} s: {state}\n{diagnosis(fleet)}")
        time.sleep(0.25)


def wait_settled(fleet: bed.Fleet, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Wait until healthy end to end and every unit active (a start script may
    still be finishing while its daemon already serves); time.time() once healthy."""
    deadline = time.monotonic() + timeout
    healthy = wait_healthy(fleet, timeout)
    while True:
        state = not_active(fleet)
        if not state:
            return healthy
        if time.monotonic() > deadline:
            raise bed.BedError(f"units not active after {timeout:.0f} s: {state}\n{diagnosis(fleet)}")
        time.sleep(0.1)


def unit_states(fleet: bed.Fleet) -> Dict[str, Dict[str, str]]:
    """{service: systemctl show properties} of every unit on a host that is up."""
    states = {}
    for host in fleet:
        units = units_on(host.name)
        if not units or not host.is_up:
            continue
        shown = host.systemctl("show", "-p", "ActiveState,SubState,Result,NRestarts,MainPID", *units)
        for unit, block in zip(units, shown.strip().split("\n\n")):
            states[unit[:-len(".service")]] = dict(line.split("=", 1) for line in block.splitlines())
    return states


def diagnosis(fleet: bed.Fleet) -> str:
    parts = []
    for host in fleet:
        if host.is_up:
            parts.append(f"--- {host.name}\n" + host.systemctl(
                "status", "--no-pager", "--full", "--lines=8", *units_on(host.name), check=False))
        else:
            parts.append(f"--- {host.name}: off")
    return "\n".join(parts)


def process_start(host: bed.Host, pid: int) -> float:
    """When ``pid`` of ``host`` started, in the kernel's uptime (seconds, to 10 ms:
    the clock of /proc/PID/stat; btime, whole seconds, would blur it)."""
    out = host.run(["/bin/sh", "-c", f"cat /proc/{int(pid)}/stat; getconf CLK_TCK"]).stdout
    stat, ticks = out.strip().splitlines()
    return int(stat[stat.rindex(")") + 2:].split()[19]) / int(ticks)


def uptime_of(host: bed.Host, when: float) -> float:
    """The kernel uptime at wall-clock time ``when`` (time.time())."""
    now, uptime = time.time(), float(host.run(["cat", "/proc/uptime"]).stdout.split()[0])
    return uptime - (now - when)


def main_pid(host: bed.Host, unit: str) -> int:
    return int(host.systemctl("show", "-p", "MainPID", "--value", unit).strip())


def processes(host: bed.Host, pattern: str) -> List[int]:
    """PIDs whose command line matches ``pattern`` (pgrep -f, in the host)."""
    out = host.run(["pgrep", "-f", pattern], check=False).stdout
    return [int(p) for p in out.split()]


# -- judging -----------------------------------------------------------------------

def app_events(fleet: bed.Fleet, since: float) -> List[dict]:
    try:
        text = fleet[PLACEMENT["app"]].read_file(APP_LOG)
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, text.splitlines()) if e["time"] >= since]


def judge(fleet: bed.Fleet, since: float) -> List[str]:
    """Every sign, since ``since``, that a service started before its
    dependencies, from the daemons' own records:

    * the app's log: at each start PostgreSQL and Redis answered it;
    * PostgreSQL's log (log_connections): that start's connection is there;
    * nginx: its master process started after the running app's "listen" line.
    """
    problems = []
    events = app_events(fleet, since)
    pg_log = fleet[PLACEMENT["db"]].read_file(PG_LOG)
    for event in events:
        if event["event"] != "start":
            continue
        if event["db"] != "ok" or event["redis"] != "ok":
            problems.append(f"app started at {event['time']:.3f} before its dependencies: "
                            f"db {event['db']}; redis {event['redis']}")
        elif f"application_name={event['tag']}" not in pg_log:
            problems.append(f"app's start connection {event['tag']} is not in PostgreSQL's log")
    web_host = fleet[PLACEMENT["web"]]
    nginx_started = process_start(web_host, main_pid(web_host, "web.service"))
    app_pid = main_pid(web_host, "app.service")
    served = [e["uptime"] for e in app_events(fleet, 0.0) if e["event"] == "listen" and e["pid"] == app_pid]
    if nginx_started >= uptime_of(web_host, since) and not (served and served[0] < nginx_started):
        problems.append(f"nginx's master started at uptime {nginx_started:.2f} s, before the app (PID {app_pid}) "
                        f"opened its port ({served[0] if served else 'not logged'})")
    return problems


def looping(fleet: bed.Fleet, most: int) -> List[str]:
    """Units restarted more than ``most`` times since their host booted."""
    return [f"{name}: NRestarts={s['NRestarts']}" for name, s in unit_states(fleet).items()
            if int(s["NRestarts"]) > most]


def not_active(fleet: bed.Fleet) -> Dict[str, str]:
    return {name: f"{s['ActiveState']}/{s['SubState']}" for name, s in unit_states(fleet).items()
            if s["ActiveState"] != "active"}
