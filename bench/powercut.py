"""The power-cut drill as figures: recovery against the ideal, per-edge latency,
and the same cuts without unitgen.

    python3 bench/powercut.py [--cuts N] [--seed S] [--max-delay SECONDS] [--each] [--probe PATH] [--no-baseline]

On three bed hosts (tests/bed.py) it installs the drill's fleet
(tests/drill.py: a chain db -> api -> web -> proxy four deep across the
hosts, plus cache beside api), as a user would, then N times: cuts the power
of every host, boots them in a random order, each a random 0..max-delay s
after the previous one, and waits until every service's health URL answers
200. It prints, per cut:

* recovery: power back (first boot) -> the last service ready;
* ideal: every service forked the instant its host is up (basic.target and
  network-online.target active: the units are ordered after both) and its
  dependencies are ready, each taking as long as it took this time from
  fork to ready (the stand-ins' own timings); overhead = recovery - ideal;

and per dependency edge the latency from "dependency ready" to "dependent's
process forked", over the cuts in which that edge was the last thing the
dependent waited for (the others say nothing about the probe). "host up ->
X" is the same for what waited for its host only.

Then the same cuts (same seed: same orders and delays) with the units a user
would write without unitgen (drill.baseline_unit: Restart=always, no probe,
systemd's default start limits): how many services end healthy, and what
the others show after waiting SETTLE seconds.

Prints figures, asserts nothing. Needs root; see DEVELOPERS.md.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import bed  # noqa: E402
import drill  # noqa: E402

TOPOLOGY = drill.DRILL_TOPOLOGY
SETTLE = 30.0
HOST_UP_TARGETS = ("basic.target", "network-online.target")


class Release(NamedTuple):
    """What a service waited for last, and how long after it the service forked.

    ``detected``: how much of that the probe took to say "ready" (its journal
    line); the rest is the probe exiting and systemd forking ExecStart. None
    for a unit without a probe.
    """

    label: str
    latency: float
    detected: Optional[float]


class Cut:
    """What one cut's logs say: when each service forked and became ready, when
    each host was up, when each probe said ready."""

    def __init__(self, restored: float, order: List[str], events: List[dict], host_up: Dict[str, float],
                 probe_ready: Dict[str, float]):
        self.restored = restored
        self.order = order
        self.host_up = host_up
        self.probe_ready = probe_ready
        self.forked: Dict[str, float] = {}
        self.ready: Dict[str, float] = {}
        for service in TOPOLOGY.services:
            run = _last_healthy_run(events, service.name)
            if run:
                self.forked[service.name], self.ready[service.name] = run

    @property
    def recovered(self) -> int:
        return len(self.ready)

    @property
    def recovery(self) -> float:
        return max(self.ready.values()) - self.restored

    def ideal(self) -> float:
        """Power back -> all ready, had each service forked the instant it could."""
        ideal_ready: Dict[str, float] = {}

        def ready(name: str) -> float:
            if name not in ideal_ready:
                service = TOPOLOGY[name]
                start = max([self.host_up[service.host]] + [ready(dep.service) for dep in service.deps])
                ideal_ready[name] = start + self.ready[name] - self.forked[name]
            return ideal_ready[name]
        return max(ready(service.name) for service in TOPOLOGY.services) - self.restored

    def releases(self) -> List[Release]:
        """What each service waited for last: the dependency that became ready
        last ("db -> api"), or its host if that came up after all of them
        ("host up -> db")."""
        released = []
        for service in TOPOLOGY.services:
            waits = [(self.host_up[service.host], f"host up -> {service.name}")]
            waits += [(self.ready[d.service], f"{d.service} -> {service.name}") for d in service.deps]
            at, label = max(waits)
            probe = self.probe_ready.get(service.name)
            released.append(Release(label, self.forked[service.name] - at, None if probe is None else probe - at))
        return released


def _last_healthy_run(events: List[dict], name: str) -> Optional[Tuple[float, float]]:
    """(forked, ready) of the service's last run that served healthy, or None."""
    serving = [e for e in events if e["service"] == name and e["event"] == "serving" and e["healthy"]]
    if not serving:
        return None
    started = [e for e in drill.starts(events, name) if e["invocation"] == serving[-1]["invocation"]]
    return started[-1]["process_started"], serving[-1]["time"]


def host_up_times(fleet: bed.Fleet) -> Dict[str, float]:
    """time.time() at which each host could first start a drill unit.

    That is when both basic.target (every service's implicit After=) and
    network-online.target (the units' After=) were active. The monotonic
    clock is the machine's in every host (no time namespace), so systemd's
    monotonic timestamps convert with this process's offset.
    """
    offset = time.time() - time.monotonic()
    up = {}
    for host in fleet:
        shown = host.systemctl("show", "-p", "ActiveEnterTimestampMonotonic", *HOST_UP_TARGETS)
        up[host.name] = max(int(line.split("=", 1)[1]) for line in shown.split()) / 1e6 + offset
    return up


def probe_ready_times(fleet: bed.Fleet, since: float) -> Dict[str, float]:
    """{service: time.time() of its probe's last "ready after" journal line since ``since``}.

    journald stamps a line when it receives it, a few ms after the probe wrote it.
    """
    services = {service.unit: service.name for service in TOPOLOGY.services}
    ready = {}
    for host in fleet:
        shown = host.run(["journalctl", "-o", "json", "--output-fields=MESSAGE,_SYSTEMD_UNIT",
                          f"--since=@{int(since)}"]).stdout
        for entry in map(json.loads, shown.splitlines()):
            unit, message = entry.get("_SYSTEMD_UNIT"), entry.get("MESSAGE")
            if unit in services and isinstance(message, str) and message.startswith("ready after"):
                ready[services[unit]] = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
    return ready


def run_unitgen(fleet: bed.Fleet, rng: random.Random, cuts: int, max_delay: float,
                probe: Optional[str]) -> List[Cut]:
    """Install the drill's conf, then cut and restore ``cuts`` times; what each cut's logs say."""
    drill.install(fleet, TOPOLOGY, drill.conf_text(fleet, TOPOLOGY), probe)
    results = []
    for _ in range(cuts):
        order = drill.random_order(fleet, rng)
        restored = drill.power_cycle(fleet, rng, order=order, delays=(0.0, max_delay))
        try:
            drill.wait_healthy(fleet, TOPOLOGY)
        except bed.BedError as error:
            print(f"  not recovered: {error}", file=sys.stderr)
        results.append(Cut(restored, order, drill.read_events(fleet, TOPOLOGY, since=restored),
                           host_up_times(fleet), probe_ready_times(fleet, restored)))
    return results


def run_baseline(fleet: bed.Fleet, rng: random.Random, cuts: int, max_delay: float) -> List[Tuple[List[str], Dict]]:
    """(order, {service: "healthy" or what it shows}) per cut, without unitgen."""
    drill.install_baseline(fleet, TOPOLOGY)
    results = []
    for _ in range(cuts):
        order = drill.random_order(fleet, rng)
        drill.power_cycle(fleet, rng, order=order, delays=(0.0, max_delay))
        deadline = time.monotonic() + SETTLE
        state = drill.health(fleet, TOPOLOGY)
        while time.monotonic() < deadline and set(state.values()) != {"healthy"}:
            time.sleep(0.5)
            state = drill.health(fleet, TOPOLOGY)
        units = drill.unit_states(fleet, TOPOLOGY)
        results.append((order, {name: why if why == "healthy" else
                                f"{why}, unit {units[name]['ActiveState']} ({units[name]['Result']})"
                                for name, why in state.items()}))
    return results


def seconds(values: List[float]) -> str:
    return f"p50 {statistics.median(values):.2f} s, max {max(values):.2f} s"


def report_unitgen(cuts: List[Cut], each: bool) -> None:
    total = len(TOPOLOGY.services)
    print(f"\nwith unitgen: {len(cuts)} cuts")
    print(f"{'cut':>3}  {'boot order':<10}  {'recovered':>9}  {'recovery':>8}  {'ideal':>6}  {'overhead':>8}"
          f"  {'ratio':>6}")
    overheads, recoveries, ratios = [], [], []
    for number, cut in enumerate(cuts, 1):
        if cut.recovered < total:
            print(f"{number:>3}  {' '.join(cut.order):<10}  {cut.recovered:>7}/{total}")
            continue
        recovery, ideal = cut.recovery, cut.ideal()
        recoveries.append(recovery)
        overheads.append(recovery - ideal)
        ratios.append(recovery / ideal)
        print(f"{number:>3}  {' '.join(cut.order):<10}  {cut.recovered:>7}/{total}  {recovery:>6.2f} s"
              f"  {ideal:>4.2f} s  {recovery - ideal:>6.2f} s  {recovery / ideal:>5.2f}x")
        if each:
            print("     " + ", ".join(f"{r.label} {r.latency:.2f} s" for r in cut.releases()))
    print(f"recovered in every cut: {sum(c.recovered == total for c in cuts)}/{len(cuts)} cuts")
    if overheads:
        print(f"recovery {seconds(recoveries)}; overhead {seconds(overheads)}; recovery / ideal p50 "
              f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x (target: <= 1.15x)")
    releases: Dict[str, List[Release]] = {}
    for cut in cuts:
        if cut.recovered == total:
            for release in cut.releases():
                releases.setdefault(release.label, []).append(release)
    print("\nwhat released each service -> its process forked, over the cuts where it was the last wait;")
    print("of which the probe took to see it (dependency ready -> the probe's \"ready after\" line):")
    for label, group in sorted(releases.items(), key=lambda item: item[0].startswith("host")):
        print(f"  {label:<18} {_release_figures(group)}")
    edges = [release for label, group in releases.items() if not label.startswith("host") for release in group]
    if edges:
        print(f"  {'every edge':<18} {_release_figures(edges)}")
    print("  target: every edge's p50 <= 0.12 s")


def _release_figures(releases: List[Release]) -> str:
    text = f"n={len(releases):<3} {seconds([r.latency for r in releases])}"
    detected = [r.detected for r in releases if r.detected is not None]
    return text + (f"; probe {seconds(detected)}" if detected else "")


def report_baseline(results: List[Tuple[List[str], Dict]]) -> None:
    total = len(TOPOLOGY.services)
    print(f"\nwithout unitgen (Restart=always, no probe, default start limits): same {len(results)} cuts, "
          f"{SETTLE:.0f} s to settle")
    for number, (order, state) in enumerate(results, 1):
        healthy = sum(value == "healthy" for value in state.values())
        broken = "; ".join(f"{name}: {why}" for name, why in state.items() if why != "healthy")
        print(f"{number:>3}  {' '.join(order):<10}  {healthy}/{total} healthy  {broken}")
    healthy = sum(value == "healthy" for _, state in results for value in state.values())
    print(f"healthy at the end: {healthy}/{total * len(results)} services, "
          f"{sum(set(state.values()) == {'healthy'} for _, state in results)}/{len(results)} cuts fully recovered")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=5, help="power cuts per series (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for orders and delays")
    parser.add_argument("--max-delay", type=float, default=1.5, help="max seconds between two boots (default 1.5)")
    parser.add_argument("--probe", help="render the units with --probe PATH (another unitgen-probe build)")
    parser.add_argument("--each", action="store_true", help="print what released each service, every cut")
    parser.add_argument("--no-baseline", action="store_true", help="skip the cuts without unitgen")
    options = parser.parse_args()
    reason = bed.unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    seed = options.seed if options.seed is not None else random.randrange(1 << 32)
    print(f"power-cut drill: hosts {' '.join(TOPOLOGY.hosts)}, {len(TOPOLOGY.services)} services, "
          f"chain db -> api -> web -> proxy (4 deep); seed {seed}; load average {os.getloadavg()[0]:.1f}")
    with bed.Fleet(TOPOLOGY.hosts) as fleet:
        report_unitgen(run_unitgen(fleet, random.Random(seed), options.cuts, options.max_delay, options.probe),
                       options.each)
    if not options.no_baseline:
        with bed.Fleet(TOPOLOGY.hosts) as fleet:
            report_baseline(run_baseline(fleet, random.Random(seed), options.cuts, options.max_delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
