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
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from functools import lru_cache
    from pathlib import Path

    from .errors import UnitgenError

    _once = lru_cache(maxsize=None)
else:
    def _once(function):
        """functools.lru_cache(maxsize=None), without importing functools (collections)."""
        results = {}

        def cached(*args):
            if args not in results:
                results[args] = function(*args)
            return results[args]

        cached.cache_clear = results.clear
        cached.__doc__, cached.__name__, cached.__wrapped__ = function.__doc__, function.__name__, function
        return cached

# The generator's cache hit (gencache.py) asks this module for the probe, its
# own path and the templates: so it imports no pathlib, shutil or sysconfig
# until it must look further than next to this interpreter.
PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
PROBE_SCRIPT = "unitgen-probe"


def templates_dir() -> Path:
    from pathlib import Path

    return Path(templates_path())


@_once
def templates_path() -> str:
    for candidate in (os.path.join(PACKAGE_DIR, "templates"), os.path.join(os.path.dirname(PACKAGE_DIR), "templates")):
        if os.path.isfile(os.path.join(candidate, "service.j2")):
            return candidate
    from .errors import UnitgenError

    raise UnitgenError(f"unitgen's templates are missing (looked in {PACKAGE_DIR}/templates and "
                       f"{os.path.dirname(PACKAGE_DIR)}/templates)")


def probe_command(override: "str | None" = None) -> str:
    """The absolute path units call as ExecStartPre= (not resolved by systemd's PATH)."""
    chosen = override or os.environ.get("UNITGEN_PROBE")
    if chosen:
        if not os.path.isabs(chosen):
            from .errors import UnitgenError

            raise UnitgenError(f"the probe path {chosen!r} must be absolute: units run it without a PATH")
        return chosen
    return installed_script(PROBE_SCRIPT)


PROBE_START = "start.py"  # in unitgen_probe: what units run, with the install's interpreter
LAUNCH_MODULE = "launch.py"  # in unitgen_probe: unitgen-launch, run as a script the same way


def launch_argv(probe_argv: "list[str]", launcher: str) -> "list[str]":
    """The command units run as unitgen-launch, given the probe's command
    (probe_argv()) and the launcher script installed beside the probe.

    When the probe runs lean (``PYTHON -IS .../unitgen_probe/start.py``), so
    does the launcher: ``PYTHON -IS .../unitgen_probe/launch.py``, which
    imports nothing of its package (a Type=forking unit's start waits for
    it: after a power cut it is on the critical path, like the probe). Else
    *launcher* as it is."""
    if len(probe_argv) == 3 and probe_argv[1] == "-IS" and probe_argv[2].endswith("/" + PROBE_START):
        return [probe_argv[0], "-IS", probe_argv[2][:-len(PROBE_START)] + LAUNCH_MODULE]
    return [launcher]


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
    except Exception as exc:
        from .errors import UnitgenError  # imported only when raised (errors imports dataclasses)

        if not isinstance(exc, UnitgenError):
            raise
        return [probe]
    lean = _lean_probe(own) if probe == own else None
    return lean or [probe]


@_once
def _lean_probe(script: str) -> "list[str] | None":
    start = os.path.join(package_dir("unitgen_probe") or "", PROBE_START)
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


def installed_script(name: str) -> str:
    """The absolute path of one of unitgen's console scripts: next to this
    interpreter, in its install scheme's scripts directory, else on PATH."""
    found = _find_script(name)
    if found is None:
        from .errors import UnitgenError

        hint = "; pass --probe /absolute/path/to/unitgen-probe" if name == PROBE_SCRIPT else ""
        raise UnitgenError(f"{name} is not installed next to this Python (install unitgen with pip), "
                           f"and not on PATH{hint}")
    return found


@_once
def _find_script(name: str) -> "str | None":
    """installed_script(), None where it raises."""
    executable = sys.executable
    if os.path.isabs(executable) and os.path.normpath(executable) == executable:  # the usual case, decided
        candidate = os.path.join(os.path.dirname(executable), name)  # without pathlib and sysconfig
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    import shutil
    import sysconfig
    from pathlib import Path

    schemes = [sysconfig.get_default_scheme()] if hasattr(sysconfig, "get_default_scheme") else []
    schemes.append(f"{os.name}_user")
    dirs = [Path(sys.executable).parent]
    for scheme in schemes:
        try:
            dirs.append(Path(sysconfig.get_path("scripts", scheme)))
        except KeyError:
            continue
    for directory in dirs:
        candidate_path = directory / name
        if candidate_path.is_file() and os.access(candidate_path, os.X_OK):
            return str(candidate_path)
    found = shutil.which(name)
    return os.path.abspath(found) if found else None


def package_dir(name: str) -> "str | None":
    """The directory of the top-level package ``name`` as ``import name`` would
    find it (its spec's origin), without importing it or importlib.util; None
    when it cannot be found."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None) if module is not None else None
    for finder in sys.meta_path if spec is None else ():
        find = getattr(finder, "find_spec", None)
        try:
            spec = find(name, None) if find is not None else None
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            break
    origin = getattr(spec, "origin", None)
    return os.path.dirname(os.path.abspath(origin)) if isinstance(origin, str) else None
