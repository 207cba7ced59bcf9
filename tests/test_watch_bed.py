"""on_dependency_loss on real systemd: a service that breaks for good when its
dependency goes away comes back healthy with nobody touching its host.

B (on h2) depends on A (on h1) and, like the seed's worst case, never
reconnects once A is gone (standin.py --on-loss break). The stand-ins log
every start; unitgen-watch logs every decision to the journal.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

import drill
from drill import Dep, Standin, Topology

SENSITIVE = {"failures": 2, "seconds": "2s"}  # quick to see a loss, so the test is short
RECOVERY = 90.0  # generous: the machine is shared


def two_hosts(mode: str) -> Topology:
    return Topology(hosts=("h1", "h2"), services=(
        Standin("a", "h1", 7101),
        Standin("b", "h2", 7102, deps=(Dep("a"),), on_missing="degrade", on_loss="break"),
    ))


def start(make_fleet, topology: Topology, mode: str, threshold=SENSITIVE):
    """Install as a user would, start everything, wait until healthy."""
    fleet = make_fleet(list(topology.hosts))
    defaults = {"on_dependency_loss": mode, "loss_threshold": threshold, "restart_sec": "1s"}
    drill.install(fleet, topology, drill.conf_text(fleet, topology, defaults=defaults))
    for host in fleet:
        units = [s.unit for s in topology.on(host.name)]
        if host.exists("/etc/systemd/system/unitgen-watch.service"):
            host.run(["systemctl", "enable", "--quiet", "unitgen-watch.service"])
            units.append("unitgen-watch.service")
        host.run(["systemctl", "start", "--no-block", *units])
    drill.wait_healthy(fleet, topology)
    return fleet


def starts_of(fleet, topology, service: str) -> int:
    return len(drill.starts(drill.read_events(fleet, topology), service))


def watcher_log(host) -> str:
    return host.journal("unitgen-watch.service")


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_restart_brings_back_a_service_that_lost_its_remote_dependency(make_fleet):
    topology = two_hosts("restart")
    fleet = start(make_fleet, topology, "restart")
    h1, h2 = fleet["h1"], fleet["h2"]
    before = starts_of(fleet, topology, "b")

    h1.power_cut()  # A's host loses power alone
    wait_for(lambda: "b.service: lost a (" in watcher_log(h2), what="the watcher to see A lost")
    h1.boot(wait=False)  # the power comes back; nobody touches h2
    drill.wait_healthy(fleet, topology)

    log = watcher_log(h2)
    assert "restarting it (its probe holds it until the dependency is back)" in log
    assert "b.service: a (" in log and "answers again" in log
    assert starts_of(fleet, topology, "b") == before + 1  # exactly one restart, and it is healthy
    status = json.loads(h2.run(["unitgen", "status", drill.CONF_PATH, "--json"]).stdout.splitlines()[0])
    assert status["unit"] == "b.service" and status["health"] == "ok" and status["lost"] == []


def test_status_shows_the_lost_dependency_while_it_is_lost(make_fleet):
    topology = two_hosts("stop")
    fleet = start(make_fleet, topology, "stop")
    h1, h2 = fleet["h1"], fleet["h2"]
    h1.systemctl("stop", "a.service")
    wait_for(lambda: "stopping it until it answers again" in watcher_log(h2), what="the watcher to stop B")
    table = h2.run(["unitgen", "status", drill.CONF_PATH], check=False)
    assert table.returncode == 1
    row = next(line for line in table.stdout.splitlines() if line.startswith("b.service"))
    assert "inactive" in row and "lost a (" in row and "ago: connection refused" in row
    h1.systemctl("start", "a.service")
    drill.wait_healthy(fleet, topology)  # stop mode starts it again once A answers
    assert "answers again" in watcher_log(h2) and "starting it" in watcher_log(h2)


def test_a_flapping_dependency_restarts_at_most_once_a_minute(make_fleet):
    """A goes down, comes back, goes down again within the minute: the first loss
    restarts B, the second (B running again) does not. Every step waits for the
    event it needs (the watcher's decision, B healthy), never for a sleep; B's
    restarts are counted from B's own log."""
    topology = two_hosts("restart")
    fleet = start(make_fleet, topology, "restart", threshold={"failures": 1, "seconds": 0})
    h1, h2 = fleet["h1"], fleet["h2"]
    before = starts_of(fleet, topology, "b")

    def decisions(event: str):
        return [line for line in watcher_log(h2).splitlines() if f"b.service: {event}" in line]

    # The watcher may have seen A lost while the fleet booted (B not running
    # yet): wait until it has seen A back too, then count only what this
    # test's own outages make it decide.
    wait_for(lambda: len(decisions("lost a (")) == len(decisions("a (")),  # "b.service: a (…) answers again"
             what="the watcher to see A answer")
    seen_lost, seen_back = len(decisions("lost a (")), len(decisions("a ("))
    for n in (1, 2):
        h1.systemctl("stop", "a.service")
        wait_for(lambda: len(decisions("lost a (")) >= seen_lost + n, what=f"the watcher to see A lost ({n})")
        h1.systemctl("start", "a.service")
        wait_for(lambda: len(decisions("a (")) >= seen_back + n, what=f"the watcher to see A back ({n})")
        if n == 1:
            wait_for(lambda: starts_of(fleet, topology, "b") >= before + 1, what="the watcher's restart of B")
            drill.wait_healthy(fleet, topology)  # restarted: its probe held it until A answered
            assert starts_of(fleet, topology, "b") == before + 1  # the count sees a restart

    first, second = decisions("lost a (")[seen_lost:seen_lost + 2]
    assert "restarting it (" in first and "not restarting: restarted" in second, (first, second)
    assert starts_of(fleet, topology, "b") == before + 1  # the second loss restarted nothing


def test_ignore_keeps_todays_behaviour(make_fleet):
    topology = two_hosts("ignore")
    fleet = start(make_fleet, topology, "ignore")
    h1, h2 = fleet["h1"], fleet["h2"]
    assert not h2.exists("/etc/systemd/system/unitgen-watch.service")
    before = starts_of(fleet, topology, "b")
    assert before >= 1  # the count sees B's start
    h1.power_cut()
    # B must have seen the loss (its own log), or there is nothing to stay broken
    wait_for(lambda: any(e["service"] == "b" and e["event"] == "dependency lost at run time"
                         for e in drill.read_events(fleet, topology)), what="B to break on A's loss")
    h1.boot(wait=False)
    h1.wait_active("a.service")
    wait_for(lambda: drill.health(fleet, topology)["a"] == "healthy", what="A to answer again")
    assert drill.health(fleet, topology)["b"] == "HTTP status 503"  # broken for good, as before
    assert starts_of(fleet, topology, "b") == before  # nothing restarted it


def test_a_local_dependency_needs_no_watcher(make_fleet):
    """Same host: BindsTo= stops B when A dies, Upholds= starts B again once A is back."""
    topology = Topology(hosts=("h1",), services=(
        Standin("a", "h1", 7101),
        Standin("b", "h1", 7102, deps=(Dep("a"),), on_missing="degrade", on_loss="break"),
    ))
    fleet = start(make_fleet, topology, "restart")
    h1 = fleet["h1"]
    assert not h1.exists("/etc/systemd/system/unitgen-watch.service")
    before = starts_of(fleet, topology, "b")
    h1.systemctl("kill", "-s", "KILL", "a.service")  # A crashes; Restart= brings it back
    wait_for(lambda: starts_of(fleet, topology, "b") > before, what="B to start again")
    drill.wait_healthy(fleet, topology)
    assert starts_of(fleet, topology, "b") == before + 1


def test_on_unhealthy_restart_heals_a_service_broken_by_a_short_outage(make_fleet):
    """Liveness: A (h1) goes away for a few seconds, well under the loss
    threshold; B and C (h2) both break for good on it (503 until restarted).
    B says on_unhealthy: restart: once A answers again and B's own health still
    fails, the watcher restarts B, which is healthy again. C, the control, keeps
    the default (ignore) and stays broken. Every step waits for an event."""
    topology = Topology(hosts=("h1", "h2"), services=(
        Standin("a", "h1", 7101),
        Standin("b", "h2", 7102, deps=(Dep("a"),), on_missing="degrade", on_loss="break"),
        Standin("c", "h2", 7103, deps=(Dep("a"),), on_missing="degrade", on_loss="break"),
    ))
    fleet = make_fleet(list(topology.hosts))
    conf = yaml.safe_load(drill.conf_text(fleet, topology, defaults={"loss_threshold": SENSITIVE, "restart_sec": "1s"}))
    conf["services"]["b"]["on_unhealthy"] = "restart"
    drill.install(fleet, topology, yaml.safe_dump(conf, sort_keys=False))
    h1, h2 = fleet["h1"], fleet["h2"]
    assert h2.exists("/etc/systemd/system/unitgen-watch.service")  # rendered for B's health alone
    assert not h1.exists("/etc/systemd/system/unitgen-watch.service")
    h1.run(["systemctl", "start", "--no-block", "a.service"])
    h2.run(["systemctl", "enable", "--quiet", "unitgen-watch.service"])
    h2.run(["systemctl", "start", "--no-block", "b.service", "c.service", "unitgen-watch.service"])
    drill.wait_healthy(fleet, topology)
    wait_for(lambda: "watching" in watcher_log(h2), what="the watcher to start")
    before = {name: starts_of(fleet, topology, name) for name in ("b", "c")}

    h1.systemctl("stop", "a.service")
    gone = time.monotonic()
    wait_for(lambda: all(drill.health(fleet, topology)[name] == "HTTP status 503" for name in ("b", "c")),
             what="B and C to break on A's loss")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - gone)))  # the scenario: A away for about 3 s
    h1.systemctl("start", "a.service")
    h1.wait_active("a.service")

    wait_for(lambda: drill.health(fleet, topology)["b"] == "healthy", timeout=RECOVERY,
             what="the watcher to restart B and B to be healthy again")
    log = watcher_log(h2)
    decisions = [line for line in log.splitlines() if "b.service: unhealthy: b (" in line]
    assert decisions and "while its dependencies answer: restarting it" in decisions[0], log
    assert "c.service:" not in log  # C is not watched
    assert starts_of(fleet, topology, "b") == before["b"] + 1
    # the control: same outage, default on_unhealthy, still broken and never restarted
    assert drill.health(fleet, topology)["c"] == "HTTP status 503"
    assert starts_of(fleet, topology, "c") == before["c"]
    rows = [json.loads(line) for line in h2.run(["unitgen", "status", drill.CONF_PATH, "--json"],
                                                 check=False).stdout.splitlines()]
    b = next(row for row in rows if row["unit"] == "b.service")
    assert b["watcher_action"]["action"] == "restart" and b["watcher_action"]["reason"].startswith("unhealthy: b (")
