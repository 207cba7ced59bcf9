"""The http check: GET a URL, follow redirects, accept a status, match the body.

HTTP/1.1 over a bare socket (`_socket`, as in net.py): the request is
written here and the answer read by `_Response`, which parses the status
line and the headers, and reads the body only when a body regex asks for
it. ssl is imported for https only, urllib.parse only to follow a
redirect or send credentials, re only to match a body: http.client and
ssl, which the standard way costs even for plain http, take several times a
bare interpreter's start-up.

Bounded against hostile servers: the whole attempt (every connection, TLS
handshake, request, header and body read, across redirects) shares one
`Budget`; at most `MAX_REDIRECTS` redirects are followed; at most
`BODY_LIMIT` bytes of body are read, and only when a body regex asks for
them; a status or header line is at most `MAX_LINE` bytes and there are at
most `MAX_HEADERS` headers (http.client's limits). The server's bytes are
read as bytes: only the status code, and Location, Content-Type,
Content-Length and Transfer-Encoding, are taken from them.
Credentials in the URL are sent as Basic auth (to the same origin only,
like curl) and never appear in a reason.
"""

import _signal  # signal's C core: see wait.py
import _socket  # socket's C core: see net.py
import posix  # os's C core: see wait.py
import select
from time import monotonic

from .frame import Failed, adopt, children, kill_group, spawning
from .net import connect_any, is_address, reason, resolve
from .targets import UsageError, accepts, parse_url, printable, redact

MAX_REDIRECTS = 10
BODY_LIMIT = 1 << 20
MAX_LINE = 65536
MAX_HEADERS = 100
#: A TLS context (the parsed trust store) is reused this long, so a CA file
#: that changes is read again within a minute.
CONTEXT_TTL = 60.0

_REDIRECTS = (301, 302, 303, 307, 308)
#: The headers read from a response; the others are skipped.
_WANTED = (b"location", b"content-type", b"content-length", b"transfer-encoding")
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
        from urllib.parse import urljoin  # only when a server redirects

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
    https = url.scheme == "https"
    # The TLS context first: a CA file that cannot be read is the reason
    # to give, whether or not the server answers.
    context = _context(target.ca_file, target.insecure) if https else None
    port = _origin(url)[2]
    sock = connect_any(resolve(url.hostname, port, budget), budget, not is_address(url.hostname))
    doing = "sending the request"
    try:
        if context is not None:
            sock = _handshake(sock, url.hostname, context, budget)
        response = _Response(sock, budget)
        response.send(_request(url, port, https, credentials))
        doing = "waiting for the response"
        status = response.start()
        if accepts(target.status, status) or status not in _REDIRECTS:
            if target.body is None:
                return status, None, None
            doing = "reading the body"
            return status, None, (response.body(BODY_LIMIT), response.charset())
        location = response.headers.get(b"location")
        if not location:
            raise Failed(f"HTTP status {status} without a Location to follow")
        return status, location.decode("iso-8859-1"), None
    except _socket.timeout:
        raise budget.timed_out(doing) from None
    except OSError as error:
        if context is not None and _is_tls_error(error):
            raise Failed("TLS error: " + _tls_words(error)) from None
        raise Failed(reason(error)) from None
    finally:
        sock.close()


def _request(url, port, https, credentials):
    """The request's bytes: GET, HTTP/1.1, Connection: close, the headers
    http.client would send (Host, Accept-Encoding: identity, ...)."""
    host = url.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    if port != (443 if https else 80):
        host = f"{host}:{port}"
    target = _encode(url.path or "/") + (f"?{_encode(url.query)}" if url.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity",
             "User-Agent: unitgen-probe", "Accept: */*", "Connection: close"]
    if credentials is not None:
        lines.append(f"Authorization: {credentials}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class _Response:
    """The response on *sock*, read within *budget*: `start` reads the
    status line and the headers, `body` what follows. Every read waits at
    most until the budget's deadline (a per-read timeout alone would let a
    server that sends a byte a second hold the attempt for ever)."""

    def __init__(self, sock, budget):
        self._sock = sock
        self._budget = budget
        self._buffer = bytearray()
        self._ended = False
        self.headers = {}  # name in _WANTED -> its first value (bytes)

    def send(self, data):
        self._bound()
        self._sock.sendall(data)

    def start(self):
        """Read up to the end of the headers; return the status code.
        Informational (1xx) responses before it are skipped."""
        while True:
            line = self._line()
            if not line:
                raise Failed("the server closed the connection without answering")
            words = line.split(None, 2)
            code = words[1] if len(words) > 1 else b""
            if not words or not words[0].startswith(b"HTTP/") or not (len(code) == 3 and code.isdigit()) or code < b"100":
                raise Failed("not an HTTP response")
            self._headers()
            if not code.startswith(b"1"):
                return int(code)

    def _headers(self):
        self.headers = {}
        count, last = 0, None
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return
            count += 1
            if count > MAX_HEADERS:
                raise Failed(f"bad HTTP response: got more than {MAX_HEADERS} headers")
            if line[:1] in (b" ", b"\t"):  # a folded continuation of the header before
                if last is not None:
                    self.headers[last] += b" " + line.strip()
                continue
            name, _, value = line.partition(b":")
            last = name.strip().lower()
            if last in _WANTED and last not in self.headers:
                self.headers[last] = value.strip()
            else:
                last = None

    def body(self, limit):
        """At most *limit* bytes of the body: chunked, or up to
        Content-Length, or up to the end of the stream."""
        if self.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            return self._chunked(limit)
        length = self.headers.get(b"content-length", b"").strip()
        if length.isdigit():
            limit = min(limit, int(length))
        return self._read(limit)

    def _chunked(self, limit):
        data = bytearray()
        while len(data) < limit:
            size = self._line().partition(b";")[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF"):  # also the end of the stream
                raise Failed("the connection closed in the middle of the body")
            size = int(size, 16)
            if size == 0:
                break
            want = min(size, limit - len(data))
            chunk = self._read(want)
            data += chunk
            if len(chunk) < want:
                raise Failed("the connection closed in the middle of the body")
            if want == size:
                self._line()  # the CRLF after the chunk
        return bytes(data)

    def charset(self):
        """The charset named in Content-Type, else utf-8 (decoded with care
        by the matcher: any name a server gives falls back to utf-8)."""
        for param in self.headers.get(b"content-type", b"").split(b";")[1:]:
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"charset" and value.strip(b' "'):
                return value.strip(b' "').decode("iso-8859-1").lower()
        return "utf-8"

    def _line(self):
        """The next line, its line end included; b"" at the end of the stream."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0 and end < MAX_LINE:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                return line
            if end >= 0 or len(self._buffer) > MAX_LINE:
                raise Failed("bad HTTP response: a header line is too long")
            searched = len(self._buffer)
            if not self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def _read(self, size):
        """*size* bytes, fewer if the stream ends first."""
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _fill(self):
        """Read what the server sent next into the buffer; False at the end."""
        if self._ended:
            return False
        self._bound()
        data = self._sock.recv(65536)
        self._ended = not data
        self._buffer += data
        return bool(data)

    def _bound(self):
        left = self._budget.left()
        if left <= 0:
            raise _socket.timeout("timed out")
        self._sock.settimeout(left)


def _handshake(raw, host, context, budget):
    """*raw* (a connected `_socket.socket`) wrapped in TLS with *context*, within *budget*."""
    import socket
    import ssl

    sock = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
    left = budget.left()
    if left <= 0:
        sock.close()
        raise budget.timed_out("connecting")
    sock.settimeout(left)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except socket.timeout:
        sock.close()
        raise budget.timed_out("in the TLS handshake") from None
    except ssl.SSLCertVerificationError as error:
        sock.close()
        raise Failed(f"TLS error: certificate verify failed: {error.verify_message}") from None
    except ssl.SSLError as error:
        sock.close()
        raise Failed("TLS error: " + _tls_words(error)) from None
    except OSError as error:
        sock.close()
        raise Failed(f"TLS handshake failed: {reason(error)}") from None


def _context(ca_file, insecure):
    """A client TLS context, reused for `CONTEXT_TTL` seconds."""
    import ssl

    made, context = _contexts.get((ca_file, insecure), (None, None))
    if made is None or monotonic() - made > CONTEXT_TTL:
        if insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            import stat

            try:
                if ca_file is not None and not stat.S_ISREG(posix.stat(ca_file).st_mode):
                    # a FIFO or a device would block the attempt in open() for ever
                    raise _bad_ca_file(ca_file, "not a regular file")
                context = ssl.create_default_context(cafile=ca_file)
            except ssl.SSLError as error:
                raise _bad_ca_file(ca_file, _tls_words(error)) from None
            except OSError as error:
                raise _bad_ca_file(ca_file, reason(error)) from None
        _contexts[ca_file, insecure] = (monotonic(), context)
    return context


def _bad_ca_file(ca_file, why):
    return Failed(f"TLS error: cannot load the CA file {printable(ca_file)}: {why}")


def _is_tls_error(error):
    import ssl

    return isinstance(error, ssl.SSLError)


def _tls_words(error):
    """Short words for an ssl.SSLError: OpenSSL's reason, or the message
    without its source location."""
    import re
    import ssl

    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the connection during TLS"
    if getattr(error, "reason", None):
        words = error.reason.replace("_", " ").lower()
    else:
        words = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", error.strerror or str(error))
    if words == "wrong version number":
        words += " (is the server speaking plain HTTP?)"
    return words


def _origin(url):
    return url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80)


def _credentials(url):
    """The Basic Authorization value for a URL's user:password, or None."""
    if url.username is None:
        return None
    import binascii
    from urllib.parse import unquote

    pair = f"{unquote(url.username)}:{unquote(url.password or '')}"
    return "Basic " + binascii.b2a_base64(pair.encode(), newline=False).decode()


def _encode(text):
    """Percent-encode what cannot travel in a request line (non-ASCII, spaces, controls)."""
    return "".join(c if " " < c < "\x7f" else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in text)


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
    import re

    compiled = re.compile(pattern)
    read_fd, write_fd = posix.pipe2(posix.O_CLOEXEC)
    with spawning:  # the probe cannot stop between the fork and the adoption
        try:
            pid = posix.fork()
        except OSError as error:
            posix.close(read_fd)
            posix.close(write_fd)
            raise Failed(f"cannot match the body: cannot start a process: {reason(error)}") from None
        if pid == 0:
            _match_in_child(compiled, data, charset, write_fd, budget.left())
        posix.close(write_fd)
        try:
            posix.setpgid(pid, pid)  # as the child does: whoever runs first, it leads its group
        except OSError:
            pass
        adopt(pid)
    answer = b""
    try:
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        if poller.poll(int(budget.left() * 1000) + 1):
            answer = posix.read(read_fd, 1)
    finally:
        if answer not in (b"0", b"1"):
            kill_group(pid)
        _, status = posix.waitpid(pid, 0)
        children.discard(pid)
        posix.close(read_fd)
    if answer in (b"0", b"1"):
        return answer == b"1"
    if posix.WIFEXITED(status):  # it failed on its own (no memory?)
        raise Failed("cannot match the body: the matching process failed")
    raise budget.timed_out("matching the body", "the regular expression backtracks too much?")


def _match_in_child(compiled, data, charset, fd, seconds):
    """In the fork: match, write b"1" or b"0" to *fd*, exit; never returns.
    SIGALRM, at its default action, ends it after *seconds* whatever it is doing."""
    status = 1
    try:
        posix.setpgid(0, 0)
        _signal.set_wakeup_fd(-1)  # the probe's wake-up pipe is not ours to write
        for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGALRM):
            _signal.signal(signum, _signal.SIG_DFL)
        _signal.setitimer(_signal.ITIMER_REAL, max(seconds, 0.001))
        try:
            text = data.decode(charset, "replace")
        except Exception:  # not a text encoding, or a codec that fails on it
            text = data.decode("utf-8", "replace")
        posix.write(fd, b"1" if compiled.search(text) else b"0")
        status = 0
    finally:
        posix._exit(status)


def _shown(url_text):
    return printable(redact(url_text))
