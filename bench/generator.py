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

Each run is one whole process under GNU time (bench/sizes.py): its wall
time, and its own peak memory (ru_maxrss, %M; GNU time is a small C forker,
so nothing of this Python harness is inherited).

    sudo python3 bench/generator.py                  # fleet of 10,000, sizes 10 and 500
    sudo python3 bench/generator.py --fleet 1000 --sizes 10 --runs 11
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import fleet
from render import fleet_conf
from sizes import interleave, load_average, median, print_table

TMPFS = "/dev/shm"
HOST = "h0"
FLOOR = "python3 -c pass (floor)"


def generator_script() -> str:
    script = Path(sysconfig.get_path("scripts")) / "unitgen-generator"
    if not script.is_file():
        sys.exit(f"{script} is not installed: pip install -e . first")
    return str(script)


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


def fresh(out: Path):
    def prepare(name: str) -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
    return prepare


def sizes_part(sizes, runs: int, work: Path, script: str) -> None:
    out = work / "out"
    commands = {FLOOR: ([sys.executable, "-c", "pass"], None)}
    for n in sizes:
        conf_dir = work / f"conf-{n}"
        conf_dir.mkdir()
        (conf_dir / "conf.yaml").write_text(fleet_conf(n))
        commands[f"generator, {n} services"] = ([sys.executable, script, str(out)],
                                                {**os.environ, "UNITGEN_CONF_DIR": str(conf_dir)})
    print_table(interleave(commands, runs, fresh(out)), FLOOR,
                "this host's services only (bench/render.py's mix), no hosts:")


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
    cache, out = work / "cache", work / "out"
    generator = [sys.executable, script, str(out)]
    subprocess.run([sys.executable, script, "--cache", str(full)], check=True,
                   env={**os.environ, "UNITGEN_CACHE_DIR": str(cache)})
    expected = sorted(p for p in os.listdir(cache))
    alone_name = f"conf of h0's {n // (n // 10)} services only"
    commands = {
        FLOOR: ([sys.executable, "-c", "pass"], None),
        alone_name: (generator, {**os.environ, "UNITGEN_CONF_DIR": str(alone), "UNITGEN_CACHE_DIR": str(cache)}),
        "fleet conf, cache filled": (generator, {**os.environ, "UNITGEN_CONF_DIR": str(full),
                                                 "UNITGEN_CACHE_DIR": str(cache)}),
        "fleet conf, cache cold": (generator, {**os.environ, "UNITGEN_CONF_DIR": str(full),
                                               "UNITGEN_CACHE_DIR": str(work / "no-cache")}),
    }

    def check(name):
        if name == FLOOR:
            return
        units = sorted(p for p in os.listdir(out) if p.startswith("s") and p.endswith(".service"))
        assert len(units) == 10, (name, units)
        assert sorted(os.listdir(cache)) == expected

    results = interleave(commands, runs, fresh(out), check)
    print_table(results, FLOOR, f"fleet: {n} services on {n // 10} hosts, this machine h0 (10 services), one "
                                f"conf file of {(full / 'conf.yaml').stat().st_size / 1e6:.1f} MB:")
    cached = median(results, "fleet conf, cache filled")
    print(f"fleet conf with its cache filled / h0's services only: {cached / median(results, alone_name):.2f}x "
          "(median times)")


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
    print(f"{load_average()}; {sys.executable}")
    try:
        if args.sizes:
            sizes_part(args.sizes, args.runs, work, script)
        if args.fleet:
            fleet_part(args.fleet, args.runs, work, script)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
