"""The conf boundary on a real systemd 252 host: what check accepts, the host's
systemd reads exactly as the conf said (seen with systemctl show and by the
process itself); what it refuses never reaches systemd, and the system's own
units stay as they were."""

from __future__ import annotations

import json
import sys

from test_escaping_bed import _wait_for

OUT = "/var/lib/conf-trust"
REPORT = ("import json, sys, time\n"
          "json.dump(sys.argv[2:], open(sys.argv[1], 'w'))\n"
          "time.sleep(1000)\n")
# Every line and paragraph separator, Unicode spaces, C1 controls, a BOM.
SEPARATED = ["a\x85b", "a\vb\fc", "a\x1c\x1d\x1eb", "\u2028[Install]\u2029", "\u00a0lead", "trail\u3000",
             "\u1680\u2000\u200a\u202f\u205f", "\x9b31m", "\ufeffbom"]


def _conf(services: str) -> str:
    return "version: 1\nservices:\n" + services


def test_separators_reach_the_process_and_systemd_exactly(make_fleet):
    host = make_fleet(["h1"])["h1"]
    argv = json.dumps(SEPARATED)  # JSON is YAML: a double-quoted flow sequence of escapes
    host.write_file("/etc/unitgen/conf.yaml", _conf(
        f"  report:\n    exec: [{json.dumps(sys.executable)}, -c, {json.dumps(REPORT)}, {OUT}/argv.json, "
        f"{argv[1:-1]}]\n    user: root\n"
        "    description: \"\\u00a0Web\\u00a0 ünï\"\n"
        "    systemd: {Service: {UMask: '0077'}}\n"))
    host.boot()
    host.run(["mkdir", "-p", OUT])
    host.run(["unitgen", "check", "/etc/unitgen/conf.yaml"])
    host.run(["unitgen", "render", "/etc/unitgen/conf.yaml", "-o", "/etc/systemd/system"])
    host.systemctl("daemon-reload")
    host.systemctl("start", "report.service")
    assert json.loads(_wait_for(host, f"{OUT}/argv.json")) == SEPARATED
    show = lambda prop: host.systemctl("show", "-p", prop, "--value", "report.service")  # noqa: E731
    assert show("Description") == "\u00a0Web\u00a0 ünï\n"
    assert show("UMask") == "0077\n"


def test_what_check_refuses_never_reaches_systemd(make_fleet):
    host = make_fleet(["h1"])["h1"]
    refused = {
        "hijack": '  web:\n    exec: [/bin/sleep, "1000"]\n    user: daemon\n'
                  '    description: "Web\\u2028[Install]\\u2028Alias=systemd-hostnamed.service"\n',
        "umask": "  web:\n    exec: [/bin/sleep, '1000']\n    user: daemon\n    systemd: {Service: {UMask: 0077}}\n",
        "relative": "  web:\n    exec: [bin/sleep, '1000']\n    user: daemon\n",
        "uid": "  web:\n    exec: [/bin/sleep, '1000']\n    user: '65535'\n",
        "sudo": "  web:\n    script: sudo -u daemon /bin/echo a#b && /usr/bin/id\n    user: daemon\n"
                "    systemd: {Service: {RestartSec: .nan}}\n",
    }
    host.boot()
    before = host.systemctl("show", "-p", "Names", "--value", "systemd-hostnamed.service")
    for name, services in refused.items():
        path = f"/etc/unitgen/{name}.yaml"
        host.write_file(path, _conf(services))
        for command in ("check", "render"):
            done = host.run(["unitgen", command, path, "-o", "/etc/systemd/system"][:3 if command == "check" else 5],
                            check=False)
            assert done.returncode == 2, (name, command, done.stdout, done.stderr)
            assert done.stderr.startswith(f"{path}:"), (name, command, done.stderr)
    assert not host.exists("/etc/systemd/system/web.service")
    host.systemctl("daemon-reload")
    assert host.systemctl("show", "-p", "Names", "--value", "systemd-hostnamed.service") == before
    assert host.systemctl("show", "-p", "LoadState", "--value", "web.service").strip() == "not-found"
