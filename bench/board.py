#!/usr/bin/env python3
"""Benchmark: `unitgen board` on a simulated fleet of 10,000 services on 1,000
loopback addresses (127.x.y.z), half of them down.

Each service listens on its own port at its host's address (listen:, a TCP
check); a child process holds listening sockets for the half that is up (a
random half, one seed) and accepts and closes every connection; nothing
listens for the other half, which refuses. Services depend on the one before
them on their host, in chains ten deep, and every tenth on a service of
another host, so the states, waves and the plan's estimate are computed on a
real graph.

Measured in this process (the board itself, as `unitgen board` runs it):
one full refresh (Board.refresh(): every check, the states, the document;
the ready set is the same at every round, so the plan's estimate is the one
computed at the first round, and its cost is printed apart),
checks per second, the process's CPU time per refresh and its peak memory
(ru_maxrss). The floor, measured side by side in the same run by the same
interpreter: one plain blocking connect_ex() to each of the same 10,000
addresses in a loop, nothing else. min/median/max over --runs refreshes.

    python3 bench/board.py                       # 10,000 services, 1,000 addresses
    python3 bench/board.py --services 10000 --hosts 1000 --runs 7 --in-flight 256
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LISTENER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for line in sys.stdin.read().split():
    address, port = line.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, int(port)))
    s.listen(128)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            while True:
                conn, _ = key.fileobj.accept()
                conn.close()
        except (BlockingIOError, InterruptedError):
            pass
"""

BASE_PORT = 20000


def address(i: int) -> str:
    """The i-th host's address: 127.10.y.z, never 127.0.0.x."""
    return f"127.10.{1 + i // 250}.{1 + i % 250}"


def conf_text(services: int, hosts: int) -> str:
    per_host = services // hosts
    lines = ["version: 1", "hosts:"]
    lines += [f"  h{i}: {{address: {address(i)}}}" for i in range(hosts)]
    lines.append("services:")
    for i in range(hosts):
        for k in range(per_host):
            deps = []
            if k:
                deps.append(f"{{service: s{i}-{k - 1}}}")
            if k == per_host - 1 and hosts > 1:
                deps.append(f"{{service: s{(i + 1) % hosts}-0}}")
            lines.append(f"  s{i}-{k}: {{host: h{i}, exec: [/bin/true], listen: {BASE_PORT + k}"
                         + (f", deps: [{', '.join(deps)}]" if deps else "") + "}")
    return "\n".join(lines) + "\n"


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def floor(endpoints) -> float:
    start = time.perf_counter()
    for host, port in endpoints:
        s = socket.socket()
        s.connect_ex((host, port))
        s.close()
    return time.perf_counter() - start


def summary(values, unit="s", scale=1.0, digits=3) -> str:
    values = [v * scale for v in values]
    return (f"min {min(values):.{digits}f} {unit}, median {statistics.median(values):.{digits}f} {unit}, "
            f"max {max(values):.{digits}f} {unit}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--interval", type=float, default=1.0, help="the refresh interval to compare with")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()

    from unitgen import board, config

    limit = raise_nofile(args.services + 1024)
    work = Path(tempfile.mkdtemp(prefix="unitgen-bench-board-"))
    conf_path = work / "conf.yaml"
    conf_path.write_text(conf_text(args.services, args.hosts))
    conf = config.load(str(conf_path))
    nodes = [(s.name, h) for s in conf.services.values() for h in s.hosts]
    rng = random.Random(args.seed)
    up = set(rng.sample(range(len(nodes)), len(nodes) // 2))
    endpoints = [(conf.hosts[h].address, conf.services[n].listen) for n, h in nodes]
    listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, preexec_fn=lambda: raise_nofile(args.services + 1024))
    try:
        assert listener.stdin is not None and listener.stdout is not None
        listener.stdin.write("\n".join(f"{a}:{p}" for i, (a, p) in enumerate(endpoints) if i in up))
        listener.stdin.close()
        if listener.stdout.readline().strip() != "ready":
            raise SystemExit("the listener process did not start")
        b = board.Board(conf, in_flight=args.in_flight)
        board.freeze()  # as `unitgen board` does (board.run)
        print(f"{len(nodes)} services on {args.hosts} addresses, {len(up)} up; in flight at most "
              f"{b.in_flight} (RLIMIT_NOFILE {limit}); load {os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}")
        walls, cpus, floors = [], [], []
        first = b.refresh()  # warm-up: imports, the first estimate
        assert first["ready"] == len(up), (first["ready"], len(up))
        for _ in range(args.runs):
            floors.append(floor(endpoints))
            cpu0, wall0 = time.process_time(), time.perf_counter()
            doc = b.refresh()
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
            assert doc["ready"] == len(up) and doc["total"] == len(nodes)
        estimates = []
        ready_now = frozenset(node for node, state in zip(b.nodes, doc["services"]) if state["state"] == "ready")
        for _ in range(3):
            cpu0 = time.process_time()
            b.graph.recovery(up=ready_now)
            estimates.append(time.process_time() - cpu0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = len(nodes)
        print(f"refresh: {summary(walls)} ({statistics.median(walls) / args.interval:.2f} of the "
              f"{args.interval:g} s interval)")
        print(f"checks per second: {summary([n / w for w in walls], unit='/s', digits=0)}")
        print(f"board CPU per refresh: {summary(cpus)} ({statistics.median(cpus) / statistics.median(walls):.0%} "
              "of a core over the refresh)")
        print(f"floor (one blocking connect_ex per service, one thread): {summary(floors)}")
        print(f"ratio refresh / floor: {summary([w / f for w, f in zip(walls, floors)], unit='x', digits=2)}")
        print(f"peak memory of this process (ru_maxrss): {peak:.0f} MiB")
        print(f"the plan's estimate, computed again when the ready set changes (at most every "
              f"{board.ESTIMATE_SHARE}x its cost): {summary(estimates)} CPU")
        print(f"root causes: {len(doc['root_causes'])}, waves: {len(doc['waves'])}, "
              f"estimate left: {doc['estimate_left']:.1f} s")
    finally:
        listener.kill()
        listener.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
