"""Where unitgen's own files are, decided once, for every way it is installed.

* templates/: inside the package in a wheel (hatchling copies it there), at the
  top of the checkout for an editable install or ``python -m unitgen`` from a
  checkout.
* unitgen-probe: units run it by absolute path, at boot, without a PATH a
  shell would give them; it is the console script installed next to this
  interpreter's (the scripts directory of its install scheme), else the one
  on PATH. ``--probe PATH`` / UNITGEN_PROBE override it.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

from .errors import UnitgenError

PACKAGE_DIR = Path(__file__).resolve().parent
PROBE_SCRIPT = "unitgen-probe"


@lru_cache(maxsize=None)
def templates_dir() -> Path:
    for candidate in (PACKAGE_DIR / "templates", PACKAGE_DIR.parent / "templates"):
        if (candidate / "service.j2").is_file():
            return candidate
    raise UnitgenError(f"unitgen's templates are missing (looked in {PACKAGE_DIR}/templates and {PACKAGE_DIR.parent}/templates)")


def probe_command(override: "str | None" = None) -> str:
    """The absolute path units call as ExecStartPre= (not resolved by systemd's PATH)."""
    chosen = override or os.environ.get("UNITGEN_PROBE")
    if chosen:
        if not os.path.isabs(chosen):
            raise UnitgenError(f"the probe path {chosen!r} must be absolute: units run it without a PATH")
        return chosen
    return installed_script(PROBE_SCRIPT)


PROBE_START = "start.py"  # in unitgen_probe: what units run, with the install's interpreter


def probe_argv(probe: str) -> "list[str]":
    """The command units run for ``probe`` (what probe_command() gave).

    This install's own unitgen-probe is run as ``PYTHON -IS .../unitgen_probe/start.py``,
    PYTHON being the interpreter its #! line names (a venv's, the system's,
    pipx's): the same code, started without site and without the wrapper's
    imports (probes/unitgen_probe/start.py). Any other probe (``--probe PATH``,
    UNITGEN_PROBE, a wrapper whose #! line is not a plain absolute path) is run
    as it is."""
    try:
        own = installed_script(PROBE_SCRIPT)
    except UnitgenError:
        return [probe]
    lean = _lean_probe(own) if probe == own else None
    return lean or [probe]


@lru_cache(maxsize=None)
def _lean_probe(script: str) -> "list[str] | None":
    import unitgen_probe

    start = os.path.join(os.path.dirname(os.path.abspath(unitgen_probe.__file__)), PROBE_START)
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!/") or not first.endswith(b"\n"):
        return None
    interpreter = first[2:-1].decode("utf-8", "replace")
    name = os.path.basename(interpreter)  # a Python, not pip's /bin/sh trampoline for a long path
    if any(c.isspace() for c in interpreter) or name.rstrip("0123456789.") != "python" \
            or not os.access(interpreter, os.X_OK) or not os.path.isfile(start):
        return None
    return [interpreter, "-IS", start]


@lru_cache(maxsize=None)
def installed_script(name: str) -> str:
    """The absolute path of one of unitgen's console scripts: next to this
    interpreter, in its install scheme's scripts directory, else on PATH."""
    schemes = [sysconfig.get_default_scheme()] if hasattr(sysconfig, "get_default_scheme") else []
    schemes.append(f"{os.name}_user")
    dirs = [Path(sys.executable).parent]
    for scheme in schemes:
        try:
            dirs.append(Path(sysconfig.get_path("scripts", scheme)))
        except KeyError:
            continue
    for directory in dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    hint = "; pass --probe /absolute/path/to/unitgen-probe" if name == PROBE_SCRIPT else ""
    raise UnitgenError(f"{name} is not installed next to this Python (install unitgen with pip), "
                       f"and not on PATH{hint}")
