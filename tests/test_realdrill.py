"""Real daemons in Autoheal's own format on real systemd: every entry runs,
stays up, and comes back after power cuts, a single-host cut and a SIGKILL of
each daemon, in dependency order, without looping (tests/realdrill.py).

PostgreSQL 15, redis-server and nginx are Debian's, on the machine; the app is
tests/standins/drillapp.py. Random restore orders come from one seed, printed
(run with -s); UNITGEN_DRILL_SEED replays a run. Times are printed, never asserted.
"""

import os
import random
import time

import pytest

import realdrill

POWER_CUTS = 3
# After a power cut no unit should need a restart; after a SIGKILL, one.
MOST_RESTARTS = 2


REAL_SOFTWARE = ("/usr/lib/postgresql/15/bin/postgres", "/usr/bin/pg_ctlcluster", "/usr/bin/redis-server",
                 "/usr/sbin/nginx")


@pytest.fixture(autouse=True)
def real_software():
    """Debian's PostgreSQL 15, redis-server and nginx (.ci/run installs them):
    without them the drill cannot run; with UNITGEN_REQUIRE_BED=1 that fails."""
    missing = [path for path in REAL_SOFTWARE if not os.path.exists(path)]
    if missing:
        if os.environ.get("UNITGEN_REQUIRE_BED") == "1":
            pytest.fail(f"UNITGEN_REQUIRE_BED=1 but not installed: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture
def rng():
    seed = int(os.environ.get("UNITGEN_DRILL_SEED") or random.randrange(1 << 32))
    print(f"\nUNITGEN_DRILL_SEED={seed}")
    return random.Random(seed)


def settled(fleet, since, what):
    """Healthy end to end, every unit active, none looping, none started before its dependencies."""
    healthy = realdrill.wait_settled(fleet)
    restarts = {name: int(s["NRestarts"]) for name, s in realdrill.unit_states(fleet).items()}
    waits = [e["waited"] for e in realdrill.app_events(fleet, since) if e["event"] == "start" and e["waited"] > 0.05]
    print(f"{what}: healthy {healthy - since:.2f} s after; NRestarts {restarts}"
          + (f"; the app waited for PostgreSQL 'starting up' {waits} s" if waits else ""))
    assert realdrill.not_active(fleet) == {}, realdrill.diagnosis(fleet)
    assert realdrill.looping(fleet, MOST_RESTARTS) == []
    assert realdrill.judge(fleet, since) == []


def drill(fleet, rng):
    start = time.time()
    realdrill.start_all(fleet)
    settled(fleet, start, "first start")
    for round_ in range(POWER_CUTS):
        fleet.power_cut_all()
        order = list(realdrill.HOSTS)
        rng.shuffle(order)
        gaps = [0.0] + [rng.uniform(0.0, 1.5) for _ in order[1:]]
        restored = time.time()
        fleet.boot_all(order, gaps, wait=False)
        settled(fleet, restored, f"power cut {round_ + 1}, restored {order} with gaps {[round(g, 2) for g in gaps]}")
    db_host = fleet[realdrill.PLACEMENT["db"]]
    db_host.power_cut()
    restored = time.time()
    db_host.boot(wait=False)
    settled(fleet, restored, f"{db_host.name} alone cut and restored")
    for service, host_name in realdrill.PLACEMENT.items():
        host = fleet[host_name]
        unit = f"{service}.service"
        old = realdrill.main_pid(host, unit)
        assert old > 0, realdrill.diagnosis(fleet)
        killed = time.time()
        host.run(["kill", "-KILL", str(old)])
        deadline = time.monotonic() + realdrill.RECOVERY_TIMEOUT
        while realdrill.main_pid(host, unit) in (0, old) and time.monotonic() < deadline:
            time.sleep(0.1)
        settled(fleet, killed, f"SIGKILL of {service} (PID {old})")
        assert realdrill.unit_states(fleet)[service]["NRestarts"] == "1", host.journal()[-6000:]


def test_autoheal_format_real_daemons(make_fleet, rng):
    fleet = make_fleet(realdrill.HOSTS)
    realdrill.prepare(fleet)
    realdrill.install_autoheal(fleet)
    # the seed's shape: a dependency on 127.0.0.1:PORT of a service of the same file orders the units
    assert "After=app.service" in fleet["h2"].read_file(f"{realdrill.UNIT_DIR}/web.service").splitlines()
    drill(fleet, rng)


def test_native_format_real_daemons(make_fleet, rng):
    fleet = make_fleet(realdrill.HOSTS)
    realdrill.prepare(fleet)
    realdrill.install_native(fleet)
    drill(fleet, rng)
