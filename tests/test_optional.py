"""Optional dependencies (deps: - {…, optional: true, wait_at_most: SPAN}):
the conf boundary, the units, the recovery estimate, and the probe against
real sockets that answer late or never. The watcher's side is in
tests/test_optional_watch.py and, on real systemd, tests/test_optional_bed.py."""

from __future__ import annotations

import textwrap

import pytest
from probe_helpers import ClosedPort, NotifySocket, ProbeProcess, probe_env, run_probe, wait_until

from unitgen import config, defaults, graph, render
from unitgen.errors import ConfigError
from unitgen.model import CheckDependency, GroupDependency, ServiceDependency
from unitgen_probe import Target, format_argv, parse_argv
from unitgen_probe.report import DEGRADED, started_without
from unitgen_probe.targets import Group, UsageError
from unitgen_probe.wait import MIN_GAP

from test_cases import parse_unit
from unitverify import verify, write_units

PROBE = "/usr/bin/unitgen-probe"


def load(tmp_path, text, name="conf.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return config.load(str(path))


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [(p.mark.line if p.mark else None, p.path, p.message) for p in caught.value.problems]


FLEET = """
version: 1
hosts: {h1: {address: 10.0.0.1}, h2: {address: 10.0.0.2}}
services:
  cache: {host: h1, exec: [/bin/cache], listen: 6379}
  db: {host: h2, exec: [/bin/db], listen: 5432}
  local: {host: h2, exec: [/bin/local], health: "http://{host}:8080/health"}
  web:
    host: h2
    exec: [/bin/web]
    on_dependency_loss: restart
    deps:
      - {service: cache, optional: true, wait_at_most: 5s}
      - {service: local, optional: true}
      - {service: db}
      - {tcp: "10.0.0.9:80", name: metrics, optional: true, wait_at_most: 2s}
      - {any: [{tcp: "10.0.0.7:53"}, {tcp: "10.0.0.8:53"}], name: dns, optional: true, wait_at_most: 1500ms}
"""


# --- the conf ------------------------------------------------------------------

def test_every_kind_of_dependency_may_be_optional_with_its_bound_or_the_default(tmp_path):
    web = load(tmp_path, FLEET).services["web"]
    cache, local, db, metrics, dns = web.deps
    assert isinstance(cache, ServiceDependency) and cache.wait_at_most == 5.0
    assert local.wait_at_most == defaults.OPTIONAL_WAIT
    assert db.wait_at_most is None
    assert isinstance(metrics, CheckDependency) and metrics.target.wait_at_most == 2.0
    assert isinstance(dns, GroupDependency) and dns.wait_at_most == 1.5
    assert all(t.wait_at_most is None for t in dns.targets)


def test_an_autoheal_conf_may_say_optional_and_still_reads_as_before(tmp_path):
    conf = load(tmp_path, """
        web:
          pname: web
          script: /opt/web/start.sh
          dep:
            - {name: db, host: 127.0.0.1, port: 5432}
            - {name: cache, url: "http://10.0.0.1:6379/ping", optional: true, wait_at_most: 10s}
    """)
    db, cache = conf.services["web"].deps
    assert db.target.wait_at_most is None and cache.target.wait_at_most == 10.0


@pytest.mark.parametrize("dep, line_key, words", [
    ("{service: cache, wait_at_most: 5s}", "wait_at_most", "add optional: true"),
    ("{service: cache, optional: false, wait_at_most: 5s}", "wait_at_most", "add optional: true"),
    ("{service: cache, optional: true, wait_at_most: 0}", "wait_at_most", "must be above 0"),
    ("{service: cache, optional: true, wait_at_most: 60s}", "wait_at_most", "below the probe's deadline (60 s)"),
    ("{service: cache, optional: true, wait_at_most: 5 parsecs}", "wait_at_most", "time span"),
    ("{service: cache, optional: 'true'}", "optional", "expected true or false"),
    ("{any: [{tcp: '10.0.0.7:53', optional: true}]}", "any[0].optional", "give optional: to the group"),
])
def test_what_the_conf_refuses_at_its_line(tmp_path, dep, line_key, words):
    found = problems(tmp_path, f"""
        version: 1
        hosts: {{h1: {{address: 10.0.0.1}}, h2: {{address: 10.0.0.2}}}}
        services:
          cache: {{host: h1, exec: [/bin/cache], listen: 6379}}
          web:
            host: h2
            exec: [/bin/web]
            deps:
              - {dep}
    """)
    assert len(found) == 1, found
    line, path, message = found[0]
    assert line == 9 and words in message, found
    assert path == f"services.web.deps[0].{line_key}", found


def test_the_default_wait_must_fit_the_probe_deadline_too(tmp_path):
    found = problems(tmp_path, """
        version: 1
        services:
          web:
            exec: [/bin/web]
            probe: {deadline: 20s}
            deps:
              - {tcp: "10.0.0.1:80", optional: true}
    """)
    assert found == [(7, "services.web.deps[0].optional",
                      "wait_at_most (the default, 30 s) must be below the probe's deadline (20 s): the unit would "
                      "fail before it starts without this dependency")]


def test_optional_with_probe_any_is_refused(tmp_path):
    found = problems(tmp_path, """
        version: 1
        services:
          web:
            exec: [/bin/web]
            probe: {any: true}
            deps:
              - {tcp: "10.0.0.1:80"}
              - {tcp: "10.0.0.2:80", optional: true, wait_at_most: 3s}
    """)
    assert [(line, path) for line, path, _ in found] == [(8, "services.web.deps[1].wait_at_most")]
    assert "probe: any: true" in found[0][2]


# --- the units -----------------------------------------------------------------

def render_h2(tmp_path, text=FLEET):
    units = render.Renderer(probe=PROBE).render(load(tmp_path, text), "h2")
    verified = verify(write_units(tmp_path, units))
    assert verified.stderr == ""
    return units, {name: parse_unit(text) for name, text in units.items()}


def test_a_same_host_optional_dependency_is_wanted_never_ordered_nor_bound(tmp_path):
    units, parsed = render_h2(tmp_path)
    web = parsed["web.service"]
    assert "local.service" in web["Unit", "Wants"]
    assert "local.service" not in web["Unit", "After"]  # the dependent never waits for its start job
    assert web["Unit", "BindsTo"] == ["db.service"]  # on_dependency_loss: not stopped with an optional one
    assert ("Unit", "Upholds") not in parsed["local.service"]
    assert "db.service" in web["Unit", "After"] and "db.service" in web["Unit", "BindsTo"]  # required: as before


def test_the_probe_gets_each_bound(tmp_path):
    units, parsed = render_h2(tmp_path)
    (pre,) = parsed["web.service"]["Service", "ExecStartPre"]
    words = pre.split()
    inv = parse_argv(words[words.index("--deadline=60"):])
    bounds = {t.label: t.wait_at_most for t in inv.targets}
    assert bounds["cache"] == 5.0 and bounds["local"] == defaults.OPTIONAL_WAIT and bounds["db"] is None
    assert bounds["metrics"] == 2.0
    assert [(g.label, g.wait_at_most) for g in inv.groups] == [("dns", 1.5)]
    assert "unitgen-watch.service" in units  # an optional dependency is watched for its return


def test_an_optional_dependency_alone_renders_a_watcher(tmp_path):
    units, _ = render_h2(tmp_path, """
        version: 1
        hosts: {h1: {address: 10.0.0.1}, h2: {address: 10.0.0.2}}
        services:
          cache: {host: h1, exec: [/bin/cache], listen: 6379}
          web: {host: h2, exec: [/bin/web], deps: [{service: cache, optional: true, wait_at_most: 5s}]}
    """)
    assert sorted(units) == ["unitgen-watch.service", "web.service"]


def test_a_cycle_through_an_optional_edge_is_no_deadlock(tmp_path):
    text = """
        version: 1
        services:
          a: {exec: [/bin/a], listen: 81, deps: [{service: b}]}
          b: {exec: [/bin/b], listen: 82, deps: [{service: a, optional: true, wait_at_most: 10s}]}
    """
    conf = load(tmp_path, text)
    units = render.Renderer(probe=PROBE).render(conf, None)
    assert verify(write_units(tmp_path, units)).stderr == ""  # no ordering cycle for systemd either
    b = parse_unit(units["b.service"])
    assert "a.service" in b["Unit", "Wants"] and "a.service" not in b["Unit", "After"]
    recovery = graph.Graph(conf).recovery(1.0)
    assert recovery.timings[("b", None)].start == 10.0 and recovery.timings[("b", None)].without == (("a", None),)
    assert recovery.timings[("a", None)].waits_for == ("b", None)
    required = text.replace("optional: true, wait_at_most: 10s", "timeout: 1s")
    with pytest.raises(ConfigError, match="dependency cycle"):
        render.Renderer(probe=PROBE).render(load(tmp_path, required), None)


def test_plan_starts_a_service_without_an_optional_dependency_at_its_bound(tmp_path):
    conf = load(tmp_path, FLEET.replace("cache: {host: h1, exec: [/bin/cache], listen: 6379}",
                                        "cache: {host: h1, exec: [/bin/cache], listen: 6379, start_time: 100}"))
    timings = graph.Graph(conf).recovery(1.0).timings
    web = timings[("web", "h2")]
    assert web.start == 5.0 and ("cache", "h1") in web.without and ("local", "h2") not in web.without
    down = graph.Graph(conf).recovery(1.0, down=["h1"])
    assert ("web", "h2") not in down.stuck and down.timings[("web", "h2")].without == (("cache", "h1"),)
    fast = graph.Graph(load(tmp_path, FLEET)).recovery(1.0).timings[("web", "h2")]
    assert fast.without == () and fast.start < 5.0  # ready before its bound: not degraded


# --- the probe -----------------------------------------------------------------

def test_format_and_parse_keep_the_bounds():
    targets = [Target("tcp", "10.0.0.1:6379", name="cache", wait_at_most=5), Target("tcp", "10.0.0.2:5432")]
    groups = [Group("dns", [Target("tcp", "10.0.0.7:53"), Target("tcp", "10.0.0.8:53")], 1, wait_at_most=1.5)]
    words = format_argv(targets, deadline=60, groups=groups)
    assert "--wait-at-most=5" in words and "--wait-at-most=1.5" in words
    inv = parse_argv(words)
    assert inv.targets[:2] == tuple(targets) and inv.groups == tuple(groups)


@pytest.mark.parametrize("argv, words", [
    (["--deadline=10", "tcp", "h:1", "--wait-at-most=10"], "not below --deadline 10"),
    (["--any", "tcp", "h:1", "--wait-at-most=1", "tcp", "h:2"], "no meaning with --any"),
    (["tcp", "h:1", "--wait-at-most=0"], "more than 0"),
    (["group", "g", "tcp", "h:1", "--wait-at-most=1"], "applies to the group"),
])
def test_the_probe_refuses_bounds_it_cannot_keep(argv, words):
    with pytest.raises(UsageError, match=words):
        parse_argv(argv)
    assert run_probe(*argv).returncode == 2


def test_an_optional_target_that_never_answers_is_left_behind_at_its_bound(tmp_path):
    required, optional = ClosedPort(), ClosedPort()
    required.listen()
    notify = NotifySocket(tmp_path)
    try:
        done = run_probe("--deadline", "20", "tcp", f"127.0.0.1:{required.port}", "--name", "db",
                         "tcp", f"127.0.0.1:{optional.port}", "--name", "cache", "--wait-at-most", "0.5",
                         env=probe_env(NOTIFY_SOCKET=notify.address))
        assert done.returncode == 0, done.stderr
        final = done.stderr.splitlines()[-1]
        assert final.startswith(DEGRADED) and started_without(f"cache (127.0.0.1:{optional.port})") in final
        assert "waited at most 0.5 s" in final and final.endswith(f"ready: db (127.0.0.1:{required.port})")
        assert notify.statuses()[-1] == final  # systemctl status and unitgen watch see it
    finally:
        required.close(), optional.close(), notify.close()


def test_an_optional_target_that_answers_late_but_within_its_bound_is_no_degraded_start(tmp_path):
    late = ClosedPort()
    notify = NotifySocket(tmp_path)
    try:
        with ProbeProcess("--deadline", "60", "tcp", f"127.0.0.1:{late.port}", "--name", "cache",
                          "--wait-at-most", "30", env=probe_env(NOTIFY_SOCKET=notify.address)) as probe:
            probe.wait_for("waiting for cache")
            late.listen()
            assert probe.finish() == 0
        assert DEGRADED not in probe.stderr and "ready after" in probe.stderr
        assert not any(s.startswith(DEGRADED) for s in notify.statuses())
    finally:
        late.close(), notify.close()


def test_a_required_target_still_blocks_while_an_optional_one_is_given_up():
    required, optional = ClosedPort(), ClosedPort()
    try:
        with ProbeProcess("-v", "--deadline", "30", "tcp", f"127.0.0.1:{required.port}", "--name", "db",
                          "tcp", f"127.0.0.1:{optional.port}", "--name", "cache", "--wait-at-most", "0.3") as probe:
            # attempts are at least MIN_GAP apart: this one comes after the optional bound (0.3 s)
            probe.wait_for(f"attempt {int(0.3 / MIN_GAP) + 2} of db (")
            assert probe.proc.poll() is None  # db is required: still waiting
            required.listen()
            assert probe.finish() == 0
        assert f"without cache (127.0.0.1:{optional.port})" in probe.stderr.splitlines()[-1]
    finally:
        required.close(), optional.close()


def test_an_optional_group_is_left_behind_as_a_whole():
    required = ClosedPort()
    required.listen()
    down = [ClosedPort(), ClosedPort()]
    try:
        done = run_probe("--deadline", "20", "tcp", f"127.0.0.1:{required.port}", "--name", "db",
                         "group", "dns", "--need", "1", "--wait-at-most", "0.3",
                         *[w for p in down for w in ("tcp", f"127.0.0.1:{p.port}")])
        assert done.returncode == 0
        final = done.stderr.splitlines()[-1]
        assert final.startswith(DEGRADED) and started_without("dns") + "0 of 2 answer, need 1" in final
    finally:
        required.close()
        for port in down:
            port.close()


def test_once_never_fails_on_an_optional_target():
    up, down = ClosedPort(), ClosedPort()
    up.listen()
    try:
        done = run_probe("--once", "tcp", f"127.0.0.1:{up.port}", "tcp", f"127.0.0.1:{down.port}",
                         "--wait-at-most", "5")
        assert done.returncode == 0 and done.stdout.count("FAIL") == 1
    finally:
        up.close(), down.close()


def test_graph_draws_optional_edges_dotted_with_their_bound(tmp_path):
    from unitgen import diagram

    conf = load(tmp_path, FLEET)
    dot = diagram.dot(graph.Graph(conf))
    edges = [line.strip() for line in dot.splitlines() if "->" in line and "arrowhead" not in line]
    assert sum('optional ≤ 5 s", style=dotted' in e for e in edges) == 1  # cache
    assert sum("style=dotted" in e for e in edges) == 5  # cache, local, metrics and the two of dns
    assert any(e.endswith('[label="tcp"];') for e in edges)  # db: required, drawn as before
    assert "-.->|tcp, optional ≤ 5 s|" in diagram.mermaid(graph.Graph(conf))


def test_unitgen_probe_shows_an_optional_dependency_and_never_fails_on_it(tmp_path):
    import json

    from clirunner import cli_runner
    from unitgen.cli import cli

    up, down, group_down = ClosedPort(), ClosedPort(), ClosedPort()
    up.listen()
    try:
        conf = tmp_path / "conf.yaml"
        conf.write_text(textwrap.dedent(f"""
            version: 1
            services:
              web:
                exec: [/bin/web]
                deps:
                  - {{tcp: "127.0.0.1:{up.port}", name: db}}
                  - {{tcp: "127.0.0.1:{down.port}", name: cache, optional: true, wait_at_most: 5s}}
                  - {{of: [{{tcp: "127.0.0.1:{group_down.port}"}}], name: dns, optional: true}}
        """).lstrip())
        table = cli_runner().invoke(cli, ["probe", str(conf), "web"])
        assert table.exit_code == 0, table.output  # only optional ones fail
        rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
        assert "FAIL (optional, 5 s)" in rows["cache"] and "ok " in rows["db"]
        assert f"FAIL (optional, {defaults.OPTIONAL_WAIT:g} s)" in rows[f"127.0.0.1:{group_down.port}"]
        lines = cli_runner().invoke(cli, ["probe", str(conf), "web", "--json"]).stdout.splitlines()
        assert [json.loads(line)["wait_at_most"] for line in lines] == [None, 5.0, defaults.OPTIONAL_WAIT]
        up.close()
        assert cli_runner().invoke(cli, ["probe", str(conf), "web"]).exit_code == 1  # a required one fails
    finally:
        up.close(), down.close(), group_down.close()


def test_check_warns_that_a_notify_service_hides_its_degraded_start(tmp_path):
    from unitgen import lint

    text = """
        version: 1
        services:
          web:
            exec: [/bin/web]
            user: nobody
            type: TYPE
            deps: [{tcp: "10.0.0.1:80", optional: true, wait_at_most: 2s}]
    """
    notify = lint.lint(load(tmp_path, text.replace("TYPE", "notify")), None, None, False)
    assert [p.message for p in notify if "optional dependency" in p.message] == [
        "type: notify with an optional dependency: the STATUS= it sends replaces its probe's, so unitgen watch "
        "cannot tell that it started without the dependency, and does not restart it when the dependency returns"]
    assert lint.lint(load(tmp_path, text.replace("TYPE", "exec")), None, None, False) == []
