"""A stand-in service for the power-cut drill (standard library only).

    standin.py NAME --port PORT [--dep LABEL=tcp://HOST:PORT | LABEL=http://URL]...
               [--on-missing exit|degrade] [--on-loss ignore|break] [--pid-file PATH]
               [--start-time SECONDS]

It models the failures unitgen exists for. At start it checks each
dependency once, as a real service connecting to its database would, then:

* ``--on-missing exit``: a dependency is missing, so it exits 1 (the service
  that crashes when started too early);
* ``--on-missing degrade``: it starts anyway and stays broken forever, its
  health URL answering 503 (the service that "works" but never recovers
  without a manual restart); 200 when every dependency was there at start;
* ``--on-loss break``: healthy at start, it keeps checking its dependencies
  (every 0.5 s) and the first time one does not answer it breaks for good,
  503 from then on: the service that lost its database at run time and never
  reconnects, which only a restart mends (``unitgen watch``'s case);
* ``--pid-file PATH``: it daemonises (double fork) and writes PATH once it
  serves, for ``Type=forking``; the first process exits only then.

It serves HTTP on PORT: ``GET /health`` answers 200 or 503; a bare TCP
connection is accepted too. ``--start-time`` sleeps before listening, as a
real service loads before it serves.

Every event the drill checks is a JSON line appended to
/var/log/standins/NAME.log on the host's disk, written with O_APPEND and
fsync'd: ``time`` (time.time(): every host shares the machine's clock),
``host``, ``boot`` (when the host's PID 1 started, in clock ticks: a bed
host shares the machine's kernel, so the kernel's boot_id does not change
when the host reboots), ``invocation`` (systemd's INVOCATION_ID, one per
start of the unit), ``pid``, ``service``, ``event`` and details. Events:
"exec started" (``process_started``: when systemd forked the process),
"dependency reachable at start" / "dependency unreachable at start"
(``dependency``, ``reason``), "exiting: dependency missing", "serving"
(``healthy``), "dependency lost at run time" (``dependency``, ``reason``).
"""

import json
import os
import socket
import sys
import time

LOG_DIR = "/var/log/standins"
CHECK_TIMEOUT = 1.0
LOSS_CHECK_INTERVAL = 0.5


class Log:
    """Appends one fsync'd JSON line per event to the service's log file."""

    def __init__(self, service):
        self.service = service
        self.fields = {
            "host": socket.gethostname(),
            "boot": _boot_of_host(),
            "invocation": os.environ.get("INVOCATION_ID", ""),
        }
        os.makedirs(LOG_DIR, exist_ok=True)
        self.path = os.path.join(LOG_DIR, f"{service}.log")

    def event(self, event, **details):
        """Write one event line, durably, before going on."""
        line = {"time": time.time(), **self.fields, "pid": os.getpid(), "service": self.service,
                "event": event, **details}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _boot_of_host():
    """When the host's PID 1 started, in clock ticks: new at every boot of the host."""
    return str(_start_ticks("1"))


def _start_ticks(pid):
    """Field 22 of /proc/PID/stat: when the process started, in ticks of CLOCK_BOOTTIME."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[19])


def process_started():
    """time.time() at which this process was forked (by systemd), to half a clock tick.

    The kernel counts whole ticks (10 ms): the middle of the tick is the best guess.
    """
    started = (_start_ticks("self") + 0.5) / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def parse_args(argv):
    """The command line as a dict (argparse costs start-up time before "exec started")."""
    options = {"name": None, "port": None, "deps": [], "on_missing": "exit", "on_loss": "ignore",
               "pid_file": None, "start_time": 0.0}
    words = iter(argv)
    for word in words:
        if word == "--port":
            options["port"] = int(next(words))
        elif word == "--dep":
            label, _, address = next(words).partition("=")
            options["deps"].append((label, address))
        elif word == "--on-missing":
            options["on_missing"] = next(words)
        elif word == "--on-loss":
            options["on_loss"] = next(words)
        elif word == "--pid-file":
            options["pid_file"] = next(words)
        elif word == "--start-time":
            options["start_time"] = float(next(words))
        elif options["name"] is None and not word.startswith("-"):
            options["name"] = word
        else:
            sys.exit(f"standin: unexpected argument {word!r}")
    if (options["name"] is None or options["port"] is None or options["on_missing"] not in ("exit", "degrade")
            or options["on_loss"] not in ("ignore", "break")):
        sys.exit(__doc__.split("\n\n")[1])
    return options


def reachable(address):
    """(True, why) if a dependency answers now: a TCP connect, or GET with status 200."""
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=CHECK_TIMEOUT).close()
        except OSError as error:
            return False, str(error) or type(error).__name__
        return True, "connected"
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(address, timeout=CHECK_TIMEOUT) as response:
            return response.status == 200, f"HTTP status {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP status {error.code}"
    except OSError as error:
        return False, str(error) or type(error).__name__


def check_dependencies(log, deps):
    """Check and log every dependency once; return the labels of those missing."""
    missing = []
    for label, address in deps:
        ok, why = reachable(address)
        log.event("dependency reachable at start" if ok else "dependency unreachable at start",
                  dependency=label, reason=why)
        if not ok:
            missing.append(label)
    return missing


def break_on_loss(log, deps, missing):
    """Keep checking the dependencies; the first that does not answer breaks
    the service for good (``missing`` is what /health reports)."""
    import threading

    def watch():
        while True:
            for label, address in deps:
                ok, why = reachable(address)
                if not ok:
                    log.event("dependency lost at run time", dependency=label, reason=why)
                    missing.append(label)
                    return
            time.sleep(LOSS_CHECK_INTERVAL)

    threading.Thread(target=watch, daemon=True).start()


def make_server(port, missing):
    """An HTTP server on PORT, listening already: /health is 200, or 503 if deps were missing."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/health":
                status, body = 404, "no such page\n"
            elif missing:
                status, body = 503, f"broken: without {', '.join(missing)}\n"
            else:
                status, body = 200, "ok\n"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass  # health polls would flood the journal

    ThreadingHTTPServer.daemon_threads = True
    return ThreadingHTTPServer(("0.0.0.0", port), Health)


def daemonise(pid_file, start_serving):
    """Double fork; the grandchild runs start_serving(), writes pid_file, then
    the original process exits 0, so that systemd reads a PID file that exists.

    Returns in the grandchild only.
    """
    ready_read, ready_write = os.pipe()
    if os.fork() > 0:
        os.close(ready_write)
        os._exit(0 if os.read(ready_read, 1) == b"1" else 1)
    os.close(ready_read)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    server = start_serving()
    os.makedirs(os.path.dirname(pid_file), exist_ok=True)
    with open(pid_file + ".new", "w") as file:
        file.write(f"{os.getpid()}\n")
    os.replace(pid_file + ".new", pid_file)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.write(ready_write, b"1")
    os.close(ready_write)
    return server


def main(argv):
    options = parse_args(argv)
    log = Log(options["name"])
    log.event("exec started", process_started=process_started(), argv=argv)
    missing = check_dependencies(log, options["deps"])
    if missing and options["on_missing"] == "exit":
        log.event("exiting: dependency missing", missing=missing)
        return 1

    def start_serving():
        time.sleep(options["start_time"])
        server = make_server(options["port"], missing)
        log.event("serving", healthy=not missing, port=options["port"])
        return server

    if options["pid_file"]:
        server = daemonise(options["pid_file"], start_serving)
    else:
        server = start_serving()
    if options["on_loss"] == "break" and not missing:
        break_on_loss(log, options["deps"], missing)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
