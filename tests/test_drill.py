"""The power-cut drill on real systemd (tests/bed.py, tests/drill.py).

The claim under test: cut the power of every host, restore it in any order,
and every service comes back healthy, in dependency order, with nobody
typing a command. The judges are the stand-ins' own logs (who started when,
and whether each dependency answered at that instant), systemd's view of
the units, and every service's health URL seen from outside the hosts.

Random orders and delays come from one seed, printed (run with -s); set
UNITGEN_DRILL_SEED to replay a run. Timings are printed, never asserted.
"""

import os
import random
import time

import pytest

import bed
import drill

TOPOLOGY = drill.DRILL_TOPOLOGY
# Starts the default start limit allows before start-limit-hit: 5 in 10 s.
DEFAULT_START_LIMIT_BURST = 5


@pytest.fixture
def rng():
    seed = int(os.environ.get("UNITGEN_DRILL_SEED") or random.randrange(1 << 32))
    print(f"\nUNITGEN_DRILL_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
def installed(make_fleet):
    """A fleet with the drill's conf rendered and enabled on every host, as a user would."""
    def make(defaults=None):
        fleet = make_fleet(TOPOLOGY.hosts)
        drill.install(fleet, TOPOLOGY, drill.conf_text(fleet, TOPOLOGY, defaults))
        return fleet
    return make


def assert_started_in_order(events, where=""):
    """No stand-in ran while a dependency was down; each started once, after its dependencies' readiness."""
    assert not drill.ordering_violations(events), "\n".join(drill.ordering_violations(events))
    for service in TOPOLOGY.services:
        count = len(drill.starts(events, service.name))
        assert count == 1, f"{service.name} started {count} times{where}"
    for dependency, dependent in TOPOLOGY.edges():
        ready = drill.ready_times(events, dependency)[0]
        started = drill.starts(events, dependent)[0]["time"]
        print(f"{dependency} ready -> {dependent} started: {started - ready:.3f} s")
        assert started > ready, f"{dependent} started before {dependency} was ready"


def assert_all_active(fleet):
    states = drill.unit_states(fleet, TOPOLOGY)
    assert {name: s["ActiveState"] for name, s in states.items()} == {s.name: "active" for s in TOPOLOGY.services}


def test_dependents_booted_first_start_only_once_their_dependencies_answer(installed, rng):
    fleet = installed()
    # The chain is db (h1) -> api (h2) -> web (h3) -> proxy (h1): boot it leaf first.
    restored = drill.power_cycle(fleet, rng, order=["h3", "h2", "h1"], delays=(1.0, 2.0))
    drill.wait_healthy(fleet, TOPOLOGY)
    events = drill.read_events(fleet, TOPOLOGY, since=restored)
    assert_started_in_order(events)
    assert_all_active(fleet)


def test_status_of_a_waiting_service_says_what_it_waits_for(installed):
    fleet = installed()
    fleet.power_cut_all()
    h3, h2 = fleet["h3"], fleet["h2"]
    h3.boot(wait=False)
    # The host of each dependency is off: connecting to it times out.
    api, db = TOPOLOGY["api"], TOPOLOGY["db"]
    waiting_web = wait_for_status(h3, "web.service",
                                  f"waiting for api (http://{h2.address}:{api.port}/health): timed out")
    h2.boot(wait=False)
    waiting_api = wait_for_status(h2, "api.service", f"waiting for db ({fleet['h1'].address}:{db.port}): timed out")
    print(f"\n{waiting_web}\n{waiting_api}")
    assert "activating (start-pre)" in h2.systemctl("status", "--no-pager", "api.service", check=False)
    fleet["h1"].boot(wait=False)
    drill.wait_healthy(fleet, TOPOLOGY)


def wait_for_status(host, unit, text):
    """Wait until ``systemctl status unit`` shows a Status: line containing text; return that line."""
    found = []

    def shows():
        status = host.systemctl("status", "--no-pager", "--full", unit, check=False)
        found[:] = [line.strip() for line in status.splitlines() if line.strip().startswith("Status:")]
        return bool(found) and text in found[0]
    bed._wait_until(shows, drill.RECOVERY_TIMEOUT, f"{unit}'s status to show {text!r}", interval=0.1)
    return found[0]


def test_a_crashed_service_comes_back_and_its_dependents_are_untouched(installed, rng):
    fleet = installed()
    drill.power_cycle(fleet, rng)
    drill.wait_healthy(fleet, TOPOLOGY)
    # db has dependents on its own host (proxy) and another (api); proxy is the forking daemon.
    for crashed, host in (("db", fleet["h1"]), ("proxy", fleet["h1"])):
        before = drill.settled_states(fleet, TOPOLOGY)
        killed_at = time.time()
        host.run(["kill", "-KILL", before[crashed]["MainPID"]])
        bed._wait_until(lambda: drill.unit_states(fleet, TOPOLOGY)[crashed]["NRestarts"] == "1",
                        drill.RECOVERY_TIMEOUT, f"{crashed} to restart", interval=0.1)
        drill.wait_healthy(fleet, TOPOLOGY)
        # a forking daemon answers before systemd has seen its parent exit: wait for systemd's "active"
        bed._wait_until(lambda: drill.unit_states(fleet, TOPOLOGY)[crashed]["ActiveState"] == "active",
                        drill.RECOVERY_TIMEOUT, f"{crashed} to be active", interval=0.1)
        after = drill.unit_states(fleet, TOPOLOGY)
        restart = drill.starts(drill.read_events(fleet, TOPOLOGY, since=killed_at), crashed)
        print(f"{crashed} killed -> exec started again: {restart[0]['time'] - killed_at:.2f} s (RestartSec=3s)")
        assert len(restart) == 1 and after[crashed]["NRestarts"] == "1"
        assert after[crashed]["MainPID"] != before[crashed]["MainPID"]
        for name in set(after) - {crashed}:
            assert (after[name]["MainPID"], after[name]["NRestarts"]) == \
                (before[name]["MainPID"], before[name]["NRestarts"]), f"{name} was touched by {crashed}'s crash"


def test_power_cuts_restored_in_random_order_recover_every_service(installed, rng):
    fleet = installed()
    for cycle in range(3):
        restored = drill.power_cycle(fleet, rng)
        drill.wait_healthy(fleet, TOPOLOGY)
        print(f"cut {cycle + 1}: every service healthy {time.time() - restored:.1f} s after the power came back")
        assert_started_in_order(drill.read_events(fleet, TOPOLOGY, since=restored), f" in cut {cycle + 1}")
        assert_all_active(fleet)
    # A second cut in the middle of recovery: some services up, others still waiting.
    # Hosts a second or more apart: whatever the order, the last one holds part
    # of the fleet back for over a second after the first service is healthy.
    restored = drill.power_cycle(fleet, rng, delays=(1.0, 2.0))
    bed._wait_until(lambda: 0 < list(drill.health(fleet, TOPOLOGY).values()).count("healthy") < len(TOPOLOGY.services),
                    drill.RECOVERY_TIMEOUT, "part of the fleet to recover", interval=0.05)
    drill.power_cycle(fleet, rng)
    drill.wait_healthy(fleet, TOPOLOGY)
    assert not drill.ordering_violations(drill.read_events(fleet, TOPOLOGY, since=restored))
    assert_all_active(fleet)


def test_a_long_outage_never_ends_in_start_limit_hit(installed):
    # A 0.5 s deadline and RestartSec=0.2 s: a start every second or so, twice the
    # default start limit (5 in 10 s) while the dependency's host is off.
    fleet = installed({"probe": {"deadline": "500ms"}, "restart_sec": "200ms"})
    fleet.power_cut_all()
    h2 = fleet["h2"]
    outage_started = time.time()
    h2.boot(wait=False)                             # api waits for db, on h1: off
    h2.wait_active("cache.service")
    seen = set()

    def restarted_enough():
        state = drill.unit_states(fleet, TOPOLOGY, ("ActiveState", "Result", "NRestarts"))["api"]
        seen.add((state["ActiveState"], state["Result"]))
        return int(state["NRestarts"]) >= 2 * DEFAULT_START_LIMIT_BURST or state["ActiveState"] == "failed"
    bed._wait_until(restarted_enough, drill.RECOVERY_TIMEOUT, "api to be restarted 10 times", interval=0.1)
    print(f"\napi restarted 10 times in {time.time() - outage_started:.1f} s; states seen: {sorted(seen)}")
    assert not {state for state in seen if state[0] == "failed" or state[1] == "start-limit-hit"}
    assert "Start request repeated too quickly" not in h2.journal("api.service")

    fleet.boot_all(["h1", "h3"], wait=False)
    drill.wait_healthy(fleet, TOPOLOGY)
    assert_started_in_order(drill.read_events(fleet, TOPOLOGY, since=outage_started))


def test_without_unitgen_the_same_boot_breaks_services(make_fleet, rng):
    """The control: the units a user would write without unitgen fail this drill,
    and the stand-ins' logs show it (so the checks above can fail)."""
    fleet = make_fleet(TOPOLOGY.hosts)
    drill.install_baseline(fleet, TOPOLOGY)
    restored = drill.power_cycle(fleet, rng, order=["h3", "h2", "h1"], delays=(1.0, 2.0))
    fleet["h1"].wait_active("db.service", timeout=drill.RECOVERY_TIMEOUT)
    bed._wait_until(lambda: drill.health(fleet, TOPOLOGY)["web"] == "HTTP status 503",
                    drill.RECOVERY_TIMEOUT, "web to serve", interval=0.1)
    violations = drill.ordering_violations(drill.read_events(fleet, TOPOLOGY, since=restored))
    print("\n" + "\n".join(violations))
    assert any(v.startswith("web@h3 ") and "while api was down" in v for v in violations)
