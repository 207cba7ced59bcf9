#!/usr/bin/env python3
"""Benchmark: `unitgen render` of N services, whole process, against the floor.

The floor is a plain Python process of the same interpreter that writes the
same N unit files (same names, same bytes) in a loop: what any tool must pay
to produce them. Runs interleaved (one warm-up round), each command a whole
process under GNU time: wall time min / median / max, the ratio of the
medians, and each process's own peak memory (its ru_maxrss); all in this one
run. Targets: render <= 3x the floor at 10,000 services, and linear growth
from 1,000 to 10,000.

    python3 bench/render.py            # 1,000 and 10,000 services, 5 rounds
    python3 bench/render.py --sizes 1000 5000 10000 --runs 7
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sizes import interleave, median, print_table, run_sizes

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
    for block in listing.split("\n### "):
        name, _, text = block.removeprefix("### ").partition("\n")
        units[name] = text if text.endswith("\n") else text + "\n"
    texts = work / f"units-{n}.json"
    texts.write_text(json.dumps(units))
    out = work / "out"
    render, floor = f"unitgen render, {n} services", f"floor: python3 writing the {n} files"
    commands = {
        floor: ([sys.executable, "-c", FLOOR, str(texts), str(out)], None),
        render: (unitgen + ["render", str(conf), "-o", str(out), "--probe", "/usr/bin/unitgen-probe"], None),
    }

    def prepare(name: str) -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()

    def check(name: str) -> None:
        written = {p: (out / p).read_text() for p in os.listdir(out) if p.endswith(".service")}
        assert written == units, (name, len(written), n)  # the same files, byte for byte

    results = interleave(commands, runs, prepare, check)
    print_table(results, floor, f"{n} services, {runs} rounds")
    return {"n": n, "render": median(results, render), "floor": median(results, floor)}


def main() -> None:
    rows = run_sizes(__doc__, measure, "unitgen-bench-")
    print(f"{'services':>9} {'render s':>9} {'floor s':>8} {'ratio':>6} {'render µs/service':>18}  (medians)")
    for r in rows:
        print(f"{r['n']:>9} {r['render']:>9.3f} {r['floor']:>8.3f} {r['render'] / r['floor']:>5.2f}x "
              f"{r['render'] / r['n'] * 1e6:>18.0f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"growth {first['n']} -> {last['n']} services: render {last['render'] / first['render']:.2f}x, "
              f"floor {last['floor'] / first['floor']:.2f}x the time for {last['n'] / first['n']:.0f}x the services "
              f"(linear: at most {last['n'] / first['n']:.0f}x)")


if __name__ == "__main__":
    main()
