"""Render cases in Quadlet's style: each tests/cases/*.yaml is a conf whose
comments are the assertions, so a new case needs no Python.

    # render-for HOST                           render for this host of the conf
    # assert-units A.service B.service          exactly these units
    # assert-key-is UNIT SECTION KEY VALUE      KEY set once, to VALUE
    # assert-key-has UNIT SECTION KEY VALUE     one of KEY's settings is VALUE
    # assert-key-contains UNIT SECTION KEY TEXT one of KEY's settings contains TEXT
    # assert-key-missing UNIT SECTION KEY       KEY not set in SECTION
    # assert-error TEXT                         the conf is refused; TEXT is one of the
                                                problems (FILE is the case's name)

Every unit a case renders also passes systemd-analyze verify with an empty stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from unitgen import config, render
from unitgen.errors import ConfigError

from unitverify import verify, write_units

CASES = Path(__file__).resolve().parent / "cases"
PROBE = "/usr/bin/unitgen-probe"
Unit = Dict[Tuple[str, str], List[str]]  # (section, key) -> every value set, in order


def parse_unit(text: str) -> Unit:
    settings: Unit = {}
    section = ""
    for line in text.splitlines():
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key), []).append(value)
    return settings


def directives(path: Path) -> List[Tuple[str, List[str], str]]:
    """(directive, its words, the rest of the line after them) for each assertion comment."""
    found = []
    for line in path.read_text().splitlines():
        if not line.startswith("# ") or not line[2:].startswith(("assert-", "render-for")):
            continue
        directive, _, rest = line[2:].partition(" ")
        if directive.startswith("assert-key-"):  # UNIT SECTION KEY, then the value (may hold spaces)
            parts = rest.split(" ", 3)
            found.append((directive, parts[:3], parts[3] if len(parts) > 3 else ""))
        else:
            found.append((directive, rest.split(), rest))
    return found


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.glob("*.yaml")))
def test_case(case, tmp_path, monkeypatch):
    path = CASES / case
    found = directives(path)
    assert any(d.startswith("assert-") for d, _, _ in found), f"{case} asserts nothing"
    host = next((words[0] for d, words, _ in found if d == "render-for"), None)
    monkeypatch.chdir(CASES)  # problems then name the file as the case does
    errors = [rest for d, _, rest in found if d == "assert-error"]
    if errors:
        with pytest.raises(ConfigError) as refused:
            render.Renderer(PROBE).render(config.load(case), host)
        problems = [str(p) for p in refused.value.problems]
        for error in errors:
            assert error in problems, problems
        return
    texts = render.Renderer(PROBE).render(config.load(case), host)
    units = {name: parse_unit(text) for name, text in texts.items()}
    for directive, words, rest in found:
        if directive == "render-for":
            continue
        if directive == "assert-units":
            assert sorted(units) == sorted(words)
            continue
        unit, section, key = words
        assert unit in units, f"{case}: {unit} not rendered ({sorted(units)})"
        values = units[unit].get((section, key), [])
        if directive == "assert-key-is":
            assert values == [rest], f"{unit} [{section}] {key}: {values}"
        elif directive == "assert-key-has":
            assert rest in values, f"{unit} [{section}] {key}: {values}"
        elif directive == "assert-key-contains":
            assert any(rest in value for value in values), f"{unit} [{section}] {key}: {values}"
        elif directive == "assert-key-missing":
            assert values == [], f"{unit} [{section}] {key}: {values}"
        else:
            raise AssertionError(f"{case}: unknown directive {directive}")
    directory = tmp_path / "units"
    directory.mkdir()
    verified = verify(write_units(directory, texts))
    assert verified.stderr == "", verified.stderr
