"""unitgen/bus.py without a test bed host: clean errors for every way the bus
can be missing, the JobRemoved race, the waiting/failed rules, and the status
screen. apply and status on real systemd are in tests/test_apply.py."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dbus_next import Message

from unitgen import bus, status
from unitgen.cli import cli
from clirunner import cli_runner, with_sigint

ROOT = Path(__file__).resolve().parent.parent
AUTOHEAL = str(ROOT / "examples/autoheal.yaml")


def run(*args):
    result = cli_runner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("command", [["status"], ["apply", "--dry-run"]])
def test_no_bus_is_a_clear_error(command):
    result = run(*command, AUTOHEAL, "--bus-address", "unix:path=/nonexistent/bus")
    assert result.exit_code == 1
    assert result.stderr == ("unitgen: no D-Bus system bus at unix:path=/nonexistent/bus "
                             f"({os.strerror(errno.ENOENT)}); is dbus running?\n")


def test_the_standard_variable_names_the_bus(monkeypatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/env-bus")
    result = run("status", AUTOHEAL)
    assert result.exit_code == 1 and "unix:path=/nonexistent/env-bus" in result.stderr


def test_a_bad_address_is_a_clear_error():
    result = run("status", AUTOHEAL, "--bus-address", "nonsense")
    assert result.exit_code == 1
    assert result.stderr.startswith("unitgen: bad bus address 'nonsense': ")


@pytest.fixture
def bare_bus(tmp_path):
    """A dbus-daemon with no systemd on it (and nothing to activate); its address."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed")
    socket = tmp_path / "bus"
    config = tmp_path / "bus.conf"
    config.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
""")
    daemon = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert daemon.stdout.readline().startswith(f"unix:path={socket}")  # listening
        yield f"unix:path={socket}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_systemd_not_running_is_a_clear_error(bare_bus):
    result = run("status", AUTOHEAL, "--bus-address", bare_bus)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"unitgen: systemd is not running on the bus at {bare_bus} (")


def test_render_and_check_do_not_import_dbus_next():
    code = ("import sys; from click.testing import CliRunner; from unitgen.cli import cli\n"
            f"for args in (['render', {AUTOHEAL!r}, '--probe', '/usr/bin/unitgen-probe'], ['check', {AUTOHEAL!r}]):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith('dbus_next')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


# -- JobRemoved may come before the reply that names the job ----------------------------

JOB = "/org/freedesktop/systemd1/job/7"


class RacingBus:
    """A bus on which systemd announces a job's end before replying with its path
    (as it may: the job can finish while the reply is still on its way), together
    with the end of another client's job."""

    def __init__(self, finish_before_reply: bool):
        self.handlers = []
        self.finish_before_reply = finish_before_reply

    def add_message_handler(self, handler):
        self.handlers.append(handler)

    def job_removed(self, path: str, unit: str, result: str) -> None:
        signal = Message.new_signal(bus.MANAGER_PATH, bus.MANAGER, "JobRemoved", "uoss", [7, path, unit, result])
        for handler in self.handlers:
            handler(signal)

    async def call(self, message):
        message.serial = 1
        if message.member != "StartUnit":  # AddMatch, Subscribe
            return Message.new_method_return(message)
        self.job_removed("/org/freedesktop/systemd1/job/99", "other.service", "done")
        if self.finish_before_reply:
            self.job_removed(JOB, message.body[0], "done")
        return Message.new_method_return(message, "o", [JOB])


@pytest.mark.parametrize("finish_before_reply", [True, False])
def test_a_job_removed_before_its_reply_is_not_lost(finish_before_reply):
    async def scenario():
        racing = RacingBus(finish_before_reply)
        systemd = bus.Systemd(racing, "test")
        job = await systemd.start_unit("a.service")
        if not finish_before_reply:
            racing.job_removed(JOB, "a.service", "failed")
        await systemd.wait([job], timeout=5)
        return job, systemd

    job, systemd = asyncio.run(scenario())
    assert (job.path, job.unit, job.kind) == (JOB, "a.service", "start")
    assert job.result == ("done" if finish_before_reply else "failed")
    assert systemd._early == {}  # another client's job is not kept


def test_a_job_still_running_at_the_timeout_has_no_result():
    async def scenario():
        systemd = bus.Systemd(RacingBus(finish_before_reply=False), "test")
        job = await systemd.start_unit("a.service")
        await systemd.wait([job], timeout=0.05)
        return job

    job = asyncio.run(scenario())
    assert job.result is None and not job.ok


# -- waiting is not failing -----------------------------------------------------------

def state(active, sub, status="", load="loaded", error=""):
    return bus.UnitState("x.service", load, error, active, sub, 1.0, None, 0, status, 0, "success")


@pytest.mark.parametrize("unit, waiting", [
    (state("active", "running", "ready after 2 s: db"), False),
    (state("activating", "start-pre", "waiting for db (10.0.0.11:5432): connection refused, attempt 7, 12 s"), True),
    (state("activating", "start-pre"), True),  # the probe has not said anything yet
    (state("activating", "auto-restart", "gave up after 60 s (--deadline 60): db: connection refused"), True),
    (state("activating", "auto-restart"), False),  # its own process failed: Restart= loops
    (state("activating", "auto-restart", "ready after 0.1 s: db"), False),
    (state("failed", "failed"), False),
    (state("inactive", "dead"), False),
])
def test_waiting(unit, waiting):
    assert unit.waiting is waiting


# -- the status screen ----------------------------------------------------------------

STATES = [
    state("active", "running"),
    state("activating", "start-pre", "waiting for db (10.0.0.11:5432): connection refused, attempt 7, 12 s"),
    state("inactive", "dead", load="bad-setting", error="Unit x.service has a bad unit file setting."),
]
SEEN = [status.Seen(s) for s in STATES]


def test_status_table_columns_and_ages():
    lines = status.table(SEEN, colour=False, now=1.0 + 3 * 3600 + 5 * 60)
    assert lines == [
        "UNIT       STATE                   SINCE          RESTARTS  STATUS",
        "x.service  active (running)        3 h 5 min ago  0",
        "x.service  activating (start-pre)  3 h 5 min ago  0         "
        "waiting for db (10.0.0.11:5432): connection refused, attempt 7, 12 s",
        "x.service  bad-setting             3 h 5 min ago  0         Unit x.service has a bad unit file setting.",
    ]


def test_status_colours_the_state_only_when_asked():
    plain, coloured = status.table(SEEN, colour=False), status.table(SEEN, colour=True)
    assert "\x1b[" not in "".join(plain)
    assert "\x1b[32mactive (running)" in coloured[1]
    assert "\x1b[33mactivating (start-pre)" in coloured[2]
    assert "\x1b[31mbad-setting" in coloured[3]


class Terminal:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty, environ, wanted", [
    (True, {}, True), (False, {}, False), (True, {"NO_COLOR": "1"}, False), (True, {"NO_COLOR": ""}, True)])
def test_colour_only_on_a_terminal_without_no_color(tty, environ, wanted):
    assert status.colour_wanted(Terminal(tty), environ) is wanted


# -- restart loops ---------------------------------------------------------------------

def restarted(n, active="activating", sub="auto-restart", status_text="", code=1, exit_status=3):
    return bus.UnitState("x.service", "loaded", "", active, sub, 1.0, None, n, status_text, 0, "exit-code",
                         code, exit_status)


@pytest.mark.parametrize("seen, looping", [
    (status.Seen(restarted(9), recent_restarts=2), True),
    (status.Seen(restarted(9, "active", "running"), recent_restarts=5), True),  # up for a moment between two
    (status.Seen(restarted(9), recent_restarts=1), False),
    (status.Seen(restarted(9), recent_restarts=None), False),  # unknown is not a loop
    (status.Seen(restarted(9, status_text="gave up after 20 s (--deadline 20): db: refused"), recent_restarts=3),
     False),  # its probe waits for a dependency
])
def test_a_restart_loop_is_two_restarts_within_a_minute_not_a_waiting_probe(seen, looping):
    assert seen.looping is looping
    waiting_probe = seen.state.status_text.startswith("gave up after")
    # restarting after its own process failed is bad, looping or not; a probe that gave up is waiting
    assert seen.health == ("bad" if looping or (seen.state.sub_state == "auto-restart" and not waiting_probe)
                           else "waiting" if waiting_probe else "ok")


def test_a_loop_is_shown_as_such_with_the_reason():
    seen = status.Seen(restarted(14), recent_restarts=5, last_lines=("listen: address in use",))
    (_, row) = status.table([seen], colour=False, now=61.0)
    assert row.split("  ")[:2] == ["x.service", "restart loop"]
    assert "14 (5 in 1 min)" in row
    assert row.endswith("last: exit status 3, result exit-code: listen: address in use")
    (line,) = status.json_lines([seen])
    import json

    data = json.loads(line)
    assert (data["restart_loop"], data["restarts_last_minute"], data["exit"]) == (True, 5, "exit status 3")


@pytest.mark.parametrize("code, value, text", [
    (1, 0, "exit status 0"), (2, 9, "killed by SIGKILL"), (3, 11, "killed by SIGSEGV (core dumped)"), (0, 0, "")])
def test_how_the_main_process_ended(code, value, text):
    assert restarted(0, code=code, exit_status=value).exit_reason == text


def test_without_the_journal_restarts_are_counted_from_nrestarts_over_time():
    restarts = status.Restarts(use_journal=False)
    (first,) = restarts.seen([restarted(10)], now=1000.0)
    assert first.recent_restarts is None  # one reading says nothing about a rate
    (second,) = restarts.seen([restarted(12)], now=1002.0)
    assert second.recent_restarts == 2 and second.looping
    (later,) = restarts.seen([restarted(12)], now=1100.0)
    assert later.recent_restarts == 0  # the old samples left the window


# -- status --watch ends on Ctrl-C, whatever it is doing --------------------------------

@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_status_watch_ends_on_sigint_even_while_the_bus_does_not_answer(tmp_path, inherited):
    """SIGINT while status --watch waits for a bus that accepted it and never answers.

    ``ignored``: started as a script's ``cmd &`` starts a job (no job control),
    with SIGINT ignored, which Python keeps and asyncio.run then does not catch:
    status --watch takes it anyway, as watch(1) does. Either way it ends at once
    with exit 1 (nothing was shown), not at the bus's own time-out ("cannot
    connect ... no answer"), and not 0 as if every service were active."""
    import signal
    import socket

    path = str(tmp_path / "silent-bus")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        argv = with_sigint(inherited, [sys.executable, "-m", "unitgen", "status", AUTOHEAL, "--watch",
                                       "--bus-address", f"unix:path={path}"])
        watch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            connection, _ = listener.accept()  # it is connecting: its handler is in place
            with connection:
                watch.send_signal(signal.SIGINT)
                out, err = watch.communicate(timeout=2 * bus.CALL_TIMEOUT)  # a guard: the bus gives up before
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
    assert (watch.returncode, out, err) == (1, "", "")
