"""The wheel carries templates and the probe, and works from a fresh environment."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
    assert "unitgen_probe/__init__.py" in names and "unitgen_probe/cli.py" in names
    assert not any(n.startswith(("probes/", "templates/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "unitgen = unitgen.cli:main" in text and "unitgen-probe = unitgen_probe.cli:main" in text
    assert "unitgen-launch = unitgen_probe.launch:main" in text


def test_installed_wheel_renders_with_its_own_templates(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--force-reinstall", "-q", str(wheel)], check=True, capture_output=True)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = subprocess.run([str(python), "-c", "from unitgen import paths; print(paths.templates_dir())"],
                           cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(env_dir)), where
    done = subprocess.run([str(env_dir / "bin" / "unitgen"), "render", str(ROOT / "examples/autoheal.yaml")],
                          cwd=workdir, capture_output=True, text=True, check=True)
    assert f"ExecStartPre={env_dir}/bin/unitgen-probe " in done.stdout
    assert f"ExecStart=+{env_dir}/bin/unitgen-launch " in done.stdout
    assert (env_dir / "bin" / "unitgen-launch").is_file()


def test_checkout_uses_the_top_level_templates():
    from unitgen import paths

    assert paths.templates_dir() in (ROOT / "templates", ROOT / "unitgen" / "templates")
    assert (paths.templates_dir() / "service.j2").read_text() == (ROOT / "templates/service.j2").read_text()
