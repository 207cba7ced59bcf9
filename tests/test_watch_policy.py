"""The watcher's decisions (unitgen/watch.py Policy), and what the plans give it."""

from __future__ import annotations

import textwrap

import pytest

from unitgen import config, graph, render
from unitgen.watch import Dependency, Policy, Watched, watched_services
from unitgen_probe import Result, Target

DOWN = Result(False, "connection refused (port closed)", 0.001)
UP = Result(True, "connected", 0.001)


def service(mode="restart", failures=3, seconds=10.0, deps=1):
    return Watched("b.service", mode, failures, seconds, [Dependency(Target("tcp", f"a{i}:1")) for i in range(deps)])


def feed(policy, svc, dep, results_at, running=True):
    """Feed (time, result) pairs; the decisions made, in order."""
    decisions = []
    for now, result in results_at:
        event = policy.record(svc, dep, result, now, 1e9 + now)
        if event:
            decisions.append(policy.decide(svc, dep, event, now, running))
    return decisions


def test_lost_after_n_failures_spanning_m_seconds():
    svc = service(failures=3, seconds=10)
    dep = svc.dependencies[0]
    # three failures within 4 s: not yet lost; still failing at 10 s: lost
    decisions = feed(Policy(), svc, dep, [(0, DOWN), (2, DOWN), (4, DOWN), (6, DOWN), (8, DOWN), (10, DOWN)])
    assert [d.action for d in decisions] == ["restart"]
    assert "lost a0:1: connection refused (port closed), 6 failed checks over 10 s" in decisions[0].message
    assert dep.lost and svc.lost() == [dep]


def test_a_blip_is_not_a_loss():
    svc = service(failures=3, seconds=10)
    dep = svc.dependencies[0]
    results = [(t, UP if t % 6 == 0 else DOWN) for t in range(0, 60, 2)]  # up every third check
    assert feed(Policy(), svc, dep, results) == []


def test_restart_rate_is_bounded_even_when_a_dependency_flaps():
    svc = service(failures=1, seconds=0)
    dep = svc.dependencies[0]
    results = [(t, DOWN if t % 2 else UP) for t in range(0, 200)]  # down/up every second for 200 s
    decisions = feed(Policy(restart_interval=60), svc, dep, results)
    restarts = [d for d in decisions if d.action == "restart"]
    assert len(restarts) == 4  # at t=1, 61, 121, 181: once every 60 s at most
    assert any("not restarting: restarted" in d.message for d in decisions)


def test_stop_until_back_then_start():
    svc = service(mode="stop", failures=2, seconds=0, deps=2)
    first, second = svc.dependencies
    policy = Policy()
    assert [d.action for d in feed(policy, svc, first, [(0, DOWN), (1, DOWN)])] == ["stop"]
    assert [d.action for d in feed(policy, svc, second, [(2, DOWN), (3, DOWN)])] == ["none"]  # already stopped
    assert [d.action for d in feed(policy, svc, first, [(4, UP)])] == ["none"]  # the other is still lost
    assert [d.action for d in feed(policy, svc, second, [(5, UP)])] == ["start"]
    assert not svc.stopped_by_us and svc.lost() == []


def test_nothing_is_done_to_a_service_that_is_not_running():
    svc = service(failures=1, seconds=0)
    decisions = feed(Policy(), svc, svc.dependencies[0], [(0, DOWN)], running=False)
    assert [d.action for d in decisions] == ["none"] and "not running" in decisions[0].message


def test_stop_does_not_start_what_it_did_not_stop():
    svc = service(mode="stop", failures=1, seconds=0)
    dep = svc.dependencies[0]
    decisions = feed(Policy(), svc, dep, [(0, DOWN)], running=False) + feed(Policy(), svc, dep, [(1, UP)])
    assert [d.action for d in decisions] == ["none", "none"]


def _conf(tmp_path, text):
    path = tmp_path / "conf.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return config.load(str(path))


LOSS = """
    version: 1
    hosts: {h1: {address: 10.0.0.1}, h2: {address: 10.0.0.2}}
    services:
      a: {exec: [/bin/a], host: h1, listen: 1}
      local: {exec: [/bin/l], host: h2, listen: 2}
      b:
        exec: [/bin/b]
        host: h2
        on_dependency_loss: restart
        loss_threshold: {failures: 5, seconds: 20s}
        deps: [{service: a}, {service: local}, {tcp: "ext.example:9"}]
      c: {exec: [/bin/c], host: h2, deps: [{service: a}]}
"""


def test_plans_split_remote_from_same_host_dependencies(tmp_path):
    conf = _conf(tmp_path, LOSS)
    plans = {p.service.name: p for p in graph.plan(conf, "h2")}
    b = plans["b"]
    assert [t.spec for t in b.targets] == ["10.0.0.1:1", "localhost:2", "ext.example:9"]
    assert [t.spec for t in b.remote] == ["10.0.0.1:1", "ext.example:9"]
    assert (b.after, b.binds_to) == (("local.service",), ("local.service",))
    assert plans["local"].upholds == ("b.service",)
    assert plans["c"].binds_to == () and plans["c"].remote  # ignore: no binding, and no watcher for it
    (watched,) = watched_services(list(plans.values()))
    assert (watched.unit, watched.mode, watched.failures, watched.seconds) == ("b.service", "restart", 5, 20.0)
    assert [d.target.spec for d in watched.dependencies] == ["10.0.0.1:1", "ext.example:9"]


def test_the_watcher_unit_is_rendered_only_where_needed(tmp_path):
    conf = _conf(tmp_path, LOSS)
    renderer = render.Renderer("/usr/bin/unitgen-probe")
    on_h2 = renderer.render(conf, "h2")
    assert "unitgen-watch.service" in on_h2
    watcher = on_h2["unitgen-watch.service"]
    assert f" watch {tmp_path}/conf.yaml --host h2\n" in watcher
    assert "\nRestart=always\n" in watcher and "\nStartLimitIntervalSec=0\n" in watcher
    assert "BindsTo=local.service" in on_h2["b.service"] and "Upholds=b.service" in on_h2["local.service"]
    assert "unitgen-watch.service" not in renderer.render(conf, "h1")
    ignore = _conf(tmp_path, LOSS.replace("on_dependency_loss: restart", "on_dependency_loss: ignore"))
    units = renderer.render(ignore, "h2")
    assert "unitgen-watch.service" not in units and "BindsTo" not in units["b.service"]


def test_the_watchers_name_is_reserved(tmp_path):
    with pytest.raises(config.ConfigError, match="unitgen-watch is unitgen's own"):
        _conf(tmp_path, "version: 1\nservices:\n  unitgen-watch: {exec: [/bin/x]}\n")


def test_status_shows_what_the_watcher_found_lost():
    from unitgen import bus, status

    now = 1_000_000.0
    state = bus.UnitState("b.service", "loaded", "", "activating", "start-pre", now - 50, None, 1,
                          "waiting for a (10.0.0.1:1): connection refused, attempt 80, 48 s", 0, "success")
    watched = {"b.service": {"mode": "restart", "lost": [
        {"dependency": "a (10.0.0.1:1)", "since": now - 40, "reason": "connection refused (port closed)"}]}}
    (header, row) = status.table([status.Seen(state)], colour=False, now=now, watched=watched)
    assert row.endswith("waiting for a (10.0.0.1:1): connection refused, attempt 80, 48 s; "
                        "lost a (10.0.0.1:1) 40 s ago: connection refused (port closed)")
    (line,) = status.json_lines([status.Seen(state)], watched)
    import json

    lost = json.loads(line)["lost"]
    assert [(d["dependency"], d["reason"]) for d in lost] == [("a (10.0.0.1:1)", "connection refused (port closed)")]
    assert lost[0]["since"].endswith(("+00:00", "Z")) or "T" in lost[0]["since"]
    assert status.table([status.Seen(state)], colour=False, now=now)[1].endswith("attempt 80, 48 s")  # no watcher: as before
