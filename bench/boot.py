"""Boot-time figures of the systemd test bed (tests/bed.py).

    python3 bench/boot.py [--boots N] [--hosts K]

Boots one host N times in a row (power cut between boots), then K hosts
at once N times, and prints p50/max of each host's boot time: from the
spawn of its PID 1 to ``systemctl is-system-running --wait`` answering
"running"; and of a power cut (SIGKILL of PID 1 until nothing of the host
runs). Needs root; see DEVELOPERS.md, "Testing against real systemd".
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import bed


def figures(label: str, seconds: list) -> str:
    ordered = sorted(seconds)
    return (f"{label}: n={len(ordered)} p50={statistics.median(ordered) * 1000:.0f} ms "
            f"max={ordered[-1] * 1000:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=20, help="boots per series (default 20)")
    parser.add_argument("--hosts", type=int, default=3, help="hosts booted at once (default 3)")
    options = parser.parse_args()
    reason = bed.unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    names = [f"h{index + 1}" for index in range(options.hosts)]
    with bed.Fleet(names) as fleet:
        single = fleet[names[0]]
        cuts = []
        for _ in range(options.boots):
            single.boot()
            started = time.monotonic()
            single.power_cut()
            cuts.append(time.monotonic() - started)
        print(figures("one host, sequential boots", single.boot_seconds))
        print(figures("one host, power cut", cuts))
        started = time.monotonic()
        for _ in range(options.boots):
            fleet.boot_all()
            fleet.power_cut_all()
        parallel = [seconds for host in fleet for seconds in host.boot_seconds[-options.boots:]]
        print(figures(f"{options.hosts} hosts booted at once", parallel))
        print(f"{options.boots} cycles of boot_all + power_cut_all: {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
