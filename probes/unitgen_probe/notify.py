"""sd_notify(3) by hand: ``STATUS=`` datagrams to ``$NOTIFY_SOCKET``.

systemd shows the last STATUS in ``systemctl status``; it accepts it from an
ExecStartPre= process only with ``NotifyAccess=exec`` (or ``all``). The probe
sends STATUS only, never READY=1: it is not the service.
"""

import _socket  # socket's C core: see net.py
import posix  # os's C core: see wait.py

#: systemd drops a notification larger than its buffer (PIPE_BUF); a status
#: is cut well below that.
STATUS_MAX = 1024


class Notifier:
    """Sends STATUS lines to the socket named by NOTIFY_SOCKET: a path, or
    ``@name`` for the abstract namespace. Failures are ignored: telling
    systemd is a courtesy, never a reason for the probe to fail."""

    def __init__(self, address):
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls, environ=None):
        """A Notifier for $NOTIFY_SOCKET in *environ* (default: the process's
        environment), or None when not under systemd (or the socket is of a
        kind this does not speak, such as vsock)."""
        if environ is None:  # os.environ, decoded as os.fsdecode does, without importing os
            raw = posix.environ.get(b"NOTIFY_SOCKET", b"")
            address = raw.decode("utf-8", "surrogateescape")
        else:
            address = environ.get("NOTIFY_SOCKET", "")
        if address[:1] not in ("/", "@") or len(address) < 2:
            return None
        try:
            return cls(address)
        except OSError:  # no file descriptor left: a courtesy is the first thing to go
            return None

    def status(self, text):
        """Send ``STATUS=text`` (one line, cut to `STATUS_MAX` characters)."""
        text = " ".join(text.split("\n"))
        if len(text) > STATUS_MAX:
            text = text[:STATUS_MAX - 1] + "…"
        try:
            self._sock.sendto(f"STATUS={text}".encode(), self._address)
        except OSError:
            pass
