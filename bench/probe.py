"""Figures of unitgen-probe: start-up cost, notice latency, cost of waiting.

    python3 bench/probe.py [--runs N] [--trials N] [--probes N] [--window S]

1. Cold start: the installed ``unitgen-probe tcp 127.0.0.1:PORT --once``
   against an open port, whole process, against a bare ``python -c pass``
   of the same interpreter; runs alternate; medians of wall time and of
   peak RSS (os.wait4's ru_maxrss).
2. Notice latency: a probe waits for a refused port; at a random moment
   the port starts listening; the time from listen() until the probe has
   exited 0. p50/p95 over the trials.
3. Many probes waiting at once for a refused port (the case with the most
   attempts per second): CPU seconds they use per second of waiting, and
   their total RSS and PSS; beside them, as many Python processes that only
   wake up as often (the floor: on a VM most of that cost is the wake-up).

Prints figures only; no thresholds are checked here.
"""

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "probes" / "unitgen_probe"


def probe_command():
    """(command, shown, interpreter): the installed console script when it
    runs this interpreter (the bare runs then use the very interpreter its
    #! line names), else ``python -m unitgen_probe``."""
    script = Path(sysconfig.get_path("scripts")) / "unitgen-probe"
    if script.exists():
        interpreter = script.read_text().splitlines()[0][2:].strip()
        if os.path.realpath(interpreter) == os.path.realpath(sys.executable):
            return [str(script)], str(script), interpreter
    return ([sys.executable, "-m", "unitgen_probe"], f"{sys.executable} -m unitgen_probe (not installed)",
            sys.executable)


def listener():
    """A loopback port that accepts and closes connections, on a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    def serve():
        while True:
            try:
                sock.accept()[0].close()
            except OSError:
                return
    threading.Thread(target=serve, daemon=True).start()
    return sock


def run(command):
    """Wall seconds and peak RSS (KiB) of one run of *command*."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command} exited {proc.returncode}")
    return took, usage.ru_maxrss


def cold_start(runs, probe, interpreter):
    server = listener()
    try:
        port = server.getsockname()[1]
        bare = [interpreter, "-c", "pass"]
        probed = probe + ["tcp", f"127.0.0.1:{port}", "--once"]
        for command in (bare, probed):  # warm the page cache
            run(command)
        samples = {"bare": [], "probe": []}
        for _ in range(runs):
            for name, command in (("bare", bare), ("probe", probed)):
                samples[name].append(run(command))
    finally:
        server.close()
    return {name: (statistics.median(t for t, _ in runs_), statistics.median(r for _, r in runs_))
            for name, runs_ in samples.items()}


def extra_modules():
    """Modules the probe imports that a bare interpreter has not loaded."""
    code = ("import sys; before = set(sys.modules); import unitgen_probe.cli, unitgen_probe.net; "
            "print(' '.join(sorted(m for m in set(sys.modules) - before if not m.startswith('unitgen_probe'))))")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split()


def notice_latency(trials, probe):
    latencies = []
    for _ in range(trials):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = sock.getsockname()[1]
        proc = subprocess.Popen(probe + ["--deadline", "60", "tcp", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.stderr.readline()  # "waiting for ...": it is in its retry loop
            time.sleep(random.uniform(0.5, 1.5))  # a random phase of its attempts
            sock.listen(16)
            start = time.perf_counter()
            if proc.wait(60) != 0:
                raise SystemExit("a probe did not see its port open")
            latencies.append(time.perf_counter() - start)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
            sock.close()
    latencies.sort()
    return latencies


def _cpu_seconds(pid):
    """CPU time of all the threads of *pid*, from the scheduler's own
    nanosecond count (utime/stime are sampled at clock ticks, which
    overcharges processes that wake up on timers)."""
    return sum(int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
               for tid in os.listdir(f"/proc/{pid}/task")) / 1e9


def _memory_kib(pid):
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def waiting(command, count, window):
    """Start *count* processes of *command* (each says something on stderr
    once it is past start-up), measure them for *window* seconds, stop them
    with SIGTERM. Returns CPU seconds per second, RSS and PSS totals (KiB)
    and how many exited with status 143."""
    procs = []
    with tempfile.TemporaryDirectory() as logs:
        try:
            for index in range(count):
                with open(Path(logs) / str(index), "w") as log:
                    procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))
            deadline = time.monotonic() + 300
            while any((Path(logs) / str(i)).stat().st_size == 0 for i in range(count)):
                if time.monotonic() > deadline:
                    raise SystemExit("the processes did not all start within 300 s")
                time.sleep(0.5)
            time.sleep(2)  # past start-up: only waiting now
            before = sum(_cpu_seconds(p.pid) for p in procs)
            start = time.monotonic()
            time.sleep(window)
            cpu = sum(_cpu_seconds(p.pid) for p in procs) - before
            seconds = time.monotonic() - start
            memory = [_memory_kib(p.pid) for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            stopped = [proc.wait(30) for proc in procs]
    return {"cpu_per_second": cpu / seconds, "rss_kib": sum(r for r, _ in memory),
            "pss_kib": sum(p for _, p in memory), "stopped_by_sigterm": stopped.count(143)}


#: A Python process that does nothing but wake up as often as a waiting
#: probe does (about 2.9 times a second): the floor for the cost of waiting.
SLEEPER = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
           "print('up', file=sys.stderr, flush=True)\n"
           "while True: time.sleep(0.35)\n")


def report_cold_start(runs, probe, interpreter):
    cold = cold_start(runs, probe, interpreter)
    (bare_t, bare_rss), (probe_t, probe_rss) = cold["bare"], cold["probe"]
    print(f"\n1. cold start, median of {runs} alternating runs")
    print(f"   {'python -c pass (' + os.path.basename(interpreter) + ')':<38} {bare_t * 1000:7.1f} ms   "
          f"peak RSS {bare_rss / 1024:6.1f} MiB")
    print(f"   {'unitgen-probe tcp 127.0.0.1:P --once':<38} {probe_t * 1000:7.1f} ms   "
          f"peak RSS {probe_rss / 1024:6.1f} MiB")
    print(f"   {'ratio (targets: 1.15, 1.2)':<38} {probe_t / bare_t:7.3f}      "
          f"         {probe_rss / bare_rss:6.3f}")
    print(f"   modules beyond a bare interpreter: {' '.join(extra_modules()) or '(none)'}")


def report_notice_latency(trials, probe):
    latencies = notice_latency(trials, probe)
    print(f"\n2. notice latency after the port opens, {len(latencies)} trials")
    print(f"   p50 {statistics.median(latencies):.3f} s   "
          f"p95 {latencies[max(0, round(0.95 * len(latencies)) - 1)]:.3f} s   "
          f"max {latencies[-1]:.3f} s   (target: p95 <= 0.5 s)")


def report_waiting(count, window, probe):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused, so every probe keeps trying
    try:
        many = waiting(probe + ["tcp", f"127.0.0.1:{sock.getsockname()[1]}"], count, window)
    finally:
        sock.close()
    floor = waiting([sys.executable, "-c", SLEEPER], count, window)
    print(f"\n3. {count} processes waiting at once, {window:g} s measured")
    for name, figures in (("probes waiting for a refused port", many), ("Python sleeping 0.35 s in a loop", floor)):
        print(f"   {name:<34} CPU {figures['cpu_per_second']:.3f} s/s "
              f"({figures['cpu_per_second'] / count * 1000:.2f} ms/s each)   "
              f"RSS {figures['rss_kib'] / 1024:.0f} MiB, PSS {figures['pss_kib'] / 1024:.0f} MiB "
              f"({figures['pss_kib'] / count / 1024:.2f} MiB each)")
    print(f"   probes that SIGTERM stopped with status 143: {many['stopped_by_sigterm']} of {count}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="cold-start runs of each command (default 100)")
    parser.add_argument("--trials", type=int, default=50, help="notice-latency trials (default 50)")
    parser.add_argument("--probes", type=int, default=500, help="probes waiting at once (default 500)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of waiting measured (default 10)")
    parser.add_argument("--parts", default="123", help="which measurements to make (default 123)")
    options = parser.parse_args()

    # What a wheel install does: the modules byte-compiled ahead of time.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(PACKAGE)], check=True)
    probe, shown, interpreter = probe_command()
    print(f"unitgen-probe benchmark: Python {sys.version.split()[0]} ({sys.executable}), "
          f"{os.cpu_count()} CPUs")
    print(f"probe: {shown}; load average before: {os.getloadavg()[0]:.2f}")
    if "1" in options.parts:
        report_cold_start(options.runs, probe, interpreter)
    if "2" in options.parts:
        report_notice_latency(options.trials, probe)
    if "3" in options.parts:
        report_waiting(options.probes, options.window, probe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
