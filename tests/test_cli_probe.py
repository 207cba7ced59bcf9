"""unitgen probe CONF SERVICE: the service's dependencies, checked once, against real servers."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from unitgen.cli import cli
from clirunner import cli_runner


@pytest.fixture
def servers():
    """An open TCP port, a closed one, and an HTTP server answering 200 on / and 503 on /down."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503 if self.path == "/down" else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield listener.getsockname()[1], closed_port, http.server_address[1]
    http.shutdown()
    listener.close()


def _conf(tmp_path, open_port, closed_port, http_port, extra=""):
    path = tmp_path / "conf.yaml"
    path.write_text(f"""
version: 1
services:
  db:
    exec: [/bin/true]
    listen: {open_port}
  web:
    exec: [/bin/true]
    deps:
      - service: db
      - {{tcp: "127.0.0.1:{closed_port}", name: cache}}
      - {{http: "http://admin:hunter2@127.0.0.1:{http_port}/down", name: auth}}
      - {{http: "http://127.0.0.1:{http_port}/", status: [200]}}
{extra}""")
    return str(path)


def test_table_of_results(tmp_path, servers):
    conf = _conf(tmp_path, *servers)
    result = cli_runner().invoke(cli, ["probe", conf, "web"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "RESULT", "REASON", "LATENCY"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "ok" in rows["db"].split() and f"localhost:{servers[0]}" in rows["db"]
    assert "FAIL" in rows["cache"].split() and "connection refused (port closed)" in rows["cache"]
    assert "FAIL" in rows["auth"].split() and "HTTP status 503" in rows["auth"]
    assert "hunter2" not in result.output and "admin:" not in result.output


def test_json_and_exit_zero_when_all_answer(tmp_path, servers):
    open_port, _, http_port = servers
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"web:\n  script: x\n  dep:\n    - {{name: db, host: 127.0.0.1, port: {open_port}}}\n"
                    f"    - {{name: api, url: 'http://127.0.0.1:{http_port}/'}}\n")
    result = cli_runner().invoke(cli, ["probe", str(conf), "web", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["target"], r["kind"], r["ok"]) for r in rows] == [("db", "tcp", True), ("api", "http", True)]
    assert all(r["latency_ms"] >= 0 for r in rows)


def test_unknown_service(tmp_path, servers):
    conf = _conf(tmp_path, *servers)
    result = cli_runner().invoke(cli, ["probe", conf, "wbe"])
    assert result.exit_code == 2
    assert "no service named 'wbe'" in result.stderr and "did you mean 'web'?" in result.stderr
