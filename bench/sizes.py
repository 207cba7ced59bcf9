"""What the benchmarks share: a whole process measured (wall time and its own
peak memory), commands run interleaved and printed as min / median / max
beside the floor, and a measurement for each --sizes value in a scratch
directory."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

GNU_TIME = "/usr/bin/time"


def timed(argv) -> float:
    """Wall time of one whole process (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measured(argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> Tuple[float, int]:
    """(wall seconds, peak KiB) of one whole process. GNU time (a small C
    forker, so nothing of this Python harness is inherited) runs it and
    reports its own ru_maxrss (%M); the wall time is taken around GNU time,
    whose fork and exec every row (the floor's too) pays alike."""
    start = time.perf_counter()
    done = subprocess.run([GNU_TIME, "-f", "%M", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stderr}")
    return elapsed, int(done.stderr.strip().splitlines()[-1])


Command = Tuple[Sequence[str], Optional[Dict[str, str]]]  # argv, environment (None: this one)


def interleave(commands: Dict[str, Command], runs: int, prepare: Optional[Callable[[str], None]] = None,
               check: Optional[Callable[[str], None]] = None) -> Dict[str, Tuple[List[float], List[int]]]:
    """{name: (wall times, peaks)} of ``runs`` rounds, each running every command
    once in turn, after one warm-up round (not counted): a slow spell of a
    loaded machine falls on every command alike. ``prepare(name)`` runs before
    each run (a fresh output directory), ``check(name)`` after it."""
    results: Dict[str, Tuple[List[float], List[int]]] = {name: ([], []) for name in commands}
    for round_ in range(runs + 1):
        for name, (argv, env) in commands.items():
            if prepare:
                prepare(name)
            elapsed, peak = measured(argv, env)
            if check:
                check(name)
            if round_:
                results[name][0].append(elapsed)
                results[name][1].append(peak)
    return results


def spread(values, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    return " / ".join(fmt.format(v * scale) for v in (min(values), statistics.median(values), max(values)))


def median(results: Dict[str, Tuple[List[float], List[int]]], name: str) -> float:
    return statistics.median(results[name][0])


def print_table(results: Dict[str, Tuple[List[float], List[int]]], floor: str, label: str = "") -> None:
    """One row per command: ms min / median / max, the ratio of its median to
    the floor's, peak MiB min / median / max."""
    base = median(results, floor)
    width = max(34, *(len(name) for name in results))
    if label:
        print(label)
    print(f"{'':{width}} {'ms min / median / max':>26} {'/ floor':>8} {'peak MiB min / median / max':>28}")
    for name, (times, peaks) in results.items():
        print(f"{name:{width}} {spread(times, 1e3):>26} {statistics.median(times) / base:>7.2f}x "
              f"{spread(peaks, 1 / 1024, '{:.1f}'):>28}")


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return f"load average at the start: {f.read().split()[0]} on {os.cpu_count()} cores"


def run_sizes(doc: str, measure: Callable[[int, int, Path], dict], prefix: str, runs: int = 5) -> List[dict]:
    """Parse --sizes/--runs, call measure(n, runs, workdir) for each size, clean up."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=runs)
    args = parser.parse_args()
    print(load_average())
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as after a pip install
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    try:
        return [measure(n, args.runs, work) for n in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
