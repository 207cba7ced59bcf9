"""Sockets: bounded name resolution, connecting to any address, and the
tcp, unix and dns checks.

Every function here returns within the attempt's `Budget`: getaddrinfo,
which can block for many seconds and cannot be interrupted, runs on a
helper thread that the attempt stops waiting for when its time is up.

This module uses `_socket`, the C core of the socket module, directly:
socket.py adds enums, makefile() and selectors, which cost about 2.5 ms at
every start (7% of the interpreter's own start-up) and which these checks
do not use. Its API is the one documented for the socket module.
"""

import _socket
import errno
import posix  # os's C core: see wait.py
import _thread  # threading's C core: see wait.py
import select
from time import monotonic

from .frame import Failed

#: Start connecting to the next address this long after the previous one if
#: that one has not answered yet (RFC 8305's "connection attempt delay").
STAGGER = 0.25
#: Once every address has been tried, send a fresh SYN (a new socket, the
#: earlier ones kept waiting) this often to each address that has not
#: answered: the kernel retransmits a SYN only 1 s, then 3 s, 7 s... after
#: the first, so a host that comes back in the middle of an attempt would
#: otherwise be seen up to a second late (or at the next attempt). With
#: this, and the gap between attempts, a SYN leaves at least every ~0.4 s.
RESEND = 0.4
#: At most this many connections in flight in one attempt.
MAX_IN_FLIGHT = 8

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused (port closed)",
    errno.ETIMEDOUT: "timed out (host down or SYN dropped)",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EHOSTDOWN: "host down",
    errno.ECONNRESET: "connection reset",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied (blocked by a firewall?)",
    errno.EADDRNOTAVAIL: "no local address to connect from",
    errno.ENOENT: "no such file",
    errno.ENOTDIR: "no such file (a parent is not a directory)",
}

_GAI_REASONS = {
    _socket.EAI_NONAME: "no such host",
    _socket.EAI_NODATA: "no such host (the name has no address)",
    _socket.EAI_AGAIN: "name resolution failed for now (DNS server not answering?)",
    _socket.EAI_FAIL: "name resolution failed (DNS server error)",
}


def reason(error):
    """An operator's words for an OSError or an errno number."""
    if isinstance(error, _socket.gaierror):
        return _GAI_REASONS.get(error.errno, f"name resolution failed: {error.strerror}")
    number = error if isinstance(error, int) else error.errno
    if number in _ERRNO_REASONS:
        return _ERRNO_REASONS[number]
    text = posix.strerror(number) if number else str(error)
    return text[:1].lower() + text[1:]


# --- name resolution -------------------------------------------------------

class _Lookup:
    """One getaddrinfo call on a thread of its own, shared by every attempt
    that asks for the same name while it runs (a hung DNS server then costs
    one thread, not one per attempt). It forgets itself when done, so the
    next attempt resolves the name anew."""

    _running: "dict[tuple[str, int], _Lookup]" = {}
    _lock = _thread.allocate_lock()

    @classmethod
    def get(cls, host, port):
        with cls._lock:
            lookup = cls._running.get((host, port))
            if lookup is None:
                lookup = cls._running[host, port] = cls(host, port)
        return lookup

    def __init__(self, host, port):
        self.key = (host, port)
        self.answer = None
        self._done = _thread.allocate_lock()  # held until the answer is in
        self._done.acquire()
        _thread.start_new_thread(self._run, ())

    def _run(self):
        try:
            self.answer = _socket.getaddrinfo(*self.key, type=_socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            self.answer = error
        finally:
            with self._lock:
                del self._running[self.key]
            self._done.release()

    def wait(self, timeout):
        """Whether the answer is in within *timeout* seconds."""
        if not self._done.acquire(timeout=timeout):
            return False
        self._done.release()  # for the other attempts waiting
        return True


def resolve(host, port, budget):
    """getaddrinfo(host, port) for stream sockets, within *budget*.

    An IP address is converted at once, without a thread. Raises `Failed`
    with the reason when the name does not resolve in time or at all.
    """
    numeric = _numeric(host, port)
    if numeric:
        return numeric
    lookup = _Lookup.get(host, port)
    if not lookup.wait(budget.left()):
        raise budget.timed_out("resolving the name", "DNS server not answering")
    if isinstance(lookup.answer, UnicodeError):
        raise Failed(f"not a valid host name: {lookup.answer}")
    if isinstance(lookup.answer, OSError):
        raise Failed(reason(lookup.answer))
    return lookup.answer


def is_address(host):
    """Whether *host* is an IP address rather than a name."""
    return _numeric(host, 0) is not None


def _numeric(host, port):
    """getaddrinfo's answer for an IP address *host*, or None for a name.

    Plain addresses are converted by hand: the first getaddrinfo call of a
    process costs about 1 ms, which is most of a probe's own work.
    """
    for family, sockaddr in ((_socket.AF_INET, (host, port)),
                             (_socket.AF_INET6, (host, port, 0, 0))):
        try:
            _socket.inet_pton(family, host)
        except OSError:
            continue
        return [(family, _socket.SOCK_STREAM, _socket.IPPROTO_TCP, "", sockaddr)]
    try:  # IPv6 with a scope (fe80::1%eth0), IPv4 shorthands (127.1)
        return _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM,
                                  flags=_socket.AI_NUMERICHOST)
    except _socket.gaierror:
        return None


# --- connecting --------------------------------------------------------------

def connect_any(addresses, budget, name_them):
    """Connect to the first of *addresses* (getaddrinfo tuples) that accepts.

    The next address is tried when the previous one fails, or after
    `STAGGER` if it has not answered yet, so a host that drops SYNs on one
    address does not eat the budget of the others. Once all have been
    tried, each that has not answered gets a fresh SYN every `RESEND`
    seconds (earlier connections still count). Returns the connected
    socket, in blocking mode. Raises `Failed` with the reason of each
    address, in their order, naming the address when *name_them* is true
    or there are several.
    """
    addresses = list(addresses)
    reasons = [None] * len(addresses)  # None: no answer in time
    pending = {}  # fd -> (socket, index)
    poller = select.poll()
    started = 0
    next_start = monotonic()

    def drop(index):
        """Stop waiting for the other connections to the address at *index*."""
        for fd in [fd for fd, (_, i) in pending.items() if i == index]:
            poller.unregister(fd)
            pending.pop(fd)[0].close()

    try:
        while started < len(addresses) or pending:
            now = monotonic()
            if now >= budget.deadline:
                break
            if started < len(addresses) and (not pending or now >= next_start):
                batch, next_start = [started], now + STAGGER
                started += 1
            elif started == len(addresses) and now >= next_start:
                waiting = sorted({index for _, index in pending.values()})
                batch, next_start = waiting[:max(0, MAX_IN_FLIGHT - len(pending))], now + RESEND
            else:
                batch = []
            for index in batch:
                sock, error = _start_connect(addresses[index])
                if not error:
                    return sock
                if error == errno.EINPROGRESS:
                    pending[sock.fileno()] = (sock, index)
                    poller.register(sock, select.POLLOUT)
                else:
                    reasons[index] = reason(error)
                    drop(index)
            if batch:
                continue
            until = min(budget.deadline, next_start)
            for fd, _ in poller.poll(int((until - now) * 1000) + 1):
                if fd not in pending:  # dropped with its address earlier in this batch
                    continue
                sock, index = pending.pop(fd)
                poller.unregister(fd)
                error = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                if not error:
                    sock.setblocking(True)
                    return sock
                sock.close()
                reasons[index] = reason(error)
                drop(index)
    finally:
        for sock, _ in pending.values():
            sock.close()
    raise _failure([(address[4][0], why) for address, why in zip(addresses, reasons)],
                   budget, name_them)


def _start_connect(address):
    """Start a non-blocking connect: (socket, errno or 0)."""
    family, kind, proto, _, sockaddr = address
    sock = _socket.socket(family, kind, proto)
    sock.setblocking(False)
    error = sock.connect_ex(sockaddr)
    if error not in (0, errno.EINPROGRESS):
        sock.close()
    return sock, error


def _failure(failures, budget, name_them):
    """One `Failed` for all the addresses tried."""
    if not failures:
        return Failed("the name has no address to connect to")
    timeout = budget.timed_out(why="host down or SYN dropped").args[0]
    words = [(shown, timeout if why is None else why) for shown, why in failures]
    reasons = {why for _, why in words}
    if len(reasons) == 1 and not name_them:
        return Failed(words[0][1])
    if len(reasons) == 1 and len(words) > 1:
        return Failed(f"{words[0][1]} (all {len(words)} addresses)")
    return Failed("; ".join(f"{why} at {shown}" for shown, why in words))


# --- checks ----------------------------------------------------------------

def check_tcp(target, budget):
    """tcp HOST:PORT: a connection is accepted by any address of HOST."""
    host, port = target.address
    sock = connect_any(resolve(host, port, budget), budget, not is_address(host))
    try:
        return connected(sock, host)
    finally:
        sock.close()


def connected(sock, host):
    """The words for *sock* connected to a target given as *host*."""
    peer = sock.getpeername()[0]
    return f"connected to {peer}" if peer != host else "connected"


def check_unix(target, budget):
    """unix PATH: a unix stream socket accepts a connection."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(budget.left())
        sock.connect(target.address)
    except _socket.timeout:
        raise budget.timed_out(why="the listener's backlog is full") from None
    except OSError as error:
        if error.errno == errno.ECONNREFUSED:
            raise Failed("connection refused (nobody listening on the socket)") from None
        raise Failed(reason(error)) from None
    finally:
        sock.close()
    return "connected"


def check_dns(target, budget):
    """dns NAME: the name resolves to at least one address."""
    answers = resolve(target.address, None, budget)
    addresses = list(dict.fromkeys(info[4][0] for info in answers))
    more = f" and {len(addresses) - 3} more" if len(addresses) > 3 else ""
    return "resolves to " + ", ".join(addresses[:3]) + more
