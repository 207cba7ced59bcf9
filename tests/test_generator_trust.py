"""The generator trusts nothing it reads: links come from the model, never
from unit text read back; an alias never takes another service's name; one
bad file or value costs only what it touches; nothing blocks.

(Item 2, 4 (names) and 7 of issue 12; the differential test against
``systemctl enable`` on a booted host is in test_generator_bed.py.)
"""

from __future__ import annotations

import textwrap

import pytest

from unitgen import config, generator
from unitgen.errors import ConfigError

from test_generator import Run  # noqa: F401  (the fixture's class)
from unitverify import verify


@pytest.fixture
def run(tmp_path, monkeypatch):
    return Run(tmp_path, monkeypatch)


# Separators Python's splitlines() or split() honours and systemd does not
# (systemd splits lines on \n only, and words on " \t\n\r").
SEPARATORS = {"LS": "\u2028", "PS": "\u2029", "NEL": "\u0085", "NBSP": "\u00a0", "EM SPACE": "\u2003",
              "IDEOGRAPHIC SPACE": "\u3000", "FS": "\u001c"}
INJECTED = "[Install]{sep}Alias=systemd-hostnamed.service{sep}WantedBy=sysinit.target{sep}RequiredBy=basic.target"


def _carriers(payload: str) -> dict:
    """Every place a string of the conf reaches a unit, carrying ``payload``."""
    quoted = "".join(c if " " <= c <= "~" and c not in '\\"' else f"\\u{ord(c):04x}" for c in payload)
    return {
        "description": f'description: "Web{quoted}"',
        "working_dir": f'working_dir: "/srv/x{quoted}"',
        "environment": f'environment: {{A: "x{quoted}"}}',
        "environment_file": f'environment_file: "/etc/x{quoted}"',
        "exec argument": f'exec: [/usr/bin/sleep, "x{quoted}"]',
        "raw Service value": f'systemd: {{Service: {{Nice: "5{quoted}"}}}}',
        "raw Unit value": f'systemd: {{Unit: {{Documentation: "https://x/{quoted}"}}}}',
        "raw Install value": f'systemd: {{Install: {{DefaultInstance: "x{quoted}"}}}}',
    }


CASES = [(carrier, sep) for sep in SEPARATORS for carrier in _carriers("")]


@pytest.mark.parametrize("carrier, sep", CASES)
def test_text_systemd_reads_as_one_line_makes_no_link(run, carrier, sep):
    """Whatever a value holds, the links are those of wanted_by (the model):
    either the conf is refused at its place, or the unit gets exactly its links."""
    setting = _carriers(INJECTED.format(sep=SEPARATORS[sep]))[carrier]
    run.write("conf.yaml", f"""\
        version: 1
        services:
          web:
            exec: [/usr/bin/sleep, infinity]
            {setting}
    """)
    if setting.startswith("exec:"):
        run.write("conf.yaml", run.conf_dir.joinpath("conf.yaml").read_text().replace(
            "exec: [/usr/bin/sleep, infinity]\n", "", 1))
    code = run()
    listing = run.listing()
    links = {k: v for k, v in listing.items() if v != "file"}
    if code == 0:
        assert links == {"multi-user.target.wants/web.service": "../web.service"}
    else:
        assert listing == {}, listing
        assert any("services.web" in line for line in run.log), run.log


def test_a_conf_d_file_name_with_a_line_separator_makes_no_link(run):
    """The file name reaches SourcePath= and a comment: still no link."""
    name = "conf.d/a\u2028[Install]\u2028Alias=systemd-hostnamed.service.yaml"
    run.write(name, "version: 1\nservices:\n  web: {exec: [/usr/bin/sleep, infinity]}\n")
    code = run()
    links = {k: v for k, v in run.listing().items() if v != "file"}
    assert code in (0, 1)
    assert "systemd-hostnamed.service" not in links
    if code == 0:
        assert links == {"multi-user.target.wants/web.service": "../web.service"}
        assert verify([run.out / "web.service"]).stderr == ""


@pytest.mark.parametrize("setting, value", [
    ("Alias", "'\"www.service\"'"),
    ("Alias", "www%i.service"),
    ("Alias", "w\\\\x2dw.service"),
    ("WantedBy", "../../escape.target"),
    ("WantedBy", "multi-user.target\u00a0graphical.target"),
    ("RequiredBy", "'\"a b.target\"'"),
    ("UpheldBy", "c.target"),
    ("RequiredBy", "'%N.target'"),
    ("Alias", "www.socket"),
    ("Alias", "www@1.service"),
    ("Alias", "web.service"),
    ("Alias", "unitgen-watch.service"),
    ("Also", "other.service"),
])
def test_raw_install_values_systemd_would_read_otherwise_are_refused_at_their_place(run, setting, value):
    conf = run.write("conf.yaml", f"""\
        version: 1
        services:
          web:
            exec: [/usr/bin/sleep, infinity]
            systemd:
              Install:
                {setting}: {value}
          db: {{exec: [/usr/bin/sleep, infinity]}}
    """)
    with pytest.raises(ConfigError) as raised:
        config.load(str(conf))
    assert [(p.mark.line, p.path) for p in raised.value.problems] == [(7, f"services.web.systemd.Install.{setting}")]
    assert raised.value.problems[0].mark.column == 11 + len(setting)
    assert run() == 1
    assert sorted(p for p in run.listing()) == ["db.service", "multi-user.target.wants/db.service"]
    assert f"{conf}:7:{11 + len(setting)}: services.web.systemd.Install.{setting}: " in run.log[1]


DB = """\
    version: 1
    services:
      db: {exec: [/usr/bin/sleep, infinity]}
      web: {exec: [/usr/bin/sleep, infinity]}
"""


def test_a_conf_d_file_cannot_alias_itself_onto_another_files_service(run):
    conf = run.write("conf.yaml", DB)
    evil = run.write("conf.d/evil.yaml", """\
        version: 1
        services:
          evil:
            exec: [/usr/bin/sleep, infinity]
            systemd: {Install: {Alias: [x.service, db.service]}}
    """)
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["db.service", "web.service"]
    assert run.log[0].endswith("1 problem; left out: evil")
    assert (f"{evil}:5:32: services.evil.systemd.Install.Alias: Alias=db.service is also the unit of another "
            f"service, at {conf}:3:3") in run.log[1]
    with pytest.raises(ConfigError):
        config.ConfFiles([str(conf), str(evil)]).read()


def test_an_alias_onto_a_service_left_out_for_its_own_problem_is_still_refused(run):
    """db is left out (a bad value); evil still may not become db.service."""
    conf = run.write("conf.yaml", DB.replace("db: {exec: [/usr/bin/sleep, infinity]}",
                                             "db: {exec: [/usr/bin/sleep, infinity], user: 'a b'}"))
    evil = run.write("conf.d/evil.yaml", """\
        version: 1
        services:
          evil: {exec: [/usr/bin/sleep, infinity], systemd: {Install: {Alias: db.service}}}
    """)
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["web.service"]
    assert run.log[0].endswith("left out: db, evil")
    assert any(f"{evil}:3:71: services.evil.systemd.Install.Alias: Alias=db.service is also the unit of "
               f"another service, at {conf}:3:3" in line for line in run.log), run.log


def test_two_services_claiming_one_alias_both_lose_it_each_naming_the_other(run):
    one = run.write("conf.yaml", DB.replace("web: {exec: [/usr/bin/sleep, infinity]}",
                                            "web: {exec: [/usr/bin/sleep, infinity], "
                                            "systemd: {Install: {Alias: www.service}}}"))
    two = run.write("conf.d/two.yaml", """\
        version: 1
        services:
          api: {exec: [/usr/bin/sleep, infinity], systemd: {Install: {Alias: www.service}}}
    """)
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["db.service"]
    assert run.log[0].endswith("2 problems; left out: api, web")
    assert f"Alias=www.service is also an alias of service 'web', at {one}:4:" in run.log[1] + run.log[2]
    assert f"Alias=www.service is also an alias of service 'api', at {two}:3:" in run.log[1] + run.log[2]


def test_an_alias_in_one_file_is_checked_by_check_and_render_too(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text(textwrap.dedent(DB).replace("web: {exec: [/usr/bin/sleep, infinity]}",
                               "web: {exec: [/usr/bin/sleep, infinity], systemd: {Install: {Alias: db.service}}}"))
    with pytest.raises(ConfigError) as raised:
        config.load(str(conf))
    assert [str(p) for p in raised.value.problems] == [
        f"{conf}:4:70: services.web.systemd.Install.Alias: Alias=db.service is also the unit of another service, "
        f"at {conf}:3:3; one unit name, one service"]


def test_links_are_the_models_install_settings(run):
    """install_links() reads the plan: the rendered text is not consulted."""
    conf = run.write("conf.yaml", """\
        version: 1
        services:
          web:
            exec: [/usr/bin/sleep, infinity]
            wanted_by: graphical.target
            systemd: {Install: {Alias: "www.service\\tw3.service", RequiredBy: a.target}}
    """)
    from unitgen import graph

    [plan] = graph.plan(config.load(str(conf)), None)
    assert generator.install_links(plan) == [
        "graphical.target.wants/web.service", "a.target.requires/web.service",
        "www.service", "w3.service"]


# -- item 7: nothing blocks, and one bad thing costs only itself ----------------

APP = """\
    version: 1
    services:
      db: {exec: [/usr/bin/sleep, infinity], listen: 5432}
      api: {exec: [/usr/bin/sleep, infinity], listen: 8080, deps: [{service: db}]}
      web: {exec: [/usr/bin/sleep, infinity], deps: [{service: api}]}
      cron: {exec: [/usr/bin/sleep, infinity]}
"""


def _generate_in_a_child(run) -> int:
    """The generator in a process of its own, so that a block is a failure, not a hung suite."""
    import subprocess
    import sys

    code = "import sys; from unitgen.generator import main, Log; sys.exit(main(sys.argv[1:], Log(kmsg=sys.argv[2])))"
    for directory in run.dirs:
        directory.mkdir(exist_ok=True)
    run.kmsg.write_text("")
    # the timeout only turns a hang into a failure (systemd gives a generator 90 s)
    done = subprocess.run([sys.executable, "-c", code, str(run.out), str(run.kmsg), str(run.dirs[2])],
                          env={**__import__("os").environ, "UNITGEN_CONF_DIR": str(run.conf_dir)},
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


@pytest.mark.parametrize("kind", ["fifo", "directory", "device link", "socket"])
def test_a_conf_d_entry_that_is_not_a_regular_file_is_never_opened_and_costs_itself(run, kind):
    import os
    import socket

    run.write("conf.yaml", APP)
    path = run.conf_dir / "conf.d/odd.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device link":
        path.symlink_to("/dev/zero")  # read whole, it would never end
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    assert _generate_in_a_child(run) == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["api.service", "cron.service", "db.service",
                                                                 "web.service"]
    assert run.log[0].endswith(f"1 problem; left out: the file {path}")
    assert f"{path}:1:1: left out: not a regular file; the generator reads only regular files" in run.log[1]


def test_a_fifo_as_conf_yaml_costs_the_conf_but_never_blocks(run):
    import os

    os.mkfifo(run.conf_dir / "conf.yaml")
    run.write("conf.d/web.yaml", "version: 1\nservices:\n  web: {exec: [/usr/bin/sleep, infinity]}\n")
    assert _generate_in_a_child(run) == 1
    assert run.listing() == {}
    assert run.log[0].endswith("; left out: everything")


@pytest.mark.parametrize("name", ["we\nb.yaml", "we\tb.yaml", b"w\xffeb.yaml", "web\\.yaml"])
def test_a_conf_d_file_whose_name_no_unit_can_carry_costs_itself_only(run, name):
    import os

    run.write("conf.yaml", APP)
    directory = os.fsencode(run.conf_dir / "conf.d")
    path = os.path.join(directory, name if isinstance(name, bytes) else name.encode())
    with open(path, "wb") as f:
        f.write(b"version: 1\nservices:\n  extra: {exec: [/usr/bin/sleep, infinity]}\n")
    code = run()
    names = sorted(p.name for p in run.out.glob("*.service"))
    if name == "web\\.yaml":  # a backslash inside is plain text to systemd
        assert (code, names) == (0, ["api.service", "cron.service", "db.service", "extra.service", "web.service"])
        assert verify(sorted(run.out.glob("*.service"))).stderr == ""
        return
    assert code == 1
    assert names == ["api.service", "cron.service", "db.service", "web.service"]
    assert "1 problem; left out: the file " in run.log[0] and "\n" not in run.log[0]
    assert "left out: its name" in run.log[1]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
def test_a_value_no_unit_can_carry_costs_its_service_and_dependents_only(run, value):
    """Whether the conf reader or the renderer refuses it, only api (and web,
    which depends on it) are left out."""
    run.write("conf.yaml", APP.replace("listen: 8080,", f"listen: 8080, restart_sec: {value},"))
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["cron.service", "db.service"]
    assert run.log[0].endswith("left out: api, web"), run.log
    assert any(".yaml:4:" in line and "api" in line for line in run.log[1:]), run.log


def test_a_service_that_cannot_be_rendered_is_left_out_with_its_dependents(run, monkeypatch):
    """Whatever the renderer refuses (here: any unit of api), the rest is generated."""
    from unitgen import render

    real = render.Renderer.unit

    def unit(self, plan, *args):
        if plan.service.name == "api":
            raise OverflowError("cannot convert float infinity to integer")
        return real(self, plan, *args)

    monkeypatch.setattr(render.Renderer, "unit", unit)
    conf = run.write("conf.yaml", APP.replace("cron: {", "cron: {user: 'a b', "))
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["db.service"]
    assert run.log[0].endswith("3 problems; left out: api, cron, web"), run.log
    assert f"{conf}:4:3: services.api: cannot be rendered: cannot convert float infinity to integer" in run.log[1]
    assert f"{conf}:5:" in run.log[2] and "no service named 'api'" in run.log[2]
    assert f"{conf}:6:" in run.log[3] and "services.cron.user" in run.log[3]  # found again in the last round


def test_a_conf_d_file_over_the_size_limit_is_left_out_never_cut_and_parsed(run, monkeypatch):
    """Read up to the limit, a big file's head could parse as a conf of its own."""
    from unitgen import limits

    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 4096)  # both readers read it from limits
    run.write("conf.yaml", APP)
    head = "version: 1\nservices:\n  extra: {exec: [/usr/bin/sleep, infinity]}\n"
    big = run.write("conf.d/big.yaml", head + "#" * 5000 + "\n  more: {exec: [/usr/bin/sleep, infinity]}\n")
    assert run() == 1
    assert sorted(p.name for p in run.out.glob("*.service")) == ["api.service", "cron.service", "db.service",
                                                                 "web.service"]
    assert run.log[0].endswith(f"1 problem; left out: the file {big}")
    assert f"{big}:1:1: left out: larger than the 4096 bytes a conf file may have" in run.log[1]
