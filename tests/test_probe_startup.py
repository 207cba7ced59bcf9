"""The probe's start-up: standard library only, never unitgen, and the
heavy modules only for the targets that need them."""

import subprocess
import sys

import pytest
from probe_helpers import PROBES, WAIT, HttpServer, answer, open_port

HEAVY = {"ssl", "http.client", "json", "subprocess", "threading", "random", "urllib.parse", "re",
         "socket", "signal", "selectors", "difflib", "importlib.metadata", "os"}


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


def test_a_plain_http_probe_loads_nothing_heavy():
    """Plain http is spoken over a bare socket: no ssl, http.client, urllib.parse or re."""
    with HttpServer(answer(200)) as server:
        loaded = _modules_after("from unitgen_probe.cli import main\n"
                                f"assert main(['--once', 'http', {server.url + '/health'!r}]) == 0")
    assert not loaded & HEAVY, loaded & HEAVY


@pytest.mark.parametrize("kind, spec, needs", [
    ("http", "https://127.0.0.1:1/", {"ssl"}),
    ("exec", "true", {"subprocess"}),
    ("dns", "localhost", set()),
])
def test_other_kinds_load_what_they_need(kind, spec, needs):
    loaded = _modules_after("from unitgen_probe.cli import main\n"
                            f"main(['--once', {kind!r}, {spec!r}])")
    assert needs <= loaded
    assert "ssl" not in loaded or kind == "http"


def _probe_imports():
    """{module: the probe's own modules it imports (at any depth of its code)}."""
    import ast

    graph = {}
    for path in (PROBES / "unitgen_probe").glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module} if node.module else {a.name for a in node.names}
        graph[path.stem] = names
    return graph


def test_the_probe_modules_import_each_other_without_a_circle():
    graph = _probe_imports()
    assert graph["frame"] == set()  # the leaf every kind's code stands on
    done, path = set(), []

    def visit(name):
        assert name not in path, " -> ".join(path + [name])
        if name in done:
            return
        path.append(name)
        for other in graph.get(name, ()):
            visit(other)
        path.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_every_kind_has_its_check_in_the_table():
    sys.path.insert(0, str(PROBES))
    try:
        from unitgen_probe.checks import CHECKS, check_of
        from unitgen_probe.targets import KINDS
    finally:
        sys.path.remove(str(PROBES))
    assert set(CHECKS) == set(KINDS)
    assert all(callable(check_of(kind)) for kind in KINDS)

