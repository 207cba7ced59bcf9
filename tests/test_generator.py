"""unitgen-generator called as systemd calls it, with three temp dirs: units,
SourcePath=, the links of [Install], conf.d, what a bad conf leaves out and
logs, exit codes; and unitgen install-generator."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unitgen import generator
from unitgen.cli import cli

from unitverify import verify
from clirunner import cli_runner

ROOT = Path(__file__).resolve().parent.parent


class Run:
    """One conf directory, three output dirs and a fake /dev/kmsg."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.conf_dir = tmp_path / "etc/unitgen"
        (self.conf_dir / "conf.d").mkdir(parents=True)
        self.dirs = [tmp_path / name for name in ("generator", "generator.early", "generator.late")]
        self.kmsg = tmp_path / "kmsg"
        monkeypatch.setenv("UNITGEN_CONF_DIR", str(self.conf_dir))

    def write(self, name: str, text: str) -> Path:
        path = self.conf_dir / name
        path.write_text(textwrap.dedent(text))
        return path

    def __call__(self, *argv: str) -> int:
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
        self.kmsg.write_text("")
        log = generator.Log(kmsg=str(self.kmsg), stream=io.StringIO())
        return generator.main(argv or [str(d) for d in self.dirs], log)

    @property
    def out(self) -> Path:
        return self.dirs[0]

    def unit(self, name: str) -> str:
        return (self.out / name).read_text()

    def listing(self) -> dict:
        """Every path below the normal dir: a link's target, or "file"."""
        return {str(p.relative_to(self.out)): os.readlink(p) if p.is_symlink() else "file"
                for p in sorted(self.out.rglob("*")) if not p.is_dir() or p.is_symlink()}

    @property
    def log(self) -> list:
        return self.kmsg.read_text().splitlines()


@pytest.fixture
def run(tmp_path, monkeypatch):
    return Run(tmp_path, monkeypatch)


DB_AND_API = """\
    version: 1
    defaults:
      user: app
    services:
      db:
        exec: [/usr/bin/sleep, infinity]
        listen: 5432
      api:
        exec: [/usr/bin/sleep, infinity]
        listen: 8080
        deps: [{service: db}]
"""


def test_units_with_source_path_and_the_links_install_would_make(run):
    conf = run.write("conf.yaml", DB_AND_API)
    assert run() == 0
    assert run.listing() == {
        "api.service": "file",
        "db.service": "file",
        "multi-user.target.wants/api.service": "../api.service",
        "multi-user.target.wants/db.service": "../db.service",
    }
    assert f"\nSourcePath={conf}\n" in run.unit("api.service")
    assert "\nUser=app\n" in run.unit("api.service") and "\nAfter=db.service\n" in run.unit("api.service")
    assert oct((run.out / "db.service").stat().st_mode & 0o777) == "0o644"
    assert [list(d.iterdir()) for d in run.dirs[1:]] == [[], []]
    assert run.log == []
    verified = verify(sorted(run.out.glob("*.service")))
    assert verified.stderr == "", verified.stderr


def test_one_directory_for_all_three(run):
    run.write("conf.yaml", DB_AND_API)
    assert run(str(run.out)) == 0
    assert (run.out / "multi-user.target.wants/db.service").resolve() == run.out / "db.service"


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["a", "b", "c", "d"]])
def test_wrong_arguments_exit_2(run, argv):
    run.kmsg.write_text("")
    assert generator.main(argv, generator.Log(kmsg=str(run.kmsg), stream=io.StringIO())) == 2
    usage = "usage: unitgen-generator NORMAL_DIR [EARLY_DIR LATE_DIR]"
    assert run.kmsg.read_text() == f"<3>unitgen-generator[{os.getpid()}]: {usage}\n"


def test_no_conf_is_no_error(run):
    assert run() == 0
    assert run.listing() == {} and run.log == []


@pytest.mark.parametrize("example, host", [("examples/conf.yaml", "app1"), ("examples/autoheal.yaml", None)])
def test_same_text_as_unitgen_render_but_for_source_path(run, monkeypatch, tmp_path, example, host):
    conf = run.write("conf.yaml", (ROOT / example).read_text())
    monkeypatch.setattr("socket.gethostname", lambda: f"{host}.example.com" if host else "anything")
    assert run() == 0
    rendered = tmp_path / "rendered"
    result = cli_runner().invoke(cli, ["render", str(conf), "-o", str(rendered)] + (["--host", host] if host else []))
    assert result.exit_code == 0, result.output
    units = sorted(p.name for p in rendered.glob("*.service"))
    assert units and units == sorted(p.name for p in run.out.glob("*.service"))
    assert ("unitgen-watch.service" in units) == bool(host)  # api on app1 acts on a lost remote dependency
    assert sorted(p.name for p in (run.out / "multi-user.target.wants").iterdir()) == units
    for name in units:
        expected = (rendered / name).read_text()
        if name == "unitgen-watch.service":  # the generator's watcher reads what the generator reads
            expected = expected.replace(f" watch {conf} --host {host}\n", f" watch --conf-dir {run.conf_dir}\n")
        assert run.unit(name).replace(f"SourcePath={conf}\n", "") == expected
    verified = verify(sorted(run.out.glob("*.service")))
    assert verified.stderr == "", verified.stderr


def test_conf_d_is_merged_with_defaults_hosts_and_references_across_files(run, monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "app1")
    run.write("conf.yaml", """\
        version: 1
        defaults: {user: app, environment: {LOG: json}}
        hosts: {app1: {}, db1: {address: 10.0.0.11}}
        services:
          db: {host: db1, exec: [/usr/bin/postgres], listen: 5432}
    """)
    web = run.write("conf.d/20-web.yaml", """\
        version: 1
        services:
          web: {host: app1, exec: [/usr/bin/web], deps: [{service: api}, {service: db}]}
    """)
    api = run.write("conf.d/10-api.yaml", """\
        version: 1
        x-note: free in every file
        services:
          api: {host: app1, exec: [/usr/bin/api], listen: 8080, environment: {PORT: "8080"}}
    """)
    run.write("conf.d/.30-hidden.yaml", "not: [read")
    run.write("conf.d/notes.txt", "not: [read")
    assert generator.conf_files(str(run.conf_dir)) == [
        str(run.conf_dir / "conf.yaml"), str(api), str(web)]
    assert run() == 0, run.log
    assert sorted(p.name for p in run.out.glob("*.service")) == ["api.service", "web.service"]
    api_unit, web_unit = run.unit("api.service"), run.unit("web.service")
    assert f"# Generated by unitgen from {api}\n" in api_unit and f"\nSourcePath={api}\n" in api_unit
    assert "\nUser=app\n" in api_unit and '\nEnvironment="LOG=json"\nEnvironment="PORT=8080"\n' in api_unit
    assert f"\nSourcePath={web}\n" in web_unit and "\nAfter=api.service\n" in web_unit
    assert "tcp localhost:8080 --name=api tcp 10.0.0.11:5432 --name=db" in web_unit


def test_a_service_defined_twice_is_left_out_naming_both_places(run):
    conf = run.write("conf.yaml", DB_AND_API)
    again = run.write("conf.d/db.yaml", """\
        version: 1
        services:
          other: {exec: [/usr/bin/other]}
          db:
            exec: [/usr/bin/db]
    """)
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["other.service"]
    assert run.log[0].endswith(f"{run.conf_dir}: 2 problems; left out: api, db")
    assert f": {again}:4:3: services.db: defined twice: here and at {conf}:5:3" in run.log[1]
    assert f": {conf}:11:12: services.api.deps[0].service: no service named 'db' in this conf" in run.log[2]


def test_a_broken_service_is_left_out_with_its_dependents_and_the_rest_generated(run):
    conf = run.write("conf.yaml", """\
        version: 1
        services:
          db: {exec: [/usr/bin/db], listen: 5432}
          api: {exec: [/usr/bin/api], listen: 8080, deps: [{service: db, port: 70000}]}
          web: {exec: [/usr/bin/web], deps: [{service: api}]}
          cron: {exec: [/usr/bin/cron], deps: [{service: web}]}
          other: {exec: [/usr/bin/other], user: root}
    """)
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["db.service", "other.service"]
    assert sorted(run.listing()) == ["db.service", "multi-user.target.wants/db.service",
                                     "multi-user.target.wants/other.service", "other.service"]
    priority = f"<3>unitgen-generator[{os.getpid()}]: "
    assert run.log[0] == f"{priority}{run.conf_dir}: 3 problems; left out: api, cron, web"
    assert run.log[1] == f"{priority}{conf}:4:66: services.api.deps[0]: unknown key 'port'"
    assert run.log[2:] == [
        f"{priority}{conf}:5:38: services.web.deps[0].service: no service named 'api' in this conf",
        f"{priority}{conf}:6:40: services.cron.deps[0].service: no service named 'web' in this conf",
    ]


def test_a_dependency_cycle_leaves_out_the_services_in_it(run):
    conf = run.write("conf.yaml", """\
        version: 1
        services:
          a: {exec: [/usr/bin/a], listen: 1, deps: [{service: b}]}
          b: {exec: [/usr/bin/b], listen: 2, deps: [{service: a}]}
          c: {exec: [/usr/bin/c], listen: 3}
    """)
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["c.service"]
    assert run.log[0].endswith("left out: a, b")
    assert f"{conf}:3:" in run.log[1] and "dependency cycle: a → b → a" in run.log[1]


@pytest.mark.parametrize("files, problem", [
    ({"conf.d/web.yaml": "version: 1\ndefaults: {user: web}\nservices:\n  web: {exec: [/bin/web]\n"},
     "conf.d/web.yaml:5:1: YAML syntax error"),
    ({"conf.d/web.yaml": "version: 1\ndefaults: {user: web}\nservices:\n  web: {exec: [/bin/web]}\n"},
     "conf.d/web.yaml:2:1: defaults: may be given in one file only; it is also at {conf}:2:1"),
    ({"conf.d/web.yaml": "version: 2\nservices:\n  web: {exec: [/bin/web]}\n"},
     "conf.d/web.yaml:1:10: version: every file of a conf has the same version: 1 at {conf}:1:1"),
    ({"conf.d/web.yaml": "version: 1\nservices:\n  web: {exec: [/bin/web]}\n", "conf.yaml": "version: 1\n{"},
     "conf.yaml:3:1: YAML syntax error"),
    ({"conf.d/web.yaml": "version: 1\nhosts: {h1: {}}\nservices:\n  web: {host: h1, exec: [/bin/web]}\n"},
     "conf.d/web.yaml:2:9: hosts.h1: defined twice: here and at {conf}:3:9"),
    ({"conf.d/web.yaml": "version: 1\nservices: [web]\n"},
     "conf.d/web.yaml:2:11: services: expected a mapping, got a list"),
])
def test_a_problem_outside_any_service_leaves_out_the_whole_conf(run, monkeypatch, files, problem):
    """A file that cannot be parsed and might hold defaults: (conf.yaml, or a
    conf.d file naming defaults) costs everything: its loss could change what
    runs as whom."""
    monkeypatch.setattr("socket.gethostname", lambda: "h1")
    conf = run.write("conf.yaml", "version: 1\ndefaults: {user: app}\nhosts: {h1: {}}\n"
                                  "services:\n  db: {host: h1, exec: [/bin/db]}\n")
    for name, text in files.items():
        run.write(name, text)
    assert run() == 1
    assert run.listing() == {}
    assert run.log[0].endswith("; left out: everything")
    assert any(f": {run.conf_dir}/{problem.format(conf=conf)}" in line for line in run.log), run.log


@pytest.mark.parametrize("text, problem", [
    ("version: 1\nservices:\n  web: {exec: [/bin/web]\n", "4:1: YAML syntax error"),
    ("web: {script: /bin/web}\n",
     "1:1: {conf} is native (version: 1) but this file is an Autoheal conf (no version:): "
     "the files of a conf share one format"),
    ("\xff\xfe", "1:1: "),
])
def test_a_conf_d_file_that_cannot_be_parsed_costs_itself_only(run, monkeypatch, text, problem):
    monkeypatch.setattr("socket.gethostname", lambda: "h1")
    conf = run.write("conf.yaml", "version: 1\ndefaults: {user: app}\nhosts: {h1: {}}\n"
                                  "services:\n  db: {host: h1, exec: [/bin/db]}\n")
    (run.conf_dir / "conf.d/web.yaml").write_bytes(text.encode("latin-1"))
    run.write("conf.d/zz.yaml", "version: 1\nservices:\n  zz: {host: h1, exec: [/bin/zz]}\n")
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["db.service", "zz.service"]
    assert "\nUser=app\n" in run.unit("zz.service")
    assert run.log[0].endswith(f"; left out: the file {run.conf_dir}/conf.d/web.yaml")
    assert any(f": {run.conf_dir}/conf.d/web.yaml:{problem.format(conf=conf)}" in line for line in run.log), run.log


def test_this_host_missing_from_hosts_leaves_out_the_whole_conf(run, monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "stranger.example.com")
    monkeypatch.setattr("socket.getfqdn", lambda: pytest.fail("no DNS lookup in a generator"))
    run.write("conf.yaml", "version: 1\nhosts: {h1: {}}\nservices:\n  db: {host: h1, exec: [/bin/db]}\n")
    assert run() == 1
    assert run.listing() == {}
    assert run.log[1].endswith("this machine (stranger.example.com) is not in the conf's hosts: (h1)")


def test_warnings_are_logged_and_do_not_fail(run):
    conf = run.write("conf.yaml", "web: {script: sudo -u admin start-web && echo started}\n")
    assert run() == 0
    assert (run.out / "web.service").exists()
    assert run.log == [f"<4>unitgen-generator[{os.getpid()}]: warning: {conf}:1:15: web.script: kept as is "
                       "(sudo runs it): sudo -u covers only the first command of this line, so User= would "
                       "change what runs as whom; split it, or use user: and exec:"]


def test_raw_install_settings_make_their_links_too(run):
    run.write("conf.yaml", """\
        version: 1
        services:
          web:
            exec: [/usr/bin/web]
            wanted_by: [multi-user.target, graphical.target]
            systemd:
              Install:
                RequiredBy: a.target b.target
                Alias: www.service
                WantedBy: "graphical.target\\tdefault.target"
    """)
    assert run() == 0
    assert run.listing() == {
        "a.target.requires/web.service": "../web.service",
        "b.target.requires/web.service": "../web.service",
        "default.target.wants/web.service": "../web.service",
        "graphical.target.wants/web.service": "../web.service",
        "multi-user.target.wants/web.service": "../web.service",
        "web.service": "file",
        "www.service": "web.service",
    }
    assert run.log == []


def test_a_unit_another_generator_wrote_is_not_replaced(run, tmp_path):
    run.write("conf.yaml", DB_AND_API)
    run.kmsg.write_text("")
    log = generator.Log(kmsg=str(run.kmsg), stream=io.StringIO())
    run.out.mkdir()
    (run.out / "db.service").write_text("[Service]\nExecStart=/bin/other\n")
    assert generator.main([str(run.out)], log) == 1
    assert (run.out / "db.service").read_text() == "[Service]\nExecStart=/bin/other\n"
    assert (run.out / "api.service").exists()
    assert run.log[0].endswith("1 problem; left out: db")
    assert run.log[1].endswith(
        f"db.service: cannot write {run.out}/db.service: File exists (another generator wrote it?)")


def test_an_internal_error_is_logged_and_exits_1(run, monkeypatch):
    run.write("conf.yaml", DB_AND_API)
    monkeypatch.setattr(generator, "read", lambda *args: 1 / 0)
    assert run() == 1
    assert run.log[0].endswith("internal error; units may be missing:")
    assert run.log[-1].endswith("ZeroDivisionError: division by zero")


def test_log_goes_to_stderr_on_a_terminal_or_without_kmsg(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    missing = generator.Log(kmsg=str(tmp_path / "missing"), stream=io.StringIO())
    missing.warning("two\nlines")
    assert missing.stream.getvalue() == "unitgen-generator: warning: two\nunitgen-generator: warning: lines\n"
    leader, follower = os.openpty()
    with open(follower, "w") as terminal, open(leader, "rb", buffering=0) as screen:
        tty = generator.Log(kmsg=str(kmsg), stream=terminal)
        assert tty.fd == -1
        tty.error("by hand")
        assert screen.read(100) == b"unitgen-generator: by hand\r\n"
    long = generator.Log(kmsg=str(kmsg), stream=io.StringIO())
    long.error("é" * 1000)
    long.close()
    record = kmsg.read_bytes()
    assert record.startswith(b"<3>unitgen-generator[") and record.endswith("é\n".encode())
    assert len(record) <= 901


def test_the_console_script_runs_without_click(run):
    run.write("conf.yaml", DB_AND_API)
    run()
    out = run.dirs[1]
    code = ("import sys; from unitgen.generator import main; code = main(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'click')); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")
    script = os.path.join(os.path.dirname(sys.executable), "unitgen-generator")
    assert os.access(script, os.X_OK), "pip install -e . installs the unitgen-generator script"
    shutil.rmtree(out)
    out.mkdir()
    done = subprocess.run([script, str(out)], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(p.name for p in out.glob("*.service")) == ["api.service", "db.service"]


def test_install_generator_links_replaces_its_own_and_refuses_others(tmp_path):
    link = tmp_path / generator.LINK
    program = generator.program()

    def invoke(*args):
        return cli_runner().invoke(cli, ["install-generator", "--root", str(tmp_path), *args])

    result = invoke()
    assert result.exit_code == 0, result.output
    assert os.readlink(link) == program and Path(program).name == "unitgen-generator"
    assert result.stdout == f"linked   {link} -> {program}\nNext:\n  systemctl daemon-reload\n"
    assert invoke().exit_code == 0 and os.readlink(link) == program
    link.unlink()
    link.symlink_to("/old/venv/bin/unitgen-generator")
    assert invoke().exit_code == 0 and os.readlink(link) == program
    result = invoke("--uninstall")
    assert result.exit_code == 0 and not os.path.lexists(link)
    assert result.stdout == f"removed  {link}\nNext:\n  systemctl daemon-reload\n"
    assert invoke("--uninstall").stdout == "not installed: nothing to remove\n"
    link.symlink_to("/dev/null")  # the operator masked it
    for args in ((), ("--uninstall",)):
        result = invoke(*args)
        assert result.exit_code == 1 and "is not unitgen's link" in result.stderr
        assert os.readlink(link) == "/dev/null"


def test_a_problem_from_defaults_names_the_file_of_the_defaults(run):
    conf = run.write("conf.yaml", "version: 1\ndefaults:\n  working_dir: /srv/../etc\n"
                                  "services:\n  db: {exec: [/bin/db]}\n")
    run.write("conf.d/web.yaml", "version: 1\nservices:\n  web: {exec: [/bin/web]}\n")
    assert run() == 1
    assert run.log[0].endswith("left out: db, web")
    assert len(run.log) == 3
    for line, name in zip(run.log[1:], ("db", "web")):
        assert f"]: {conf}:3:16: services.{name}.working_dir: '/srv/../etc' must be a normalized" in line
