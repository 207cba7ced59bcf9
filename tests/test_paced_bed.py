"""Paced release on real systemd, through a full power cut, against a real
PostgreSQL 15 (issue 16's second proof; tests/paceddrill.py).

PostgreSQL on h1 takes at most MAX_CONNECTIONS connections; 100 stand-in
clients on h2, h3 and h4 each open BURST connections with psql at their start
and exit 1 if one is refused (a client thrown into a crash loop by a thundering
herd). The fleet is brought up, every host's power is cut, and all four boot
again: every client's probe sees the database return within a moment.
Without accepts: (the control) they all connect at once, PostgreSQL refuses
some with SQLSTATE 53300 and systemd restarts their clients. With accepts:
each waits its slot: none is refused, none restarted. Judged by systemd's
NRestarts and ActiveState, the clients' own logs and the SQLSTATEs in
PostgreSQL's log, never by timing.
"""

from __future__ import annotations

import os

import pytest

from paceddrill import CLIENTS, RATE, clients, herd


@pytest.fixture(autouse=True)
def real_postgres():
    if not os.path.exists("/usr/lib/postgresql/15/bin/postgres") or not os.path.exists("/usr/bin/psql"):
        if os.environ.get("UNITGEN_REQUIRE_BED") == "1":
            pytest.fail("UNITGEN_REQUIRE_BED=1 but PostgreSQL 15 is not installed")
        pytest.skip("PostgreSQL 15 not installed")


def test_without_accepts_a_database_back_from_a_power_cut_is_stormed(make_fleet):
    run = herd(make_fleet(["h1", "h2", "h3", "h4"]), None)
    # the control: the herd is real, PostgreSQL refused connections for too many clients
    # and some clients crash-looped before every one came up
    assert run.backends.too_many > 0, run.pg_log[-2000:]
    assert sum(run.restarts.values()) > 0, run.restarts
    assert set(run.states.values()) == {"active"}, run.states


def test_with_accepts_every_client_is_back_from_a_power_cut_without_a_refusal(make_fleet):
    run = herd(make_fleet(["h1", "h2", "h3", "h4"]), RATE)
    assert run.backends.too_many == 0, run.pg_log[-2000:]
    assert run.restarts == {name: 0 for name, _ in clients()}
    assert run.states == {name: "active" for name, _ in clients()}
    for name, _ in clients():
        assert [event for event, _ in run.events[name]] == ["start", "up"], (name, run.events[name])
    # every client has a slot of its own, 1/rate apart, the first at 0
    rate = float(RATE.split("/")[0])
    assert sorted(round(slot * rate) for slot in run.slots.values()) == list(range(CLIENTS))
