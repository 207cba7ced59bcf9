"""What apply's settle watch costs, and how soon it reports a unit that loops.

    python3 bench/settle.py [--rounds N]

On one bed host (tests/bed.py), each round changes the conf (a new
environment value), so that ``unitgen apply`` restarts every unit, and times
the apply, alternately with ``--settle 0`` (no watch: the behaviour before the
watch) and the default settle, side by side in one run:

* ``health``: a stand-in HTTP server with ``listen:`` (settled once it answers
  and has been up 1 s);
* ``quiet``: a process with no ``listen:``/``health:`` (watched the whole
  settle period);
* ``crash``: a process that exits after 1 s and loops: with ``--settle 0`` apply
  says "restarted" (exit 0), with the watch it says "failed" (exit 1).

Prints p50/max of each and the ratio of the p50s. Needs root (the bed).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import bed

CONF_PATH = "/etc/unitgen/conf.yaml"
SERVICES = {
    "health": f"    exec: [{sys.executable}, -m, http.server, '8001', --bind, 127.0.0.1]\n    listen: 8001\n",
    "quiet": "    exec: [/bin/sleep, '1000000']\n",
    "crash": "    exec: [/bin/sh, -c, 'sleep 1; exit 3']\n",
}


def conf(name: str, round_: int) -> str:
    return (f"version: 1\nservices:\n  {name}:\n{SERVICES[name]}"
            f"    environment: {{ROUND: '{round_}'}}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="applies per service and mode (default 5)")
    options = parser.parse_args()
    reason = bed.unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    with bed.Fleet(["st1"]) as fleet:
        host = fleet["st1"]
        fleet.boot_all()
        for name in SERVICES:
            times = {"--settle 0": [], "default settle": []}
            verdicts = {mode: set() for mode in times}
            round_ = 0
            for _ in range(options.rounds):
                for mode, extra in (("--settle 0", ["--settle", "0"]), ("default settle", [])):
                    round_ += 1
                    host.write_file(CONF_PATH, conf(name, round_))
                    begun = time.monotonic()
                    done = host.run(["unitgen", "apply", CONF_PATH, *extra], check=False, timeout=120)
                    times[mode].append(time.monotonic() - begun)
                    line = next((l for l in done.stdout.splitlines() if f"{name}.service:" in l), "?")
                    verdicts[mode].add(f"{line.split()[0]} (exit {done.returncode})")
            p50 = {mode: statistics.median(seconds) for mode, seconds in times.items()}
            for mode, seconds in times.items():
                print(f"{name:7} {mode:15} n={len(seconds)} p50={p50[mode]:.2f} s max={max(seconds):.2f} s "
                      f"apply said: {', '.join(sorted(verdicts[mode]))}")
            print(f"{name:7} default/--settle 0: {p50['default settle'] / p50['--settle 0']:.2f}x")
            host.run(["unitgen", "apply", CONF_PATH, "--settle", "0", "--no-start"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
