#!/usr/bin/env python3
"""Benchmark: unitgen-generator, which systemd runs at every boot and daemon-reload.

Whole process: the installed ``unitgen-generator OUT`` (run by this
interpreter), writing into a fresh directory each run on a tmpfs
(/dev/shm, as systemd's /run/systemd/generator is), against the floor
``python3 -c pass`` of the same interpreter. Bytecode is cached (in the
scratch directory, PYTHONPYCACHEPREFIX) as after a pip install, even where
PYTHONDONTWRITEBYTECODE is set.

Two parts, runs interleaved (one warm-up each), min / median / max:

* ``--sizes``: N services, all on this host (bench/render.py's mix).
* the fleet (``--fleet N``, default 10,000 services on 1,000 hosts,
  bench/fleet.py's conf, the same file on every host): this machine is
  host h0 (a private UTS namespace, so root only; skipped otherwise), and
  the generator runs with its cache cold (computed from the conf, as at the
  first run after a change), with its cache filled (``unitgen-generator
  --cache``, as unitgen-generator-cache.service does), and on a conf holding
  only h0's services (same hosts:, the same ten services without their
  dependencies on other hosts).

Peak memory is the measured process's own: its ru_maxrss from wait4() as
GNU time reports it (%M; a small C forker, so nothing of this Python
harness is inherited), in separate runs from the timed ones.

    sudo python3 bench/generator.py                  # fleet of 10,000, sizes 10 and 500
    sudo python3 bench/generator.py --fleet 1000 --sizes 10 --runs 11
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import fleet
from render import fleet_conf
from sizes import timed

TMPFS = "/dev/shm"
GNU_TIME = "/usr/bin/time"
HOST = "h0"


def generator_script() -> str:
    script = Path(sysconfig.get_path("scripts")) / "unitgen-generator"
    if not script.is_file():
        sys.exit(f"{script} is not installed: pip install -e . first")
    return str(script)


def peak_kib(argv) -> int:
    """ru_maxrss of the process itself, from GNU time (a small C forker)."""
    done = subprocess.run([GNU_TIME, "-f", "%M", *argv], check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    return int(done.stderr.strip().splitlines()[-1])


def host_only_conf(n: int, host: int = 0) -> str:
    """bench/fleet.py's conf of n services, keeping host ``host``'s services only
    (without their dependencies, which are services of other hosts)."""
    lines, keep, services = [], True, False
    for line in fleet.fleet_conf(n).splitlines():
        if line == "services:":
            services = True
        elif services and line.startswith("  s") and line.endswith(":"):
            keep = int(line[3:-1]) % max(1, n // 10) == host
        elif services and (not keep or line.startswith("    deps:")):
            continue
        if keep or not services:
            lines.append(line)
    return "\n".join(lines) + "\n"


def interleave(commands: dict, runs: int, work: Path, check=None) -> dict:
    """{name: (times, peaks)} of alternating runs of each command (after one warm-up)."""
    times = {name: [] for name in commands}
    peaks = {name: [] for name in commands}
    for run in range(runs + 1):
        for name, (argv, env) in commands.items():
            os.environ.update(env)
            for measure, into in ((timed, times), (peak_kib, peaks)):
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                value = measure([a if a != "OUT" else str(out) for a in argv])
                if check:
                    check(name, out)
                if run:
                    into[name].append(value)
    return {name: (times[name], peaks[name]) for name in commands}


def spread(values, scale=1.0, fmt="{:.0f}") -> str:
    return " / ".join(fmt.format(v * scale) for v in (min(values), statistics.median(values), max(values)))


def print_rows(results: dict, floor: str) -> None:
    base = statistics.median(results[floor][0])
    print(f"{'':34} {'ms min / median / max':>24} {'ratio':>7} {'peak MiB min / median / max':>30}")
    for name, (times, peaks) in results.items():
        print(f"{name:34} {spread(times, 1e3):>24} {statistics.median(times) / base:>6.2f}x "
              f"{spread(peaks, 1 / 1024, '{:.1f}'):>30}")


def sizes_part(sizes, runs: int, work: Path, script: str) -> None:
    print("this host's services only (bench/render.py's mix), no hosts:")
    commands = {"python3 -c pass (floor)": ([sys.executable, "-c", "pass"], {})}
    for n in sizes:
        conf_dir = work / f"conf-{n}"
        conf_dir.mkdir()
        (conf_dir / "conf.yaml").write_text(fleet_conf(n))
        commands[f"generator, {n} services"] = ([sys.executable, script, "OUT"], {"UNITGEN_CONF_DIR": str(conf_dir)})
    print_rows(interleave(commands, runs, work), "python3 -c pass (floor)")


def fleet_part(n: int, runs: int, work: Path, script: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x04000000) != 0:  # CLONE_NEWUTS: this machine becomes h0 for this process only
        print(f"fleet: skipped (a private UTS namespace needs root: {os.strerror(ctypes.get_errno())})")
        return
    socket.sethostname(HOST)
    full, alone = work / "fleet", work / "alone"
    for directory, text in ((full, fleet.fleet_conf(n)), (alone, host_only_conf(n))):
        directory.mkdir()
        (directory / "conf.yaml").write_text(text)
    cache = work / "cache"
    env = {"UNITGEN_CONF_DIR": str(full)}
    generator = [sys.executable, script, "OUT"]
    os.environ.update(env, UNITGEN_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, script, "--cache", str(full)], check=True)
    expected = sorted(p for p in os.listdir(cache))
    commands = {
        "python3 -c pass (floor)": ([sys.executable, "-c", "pass"], {}),
        f"conf of h0's {n // (n // 10)} services only": (generator, {"UNITGEN_CONF_DIR": str(alone),
                                                                    "UNITGEN_CACHE_DIR": str(cache)}),
        f"fleet conf, cache filled": (generator, {**env, "UNITGEN_CACHE_DIR": str(cache)}),
        f"fleet conf, cache cold": (generator, {**env, "UNITGEN_CACHE_DIR": str(work / "no-cache")}),
    }

    def check(name, out):
        if "floor" in name:
            return
        units = sorted(p for p in os.listdir(out) if p.startswith("s") and p.endswith(".service"))
        assert len(units) == 10, (name, units)
        assert sorted(os.listdir(cache)) == expected

    print(f"fleet: {n} services on {n // 10} hosts, this machine h0 (10 services), one conf file of "
          f"{(full / 'conf.yaml').stat().st_size / 1e6:.1f} MB:")
    results = interleave(commands, runs, work, check)
    print_rows(results, "python3 -c pass (floor)")
    cached = statistics.median(results["fleet conf, cache filled"][0])
    alone_t = statistics.median(results[f"conf of h0's {n // (n // 10)} services only"][0])
    print(f"fleet conf with its cache filled / h0's services only: {cached / alone_t:.2f}x (median times)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 500])
    parser.add_argument("--fleet", type=int, default=10000, help="services in the fleet conf (0: skip)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    script = generator_script()
    work = Path(tempfile.mkdtemp(prefix="unitgen-bench-generator-", dir=TMPFS if os.path.isdir(TMPFS) else None))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    with open("/proc/loadavg") as f:
        print(f"load average at the start: {f.read().split()[0]} on {os.cpu_count()} cores; {sys.executable}")
    try:
        if args.sizes:
            sizes_part(args.sizes, args.runs, work, script)
        if args.fleet:
            fleet_part(args.fleet, args.runs, work, script)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
