#!/usr/bin/env python3
"""Benchmark: ``systemctl daemon-reload`` on a real systemd 252 host with the fleet conf.

One bed host named h0 (tests/bed.py; root), booted with no conf; then
bench/fleet.py's conf of N services on N/10 hosts (the same file on every
host) in /etc/unitgen, the generator linked by ``unitgen install-generator``
and its cache filled as unitgen-generator-cache.service fills it
(``unitgen-generator --cache /etc/unitgen``). Reloads alternate: with the
generator, and with its link removed (the same host without unitgen);
each timed inside the host (``date +%s%N`` around ``systemctl
daemon-reload``), min / median / max; ratio of the medians. In the same
rounds, inside the host: the generator alone with its cache filled, as
systemd runs it, and ``python3 -c pass`` (the floor), each under GNU time
for its own peak memory. A reload with the cache cold (the conf just
edited) is timed too, for scale.

    sudo python3 bench/reload.py
    sudo python3 bench/reload.py --services 10000 --runs 11
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import bed  # noqa: E402
import fleet  # noqa: E402
from sizes import spread  # noqa: E402

LINK = "/etc/systemd/system-generators/unitgen"
TIMED = 's=$(date +%s%N); systemctl daemon-reload; e=$(date +%s%N); echo $(( (e - s) / 1000 ))'
# one process under GNU time, in the host: "MICROSECONDS PEAK_KIB"
PROCESS = ('d=$(mktemp -d); s=$(date +%s%N); /usr/bin/time -o "$d.peak" -f %M "$@" "$d" >/dev/null 2>&1; '
           'e=$(date +%s%N); echo $(( (e - s) / 1000 )) $(cat "$d.peak"); rm -rf "$d" "$d.peak"')


def reload_ms(host) -> float:
    return int(host.run(["sh", "-c", TIMED], timeout=300).stdout.split()[-1]) / 1000


def process(host, argv) -> tuple:
    """(ms, peak KiB) of one process run in the host, its output directory a fresh one."""
    micros, peak = host.run(["sh", "-c", PROCESS, "sh", *argv], timeout=300).stdout.split()
    return int(micros) / 1000, int(peak)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    reason = bed.unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    print(f"daemon-reload on bed host h0, fleet conf of {options.services} services on {options.services // 10} "
          f"hosts; load average {os.getloadavg()[0]:.1f}")
    with bed.Fleet(["h0"]) as hosts:
        host = hosts["h0"]
        host.boot()
        host.run(["unitgen", "install-generator"])
        link = host.run(["readlink", LINK]).stdout.strip()
        host.write_file("/etc/unitgen/conf.yaml", fleet.fleet_conf(options.services))
        host.run(["unitgen-generator", "--cache", "/etc/unitgen"], timeout=600)
        reload_ms(host)  # the first reload with the conf: the cache units appear (nothing starts)
        times = {"with unitgen (cache filled)": [], "without unitgen (no generator link)": []}
        alone = {"the generator alone (cache filled)": ([], []), "python3 -c pass (floor)": ([], [])}
        python = host.run(["sh", "-c", f"head -1 {link} | cut -c3-"]).stdout.strip()  # the generator's interpreter
        for _ in range(options.runs):
            times["with unitgen (cache filled)"].append(reload_ms(host))
            host.run(["rm", LINK])
            times["without unitgen (no generator link)"].append(reload_ms(host))
            host.run(["ln", "-s", link, LINK])
            for name, argv in (("the generator alone (cache filled)", [link]),
                               ("python3 -c pass (floor)", [python, "-c", "pass"])):
                ms, peak = process(host, argv)
                alone[name][0].append(ms)
                alone[name][1].append(peak)
        host.run(["sed", "-i", "1s/$/ # edited/", "/etc/unitgen/conf.yaml"])
        cold = reload_ms(host)
        units = host.run(["sh", "-c", "ls /run/systemd/generator | grep -c '^s[0-9]*\\.service$'"]).stdout.strip()
    with_, without = times.values()
    print(f"{'':40} {'ms min / median / max':>24}")
    for name, values in times.items():
        print(f"{name:40} {spread(values):>24}")
    print(f"ratio of the medians: {statistics.median(with_) / statistics.median(without):.2f}x (target <= 1.5x); "
          f"{units} units generated for h0")
    print(f"one reload with the cache cold (conf just edited): {cold:.0f} ms")
    print(f"{'in the host, each under GNU time':40} {'ms min / median / max':>24} {'peak MiB min / median / max':>28}")
    for name, (values, peaks) in alone.items():
        print(f"{name:40} {spread(values):>24} {spread(peaks, 1 / 1024, '{:.1f}'):>28}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
