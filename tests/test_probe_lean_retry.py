"""The probe's lean retry path (unitgen_probe/wait.py): while a tcp target
at an IP address keeps refusing, retries are bare connects, counted as
attempts; a bare connect accepted is the passed attempt (no second
connection); any other answer is followed by a full attempt, which
decides; the deadline holds; names, and --verbose, always make full
attempts."""

from __future__ import annotations

import io
import threading

from unitgen_probe import wait
from unitgen_probe.argv import parse_argv
from unitgen_probe.report import Reporter

from probe_helpers import ClosedPort, wait_until


def _waiter(monkeypatch, *argv):
    """(Waiter, full attempts made, stderr) for a probe run in this process."""
    full = []
    real = wait.check
    monkeypatch.setattr(wait, "check", lambda target, timeout=None: full.append(target) or real(target, timeout))
    inv = parse_argv(list(argv))
    err = io.StringIO()
    return wait.Waiter(inv, Reporter(inv, None, out=io.StringIO(), err=err)), full, err


def test_a_refusing_port_costs_one_full_attempt_then_bare_connects(monkeypatch):
    with ClosedPort() as port:
        waiter, full, err = _waiter(monkeypatch, "--deadline", "1.5", "tcp", f"127.0.0.1:{port.port}")
        assert waiter.run() is False  # the deadline holds
    attempts = waiter._probes[0].attempts
    assert len(full) == 1 and attempts >= 3, (len(full), attempts)
    assert f"connection refused (port closed), attempt {attempts}" in err.getvalue()  # the count includes them


def test_the_port_opening_is_seen_by_the_bare_connect_itself(monkeypatch):
    with ClosedPort() as port:
        waiter, full, err = _waiter(monkeypatch, "--deadline", "30", "tcp", f"127.0.0.1:{port.port}")
        timer = threading.Timer(0.6, port.listen)
        timer.start()
        try:
            assert waiter.run() is True
        finally:
            timer.join()
        # the kernel completes a handshake before the port's thread accepts it
        wait_until(lambda: port.accepted >= 1, what="the connection accepted")
    assert len(full) == 1 and waiter._probes[0].attempts >= 3  # no second connection to make sure
    assert port.accepted == 1
    result = waiter._probes[0].result
    assert result.ok and result.reason == "connected"  # what a full attempt says
    assert "ready after" in err.getvalue()


def test_names_and_verbose_make_full_attempts(monkeypatch):
    with ClosedPort() as port:
        for argv in (["tcp", f"localhost:{port.port}"], ["--verbose", "tcp", f"127.0.0.1:{port.port}"]):
            waiter, full, _ = _waiter(monkeypatch, "--deadline", "1", *argv)
            assert waiter.run() is False
            assert len(full) == waiter._probes[0].attempts >= 3
