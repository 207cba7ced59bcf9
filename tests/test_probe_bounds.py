"""The probe keeps its bounds whatever a server sends or the system refuses:
a body regex that backtracks for ever ends with the attempt's budget and
never holds SIGTERM back; a target that cannot even be tried (no file
descriptor, no memory for a thread) is a failed attempt with that reason,
tried again, and passes once the system allows it; a server that drips its
TLS handshake is cut off at the attempt's timeout."""

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

from probe_helpers import (PROBES, WAIT, HttpServer, ProbeProcess, answer, make_certificates, open_port,
                           probe_env, run_probe, stop, wait_until)

from unitgen_probe import Target, check

HOSTILE_BODY = b"a" * 100_000 + b"!"  # (a+)+$ backtracks exponentially on it
BACKTRACKING = "(a+)+$"


def test_a_backtracking_body_regex_ends_with_the_deadline():
    with HttpServer(answer(200, HOSTILE_BODY)) as server:
        done = run_probe("--deadline", "1", "http", server.url, "--body", BACKTRACKING)
    assert done.returncode == 1, done.stderr
    assert "matching the body" in done.stderr.splitlines()[-1]


def test_a_backtracking_body_regex_ends_with_the_attempt_and_is_tried_again():
    with HttpServer(answer(200, HOSTILE_BODY)) as server:
        with ProbeProcess("-v", "http", server.url, "--body", BACKTRACKING, "--timeout", "0.5") as probe:
            probe.wait_for("attempt 2 of")
            stop(probe.proc)
            assert probe.finish() == 143
    assert "timed out after 0.5 s matching the body" in probe.stderr


def _children(pid):
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found |= {int(word) for word in f.read().split()}
    return found


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_sigterm_is_not_held_back_by_a_body_match():
    with HttpServer(answer(200, HOSTILE_BODY)) as server:
        with ProbeProcess("http", server.url, "--body", BACKTRACKING, "--timeout", "600") as probe:
            matcher = wait_until(lambda: _children(probe.proc.pid), what="the matching process")
            stop(probe.proc)
            assert probe.finish() == 143  # at once: a wait of 600 s would time the test out
    assert "stopped by SIGTERM" in probe.stderr
    for pid in matcher:
        wait_until(lambda: _gone(pid), what=f"the matching process {pid} to be killed")


def test_a_body_in_a_charset_that_is_not_text_is_matched_as_utf8():
    with HttpServer(answer(200, b"status UP", **{"Content-Type": "text/plain; charset=rot13"})) as server:
        done = run_probe("--once", "http", server.url, "--body", "UP")
    assert done.returncode == 0, done.stdout


def _probe_with_limit(limit_code, *args):
    """The probe's own main() in a process whose *limit_code* (Python, after
    every probe module is imported, so that only the probe's own work meets
    the limit) lowers a resource limit's soft value; the hard one stays, so
    that the test can raise it again with prlimit(2)."""
    code = (f"import os, resource, sys\nsys.path.insert(0, {str(PROBES)!r})\n"
            "from unitgen_probe import cli, wait, net, report, notify, checks\n"
            f"{limit_code}\nsys.exit(cli.main({list(args)!r}))\n")
    return subprocess.Popen([sys.executable, "-c", code], env=probe_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, *, after):
    """Wait until the probe said *after* on stderr, raise every soft limit
    back to the hard one, and return (exit status, stderr)."""
    seen = []
    os.set_blocking(proc.stderr.fileno(), False)

    def said():
        try:
            seen.append(os.read(proc.stderr.fileno(), 65536).decode())
        except BlockingIOError:
            pass
        return after in "".join(seen)

    wait_until(said, what=f"{after!r} from the probe")
    for limit in (resource.RLIMIT_NOFILE, resource.RLIMIT_AS):
        hard = resource.prlimit(proc.pid, limit)[1]
        resource.prlimit(proc.pid, limit, (hard, hard))
    os.set_blocking(proc.stderr.fileno(), True)
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, "".join(seen) + err


def _kill(proc):
    if proc.poll() is None:
        stop(proc, signal.SIGKILL)
        proc.wait()


def _limited_then_raised(limit_code, after):
    """A probe of an open port under *limit_code*; once it said *after*, the
    limit is raised: (exit status, stderr)."""
    with open_port() as port:
        proc = _probe_with_limit(limit_code, "-v", "tcp", f"127.0.0.1:{port.port}")
        try:
            return _finish(proc, after=after)
        finally:
            _kill(proc)


def test_no_file_descriptor_left_is_a_reason_and_the_target_is_tried_again():
    # Two descriptors left: the probe's wake-up pipe takes them, every socket fails.
    status, err = _limited_then_raised(
        "fd = os.dup(0); os.close(fd)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (fd + 2, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))",
        after="attempt 3 of")
    assert "failed: cannot try: too many open files" in err
    assert status == 0, err  # tried again once the limit was raised: ready


def test_no_memory_for_a_thread_is_a_reason_and_the_target_is_tried_again():
    # A few MiB of address space left: no room for a thread's stack.
    status, err = _limited_then_raised(
        "size = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, ((size + 4096) * 1024, resource.RLIM_INFINITY))",
        after="attempt 2 of")
    assert "cannot start a thread" in err
    assert status == 0, err


class _DrippingProxy:
    """A loopback TCP proxy to *port* that passes what the server sends one
    byte every 50 ms: each read is quick, the whole never is."""

    def __init__(self, port):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream = port
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.upstream))
        threading.Thread(target=self._pass, args=(client, server, 65536, 0), daemon=True).start()
        self._pass(server, client, 1, 0.05)

    def _pass(self, source, sink, size, pause):
        try:
            while not self.closed.is_set():
                data = source.recv(size)
                if not data:
                    break
                sink.sendall(data)
                time.sleep(pause)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self):
        self.closed.set()
        self.listener.close()


def test_a_server_that_drips_its_tls_handshake_cannot_outlive_the_attempt(tmp_path):
    ca, cert, key = make_certificates(tmp_path)
    with HttpServer(answer(200), tls=(cert, key)) as server:
        proxy = _DrippingProxy(server.port)
        try:
            result = check(Target("http", f"https://127.0.0.1:{proxy.port}/", ca_file=ca), timeout=0.5)
        finally:
            proxy.close()
    assert result.reason == "timed out after 0.5 s in the TLS handshake"


def test_a_ca_file_that_is_a_fifo_does_not_block_the_attempt(tmp_path):
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)  # open() would wait for a writer for ever
    result = check(Target("http", "https://127.0.0.1:1/", ca_file=str(fifo)), timeout=0.5)
    assert result.reason == f"TLS error: cannot load the CA file {fifo}: not a regular file"
