"""The probe's start-up, before and after a change: the probe of git REF
against the probe of this checkout, and a bare interpreter, side by side.

    python3 bench/probe_ab.py REF [--runs N]

Each of the three runs in turn, in a random order each round, N times (so
that the machine's load falls on all alike): ``main(['--once', 'tcp', '127.0.0.1:PORT'])`` of
``unitgen_probe`` imported from REF's probes/ (``git archive``), the same
from this checkout's probes/, and ``python -c pass``. Prints the medians of
CPU time (user + system, from os.wait4: steadier than wall time on a busy
machine) and of wall time, and their ratios to the bare interpreter.
"""

import argparse
import compileall
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="the git revision to compare with, e.g. main or HEAD~3")
    parser.add_argument("--runs", type=int, default=100, help="runs of each (default 100)")
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    threading.Thread(target=lambda: [listener.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    port = listener.getsockname()[1]
    with tempfile.TemporaryDirectory() as before, tempfile.TemporaryDirectory() as after:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "probes"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
        shutil.copytree(ROOT / "probes", Path(after) / "probes", ignore=shutil.ignore_patterns("__pycache__"))
        for copy in (before, after):  # both with their bytecode, whatever PYTHONDONTWRITEBYTECODE says
            compileall.compile_dir(copy, quiet=1)
        commands = {f"probe at {args.ref}": _probe(Path(before) / "probes", port),
                    "probe of this checkout": _probe(Path(after) / "probes", port),
                    "python -c pass": [sys.executable, "-c", "pass"]}
        cpu = {name: [] for name in commands}
        wall = {name: [] for name in commands}
        load = os.getloadavg()[0]
        for _ in range(args.runs):
            for name, command in random.sample(list(commands.items()), len(commands)):
                start = time.perf_counter()
                proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
                _, status, usage = os.wait4(proc.pid, 0)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(usage.ru_utime + usage.ru_stime)
                if status:
                    sys.exit(f"{name} failed: {command}")
    floor_cpu, floor_wall = statistics.median(cpu["python -c pass"]), statistics.median(wall["python -c pass"])
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average before: "
          f"{load:.2f}; medians of {args.runs} alternating runs")
    for name in commands:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"  {name:28} CPU {c * 1000:6.1f} ms ({c / floor_cpu:.3f}x)   wall {w * 1000:6.1f} ms "
              f"({w / floor_wall:.3f}x)")


def _probe(probes, port):
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(probes)!r}); "
            "from unitgen_probe.cli import main; "
            f"sys.exit(main(['--once', 'tcp', '127.0.0.1:{port}']))"]


if __name__ == "__main__":
    main()
