"""unitgen-probe's groups: "2 of these 3 and all of those", as a real process
against real ports; the grammar, and format_argv / parse_argv as inverses."""

import pytest
from probe_helpers import ClosedPort, NotifySocket, ProbeProcess, open_port, probe_env, run_probe, wait_until

from unitgen_probe import Target, UsageError, format_argv, parse_argv
from unitgen_probe.targets import Group


def _members(ports):
    words = []
    for i, port in enumerate(ports, 1):
        words += ["tcp", f"127.0.0.1:{port.port}", "--name", f"etcd@h{i}"]
    return words


def test_two_of_three_and_all_of_those(tmp_path):
    """The group is ready at its second member; the target outside it must pass too."""
    notify = NotifySocket(tmp_path)
    with ClosedPort() as db, ClosedPort() as a, ClosedPort() as b, ClosedPort() as c, \
            ProbeProcess("tcp", f"127.0.0.1:{db.port}", "--name", "db",
                         "group", "etcd", "--need", "2", *_members([a, b, c]),
                         env=probe_env(NOTIFY_SOCKET=notify.address)) as probe:
        probe.wait_for("etcd: 0 of 3 answer, need 2 (etcd@h1: connection refused (port closed), "
                       "etcd@h2: connection refused (port closed), etcd@h3: connection refused (port closed))")
        db.listen()
        a.listen()
        probe.wait_for(f"ready: etcd@h1 (127.0.0.1:{a.port}): connected")
        wait_until(lambda: any(s.startswith("waiting for etcd: 1 of 3 answer, need 2 (etcd@h2: connection refused "
                                            "(port closed), etcd@h3: connection refused (port closed)), ")
                               for s in notify.statuses()), what="the STATUS of one answering")
        assert probe.proc.poll() is None  # one of three is not two
        c.listen()
        assert probe.finish() == 0
    assert b.accepted == 0
    notify.close()


def test_a_group_does_not_stand_for_the_targets_outside_it():
    with ClosedPort() as db, open_port() as a, open_port() as b:
        done = run_probe("--deadline", "1", "tcp", f"127.0.0.1:{db.port}", "--name", "db",
                         "group", "etcd", "--need", "any", *_members([a, b]))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].endswith(
        f"db (127.0.0.1:{db.port}): connection refused (port closed), attempt "
        + done.stderr.splitlines()[-1].rsplit("attempt ", 1)[1])


@pytest.mark.parametrize("need, up, code", [("any", 1, 0), ("all", 2, 1), ("2", 2, 0), ("3", 2, 1), (None, 3, 0)])
def test_once_counts_the_group(need, up, code):
    ports = [open_port() for _ in range(up)] + [ClosedPort() for _ in range(3 - up)]
    try:
        done = run_probe("--once", "group", "g", *(["--need", need] if need else []), *_members(ports))
    finally:
        for port in ports:
            port.close()
    assert done.returncode == code, done
    assert len(done.stdout.splitlines()) == 3  # one result line per target still


def test_a_need_above_the_members_says_it_can_never_be_met():
    with open_port() as a:
        done = run_probe("--deadline", "0.5", "group", "g", "--need", "2", *_members([a]))
    assert done.returncode == 1
    assert "g: 1 of 1 answers, need 2 (can never be met)" in done.stderr


@pytest.mark.parametrize("argv, message", [
    (["group", "g"], "group g: no target in it"),
    (["group", "g", "--need", "0", "tcp", "a:1"], "group g: --need must be all, any or a whole number"),
    (["group", "g", "--need", "-1", "tcp", "a:1"], "group g: --need must be all, any or a whole number"),
    (["group", "g", "tcp", "a:1", "group", "g", "tcp", "b:1"], "group g: given twice"),
    (["tcp", "a:1", "--need", "2"], "--need applies to a group, not to a target"),
    (["group", "g", "--name", "x", "tcp", "a:1"], "--name must follow the target it applies to, not a group"),
    (["group"], "group: the spec is missing"),
])
def test_group_usage_errors(argv, message):
    with pytest.raises(UsageError) as caught:
        parse_argv(argv)
    assert str(caught.value).startswith(message), caught.value


def test_format_and_parse_are_inverses_with_groups():
    alone = [Target("tcp", "db:5432", name="db")]
    groups = [Group("etcd", [Target("http", f"http://h{i}:2379/health", name=f"etcd@h{i}") for i in (1, 2, 3)], 2),
              Group("api", [Target("tcp", "a:1"), Target("tcp", "b:1")])]
    argv = format_argv(alone, groups=groups, deadline=60)
    assert argv[argv.index("group"):argv.index("group") + 3] == ["group", "etcd", "--need=2"]
    assert "--need=2" in argv and argv.count("--need=2") == 1 and "--need=" not in " ".join(argv[argv.index("api"):])
    inv = parse_argv(argv)
    assert inv.groups == tuple(groups)
    assert inv.targets == tuple(alone) + groups[0].targets + groups[1].targets
    assert [g for g, _ in inv.members()] == [None, groups[0], groups[0], groups[0], groups[1], groups[1]]
