#!/usr/bin/env python3
"""Benchmark: check, plan and render --host on a generated fleet.

N services on N/10 hosts, in dependency chains 10 deep whose links cross
hosts (service i waits for service i-1 on the next host), with tcp and
http readiness. Each command a whole process under GNU time, runs
interleaved (one warm-up round) beside the floor (``python3 -c pass`` of the
same interpreter): wall time min / median / max and each process's own peak
memory, all in this one run. Targets: linear growth from 1,000 to 10,000
services, and plan and check each at most 2x render of the same conf
(render --host loads and validates the whole conf, then renders one host's
ten units; check renders every host's).

    python3 bench/fleet.py
    python3 bench/fleet.py --sizes 1000 10000 --runs 7
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sizes import interleave, median, print_table, run_sizes

CHAIN = 10


def fleet_conf(n: int) -> str:
    hosts = max(1, n // 10)
    lines = ["version: 1", "hosts:"]
    lines += [f"  h{h}: {{address: 10.{h // 65536 % 256}.{h // 256 % 256}.{h % 256}}}" for h in range(hosts)]
    lines.append("services:")
    for i in range(n):
        host, slot = i % hosts, i // hosts
        lines.append(f"  s{i}:")
        lines.append(f"    host: h{host}")
        lines.append(f"    exec: [/opt/s/bin/server, --id, '{i}']")
        if i % 2:
            lines.append(f"    listen: {10000 + slot}")
        else:
            lines.append(f"    health: http://{{host}}:{10000 + slot}/healthz")
        lines.append(f"    start_time: {1 + i % 5}s")
        if i % CHAIN:
            lines.append(f"    deps: [{{service: s{i - 1}}}]")
    return "\n".join(lines) + "\n"



FLOOR = "python3 -c pass (floor)"
NAMES = ("render --host h0", "check", "plan")


def measure(n: int, runs: int, work: Path) -> dict:
    conf = work / f"fleet-{n}.yaml"
    conf.write_text(fleet_conf(n))
    unitgen = [sys.executable, "-m", "unitgen"]
    render, check, plan = NAMES
    commands = {
        FLOOR: ([sys.executable, "-c", "pass"], None),
        render: (unitgen + ["render", str(conf), "--host", "h0", "-o", str(work / "out"),
                            "--probe", "/usr/bin/unitgen-probe"], None),
        check: (unitgen + ["check", str(conf)], None),
        plan: (unitgen + ["plan", str(conf)], None),
    }
    results = interleave(commands, runs, prepare=lambda name: shutil.rmtree(work / "out", ignore_errors=True))
    print_table(results, FLOOR, f"{n} services on {max(1, n // 10)} hosts, {runs} rounds")
    return {"n": n, **{name: median(results, name) for name in NAMES}}


def main() -> None:
    rows = run_sizes(__doc__, measure, "unitgen-fleet-")
    render, check, plan = NAMES
    print(f"{'services':>9} {'hosts':>6} {'render':>8} {'check':>8} {'plan':>8} {'check/render':>13} "
          f"{'plan/render':>12}  (medians)")
    for r in rows:
        print(f"{r['n']:>9} {max(1, r['n'] // 10):>6} {r[render]:>7.3f}s {r[check]:>7.3f}s {r[plan]:>7.3f}s "
              f"{r[check] / r[render]:>12.2f}x {r[plan] / r[render]:>11.2f}x")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        scale = last["n"] / first["n"]
        growth = ", ".join(f"{name} {last[name] / first[name]:.1f}x" for name in NAMES)
        print(f"growth {first['n']} -> {last['n']} services ({scale:.0f}x): {growth}")


if __name__ == "__main__":
    main()
