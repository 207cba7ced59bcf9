"""Fuzzing: random confs end in units that systemd verifies and that carry every
string exactly, or in a clean error (exit 2, FILE:LINE:COL, no traceback,
nothing written).

Profiles (HYPOTHESIS_PROFILE): "default" keeps the run under a minute;
"nightly" runs many more examples:

    HYPOTHESIS_PROFILE=nightly python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from unitgen.cli import cli
from unitgen.systemd import unit_name
from unitgen_probe import Target, format_argv

from unitverify import expected_dump, verify
from clirunner import cli_runner

settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nightly", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

PROBE = "/bin/true"  # exists, so verify checks the units as they are
LAUNCHER = os.path.join(os.path.dirname(PROBE), "unitgen-launch")  # beside the probe
PIECES = ["%", "%%", "%h", "$", "$$", "${X}", "\\", "\\n", '"', "'", "`", ";", " ", "\t", "\n", "\r",
          "\x00", "\x01", "\x7f", "é", "日本", "🚀", "\u2028", "\u00a0", "-", "@", "+", ":", "!", "#", "=", "/"]
hostile = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.lists(st.sampled_from(PIECES), max_size=6).map("".join),
)
plain_word = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)


@st.composite
def services(draw):
    """A native conf with hostile strings in every field, and what each must become."""
    conf = {}
    for i in range(draw(st.integers(1, 3))):
        name = draw(st.one_of(st.just(f"s{i}"), hostile))
        service = {}
        if draw(st.booleans()):
            service["exec"] = ["/bin/true", *draw(st.lists(hostile, max_size=4))]
        else:
            service["script"] = ": " + draw(hostile)  # never a leading "sudo -u"
        for key, strategy in [
            ("description", hostile),
            ("user", st.one_of(plain_word, hostile)),
            ("group", st.one_of(plain_word, hostile)),
            ("working_dir", hostile.map(lambda s: "/srv/" + s)),
            ("pid_file", hostile.map(lambda s: "/run/" + s)),
            ("environment", st.dictionaries(st.one_of(st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True), hostile),
                                            hostile, max_size=3)),
            ("environment_file", hostile.map(lambda s: "/etc/" + s)),
            ("deps", st.lists(st.one_of(
                st.fixed_dictionaries({"tcp": st.one_of(plain_word, hostile).map(lambda h: h + ":5432")},
                                      optional={"name": hostile}),
                st.fixed_dictionaries({"http": hostile.map(lambda p: "http://h.example/" + p)},
                                      optional={"name": hostile, "body": hostile}),
                st.fixed_dictionaries({"exec": hostile}, optional={"name": hostile}),
            ), max_size=3)),
        ]:
            if draw(st.booleans()):
                service[key] = draw(strategy)
        if "pid_file" in service:
            service["type"] = "forking"
        conf[name] = service
    return {"version": 1, "services": conf}


def render(data_or_text):
    """unitgen render into a fresh directory: (conf path, out dir, result)."""
    work = Path(tempfile.mkdtemp(prefix="unitgen-fuzz-"))
    conf = work / "conf.yaml"
    if isinstance(data_or_text, bytes):
        conf.write_bytes(data_or_text)
    else:
        conf.write_text(data_or_text if isinstance(data_or_text, str) else
                        yaml.safe_dump(data_or_text, allow_unicode=True), encoding="utf-8")
    out = work / "out"
    result = cli_runner().invoke(cli, ["render", str(conf), "-o", str(out), "--probe", PROBE])
    return conf, out, result


def assert_clean_error(conf, out, result):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert lines
    pattern = re.compile(re.escape(str(conf)) + r":\d+:\d+: ")
    assert all(pattern.match(line) or line.startswith("... and ") for line in lines), lines
    assert not out.exists() or os.listdir(out) == []


def expected_argv(name, service):
    argv = service["exec"] if "exec" in service else ["/bin/bash", "-c", service["script"]]
    if "pid_file" in service:  # through unitgen-launch, which hands systemd a root-owned PID file
        credentials = [*(["--user", service["user"]] if "user" in service else []),
                       *(["--group", service["group"]] if "group" in service else [])]
        argv = [LAUNCHER, "--pid-file", launch_pid_file(name), "--from-pid-file", service["pid_file"],
                *credentials, "--", *argv]
    return [str(a) for a in argv]


def launch_pid_file(name):
    return f"/run/unitgen/{unit_name(name)}.pid"


def dep_target(dep):
    kind = next(k for k in ("tcp", "http", "exec") if k in dep)
    return Target(kind, dep[kind], name=dep.get("name"), body=dep.get("body"))


@given(services())
def test_hostile_strings_render_exactly_or_fail_cleanly(data):
    conf, out, result = render(data)
    event("rendered" if result.exit_code == 0 else "refused")
    if result.exit_code != 0:
        assert_clean_error(conf, out, result)
        return
    assert result.exception is None
    units = sorted(p for p in out.iterdir() if p.name.endswith(".service"))
    assert len(units) == len(data["services"])
    for name, service in data["services"].items():
        unit = out / unit_name(name)
        checked = verify([unit])
        assert checked.stderr == "", (name, checked.stderr)
        commands = []
        if service.get("deps"):
            targets = list(dict.fromkeys(dep_target(d) for d in service["deps"]))  # the same check once
            commands.append([PROBE, *format_argv(targets, deadline=60, timeout=2)])
        commands.append(expected_argv(name, service))
        assert checked.command_lines == [expected_dump(c) for c in commands]
        if "description" in service:
            assert checked.setting("Description") == [service["description"]]
        for key, setting in [("working_dir", "WorkingDirectory"), ("user", "User"), ("group", "Group")]:
            if key in service:
                assert checked.setting(setting) == [service[key]], key
        if "pid_file" in service:
            assert checked.setting("PIDFile") == [launch_pid_file(name)]
        if "environment_file" in service:
            assert checked.setting("EnvironmentFile") == [service["environment_file"]]
        for var, value in (service.get("environment") or {}).items():
            assert f"\t\tEnvironment: {var}={value}\n" in checked.dump


# Any structure at all: keys from the format and random ones, values of any shape.
KEYS = ["version", "services", "defaults", "hosts", "exec", "script", "deps", "dep", "user", "host", "listen",
        "health", "tcp", "http", "service", "url", "port", "name", "pid_file", "environment", "probe", "systemd"]
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 70000), st.floats(allow_nan=False), hostile),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(KEYS), hostile), children, max_size=4)),
    max_leaves=25,
)


@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), hostile), values, max_size=5))
@example({"version": None, "services": True})  # once a TypeError
def test_any_structure_ends_in_units_or_a_clean_error(data):
    conf, out, result = render(data)
    if result.exit_code == 0:
        units = [p for p in out.iterdir() if p.name.endswith(".service")]
        if units:
            assert verify(units).stderr == ""
    else:
        assert_clean_error(conf, out, result)


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_bytes_end_in_units_or_a_clean_error(raw):
    conf, out, result = render(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"))
    if result.exit_code != 0:
        assert_clean_error(conf, out, result)
