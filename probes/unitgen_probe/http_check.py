"""The http check: GET a URL, follow redirects, accept a status, match the body.

Bounded against hostile servers: the whole attempt (every connection, TLS
handshake, request, header and body read, across redirects) shares one
`Budget`; at most `MAX_REDIRECTS` redirects are followed; at most
`BODY_LIMIT` bytes of body are read, and only when a body regex asks for
them; http.client's limits on header lines (64 KiB) and count (100) stay.
Credentials in the URL are sent as Basic auth (to the same origin only,
like curl) and never appear in a reason.
"""

import _signal  # signal's C core: see wait.py
import http.client
import os
import re
import select
import socket
import ssl  # http.client imports it anyway
import stat
from time import monotonic
from urllib.parse import quote, unquote, urljoin

from .frame import Failed, adopt, children, kill_group
from .net import connect_any, is_address, reason, resolve
from .targets import UsageError, accepts, parse_url, printable, redact

MAX_REDIRECTS = 10
BODY_LIMIT = 1 << 20
#: A TLS context (the parsed trust store) is reused this long, so a CA file
#: that changes is read again within a minute.
CONTEXT_TTL = 60.0

_REDIRECTS = (301, 302, 303, 307, 308)
_contexts: "dict[tuple[str | None, bool], tuple[float, object]]" = {}  # (ca_file, insecure) -> (made at, ssl.SSLContext)


def check_http(target, budget):
    """http URL: the final response after redirects has an accepted status
    (default any 2xx) and, with a body regex, a body that matches it."""
    url, text = target.address, target.spec
    credentials = _credentials(url)
    seen = {text}
    for hops in range(MAX_REDIRECTS + 1):
        status, location, body = _fetch(url, target, budget, credentials)
        where = f" after {hops} redirect{'s' * (hops > 1)}, at {_shown(text)}" if hops else ""
        if location is None:
            if not accepts(target.status, status):
                raise Failed(f"HTTP status {status}{where}")
            if body is not None and not _body_matches(target.body, *body, budget):
                raise Failed(f"HTTP status {status} but the body did not match "
                             f"/{printable(target.body)}/{where}")
            return f"HTTP status {status}{where}"
        origin = _origin(url)
        text = urljoin(text, _encode(location.strip()))
        if text in seen:
            raise Failed(f"redirect loop (back to {_shown(text)})")
        seen.add(text)
        try:
            url = parse_url(text, strict=False)
        except UsageError as error:
            raise Failed(f"redirect to an unusable URL: {error}") from None
        if url.username is not None or _origin(url) != origin:
            credentials = _credentials(url)
    raise Failed(f"too many redirects (more than {MAX_REDIRECTS})")


def _fetch(url, target, budget, credentials):
    """One GET: (status, Location to follow or None, (body bytes, charset) or None)."""
    conn = _Connection(url, target, budget)
    doing = "sending the request"
    try:
        conn.putrequest("GET", _encode(url.path or "/") + (f"?{url.query}" if url.query else ""))
        for header, value in (("User-Agent", "unitgen-probe"), ("Accept", "*/*"),
                              ("Connection", "close"), ("Authorization", credentials)):
            if value is not None:
                conn.putheader(header, value)
        conn.endheaders()
        doing = "waiting for the response"
        response = conn.getresponse()
        status = response.status
        if accepts(target.status, status) or status not in _REDIRECTS:
            if target.body is None:
                return status, None, None
            doing = "reading the body"
            return status, None, (response.read(BODY_LIMIT), response.headers.get_content_charset("utf-8"))
        location = response.getheader("Location")
        if not location:
            raise Failed(f"HTTP status {status} without a Location to follow")
        return status, location, None
    except socket.timeout:
        raise budget.timed_out(doing) from None
    except http.client.HTTPException as error:
        raise Failed(_http_error(error)) from None
    except ssl.SSLError as error:
        raise Failed("TLS error: " + _tls_words(error)) from None
    except OSError as error:
        raise Failed(reason(error)) from None
    finally:
        conn.close()


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection whose socket comes from `connect_any` (every address
    of the host, within the budget) and is bounded by the budget."""

    def __init__(self, url, target, budget):
        self._https = url.scheme == "https"
        self.default_port = 443 if self._https else 80
        super().__init__(url.hostname, url.port or self.default_port)
        self._target = target
        self._budget = budget

    def connect(self):
        budget = self._budget
        # The TLS context first: a CA file that cannot be read is the reason
        # to give, whether or not the server answers.
        context = _context(self._target.ca_file, self._target.insecure) if self._https else None
        raw = connect_any(resolve(self.host, self.port, budget), budget,
                          not is_address(self.host))
        sock = _PlainSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        if context:
            sock = _handshake(sock, self.host, context, budget)
        sock.budget = budget
        self.sock = sock


class _Bounded:
    """Socket mixin: every read and send waits at most until the deadline of
    the attempt's budget (a per-operation timeout alone would let a server
    that sends a byte a second hold the attempt for ever)."""

    def _bound(self):
        left = self.budget.left()
        if left <= 0:
            raise socket.timeout("timed out")
        self.settimeout(left)

    def recv_into(self, *args, **kwargs):
        self._bound()
        return super().recv_into(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self._bound()
        return super().sendall(*args, **kwargs)


class _PlainSocket(_Bounded, socket.socket):
    pass


class _TLSSocket(_Bounded, ssl.SSLSocket):
    pass


def _handshake(sock, host, context, budget):
    """Wrap *sock* in TLS with *context*, within *budget*."""
    left = budget.left()
    if left <= 0:
        sock.close()
        raise budget.timed_out("connecting")
    sock.settimeout(left)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except socket.timeout:
        raise budget.timed_out("in the TLS handshake") from None
    except ssl.SSLCertVerificationError as error:
        raise Failed(f"TLS error: certificate verify failed: {error.verify_message}") from None
    except ssl.SSLError as error:
        raise Failed("TLS error: " + _tls_words(error)) from None
    except OSError as error:
        raise Failed(f"TLS handshake failed: {reason(error)}") from None


def _context(ca_file, insecure):
    """A client TLS context, reused for `CONTEXT_TTL` seconds."""
    made, context = _contexts.get((ca_file, insecure), (None, None))
    if made is None or monotonic() - made > CONTEXT_TTL:
        if insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                if ca_file is not None and not stat.S_ISREG(os.stat(ca_file).st_mode):
                    # a FIFO or a device would block the attempt in open() for ever
                    raise _bad_ca_file(ca_file, "not a regular file")
                context = ssl.create_default_context(cafile=ca_file)
            except ssl.SSLError as error:
                raise _bad_ca_file(ca_file, _tls_words(error)) from None
            except OSError as error:
                raise _bad_ca_file(ca_file, reason(error)) from None
        context.sslsocket_class = _TLSSocket
        _contexts[ca_file, insecure] = (monotonic(), context)
    return context


def _bad_ca_file(ca_file, why):
    return Failed(f"TLS error: cannot load the CA file {printable(ca_file)}: {why}")


def _tls_words(error):
    """Short words for an ssl.SSLError: OpenSSL's reason, or the message
    without its source location."""
    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the connection during TLS"
    if getattr(error, "reason", None):
        words = error.reason.replace("_", " ").lower()
    else:
        words = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", error.strerror or str(error))
    if words == "wrong version number":
        words += " (is the server speaking plain HTTP?)"
    return words


def _http_error(error):
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, http.client.IncompleteRead):
        return "the connection closed in the middle of the body"
    if isinstance(error, http.client.LineTooLong):
        return "bad HTTP response: a header line is too long"
    if isinstance(error, http.client.BadStatusLine):
        return "not an HTTP response"
    return "bad HTTP response: " + printable(str(error))[:200]


def _origin(url):
    return url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80)


def _credentials(url):
    """The Basic Authorization value for a URL's user:password, or None."""
    if url.username is None:
        return None
    import base64

    pair = f"{unquote(url.username)}:{unquote(url.password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _encode(text):
    """Percent-encode what cannot travel in a request line (non-ASCII, spaces, controls)."""
    return "".join(quote(c) if c <= " " or not c.isascii() or c == "\x7f" else c for c in text)


def _body_matches(pattern, data, charset, budget):
    """Whether the body (decoded with *charset*) matches *pattern*, decided
    in a child process that cannot outlive the budget.

    Python's regular expressions backtrack, and a match runs in C holding
    the interpreter lock: `(a+)+$` on a 100 KB body would run for ever and
    keep even the main thread, and with it SIGTERM, waiting. So the match
    (and the decoding, whose cost depends on a charset the server names)
    runs in a fork of the probe, which an alarm kills when the budget is
    spent (even if the probe is gone), and which the attempt stops waiting
    for and kills at once when the budget is spent or the probe stops.
    """
    compiled = re.compile(pattern)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as error:
        os.close(read_fd)
        os.close(write_fd)
        raise Failed(f"cannot match the body: cannot start a process: {reason(error)}") from None
    if pid == 0:
        _match_in_child(compiled, data, charset, write_fd, budget.left())
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # as the child does: whoever runs first, it leads its group
    except OSError:
        pass
    adopt(pid)
    answer = b""
    try:
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        if poller.poll(int(budget.left() * 1000) + 1):
            answer = os.read(read_fd, 1)
    finally:
        if answer not in (b"0", b"1"):
            kill_group(pid)
        _, status = os.waitpid(pid, 0)
        children.discard(pid)
        os.close(read_fd)
    if answer in (b"0", b"1"):
        return answer == b"1"
    if os.WIFEXITED(status):  # it failed on its own (no memory?)
        raise Failed("cannot match the body: the matching process failed")
    raise budget.timed_out("matching the body", "the regular expression backtracks too much?")


def _match_in_child(compiled, data, charset, fd, seconds):
    """In the fork: match, write b"1" or b"0" to *fd*, exit; never returns.
    SIGALRM, at its default action, ends it after *seconds* whatever it is doing."""
    status = 1
    try:
        os.setpgid(0, 0)
        _signal.set_wakeup_fd(-1)  # the probe's wake-up pipe is not ours to write
        for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGALRM):
            _signal.signal(signum, _signal.SIG_DFL)
        _signal.setitimer(_signal.ITIMER_REAL, max(seconds, 0.001))
        try:
            text = data.decode(charset, "replace")
        except Exception:  # not a text encoding, or a codec that fails on it
            text = data.decode("utf-8", "replace")
        os.write(fd, b"1" if compiled.search(text) else b"0")
        status = 0
    finally:
        os._exit(status)


def _shown(url_text):
    return printable(redact(url_text))
