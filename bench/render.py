#!/usr/bin/env python3
"""Benchmark: `unitgen render` of N services, whole process, against the floor.

The floor is a plain Python process that writes the same N unit files (same
names, same bytes) in a loop: what any tool must pay to produce them. Each
figure is the median of several alternating runs, measured in this one run,
and printed as a ratio (target: render <= 3x the floor at 10,000 services,
and linear growth from 1,000 to 10,000).

    python3 bench/render.py            # 1,000 and 10,000 services
    python3 bench/render.py --sizes 1000 5000 10000 --runs 5
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from sizes import run_sizes, timed

FLOOR = """
import json, os, sys
units = json.load(open(sys.argv[1]))
out = sys.argv[2]
for name, text in units.items():
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
"""


def fleet_conf(n: int) -> str:
    """n services on one host: a realistic mix of exec/script, env and dependencies."""
    lines = ["version: 1", "defaults:", "  user: app", "  environment: {LOG: json}", "services:"]
    for i in range(n):
        lines.append(f"  svc{i}:")
        if i % 2:
            lines.append(f"    exec: [/opt/svc/bin/server, --port, '{10000 + i % 50000}', --name, svc{i}]")
        else:
            lines.append(f"    script: exec /opt/svc/bin/server --name svc{i} >>/var/log/svc{i}.log 2>&1")
        lines.append(f"    listen: {10000 + i % 50000}")
        deps = []
        if i % 10:
            deps.append(f"{{service: svc{i - 1}}}")
        if i % 3 == 0:
            deps.append(f"{{tcp: 'db{i % 7}.internal:5432', name: db}}")
        if i % 5 == 0:
            deps.append(f"{{http: 'http://cache{i % 4}.internal/health', status: [200, 204]}}")
        if deps:
            lines.append(f"    deps: [{', '.join(deps)}]")
    return "\n".join(lines) + "\n"


def measure(n: int, runs: int, work: Path) -> dict:
    conf = work / f"conf-{n}.yaml"
    conf.write_text(fleet_conf(n))
    unitgen = [sys.executable, "-m", "unitgen"]
    # The exact files render writes, for the floor to write too.
    listing = subprocess.run(unitgen + ["render", str(conf), "--probe", "/usr/bin/unitgen-probe"],
                             check=True, capture_output=True, text=True).stdout
    units = {}
    for block in listing.split("\n### ")[0:]:
        name, _, text = block.removeprefix("### ").partition("\n")
        units[name] = text if text.endswith("\n") else text + "\n"
    texts = work / f"units-{n}.json"
    texts.write_text(json.dumps(units))
    render_times, floor_times = [], []
    for _ in range(runs):
        for kind in ("render", "floor"):
            out = work / f"out-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            if kind == "render":
                render_times.append(timed(unitgen + ["render", str(conf), "-o", str(out),
                                                     "--probe", "/usr/bin/unitgen-probe"]))
                written = sorted(p for p in os.listdir(out) if p.endswith(".service"))
                assert len(written) == n, (len(written), n)
            else:
                floor_times.append(timed([sys.executable, "-c", FLOOR, str(texts), str(out)]))
    return {"n": n, "render": statistics.median(render_times), "floor": statistics.median(floor_times)}


def main() -> None:
    rows = run_sizes(__doc__, measure, "unitgen-bench-")
    print(f"{'services':>9} {'render s':>9} {'floor s':>8} {'ratio':>6} {'render µs/service':>18}")
    for r in rows:
        print(f"{r['n']:>9} {r['render']:>9.3f} {r['floor']:>8.3f} {r['render'] / r['floor']:>5.2f}x "
              f"{r['render'] / r['n'] * 1e6:>18.0f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last["render"] / first["render"]
        print(f"growth {first['n']} -> {last['n']} services: {growth:.2f}x time for "
              f"{last['n'] / first['n']:.0f}x services (linear = {last['n'] / first['n']:.0f}x)")


if __name__ == "__main__":
    main()
