"""Version gates: directives newer than the host's systemd are rendered only
where they are understood (apply passes Manager.Version to the renderer)."""

from __future__ import annotations

import re
import subprocess

import pytest

from unitgen import config, render, systemd

from unitverify import verify, write_units

CONF = """\
version: 1
services:
  web:
    exec: [/bin/sleep, "1000"]
    systemd:
      Service:
        RestartSteps: 5
        RestartMaxDelaySec: 60s
        LimitNOFILE: 4096
"""


def render_web(tmp_path, version):
    path = tmp_path / "conf.yaml"
    path.write_text(CONF)
    return render.Renderer("/usr/bin/unitgen-probe", systemd_version=version).render(
        config.load(str(path)), None)["web.service"]


def test_left_out_below_254_as_a_comment(tmp_path):
    text = render_web(tmp_path, 252)
    assert "\nRestartSteps=" not in text and "\nRestartMaxDelaySec=" not in text
    assert "# Left out RestartSteps=5: it needs systemd 254, this one is 252.\n" in text
    assert "# Left out RestartMaxDelaySec=60s: it needs systemd 254, this one is 252.\n" in text
    assert "\nLimitNOFILE=4096\n" in text  # known to every version: kept


@pytest.mark.parametrize("version", [254, 257, None])
def test_rendered_from_254_and_when_the_version_is_unknown(tmp_path, version):
    text = render_web(tmp_path, version)
    assert "\nRestartSteps=5\nRestartMaxDelaySec=60s\nLimitNOFILE=4096\n" in text
    assert "Left out" not in text


def test_the_default_renderer_knows_no_version(tmp_path):
    """unitgen render (no bus) renders exactly what it did before gates existed."""
    path = tmp_path / "conf.yaml"
    path.write_text(CONF)
    conf = config.load(str(path))
    assert render.Renderer("/usr/bin/unitgen-probe").render(conf, None) == \
        render.Renderer("/usr/bin/unitgen-probe", systemd_version=None).render(conf, None)


@pytest.mark.parametrize("text, major", [("252.38-1~deb12u1", 252), ("254", 254), ("v256-rc1", 256),
                                         ("257.2-1-arch", 257), ("", None), ("unknown", None)])
def test_major_version(text, major):
    assert systemd.major_version(text) == major


def test_the_gate_table_agrees_with_this_machines_systemd(tmp_path):
    """systemd itself says which gated directives it does not know: exactly those newer than it."""
    first = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    local = int(re.match(r"systemd (\d+)", first).group(1))
    unit = "[Service]\nExecStart=/bin/true\n" + "".join(f"{key}=5\n" for key in systemd.DIRECTIVE_SINCE)
    directory = tmp_path / "units"
    directory.mkdir()
    stderr = verify(write_units(directory, {"gated.service": unit})).stderr
    unknown = set(re.findall(r"Unknown key '(\w+)'", stderr))
    assert unknown == {key for key, since in systemd.DIRECTIVE_SINCE.items() if since > local}
