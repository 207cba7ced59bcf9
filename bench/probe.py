"""Figures of unitgen-probe: start-up cost, notice latency, cost of waiting.

    python3 bench/probe.py [--runs N] [--trials N] [--peer-trials N] [--probes N]
                           [--peers N] [--window S] [--down-trials N] [--parts 1234]

1. Cold start, in exactly the form unitgen renders into units
   (``PYTHON -IS .../unitgen_probe/start.py``, unitgen/paths.py), against
   ``python -c pass`` of the same interpreter, and beside it pip's
   console-script wrapper and the peers: Debian's ``wait-for-it``, a bash
   ``/dev/tcp`` loop, npm's ``wait-on`` (where installed: ``npm install
   --prefix ~/.cache/unitgen-bench/npm wait-on``, never into the repo).
   Each waits for an open loopback port (the probe and wait-on also for a
   plain-http URL); runs interleaved; min / median / max of wall time, the
   median CPU time (user + system, from wait4), and peak memory of the
   process itself (ru_maxrss from GNU time, a small C forker, in separate
   runs); the ranking is printed on every run.
2. Notice latency: each tool waits for a refused port; at a random moment
   the port starts listening; the time from listen() until the tool has
   exited 0. p50/p95 over the trials, the tools' trials interleaved.
3. Processes waiting at once for a refused port (the case with the most
   attempts per second): CPU they use per second of waiting (each group in
   a cpuacct cgroup of its own when this runs as root, so that what a shell
   loop forks counts; else the scheduler's count of each process's
   threads), and their PSS; beside them, as many Python processes that only
   wake up as often (the floor: on a VM most of that cost is the wake-up).
4. A host that is down (root: two network namespaces, SYNs to the target
   dropped, tests/probe_helpers.DroppingRoute): the probe waits; at a random
   moment the host's address comes up with a listener; the time from then
   until the probe has exited 0.

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
    """(wall seconds, CPU seconds) of one run of *command*."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command} exited {proc.returncode}")
    return took, usage.ru_utime + usage.ru_stime


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
        "python -IS -c pass (no site: what -IS saves)": [interpreter, "-IS", "-c", "pass"],
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
    """{label: (wall seconds, CPU seconds, peak KiB)} lists of interleaved runs."""
    server, http = listener(), listener(HTTP_200)
    try:
        commands = cold_commands(probe, interpreter, server.getsockname()[1], http.getsockname()[1])
        for command in commands.values():  # warm the page cache
            run(command)
        samples = {name: ([], [], []) for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                wall, cpu = run(command)
                samples[name][0].append(wall)
                samples[name][1].append(cpu)
                samples[name][2].append(peak_kib(command))
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


def waiters(probe, port):
    """{label: (argv, says something on stderr once it waits)}: every tool,
    waiting for 127.0.0.1:PORT with no time limit of its own that matters."""
    tools = {"unitgen-probe as rendered": (probe + ["--deadline", "600", "tcp", f"127.0.0.1:{port}"], True),
             "bash /dev/tcp loop, sleep 0.2": (["bash", "-c", f"until (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; "
                                                              "do sleep 0.2; done"], False)}
    if shutil.which("wait-for-it"):
        tools["Debian wait-for-it"] = (["wait-for-it", "-q", "-t", "0", f"127.0.0.1:{port}"], False)
    if WAIT_ON.exists() and shutil.which("node"):
        tools["npm wait-on"] = ([str(WAIT_ON), f"tcp:127.0.0.1:{port}"], False)
    return tools


#: Seconds a tool that says nothing is given to get past its start-up
#: (node's is the longest) before it counts as waiting.
QUIET_START = 1.5


def notice_trial(command, says):
    """Seconds from listen() on the awaited port until *command* exited 0."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
    argv = command(sock.getsockname()[1])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if says else subprocess.DEVNULL,
                            text=True)
    try:
        if says:
            proc.stderr.readline()  # "waiting for ...": it is in its retry loop
        else:
            time.sleep(QUIET_START)
        time.sleep(random.uniform(0.5, 1.5))  # a random phase of its attempts
        sock.listen(16)
        start = time.perf_counter()
        if proc.wait(60) != 0:
            raise SystemExit(f"{argv} did not see its port open")
        return time.perf_counter() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if says:
            proc.stderr.close()
        sock.close()


def notice_latency(trials, peer_trials, probe):
    """{label: sorted latencies}: the probe's *trials* and each peer's
    *peer_trials*, interleaved round by round."""
    tools = waiters(probe, 0)
    latencies = {name: [] for name in tools}
    for round_ in range(max(trials, peer_trials)):
        for name, (_, says) in tools.items():
            if round_ < (trials if name == "unitgen-probe as rendered" else peer_trials):
                latencies[name].append(notice_trial(lambda port, name=name: waiters(probe, port)[name][0], says))
    return {name: sorted(values) for name, values in latencies.items()}


def _cpu_seconds(pid):
    """CPU time of all the threads of *pid*, from the scheduler's own
    nanosecond count (utime/stime are sampled at clock ticks, which
    overcharges processes that wake up on timers)."""
    return sum(int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
               for tid in os.listdir(f"/proc/{pid}/task")) / 1e9


def _memory_kib(pid):
    """(RSS, PSS) of *pid* in KiB; (None, None) when it is gone (a shell loop's child)."""
    rss = pss = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class Group:
    """Where the CPU of a group of processes is counted: a cpuacct cgroup of
    its own (root, cgroup v1's cpuacct mounted), which counts what they
    fork too; else each process's threads, from the scheduler."""

    def __init__(self):
        self.path = None
        if os.geteuid() == 0 and CPUACCT.is_dir():
            self.path = CPUACCT / f"unitgen-bench-{os.getpid()}-{next(_GROUPS)}"
            self.path.mkdir()

    def enter(self):
        """In a child before exec: join the group."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def cpu_seconds(self, procs):
        if self.path is not None:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        return sum(_cpu_seconds(p.pid) for p in procs)

    def pids(self, procs):
        if self.path is not None:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        return [p.pid for p in procs]

    def close(self):
        if self.path is not None:
            for _ in range(100):  # the last processes leave the group as they are reaped
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.05)


_GROUPS = iter(range(1 << 30))


def waiting(command, count, window, says=True):
    """Start *count* processes of *command* (when *says*, each says something
    on stderr once it is past start-up; else they get `QUIET_START` s and
    more), measure them for *window* seconds, stop them with SIGTERM.
    Returns CPU seconds per second, RSS and PSS totals (KiB) and how many
    exited with status 143."""
    procs = []
    group = Group()
    with tempfile.TemporaryDirectory() as logs:
        try:
            for index in range(count):
                with open(Path(logs) / str(index), "w") as log:
                    procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                                                  preexec_fn=group.enter))
            deadline = time.monotonic() + 300
            while says and any((Path(logs) / str(i)).stat().st_size == 0 for i in range(count)):
                if time.monotonic() > deadline:
                    raise SystemExit("the processes did not all start within 300 s")
                time.sleep(0.5)
            time.sleep(2 if says else 2 + QUIET_START)  # past start-up: only waiting now
            before = group.cpu_seconds(procs)
            start = time.monotonic()
            time.sleep(window)
            cpu = group.cpu_seconds(procs) - before
            seconds = time.monotonic() - start
            memory = [_memory_kib(pid) for pid in group.pids(procs)]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            stopped = [proc.wait(30) for proc in procs]
            group.close()
    return {"cpu_per_second": cpu / seconds, "rss_kib": sum(r for r, _ in memory if r is not None),
            "pss_kib": sum(p for _, p in memory if p is not None), "stopped_by_sigterm": stopped.count(143)}


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
    floor_cpu = statistics.median(samples[floor_name][1])
    print(f"\n1. cold start, {runs} interleaved runs of each; ranked by median wall time; ratios to the floor's medians")
    print(f"   {'':40} {'wall ms min / median / max':>27} {'ratio':>7} {'CPU ms':>7} {'ratio':>7} {'peak MiB':>9}")
    ranked = sorted(samples.items(), key=lambda item: statistics.median(item[1][0]))
    for name, (times, cpus, peaks) in ranked:
        spread = " / ".join(f"{v * 1e3:.1f}" for v in (min(times), statistics.median(times), max(times)))
        cpu = statistics.median(cpus)
        print(f"   {name:<40} {spread:>27} {statistics.median(times) / floor:6.2f}x {cpu * 1e3:7.1f} "
              f"{cpu / floor_cpu:6.2f}x {statistics.median(peaks) / 1024:9.1f}")
    print("   targets: as rendered <= 1.2x the floor for tcp, <= 1.5x for plain http, ahead of wait-for-it")
    print(f"   modules beyond a bare interpreter: {' '.join(extra_modules()) or '(none)'}")


def percentile(values, fraction):
    return values[max(0, round(fraction * len(values)) - 1)]


def report_notice_latency(trials, peer_trials, probe):
    latencies = notice_latency(trials, peer_trials, probe)
    print(f"\n2. notice latency after the port opens (listen() -> the tool exited 0), trials interleaved;"
          " ranked by p50")
    for name, values in sorted(latencies.items(), key=lambda item: statistics.median(item[1])):
        print(f"   {name:<32} n={len(values):<4} p50 {statistics.median(values):.3f} s   "
              f"p95 {percentile(values, 0.95):.3f} s   max {values[-1]:.3f} s")
    print("   targets for the probe: p50 <= 0.09 s, p95 <= 0.18 s")


def report_waiting(count, peers, window, probe):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused, so every process keeps trying
    port = sock.getsockname()[1]
    rows = []
    try:
        for name, (command, says) in waiters(probe, port).items():
            number = count if name == "unitgen-probe as rendered" else min(count, peers)
            rows.append((name, number, waiting(command, number, window, says)))
    finally:
        sock.close()
    rows.insert(1, ("Python sleeping 0.15 s in a loop (floor)", count, waiting([sys.executable, "-c", SLEEPER],
                                                                                count, window)))
    print(f"\n3. processes waiting at once for a refused port, {window:g} s measured; CPU per second of waiting "
          f"({'a cpuacct cgroup per group, children included' if os.geteuid() == 0 and CPUACCT.is_dir() else 'threads of each process'})")
    for name, number, figures in sorted(rows, key=lambda row: row[2]["cpu_per_second"] / row[1]):
        print(f"   {name:<42} x{number:<4} CPU {figures['cpu_per_second'] / number * 1000:6.2f} ms/s each   "
              f"PSS {figures['pss_kib'] / number / 1024:6.2f} MiB each (RSS {figures['rss_kib'] / number / 1024:.1f})")
    probes = rows[0]
    print(f"   probes that SIGTERM stopped with status 143: {probes[2]['stopped_by_sigterm']} of {probes[1]}")
    print("   targets for the probe: <= 0.4 ms/s, <= 3.5 MiB PSS")


def report_host_down(trials, probe):
    """Part 4: notice latency of a host that comes back (root, network namespaces)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("\n4. a host that comes back: skipped (needs root and ip, for network namespaces)")
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from probe_helpers import DroppingRoute

    port = 5432
    latencies = []
    with DroppingRoute() as route:
        route.host_ns.serve("0.0.0.0", port)
        for _ in range(trials):
            proc = subprocess.Popen(["ip", "netns", "exec", route.probe_ns.name, *probe, "--deadline", "600",
                                     "tcp", f"{route.DROPPED}:{port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                proc.stderr.readline()  # its first attempt timed out: the host is down
                time.sleep(random.uniform(0.0, 2.0))  # a random phase of its attempts
                start = time.perf_counter()
                route.bring_up()
                if proc.wait(60) != 0:
                    raise SystemExit("a probe did not see its host come back")
                latencies.append(time.perf_counter() - start)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stderr.close()
                route.host_ns.ip("addr", "del", f"{route.DROPPED}/32", "dev", "lo")
    latencies.sort()
    print(f"\n4. a host that comes back (SYNs dropped, then its address up with a listener), {trials} trials: "
          f"the address added -> the probe exited 0")
    print(f"   p50 {statistics.median(latencies):.3f} s   p95 {percentile(latencies, 0.95):.3f} s   "
          f"max {latencies[-1]:.3f} s   (target: within ~0.6 s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="cold-start runs of each command (default 100)")
    parser.add_argument("--trials", type=int, default=150, help="notice-latency trials of the probe (default 150)")
    parser.add_argument("--peer-trials", type=int, default=40, help="notice-latency trials of each peer (default 40)")
    parser.add_argument("--probes", type=int, default=200, help="probes waiting at once (default 200)")
    parser.add_argument("--peers", type=int, default=20, help="processes of each peer waiting at once (default 20)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of waiting measured (default 10)")
    parser.add_argument("--down-trials", type=int, default=20, help="host-down trials (default 20)")
    parser.add_argument("--parts", default="1234", help="which measurements to make (default 1234)")
    options = parser.parse_args()

    # What a wheel install does: the modules byte-compiled ahead of time.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(PACKAGE)], check=True)
    probe, shown, interpreter = probe_command()
    print(f"unitgen-probe benchmark: Python {sys.version.split()[0]} ({sys.executable}), "
          f"{os.cpu_count()} CPUs")
    print(f"probe: {shown}; load average before: {os.getloadavg()[0]:.2f}")
    if not (WAIT_ON.exists() and shutil.which("node")):
        print(f"npm wait-on: not measured (needs node and {WAIT_ON}: "
              "npm install --prefix ~/.cache/unitgen-bench/npm wait-on)")
    if "1" in options.parts:
        report_cold_start(options.runs, probe, interpreter)
    if "2" in options.parts:
        report_notice_latency(options.trials, options.peer_trials, probe)
    if "3" in options.parts:
        report_waiting(options.probes, options.peers, options.window, probe)
    if "4" in options.parts:
        report_host_down(options.down_trials, probe)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
