"""What the size-scaling benchmarks share: timing a whole process, and
running a measurement for each --sizes value in a scratch directory."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, List


def timed(argv) -> float:
    """Wall time of one whole process (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_sizes(doc: str, measure: Callable[[int, int, Path], dict], prefix: str) -> List[dict]:
    """Parse --sizes/--runs, call measure(n, runs, workdir) for each size, clean up."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return [measure(n, args.runs, work) for n in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
