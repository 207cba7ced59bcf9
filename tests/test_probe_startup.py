"""The probe's start-up: standard library only, never unitgen, and the
heavy modules only for the targets that need them."""

import subprocess
import sys

import pytest
from probe_helpers import PROBES, WAIT, open_port

HEAVY = {"ssl", "http.client", "json", "subprocess", "threading", "random", "urllib.parse", "re",
         "socket", "signal", "selectors", "difflib", "importlib.metadata"}


def _modules_after(code):
    """Module names loaded by *code*, run by a bare interpreter (no site,
    so no site-packages) that sees only probes/ besides the standard library."""
    done = subprocess.run([sys.executable, "-S", "-I", "-c",
                           f"import sys; sys.path.insert(0, {str(PROBES)!r})\n{code}\n"
                           "print(' '.join(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_every_module_needs_only_the_standard_library():
    names = [p.stem for p in (PROBES / "unitgen_probe").glob("*.py") if p.stem != "__main__"]
    loaded = _modules_after("\n".join(f"import unitgen_probe.{name}" for name in names))
    assert not any(name == "unitgen" or name.startswith("unitgen.") for name in loaded)


def test_a_tcp_probe_loads_nothing_heavy():
    with open_port() as port:
        loaded = _modules_after("from unitgen_probe.cli import main\n"
                                f"assert main(['--once', 'tcp', '127.0.0.1:{port.port}']) == 0")
    assert not loaded & HEAVY, loaded & HEAVY


@pytest.mark.parametrize("kind, spec, needs", [
    ("http", "http://127.0.0.1:1/", {"http.client"}),
    ("exec", "true", {"subprocess"}),
    ("dns", "localhost", set()),
])
def test_other_kinds_load_what_they_need(kind, spec, needs):
    loaded = _modules_after("from unitgen_probe.cli import main\n"
                            f"main(['--once', {kind!r}, {spec!r}])")
    assert needs <= loaded
    assert "ssl" not in loaded or kind == "http"
