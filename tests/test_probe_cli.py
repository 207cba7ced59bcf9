"""The unitgen-probe command, run as a real process against real servers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from probe_helpers import (WAIT, ClosedPort, HttpServer, NotifySocket, ProbeProcess, answer, open_port,
                           probe_env, run_probe, sequence, stop, wait_until)


def test_once_open_and_closed():
    with open_port() as up, ClosedPort() as down:
        done = run_probe("--once", "tcp", f"127.0.0.1:{up.port}", "--name", "up",
                         "tcp", f"127.0.0.1:{down.port}", "--name", "down")
    assert done.returncode == 1
    first, second = done.stdout.splitlines()
    assert first.startswith("ok ") and first.endswith(f"up (127.0.0.1:{up.port}): connected")
    assert second.startswith("FAIL ") and second.endswith(
        f"down (127.0.0.1:{down.port}): connection refused (port closed)")
    assert done.stderr == ""


def test_once_any_and_all():
    with open_port() as up, ClosedPort() as down:
        both = ["tcp", f"127.0.0.1:{up.port}", "tcp", f"127.0.0.1:{down.port}"]
        assert run_probe("--once", "--any", *both).returncode == 0
        assert run_probe("--once", *both).returncode == 1
        assert run_probe("--once", *both[:2]).returncode == 0


def test_json_result_lines():
    with open_port() as up, ClosedPort() as down:
        done = run_probe("--once", "--json", "tcp", f"127.0.0.1:{up.port}", "--name", "db",
                         "tcp", f"127.0.0.1:{down.port}")
    ok, failed = (json.loads(line) for line in done.stdout.splitlines())
    assert set(ok) == {"target", "label", "kind", "ok", "reason", "latency_ms", "attempts"}
    assert ok["target"] == f"127.0.0.1:{up.port}" and ok["label"] == "db" and ok["kind"] == "tcp"
    assert ok["ok"] is True and ok["attempts"] == 1 and isinstance(ok["latency_ms"], float)
    assert failed["ok"] is False and failed["reason"] == "connection refused (port closed)"
    assert failed["label"] == failed["target"]


def test_waits_until_the_port_opens():
    with ClosedPort() as port, ProbeProcess("tcp", f"127.0.0.1:{port.port}", "--name", "db") as probe:
        probe.wait_for(f"waiting for db (127.0.0.1:{port.port}): connection refused (port closed), attempt 1")
        port.listen()
        assert probe.finish() == 0
    assert "ready after " in probe.stderr and probe.stderr.rstrip().endswith(f"db (127.0.0.1:{port.port})")


def test_deadline_logs_changes_not_attempts():
    with ClosedPort() as port:
        done = run_probe("--deadline", "1.5", "--json", "tcp", f"127.0.0.1:{port.port}")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines  # one state change, then the final word
    assert lines[0].startswith(f"waiting for 127.0.0.1:{port.port}: connection refused (port closed), attempt 1")
    assert lines[1].startswith("gave up after ") and "(--deadline 1.5)" in lines[1]
    (result,) = (json.loads(line) for line in done.stdout.splitlines())
    assert result["attempts"] >= 2 and not result["ok"]  # it kept trying


def test_verbose_logs_every_attempt_and_quiet_only_the_end():
    with ClosedPort() as port:
        verbose = run_probe("-v", "--deadline", "1", "tcp", f"127.0.0.1:{port.port}")
        quiet = run_probe("-q", "--deadline", "0.5", "tcp", f"127.0.0.1:{port.port}")
    attempts = [line for line in verbose.stderr.splitlines() if line.startswith("attempt ")]
    assert len(attempts) >= 2 and "attempt 2 of" in verbose.stderr
    assert quiet.stderr.count("\n") == 1 and quiet.stderr.startswith("gave up after")


def test_http_503_then_200():
    with HttpServer(sequence(answer(503), answer(503), answer(200))) as server:
        done = run_probe("--deadline", "20", "http", server.url + "/health", "--name", "api")
    assert done.returncode == 0, done.stderr
    assert f"waiting for api ({server.url}/health): HTTP status 503, attempt 1" in done.stderr
    assert "ready after" in done.stderr and len(server.requests) == 3


def test_at_most_ten_attempts_a_second():
    with HttpServer(answer(503)) as server:
        start = os.times().elapsed
        run_probe("--deadline", "3", "http", server.url)
        elapsed = os.times().elapsed - start
    # an upper bound only: a loaded machine makes fewer attempts, never more
    assert 2 <= len(server.requests) <= 10 * elapsed + 1


def test_a_target_that_passed_is_not_checked_again():
    with HttpServer(answer(200)) as up, ClosedPort() as down:
        run_probe("--deadline", "1.5", "http", up.url, "tcp", f"127.0.0.1:{down.port}")
    assert len(up.requests) == 1


def test_exit_status_2_for_usage_errors():
    done = run_probe("tcp", "db")
    assert done.returncode == 2
    assert done.stderr == ("unitgen-probe: error: tcp db: expected HOST:PORT (the port is missing)\n"
                           "Try 'unitgen-probe --help'.\n")
    assert run_probe().returncode == 2
    assert run_probe("--deadline", "soon", "tcp", "a:1").returncode == 2


def test_help_and_version():
    done = run_probe("--help")
    assert done.returncode == 0
    for words in ("usage: unitgen-probe [GLOBAL OPTIONS] [TARGET]... [group LABEL", "exit status:", "examples:",
                  "--deadline SECONDS", "(default 2)", "every target answered at least once"):
        assert words in done.stdout
    version = run_probe("--version")
    assert version.returncode == 0 and version.stdout.startswith("unitgen-probe ")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_wait(signum):
    with ClosedPort() as port, ProbeProcess("tcp", f"127.0.0.1:{port.port}", "--name", "db") as probe:
        probe.wait_for("waiting for db")
        stop(probe.proc, signum)
        assert probe.finish() == 128 + signum
    name = signal.Signals(signum).name
    assert f"stopped by {name} after " in probe.stderr
    assert "db (127.0.0.1:" in probe.stderr.splitlines()[-1]


@pytest.mark.parametrize("bare", [False, True], ids=["site", "no-site"])
def test_a_signal_abandons_attempts_in_flight(tmp_path, bare):
    pidfile = tmp_path / "pid"
    with ProbeProcess("exec", f"echo $$ > {pidfile}; sleep 60", "--timeout", "120", bare=bare) as probe:
        shell = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
        stop(probe.proc)
        assert probe.finish() == 143
    assert "stopped by SIGTERM" in probe.stderr and "first attempt running" in probe.stderr
    wait_until(lambda: not Path(f"/proc/{shell}").exists()
               or Path(f"/proc/{shell}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
               what="the command's process group to be killed")


#: A probe whose exec check's thread is slow back from starting the command,
#: as on a loaded machine: the command runs before the probe knows of it.
SLOW_START = """
import posix, subprocess, sys, time
class SlowPopen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        time.sleep(1.0)
subprocess.Popen = SlowPopen
from unitgen_probe.cli import main
status = main(sys.argv[1:])
sys.stderr.flush()
posix._exit(status)  # as start.py exits: other threads end with it
"""


def test_a_signal_between_a_commands_start_and_its_adoption_still_kills_it(tmp_path):
    pidfile = tmp_path / "pid"
    command = [sys.executable, "-c", SLOW_START, "exec", f"echo $$ > {pidfile}; exec sleep 60", "--timeout", "120"]
    proc = subprocess.Popen(command, env=probe_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        shell = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
        stop(proc)
        assert proc.wait(WAIT) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        wait_until(lambda: not Path(f"/proc/{shell}").exists()
                   or Path(f"/proc/{shell}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                   what="the command's process group to be killed")
    finally:
        try:
            os.killpg(shell, signal.SIGKILL)  # the test's own leftover, should the probe have left it
        except OSError:
            pass


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify_status(tmp_path, abstract):
    notify = NotifySocket(tmp_path, abstract=abstract)
    try:
        with ClosedPort() as port:
            target = f"127.0.0.1:{port.port}"
            with ProbeProcess("tcp", target, "--name", "db", env=probe_env(NOTIFY_SOCKET=notify.address)) as probe:
                wait_until(notify.statuses, what="a STATUS message")
                port.listen()
                assert probe.finish() == 0
        statuses = notify.statuses()
        assert statuses[0].startswith(f"waiting for db ({target}): connection refused (port closed), attempt 1, ")
        assert statuses[-1].startswith("ready after ") and statuses[-1].endswith(f"db ({target})")
        assert all(not m.startswith("READY=") for m in notify.messages())
    finally:
        notify.close()


def test_sd_notify_status_when_giving_up(tmp_path):
    notify = NotifySocket(tmp_path)
    try:
        with HttpServer(sequence(answer(500), answer(503))) as server:
            run_probe("--deadline", "1.5", "http", server.url, env=probe_env(NOTIFY_SOCKET=notify.address))
        statuses = notify.statuses()
    finally:
        notify.close()
    # one STATUS per change of what it waits for (500, then 503), and the last word
    assert len(statuses) == 3, statuses
    assert "HTTP status 500, attempt 1" in statuses[0] and "HTTP status 503, attempt 2" in statuses[1]
    assert statuses[2].startswith("gave up after ")


def test_credentials_are_never_printed(tmp_path):
    secret = "s3cr3t-pa55"
    notify = NotifySocket(tmp_path)
    try:
        with HttpServer(sequence(answer(302, Location=f"http://leak:{secret}@127.0.0.1:1/x"), answer(503))) as s:
            url = s.url.replace("://", f"://admin:{secret}@") + "/health"
            env = probe_env(NOTIFY_SOCKET=notify.address)
            runs = [run_probe("--deadline", "1", "-v", "--json", "http", url, env=env),
                    run_probe("--once", "http", url, env=env),
                    run_probe("--once", "--json", "http", url, "--name", "api", env=env),
                    run_probe("http", url.replace("/health", ":99999/"), env=env),
                    run_probe("--once", "exec", f"curl -fsS {url}", "--timeout", "0.1", env=env)]
        seen = "".join(r.stdout + r.stderr for r in runs) + "".join(notify.messages())
    finally:
        notify.close()
    assert secret not in seen and "admin" not in seen
    assert "127.0.0.1" in seen  # the rest of the URL is there


@pytest.mark.parametrize("password", ["PW1/PW2", "PW1#PW2", "PW1?PW2", "PW1@PW2", "PW1 PW2",
                                      "PW1\u2028PW2", "PW1%40PW2"])
def test_a_password_with_any_character_is_never_printed(tmp_path, password):
    """Usage errors, log lines, --json, STATUS=: whatever the password holds unencoded."""
    notify = NotifySocket(tmp_path)
    try:
        with HttpServer(answer(503)) as s:
            url = s.url.replace("://", f"://admin:{password}@") + "/health"
            env = probe_env(NOTIFY_SOCKET=notify.address)
            runs = [run_probe("--deadline", "0.5", "-v", "--json", "http", url, env=env),
                    run_probe("--once", "--json", "http", url, env=env),
                    run_probe("--once", "http", url, "--name", "api", env=env)]
            if " " not in password:  # in a shell command, a space ends the URL: no URL has one
                runs.append(run_probe("--once", "exec", f"curl -fsS '{url}'", "--timeout", "0.1", env=env))
        seen = "".join(r.stdout + r.stderr for r in runs) + "".join(notify.messages())
    finally:
        notify.close()
    assert "PW" not in seen and "admin" not in seen, seen
    # refused (exit 2) where the password ends the host early, else checked (exit 1: 503)
    assert runs[0].returncode == (2 if password[3] in "/#? " else 1)


def test_once_reports_a_server_that_never_answers():
    with HttpServer(lambda handler: time.sleep(5)) as slow:
        done = run_probe("--once", "http", slow.url, "--timeout", "0.3")
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith("timed out after 0.3 s waiting for the response")


def _cpu_seconds(pid):
    """CPU time of every thread of *pid*, in seconds (the scheduler's count)."""
    tasks = Path(f"/proc/{pid}/task")
    return sum(int((tasks / tid / "schedstat").read_text().split()[0]) for tid in os.listdir(tasks)) / 1e9


@pytest.mark.bench  # 7 s of waiting to measure: CI runs it (-m bench), the default run does not
def test_waiting_costs_little_cpu(tmp_path):
    notify = NotifySocket(tmp_path)
    try:
        with ClosedPort() as port:
            target = f"127.0.0.1:{port.port}"
            with ProbeProcess("tcp", target) as plain, \
                    ProbeProcess("tcp", target, env=probe_env(NOTIFY_SOCKET=notify.address)) as notifying:
                for probe in (plain, notifying):
                    probe.wait_for("waiting for")
                before = [_cpu_seconds(p.proc.pid) for p in (plain, notifying)]
                time.sleep(7)  # past every timer of the loop (the STATUS refresh is every 5 s)
                used = [_cpu_seconds(p.proc.pid) - b for p, b in zip((plain, notifying), before)]
    finally:
        notify.close()
    # about 3 attempts a second cost milliseconds; a loop that spins costs seconds
    assert max(used) < 1.0, used
