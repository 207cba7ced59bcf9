"""Paced release on real systemd with a real PostgreSQL 15 (a smaller drill
than the issue's 100 clients: 16 stand-in clients on two hosts).

PostgreSQL on h1 takes at most MAX_CONNECTIONS connections. Each client
(h2, h3) opens BURST connections at once at its start, holds them a moment,
and exits 1 if any is refused: a client that is thrown into a crash loop by a
thundering herd. The clients are started while the database is down (their
probes wait for it), then it comes back: every probe notices within a few
hundred milliseconds. Without accepts: they all connect at once, more than
PostgreSQL takes, and some are restarted by systemd (NRestarts > 0: the
control). With accepts: 1/s each waits its slot, and none is ever restarted.
Judged by systemd's NRestarts and the clients' own logs, never by timing.
"""

from __future__ import annotations

import os

import pytest

from paceddrill import CLIENTS, LOG_DIR, clients, herd


@pytest.fixture(autouse=True)
def real_postgres():
    if not os.path.exists("/usr/lib/postgresql/15/bin/postgres") or not os.path.exists("/usr/bin/psql"):
        if os.environ.get("UNITGEN_REQUIRE_BED") == "1":
            pytest.fail("UNITGEN_REQUIRE_BED=1 but PostgreSQL 15 is not installed")
        pytest.skip("PostgreSQL 15 not installed")


def test_without_accepts_a_returning_database_is_stormed(make_fleet):
    restarts, _, _ = herd(make_fleet(["h1", "h2", "h3"]), None)
    assert sum(restarts.values()) > 0, restarts  # the control: some clients crash-looped


def test_with_accepts_every_client_comes_up_without_a_restart(make_fleet):
    fleet = make_fleet(["h1", "h2", "h3"])
    restarts, _, _ = herd(fleet, "1/s")
    assert sum(restarts.values()) == 0, restarts
    units = [fleet[h].run(["cat", f"/etc/systemd/system/{n}.service"]).stdout for n, h in clients()]
    assert sum("--slot=" in unit for unit in units) == CLIENTS - 1  # the first in the order has slot 0
    for name, host in clients():
        log = fleet[host].run(["cat", f"{LOG_DIR}/{name}.log"]).stdout.split()
        assert log == ["start", "up"], (name, log)
