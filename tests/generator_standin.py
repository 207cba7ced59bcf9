"""A stand-in service for tests/test_generator_bed.py (standard library only).

    generator_standin.py NAME PORT [DELAY]

Appends a JSON line {"service", "event", "time"} to /var/log/standins.jsonl
at "start", waits DELAY seconds (a service that takes a while to load),
binds PORT, appends "listening" and only then listens: a dependent whose
probe got through started after that line. Each connection is answered
with NAME.
"""

import json
import os
import socket
import sys
import time

LOG = "/var/log/standins.jsonl"


def record(service: str, event: str) -> None:
    line = json.dumps({"service": service, "event": event, "time": time.time()}) + "\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    record(name, "start")
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    record(name, "listening")
    server.listen()
    while True:
        connection, _ = server.accept()
        connection.sendall(name.encode())
        connection.close()


if __name__ == "__main__":
    main()
