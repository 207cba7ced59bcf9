"""The board's live page (unitgen/boardpage.py) without the bed: the server's
routes and headers, its refresher, and the page itself in headless Chromium
(tests/browser.py) with documents of the board's shape made here, hostile
strings included. The page during a real drill: tests/test_board_page_bed.py.

Screenshots go to $UNITGEN_ARTIFACTS when set, else to the test's tmp_path
(printed; run with -s to see where).
"""

import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.request
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import browser
from unitgen import boardpage, config, diagram
from unitgen.errors import UsageError

CONF = """\
version: 1
hosts:
  h1: {address: 10.248.0.11}
  h2: {address: 10.248.0.12}
  h3: {address: 10.248.0.13}
services:
  db: {host: h1, exec: [/bin/true], listen: 7001}
  cache: {host: h2, exec: [/bin/true], listen: 7002}
  api: {host: h2, exec: [/bin/true], listen: 7003, health: "http://{host}:7003/health",
        deps: [{service: db}, {service: cache}]}
  web: {host: h3, exec: [/bin/true], listen: 7004, health: "http://{host}:7004/health", deps: [{service: api}]}
"""
HOSTILE = '<img src=x id=injected>"\'&</script><script>document.title="owned"</script>'


def service(id_, state, wave, needs=(), waiting_on=(), ready_at=None, detail="", status_line=None, now=1.7e9):
    name, _, host = id_.partition("@")
    return {"id": id_, "service": name, "host": host, "state": state, "since": now - 30, "ready_at": ready_at,
            "wave": wave, "needs": list(needs), "waiting_on": list(waiting_on), "check": f"tcp {host}:7000",
            "detail": detail, "status_line": status_line, "status_source": "ssh" if status_line else "inferred",
            "replicas": None}


def document(now=1.7e9, detail=HOSTILE):
    services = [
        service("db@h1", "root-cause", 0, detail=detail, now=now),
        service("cache@h2", "ready", 0, ready_at=now - 12.5, now=now),
        service("api@h2", "waiting", 1, needs=["db@h1", "cache@h2"], waiting_on=["db@h1"],
                status_line=detail, now=now),
        service("web@h3", "down", 2, needs=["api@h2"], now=now),
    ]
    return {"version": 1, "time": now, "ready": 1, "total": 4, "all_ready": False, "down_since": now - 40,
            "estimate_left": 9.0, "root_causes": ["db@h1"],
            "hosts": [{"name": f"h{i}", "address": f"10.248.0.1{i}"} for i in (1, 2, 3)],
            "waves": [{"wave": 0, "ready": 1, "total": 2}, {"wave": 1, "ready": 0, "total": 1},
                      {"wave": 2, "ready": 0, "total": 1}],
            "services": services}


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(CONF)
    return config.load(str(path))


@pytest.fixture
def artifacts(tmp_path):
    where = Path(os.environ.get("UNITGEN_ARTIFACTS") or tmp_path / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    print(f"\nartifacts: {where}")
    return where


@contextmanager
def served(refresh, svg=None, interval=0.05, report=None, address="127.0.0.1", layout=None):
    with boardpage.Page(refresh, address, 0, svg, interval, report=report, layout=layout) as page:
        thread = threading.Thread(target=page.serve_forever, daemon=True)
        thread.start()
        try:
            yield page
        finally:
            page.close()
            thread.join()


def get(page, path, method="GET", host=None):
    connection = http.client.HTTPConnection(page.server.server_address[0], page.server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True)
        if host != "":  # "": no Host header at all
            connection.putheader("Host", host or f"127.0.0.1:{page.server.port}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def wait_for_document(page):
    for _ in range(500):
        if page.latest.get() is not None:
            return
        time.sleep(0.01)
    raise AssertionError("no document")


# -- the address ----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)),
                                             ("10.248.0.1:80", ("10.248.0.1", 80))])
def test_serve_takes_a_literal_address_and_port(text, expected):
    assert boardpage.parse_address(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "localhost:8080", "::1:8080", "127.0.0.1:", "127.0.0.1:http",
                                  "127.0.0.1:65536", "127.0.0.1:٨٠", "[::1]", "127.0.0.1:8080\n"])
def test_serve_refuses_what_is_not_address_and_port(text):
    with pytest.raises(UsageError):
        boardpage.parse_address(text)


def test_a_port_in_use_is_one_operational_error():
    with served(lambda: document()) as page:
        with pytest.raises(boardpage.UnitgenError, match=f":{page.server.port}:"):
            boardpage.Page(lambda: document(), "127.0.0.1", page.server.port, None)


# -- the server -----------------------------------------------------------------

def test_the_page_is_self_contained_under_a_nonce_policy():
    with served(lambda: document()) as page:
        status, headers, body = get(page, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f"script-src 'nonce-{nonce}'" in policy and f"style-src 'nonce-{nonce}'" in policy
    assert policy.startswith("default-src 'none';") and "connect-src 'self'" in policy
    dom = browser.parse(body.decode())
    scripts, styles = dom.find("script"), dom.find("style")
    assert len(scripts) == 1 and len(styles) == 1
    assert scripts[0].attrs == {"nonce": nonce} and styles[0].attrs == {"nonce": nonce}
    # Nothing loaded from anywhere: no element names another resource.
    assert not [e.tag for e in dom.walk() if {"src", "href"} & set(e.attrs)]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"


def test_each_page_gets_a_fresh_nonce():
    with served(lambda: document()) as page:
        policies = {get(page, "/")[1]["Content-Security-Policy"] for _ in range(3)}
    assert len(policies) == 3


def test_requests_read_the_latest_document_and_never_refresh():
    calls = []
    hold = threading.Event()

    def refresh():
        calls.append(1)
        if len(calls) > 1:
            hold.wait(30)  # the second refresh is still running while the requests come
        return document(now=1.7e9 + len(calls))

    with served(refresh) as page:
        wait_for_document(page)
        bodies = {get(page, "/board.json")[2] for _ in range(40)}
        count = len(calls)
        hold.set()
    assert count <= 2
    assert len(bodies) == 1 and json.loads(bodies.pop())["time"] == 1.7e9 + 1


def test_no_document_yet_is_503_then_the_document():
    hold = threading.Event()

    def refresh():
        hold.wait(30)
        return document()

    with served(refresh) as page:
        status, headers, _ = get(page, "/board.json")
        assert (status, headers["Retry-After"]) == (503, "1")
        hold.set()
        wait_for_document(page)
        status, headers, body = get(page, "/board.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == document()


def test_a_failing_refresh_keeps_the_last_document_and_says_why_once():
    calls, said = [], []
    failed_thrice = threading.Event()

    def refresh():
        calls.append(1)
        if len(calls) == 1:
            return document()
        if len(calls) >= 4:
            failed_thrice.set()
        raise OSError("the fleet is on fire")

    with served(refresh, report=said.append) as page:
        assert failed_thrice.wait(30)
        status, _, body = get(page, "/board.json")
    assert status == 200 and json.loads(body) == document()
    assert said == ["unitgen board: refresh failed: the fleet is on fire"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "127.0.0.1", ""])
def test_other_host_names_are_refused(host):
    with served(lambda: document()) as page:
        wait_for_document(page)
        status, _, body = get(page, "/board.json", host=host.format(port=page.server.port))
    assert status == 421 and b"version" not in body


def test_an_ipv6_address_is_bound_and_named_in_brackets():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with served(lambda: document(), address="::1") as page:
        wait_for_document(page)
        assert page.url == f"http://[::1]:{page.server.port}/"
        assert get(page, "/board.json", host=f"[::1]:{page.server.port}")[0] == 200
        assert get(page, "/board.json", host=f"localhost:{page.server.port}")[0] == 200
        assert get(page, "/board.json", host=f"::1:{page.server.port}")[0] == 421


def test_localhost_is_the_loopback_address_too():
    with served(lambda: document()) as page:
        wait_for_document(page)
        assert get(page, "/board.json", host=f"localhost:{page.server.port}")[0] == 200


def test_unknown_paths_and_methods_echo_nothing():
    with served(lambda: document()) as page:
        assert get(page, "/etc/passwd")[0] == 404
        assert get(page, "/board.json/..")[0] == 404
        status, _, body = get(page, "/<script>", method="POST")
        assert get(page, "/", method="HEAD")[2] == b""
    assert status == 501 and body == b"501\n"


def test_graph_svg_is_dot_layout_with_hex_ids(conf):
    svg = boardpage.graph_svg(conf)
    with served(lambda: document(), svg=svg) as page:
        status, headers, body = get(page, "/graph.svg")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml" and body == svg
    dom = browser.parse(svg.decode())
    ids = {bytes.fromhex(g.attrs["id"].replace("&#45;", "-")[2:]).decode() for g in dom.find("g", cls="node")
           if g.attrs["id"].startswith("u")}
    assert ids == {"db@h1", "cache@h2", "api@h2", "web@h3"}
    clusters = {g.attrs["id"] for g in dom.find("g", cls="cluster")}
    assert clusters == {diagram.element_id(h, "h") for h in ("h1", "h2", "h3")}


def test_the_page_is_served_while_dot_lays_out(conf):
    hold = threading.Event()
    svg = boardpage.graph_svg(conf)

    def layout():
        hold.wait(30)
        return svg

    with served(lambda: document(), layout=layout) as page:
        wait_for_document(page)
        status, headers, _ = get(page, "/graph.svg")
        assert (status, headers["Retry-After"]) == (503, "2")
        assert get(page, "/")[0] == 200 and get(page, "/board.json")[0] == 200
        hold.set()
        for _ in range(500):
            if not page.server.svg_pending:
                break
            time.sleep(0.01)
        assert get(page, "/graph.svg")[::2] == (200, svg)


def test_large_fleets_are_left_to_the_pages_own_layout(conf, monkeypatch):
    monkeypatch.setattr(boardpage, "DOT_NODES", 4)
    assert boardpage.graph_svg(conf) is not None  # db, cache, api, web
    monkeypatch.setattr(boardpage, "DOT_NODES", 3)
    assert boardpage.graph_svg(conf) is None


def test_no_graphviz_is_404_for_the_layout():
    with served(lambda: document(), svg=None) as page:
        assert get(page, "/graph.svg")[0] == 404


# -- the page in Chromium -------------------------------------------------------

def assert_page_shows(dom, doc):
    rows, nodes = browser.board_states(dom)
    expected = {s["id"]: s["state"] for s in doc["services"]}
    assert rows == expected
    assert nodes == {id_: (state, state, ("node", f"st-{state}")) for id_, state in expected.items()}
    assert [li.attrs["data-id"] for li in dom.by_id("root-list").find("li")] == doc["root_causes"]
    assert dom.by_id("count").text() == f"{doc['ready']} / {doc['total']}"
    waves = {li.attrs["data-wave"]: li.find("span", cls="wave-count")[0].text() for li in dom.by_id("waves").find("li")}
    assert waves == {str(w["wave"]): f"{w['ready']} / {w['total']}" for w in doc["waves"]}
    timeline = [g.attrs["data-id"] for g in dom.by_id("timeline").find("g", cls="row")]
    assert sorted(timeline) == sorted(expected)


def assert_nothing_injected(dom):
    assert not [e for e in dom.walk() if e.attrs.get("id") == "injected"]
    assert len(dom.find("script")) == 1
    assert dom.find("title")[0].text() == "unitgen board"
    # The hostile text is there, as text.
    assert HOSTILE in dom.by_id("root-list").text()
    says = {tr.attrs["data-id"]: tr.find("td")[7].text() for tr in dom.find("tr", attr="data-id")}
    assert says["api@h2"] == f"{HOSTILE} (ssh)"


@pytest.mark.parametrize("layout", ["graphviz", "builtin", "while dot lays out"])
def test_the_page_in_chromium_shows_each_state(layout, conf, tmp_path, artifacts):
    browser.require()
    doc = document(now=time.time())
    svg = boardpage.graph_svg(conf) if layout == "graphviz" else None
    assert (svg is not None) == (layout == "graphviz")
    hold = threading.Event()
    pending = (lambda: hold.wait(60) and None) if layout == "while dot lays out" else None
    try:
        with served(lambda: doc, svg=svg, layout=pending) as page:
            dom = browser.load(page.url, str(tmp_path / "profile"))
            shot = artifacts / f"board-page-{layout.replace(' ', '-')}.png"
            browser.screenshot(page.url, str(shot), str(tmp_path / "profile"))
    finally:
        hold.set()
    print(f"screenshot: {shot}")
    assert dom.by_id("graph").attrs["data-layout"] == ("graphviz" if layout == "graphviz" else "builtin")
    assert dom.find("body")[0].attrs["data-doc-time"] == repr(doc["time"])
    assert dom.find("body")[0].attrs["data-state"] == "recovering"
    assert_page_shows(dom, doc)
    assert_nothing_injected(dom)


def test_the_page_in_chromium_updates_in_place(conf, tmp_path):
    """The first /board.json the page gets says recovering, every later one all ready:
    the page, loaded once, ends showing the later one, having rendered more than once."""
    browser.require()
    now = time.time()
    first = document(now=now)
    later = document(now=now + 1)
    for s in later["services"]:
        s.update(state="ready", ready_at=now + 0.5, waiting_on=[])
    later.update(ready=4, all_ready=True, root_causes=[], estimate_left=0.0,
                 waves=[{"wave": w["wave"], "ready": w["total"], "total": w["total"]} for w in later["waves"]])
    served_bodies = []

    class Sequence(boardpage.Latest):
        def get(self):
            served_bodies.append(1)
            return json.dumps(first if len(served_bodies) == 1 else later).encode()

    with served(lambda: first, svg=boardpage.graph_svg(conf)) as page:
        page.server.latest = Sequence()
        dom = browser.load(page.url, str(tmp_path / "profile"))
    body = dom.find("body")[0]
    assert len(served_bodies) >= 2 and int(body.attrs["data-renders"]) >= 2
    assert body.attrs["data-doc-time"] == repr(later["time"]) and body.attrs["data-state"] == "all-ready"
    assert_page_shows(dom, later)


def test_the_page_in_chromium_says_when_the_board_cannot_be_reached(tmp_path):
    browser.require()
    hold = threading.Event()
    try:
        with served(lambda: hold.wait(60) and document()) as page:
            dom = browser.load(page.url, str(tmp_path / "profile"))
    finally:
        hold.set()
    assert dom.by_id("stale").text() == "no fresh data: HTTP 503"
    assert dom.find("body")[0].attrs["data-state"] == "loading"


# -- the command ------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--serve", "localhost:8080"], "--serve localhost:8080: 'localhost' is not an IP address"),
    (["--serve", "8080"], "--serve 8080: give ADDR:PORT"),
    (["--serve", "127.0.0.1:8080", "--watch"], "--serve refreshes by itself"),
    (["--serve", "127.0.0.1:8080", "--json"], "--serve refreshes by itself"),
])
def test_board_serve_usage_errors_exit_2(args, says, tmp_path):
    from clirunner import cli_runner
    from unitgen.cli import cli

    path = tmp_path / "conf.yaml"
    path.write_text(CONF)
    result = cli_runner().invoke(cli, ["board", str(path), *args])
    assert result.exit_code == 2 and says in result.stderr


def test_board_serve_serves_the_boards_document_until_interrupted(tmp_path):
    """The command end to end on loopback: a listening port is ready, a closed one the root cause;
    SIGTERM stops it, exit 1 since not all were ready. (During a drill: test_board_page_bed.py.)"""
    import signal
    import socket
    import subprocess
    import sys

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
    path = tmp_path / "conf.yaml"
    path.write_text(f"""\
version: 1
hosts:
  h1: {{address: 127.0.0.1}}
services:
  db: {{host: h1, exec: [/bin/true], listen: {closed.getsockname()[1]}}}
  api: {{host: h1, exec: [/bin/true], listen: {listening.getsockname()[1]}}}
""")
    unitgen = os.path.join(os.path.dirname(sys.executable), "unitgen")
    board = subprocess.Popen([unitgen, "board", str(path), "--serve", "127.0.0.1:0"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = board.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        for _ in range(600):
            try:
                with urllib.request.urlopen(url + "board.json", timeout=10) as response:  # loopback
                    document = json.load(response)
                    break
            except urllib.error.HTTPError as error:
                assert error.code == 503  # no refresh done yet
                time.sleep(0.1)
        else:
            raise AssertionError("no document")
    finally:
        board.send_signal(signal.SIGTERM)
        board.wait(timeout=30)
        listening.close()
        closed.close()
    assert {s["id"]: s["state"] for s in document["services"]} == {"db@h1": "root-cause", "api@h1": "ready"}
    assert document["root_causes"] == ["db@h1"]
    assert board.returncode == 1


def test_a_large_fleet_in_chromium_lists_what_is_not_ready_first(tmp_path):
    """Past 2,000 services the page draws no graph and lists 500 rows, not ready first,
    and 100 root causes, each with the count of the rest (the JSON has them all)."""
    browser.require()
    now = time.time()
    states = ["ready", "ready", "waiting", "root-cause"]
    services = [service(f"s{i}@h{i % 30}", states[i % 4], 1, now=now) for i in range(2100)]
    doc = dict(document(now=now), services=services, ready=1050, total=2100,
               root_causes=[s["id"] for s in services if s["state"] == "root-cause"])
    with served(lambda: doc) as page:
        dom = browser.load(page.url, str(tmp_path / "profile"))
    rows = [(tr.attrs["data-id"], tr.attrs["data-state"]) for tr in dom.find("tr", attr="data-id")]
    not_ready = [(s["id"], s["state"]) for s in services if s["state"] != "ready"]
    rank = {"root-cause": 0, "waiting": 2}
    assert rows == sorted(not_ready, key=lambda r: rank[r[1]])[:500]
    assert dom.by_id("rows-more").text() == "and 1600 more, all in board.json"
    roots = dom.by_id("root-list").find("li")
    assert [li.attrs.get("data-id") for li in roots[:100]] == doc["root_causes"][:100]
    assert roots[100].text() == "and 425 more" and len(roots) == 101
    assert not dom.by_id("graph").find("g", cls="node")
    assert dom.by_id("graph").text().startswith("2100 services: too many to draw here")
