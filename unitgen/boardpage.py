"""The fleet recovery board as a live page: ``unitgen board CONF --serve ADDR:PORT``.

One thread refreshes the board every interval and keeps the latest JSON
document; HTTP requests only read it, so no browser (nor a hundred of them)
can make the board check the fleet more often. Routes:

    /            one self-contained HTML page: CSS and JS inline, under a
                 Content-Security-Policy that allows nothing else (a nonce
                 per response for the page's own <style> and <script>)
    /board.json  the latest document (503 until the first refresh is done)
    /graph.svg   the fleet graph laid out by Graphviz's dot (the same graph
                 ``unitgen graph`` draws, diagram.dot(board=True)); 404 when
                 dot is not installed: the page then draws its own layout
                 (columns by plan wave, one band per host) from the JSON

Only the address given is bound, a literal IP address (no name is resolved,
no default is guessed). Requests whose Host header names anything else are
refused, so a web page elsewhere cannot reach the board by DNS rebinding.
Every string from the conf or the network reaches the page as text: the page
sets textContent, and SVG ids are hex (diagram.element_id).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import UnitgenError, UsageError, one_line

HERE = Path(__file__).resolve().parent
INTERVAL = 1.0
DOT_NODES = 500


def parse_address(text: str) -> Tuple[str, int]:
    """``ADDR:PORT`` (``[V6]:PORT`` for IPv6) into (address, port); the address
    must be a literal IP, the port 0-65535 (0: any free port, printed)."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise UsageError(f"--serve {text}: give ADDR:PORT, e.g. 127.0.0.1:8080 (no address is assumed)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--serve {text}: write an IPv6 address in brackets, e.g. [::1]:8080")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--serve {text}: {host!r} is not an IP address (names are not resolved)") from None
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise UsageError(f"--serve {text}: the port must be a number from 0 to 65535")
    return str(address), int(port)


def graph_svg(conf) -> Optional[bytes]:
    """Graphviz's layout of the conf's graph, with the ids the page colours; None without
    dot, or past DOT_NODES services (dot's time grows faster than the fleet, and no one
    reads such a picture; the page's own columns by wave serve)."""
    from . import diagram, graph

    drawing = graph.Graph(conf)
    if len(drawing.nodes) > DOT_NODES:
        return None
    try:
        return diagram.image(diagram.dot(drawing, board=True), "svg")
    except UnitgenError:
        return None


def page(nonce: str) -> bytes:
    """The HTML page, CSS and JS inline under ``nonce``."""
    text = (HERE / "boardpage.html").read_text("utf-8")
    for name, value in (("css", (HERE / "boardpage.css").read_text("utf-8")),
                        ("js", (HERE / "boardpage.js").read_text("utf-8")), ("nonce", nonce)):
        text = text.replace("{{" + name + "}}", value)
    return text.encode("utf-8")


def policy(nonce: str) -> str:
    return ("default-src 'none'; "
            f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Latest:
    """The latest document, as the bytes every request is served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: Optional[bytes] = None

    def set(self, document: dict) -> None:
        body = json.dumps(document, ensure_ascii=True, allow_nan=False).encode("ascii")
        with self._lock:
            self._body = body

    def get(self) -> Optional[bytes]:
        with self._lock:
            return self._body


class Refresher(threading.Thread):
    """Calls refresh() every interval (never two at once) and keeps its document."""

    def __init__(self, refresh: Callable[[], dict], latest: Latest, interval: float = INTERVAL,
                 report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)):
        super().__init__(name="board-refresh", daemon=True)
        self.refresh, self.latest, self.interval, self.report = refresh, latest, interval, report
        self.stopping = threading.Event()

    def run(self) -> None:
        said = None
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.latest.set(self.refresh())
                said = None
            except Exception as error:  # the page shows the last document's age; say why once
                line = f"unitgen board: refresh failed: {one_line(str(error)) or type(error).__name__}"
                if line != said:
                    self.report(line)
                    said = line
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self.stopping.set()


class Handler(http.server.BaseHTTPRequestHandler):
    server: "PageServer"
    server_version = "unitgen-board"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        if self.headers.get("Host", "").lower() not in self.server.host_names:
            return self._send(421, b"this board answers only to its own address\n", "text/plain", head)
        path = self.path.split("?", 1)[0]
        if path == "/":
            nonce = secrets.token_urlsafe(18)
            return self._send(200, page(nonce), "text/html; charset=utf-8", head, policy(nonce))
        if path == "/board.json":
            body = self.server.latest.get()
            if body is None:
                return self._send(503, b'{"error": "no refresh done yet"}', "application/json", head,
                                  extra={"Retry-After": "1"})
            return self._send(200, body, "application/json", head)
        if path == "/graph.svg":
            if self.server.svg_pending:
                return self._send(503, b"laying out\n", "text/plain", head, extra={"Retry-After": "2"})
            if self.server.svg is None:
                return self._send(404, b"no layout: Graphviz's dot is not installed\n", "text/plain", head)
            return self._send(200, self.server.svg, "image/svg+xml", head)
        return self._send(404, b"not found\n", "text/plain", head)

    def _send(self, code: int, body: bytes, kind: str, head: bool, csp: str = "default-src 'none'",
              extra: Optional[dict] = None) -> None:
        self.send_response(code)
        headers = {"Content-Type": kind, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                   "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", **(extra or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # Bad request lines and unknown methods: a plain answer, never the request echoed in HTML.
        self.close_connection = True
        self._send(code, f"{code}\n".encode("ascii"), "text/plain", head=self.command == "HEAD")

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request would drown the operator's terminal


class PageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: str, port: int, latest: Latest, svg: Optional[bytes]):
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), Handler)
        self.latest, self.svg = latest, svg
        self.svg_pending = False
        self.port = self.server_address[1]
        shown = f"[{address}]" if ":" in address else address
        names = {f"{shown}:{self.port}"}
        if ipaddress.ip_address(address).is_loopback:
            names.add(f"localhost:{self.port}")
        if self.port == 80:
            names |= {name.rsplit(":", 1)[0] for name in names}
        self.host_names = frozenset(names)
        self.url = f"http://{shown}:{self.port}/"


class Page:
    """The server and its refresher; ``with Page(...) as page: page.serve_forever()``.

    ``svg``: the layout; or ``layout``, a function that makes it, run in a thread of
    its own so that the page is served at once (/graph.svg is 503 until it is done)."""

    def __init__(self, refresh: Callable[[], dict], address: str, port: int, svg: Optional[bytes] = None,
                 interval: float = INTERVAL, report: Optional[Callable[[str], None]] = None,
                 layout: Optional[Callable[[], Optional[bytes]]] = None):
        self.latest = Latest()
        try:
            self.server = PageServer(address, port, self.latest, svg)
        except OSError as error:
            raise UnitgenError(f"--serve {address}:{port}: {error.strerror or error}") from None
        self.url = self.server.url
        self.refresher = Refresher(refresh, self.latest, interval, **({"report": report} if report else {}))
        self.refresher.start()
        if layout is not None:
            self.server.svg_pending = True
            threading.Thread(target=self._lay_out, args=(layout,), name="board-layout", daemon=True).start()

    def _lay_out(self, layout: Callable[[], Optional[bytes]]) -> None:
        try:
            self.server.svg = layout()
        finally:
            self.server.svg_pending = False

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.25)

    def close(self) -> None:
        """Stop serving (from another thread than serve_forever's) and refreshing."""
        self.refresher.stop()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc_info) -> None:
        self.refresher.stop()
        self.server.server_close()


def serve(refresh: Callable[[], dict], address: str, port: int, layout: Callable[[], Optional[bytes]],
          interval: float = INTERVAL, started: Callable[[str], None] = lambda url: None) -> None:
    """Serve the board until interrupted (KeyboardInterrupt returns)."""
    with Page(refresh, address, port, interval=interval, layout=layout) as page:
        started(page.url)
        try:
            page.serve_forever()
        except KeyboardInterrupt:
            pass


def run(conf, serve_at: str, *, interval: float = INTERVAL, in_flight: int, timeout: float, ssh: bool,
        ssh_config: Optional[str] = None, echo: Callable[[str], None] = print) -> int:
    """``unitgen board CONF --serve ADDR:PORT``: serve until Ctrl-C (SIGINT) or SIGTERM;
    exit 0 only when every service was ready at the last refresh, as without --serve."""
    import signal

    from .board import Board, freeze, ssh_command
    from .interrupt import ctrl_c

    address, port = parse_address(serve_at)
    board = Board(conf, in_flight=in_flight, timeout=timeout, ssh=ssh, ssh_command=ssh_command(ssh_config))
    freeze()  # the board lives as long as the page (board.freeze)
    last: Dict[str, Any] = {}

    def refresh() -> dict:
        document = board.refresh()
        last["all_ready"] = document["all_ready"]
        return document

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        with ctrl_c():
            serve(refresh, address, port, lambda: graph_svg(conf), interval,
                  started=lambda url: echo(f"serving the board at {url} (Ctrl-C stops)"))
    finally:
        board.stop.set()
        signal.signal(signal.SIGTERM, previous)
    return 0 if last.get("all_ready") else 1
