"""Bad input gets a clear error at its exact place, exit 2, and nothing written."""

from __future__ import annotations

import os
import textwrap

import pytest

from unitgen.cli import cli
from clirunner import cli_runner

# (conf text, expected "LINE:COL: key.path: message" fragments, one per problem)
BAD = {
    "yaml syntax": ("a: [1, 2\n", ["2:1: YAML syntax error"]),
    "duplicate key": (
        """
        web:
          script: /bin/true
          script: /bin/false
        """,
        ["3:3: duplicate key 'script' (first given at line 2)"],
    ),
    "duplicate service": (
        """
        version: 1
        services:
          web: {script: /bin/true}
          web: {script: /bin/false}
        """,
        ["4:3: duplicate key 'web'"],
    ),
    "wrong type": (
        """
        version: 1
        services:
          web:
            exec: /bin/true
        """,
        ["4:11: services.web.exec: expected a list, got the text '/bin/true'"],
    ),
    "bool for text": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            user: no
        """,
        ["5:11: services.web.user: expected text, got a boolean (false); quote it"],
    ),
    "unknown key": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            dpes: []
        """,
        ["5:5: services.web: unknown key 'dpes'; did you mean 'deps'?"],
    ),
    "unknown autoheal key": (
        """
        web:
          script: /bin/true
          deps: []
        """,
        ["3:3: web: unknown key 'deps'; did you mean 'dep'?", "1:1: this file is read as an Autoheal conf"],
    ),
    "no script or exec": (
        """
        version: 1
        services:
          web:
            user: www
        """,
        ["3:3: services.web: needs exec (a command as a list) or script"],
    ),
    "autoheal without script": ("web:\n  pname: web\n", ["2:3: web: missing 'script'"]),
    "port out of range": (
        """
        web:
          script: /bin/true
          dep:
            - {name: db, host: db1, port: 70000}
        """,
        ["4:35: web.dep[0].port: 70000 is above the maximum 65535"],
    ),
    "malformed url": (
        """
        web:
          script: /bin/true
          dep:
            - {name: mw, url: "http://exa mple.com/x"}
        """,
        ["4:7: web.dep[0]: "],
    ),
    "not a url": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            deps: [{http: "ftp://x/y"}]
        """,
        ["5:19: services.web.deps[0].http: 'ftp://x/y' must be an http:// or https:// URL"],
    ),
    "relative pid_file": (
        """
        web:
          script: /bin/true
          pid_file: run/web.pid
        """,
        ["3:13: web.pid_file: 'run/web.pid' must be an absolute path"],
    ),
    "unnormalized path": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            working_dir: /srv/../etc
        """,
        ["5:18: services.web.working_dir: '/srv/../etc' must be a normalized absolute path"],
    ),
    "relative exec": (
        """
        version: 1
        services:
          web:
            exec: ["-rm", x]
        """,
        ["4:11: services.web.exec: the program '-rm' must be an absolute path or a program name"],
    ),
    "name too long for a unit": (
        "version: 1\nservices:\n  " + "x" * 200 + "é" * 0 + "\u00e9" * 20 + ": {script: /bin/true}\n",
        ["3:3: services", "cannot become a unit name"],
    ),
    "nul in a value": (
        """
        web:
          script: "/bin/true\\0"
        """,
        ["2:11: contains a NUL character"],
    ),
    "control character in description": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            description: "two\\nlines"
        """,
        ["5:18: services.web.description: contains a control character"],
    ),
    "trailing backslash": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            description: 'ends with \\'
        """,
        ["5:18: services.web.description: ends with a backslash"],
    ),
    "raw control character": ("web:\n  script: /bin/true\n  pname: a\x7fb\n", ["3:11: the character '\\x7f' is not allowed raw"]),
    "empty file": ("", ["1:1: the file is empty"]),
    "only a comment": ("# nothing here\n", ["1:1: the file is empty"]),
    "top level a list": ("- a\n- b\n", ["1:1: the top level must be a mapping"]),
    "top level a scalar": ("hello\n", ["1:1: the top level must be a mapping"]),
    "python tag": ("web: !!python/object/apply:os.system ['true']\n", ["1:6: the tag"]),
    "two documents": ("a: {script: x}\n---\nb: {script: y}\n", ["2:1: YAML syntax error: expected a single YAML document"]),
    "not utf-8": (b"web:\n  script: caf\xe9\n", ["2:14: the file is not valid UTF-8"]),
    "unknown dependency service": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            deps: [{service: dbb}]
          db: {script: /bin/true, listen: 5432}
        """,
        ["5:12: services.web.deps[0].service: no service named 'dbb' in this conf; did you mean 'db'?"],
    ),
    "dependency without listen or health": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            deps: [{service: db}]
          db: {script: /bin/true}
        """,
        ["5:12: depends on 'db', which has neither listen: nor health:"],
    ),
    "self loop": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            listen: 80
            deps: [{service: web}]
        """,
        ["6:12: dependency cycle: web → web"],
    ),
    "bad probe deadline": (
        """
        version: 1
        services:
          web:
            script: /bin/true
            probe: {deadline: 0}
        """,
        ["5:23: services.web.probe.deadline: the probe deadline must be above 0"],
    ),
    "several problems at once": (
        """
        version: 1
        services:
          a:
            script: /bin/true
            restart_sec: soon
          b:
            exec: []
          c:
            script: /bin/true
            on_dependency_loss: always
        """,
        [
            "5:18: services.a.restart_sec: 'soon' must be a time span",
            "7:11: services.b.exec: needs at least 1 item",
            "10:25: services.c.on_dependency_loss: must be one of",
        ],
    ),
}


def _write(tmp_path, text) -> str:
    path = tmp_path / "conf.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text).lstrip("\n") if text.startswith("\n") else text)
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["check", "render"])
def test_bad_conf_is_reported_at_its_place(tmp_path, case, command):
    text, expected = BAD[case]
    conf = _write(tmp_path, text)
    out = tmp_path / "out"
    args = [command, conf] + (["-o", str(out), "--probe", "/usr/bin/unitgen-probe"] if command == "render" else [])
    result = cli_runner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    for fragment in expected:
        assert any(line.startswith(f"{conf}:") and fragment in line for line in lines), (fragment, lines)
    assert not out.exists() or os.listdir(out) == []


def test_all_problems_are_reported_in_file_order(tmp_path):
    text, expected = BAD["several problems at once"]
    conf = _write(tmp_path, text)
    result = cli_runner().invoke(cli, ["check", conf])
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert [line.split(":")[1] for line in lines] == ["5", "7", "10"]
