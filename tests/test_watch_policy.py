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


# -- liveness: on_unhealthy ----------------------------------------------------

HTTP_DOWN = Result(False, "HTTP status 503", 0.001)


def unhealthy_service(failures=2, seconds=2.0):
    svc = service(mode="ignore", failures=failures, seconds=seconds)
    svc.health = Dependency(Target("http", "http://127.0.0.1:7/health", name="b"), acts=False)
    return svc


def judge(policy, svc, results_at, running=True):
    """Feed (time, (dependency result, health result)) pairs; the decisions made, in order."""
    decisions = []
    for now, (dep_result, own_result) in results_at:
        policy.record(svc, svc.dependencies[0], dep_result, now, 1e9 + now)
        if policy.judge(svc, own_result, now):
            decisions.append(policy.decide_unhealthy(svc, now, running))
    return decisions


def test_unhealthy_while_its_dependencies_answer_restarts_it():
    svc = unhealthy_service(failures=2, seconds=2)
    decisions = judge(Policy(), svc, [(0, (UP, HTTP_DOWN)), (1, (UP, HTTP_DOWN)), (2, (UP, HTTP_DOWN))])
    assert [d.action for d in decisions] == ["restart"]
    assert decisions[0].message.startswith("unhealthy: b (http://127.0.0.1:7/health): HTTP status 503, "
                                           "3 failed checks over 2 s while its dependencies answer: restarting it")


def test_a_dependency_outage_is_not_the_services_fault():
    svc = unhealthy_service(failures=2, seconds=2)
    # its health fails all along, but so does its dependency: nothing; then one failure after it is back: nothing yet
    results = [(t, (DOWN, HTTP_DOWN)) for t in range(0, 30)] + [(30, (UP, HTTP_DOWN))]
    assert judge(Policy(), svc, results) == []
    assert [d.action for d in judge(Policy(), svc, [(31, (UP, HTTP_DOWN)), (32, (UP, HTTP_DOWN))])] == ["restart"]


def test_a_replicated_dependency_answers_with_its_need():
    from unitgen.watch import DependencyGroup, _grouped
    from unitgen_probe.targets import Group

    svc = unhealthy_service(failures=1, seconds=0)
    svc.dependencies = _grouped([Group("kv", (Target("tcp", "k1:1"), Target("tcp", "k2:1")), need=1)], acts=False)
    policy = Policy()
    policy.record(svc, svc.dependencies[0], DOWN, 0, 1e9)
    assert svc.answering()  # one of two, need 1
    policy.record(svc, svc.dependencies[1], DOWN, 0, 1e9)
    assert not svc.answering() and not policy.judge(svc, HTTP_DOWN, 1)
    assert isinstance(svc.dependencies[0].group, DependencyGroup)


def test_unhealthy_restarts_are_bounded_and_wait_for_its_start_time():
    svc = unhealthy_service(failures=1, seconds=0)
    policy = Policy(restart_interval=60)
    assert [d.action for d in judge(policy, svc, [(0, (UP, HTTP_DOWN))])] == ["restart"]
    second = judge(policy, svc, [(10, (UP, HTTP_DOWN))])
    assert [d.action for d in second] == ["none"] and "not restarting: restarted 10 s ago" in second[0].message
    svc.judge_after = 100.0  # what the watcher sets once a restart job ends: then + start_time
    assert judge(policy, svc, [(70, (UP, HTTP_DOWN)), (99, (UP, HTTP_DOWN))]) == []
    assert [d.action for d in judge(policy, svc, [(100, (UP, HTTP_DOWN))])] == ["restart"]
    assert judge(policy, svc, [(200, (UP, UP))]) == [] and svc.health.failures == 0


UNHEALTHY = LOSS.replace("on_dependency_loss: restart\n        loss_threshold: {failures: 5, seconds: 20s}",
                         'health: "http://{host}:8/health"\n        on_unhealthy: restart\n        start_time: 4s')


def test_on_unhealthy_watches_its_own_health_and_gates_on_every_dependency(tmp_path):
    conf = _conf(tmp_path, UNHEALTHY)
    plans = graph.plan(conf, "h2")
    (watched,) = watched_services(plans)
    assert (watched.unit, watched.mode, watched.start_time) == ("b.service", "ignore", 4.0)
    assert watched.health.target.spec == "http://127.0.0.1:8/health"
    # every dependency gates the judgement; none is acted on (on_dependency_loss: ignore)
    assert [(d.target.spec, d.acts) for d in watched.dependencies] == [
        ("10.0.0.1:1", False), ("ext.example:9", False), ("localhost:2", False)]
    units = render.Renderer("/usr/bin/unitgen-probe").render(conf, "h2")
    assert "on_unhealthy: restart" in UNHEALTHY
    assert "unitgen-watch.service" in units and "BindsTo" not in units["b.service"]
    assert "unitgen-watch.service" not in render.Renderer("/usr/bin/unitgen-probe").render(conf, "h1")
    default = _conf(tmp_path, UNHEALTHY.replace("on_unhealthy: restart", "on_unhealthy: ignore"))
    assert "unitgen-watch.service" not in render.Renderer("/usr/bin/unitgen-probe").render(default, "h2")


def test_on_unhealthy_needs_a_health_url(tmp_path):
    with pytest.raises(config.ConfigError, match="on_unhealthy: restart needs the service's own health: URL") as err:
        _conf(tmp_path, "version: 1\nservices:\n  b: {exec: [/bin/b], listen: 1, on_unhealthy: restart}\n")
    assert "conf.yaml:3" in str(err.value)


def test_status_shows_the_watchers_last_action_and_why():
    import json

    from unitgen import bus, status

    now = 1_000_000.0
    state = bus.UnitState("b.service", "loaded", "", "active", "running", now - 5, now - 5, 2, "", 0, "success")
    reason = "unhealthy: b (http://127.0.0.1:8/health): HTTP status 503, 2 failed checks over 2 s " \
             "while its dependencies answer: restarting it"
    watched = {"b.service": {"mode": "ignore", "lost": [], "actions": [{"action": "restart", "at": now - 6,
                                                                         "reason": reason}]}}
    (header, row) = status.table([status.Seen(state)], colour=False, now=now, watched=watched)
    assert row.endswith(f"watcher: restart 6 s ago: {reason}")
    (line,) = status.json_lines([status.Seen(state)], watched)
    action = json.loads(line)["watcher_action"]
    assert (action["action"], action["reason"]) == ("restart", reason) and "T" in action["at"]
