"""The command line: parse_argv, format_argv, and their round trip."""

import json
import random

import pytest
from probe_helpers import open_port, run_probe

from unitgen_probe import DEFAULT_TIMEOUT, Target, UsageError, format_argv, parse_argv


def test_global_and_target_timeouts_by_placement():
    inv = parse_argv(["--timeout", "5", "tcp", "a:1", "tcp", "b:2", "--timeout=0.5"])
    assert inv.timeout == 5.0
    assert [t.timeout for t in inv.targets] == [None, 0.5]
    assert [inv.timeout_for(t) for t in inv.targets] == [5.0, 0.5]


def test_defaults():
    inv = parse_argv(["tcp", "a:1"])
    assert (inv.deadline, inv.timeout, inv.once, inv.any, inv.json) == (0.0, DEFAULT_TIMEOUT, False, False, False)


def test_flags_may_stand_anywhere():
    inv = parse_argv(["tcp", "a:1", "--once", "--name", "x", "-v", "http", "http://h/", "--json", "--any"])
    assert inv.once and inv.verbose and inv.json and inv.any
    assert inv.targets == (Target("tcp", "a:1", name="x"), Target("http", "http://h/"))


def test_every_option_of_a_target():
    (target,) = parse_argv(["--deadline=60", "http", "https://h/x", "--name", "api", "--status", "2xx,301",
                            "--body", "ok$", "--ca-file", "/ca.pem", "--timeout", "3"]).targets
    assert target == Target("http", "https://h/x", name="api", status="2xx,301", body="ok$",
                            ca_file="/ca.pem", timeout=3)


def test_values_and_specs_are_taken_verbatim():
    inv = parse_argv(["exec", "--once", "--name", "--json", "unix", "-q"])
    assert inv.targets == (Target("exec", "--once", name="--json"), Target("unix", "-q"))
    assert not inv.once and not inv.json and not inv.quiet


@pytest.mark.parametrize("argv, words", [
    ([], "no target given"),
    (["--once"], "no target given"),
    (["tcp"], "tcp: the spec is missing"),
    (["tpc", "a:1"], "unknown kind 'tpc'"),
    (["tcp", "a:1", "--nmae", "x"], "unknown option --nmae (did you mean --name?)"),
    (["--name", "x", "tcp", "a:1"], "--name must follow the target it applies to"),
    (["tcp", "a:1", "--deadline", "5"], "--deadline is a global option"),
    (["tcp", "a:1", "--name"], "--name needs a value"),
    (["tcp", "a:1", "--once=yes"], "--once takes no value"),
    (["tcp", "a:1", "--name", "x", "--name", "y"], "--name given twice for tcp a:1"),
    (["--timeout", "1", "--timeout", "2", "tcp", "a:1"], "--timeout given twice"),
    (["--deadline", "-1", "tcp", "a:1"], "--deadline: expected 0 or more seconds"),
    (["--timeout", "0", "tcp", "a:1"], "--timeout: expected more than 0 seconds"),
    (["-q", "-v", "tcp", "a:1"], "exclude each other"),
    (["tcp", "a:1", "--status", "200"], "--status applies to http targets only"),
    (["tcp", "a"], "port is missing"),
])
def test_usage_errors(argv, words):
    with pytest.raises(UsageError) as error:
        parse_argv(argv)
    assert words in str(error.value)


def test_help_and_version_need_no_target():
    assert parse_argv(["--help"]).help and parse_argv(["-h"]).help
    assert parse_argv(["--version"]).version


def test_format_argv_is_canonical():
    targets = [Target("tcp", "10.0.0.11:5432", name="postgres"),
               Target("http", "https://auth/ready", status=[200, 204], ca_file="/ca.pem"),
               Target("exec", "/opt/check", timeout=10),
               Target("http", "https://x/", insecure=True, body="ok")]
    assert format_argv(targets, deadline=60, timeout=2) == [
        "--deadline=60", "--timeout=2",
        "tcp", "10.0.0.11:5432", "--name=postgres",
        "http", "https://auth/ready", "--status=200,204", "--ca-file=/ca.pem",
        "exec", "/opt/check", "--timeout=10",
        "http", "https://x/", "--body=ok", "--insecure"]
    assert format_argv(targets[:1], deadline=0.25, any_=True) == [
        "--deadline=0.25", "--any", "tcp", "10.0.0.11:5432", "--name=postgres"]


def test_format_argv_checks_its_options():
    with pytest.raises(UsageError):
        format_argv([Target("tcp", "a:1")], timeout=0)


HOSTILE = ["-", "--", "--name", "-v", "--name=x", "=", "a b", "'", '"', "%", "%%", "%n", "$", "${HOME}", "$$",
           "\\", "\\n", ";", "&&", "|", "`id`", "é", "💥", "日本", "\u200b", "x=y", " leading", "trailing ",
           "#", "*", "?", "~", "\N{RIGHT-TO-LEFT OVERRIDE}"]


def _hostile(rng, size=4):
    return "".join(rng.choice(HOSTILE) for _ in range(rng.randint(1, size)))


def _random_target(rng):
    kind = rng.choice(["tcp", "http", "unix", "dns", "exec"])
    options = {}
    if rng.random() < 0.6:
        options["name"] = _hostile(rng)
    if rng.random() < 0.3:
        options["timeout"] = rng.choice([0.001, 0.5, 2, 1e-7, 86400.25, 1 / 3])
    if kind == "tcp":
        spec = rng.choice(["db:5432", "[::1]:1", "[fe80::1%eth0]:22", "h-1.example.:65535", "bücher.de:80"])
    elif kind == "dns":
        spec = rng.choice(["db", "x_y.example.", "xn--bcher-kva.de"])
    elif kind == "unix":
        spec = rng.choice(["", "@", "/run/"]) + _hostile(rng, 3)
    elif kind == "exec":
        spec = _hostile(rng, 6)
    else:
        scheme = rng.choice(["http", "https", "HTTP"])
        path = "".join(c for c in _hostile(rng) if c > " " and c != "\x7f")
        spec = f"{scheme}://{rng.choice(['u:p%40@', '', 'tok@'])}h.example:8080/{path}"
        options["status"] = rng.choice([None, "200", "2xx,301,404"])
        options["body"] = rng.choice([None, "ok", "^\\$ \\d+ %s 'q' \"q\" -x$"])
        if scheme == "https":
            options[rng.choice(["ca_file", "insecure"])] = rng.choice([_hostile(rng), "/etc/ca.pem"])
            if "insecure" in options:
                options["insecure"] = True
    return Target(kind, spec, **options)


def test_round_trip_of_hostile_targets():
    rng = random.Random(20240521)
    for _ in range(3000):
        targets = [_random_target(rng) for _ in range(rng.randint(1, 4))]
        deadline = rng.choice([None, 0, 60, 0.1])
        timeout = rng.choice([None, 2, 0.3])
        any_ = rng.random() < 0.5
        argv = format_argv(targets, deadline=deadline, timeout=timeout, any_=any_)
        inv = parse_argv(argv)
        assert inv.targets == tuple(targets), argv
        assert inv.any == any_
        assert inv.deadline == (deadline or 0)
        assert inv.timeout == (timeout or DEFAULT_TIMEOUT)
        assert format_argv(inv.targets, deadline=deadline, timeout=timeout, any_=any_) == argv


def test_round_trip_through_a_real_command_line():
    labels = ["-v", "--name=x", "$HOME %n `id`", "quote ' \" \\ back", "💥 ünïcode"]
    with open_port() as port:
        targets = [Target("tcp", f"127.0.0.1:{port.port}", name=label) for label in labels]
        done = run_probe("--once", "--json", *format_argv(targets))
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["label"] for r in results] == labels
    assert all(r["ok"] for r in results)
