"""Replicated services and clusters: need (all, any, quorum, N), any:/of: groups
of checks, peers:, and what check, render and plan make of them."""

from __future__ import annotations

import json
import textwrap

import pytest

from unitgen import config, graph, render
from unitgen.cli import cli
from unitgen_probe import parse_argv
from clirunner import cli_runner
from unitverify import verify, write_units

PROBE = "/usr/bin/unitgen-probe"

FLEET = """
version: 1
hosts: {h1: {address: 10.0.0.1}, h2: {address: 10.0.0.2}, h3: {address: 10.0.0.3}, h4: {address: 10.0.0.4}}
services:
  etcd:
    host: [h1, h2, h3]
    exec: [/usr/bin/etcd]
    user: etcd
    health: "http://{host}:2379/health"
    peers: {need: quorum}
    deps: [{service: etcd}, {tcp: "10.0.0.2:2379"}, {tcp: "ntp.example:123"}]
  api:
    host: [h1, h2, h3]
    exec: [/bin/api]
    user: api
    listen: 8080
  app:
    host: [h4, h1]
    exec: [/bin/app]
    user: app
    listen: 80
    deps: [{service: etcd}, {service: api}, DEPS]
"""


def write(tmp_path, text, deps="{service: api, need: all}"):
    path = tmp_path / "conf.yaml"
    path.write_text(textwrap.dedent(text).replace("DEPS", deps).lstrip())
    return path


def load(tmp_path, text, deps="{service: api, need: all}"):
    path = write(tmp_path, text, deps)
    return config.load(str(path)), path


def run(*args):
    return cli_runner().invoke(cli, [str(a) for a in args])


def unit_of(conf, host, name):
    return next(p for p in graph.plan(conf, host) if p.service.name == name)


def probe_of(text):
    line = next(l for l in text.splitlines() if l.startswith("ExecStartPre="))
    return parse_argv(line.split()[1:])


def test_needs_default_to_peers_then_any_and_say_all_quorum_and_n(tmp_path):
    conf, _ = load(tmp_path, FLEET)
    on_h4 = unit_of(conf, "h4", "app")
    assert on_h4.targets == ()
    assert [(g.label, g.need, len(g.targets)) for g in on_h4.groups] == [
        ("etcd", 2, 3), ("api", 1, 3), ("api (2)", 3, 3)]  # peers' quorum; any; all
    assert [t.name for t in on_h4.groups[0].targets] == ["etcd@h1", "etcd@h2", "etcd@h3"]
    assert on_h4.groups[0].targets[1].spec == "http://10.0.0.2:2379/health"
    for need, count in (("quorum", 2), (2, 2), ("any", 1), ("all", 3), (5, 5)):
        conf, _ = load(tmp_path, FLEET, f"{{service: api, need: {need}, name: backends}}")
        assert unit_of(conf, "h4", "app").groups[2].need == count


def test_a_copy_on_the_same_host_counts_and_is_ordered_natively_but_not_bound(tmp_path):
    conf, _ = load(tmp_path, FLEET.replace("user: app", "user: app\n    on_dependency_loss: restart"))
    on_h1 = unit_of(conf, "h1", "app")
    assert on_h1.after == ("etcd.service", "api.service")
    assert on_h1.binds_to == ()  # one copy of three going away is not the dependency lost
    etcd = on_h1.groups[0]
    assert [t.spec for t in etcd.targets] == ["http://localhost:2379/health", "http://10.0.0.2:2379/health",
                                              "http://10.0.0.3:2379/health"]
    assert on_h1.remote_groups == on_h1.groups


def test_a_single_copy_service_is_unchanged(tmp_path):
    conf, _ = load(tmp_path, FLEET.replace("host: [h1, h2, h3]\n    exec: [/bin/api]", "host: h2\n    exec: [/bin/api]"),
                   "{service: etcd, need: 2}")
    on_h4 = unit_of(conf, "h4", "app")
    assert [(t.spec, t.name) for t in on_h4.targets] == [("10.0.0.2:8080", "api")]
    assert [g.label for g in on_h4.groups] == ["etcd", "etcd (2)"]


def test_peers_do_not_wait_for_each_other_but_for_the_rest(tmp_path):
    conf, _ = load(tmp_path, FLEET)
    for host in ("h1", "h2", "h3"):
        etcd = unit_of(conf, host, "etcd")
        assert etcd.groups == () and etcd.after == ()
        assert [t.spec for t in etcd.targets] == ["ntp.example:123"]  # not its peer at :2379, not itself
    assert graph.check(conf) == []


@pytest.mark.parametrize("old, new, cycle", [
    # without peers:, a replicated service waiting for itself is a cycle
    ("    peers: {need: quorum}\n", "", "etcd@h1 → etcd@h1"),
    # with peers:, any other cycle through the cluster still is one
    ('{tcp: "ntp.example:123"}]', '{tcp: "ntp.example:123"}, {service: app, need: any}]', "etcd@h1 → app@h4 → etcd@h1"),
])
def test_cycles_outside_a_peer_group_are_still_cycles(tmp_path, old, new, cycle):
    result = run("check", write(tmp_path, FLEET.replace(old, new)))
    assert result.exit_code == 2
    assert f"dependency cycle: {cycle};" in result.stderr


def test_groups_of_checks(tmp_path):
    deps = ('{any: [{tcp: "cache1:6379"}, {tcp: "cache2:6379"}], name: cache}, '
            '{of: [{tcp: "a:1"}, {http: "http://b/ok", status: 204}, {tcp: "c:1"}], need: quorum}')
    conf, _ = load(tmp_path, FLEET, deps)
    cache, abc = unit_of(conf, "h4", "app").groups[2:]
    assert (cache.label, cache.need, [t.spec for t in cache.targets]) == ("cache", 1, ["cache1:6379", "cache2:6379"])
    assert (abc.label, abc.need) == ("[a:1, http://b/ok, c:1]", 2)
    assert abc.targets[1].status == ("204",)


@pytest.mark.parametrize("deps, message", [
    ("{service: api, need: 0}", "services.app.deps[2].need: "),
    ("{service: api, need: most}", "services.app.deps[2].need: "),
    ("{any: []}", "services.app.deps[2].any: "),
    ("{of: [{service: api}]}", "services.app.deps[2].of[0]: "),
])
def test_needs_the_schema_refuses(tmp_path, deps, message):
    path = write(tmp_path, FLEET, deps)
    result = run("check", path)
    assert result.exit_code == 2
    assert f"{path}:" in result.stderr and message in result.stderr


def test_check_warns_when_a_need_can_never_be_met(tmp_path):
    _, path = load(tmp_path, FLEET, '{service: api, need: 4}, {of: [{tcp: "a:1"}], need: 2}')
    result = run("check", path)
    assert result.exit_code == 0, result.output
    assert f"{path}:21:45: app: warning: needs 4 copies" in result.stderr  # at the dependency
    assert "needs 4 copies of 'api', which the conf places on 3 hosts: it can never be met" in result.stderr
    assert "needs 2 of 1 checks: it can never be met" in result.stderr
    one = FLEET.replace("host: [h1, h2, h3]\n    exec: [/usr/bin/etcd]", "host: h1\n    exec: [/usr/bin/etcd]")
    _, path = load(tmp_path, one)
    assert "peers: on a service with one copy" in run("check", path).stderr


def test_rendered_units_wait_for_the_groups_and_pass_systemd_analyze(tmp_path):
    conf, _ = load(tmp_path, FLEET, '{any: [{tcp: "cache1:6379"}, {tcp: "cache2:6379"}], name: cache}')
    for host in ("h1", "h4"):
        units = render.Renderer(probe=PROBE).render(conf, host)
        inv = probe_of(units["app.service"])
        assert [(g.label, g.need) for g in inv.groups] == [("etcd", 2), ("api", 1), ("cache", 1)]
        directory = tmp_path / host
        directory.mkdir()
        verified = verify(write_units(directory, units))
        assert verified.stderr == "", verified.stderr


PLAN_FLEET = """
version: 1
hosts: {h1: {}, h2: {}, h3: {}, h4: {}}
services:
  etcd: {host: [h1, h2, h3], exec: [/usr/bin/etcd], health: "http://{host}:2379/health", peers: {need: quorum},
         start_time: 2s}
  app: {host: h4, exec: [/bin/app], listen: 80, deps: [{service: etcd}]}
  api: {host: [h1, h2, h3], exec: [/bin/api], listen: 8080}
  proxy: {host: h4, exec: [/bin/proxy], listen: 443, deps: [{service: api}]}
  strict: {host: h4, exec: [/bin/strict], listen: 81, deps: [{service: api, need: all}]}
  front: {host: h4, exec: [/bin/front], deps: [{service: strict}]}
"""


def test_plan_down_says_what_comes_back_and_what_waits_for_ever(tmp_path):
    _, path = load(tmp_path, PLAN_FLEET)
    result = run("plan", path, "--down", "h2,h3", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    back = {s["service"] + "@" + s["host"] for s in plan["services"]}
    assert back == {"api@h1", "proxy@h4"}  # etcd@h1 runs, but a cluster of one is not ready
    assert plan["down_with_their_host"] == ["etcd@h2", "etcd@h3", "api@h2", "api@h3"]
    why = {(s["service"], s["host"]): s["why"] for s in plan["never_start"]}
    assert why == {
        ("etcd", "h1"): "runs, but its cluster is never ready: needs 2 of the 3 copies of etcd, 1 comes up "
                        "(etcd@h2: host down, etcd@h3: host down)",
        ("app", "h4"): "needs 2 of the 3 copies of etcd, 0 come back "
                       "(etcd@h1: never ready, etcd@h2: host down, etcd@h3: host down)",
        ("strict", "h4"): "needs 3 of the 3 copies of api, 1 comes back (api@h2: host down, api@h3: host down)",
        ("front", "h4"): "needs strict@h4 (strict@h4: never ready)",
    }
    one_down = json.loads(run("plan", path, "--down", "h3", "--json").stdout)
    by = {s["service"] + "@" + s["host"]: s for s in one_down["services"]}
    # the cluster is ready once its second copy runs: both copies with it, and the app after
    assert by["etcd@h1"]["ready"] == by["etcd@h2"]["ready"] <= by["app@h4"]["start"]
    assert by["app@h4"]["waits_for"] in ("etcd@h1", "etcd@h2")
    assert [s["service"] for s in one_down["never_start"]] == ["strict", "front"]
    text = run("plan", path, "--down", "h2,h3")
    assert "every host up at t=0 but h2, h3 (never back)" in text.stdout
    assert "  app@h4: needs 2 of the 3 copies of etcd, 0 come back" in text.stdout
    assert run("plan", path, "--down", "h9").exit_code == 2


def test_plan_a_group_is_met_by_its_earliest_members(tmp_path):
    text = PLAN_FLEET + """\
  quick: {host: h1, exec: [/bin/quick], listen: 7, start_time: 1s}
  slow: {host: h2, exec: [/bin/slow], listen: 9, start_time: 30s}
  either: {host: h4, exec: [/bin/either], deps: [{any: [{tcp: "h1:7"}, {tcp: "h2:9"}]}]}
  both: {host: h4, exec: [/bin/both], deps: [{of: [{tcp: "h1:7"}, {tcp: "h2:9"}]}]}
"""
    _, path = load(tmp_path, text)
    plan = json.loads(run("plan", path, "--json").stdout)
    by = {s["service"]: s for s in plan["services"]}
    assert (by["either"]["waits_for"], by["both"]["waits_for"]) == ("quick@h1", "slow@h2")
    assert by["either"]["start"] < by["slow"]["ready"] <= by["both"]["start"]
    assert by["app"]["wave"] == 2 and by["app"]["waits_for"] in ("etcd@h1", "etcd@h2", "etcd@h3")


# -- the watcher: a replicated dependency is lost only below its need ------------

def test_the_watcher_loses_a_replicated_dependency_only_below_its_need(tmp_path):
    from unitgen.watch import Policy, watched_services
    from unitgen_probe import Result

    conf, _ = load(tmp_path, FLEET.replace("user: app", "user: app\n    on_dependency_loss: stop"))
    [app] = watched_services(graph.plan(conf, "h4"))
    etcd = [d for d in app.dependencies if d.group is not None and d.group.label == "etcd"]
    assert [d.target.name for d in etcd] == ["etcd@h1", "etcd@h2", "etcd@h3"] and etcd[0].group.need == 2
    down, up = Result(False, "connection refused (port closed)", 0.001), Result(True, "HTTP status 200", 0.001)
    policy, events = Policy(), []

    def feed(dep, result, now, running=True):
        event = policy.record(app, dep, result, now, 1e9 + now)
        if event:
            events.append(policy.decide(app, dep, event, now, running))

    for now in (0, 5, 10):  # one copy of three lost: 2 answer, the need is met
        feed(etcd[2], down, now)
    assert etcd[2].lost and app.lost() == []
    [noted] = events  # a line in the log, no action
    assert (noted.action, noted.message) == ("none", "lost etcd@h3 (http://10.0.0.3:2379/health): connection refused "
                                             "(port closed); etcd still has its need: 2 of 3 answer, need 2 "
                                             "(etcd@h3: connection refused (port closed)); nothing to do")
    events.clear()
    for now in (20, 25, 30):  # a second one: 1 of 3 answer, need 2
        feed(etcd[1], down, now)
    [stop] = events
    assert stop.action == "stop"
    assert stop.message.startswith("lost etcd: 1 of 3 answer, need 2 (etcd@h2: connection refused (port closed), "
                                   "etcd@h3: connection refused (port closed)): stopping it")
    assert app.lost() == [etcd[0].group]
    feed(etcd[2], up, 40)  # one back: 2 of 3 again
    assert [e.action for e in events] == ["stop", "start"] and app.lost() == []
    feed(etcd[1], up, 45)  # and the other: a line, nothing to do
    assert events[-1].action == "none" and events[-1].message.startswith("etcd@h2 (http://10.0.0.2:2379/health) answers again; etcd still has its need: 3 of 3")
    assert "etcd answers again: 2 of 3 answer, need 2" in events[1].message


def test_unitgen_probe_counts_a_group_by_its_need(tmp_path):
    from probe_helpers import ClosedPort, open_port

    with open_port() as up, ClosedPort() as down:
        members = f'[{{tcp: "127.0.0.1:{up.port}"}}, {{tcp: "127.0.0.1:{down.port}"}}]'
        for need, code in (("any", 0), ("all", 1)):
            path = write(tmp_path, f"""
                version: 1
                services:
                  app: {{exec: [/bin/app], deps: [{{of: {members}, need: {need}, name: pair}}]}}
            """)
            result = run("probe", path, "app")
            assert result.exit_code == code, result.output
            assert ("pair: 1 of 2 answer, need 2" in result.stdout) == (need == "all")
