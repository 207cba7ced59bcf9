"""unitgen-launch without systemd: the rules it decides by, run in the test's
own cgroup (tests/test_launch_bed.py and tests/test_realdrill.py run it under
systemd with real daemons)."""

import os
import signal
import time
import uuid

import pytest

from unitgen_probe import launch


@pytest.fixture
def tag():
    """A pattern no other process on the machine has."""
    return f"unitgen-launch-test-{uuid.uuid4().hex}"


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "run" / "unit.pid")


def handed_over(path):
    with open(path) as file:
        return int(file.read())


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("argv", [
    [],
    ["--pid-file", "/run/x.pid", "--pname", "x"],
    ["--pid-file", "run/x.pid", "--pname", "x", "--", "true"],
    ["--pid-file", "/run/x.pid", "--", "true"],
    ["--pid-file", "/run/x.pid", "--pname", "x", "--from-pid-file", "/run/y.pid", "--", "true"],
    ["--pid-file", "/run/x.pid", "--pname", "(", "--", "true"],
    ["--pid-file", "/run/x.pid", "--from-pid-file", "y.pid", "--", "true"],
    ["--pid-file", "/run/x.pid", "--pname", "x", "--timeout", "soon", "--", "true"],
    ["--pid-file", "/run/x.pid", "--bogus", "--", "true"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert launch.main(argv) == 2
    assert capsys.readouterr().err.startswith("unitgen-launch: error: ")


def test_a_failing_script_is_a_failed_start_with_its_status(out, tag):
    assert launch.main(["--pid-file", out, "--pname", tag, "--", "/bin/bash", "-c", "exit 3"]) == 3
    assert not os.path.exists(out)


def test_nohup_and_ampersand_the_process_is_found_by_pname(out, tag):
    script = f"(exec -a {tag} sleep 30) >/dev/null 2>&1 &"
    assert launch.main(["--pid-file", out, "--pname", tag, "--", "/bin/bash", "-c", script]) == 0
    pid = handed_over(out)
    try:
        assert launch._cmdline(pid).startswith(tag.encode())
    finally:
        kill(pid)


def test_the_shell_running_the_script_is_not_the_process(out, tag):
    """Its command line holds the pattern; a script that starts nothing is a failed start."""
    script = f"echo {tag} >/dev/null; sleep 0.3"
    argv = ["--pid-file", out, "--pname", tag, "--timeout", "0.5", "--", "/bin/bash", "-c", script]
    assert launch.main(argv) == 1
    assert not os.path.exists(out)


def test_a_pid_file_written_by_the_daemon_is_trusted_in_the_cgroup(out, tmp_path):
    daemon_pid_file = tmp_path / "daemon.pid"
    script = f"sleep 30 >/dev/null 2>&1 & echo $! > {daemon_pid_file}"
    assert launch.main(["--pid-file", out, "--from-pid-file", str(daemon_pid_file), "--",
                        "/bin/bash", "-c", script]) == 0
    pid = handed_over(out)
    try:
        assert pid == int(daemon_pid_file.read_text())
        # bash's child forks first and execs sleep next: the PID is the
        # daemon's from the start, its command line only once exec'd
        deadline = time.monotonic() + 10
        while launch._cmdline(pid) != b"sleep 30" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert launch._cmdline(pid) == b"sleep 30"
    finally:
        kill(pid)


def test_a_stale_pid_file_is_neither_adopted_nor_found(out, tmp_path):
    """Left from before a power cut: it names a live process (here this test's),
    which started after the file was written."""
    stale = tmp_path / "daemon.pid"
    stale.write_text(f"{os.getpid()}\n")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    argv = ["--pid-file", out, "--from-pid-file", str(stale), "--timeout", "0.5", "--", "/bin/bash", "-c", "exit 0"]
    assert launch.main(argv) == 1
    assert not os.path.exists(out)


def test_a_running_process_is_adopted_not_started_twice(out, tag, tmp_path):
    import subprocess

    running = subprocess.Popen(["/bin/bash", "-c", f"exec -a {tag} sleep 30"])
    try:
        time.sleep(0.1)
        marker = tmp_path / "ran"
        assert launch.main(["--pid-file", out, "--pname", tag, "--", "/bin/bash", "-c", f"touch {marker}"]) == 0
        assert handed_over(out) == running.pid
        assert not marker.exists()  # the script was not run
    finally:
        running.kill()
        running.wait()


def test_a_process_still_running_later_is_in_the_foreground(out, tag, monkeypatch):
    monkeypatch.setattr(launch, "FOREGROUND_AFTER", 0.3)
    argv = ["--pid-file", out, "--pname", tag, "--", "/bin/bash", "-c", f"exec -a {tag} sleep 30"]
    assert launch.main(argv) == 0
    pid = handed_over(out)
    try:
        assert launch._cmdline(pid).startswith(tag.encode())
    finally:
        kill(pid)
