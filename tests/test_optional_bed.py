"""Optional dependencies on real systemd: a service whose optional dependency
on another host is down starts without it after wait_at_most, and once the
dependency answers, unitgen-watch restarts it exactly once; a control service
whose optional dependency was there at its start is never restarted.

web (h2) depends optionally on cache (h1), which is installed but not
started; ctl (h2) depends optionally on db (h1), which runs; loc (h2)
depends optionally on lcache, on its own host, whose probe waits for cache
(a start job that lasts its whole deadline). The stand-ins
"degrade" (start, answer 503 for good) when a dependency is missing at their
start: the seed's worst case, which a restart with the dependency mends.
Judged from systemd's properties (InvocationID, ExecMainPID, StatusText),
unitgen's own output (its probe's STATUS=, unitgen status --json, the
watcher's journal lines) and the stand-ins' own logs; never from time.
"""

from __future__ import annotations

import json
import time

import yaml
from probe_helpers import wait_until

import drill
from drill import Dep, Standin, Topology
from unitgen_probe.report import DEGRADED, started_without

WAIT_AT_MOST = "3s"
TOPOLOGY = Topology(hosts=("h1", "h2"), services=(
    Standin("cache", "h1", 7301),
    Standin("db", "h1", 7302),
    Standin("web", "h2", 7303, deps=(Dep("cache"),), on_missing="degrade"),
    Standin("ctl", "h2", 7304, deps=(Dep("db"),), on_missing="degrade"),
    Standin("lcache", "h2", 7305, deps=(Dep("cache"),)),
    Standin("loc", "h2", 7306, deps=(Dep("lcache"),), on_missing="degrade"),
))


def show(host, unit: str, *properties: str) -> dict:
    lines = host.systemctl("show", unit, *(f"--property={p}" for p in properties)).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def status_json(host) -> dict:
    done = host.run(["unitgen", "status", drill.CONF_PATH, "--json"], check=False)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {row["unit"]: row for row in rows}


def test_a_degraded_start_is_restarted_once_when_its_optional_dependency_returns(make_fleet):
    fleet = make_fleet(list(TOPOLOGY.hosts))
    conf = yaml.safe_load(drill.conf_text(fleet, TOPOLOGY, defaults={"restart_sec": "1s"}))
    for name in ("web", "ctl", "loc"):
        conf["services"][name]["deps"][0].update(optional=True, wait_at_most=WAIT_AT_MOST)
    drill.install(fleet, TOPOLOGY, yaml.safe_dump(conf, sort_keys=False))
    h1, h2 = fleet["h1"], fleet["h2"]
    assert h2.exists("/etc/systemd/system/unitgen-watch.service")  # rendered for the optional dependencies
    unit = h2.read_file("/etc/systemd/system/web.service")
    assert "--wait-at-most=3" in unit

    h1.systemctl("start", "db.service")  # cache stays down: installed, never started
    h2.run(["systemctl", "enable", "--quiet", "unitgen-watch.service"])
    h2.systemctl("start", "unitgen-watch.service")
    h2.run(["systemctl", "start", "--no-block", "web.service", "ctl.service", "lcache.service", "loc.service"])
    h2.wait_active("web.service", "ctl.service", "loc.service", timeout=60)  # after their bound, without
    # loc is Wants= lcache only (no After=): it never waited for lcache's start job, still running
    lcache = show(h2, "lcache.service", "ActiveState", "SubState")
    assert lcache == {"ActiveState": "activating", "SubState": "start-pre"}
    loc_status = show(h2, "loc.service", "StatusText")["StatusText"]
    assert started_without("lcache (http://localhost:7305/health)") in loc_status
    loc = show(h2, "loc.service", "InvocationID")

    cache_display = f"cache (http://{h1.address}:7301/health)"
    web = show(h2, "web.service", "InvocationID", "ExecMainPID", "StatusText", "ActiveState")
    ctl = show(h2, "ctl.service", "InvocationID", "ExecMainPID", "StatusText", "NRestarts")
    assert web["StatusText"].startswith(DEGRADED) and started_without(cache_display) in web["StatusText"]
    assert ctl["StatusText"].startswith("ready after ") and DEGRADED not in ctl["StatusText"]
    assert "started degraded" in h2.journal("web.service")  # the probe's line, in the unit's journal
    assert status_json(h2)["web.service"]["health"] == "ok"  # running: degraded is not down
    # systemd says active once the stand-in is spawned; it binds its port a moment later: wait for its own
    # "serving" event (unhealthy: started without cache), then judge what it answers
    wait_until(lambda: [e for e in drill.read_events(fleet, TOPOLOGY)
                        if e["service"] == "web" and e["event"] == "serving" and not e["healthy"]],
               60, 0.2, what="web serving, degraded")
    assert drill.health(fleet, TOPOLOGY)["web"] == "HTTP status 503"  # the stand-in runs without cache
    web_starts = len(drill.starts(drill.read_events(fleet, TOPOLOGY), "web"))

    h1.systemctl("start", "cache.service")  # the optional dependency returns
    wait_until(lambda: show(h2, "web.service", "InvocationID")["InvocationID"] != web["InvocationID"], 90, 0.2,
               what="the watcher to restart web")
    h2.wait_active("web.service")
    wait_until(lambda: drill.health(fleet, TOPOLOGY)["web"] == "healthy", 90, 0.2, what="web healthy with cache")
    # lcache now starts (its probe sees cache), and loc is restarted for it in turn
    wait_until(lambda: drill.health(fleet, TOPOLOGY)["loc"] == "healthy", 90, 0.2, what="loc healthy with lcache")
    assert show(h2, "loc.service", "InvocationID") != loc

    after = show(h2, "web.service", "InvocationID", "ExecMainPID", "StatusText")
    assert after["ExecMainPID"] != web["ExecMainPID"]
    assert after["StatusText"].startswith("ready after ")  # this start had cache
    log = h2.journal("unitgen-watch.service")
    restarts = [line for line in log.splitlines() if "web.service: " in line and "restarting it once" in line]
    assert len(restarts) == 1 and f"web.service: {cache_display} answers; it started degraded" in restarts[0]
    action = status_json(h2)["web.service"]["watcher_action"]
    assert action["action"] == "restart" and "started degraded without it (optional)" in action["reason"]

    # several watch intervals later: still the one restart, and ctl never touched
    time.sleep(6)
    events = drill.read_events(fleet, TOPOLOGY)
    assert len(drill.starts(events, "web")) == web_starts + 1 and len(drill.starts(events, "loc")) == 2
    assert show(h2, "web.service", "InvocationID")["InvocationID"] == after["InvocationID"]
    assert show(h2, "ctl.service", "InvocationID", "ExecMainPID", "NRestarts") == \
        {"InvocationID": ctl["InvocationID"], "ExecMainPID": ctl["ExecMainPID"], "NRestarts": "0"}
    assert "ctl.service: " not in log  # no decision about ctl, ever
    assert set(drill.health(fleet, TOPOLOGY).values()) == {"healthy"}
