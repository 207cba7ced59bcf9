"""What the probe says and when: the Reporter driven with chosen times,
and the gaps between attempts. (The same, end to end, in test_probe_cli.)"""

import io
import json

from unitgen_probe import Result, Target, parse_argv
from unitgen_probe.report import REMINDER, STATUS_REFRESH, Reporter, duration
from unitgen_probe.wait import MAX_GAP, MIN_GAP, Probe, _gap

REFUSED = Result(False, "connection refused (port closed)", 0.001)
TIMED_OUT = Result(False, "timed out after 2 s (host down or SYN dropped)", 2.0)
CONNECTED = Result(True, "connected", 0.002)


class Statuses:
    """Stands in for the Notifier: keeps the STATUS texts."""

    def __init__(self):
        self.texts = []

    def status(self, text):
        self.texts.append(text)


def make(*argv, notifier=None):
    inv = parse_argv(list(argv))
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(inv, notifier, out=out, err=err)
    probes = [Probe(t, inv.timeout_for(t)) for t in inv.targets]
    reporter.start(probes, now=100.0)
    return reporter, probes, out, err


def attempt(reporter, probe, result, now):
    changed = probe.record(result)
    reporter.attempted(probe, result, probe.attempts, changed, now)


def test_one_line_per_change_not_per_attempt():
    reporter, (db,), _, err = make("tcp", "10.0.0.11:5432", "--name", "db")
    for second in range(5):
        attempt(reporter, db, REFUSED, 100.0 + second)
    attempt(reporter, db, TIMED_OUT, 107.0)
    assert err.getvalue().splitlines() == [
        "waiting for db (10.0.0.11:5432): connection refused (port closed), attempt 1, 0.0 s",
        "waiting for db (10.0.0.11:5432): timed out after 2 s (host down or SYN dropped), attempt 6, 7.0 s"]


def test_reminder_and_status_refresh():
    statuses = Statuses()
    reporter, (db,), _, err = make("tcp", "10.0.0.11:5432", "--name", "db", notifier=statuses)
    attempt(reporter, db, REFUSED, 100.0)
    assert statuses.texts == ["waiting for db (10.0.0.11:5432): connection refused (port closed), attempt 1, 0.0 s"]
    assert reporter.tick(101.0) == 100.0 + STATUS_REFRESH  # nothing due yet
    for _ in range(6):
        attempt(reporter, db, REFUSED, 104.0)
    reporter.tick(105.0)
    assert statuses.texts[-1] == \
        "waiting for db (10.0.0.11:5432): connection refused (port closed), attempt 7, 5.0 s"
    assert len(err.getvalue().splitlines()) == 1
    assert reporter.tick(100.0 + REMINDER) == 100.0 + REMINDER + STATUS_REFRESH
    assert err.getvalue().splitlines()[-1] == \
        "still waiting for db (10.0.0.11:5432): connection refused (port closed), attempt 7, 30 s"


def test_tick_never_asks_to_be_woken_in_the_past():
    for argv in (["tcp", "a:1"], ["-q", "tcp", "a:1"], ["-v", "tcp", "a:1"], ["--once", "tcp", "a:1"]):
        for notifier in (None, Statuses()):
            reporter, _, _, _ = make(*argv, notifier=notifier)
            for now in (100.0, 107.0, 200.0, 1000.0):
                assert reporter.tick(now) > now


def test_several_targets_and_the_final_word():
    statuses = Statuses()
    reporter, (db, api), _, err = make("--deadline", "60", "tcp", "10.0.0.11:5432", "--name", "db",
                                       "http", "http://u:pw@api/health", notifier=statuses)
    attempt(reporter, db, REFUSED, 101.0)
    assert statuses.texts[-1] == ("waiting for 2 of 2 (1.0 s): db (10.0.0.11:5432): connection refused "
                                  "(port closed), attempt 1; http://api/health: first attempt running")
    attempt(reporter, api, CONNECTED, 102.0)
    assert err.getvalue().splitlines()[-1] == "ready: http://api/health: connected, attempt 1, 2.0 s"
    reporter.finish(False, 160.0)
    final = "gave up after 1 min 0 s (--deadline 60): db (10.0.0.11:5432): connection refused (port closed), attempt 1"
    assert err.getvalue().splitlines()[-1] == final and statuses.texts[-1] == final
    assert "pw" not in err.getvalue() + "".join(statuses.texts)


def test_ready_says_which_targets():
    reporter, (db,), _, err = make("tcp", "10.0.0.11:5432", "--name", "db")
    attempt(reporter, db, REFUSED, 100.0)
    attempt(reporter, db, CONNECTED, 112.5)
    reporter.finish(True, 112.5)
    # the change to ready is said once, by the final line
    assert err.getvalue().splitlines()[1:] == ["ready after 12 s: db (10.0.0.11:5432)"]


def test_quiet_says_only_a_failure():
    reporter, (db,), _, err = make("-q", "tcp", "10.0.0.11:5432")
    attempt(reporter, db, REFUSED, 100.0)
    reporter.tick(200.0)
    assert err.getvalue() == ""
    reporter.finish(False, 200.0)
    assert err.getvalue().startswith("gave up after")


def test_once_prints_results_only():
    reporter, (db, api), out, err = make("--once", "--json", "tcp", "10.0.0.11:5432", "--name", "db",
                                         "tcp", "10.0.0.12:80")
    attempt(reporter, db, REFUSED, 100.0)
    reporter.finish(False, 100.0)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"target": "10.0.0.11:5432", "label": "db", "kind": "tcp", "ok": False,
                     "reason": "connection refused (port closed)", "latency_ms": 1.0, "attempts": 1}
    assert second["reason"] == "no answer yet" and second["latency_ms"] is None
    assert err.getvalue() == ""


def test_stopped():
    statuses = Statuses()
    reporter, (db,), _, err = make("tcp", "db:5432", notifier=statuses)
    attempt(reporter, db, REFUSED, 100.0)
    reporter.stopped("SIGTERM", 103.0)
    final = "stopped by SIGTERM after 3.0 s: db:5432: connection refused (port closed), attempt 1"
    assert err.getvalue().splitlines()[-1] == final and statuses.texts[-1] == final


def test_durations():
    assert [duration(s) for s in (0.04, 9.94, 12.4, 59.4, 61, 3599, 3600, 7500)] == [
        "0.0 s", "9.9 s", "12 s", "59 s", "1 min 1 s", "59 min 59 s", "1 h 0 min", "2 h 5 min"]


def test_gaps_between_attempts():
    for failures in range(1, 30):
        gaps = [_gap(failures) for _ in range(200)]
        assert all(MIN_GAP <= gap <= MAX_GAP for gap in gaps)
        assert max(gaps) - min(gaps) > 0.01  # jittered
    assert max(_gap(1) for _ in range(500)) <= MIN_GAP * 1.25  # the first retries come quickest
    assert max(_gap(10) for _ in range(500)) > MAX_GAP - 0.05  # later ones spread up to the cap


def test_probe_records_changes():
    probe = Probe(Target("tcp", "a:1"), 2.0)
    assert probe.record(REFUSED) and not probe.record(REFUSED)
    assert probe.record(TIMED_OUT) and probe.record(CONNECTED)
    assert probe.attempts == 4 and probe.passed
