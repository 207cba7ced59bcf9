"""The watcher's side of optional dependencies: a service whose probe started
it without one is restarted once that dependency answers, at most once per
interval; one that started with it is left alone. The start-time state is the
probe's own STATUS=, taken here from a real probe run."""

from __future__ import annotations

from probe_helpers import ClosedPort, NotifySocket, probe_env, run_probe

from unitgen import graph
from unitgen.watch import Policy, watched_services

from test_optional import load

CONF = """
version: 1
hosts: {h1: {address: 10.0.0.1}, h2: {address: 10.0.0.2}}
services:
  cache: {host: h1, exec: [/bin/cache], listen: 6379}
  db: {host: h1, exec: [/bin/db], listen: 5432}
  web:
    host: h2
    exec: [/bin/web]
    deps:
      - {service: cache, optional: true, wait_at_most: 5s}
      - {service: db}
      - {any: [{tcp: "10.0.0.7:53"}, {tcp: "10.0.0.8:53"}], name: dns, optional: true, wait_at_most: 2s}
  plain: {host: h2, exec: [/bin/plain], deps: [{service: db}]}
"""


def watched(tmp_path, text=CONF):
    return watched_services(graph.plan(load(tmp_path, text), "h2"))


def degraded_status(tmp_path, label):
    """The STATUS= a real probe sends when it starts without ``label`` (a closed port)."""
    up, down = ClosedPort(), ClosedPort()
    up.listen()
    notify = NotifySocket(tmp_path)
    try:
        done = run_probe("--deadline", "20", "tcp", f"127.0.0.1:{up.port}", "--name", "db",
                         "tcp", f"127.0.0.1:{down.port}", "--name", label, "--wait-at-most", "0.3",
                         env=probe_env(NOTIFY_SOCKET=notify.address))
        assert done.returncode == 0
        return notify.statuses()[-1], f"{label} (127.0.0.1:{down.port})"
    finally:
        up.close(), down.close(), notify.close()


def test_only_services_with_optional_dependencies_are_watched_for_them(tmp_path):
    (web,) = watched(tmp_path)
    assert web.unit == "web.service" and web.dependencies == [] and web.health is None
    cache, dns = web.optional
    assert (cache.display, cache.need, [m.target.label for m in cache.members]) == \
        ("cache (10.0.0.1:6379)", 1, ["cache"])
    assert (dns.display, dns.need, len(dns.members)) == ("dns", 1, 2)
    assert {m.target.spec for m in web.checked()} == {"10.0.0.1:6379", "10.0.0.7:53", "10.0.0.8:53"}


def test_a_degraded_start_is_restarted_once_the_dependency_returns(tmp_path):
    status, display = degraded_status(tmp_path, "cache")
    (web,) = watched(tmp_path)
    cache = web.optional[0]
    cache.display = display  # as the probe above named it
    policy = Policy(restart_interval=60.0)
    decision = policy.decide_returned(web, cache, True, status, now=100.0)
    assert decision is not None and decision.action == "restart"
    assert decision.message == f"{display} answers; it started degraded without it (optional): " \
                               "restarting it once, to start with it"
    # the same status again within the interval: refused, and said once only
    refused = policy.decide_returned(web, cache, True, status, now=110.0)
    assert refused is not None and refused.action == "none" and "not restarting: restarted 10 s ago" in refused.message
    assert policy.decide_returned(web, cache, True, status, now=112.0) is None
    again = policy.decide_returned(web, cache, True, status, now=161.0)  # a later degraded start, past the interval
    assert again is not None and again.action == "restart"


def test_a_service_that_started_with_it_or_is_not_running_is_left_alone(tmp_path):
    status, display = degraded_status(tmp_path, "cache")
    (web,) = watched(tmp_path)
    cache, dns = web.optional
    cache.display = display
    policy = Policy(restart_interval=60.0)
    ready = f"ready after 0.1 s: {display}, db (10.0.0.1:5432)"
    assert policy.decide_returned(web, cache, True, ready, now=100.0) is None  # present at start
    assert policy.decide_returned(web, cache, False, status, now=100.0) is None  # not running
    assert policy.decide_returned(web, dns, True, status, now=100.0) is None  # degraded, but not without dns
    assert web.last_restart is None


def test_a_group_answers_with_its_need():
    from unitgen_probe import Target
    from unitgen_probe.targets import Group
    from unitgen.watch import _returning

    group = _returning(Group("dns", [Target("tcp", "10.0.0.7:53"), Target("tcp", "10.0.0.8:53")], 1, 2.0))
    assert not group.answers()
    group.members[1].answered = True
    assert group.answers()
