"""The probe in network namespaces we make (and remove): a host that drops
SYNs, names that start to resolve or move, and a DNS server that never
answers. Every address used lives inside these namespaces."""

import json
import subprocess

import pytest
from probe_helpers import DroppingRoute, Netns, ProbeProcess, need_netns, run_probe, stop, wait_until

PORT = 5432
FILES_ONLY = "hosts: files\n"
DROPPED_DNS = f"nameserver {DroppingRoute.DROPPED}\noptions timeout:5 attempts:1\n"


@pytest.fixture
def route():
    need_netns()
    with DroppingRoute(probe_etc={"nsswitch.conf": "hosts: files dns\n", "hosts": "",
                                  "resolv.conf": DROPPED_DNS}) as made:
        yield made


def test_a_host_that_drops_syns_times_out_at_every_attempt(route):
    done = run_probe("--deadline", "2", "--timeout", "0.4", "--json", "tcp", f"{route.DROPPED}:{PORT}",
                     netns=route.probe_ns.name)
    assert done.returncode == 1
    (result,) = (json.loads(line) for line in done.stdout.splitlines())
    words = result["reason"]  # the last attempt's timeout is cut to what the deadline leaves it
    assert words.startswith("timed out after ") and words.endswith(" s (host down or SYN dropped)"), words
    assert 0 < float(words.split()[3]) <= 0.4, words
    assert result["attempts"] >= 2  # each attempt timed out on its own, and it kept going
    assert "gave up after" in done.stderr


def test_a_host_that_comes_back_is_noticed(route):
    route.host_ns.serve("0.0.0.0", PORT)
    target = f"{route.DROPPED}:{PORT}"
    with ProbeProcess("tcp", target, "--timeout", "0.4", netns=route.probe_ns.name) as probe:
        probe.wait_for(f"waiting for {target}: timed out after 0.4 s (host down or SYN dropped)")
        route.bring_up()
        assert probe.finish() == 0
    assert "ready after" in probe.stderr


def _syns_in_flight(netns, address):
    """Local ports of the connections in SYN-SENT to *address* in *netns* (ss's numbers)."""
    done = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Htn", "state", "syn-sent", "dst", address],
                          capture_output=True, text=True, check=True)
    return {line.split()[-2].rpartition(":")[2] for line in done.stdout.splitlines() if line.strip()}


def test_a_host_that_drops_syns_gets_a_fresh_syn_during_an_attempt(route):
    """The kernel retransmits a SYN 1, 3, 7, 15 s after the first: one attempt
    of 30 s would see a host that comes back only that late. The probe keeps
    sending fresh SYNs (new connections, the old ones still waiting) within
    the attempt, and the one that meets the host back is accepted."""
    route.host_ns.serve("0.0.0.0", PORT)
    target = f"{route.DROPPED}:{PORT}"
    with ProbeProcess("--json", "tcp", target, "--timeout", "30", netns=route.probe_ns.name) as probe:
        seen = set()

        def three_syns():
            seen.update(_syns_in_flight(route.probe_ns.name, route.DROPPED))
            return len(seen) >= 3

        wait_until(three_syns, timeout=15, interval=0.05, what="three connections in SYN-SENT from one attempt")
        route.bring_up()
        assert probe.finish() == 0
    (result,) = (json.loads(line) for line in probe.stdout.splitlines())
    assert result["ok"] and result["attempts"] == 1, result  # seen by the attempt it came back in


# Two addresses in one prefix, so that getaddrinfo keeps the hosts file's
# order (RFC 6724 would put an address on a nearer network first).
SECOND = "198.51.100.8"


def test_every_address_of_a_name_is_tried(route):
    route.bring_up(SECOND)
    route.host_ns.serve("0.0.0.0", PORT)
    route.probe_ns.write_etc("hosts", f"{route.DROPPED} db.test\n{SECOND} db.test\n")
    done = run_probe("--once", "tcp", f"db.test:{PORT}", netns=route.probe_ns.name)
    # the first address drops SYNs; the second is tried before the first times out
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith(f"db.test:{PORT}: connected to {SECOND}")


def test_all_addresses_failing_are_named(route):
    route.bring_up(SECOND)  # up, but nothing listens
    route.probe_ns.write_etc("hosts", f"{route.DROPPED} db.test\n{SECOND} db.test\n")
    done = run_probe("--once", "tcp", f"db.test:{PORT}", "--timeout", "0.6", netns=route.probe_ns.name)
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith(
        f"timed out after 0.6 s (host down or SYN dropped) at {route.DROPPED}; "
        f"connection refused (port closed) at {SECOND}")


def test_a_hung_dns_server_costs_one_attempt_timeout(route):
    done = run_probe("--once", "dns", "db.test", "--timeout", "0.5", netns=route.probe_ns.name)
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith("db.test: timed out after 0.5 s resolving the name (DNS server not answering)")


def test_sigterm_while_the_resolver_hangs(route):
    with ProbeProcess("tcp", f"db.test:{PORT}", "--timeout", "0.5", netns=route.probe_ns.name) as probe:
        probe.wait_for("resolving the name (DNS server not answering)")  # getaddrinfo is still blocked
        stop(probe.proc)
        assert probe.finish() == 143
    assert "stopped by SIGTERM" in probe.stderr


@pytest.fixture
def files_only():
    with Netns(etc={"nsswitch.conf": FILES_ONLY, "hosts": "127.0.0.1 localhost\n"}) as ns:
        yield ns


def test_a_name_that_does_not_resolve_then_does(files_only):
    with ProbeProcess("dns", "db.test", netns=files_only.name) as probe:
        probe.wait_for("waiting for db.test: no such host")
        files_only.write_etc("hosts", "127.0.0.1 localhost\n127.0.0.5 db.test\n")
        assert probe.finish() == 0
    assert "ready after" in probe.stderr


def test_a_name_is_resolved_again_at_every_attempt(files_only):
    files_only.serve("127.0.0.3", PORT)
    files_only.write_etc("hosts", "127.0.0.2 db.test\n")  # nothing listens there
    with ProbeProcess("-v", "tcp", f"db.test:{PORT}", netns=files_only.name) as probe:
        probe.wait_for("connection refused (port closed) at 127.0.0.2")
        files_only.write_etc("hosts", "127.0.0.3 db.test\n")  # the host came back elsewhere
        assert probe.finish() == 0
    assert "connected to 127.0.0.3" in probe.stderr
