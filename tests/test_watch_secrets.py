"""The watcher never prints a URL's credentials, whatever they hold: not in
its journal lines (decisions), not in its status file (unitgen status)."""

from __future__ import annotations

import json

import pytest

from unitgen.watch import Dependency, Policy, Watched, save_state
from unitgen_probe import Target, check


@pytest.mark.parametrize("url", ["http://admin:PW1@PW2@127.0.0.1:1/health",    # an unencoded @
                                 "http://admin:PW1%2FPW2@127.0.0.1:1/health",  # an encoded /
                                 "http://PW1\u2028PW2@127.0.0.1:1/health"])    # a token with a line separator
def test_decisions_and_the_status_file_never_show_credentials(tmp_path, url):
    dep = Dependency(Target("http", url))
    watched = Watched("b.service", "restart", 2, 0.0, [dep])
    policy = Policy()
    lines = []
    for now in (0.0, 1.0):
        result = check(dep.target, 0.5)  # a real attempt: its reason is the probe's own
        event = policy.record(watched, dep, result, now, 1e9 + now)
        if event:
            lines.append(policy.decide(watched, dep, event, now, running=True).message)
    save_state(str(tmp_path / "watch.json"), [watched])
    shown = "\n".join(lines) + (tmp_path / "watch.json").read_text()
    assert lines and "lost http://127.0.0.1:1/health" in lines[0]
    assert json.loads((tmp_path / "watch.json").read_text())["units"]["b.service"]["lost"]
    assert "PW" not in shown and "admin" not in shown
