"""``unitgen apply --json`` without systemd: unitgen's own errors, as one JSON
object on stdout (with the exit code), the same one line on stderr.

What it reports of a real apply (units, jobs, changed, redacted diffs) is
proven on systemd 252 in tests/test_apply.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITGEN = [sys.executable, "-m", "unitgen"]


def apply_json(*args: str) -> "tuple[dict, subprocess.CompletedProcess]":
    result = subprocess.run([*UNITGEN, "apply", "--json", *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stdout.splitlines()  # one JSON object, nothing else on stdout
    return json.loads(line), result


def test_a_bad_conf_is_its_first_problem_with_exit_2_and_every_problem_listed(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text("version: 1\nservices:\n  a:\n    exec: 5\n  b:\n    exec: [/bin/true]\n    restart_sec: -1\n")
    data, result = apply_json(str(conf), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and data["exit_code"] == 2 and data["failed"] is True
    assert data["changed"] is False and data["units"] == {"added": [], "changed": [], "removed": [], "unchanged": []}
    assert data["problems"][0].startswith(f"{conf}:4:11: services.a.exec: ")
    assert data["problems"][1].startswith(f"{conf}:7:") and len(data["problems"]) == 2
    assert data["error"] == data["problems"][0] + " (and 1 more problem)"
    assert result.stderr.splitlines() == data["problems"]  # the CLI's own lines, unchanged
    assert not (tmp_path / "out").exists()


def test_no_bus_is_unitgens_one_line_error_with_exit_1(tmp_path):
    data, result = apply_json(str(ROOT / "examples/conf.yaml"), "--host", "app1", "-o", str(tmp_path / "out"),
                              "--bus-address", f"unix:path={tmp_path}/no-bus")
    assert result.returncode == 1 and data["exit_code"] == 1 and data["failed"] is True
    assert data["error"].startswith(f"unitgen: no D-Bus system bus at unix:path={tmp_path}/no-bus ")
    assert result.stderr == data["error"] + "\n"
    assert data["host"] == "app1" and data["changed"] is False and data["problems"] == []


def test_a_host_missing_from_the_conf_is_a_usage_error(tmp_path):
    data, result = apply_json(str(ROOT / "examples/conf.yaml"), "--host", "nosuchhost", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and data["exit_code"] == 2
    assert data["error"].startswith("unitgen: ") and "nosuchhost" in data["error"]
    assert "\n" not in data["error"]
