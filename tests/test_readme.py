"""The README is the front door: its commands must be true."""

from __future__ import annotations

import re
from pathlib import Path

from unitgen.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _setup_commands():
    section = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    install, test = commands
    # a venv of their own: PEP 668 refuses pip install into Debian's Python
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/unitgen render ")
    assert test.startswith("python3 -m venv .venv && ") and test.endswith(" -m pytest")
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert install in ci and test in ci  # CI runs both, exactly as written


def test_every_unitgen_command_in_the_readme_exists():
    blocks = "\n".join(re.findall(r"```(?:sh|console)?\n(.*?)```", README, re.S))
    mentioned = set(re.findall(r"`unitgen ([a-z][a-z-]*)", README)) | set(
        re.findall(r"^\s*(?:\$ )?unitgen ([a-z][a-z-]*)", blocks, re.M))
    assert mentioned, "the README shows no unitgen command"
    assert mentioned <= set(cli.commands), mentioned - set(cli.commands)


def test_the_native_example_in_the_readme_is_the_shipped_one():
    shipped = (ROOT / "examples/conf.yaml").read_text()
    body = shipped.split("version: 1", 1)[1]
    assert "version: 1" + body.rstrip() in README


def test_the_autoheal_example_in_the_readme_is_the_seed_verbatim():
    assert (ROOT / "examples/autoheal.yaml").read_text().rstrip() in README


def _requirements(lines):
    for line in lines:
        line = line.split("#", 1)[0].strip().strip('",')
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(>=|==)\s*([0-9][^,;\s]*)", line)
        if match:
            release = [int(part) for part in match.group(3).split(".")]
            while release[-1] == 0 and len(release) > 1:  # 8.0.0 is 8.0 is 8
                release.pop()
            yield match.group(1).lower(), match.group(2), tuple(release)


def test_ci_tests_the_oldest_release_of_every_dependency_pyproject_allows():
    pyproject = "\n".join(line.split("#", 1)[0] for line in (ROOT / "pyproject.toml").read_text().splitlines())
    deps = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    test_extra = pyproject.split("test = [", 1)[1].split("]", 1)[0]
    floors = {name: version for name, op, version in _requirements((deps + test_extra).splitlines())}
    oldest = {name: version for name, op, version in
              _requirements((ROOT / ".ci/oldest.txt").read_text().splitlines()) if op == "=="}
    assert floors and oldest == floors
