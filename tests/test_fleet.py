"""One conf for the whole fleet: placement, check, graph, plan and import."""

from __future__ import annotations

import json
import os
import shutil
import socket
import textwrap
from pathlib import Path

import pytest
import yaml

from unitgen import config, graph
from unitgen.cli import cli
from unitgen.errors import UsageError
from clirunner import cli_runner

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "graph"
PROBE = ["--probe", "/usr/bin/unitgen-probe"]


def run(*args):
    return cli_runner().invoke(cli, [str(a) for a in args])


def write(tmp_path, text, name="conf.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# -- placement -------------------------------------------------------------------

def test_each_host_renders_only_its_services():
    conf = config.load(str(ROOT / "examples/conf.yaml"))
    placed = {h: [p.service.name for p in graph.plan(conf, h)] for h in conf.hosts}
    assert placed == {"db1": ["postgres"], "app1": ["redis", "api", "worker"], "web1": ["nginx"]}


def test_the_host_defaults_to_this_machines_name(monkeypatch):
    conf = config.load(str(ROOT / "examples/conf.yaml"))
    monkeypatch.setattr(socket, "gethostname", lambda: "app1.example.com")
    monkeypatch.setattr(socket, "getfqdn", lambda: "app1.example.com")
    assert graph.local_host(conf) == "app1"
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    monkeypatch.setattr(socket, "getfqdn", lambda: "elsewhere.example.com")
    with pytest.raises(UsageError, match=r"this machine \(elsewhere\) is not in the conf's hosts"):
        graph.local_host(conf)
    with pytest.raises(UsageError, match="--host nope: not in the conf's hosts"):
        graph.local_host(conf, "nope")


def test_a_service_without_host_is_an_error_in_a_multi_host_conf(tmp_path):
    conf = write(tmp_path, """
        version: 1
        hosts: {h1: {}, h2: {}}
        services:
          a: {exec: [/bin/a], host: h1}
          b: {exec: [/bin/b]}
          c: {exec: [/bin/c], host: h3}
    """)
    result = run("check", conf)
    assert result.exit_code == 2
    assert f"{conf}:5:3: services.b: needs host:" in result.stderr
    assert "no host named 'h3' in hosts:" in result.stderr


def test_star_places_a_service_on_every_host(tmp_path):
    conf = config.load(str(write(tmp_path, """
        version: 1
        hosts: {h1: {}, h2: {}}
        services:
          agent: {exec: [/bin/agent], host: "*"}
    """)))
    assert conf.services["agent"].hosts == ("h1", "h2")


def test_dependencies_resolve_per_host(tmp_path):
    conf = config.load(str(write(tmp_path, """
        version: 1
        hosts: {h1: {address: 10.0.0.1}, h2: {}, h3: {address: "fd00::3"}}
        services:
          db: {exec: [/bin/db], host: [h1, h3], listen: 5432}
          api: {exec: [/bin/api], host: h2, health: "http://{host}:8080/ready"}
          web:
            exec: [/bin/web]
            host: [h1, h2]
            deps: [{service: db}, {service: api}]
    """)))
    # db has two copies: any one will do (the default), the one on h1 counts like the other and is ordered natively.
    on_h1 = {p.service.name: p for p in graph.plan(conf, "h1")}["web"]
    assert on_h1.after == ("db.service",)
    assert [(t.kind, t.spec, t.name) for t in on_h1.targets] == [("http", "http://h2:8080/ready", "api")]
    [db] = on_h1.groups
    assert (db.label, db.need) == ("db", 1)
    assert [(t.kind, t.spec, t.name) for t in db.targets] == [
        ("tcp", "localhost:5432", "db@h1"), ("tcp", "[fd00::3]:5432", "db@h3")]
    assert on_h1.remote_groups == (db,)
    on_h2 = {p.service.name: p for p in graph.plan(conf, "h2")}["web"]
    assert on_h2.after == ("api.service",)
    assert [(t.kind, t.spec, t.name) for t in on_h2.targets] == [("http", "http://localhost:8080/ready", "api")]
    assert [(t.kind, t.spec, t.name) for t in on_h2.groups[0].targets] == [
        ("tcp", "10.0.0.1:5432", "db@h1"), ("tcp", "[fd00::3]:5432", "db@h3")]


def test_every_hosts_plans_at_once_are_each_hosts_plan(tmp_path):
    """check renders every host from graph.plans_by_host (the graph built once):
    the same plans, slots and upholds included, as graph.plan host by host."""
    paced = write(tmp_path, """
        version: 1
        hosts: {h1: {}, h2: {}, h3: {}}
        services:
          db: {exec: [/bin/db], host: h1, listen: 5432, accepts: 2/s}
          cache: {exec: [/bin/cache], host: [h1, h2], listen: 6379}
          api:
            exec: [/bin/api]
            host: "*"
            listen: 8080
            on_dependency_loss: restart
            deps: [{service: db}, {service: cache}]
          web: {exec: [/bin/web], host: [h2, h3], deps: [{service: api, need: all}]}
    """, "paced.yaml")
    for path in (ROOT / "examples/conf.yaml", ROOT / "examples/replicas.yaml", paced):
        conf = config.load(str(path))
        hosts = list(conf.hosts) or [None]
        at_once = graph.plans_by_host(conf, hosts)
        assert list(at_once) == hosts
        for host in hosts:
            assert at_once[host] == graph.plan(conf, host)
        assert any(p.slot for plans in at_once.values() for p in plans) == (path == paced)
        assert graph.plans_by_host(conf, hosts[-1:]) == {hosts[-1]: at_once[hosts[-1]]}


# -- check -----------------------------------------------------------------------

def test_two_services_on_one_host_port(tmp_path):
    conf = write(tmp_path, """
        version: 1
        hosts: {h1: {}, h2: {}}
        services:
          a: {exec: [/bin/a], host: h1, listen: 80}
          b: {exec: [/bin/b], host: [h2, h1], listen: 80}
          c: {exec: [/bin/c], host: h2, listen: 81}
    """)
    result = run("check", conf)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{conf}:5:3: 'a' and 'b' both listen on port 80 on h1"


def test_a_cycle_through_three_hosts_is_printed_as_its_path(tmp_path):
    conf = write(tmp_path, """
        version: 1
        hosts: {h1: {}, h2: {}, h3: {}}
        services:
          a: {exec: [/bin/a], host: h1, listen: 1, deps: [{service: b}]}
          b: {exec: [/bin/b], host: h2, listen: 2, deps: [{service: c}]}
          c: {exec: [/bin/c], host: h3, listen: 3, deps: [{service: a}]}
          d: {exec: [/bin/d], host: h3, listen: 4, deps: [{service: a}]}
    """)
    result = run("check", conf)
    assert result.exit_code == 2
    assert "dependency cycle: a@h1 → b@h2 → c@h3 → a@h1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_cycle_spelled_with_tcp_and_http_dependencies_is_found(tmp_path):
    conf = write(tmp_path, """
        version: 1
        hosts: {h1: {address: 10.0.0.1}, h2: {}}
        services:
          a: {exec: [/bin/a], host: h1, listen: 5432, deps: [{http: "http://h2:8080/ok"}]}
          b: {exec: [/bin/b], host: h2, health: "http://{host}:8080/ok", deps: [{tcp: "10.0.0.1:5432"}]}
    """)
    result = run("check", conf)
    assert result.exit_code == 2 and "dependency cycle: a@h1 → b@h2 → a@h1" in result.stderr


def test_the_seeds_dependency_on_its_own_nginx_is_seen():
    drawn = graph.Graph(config.load(str(ROOT / "examples/autoheal.yaml")))
    (edge,) = drawn.out[("web_service", None)]
    assert (edge.target, edge.kind, edge.inferred) == (("nginx", None), "tcp", True)


# -- graph -----------------------------------------------------------------------

@pytest.mark.parametrize("example", ["autoheal", "conf", "fleet", "replicas"])
@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_golden(example, fmt):
    result = run("graph", ROOT / f"examples/{example}.yaml", "--format", fmt)
    assert result.exit_code == 0, result.output
    golden = GOLDEN / f"{example}.{'mmd' if fmt == 'mermaid' else 'dot'}"
    if os.environ.get("UNITGEN_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()


def test_graph_labels_are_escaped(tmp_path):
    conf = write(tmp_path, """
        version: 1
        services:
          'say "hi" <b>#': {exec: [/bin/a], deps: [{tcp: "x:1", name: 'a\\b"c'}]}
    """)
    mermaid = run("graph", conf).stdout
    assert 'n0["say #34;hi#34; #60;b#62;#35;"]' in mermaid
    dot = run("graph", conf, "--format", "dot").stdout
    assert 'n0 [label="say \\"hi\\" <b>#"];' in dot and 'label="a\\\\b\\"c (x:1)"' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_as_svg_and_png(tmp_path):
    svg = tmp_path / "fleet.svg"
    assert run("graph", ROOT / "examples/conf.yaml", "--format", "svg", "-o", svg).exit_code == 0
    assert "<svg" in svg.read_text() and ">postgres</text>" in svg.read_text()
    png = tmp_path / "fleet.png"
    assert run("graph", ROOT / "examples/conf.yaml", "--format", "png", "-o", png).exit_code == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_graph_without_graphviz_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run("graph", ROOT / "examples/conf.yaml", "--format", "svg", "-o", tmp_path / "x.svg")
    assert result.exit_code == 1
    assert "needs Graphviz's dot, which is not installed" in result.stderr and "apt-get install graphviz" in result.stderr


# -- plan ------------------------------------------------------------------------

def test_plan_waves_critical_path_and_estimate():
    result = run("plan", ROOT / "examples/conf.yaml", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["waves"] == [["postgres@db1", "redis@app1"], ["api@app1"], ["worker@app1", "nginx@web1"]]
    assert plan["critical_path"] == ["postgres@db1", "api@app1", "worker@app1"]
    from unitgen_probe.wait import MAX_GAP

    # postgres ready at 8 s; api notices within the probe's largest gap and is ready 1 s later (assumed) ...
    assert plan["estimated_recovery_seconds"] == pytest.approx(8 + 2 * (MAX_GAP + 1), abs=0.001)
    api = next(s for s in plan["services"] if s["service"] == "api")
    assert (api["wave"], api["waits_for"], api["start_time_assumed"]) == (2, "postgres@db1", True)


def test_plan_accounts_for_the_probe_deadline(tmp_path):
    """A dependency ready after the dependent's probe deadline is noticed only
    when Restart= runs the probe again: deadline + RestartSec later."""
    conf = write(tmp_path, """
        version: 1
        services:
          slow: {exec: [/bin/slow], listen: 1, start_time: 25s}
          app:
            exec: [/bin/app]
            deps: [{service: slow}]
            probe: {deadline: 10s}
            restart_sec: 5s
            start_time: 2s
    """)
    plan = json.loads(run("plan", conf, "--json").stdout)
    app = next(s for s in plan["services"] if s["service"] == "app")
    # probe runs [0,10] [15,25] [30,40]...: ready at 25 s is inside the second run
    from unitgen_probe.wait import MAX_GAP

    assert app["start"] == pytest.approx(25 + MAX_GAP, abs=0.001)
    conf.write_text(conf.read_text().replace("start_time: 25s", "start_time: 27s"))
    app = next(s for s in json.loads(run("plan", conf, "--json").stdout)["services"] if s["service"] == "app")
    assert app["start"] == 30  # ready between runs: noticed by the next run's first attempt


def test_plan_text():
    result = run("plan", ROOT / "examples/conf.yaml")
    assert "critical path: postgres@db1 → api@app1 → worker@app1" in result.stdout
    assert "estimated recovery: 10.4 s after the last host is up (worst case)" in result.stdout  # gaps of <= MAX_GAP
    assert "* no start_time: assumed 1 s (4 services)" in result.stdout


# -- import ----------------------------------------------------------------------

def test_import_autoheal_merges_a_fleet(tmp_path):
    write(tmp_path, """
        nginx:
            pname: nginx
            script: sudo -u admin /usr/sbin/nginx
        web:
            dep:
                - {name: nginx, host: 127.0.0.1, port: 80}
                - {name: db, host: 10.0.0.11, port: 5432}
                - {name: api, url: "http://app1:8080/health"}
                - {name: mw, url: "http://middleware.example.com/check"}
                - {name: db, host: 10.9.9.9, port: 5432}
            script: /srv/web
    """, "web1.yaml")
    write(tmp_path, "db:\n  script: /usr/bin/postgres\n", "db1.yaml")
    write(tmp_path, """
        api:
            script: /opt/api
            dep: [{name: db, host: 10.0.0.11, port: 5432}]
        nginx:
            pname: nginx
            script: sudo -u admin /usr/sbin/nginx
        web:
            script: /srv/other-web
    """, "app1.yaml")
    out = tmp_path / "fleet.yaml"
    result = run("import", "autoheal", tmp_path / "web1.yaml", f"db1={tmp_path / 'db1.yaml'}",
                 tmp_path / "app1.yaml", "--address", "db1=10.0.0.11", "-o", out)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(out.read_text())
    assert data["hosts"] == {"web1": {}, "db1": {"address": "10.0.0.11"}, "app1": {}}
    services = data["services"]
    assert services["nginx"]["host"] == ["web1", "app1"] and services["nginx"]["listen"] == 80
    assert services["db"] == {"host": "db1", "script": "/usr/bin/postgres", "listen": 5432}
    assert services["api"]["health"] == "http://{host}:8080/health"
    assert services["web"]["deps"] == [
        {"service": "nginx"}, {"service": "db"}, {"service": "api"},
        {"http": "http://middleware.example.com/check", "name": "mw"},
        {"tcp": "10.9.9.9:5432", "name": "db"},
    ]
    assert services["web-app1"] == {"host": "app1", "script": "/srv/other-web"}
    assert run("check", out).exit_code == 0
    assert run("render", out, "--host", "web1", *PROBE).exit_code == 0


def test_import_a_single_file_with_host(tmp_path):
    out = run("import", "autoheal", ROOT / "examples/autoheal.yaml", "--host", "web1")
    assert out.exit_code == 0, out.output
    data = yaml.safe_load(out.stdout)
    assert data["hosts"] == {"web1": {}}
    assert data["services"]["web_service"]["deps"][0] == {"service": "nginx"}
    assert data["services"]["nginx"]["pname"] == "nginx"  # the same meaning natively: unitgen-launch
    assert data["services"]["nginx"]["script"] == "sudo -u admin /home/admin/cai/bin/nginx-proxy -s restart"


def test_import_refuses_to_overwrite_and_bad_addresses(tmp_path):
    out = tmp_path / "fleet.yaml"
    out.write_text("keep me")
    result = run("import", "autoheal", ROOT / "examples/autoheal.yaml", "-o", out)
    assert result.exit_code == 2 and "exists; pass --force" in result.stderr
    assert out.read_text() == "keep me"
    result = run("import", "autoheal", ROOT / "examples/autoheal.yaml", "--host", "a", "--address", "b=1.2.3.4")
    assert result.exit_code == 2 and "--address names hosts that no file is for: b" in result.stderr
