"""What units run for the probe: ``PYTHON -IS .../unitgen_probe/start.py``,
PYTHON from the #! line of this install's unitgen-probe (unitgen/paths.py):
the same probe, without site or the console-script wrapper's imports; a
probe given by --probe or UNITGEN_PROBE is run as given; and check still
warns when a service's user cannot read what that command reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from unitgen import lint, paths
from unitgen.cli import cli

from clirunner import cli_runner
from probe_helpers import WAIT, open_port

CONF = """\
version: 1
services:
  api:
    exec: [/usr/bin/sleep, infinity]
    deps: [{tcp: "127.0.0.1:5432"}]
"""


def own_probe():
    script = paths.installed_script(paths.PROBE_SCRIPT)
    interpreter = Path(script).read_text().splitlines()[0][2:]
    return script, interpreter


def test_units_run_the_install_s_interpreter_on_start_py(tmp_path):
    script, interpreter = own_probe()
    start = Path(__import__("unitgen_probe").__file__).parent / "start.py"
    assert paths.probe_argv(script) == [interpreter, "-IS", str(start)]
    (tmp_path / "conf.yaml").write_text(CONF)
    result = cli_runner().invoke(cli, ["render", str(tmp_path / "conf.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    unit = (tmp_path / "out" / "api.service").read_text()
    assert f"\nExecStartPre={interpreter} -IS {start} " in unit


def test_the_rendered_command_is_the_probe_without_site_or_re():
    argv = paths.probe_argv(paths.probe_command())
    with open_port() as port:
        done = subprocess.run([argv[0], "-X", "importtime", *argv[1:], "--once", "tcp", f"127.0.0.1:{port.port}"],
                              capture_output=True, text=True, timeout=WAIT, env={})
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "unitgen_probe.cli" in imported and not imported & {"site", "re"}, imported
    refused = subprocess.run([*argv, "--once", "tcp", "127.0.0.1:1"], capture_output=True, timeout=WAIT, env={})
    assert refused.returncode == 1


def test_a_probe_given_is_run_as_given(tmp_path, monkeypatch):
    assert paths.probe_argv("/opt/elsewhere/bin/unitgen-probe") == ["/opt/elsewhere/bin/unitgen-probe"]
    (tmp_path / "conf.yaml").write_text(CONF)
    monkeypatch.setenv("UNITGEN_PROBE", "/opt/p/bin/unitgen-probe")
    result = cli_runner().invoke(cli, ["render", str(tmp_path / "conf.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "\nExecStartPre=/opt/p/bin/unitgen-probe " in (tmp_path / "out" / "api.service").read_text()


@pytest.mark.parametrize("first_line", ["#!/bin/sh", "#!/usr/bin/env python3", "#!/usr/bin/python3 -E", "#!python",
                                        "#!/nonexistent/python3"])
def test_a_wrapper_whose_interpreter_is_not_plain_is_run_as_it_is(tmp_path, monkeypatch, first_line):
    script = tmp_path / "unitgen-probe"
    script.write_text(f"{first_line}\nprint('x')\n")
    script.chmod(0o755)
    paths._lean_probe.cache_clear()
    monkeypatch.setattr(paths, "installed_script", lambda name: str(script))
    try:
        assert paths.probe_argv(str(script)) == [str(script)]
    finally:
        paths._lean_probe.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the file is made unreadable to nobody")
def test_check_warns_when_the_user_cannot_read_start_py(monkeypatch):
    import shutil
    import tempfile

    from unitgen.config import load

    place = Path(tempfile.mkdtemp(prefix="unitgen-lean-", dir="/tmp"))
    try:
        place.chmod(0o755)
        script, start = place / "unitgen-probe", place / "start.py"
        script.write_text("#!/usr/bin/python3\n")
        script.chmod(0o755)
        start.write_text("")
        start.chmod(0o600)  # root's alone: nobody cannot read it
        monkeypatch.setattr(paths, "probe_argv", lambda probe: ["/usr/bin/python3", "-IS", str(start)])
        (place / "conf.yaml").write_text(CONF.replace("    deps:", "    user: nobody\n    deps:"))
        service = load(str(place / "conf.yaml")).services["api"]
        assert lint.probe_blocked(service, str(script)) == \
            f"runs as nobody, who cannot reach {start} ({start} is mode 600)"
        start.chmod(0o644)
        assert lint.probe_blocked(service, str(script)) is None
    finally:
        shutil.rmtree(place)


LAUNCHED = """\
version: 1
services:
  web:
    exec: [/usr/bin/sleep, infinity]
    pid_file: /run/web.pid
"""


def test_the_launcher_runs_as_the_probe_does(tmp_path):
    """unitgen-launch is on the critical path of a Type=forking unit's start:
    with this install's own probe it runs as PYTHON -IS .../unitgen_probe/launch.py."""
    script, interpreter = own_probe()
    launch = Path(__import__("unitgen_probe").__file__).parent / "launch.py"
    (tmp_path / "conf.yaml").write_text(LAUNCHED)
    result = cli_runner().invoke(cli, ["render", str(tmp_path / "conf.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    unit = (tmp_path / "out" / "web.service").read_text()
    assert f"\nExecStart={interpreter} -IS {launch} --pid-file /run/unitgen/web.service.pid " in unit
    done = subprocess.run([interpreter, "-X", "importtime", "-IS", str(launch), "--pid-file", "relative.pid",
                           "--from-pid-file", "/run/web.pid", "--", "true"],
                          capture_output=True, text=True, timeout=WAIT, env={})
    assert done.returncode == 2, done.stderr  # the launcher's own usage error: it ran, standalone
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"site", "re", "unitgen_probe"}, imported
    other = paths.launch_argv(["/opt/p/bin/unitgen-probe"], "/opt/p/bin/unitgen-launch")
    assert other == ["/opt/p/bin/unitgen-launch"]  # a probe given: the launcher beside it, as it is
