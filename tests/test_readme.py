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
    assert install.startswith("pip install . && unitgen render ")
    assert "pytest" in test
    ci = (ROOT / ".ci/run").read_text()
    assert test in ci.splitlines()


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
