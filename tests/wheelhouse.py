"""Wheels for a host with no network: unitgen's, built from this checkout, and its
dependencies', made from the distributions installed in this test's environment.

A host installs unitgen as an operator would (pip install --no-index
--find-links), but a test may not download: so each dependency's wheel is
rebuilt from its installed files (as listed in its dist-info RECORD, which a
wheel install writes) and its WHEEL tags, the same release this environment
runs. Used by tests/test_ansible.py and tests/test_ansible_bed.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Iterable, List, Set

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}  # written by the installer, not in a wheel


def unitgen_wheel(dist: Path) -> Path:
    """unitgen's wheel, built from this checkout (no isolation: no download)."""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (found,) = dist.glob("unitgen-*.whl")
    return found


def requirements(name: str, seen: Set[str]) -> List[str]:
    """``name``'s run-time requirements, transitively, as installed here (no extras)."""
    found = []
    for requirement in metadata.requires(name) or []:
        if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
            continue
        dependency = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        key = re.sub(r"[-_.]+", "-", dependency).lower()
        if key not in seen:
            seen.add(key)
            found += [dependency, *requirements(dependency, seen)]
    return found


def installed_wheel(name: str, dist: Path) -> Path:
    """A wheel of the installed distribution ``name``, from its own files."""
    distribution = metadata.distribution(name)
    info = Path(str(distribution._path))  # type: ignore[attr-defined]  # its .dist-info directory
    site = info.parent
    wheel_text = (info / "WHEEL").read_text()
    tags = [line.split(":", 1)[1].strip().split("-") for line in wheel_text.splitlines() if line.startswith("Tag:")]
    tag = "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3))
    files = [f for f in distribution.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)
             and not (str(f).startswith(info.name + "/") and f.name in LEFT_OUT)]
    stem = f"{re.sub(r'[-_.]+', '_', distribution.metadata['Name'])}-{distribution.version}"
    path = dist / f"{stem}-{tag}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in files:
            data = (site / file).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            wheel.writestr(str(file), data)
            record.append(f"{file},sha256={digest},{len(data)}")
        record.append(f"{info.name}/RECORD,,")
        wheel.writestr(f"{info.name}/RECORD", "\n".join(record) + "\n")
    return path


def wheelhouse(dist: Path) -> List[Path]:
    """unitgen's wheel first, then one per dependency."""
    dist.mkdir(parents=True, exist_ok=True)
    return [unitgen_wheel(dist), *(installed_wheel(name, dist) for name in requirements("unitgen", set()))]


def names(wheels: Iterable[Path]) -> List[str]:
    return sorted(w.name.split("-")[0].lower() for w in wheels)
