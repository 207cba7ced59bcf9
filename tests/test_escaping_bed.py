"""Escaping, proven by its effect on a real systemd: the process a rendered unit
starts sees exactly the argv, environment and working directory the conf
asked for, and a script does under systemd exactly what /bin/sh -c does."""

from __future__ import annotations

import json
import sys
import time

import yaml

from test_render import HOSTILE

OUT = "/var/lib/escaping"
# Each writer writes a file of another name and renames it: the test reads it
# once it exists, complete, however slowly the machine runs.
REPORT = (
    "import json, os, sys, time\n"
    "with open(sys.argv[1] + '.part', 'w') as f:\n"
    "    json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(),\n"
    "               'env': {k: v for k, v in os.environ.items() if k.startswith('V')}}, f)\n"
    "os.rename(sys.argv[1] + '.part', sys.argv[1])\n"
    "time.sleep(1000)\n"
)
# Quotes of every kind, %, $, backslashes, substitutions, a tab, unicode, and a
# second line: the shell must see exactly this text.
SCRIPT = (
    "X='it'\\''s %h $1 \\n'; Y=\"%%i $X\"\n"
    "printf '[%s]\\n' \"$X\" \"$Y\" 'a\tb' '$HOME' \"\\$X\" `echo back tick` $(printf '%s' \"q\\\"q\") "
    "'100%' \"${X%%s*}\" \\; ';' 'é 日本 🚀' > \"$1\""
)


def _wait_for(host, path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not host.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared:\n{host.journal()[-3000:]}")
        time.sleep(0.2)
    return host.read_file(path)


def test_a_real_process_gets_exactly_what_the_conf_says(make_fleet):
    fleet = make_fleet(["h1"])
    host = fleet["h1"]
    workdir = "/srv/with space/%h and $dollar"
    conf = {"version": 1, "services": {
        "report": {
            "exec": [sys.executable, "-c", REPORT, f"{OUT}/report.json", *HOSTILE],
            "working_dir": workdir,
            "environment": {f"V{i}": s for i, s in enumerate(HOSTILE)},
            "user": "root",
        },
        "script": {"script": SCRIPT.replace('"$1"', f"{OUT}/systemd.part")
                   + f"; mv {OUT}/systemd.part {OUT}/systemd.out; sleep 1000", "user": "root"},
    }}
    host.write_file("/etc/unitgen/conf.yaml", yaml.safe_dump(conf, allow_unicode=True))
    host.write_file(f"{workdir}/.keep", "")
    host.boot()
    host.run(["mkdir", "-p", OUT])
    host.run(["unitgen", "render", "/etc/unitgen/conf.yaml", "-o", "/etc/systemd/system"])
    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "start", "report.service", "script.service"])

    seen = json.loads(_wait_for(host, f"{OUT}/report.json"))
    assert seen["argv"] == [f"{OUT}/report.json", *HOSTILE]
    assert seen["env"] == {f"V{i}": s for i, s in enumerate(HOSTILE)}
    assert seen["cwd"] == workdir

    under_systemd = _wait_for(host, f"{OUT}/systemd.out")
    host.run(["/bin/bash", "-c", SCRIPT, "bash", f"{OUT}/direct.out"])
    direct = host.read_file(f"{OUT}/direct.out")
    assert under_systemd == direct
    assert "[it's %h $1 \\n]\n[%%i it's %h $1 \\n]\n[a\tb]\n[$HOME]\n[$X]\n" in direct
    assert "[q\"q]\n[100%]\n[it']\n[;]\n[;]\n[é 日本 🚀]\n" in direct
