"""Headless Chromium for the board page's tests (Debian's ``chromium``, in .ci/debian-packages).

    dom = browser.load(url, profile_dir)            # the DOM once the page's JS has run
    dom.find(tag="tr", attr="data-id")              # elements, with .attrs, .text()
    browser.screenshot(url, png_path, profile_dir)

``prefix`` runs Chromium under another command (the bed's bridge namespace:
``fleet.keeper_command("-n")``). As root Chromium needs --no-sandbox; each
call gets a profile directory of its own, never the machine's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Dict, List, Optional, Sequence

import pytest

CHROMIUM = shutil.which("chromium")
# Virtual time: the page's fetches and timers run, then the DOM is taken.
BUDGET_MS = 4000
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def require() -> str:
    """Chromium's path; skip without it (fail with UNITGEN_REQUIRE_BED=1: CI installs it)."""
    if CHROMIUM is None:
        if os.environ.get("UNITGEN_REQUIRE_BED") == "1":
            pytest.fail("UNITGEN_REQUIRE_BED=1 but chromium is not installed (.ci/debian-packages)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


def _run(url: str, profile: str, flags: Sequence[str], prefix: Sequence[str], timeout: float) -> str:
    argv = [*prefix, require(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
            f"--virtual-time-budget={BUDGET_MS}", *flags, url]
    done = subprocess.run(argv, capture_output=True, timeout=timeout, start_new_session=True)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
    return done.stdout.decode("utf-8", "replace")


def load(url: str, profile: str, prefix: Sequence[str] = (), timeout: float = 120) -> "Element":
    """The page's DOM after its scripts ran (--dump-dom), parsed."""
    return parse(_run(url, profile, ["--dump-dom"], prefix, timeout))


def screenshot(url: str, path: str, profile: str, prefix: Sequence[str] = (), size=(1100, 820),
               timeout: float = 120) -> None:
    _run(url, profile, [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"],
         prefix, timeout)
    with open(path, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


class Element:
    def __init__(self, tag: str, attrs: Dict[str, str], parent: Optional["Element"]):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: List[object] = []  # Element or str

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def find(self, tag: Optional[str] = None, attr: Optional[str] = None, cls: Optional[str] = None) -> List["Element"]:
        return [e for e in self.walk() if (tag is None or e.tag == tag) and (attr is None or attr in e.attrs)
                and (cls is None or cls in e.attrs.get("class", "").split())]

    def by_id(self, id_: str) -> "Element":
        found = [e for e in self.walk() if e.attrs.get("id") == id_]
        assert len(found) == 1, f"{len(found)} elements with id {id_!r}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def board_states(dom: Element):
    """What the board's page shows per service: ({id: state} of the services table,
    {id: (data-state, the node's last text, its classes)} of the graph's nodes)."""
    rows = {tr.attrs["data-id"]: tr.attrs["data-state"] for tr in dom.find("tr", attr="data-id")}
    nodes = {}
    for node in dom.find("g", cls="node"):
        if node.attrs.get("id", "").startswith("u-"):
            label = bytes.fromhex(node.attrs["id"][2:]).decode()
            nodes[label] = (node.attrs.get("data-state"), node.find("text")[-1].text(),
                            tuple(node.attrs.get("class", "").split()))
    return rows, nodes


def parse(html: str) -> Element:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root
