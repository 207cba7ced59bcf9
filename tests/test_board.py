"""unitgen board on a loopback fleet: real sockets on 127.0.0.x, one address per
host, services that are down (a bound port that refuses) or up (listening,
answering HTTP), and the board's states, root causes, waves and history.

Times in the documents come from the Board's injected clock, never the wall clock.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
import threading

import pytest
import yaml

from clirunner import cli_runner, with_sigint
from unitgen import board, config, diagram, graph
from unitgen.cli import cli


class Listener:
    """A port at an address: bound (it refuses: down) until ``up()``, then it
    accepts; a GET is answered with ``status`` (200 by default)."""

    def __init__(self, address: str, served: "Served"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.port = self.sock.getsockname()[1]
        self.status = 200
        self.served = served

    def up(self) -> None:
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.served.add(self)

    def close(self) -> None:
        self.served.remove(self)
        self.sock.close()


class Served:
    """One thread that accepts on every listener that is up and answers HTTP."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def add(self, listener: Listener) -> None:
        with self.lock:
            self.selector.register(listener.sock, selectors.EVENT_READ, listener)
        self.wake_w.send(b"x")

    def remove(self, listener: Listener) -> None:
        with self.lock:
            try:
                self.selector.unregister(listener.sock)
            except (KeyError, ValueError):
                pass
        self.wake_w.send(b"x")

    def _serve(self) -> None:
        while self.running:
            with self.lock:
                pass
            for key, _ in self.selector.select(0.05):
                if key.data is None:
                    self.wake_r.recv(4096)
                    continue
                try:
                    conn, _ = key.fileobj.accept()
                except (BlockingIOError, OSError):
                    continue
                threading.Thread(target=self._answer, args=(conn, key.data.status), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket, status: int) -> None:
        conn.settimeout(2)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return  # a bare TCP check
                data += chunk
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join()


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loopback_fleet(tmp_path, served, hosts, services):
    """A conf of ``services`` ({name: (host or [hosts], kind "tcp"|"http", deps)})
    on ``hosts`` (name -> 127.0.0.x), each copy with its own Listener (down).
    Returns (conf, {(service, host): Listener})."""
    listeners = {}
    entries = {}
    port_of = {}
    for name, (where, kind, deps) in services.items():
        placed = where if isinstance(where, list) else [where]
        # one port for every copy of a service: bind it on each host's address
        for attempt in range(50):
            first = Listener(hosts[placed[0]], served)
            try:
                copies = {placed[0]: first}
                for host in placed[1:]:
                    other = Listener.__new__(Listener)
                    other.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    other.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    other.sock.bind((hosts[host], first.port))
                    other.port, other.status, other.served = first.port, 200, served
                    copies[host] = other
                break
            except OSError:
                first.sock.close()
        else:
            raise RuntimeError("no common free port")
        for host, listener in copies.items():
            listeners[(name, host)] = listener
        port_of[name] = first.port
        entry = {"host": where, "exec": ["/bin/true"]}
        if kind == "http":
            entry["health"] = f"http://{{host}}:{first.port}/health"
        else:
            entry["listen"] = first.port
        if deps:
            entry["deps"] = deps
        entries[name] = entry
    text = yaml.safe_dump({"version": 1, "hosts": {h: {"address": a} for h, a in hosts.items()},
                           "services": entries}, sort_keys=False)
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return config.load(str(path)), listeners


HOSTS = {"h1": "127.0.0.21", "h2": "127.0.0.22", "h3": "127.0.0.23"}


@pytest.fixture
def chain(tmp_path, served):
    """db@h1 <- api@h2 <- web@h1,h3 (replicated, health URLs)."""
    conf, listeners = loopback_fleet(tmp_path, served, HOSTS, {
        "db": ("h1", "tcp", []),
        "api": ("h2", "http", [{"service": "db"}]),
        "web": (["h1", "h3"], "http", [{"service": "api"}]),
    })
    yield conf, listeners
    for listener in listeners.values():
        listener.sock.close()


def by_id(document):
    return {s["id"]: s for s in document["services"]}


def test_everything_down_the_first_of_the_chain_is_the_root_cause(chain):
    conf, _ = chain
    clock = Clock()
    doc = board.Board(conf, clock=clock).refresh()
    s = by_id(doc)
    assert doc["root_causes"] == ["db@h1"]
    assert {i: x["state"] for i, x in s.items()} == {
        "db@h1": "root-cause", "api@h2": "waiting", "web@h1": "waiting", "web@h3": "waiting"}
    assert s["api@h2"]["waiting_on"] == ["db@h1"] and s["web@h3"]["waiting_on"] == ["api@h2"]
    assert s["web@h1"]["needs"] == ["api@h2"] and s["db@h1"]["needs"] == []
    assert s["db@h1"]["detail"] == "connection refused (port closed)"
    assert s["db@h1"]["check"] == f"{HOSTS['h1']}:{conf.services['db'].listen}"
    assert s["api@h2"]["check"] == f"http://{HOSTS['h2']}:{_port(conf, 'api')}/health"
    assert s["web@h1"]["replicas"] == {"ready": 0, "of": 2} and s["db@h1"]["replicas"] is None
    assert [(w["wave"], w["ready"], w["total"]) for w in doc["waves"]] == [(1, 0, 1), (2, 0, 1), (3, 0, 2)]
    assert (doc["ready"], doc["total"], doc["all_ready"], doc["down_since"]) == (0, 4, False, 1000.0)
    assert s["db@h1"]["since"] == 1000.0 and s["db@h1"]["ready_at"] is None
    assert s["db@h1"]["status_source"] == "inferred" and s["db@h1"]["status_line"] is None
    assert [h["name"] for h in doc["hosts"]] == ["h1", "h2", "h3"]
    assert doc["estimate_left"] == pytest.approx(graph.Graph(conf).recovery().total)


def _port(conf, name):
    from urllib.parse import urlsplit

    return urlsplit(conf.services[name].health.replace("{host}", "x")).port


def test_history_across_refreshes_and_the_root_cause_moves_along_the_chain(chain):
    conf, listeners = chain
    clock = Clock()
    b = board.Board(conf, clock=clock)
    b.refresh()
    listeners[("db", "h1")].up()
    clock.now = 1005.0
    doc = b.refresh()
    s = by_id(doc)
    assert s["db@h1"]["state"] == "ready" and s["db@h1"]["ready_at"] == 1005.0 and s["db@h1"]["since"] == 1005.0
    assert doc["root_causes"] == ["api@h2"] and s["api@h2"]["since"] == 1005.0
    assert s["web@h1"]["since"] == 1000.0  # still waiting, since the first round
    assert doc["waves"][0] == {"wave": 1, "ready": 1, "total": 1}
    assert doc["estimate_left"] < graph.Graph(conf).recovery().total  # db no longer left to do
    listeners[("api", "h2")].status = 503
    listeners[("api", "h2")].up()
    clock.now = 1010.0
    doc = b.refresh()
    assert by_id(doc)["api@h2"]["detail"] == "HTTP status 503"
    assert doc["root_causes"] == ["api@h2"]
    listeners[("api", "h2")].status = 200
    listeners[("web", "h1")].up()
    clock.now = 1020.0
    doc = b.refresh()
    s = by_id(doc)
    assert doc["root_causes"] == ["web@h3"] and s["web@h1"]["replicas"] == {"ready": 1, "of": 2}
    assert s["api@h2"]["ready_at"] == 1020.0
    listeners[("web", "h3")].up()
    clock.now = 1030.0
    doc = b.refresh()
    assert doc["all_ready"] and doc["ready"] == doc["total"] == 4 and doc["estimate_left"] == 0.0
    assert doc["down_since"] == 1000.0  # the outage it saw
    listeners[("db", "h1")].close()
    clock.now = 1040.0
    doc = b.refresh()
    assert doc["down_since"] == 1040.0 and doc["root_causes"] == ["db@h1"]  # a new outage
    assert by_id(doc)["api@h2"]["state"] == "ready"  # up, though what it needs is not: not waiting


def test_a_replicated_dependency_holds_its_dependent_until_its_need_answers(tmp_path, served):
    conf, listeners = loopback_fleet(tmp_path, served, HOSTS, {
        "kv": (["h1", "h2", "h3"], "http", []),
        "app": ("h1", "tcp", [{"service": "kv", "need": "quorum"}]),
    })
    b = board.Board(conf, clock=Clock())
    listeners[("kv", "h1")].up()
    s = by_id(b.refresh())
    assert s["app@h1"]["state"] == "waiting"
    assert s["app@h1"]["waiting_on"] == ["kv@h2", "kv@h3"] and s["app@h1"]["needs"] == ["kv@h1", "kv@h2", "kv@h3"]
    assert s["kv@h1"]["replicas"] == {"ready": 1, "of": 3}
    assert s["app@h1"]["groups"] == [{"name": "kv", "need": 2, "of": 3, "ready": 1,
                                      "ids": ["kv@h1", "kv@h2", "kv@h3"]}]
    listeners[("kv", "h3")].up()
    doc = b.refresh()
    s = by_id(doc)
    assert s["app@h1"]["state"] == "root-cause" and s["app@h1"]["waiting_on"] == []
    assert doc["root_causes"] == ["kv@h2", "app@h1"]
    assert s["kv@h2"]["replicas"] == {"ready": 2, "of": 3}
    assert "kv: 2 of 3 ready, need 2" in "\n".join(board.view(doc, colour=False))
    for listener in listeners.values():
        listener.sock.close()


def test_graph_ids_name_every_node_of_the_dot_drawing(chain):
    conf, _ = chain
    drawing = graph.Graph(conf)
    ids = board.graph_ids(drawing)
    dot = diagram.dot(drawing)
    for nid, bid in ids.items():
        assert f"  {nid} [label=" in dot or f"    {nid} [label=" in dot
    assert sorted(v for k, v in ids.items() if k.startswith("n")) == sorted(
        s["id"] for s in board.Board(conf, clock=Clock()).refresh()["services"])
    assert ids["r0"] == "web"


def test_check_all_keeps_order_and_bound(chain):
    conf, listeners = chain
    listeners[("db", "h1")].up()
    b = board.Board(conf, in_flight=1, clock=Clock())
    targets = [b.targets[n] for n in b.nodes]
    results = board.check_all(targets, 1, 1.0)
    assert [r.ok for r in results] == [True, False, False, False]


def test_the_file_descriptor_limit_bounds_checks_in_flight():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert board.fd_bound(10000) == (256 - 64) // 2
        assert board.fd_bound(10) == 10
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_command_exits_1_until_all_are_ready_and_prints_one_json_line_per_round(chain):
    conf, listeners = chain
    result = cli_runner().invoke(cli, ["board", conf.path, "--json"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert json.loads(line)["root_causes"] == ["db@h1"]
    for listener in listeners.values():
        listener.up()
    result = cli_runner().invoke(cli, ["board", conf.path, "--watch", "--json", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.output.splitlines()]
    assert docs[-1]["all_ready"] and docs[-1]["ready"] == 4


def test_the_terminal_view_lists_root_causes_first_without_colour_off_a_terminal(chain):
    conf, _ = chain
    result = cli_runner().invoke(cli, ["board", conf.path])
    assert result.exit_code == 1
    assert "\x1b" not in result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("root causes") and lines[2].startswith("  db@h1: connection refused")
    rows = [line.split()[:2] for line in lines[lines.index(next(x for x in lines if x.startswith("SERVICE"))) + 1:]]
    assert rows[0] == ["db@h1", "root-cause"] and {r[1] for r in rows[1:]} == {"waiting"}
    coloured = "\n".join(board.view(board.Board(conf, clock=Clock()).refresh(), colour=True))
    assert "\x1b[31m" in coloured


def test_ssh_answers_are_hostile_bytes_escaped_and_bounded(chain, tmp_path):
    conf, listeners = chain
    fake = tmp_path / "ssh"
    # Stands in for the operator's ssh: what a hostile host could send back.
    fake.write_text("#!/bin/sh\n"
                    "case \"$2\" in h2) echo 'Permission denied' >&2; exit 255;; esac\n"
                    "printf 'Id=db.service\\nActiveState=activating\\nSubState=start-pre\\n"
                    "StatusText=waiting for \\033[2Jnothing\\r\\n\\nId=web.service\\nActiveState=failed\\n"
                    "SubState=failed\\nStatusText=\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    b = board.Board(conf, ssh=True, clock=Clock(), ssh_command=[str(fake)])
    doc = b.refresh()
    s = by_id(doc)
    assert s["db@h1"]["status_line"] == "waiting for \\x1b[2Jnothing\\r"
    assert s["db@h1"]["status_source"] == "ssh" and s["db@h1"]["unit_state"] == "activating (start-pre)"
    assert s["web@h1"]["status_line"] is None and s["web@h1"]["unit_state"] == "failed (failed)"
    assert s["api@h2"]["status_source"] == "inferred"
    hosts = {h["name"]: h["ssh"] for h in doc["hosts"]}
    assert hosts["h1"] == "ok" and hosts["h2"].startswith("ssh h2: exit 255")
    assert "\x1b" not in "\n".join(board.view(doc, colour=False))


def test_parse_show_ignores_what_is_not_a_property():
    shown = board.parse_show(b"garbage\nId=a.service\nActiveState=active\nActiveState=failed\n\n\xff\xfe\n")
    assert shown == {"a.service": board.UnitSeen("active", "", "")}


def test_many_tcp_checks_at_once_say_what_the_probe_says_one_at_a_time():
    from unitgen_probe import Target, check
    from unitgen_probe.checks import check_tcp_many

    refusing = socket.socket()
    refusing.bind(("127.0.0.31", 0))  # bound, not listening: refuses
    accepting = socket.socket()
    accepting.bind(("127.0.0.31", 0))
    accepting.listen(8)
    full = socket.socket()
    full.bind(("127.0.0.31", 0))
    full.listen(0)  # never accepts: once its queue is full, SYNs are dropped
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
            fillers.append(filler)
        targets = [Target("tcp", f"127.0.0.31:{s.getsockname()[1]}") for s in (refusing, accepting, full)] * 3
        many = check_tcp_many(targets, 0.3, 2)
        one = [check(t, 0.3) for t in targets[:3]]
        assert [(r.ok, r.reason) for r in many] == [(r.ok, r.reason) for r in one] * 3
        assert [r.ok for r in one] == [False, True, False] and one[2].reason.startswith("timed out after 0.3 s")
    finally:
        for s in (refusing, accepting, full, *fillers):
            s.close()


@pytest.mark.parametrize("sigint", ["default", "ignored"])  # ignored: as a script's `cmd &` starts it
def test_ctrl_c_ends_a_watch_at_once_with_exit_1_when_not_all_are_ready(chain, sigint):
    import signal
    import subprocess
    import sys

    conf, _ = chain
    unitgen = os.path.join(os.path.dirname(sys.executable), "unitgen")
    process = subprocess.Popen(with_sigint(sigint, [unitgen, "board", conf.path, "--watch", "--json", "--interval",
                                                    "0.1"]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(process.stdout.readline())["root_causes"] == ["db@h1"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 1
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_conf_without_hosts_is_checked_at_this_machine(tmp_path, served):
    listener = Listener("127.0.0.1", served)
    try:
        path = tmp_path / "conf.yaml"
        path.write_text(f"version: 1\nservices:\n  db: {{exec: [/bin/true], listen: {listener.port}}}\n"
                        "  app: {exec: [/bin/true], deps: [{service: db}]}\n")
        conf = config.load(str(path))
        doc = board.Board(conf, clock=Clock()).refresh()
        assert [(s["id"], s["host"], s["state"]) for s in doc["services"]] == [
            ("db", None, "root-cause"), ("app", None, "unknown")]
        assert doc["hosts"] == [] and doc["total"] == 1 and doc["unknown"] == 1
        listener.up()
        assert board.run(conf, echo=lambda text: None) == 0  # app is unknown: not counted
    finally:
        listener.sock.close()
