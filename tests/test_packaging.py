"""The wheel carries templates and the probe, and works from a fresh environment."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
# unitgen's dependencies, installed in this test's environment; a .pth line
# adds the directory itself, not the editable unitgen its own .pth files name
DEPENDENCIES = sysconfig.get_paths()["purelib"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (found,) = dist.glob("unitgen-*.whl")
    return found


def test_wheel_contains_templates_schema_and_probe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "unitgen/templates/service.j2" in names
    assert "unitgen/schema.json" in names
    assert {"unitgen/boardpage.html", "unitgen/boardpage.css", "unitgen/boardpage.js"} <= names  # the board's page
    assert "unitgen_probe/__init__.py" in names and "unitgen_probe/cli.py" in names
    assert not any(n.startswith(("probes/", "templates/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "unitgen = unitgen.cli:main" in text and "unitgen-probe = unitgen_probe.cli:main" in text
    assert "unitgen-launch = unitgen_probe.launch:main" in text


def test_installed_wheel_renders_with_its_own_templates(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", PURELIB], capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test-deps.pth").write_text(DEPENDENCIES + "\n")  # what pip would install, without a network
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--force-reinstall", "-q", str(wheel)], check=True, capture_output=True)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = subprocess.run([str(python), "-c", "from unitgen import paths; print(paths.templates_dir())"],
                           cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(env_dir)), where
    done = subprocess.run([str(env_dir / "bin" / "unitgen"), "render", str(ROOT / "examples/autoheal.yaml")],
                          cwd=workdir, capture_output=True, text=True, check=True)
    # the install's own probe, started lean by the interpreter of its #! line (unitgen/paths.py)
    assert re.search(rf"\nExecStartPre={re.escape(str(env_dir))}/bin/python[0-9.]* -IS "
                     rf"{re.escape(site)}/unitgen_probe/start\.py ", done.stdout), done.stdout
    # and so is the launcher, beside it (the same interpreter, the same directory)
    assert re.search(rf"\nExecStart=\+{re.escape(str(env_dir))}/bin/python[0-9.]* -IS "
                     rf"{re.escape(site)}/unitgen_probe/launch\.py ", done.stdout), done.stdout
    assert (env_dir / "bin" / "unitgen-launch").is_file()


def test_checkout_uses_the_top_level_templates():
    from unitgen import paths

    assert paths.templates_dir() in (ROOT / "templates", ROOT / "unitgen" / "templates")
    assert (paths.templates_dir() / "service.j2").read_text() == (ROOT / "templates/service.j2").read_text()


def test_the_production_install_runs_its_probe_as_any_service_user(wheel, make_fleet):
    """README "Putting it on a host", on real systemd: a venv under /opt/unitgen
    made by root with umask 022, the unitgen command linked into /usr/local/bin.
    A User=nobody service starts through the probe that path wrote into its unit.

    The host has no network: the wheel is copied in, and its dependencies come
    from this test's environment through a .pth file (what pip would install)."""
    host = make_fleet(["prod1"])["prod1"]
    host.boot()
    host.write_file("/var/tmp/" + wheel.name, wheel.read_bytes())
    host.run(["sh", "-c", 'umask 022 && "$0" -m venv /opt/unitgen', sys.executable], timeout=120)  # ensurepip: slow when loaded
    site = host.run(["/opt/unitgen/bin/python", "-c", PURELIB]).stdout.strip()
    host.write_file(f"{site}/test-deps.pth", DEPENDENCIES + "\n")
    host.run(["sh", "-c", 'umask 022 && /opt/unitgen/bin/python -m pip install -q --no-index --no-deps "$0"',
              f"/var/tmp/{wheel.name}"], timeout=120)
    host.run(["ln", "-s", "/opt/unitgen/bin/unitgen", "/usr/local/bin/unitgen"])
    host.write_file("/etc/unitgen/conf.yaml", (
        "version: 1\nservices:\n"
        f"  db:\n    exec: [{sys.executable}, -m, http.server, '8001', --bind, 127.0.0.1]\n    listen: 8001\n"
        "  app:\n    exec: [/bin/sleep, infinity]\n    user: nobody\n    deps:\n      - service: db\n"))

    host.run(["/usr/local/bin/unitgen", "apply", "/etc/unitgen/conf.yaml"], timeout=90)
    unit = host.read_file("/etc/systemd/system/app.service")
    assert re.search(rf"\nExecStartPre=/opt/unitgen/bin/python[0-9.]* -IS {re.escape(site)}/unitgen_probe/start\.py ",
                     unit) and "\nUser=nobody\n" in unit, unit
    host.wait_active("app.service")
    pre = host.systemctl("show", "-P", "ExecStartPre", "app.service")  # the probe ran, as nobody, and passed
    assert pre.startswith("{ path=/opt/unitgen/bin/python") and f"{site}/unitgen_probe/start.py" in pre \
        and "; code=exited ; status=0 }" in pre, pre
