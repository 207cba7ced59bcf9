#!/usr/bin/env python3
"""Benchmark: unitgen-generator, which systemd runs at every boot and daemon-reload.

Whole process: the installed ``unitgen-generator OUT`` (run by this
interpreter) on a conf of N services (bench/render.py's mix of exec and
script, service:, tcp and http dependencies) in UNITGEN_CONF_DIR, writing
into a fresh directory each run, on a tmpfs (/dev/shm) as systemd's
/run/systemd/generator is, against the floor ``python3 -c pass`` of
the same interpreter. Runs alternate, after one warm-up; medians; printed
as a ratio, never checked against a threshold. Bytecode is cached (in the
scratch directory, PYTHONPYCACHEPREFIX) as after a pip install, even where
PYTHONDONTWRITEBYTECODE is set: compiling unitgen from source at every run
would double the figure.

    python3 bench/generator.py                     # 10 and 500 services
    python3 bench/generator.py --sizes 10 500 2000 --runs 21
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
from pathlib import Path

from render import fleet_conf
from sizes import timed

TMPFS = "/dev/shm"


def generator_script() -> str:
    script = Path(sysconfig.get_path("scripts")) / "unitgen-generator"
    if not script.is_file():
        sys.exit(f"{script} is not installed: pip install -e . first")
    return str(script)


def measure(n: int, runs: int, work: Path) -> dict:
    """Median wall times of the generator on n services and of the floor."""
    conf_dir = work / f"conf-{n}"
    conf_dir.mkdir()
    (conf_dir / "conf.yaml").write_text(fleet_conf(n))
    os.environ["UNITGEN_CONF_DIR"] = str(conf_dir)
    script = generator_script()
    generator, floor = [], []
    for run in range(runs + 1):
        out = work / f"out-{n}-{run}"
        out.mkdir()
        times = timed([sys.executable, script, str(out)]), timed([sys.executable, "-c", "pass"])
        written = [p for p in os.listdir(out) if p.endswith(".service")]
        assert len(written) == n, (len(written), n)
        if run:  # the first run is the warm-up
            generator.append(times[0])
            floor.append(times[1])
    return {"n": n, "generator": statistics.median(generator), "floor": statistics.median(floor)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 500])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unitgen-bench-generator-", dir=TMPFS if os.path.isdir(TMPFS) else None))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    try:
        rows = [measure(n, args.runs, work) for n in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'services':>9} {'generator ms':>13} {'python -c pass ms':>18} {'ratio':>6}")
    for r in rows:
        ratio = r["generator"] / r["floor"]
        print(f"{r['n']:>9} {r['generator'] * 1e3:>13.0f} {r['floor'] * 1e3:>18.0f} {ratio:>5.1f}x")


if __name__ == "__main__":
    main()
