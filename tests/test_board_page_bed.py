"""The board's live page during a real power-cut drill (tests/bed.py, tests/drill.py).

``unitgen board CONF --serve 127.0.0.1:0`` runs on the bridge, outside every
host, as an operator's machine would; headless Chromium (tests/browser.py)
loads the page there, in the same network namespace. The page's DOM must show
each service's state as the JSON document it rendered says (a recorder on the
bridge keeps every document the server published), and what the fleet is
really doing: with h1 still off, db is the root cause and what needs it
waits; once h1 is back, everything is ready, and the timeline lists services
in the order the board saw them become ready.

Screenshots (board-recovering.png, board-recovered.png) go to
$UNITGEN_ARTIFACTS when set, else to the test's tmp_path: printed (-s).
The README's picture is board-recovering.png (made small: tests/pngpalette.py).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import browser
import drill
import pngpalette
from clirunner import with_sigint

TOPOLOGY = drill.DRILL_TOPOLOGY
UNITGEN = os.path.join(os.path.dirname(sys.executable), "unitgen")
WAIT = 90.0

# Runs on the bridge: prints every new document the board serves, one line each.
RECORDER = """
import sys, time, urllib.request
url, last = sys.argv[1], None
while True:
    try:
        body = urllib.request.urlopen(url, timeout=5).read()
    except OSError:
        body = None
    if body and body != last:
        sys.stdout.write(body.decode() + "\\n")
        sys.stdout.flush()
        last = body
    time.sleep(0.1)
"""


class Served:
    """`unitgen board --serve` on the bridge, and a recorder of the documents it serves."""

    def __init__(self, fleet, conf_path):
        self.fleet = fleet
        # SIGINT inherited ignored, as a script's `cmd &` starts it: Ctrl-C stops it all the same
        self.board = subprocess.Popen(fleet.keeper_command("-n", *with_sigint("ignored", [
                                          UNITGEN, "board", str(conf_path), "--serve", "127.0.0.1:0"])),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True)
        line = self.board.stdout.readline()
        assert line.startswith("serving the board at http://127.0.0.1:"), line + self.board.stderr.read()
        self.url = line.split(" at ", 1)[1].split()[0]
        self.documents = {}
        self.lock = threading.Lock()
        self.recorder = subprocess.Popen(fleet.keeper_command("-n", sys.executable, "-c", RECORDER,
                                                              self.url + "board.json"),
                                         stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.recorder.stdout:
            document = json.loads(line)
            with self.lock:
                self.documents[repr(document["time"])] = document

    def latest(self):
        with self.lock:
            return max(self.documents.values(), key=lambda d: d["time"], default=None)

    def wait_for(self, predicate, what):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            document = self.latest()
            if document is not None and predicate(document):
                return document
            assert self.board.poll() is None, f"the board exited {self.board.returncode}: {self.board.stderr.read()}"
            time.sleep(0.2)
        raise AssertionError(f"the board never showed {what}; last document: {self.latest()}")

    def document_at(self, time_text):
        """The recorded document the page rendered (it published at time_text)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                if time_text in self.documents:
                    return self.documents[time_text]
            time.sleep(0.1)
        raise AssertionError(f"the page shows a document of time {time_text} that the server never published")

    def stop(self):
        """SIGINT (Ctrl-C) to the board; the recorder killed. Returns the board's exit status."""
        self.recorder.kill()
        self.recorder.wait()
        if self.board.poll() is None:
            self.board.send_signal(subprocess.signal.SIGINT)
        try:
            self.board.wait(timeout=30)
        finally:
            if self.board.poll() is None:
                self.board.kill()
                self.board.wait()
        return self.board.returncode


def page_shows(dom):
    """{id: state}, the same in the services table and the graph (each node's state, text and class)."""
    rows, nodes = browser.board_states(dom)
    assert nodes == {id_: (state, state, ("node", f"st-{state}")) for id_, state in rows.items()}, \
        "the graph and the table disagree"
    return rows


def load_and_compare(served, tmp_path, name):
    """Chromium loads the page on the bridge; its DOM matches the document it rendered."""
    prefix = served.fleet.keeper_command("-n")
    dom = browser.load(served.url, str(tmp_path / "profile"), prefix=prefix)
    body = dom.find("body")[0]
    document = served.document_at(body.attrs["data-doc-time"])
    shown = page_shows(dom)
    assert shown == {s["id"]: s["state"] for s in document["services"]}
    assert [li.attrs["data-id"] for li in dom.by_id("root-list").find("li")] == document["root_causes"]
    assert dom.by_id("count").text() == f"{document['ready']} / {document['total']}"
    assert body.attrs["data-state"] == ("all-ready" if document["all_ready"] else "recovering")
    assert dom.by_id("graph").attrs["data-layout"] == "graphviz"
    return dom, document


def test_the_page_shows_a_power_cut_drill_in_chromium(make_fleet, tmp_path):
    browser.require()
    artifacts = Path(os.environ.get("UNITGEN_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"\nartifacts: {artifacts}")
    fleet = make_fleet(TOPOLOGY.hosts)
    conf = drill.conf_text(fleet, TOPOLOGY)
    drill.install(fleet, TOPOLOGY, conf)
    conf_path = tmp_path / "conf.yaml"
    conf_path.write_text(conf)

    fleet.power_cut_all()
    # h1 (db, proxy) stays off: db is the root cause, what needs it waits.
    fleet.boot_all(["h2", "h3"], wait=False)
    served = Served(fleet, conf_path)
    try:
        ids = {f"{s.name}@{s.host}" for s in TOPOLOGY.services}
        served.wait_for(lambda d: d["root_causes"] == ["db@h1"] and
                        {s["id"]: s["state"] for s in d["services"]}.get("cache@h2") == "ready",
                        "db@h1 the root cause and cache@h2 ready")
        dom, document = load_and_compare(served, tmp_path, "recovering")
        states = {s["id"]: s["state"] for s in document["services"]}
        assert set(states) == ids
        assert states == {"db@h1": "root-cause", "cache@h2": "ready", "api@h2": "waiting",
                          "web@h3": "waiting", "proxy@h1": "waiting"}
        browser.screenshot(served.url, str(tmp_path / "recovering.png"), str(tmp_path / "profile"),
                           prefix=fleet.keeper_command("-n"))
        pngpalette.shrink(str(tmp_path / "recovering.png"), str(artifacts / "board-recovering.png"))  # README's

        fleet["h1"].boot(wait=False)
        drill.wait_healthy(fleet, TOPOLOGY)
        served.wait_for(lambda d: d["all_ready"], "every service ready")
        dom, document = load_and_compare(served, tmp_path, "recovered")
        assert set(page_shows(dom).values()) == {"ready"} and document["root_causes"] == []
        # The timeline: services in the order the board saw them become ready (no ready_at:
        # ready at the board's first round, cache may be).
        rows = [g.attrs["data-id"] for g in dom.by_id("timeline").find("g", cls="row")]
        ready_at = {s["id"]: s["ready_at"] for s in document["services"]}
        assert sorted(rows) == sorted(ids)
        assert rows == sorted(rows, key=lambda i: -1.0 if ready_at[i] is None else ready_at[i])
        assert None not in [ready_at[i] for i in ids - {"cache@h2"}]
        # ... never a dependent before what it needs (one refresh may see several become ready).
        for dependency, dependent in TOPOLOGY.edges():
            if dependency != "cache":
                assert ready_at[f"{dependency}@{TOPOLOGY[dependency].host}"] <= \
                    ready_at[f"{dependent}@{TOPOLOGY[dependent].host}"], (dependency, dependent)
        browser.screenshot(served.url, str(artifacts / "board-recovered.png"), str(tmp_path / "profile"),
                           prefix=fleet.keeper_command("-n"))
    finally:
        status = served.stop()
    assert status == 0  # every service was ready at the last refresh
    print(f"screenshots: {artifacts}/board-recovering.png, {artifacts}/board-recovered.png")
