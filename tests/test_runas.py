"""Who a service's checks run as (unitgen/runas.py), off the bed: the unit
settings read as systemd reads them, users systemd would refuse refused, a
worker dropped to the identity, and its answers treated as hostile. The
proof with a non-root user on real systemd is tests/test_privilege_bed.py."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import threading

import pytest

from unitgen.model import Service
from unitgen.runas import CannotCheck, Checker, RunAs, _parse, resolve, run_as
from unitgen_probe import Target

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching groups needs root")


def _service(**fields):
    return Service(name="web", command=("/bin/true",), description="web", **fields)


def test_raw_directives_win_in_systemd_order():
    service = _service(user="daemon", group="daemon", raw=(
        ("Unit", (("User", "nobody"),)),  # not the Service section: not an identity
        ("Service", (("SupplementaryGroups", "adm  tty"), ("User", "bin"), ("SupplementaryGroups", "sys"),
                     ("Group", ""), ("DynamicUser", "no"))),
    ))
    assert run_as(service) == RunAs(user="bin", group=None, supplementary=("adm", "tty", "sys"))
    reset = _service(user="daemon", raw=(("Service", (("User", ""), ("SupplementaryGroups", "adm"),
                                                      ("SupplementaryGroups", ""))),))
    assert run_as(reset).is_root  # User= empty is root again, as systemd reads it
    assert run_as(_service()).is_root


@pytest.mark.parametrize("raw, words", [
    ((("DynamicUser", "yes"),), "DynamicUser=yes"),
    ((("DynamicUser", "maybe"),), "DynamicUser=yes"),  # unreadable: assumed on, never root
    ((("User", "nosuchuser-x"),), "user 'nosuchuser-x' does not exist"),
    ((("User", "4000123"),), "user '4000123' does not exist"),  # a number needs an entry too
    ((("User", "daemon"), ("Group", "nosuchgroup-x")), "group 'nosuchgroup-x' does not exist"),
    ((("User", "daemon"), ("SupplementaryGroups", "adm nosuchgroup-y")), "group 'nosuchgroup-y'"),
    ((("User", "%i"),), "specifier"),
])
def test_identities_systemd_would_refuse_are_not_checked(raw, words):
    with pytest.raises(CannotCheck, match=words):
        resolve(run_as(_service(raw=(("Service", raw),))))


def test_the_resolved_identity_is_what_systemd_gives():
    who = resolve(run_as(_service(user="daemon", environment=(("MODE", "x"),),
                                  raw=(("Service", (("SupplementaryGroups", "adm"),)),))))
    assert (who.uid, who.gid) == (1, 1)
    assert set(who.groups) == set(os.getgrouplist("daemon", 1)) | {4}
    env = dict(who.env)
    assert env["USER"] == env["LOGNAME"] == "daemon" and env["MODE"] == "x"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert resolve(RunAs(user="1")).uid == 1  # by number, as systemd allows
    assert resolve(RunAs(user="daemon", working_dir="~")).cwd == pwd.getpwnam("daemon").pw_dir


@needs_root
def test_a_worker_runs_checks_with_the_identity(tmp_path):
    out = tmp_path / "ids"
    checker = Checker(RunAs(group="adm", supplementary=("tty",), working_dir=str(tmp_path),
                            environment=(("SECRET_MODE", "on"),)))
    assert not checker.in_process
    command = f"echo $(id -u) $(id -g) $(id -G) $SECRET_MODE $(pwd) > {out}"
    try:
        results = [checker.check(Target("exec", command)) for _ in range(2)]  # one worker, reused
        assert all(r.ok for r in results), results
        uid, gid, *rest = out.read_text().split()
        assert (uid, gid) == ("0", "4") and rest == ["4", "5", "on", str(tmp_path)]
        refused = checker.check(Target("tcp", "127.0.0.1:1"))
        assert not refused.ok and refused.reason == "connection refused (port closed)"
    finally:
        checker.close()


@needs_root
def test_a_worker_that_dies_is_not_a_failed_dependency_and_is_replaced(tmp_path):
    checker = Checker(RunAs(group="adm"))
    outcome = []

    def slow_check():
        try:
            outcome.append(checker.check(Target("exec", f"touch {tmp_path}/started; sleep 30", timeout=60)))
        except CannotCheck as why:
            outcome.append(why)

    try:
        thread = threading.Thread(target=slow_check)
        thread.start()
        while not (tmp_path / "started").exists():
            threading.Event().wait(0.02)
        os.kill(checker._worker.proc.pid, 9)  # the service's user can do that: it owns the worker
        thread.join(30)
        assert isinstance(outcome[0], CannotCheck) and "exited" in str(outcome[0])  # unasked, not failed
        assert checker.check(Target("exec", "true")).ok  # a new worker
    finally:
        checker.close()


@needs_root
def test_a_working_directory_the_user_cannot_enter_is_not_checked(tmp_path):
    checker = Checker(RunAs(user="daemon", working_dir="/root"))
    try:
        with pytest.raises(CannotCheck):
            checker.check(Target("exec", "true"))
    finally:
        checker.close()


@pytest.mark.parametrize("line", [
    b"not json\n", b"[1, 2]\n", b'{"id": "1", "ok": true, "reason": "x", "latency": 0}\n',
    b'{"id": 1, "ok": 1, "reason": "x", "latency": 0}\n', b'{"id": 1, "ok": true, "reason": 5, "latency": 0}\n',
    b'{"id": 1, "ok": true, "reason": "x", "latency": true}\n',
])
def test_a_worker_line_that_is_not_an_answer_is_refused(line):
    ident, answer = _parse(line)
    assert ident is None and isinstance(answer, CannotCheck)


def test_a_worker_answer_is_shown_safely():
    line = json.dumps({"id": 3, "ok": False, "latency": float("inf"),
                       "reason": "at http://u:pa/ss@db/\n" + "forged line " * 100}).encode()
    ident, result = _parse(line)
    assert ident == 3 and result.latency == 0.0
    assert "pa/ss" not in result.reason and "\n" not in result.reason and len(result.reason) <= 500


def test_the_worker_answers_every_request_even_a_malformed_one():
    from probe_helpers import probe_env

    requests = [b'{"id": 1, "argv": ["tcp", "127.0.0.1:1"], "timeout": 1}',
                b'{"id": 2, "argv": ["tcp", "no port"]}', b'{"id": 3}', b"garbage",
                b'{"id": 4, "argv": ["exec", "exit 3"], "timeout": null}']
    worker = subprocess.Popen([sys.executable, "-m", "unitgen_probe.serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=probe_env())
    try:
        worker.stdin.write(b"\n".join(requests) + b"\n")
        worker.stdin.flush()
        lines = [worker.stdout.readline() for _ in requests]  # answers come as checks end
        worker.stdin.close()  # EOF: the worker exits
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    answers = {a["id"]: a for a in map(json.loads, lines)}
    assert set(answers) == {1, 2, 3, 4, None}
    assert answers[1]["reason"] == "connection refused (port closed)"
    assert answers[2]["reason"].startswith("not checked: tcp no port:")
    assert answers[3]["reason"] == answers[None]["reason"] == "not checked: malformed request"
    assert answers[4]["reason"] == "exit status 3" and not any(a["ok"] for a in answers.values())


@needs_root
def test_closing_a_checker_ends_the_commands_its_worker_runs(tmp_path):
    checker = Checker(RunAs(group="adm"))
    outcome = []
    pid_file = tmp_path / "pid"
    thread = threading.Thread(target=lambda: outcome.append(
        _outcome(checker, Target("exec", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60",
                                 timeout=120))))
    thread.start()
    while not pid_file.exists():
        threading.Event().wait(0.02)
    command = int(pid_file.read_text())
    checker.close()
    thread.join(30)
    assert isinstance(outcome[0], CannotCheck)
    for _ in range(1500):  # the worker saw EOF and killed the command's process group
        if not os.path.exists(f"/proc/{command}") or open(f"/proc/{command}/stat").read().split()[2] == "Z":
            break
        threading.Event().wait(0.02)
    else:
        raise AssertionError("the command outlived its worker")


def _outcome(checker, target):
    try:
        return checker.check(target)
    except CannotCheck as why:
        return why
