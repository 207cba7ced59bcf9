"""Figures of unitgen-probe: start-up cost, notice latency, cost of waiting.

    python3 bench/probe.py [--runs N] [--trials N] [--probes N] [--window S]

1. Cold start, in exactly the form unitgen renders into units
   (``PYTHON -IS .../unitgen_probe/start.py``, unitgen/paths.py), against
   ``python -c pass`` of the same interpreter, and beside it pip's
   console-script wrapper and the peers: Debian's ``wait-for-it``, a bash
   ``/dev/tcp`` loop, npm's ``wait-on`` (where installed: ``npm install
   --prefix ~/.cache/unitgen-bench/npm wait-on``, never into the repo).
   Each waits for an open loopback port (the probe and wait-on also for a
   plain-http URL); runs interleaved; min / median / max of wall time, and
   peak memory of the process itself (ru_maxrss from GNU time, a small C
   forker, in separate runs); the ranking is printed on every run.
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
import shutil
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
    """(command, shown, interpreter): what unitgen renders into units
    (paths.probe_argv), its interpreter being the floor's; else
    ``python -m unitgen_probe`` when unitgen is not installed."""
    try:
        from unitgen import paths

        argv = paths.probe_argv(paths.probe_command())
    except Exception as exc:  # noqa: BLE001 - not installed: say so and go on
        return ([sys.executable, "-m", "unitgen_probe"], f"{sys.executable} -m unitgen_probe ({exc})",
                sys.executable)
    interpreter = argv[0] if len(argv) > 1 else Path(argv[0]).read_text().splitlines()[0][2:].strip()
    return argv, " ".join(argv), interpreter


def wrapper_script():
    script = Path(sysconfig.get_path("scripts")) / "unitgen-probe"
    return str(script) if script.exists() else None


WAIT_ON = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unitgen-bench/npm/node_modules/.bin/wait-on"
GNU_TIME = "/usr/bin/time"


def listener(answer=b""):
    """A loopback port that accepts connections on a thread, sends each
    *answer* (after reading its request) and closes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    def serve():
        while True:
            try:
                conn = sock.accept()[0]
            except OSError:
                return
            try:
                if answer:
                    conn.settimeout(2)
                    conn.recv(65536)
                    conn.sendall(answer)
            except OSError:
                pass
            finally:
                conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return sock


HTTP_200 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def run(command):
    """Wall seconds of one run of *command*."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{command} exited {done.returncode}")
    return took


def peak_kib(command):
    """Peak RSS (KiB) of *command* itself: its ru_maxrss as GNU time (a small
    C forker) reads it from wait4(), so nothing of this harness is inherited."""
    done = subprocess.run([GNU_TIME, "-f", "%M", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode:
        raise SystemExit(f"{command} exited {done.returncode}")
    return int(done.stderr.split()[-1])


def cold_commands(probe, interpreter, port, http_port):
    """{label: argv} of every command measured, the floor first."""
    address, url = f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}/"
    commands = {
        f"python -c pass ({os.path.basename(interpreter)}), the floor": [interpreter, "-c", "pass"],
        "unitgen-probe as rendered, tcp": probe + ["--once", "tcp", address],
        "unitgen-probe as rendered, http": probe + ["--once", "http", url],
    }
    wrapper = wrapper_script()
    if wrapper and probe != [wrapper]:
        commands["unitgen-probe, pip's wrapper, tcp"] = [wrapper, "--once", "tcp", address]
    if shutil.which("wait-for-it"):
        commands["Debian wait-for-it, tcp"] = ["wait-for-it", "-q", "-t", "5", address]
    commands["bash /dev/tcp loop, tcp"] = ["bash", "-c", f"until (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; "
                                                         "do sleep 0.2; done"]
    if WAIT_ON.exists() and shutil.which("node"):
        commands["npm wait-on, tcp"] = [str(WAIT_ON), "-t", "5000", f"tcp:{address}"]
        commands["npm wait-on, http"] = [str(WAIT_ON), "-t", "5000", f"http-get://127.0.0.1:{http_port}/"]
    return commands


def cold_start(runs, probe, interpreter):
    """{label: (wall seconds, peak KiB)} lists of interleaved runs."""
    server, http = listener(), listener(HTTP_200)
    try:
        commands = cold_commands(probe, interpreter, server.getsockname()[1], http.getsockname()[1])
        for command in commands.values():  # warm the page cache
            run(command)
        samples = {name: ([], []) for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                samples[name][0].append(run(command))
                samples[name][1].append(peak_kib(command))
    finally:
        server.close()
        http.close()
    return samples


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
#: probe does (gaps of 0.10-0.20 s: about 6.7 times a second): the floor
#: for the cost of waiting.
SLEEPER = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
           "print('up', file=sys.stderr, flush=True)\n"
           "while True: time.sleep(0.15)\n")


def report_cold_start(runs, probe, interpreter):
    samples = cold_start(runs, probe, interpreter)
    floor_name = next(iter(samples))
    floor = statistics.median(samples[floor_name][0])
    print(f"\n1. cold start, {runs} interleaved runs of each; ranked by median; ratio to the floor's median")
    print(f"   {'':40} {'ms min / median / max':>24} {'ratio':>7} {'peak MiB median':>16}")
    ranked = sorted(samples.items(), key=lambda item: statistics.median(item[1][0]))
    for name, (times, peaks) in ranked:
        spread = " / ".join(f"{v * 1e3:.1f}" for v in (min(times), statistics.median(times), max(times)))
        print(f"   {name:<40} {spread:>24} {statistics.median(times) / floor:6.2f}x "
              f"{statistics.median(peaks) / 1024:16.1f}")
    print("   targets: as rendered <= 1.2x the floor for tcp, <= 1.5x for plain http, ahead of wait-for-it")
    print(f"   modules beyond a bare interpreter: {' '.join(extra_modules()) or '(none)'}")


def report_notice_latency(trials, probe):
    latencies = notice_latency(trials, probe)
    print(f"\n2. notice latency after the port opens, {len(latencies)} trials")
    print(f"   p50 {statistics.median(latencies):.3f} s   "
          f"p95 {latencies[max(0, round(0.95 * len(latencies)) - 1)]:.3f} s   "
          f"max {latencies[-1]:.3f} s   (targets: p50 <= 0.09 s, p95 <= 0.18 s)")


def report_waiting(count, window, probe):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused, so every probe keeps trying
    try:
        many = waiting(probe + ["tcp", f"127.0.0.1:{sock.getsockname()[1]}"], count, window)
    finally:
        sock.close()
    floor = waiting([sys.executable, "-c", SLEEPER], count, window)
    print(f"\n3. {count} processes waiting at once, {window:g} s measured")
    for name, figures in (("probes waiting for a refused port", many), ("Python sleeping 0.15 s in a loop", floor)):
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
