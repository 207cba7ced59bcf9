"""A small app for the real-software drill: PostgreSQL and Redis behind it, nginx in front.

    python3 drillapp.py --port 8080 --db HOST:5432 --redis HOST:6379 --log FILE [--daemon]

Standard library only (it runs with Debian's /usr/bin/python3 in the hosts).
It breaks **for good** when the database is missing at its start, as many real
apps do (a connection pool made once, at start): it then answers 503 on every
request until someone restarts it. A server that answers "starting up" (SQLSTATE
57P03: PostgreSQL listens during crash recovery, before it is ready, so no TCP
check can tell) is there: the app waits up to 5 s for it, as drivers' connect
retries do, and logs how long (``waited``). Otherwise GET /health asks PostgreSQL
(``select 1``) and Redis (``PING``) each time, and answers 200 if both answer.

Each start logs one JSON line to --log: ``{"event": "start", "time", "uptime", "pid",
"tag", "db": "ok"|reason, "redis": "ok"|reason}``; the database connection at
start carries ``application_name=TAG``, so PostgreSQL's own log
(log_connections) shows it. Then ``{"event": "listen", ...}`` just before its
port opens (so nothing can have reached it earlier).
``--daemon``: fork into the background after the start checks (as ``nohup
app &`` does without a fork: both shapes are Autoheal's).
"""

import argparse
import http.server
import json
import os
import socket
import struct
import sys
import time


# SQLSTATE 57P03: the server is there but still starting (crash recovery): it
# listens before it is ready, so a TCP check cannot tell.
CANNOT_CONNECT_NOW = b"57P03"
STARTING = "starting up"
START_PATIENCE = 5.0


def _address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def pg_select_one(address, tag, timeout=2.0):
    """Connect to PostgreSQL (trust auth), run ``select 1``; "ok" or why not."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            params = b"".join(k + b"\0" + v + b"\0" for k, v in (
                (b"user", b"postgres"), (b"database", b"postgres"), (b"application_name", tag.encode())))
            body = struct.pack("!I", 196608) + params + b"\0"
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            query = b"select 1\0"
            sent_query = False
            reader = sock.makefile("rb")
            while True:
                kind = reader.read(1)
                if not kind:
                    return "connection closed"
                length = struct.unpack("!I", reader.read(4))[0]
                payload = reader.read(length - 4)
                if kind == b"E":
                    fields = {f[:1]: f[1:] for f in payload.split(b"\0") if f}
                    if fields.get(b"C") == CANNOT_CONNECT_NOW:
                        return STARTING
                    return "error: " + payload.decode("utf-8", "replace").replace("\0", " ").strip()
                if kind == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
                    return "authentication required"
                if kind == b"Z":
                    if sent_query:
                        sock.sendall(b"X" + struct.pack("!I", 4))
                        return "ok"
                    sock.sendall(b"Q" + struct.pack("!I", len(query) + 4) + query)
                    sent_query = True
    except (OSError, struct.error) as exc:
        return f"{type(exc).__name__}: {exc}"


def redis_ping(address, timeout=2.0):
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
            return "ok" if answer.startswith(b"+PONG") else f"answered {answer[:40]!r}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def log(path, **event):
    event["time"] = time.time()
    with open("/proc/uptime") as file:  # the kernel's clock of process start times, to 10 ms
        event["uptime"] = float(file.read().split()[0])
    event["pid"] = os.getpid()
    with open(path, "a") as file:
        file.write(json.dumps(event) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=_address, required=True)
    parser.add_argument("--redis", type=_address, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--daemon", action="store_true")
    options = parser.parse_args()
    tag = f"drillapp-{os.getpid()}-{int(time.time() * 1000)}"
    began = time.monotonic()
    db = pg_select_one(options.db, tag)
    while db == STARTING and time.monotonic() - began < START_PATIENCE:
        time.sleep(0.1)
        db = pg_select_one(options.db, tag)
    cache = redis_ping(options.redis)
    broken = db != "ok"
    log(options.log, event="start", tag=tag, db=db, redis=cache, waited=round(time.monotonic() - began, 3))
    if options.daemon and os.fork():
        os._exit(0)
    # logged before the port opens: nothing can have connected to it earlier
    log(options.log, event="listen", broken=broken)
    server = http.server.ThreadingHTTPServer(("0.0.0.0", options.port), _handler(options, broken))
    server.serve_forever()


def _handler(options, broken):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if broken:
                status, body = 503, "broken for good: the database was missing at start\n"
            else:
                db = pg_select_one(options.db, "drillapp-health", timeout=1.0)
                cache = redis_ping(options.redis, timeout=1.0)
                status = 200 if db == cache == "ok" else 503
                body = f"db {db}; redis {cache}\n"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


if __name__ == "__main__":
    sys.exit(main())
