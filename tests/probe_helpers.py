"""Helpers for the unitgen-probe tests: real servers on loopback, network
namespaces, a notify socket, and the probe run as a real process.

Everything here cleans up after itself: servers stop, processes are killed
by the PID they were started with, namespaces and their /etc/netns/NAME
files are removed.
"""

import http.server
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "probes"

#: Generous limits: the tests poll for conditions and never assert on time.
WAIT = 30.0


def probe_env(**extra):
    """The environment for a probe process: the checkout's probes/ first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBES), env.get("PYTHONPATH")]))
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def probe_command(*args, netns=None, bare=False):
    """The command that runs the probe with *args*; *bare*: without the
    site module, like a host whose site-packages import nothing at start."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return prefix + [sys.executable, *(["-S"] if bare else []), "-m", "unitgen_probe", *map(str, args)]


def run_probe(*args, netns=None, env=None, timeout=WAIT):
    """Run the probe to its end: CompletedProcess with text stdout/stderr."""
    return subprocess.run(probe_command(*args, netns=netns), env=env or probe_env(),
                          capture_output=True, text=True, timeout=timeout)


def wait_until(condition, timeout=WAIT, interval=0.02, what="the condition"):
    """Poll *condition* until it returns something true; return that."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


class ProbeProcess:
    """The probe running in the background, its output collected as it comes."""

    def __init__(self, *args, netns=None, env=None, bare=False):
        self.proc = subprocess.Popen(probe_command(*args, netns=netns, bare=bare), env=env or probe_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line)

    @property
    def stderr(self):
        return "".join(self.err)

    @property
    def stdout(self):
        return "".join(self.out)

    def wait_for(self, text, timeout=WAIT):
        """Wait until *text* appears on stderr."""
        return wait_until(lambda: text in self.stderr, timeout, what=f"{text!r} on stderr:\n{self.stderr}")

    def finish(self, timeout=WAIT):
        """Wait for the exit; return the exit status (output complete)."""
        status = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return status

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- servers -------------------------------------------------------------------

class ClosedPort:
    """A loopback port that refuses connections (bound, not listening) until
    `listen()` makes it accept them."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = None

    def listen(self):
        self.sock.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        # shutdown() wakes the accept() of the thread; close() alone may not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_port(host="127.0.0.1"):
    """A listening `ClosedPort` (a loopback port that accepts)."""
    port = ClosedPort(host)
    port.listen()
    return port


class HttpServer:
    """An HTTP(S) server on loopback whose answers come from *respond*.

    ``respond(handler)`` gets the request handler (``.path``, ``.headers``)
    and either returns (status, headers dict, body bytes) or writes the
    answer itself to ``handler.wfile`` and returns None. Requests are
    recorded in ``.requests`` as (path, headers).
    """

    def __init__(self, respond, tls=None, host="127.0.0.1"):
        outer = self
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                try:
                    answer = respond(self)
                    if answer is None:
                        return
                    status, headers, body = answer
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the probe gave up on us: that is what some tests want

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass  # probes hang up mid-answer on purpose

        self.server = Server((host, 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def answer(status=200, body=b"ok", **headers):
    """A fixed answer for `HttpServer`."""
    return lambda handler: (status, headers, body)


def sequence(*answers):
    """Answers in turn, the last one for ever (e.g. 503, 503, then 200)."""
    counter = itertools.count()

    def respond(handler):
        return answers[min(next(counter), len(answers) - 1)](handler)
    return respond


def make_certificates(directory):
    """A CA and a server certificate for 127.0.0.1/localhost signed by it,
    made with the openssl command: (ca.pem, server.pem, server.key)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = Path(directory)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=unitgen test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key")


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket:
    a path, or a name in the abstract namespace."""

    def __init__(self, directory, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"unitgen-probe-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(Path(directory) / "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0)
        self.received = []

    def messages(self):
        """Every datagram received so far, decoded."""
        while True:
            try:
                self.received.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return list(self.received)

    def statuses(self):
        return [m[len("STATUS="):] for m in self.messages() if m.startswith("STATUS=")]

    def close(self):
        self.sock.close()


# --- network namespaces ---------------------------------------------------------

_names = itertools.count()


def need_netns():
    """Skip unless this machine lets us make network namespaces."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("needs the ip command (iproute2)")


class Netns:
    """A named network namespace with loopback up; files given in *etc*
    (name -> text) are what `ip netns exec` shows in its /etc."""

    def __init__(self, etc=None):
        need_netns()
        self.name = f"ugp{os.getpid()}x{next(_names)}"
        self.etc = Path("/etc/netns") / self.name
        self._made_etc_root = not self.etc.parent.exists()
        self._procs = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.ip("link", "set", "lo", "up")
            if etc:
                self.etc.mkdir(parents=True)
                for name, text in etc.items():
                    self.write_etc(name, text)
        except BaseException:
            self.close()
            raise

    def write_etc(self, name, text):
        """Rewrite /etc/NAME as seen in the namespace, in place (same inode:
        the bind mount that `ip netns exec` makes keeps pointing at it)."""
        with open(self.etc / name, "r+" if (self.etc / name).exists() else "w") as file:
            file.truncate(0)
            file.write(text)

    def ip(self, *args):
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True)

    def popen(self, *args, **kwargs):
        """Start a process inside; it is killed (by its PID) on close()."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)
        self._procs.append(proc)
        return proc

    def serve(self, host, port):
        """A TCP listener on host:port inside the namespace, accepting and closing."""
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
                "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                "s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(64); print('ready',flush=True)\n"
                "while True: s.accept()[0].close()\n")
        proc = self.popen(sys.executable, "-c", code, host, str(port), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def close(self):
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)
        if self._made_etc_root:
            try:
                self.etc.parent.rmdir()
            except OSError:
                pass  # another namespace's files are there now

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DroppingRoute:
    """Two namespaces joined by a veth pair: the probe runs in ``probe_ns``
    (192.0.2.1), ``host_ns`` is 192.0.2.2, and 198.51.100.0/24 is routed
    through ``host_ns``, which does not forward: a SYN sent there is dropped
    without an answer, as by a host that is down or a firewall that drops.
    Adding an address of that range to ``host_ns`` (`bring_up`) makes it
    answer. All addresses are documentation ranges inside our namespaces;
    no packet leaves the machine."""

    HOST = "192.0.2.2"
    DROPPED = "198.51.100.7"

    def __init__(self, probe_etc=None):
        self.probe_ns = Netns(etc=probe_etc)
        try:
            self.host_ns = Netns()
        except BaseException:
            self.probe_ns.close()
            raise
        try:
            veth = f"ugpv{self.probe_ns.name[3:]}"[:15]
            subprocess.run(["ip", "-n", self.probe_ns.name, "link", "add", veth, "type", "veth",
                            "peer", "name", "peer0", "netns", self.host_ns.name],
                           check=True, capture_output=True)
            self.probe_ns.ip("addr", "add", "192.0.2.1/24", "dev", veth)
            self.probe_ns.ip("link", "set", veth, "up")
            self.host_ns.ip("addr", "add", f"{self.HOST}/24", "dev", "peer0")
            self.host_ns.ip("link", "set", "peer0", "up")
            self.probe_ns.ip("route", "add", "198.51.100.0/24", "via", self.HOST)
        except BaseException:
            self.close()
            raise

    def bring_up(self, address=DROPPED):
        self.host_ns.ip("addr", "add", f"{address}/32", "dev", "lo")

    def close(self):
        self.probe_ns.close()  # deleting a namespace deletes its end of the veth, and so both
        self.host_ns.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stop(proc, signum=signal.SIGTERM):
    """Send *signum* to a process we started, by its PID."""
    os.kill(proc.pid, signum)
