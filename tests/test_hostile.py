"""Hostile input: YAML attacks, secrets, privilege. Each ends in a clean error or
correct units, in bounded memory, with nothing written on error."""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from unitgen.cli import cli
from clirunner import cli_runner

ROOT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1024 * 1024 * 1024  # 1 GiB of address space for the whole unitgen process


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def unitgen_limited(tmp_path, data: bytes, *args):
    """unitgen render of ``data`` in a process that may not use more than 1 GiB."""
    conf = tmp_path / "conf.yaml"
    conf.write_bytes(data)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "unitgen", "render", str(conf), "-o", str(out),
                           "--probe", "/bin/true", *args],
                          capture_output=True, text=True, preexec_fn=_limited, timeout=300)
    return conf, out, done


def billion_laughs(levels: int = 12, width: int = 10) -> bytes:
    lines = ['x-lol0: &lol0 "lol"']
    for i in range(1, levels):
        refs = ", ".join([f"*lol{i - 1}"] * width)
        lines.append(f"x-lol{i}: &lol{i} [{refs}]")
    return "\n".join(["version: 1", *lines, "services:",
                      f"  web: {{exec: [/bin/true], environment: *lol{levels - 1}}}",
                      f"  api: {{exec: *lol{levels - 1}}}",
                      f"  db: {{exec: [/bin/true], deps: *lol{levels - 1}}}", ""]).encode()


ATTACKS = {
    "billion laughs": (billion_laughs(), "the conf expands to more than 32 MiB"),
    # PyYAML >= 6.0.4 stops this itself, in its own words, before unitgen's limit:
    # only where (line 2) and how (exit 2, one clean line) are unitgen's to assert
    "deep nesting": (b"version: 1\nx-deep: " + b"[" * 100_000 + b"]" * 100_000 + b"\nservices: {}\n", None),
    "deep mappings": (b"a: " + b"{b: " * 5000 + b"1" + b"}" * 5000 + b"\n", "nested more than 200 levels deep"),
    "huge file": (b"web: {script: /bin/true}\n" + b"# " + b"x" * (17 * 1024 * 1024) + b"\n",
                  "the file is larger than 16 MiB"),
    "not utf-8": (b"web: {script: \"\xff\xfe\"}\n", "the file is not valid UTF-8"),
    "binary": (bytes(range(256)) * 64, "not valid UTF-8"),
    "python object": (b"web: !!python/object/apply:os.system ['touch /tmp/unitgen-pwned']\n", "is not allowed"),
    "python name": (b"web: {script: !!python/name:os.system }\n", "is not allowed"),
    "recursive alias": (b"web: &a {script: /bin/true, x-self: *a}\n", "refers to a node that contains it"),
    "many errors": (b"version: 1\nservices:\n" + b"".join(b"  s%d: {nope: 1}\n" % i for i in range(50_000)),
                    "more problems"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_yaml_attacks_end_in_a_clean_error(tmp_path, name):
    data, message = ATTACKS[name]
    conf, out, done = unitgen_limited(tmp_path, data)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    if message is None:
        assert done.stderr.startswith(f"{conf}:2:") and done.stderr.count("\n") == 1, done.stderr[-2000:]
    else:
        assert message in done.stderr
    assert all(line.startswith(f"{conf}:") or line.startswith("... and ") for line in done.stderr.splitlines())
    assert len(done.stderr.splitlines()) <= 101
    assert not out.exists()
    assert not os.path.exists("/tmp/unitgen-pwned")


def test_an_alias_bomb_where_text_is_accepted_stays_cheap(tmp_path):
    """x- keys accept anything: the shared structure is kept, never expanded."""
    data = billion_laughs().replace(b"  web: {exec: [/bin/true], environment: *lol11}\n", b"").replace(
        b"  api: {exec: *lol11}\n", b"").replace(b"  db: {exec: [/bin/true], deps: *lol11}", b"  db: {exec: [/bin/true], x-big: *lol11}")
    conf, out, done = unitgen_limited(tmp_path, data)
    assert done.returncode == 0, done.stderr
    assert (out / "db.service").exists()


# -- secrets -------------------------------------------------------------------------

def secret_conf(n: int) -> str:
    return ("version: 1\nservices:\n  web:\n    exec: [/bin/true]\n"
            f'    environment: {{DB_PASSWORD: "hunter2-{n}"}}\n'
            f'    deps: [{{http: "http://admin:s3cr3t-{n}@db.example/health"}}]\n')


def test_secrets_never_appear_in_diff_output(tmp_path):
    conf = tmp_path / "conf.yaml"
    out = tmp_path / "out"
    conf.write_text(secret_conf(1))
    first = cli_runner().invoke(cli, ["render", str(conf), "-o", str(out), "--diff", "--probe", "/bin/true"])
    conf.write_text(secret_conf(2))
    second = cli_runner().invoke(cli, ["render", str(conf), "-o", str(out), "--diff", "--dry-run", "--probe", "/bin/true"])
    for result in (first, second):
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output and "s3cr3t" not in result.output and "admin:" not in result.output
    assert '-Environment="DB_PASSWORD=<redacted ' in second.stdout
    assert '+Environment="DB_PASSWORD=<redacted ' in second.stdout  # a change still shows
    assert "http://***@db.example/health" in second.stdout
    assert "hunter2-1" in (out / "web.service").read_text()  # the unit itself must carry it


@pytest.mark.parametrize("deps, health, errors", [
    ('[{http: "htp://admin:s3cr3t@db/health"}]', '"ftp://admin:s3cr3t@x/"', 2),  # schema errors
    ('[{http: "http://admin:s3cr3t@db:99999/"}]', '"http://admin:s3cr3t@{host}:0/"', 2),  # the probe's own
])
def test_secrets_never_appear_in_errors(tmp_path, deps, health, errors):
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"version: 1\nservices:\n  web:\n    exec: [/bin/true]\n    deps: {deps}\n    health: {health}\n")
    result = cli_runner().invoke(cli, ["check", str(conf)])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == errors, result.stderr
    assert "s3cr3t" not in result.output and "admin" not in result.output


# -- privilege -----------------------------------------------------------------------

def test_root_is_reported_even_when_the_conf_says_so(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text("version: 1\nservices:\n  a: {exec: [/bin/true]}\n  b: {exec: [/bin/true], user: root}\n"
                    "  c: {script: sudo -u nobody /bin/true}\n")
    result = cli_runner().invoke(cli, ["check", str(conf)])
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [f"{conf}:3:3: a: warning: runs as root: it has no user: (nor a sudo -u that could "
                        "become User=)", f"{conf}:4:3: b: warning: runs as root: user: root"]


def test_unknown_users_and_groups_are_reported(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text("version: 1\nservices:\n  a: {exec: [/bin/true], user: no_such_user_x, group: no_such_group_x}\n")
    result = cli_runner().invoke(cli, ["check", str(conf)])
    assert "a: warning: user 'no_such_user_x' does not exist on this host" in result.stderr
    assert "a: warning: group 'no_such_group_x' does not exist on this host" in result.stderr


def test_a_probe_the_services_user_cannot_run_is_reported(open_dir):
    """The probe runs as the service's user: every directory on the way must let it through."""
    tmp_path = open_dir
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    probe = hidden / "unitgen-probe"
    probe.write_text("#!/bin/sh\n")
    probe.chmod(0o755)
    conf = tmp_path / "conf.yaml"
    conf.write_text("version: 1\nservices:\n  a: {exec: [/bin/true], user: nobody, deps: [{tcp: 'x:1'}]}\n"
                    "  b: {exec: [/bin/true], user: root, deps: [{tcp: 'x:1'}]}\n")
    result = cli_runner().invoke(cli, ["check", str(conf), "--probe", str(probe)])
    lines = [line for line in result.stderr.splitlines() if "cannot reach" in line]
    assert lines == [f"{conf}:3:3: a: warning: its dependency probe runs as nobody, who cannot reach {probe} "
                     f"({hidden} is mode 700); install unitgen where every user can run it, e.g. /usr/local or /opt"]
    hidden.chmod(0o755)
    result = cli_runner().invoke(cli, ["check", str(conf), "--probe", str(probe)])
    assert "cannot reach" not in result.stderr


def test_the_probe_runs_as_the_services_user_not_as_root():
    """No '+' prefix: ExecStartPre= runs with the unit's User=."""
    from unitgen import config, render

    units = render.Renderer("/bin/true").render(config.load(str(ROOT / "examples/autoheal.yaml")), None)
    assert "\nUser=admin\n" in units["web_service.service"]
    assert "\nExecStartPre=/bin/true " in units["web_service.service"]
    assert pwd.getpwnam("nobody")  # the bed drills run probes as a non-root user too
