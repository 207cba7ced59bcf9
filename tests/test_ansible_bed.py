"""Issue 17, proven over SSH: ansible-core (the test extra) runs the example
playbook (examples/ansible/site.yml, the collection unitgen.fleet of this
checkout) from the bed's bridge, as a controller would, against three real
systemd hosts running Debian's sshd with keys this test generates.

The hosts' Python for Ansible is the machine's /usr/bin/python3 (Debian's);
unitgen goes into /opt/unitgen on each host (the role), from its wheel built
from this checkout and copied from the controller, and its dependencies from
a package index the controller serves on the bridge (tests/wheelhouse.py:
the releases this test environment runs): the hosts have no route anywhere
but the bridge, and no pip configuration (the machine's is blanked on their
disks), as a fresh Debian host.

The fleet is the power-cut drill's (tests/drill.py): five stand-ins in a chain
db -> api -> web -> proxy across h1-h3, judged from their own logs.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
import yaml

import controller
import drill
import wheelhouse
from controller import BIN, EXAMPLE

pytestmark = pytest.mark.skipif(bool(controller.unavailable()), reason=controller.unavailable() or "-")

TOPOLOGY = drill.DRILL_TOPOLOGY
SSHD_CONF = "/etc/ssh/sshd_config.d/unitgen-bed.conf"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
INDEX_PORT = 8719
PIP_CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.config/pip/pip.conf", "/root/.pip/pip.conf")
PLAYBOOK_TIMEOUT = 600  # a first run on this loaded 2-core machine took 176 s


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


class Controller:
    """The controller's side: keys, known_hosts, inventory, wheels, and ansible-playbook on the bridge."""

    def __init__(self, fleet, work: Path):
        self.fleet, self.work = fleet, work
        self.keys = work / "keys"
        self.keys.mkdir()
        self.client_key = self.keys / "id_ed25519"
        self.client_public = keygen(self.client_key)
        self.known_hosts = work / "known_hosts"
        self.conf = work / "conf.yaml"
        self.reports = work / "reports"
        self.reports.mkdir()
        self.wheels = wheelhouse.wheelhouse(work / "wheels")
        self.index = work / "index" / "simple"
        for wheel in self.wheels[1:]:  # PEP 503: a page per project (http.server's listing) linking its files
            project = self.index / re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
            project.mkdir(parents=True, exist_ok=True)
            os.link(wheel, project / wheel.name)
        self.index_server = None
        self.index_url = ""
        self.inventory = work / "inventory.ini"
        self.inventory.write_text("[fleet]\n" + "".join(f"{h.name} ansible_host={h.address}\n" for h in fleet)
                                  + "\n[fleet:vars]\nansible_user=root\n")
        self.report_play = controller.write_report_play(work)

    def serve_index(self) -> str:
        """The dependencies' index, on the bridge (10.248.0.1); stopped by close()."""
        self.index_server = subprocess.Popen(
            self.fleet.keeper_command("-n", sys.executable, "-m", "http.server", "--bind", "10.248.0.1",
                                      "--directory", str(self.index.parent), str(INDEX_PORT)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return f"http://10.248.0.1:{INDEX_PORT}/simple/"

    def close(self) -> None:
        if self.index_server is not None:
            self.index_server.kill()
            self.index_server.wait()

    def prepare_hosts(self) -> None:
        """Each host (powered off): its own host key, the controller's key authorized, sshd offering only it;
        no pip configuration."""
        lines = []
        for host in self.fleet:
            for path in PIP_CONFIGS:
                host.write_file(path, "")
            key = self.keys / f"{host.name}_host_key"
            public = keygen(key)
            host.write_file(HOST_KEY, key.read_bytes(), mode=0o600)
            host.write_file(HOST_KEY + ".pub", public)
            host.write_file(SSHD_CONF, f"HostKey {HOST_KEY}\nPasswordAuthentication no\n")
            host.write_file("/root/.ssh/authorized_keys", self.client_public, mode=0o600)
            lines.append(f"{host.address} {' '.join(public.split()[:2])}\n")
        self.known_hosts.write_text("".join(lines))

    def playbook(self, *args: str, **variables) -> subprocess.CompletedProcess:
        """The example playbook (then the report play) from the bridge; every host's unitgen_apply result in reports/."""
        for old in self.reports.glob("*.json"):
            old.unlink()
        env = controller.environment(
            self.work,
            ANSIBLE_PRIVATE_KEY_FILE=str(self.client_key),
            # one connection per host for the whole run (its master exits 15 s after the last task)
            ANSIBLE_SSH_ARGS=f"-F /dev/null -o ControlMaster=auto -o ControlPersist=15s "
                             f"-o UserKnownHostsFile={self.known_hosts} -o GlobalKnownHostsFile=/dev/null "
                             "-o StrictHostKeyChecking=yes",
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.work / "cp"),
            ANSIBLE_FORKS="3",
        )
        variables = {"unitgen_conf": str(self.conf), "unitgen_wheel": str(self.wheels[0]), "unitgen_wheelhouse": [],
                     "unitgen_pip_index_url": self.index_url, "unitgen_pip_extra_args": ["--trusted-host", "10.248.0.1"],
                     "report_dir": str(self.reports), **variables}
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(EXAMPLE / "site.yml"),
                str(self.report_play), "-e", json.dumps(variables), *args]
        begun = time.monotonic()
        result = self.fleet.run_on_bridge(controller.env_argv(env, argv), timeout=PLAYBOOK_TIMEOUT)
        print(f"ansible-playbook {' '.join(args)}: {time.monotonic() - begun:.1f} s")
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        return result

    def results(self) -> Dict[str, dict]:
        return {path.stem: json.loads(path.read_text()) for path in self.reports.glob("*.json")}


def pids(fleet) -> Dict[str, int]:
    return {name: int(state["MainPID"]) for name, state in drill.settled_states(fleet, TOPOLOGY).items()}


def units_of(host: str):
    return sorted(s.unit for s in TOPOLOGY.on(host))


def assert_started_in_order(events):
    """No stand-in ran while a dependency was down; each started once, after its dependencies' readiness."""
    assert not drill.ordering_violations(events), "\n".join(drill.ordering_violations(events))
    for service in TOPOLOGY.services:
        assert len(drill.starts(events, service.name)) == 1, (service.name, events)
    for dependency, dependent in TOPOLOGY.edges():
        assert drill.starts(events, dependent)[0]["time"] > drill.ready_times(events, dependency)[0], \
            f"{dependent} started before {dependency} was ready"


@pytest.fixture
def make_controller(make_fleet, tmp_path):
    made = []

    def make(names):
        made.append(Controller(make_fleet(names), tmp_path))  # Debian's ssh.service, enabled, starts in each
        return made[-1]
    yield make
    for ctl in made:
        ctl.close()


@pytest.fixture
def ctl(make_controller):
    return make_controller(TOPOLOGY.hosts)


def test_the_example_playbook_rolls_the_drill_fleet_out_over_ssh(ctl):
    fleet = ctl.fleet
    ctl.index_url = ctl.serve_index()
    ctl.prepare_hosts()
    fleet.boot_all()
    for host in fleet:
        host.wait_active("ssh.service")
        host.run(["install", "-d", "-m", "1777", drill.LOG_DIR])  # the stand-ins' own install step
    conf = yaml.safe_load(drill.conf_text(fleet, TOPOLOGY))
    ctl.conf.write_text(yaml.safe_dump(conf, sort_keys=False))

    # 1. first run: unitgen installed, the conf shipped, each host's part applied
    first = ctl.playbook()
    results = ctl.results()
    for host in fleet:
        assert host.read_file("/etc/unitgen/conf.yaml") == ctl.conf.read_text()
        assert host.exists("/opt/unitgen/bin/unitgen") and host.exists("/usr/local/bin/unitgen")
        assert results[host.name]["changed"] is True
        assert sorted(results[host.name]["units"]["added"]) == units_of(host.name), results[host.name]
        assert not any(job["result"] == "failed" for job in results[host.name]["jobs"])
        for service in TOPOLOGY.on(host.name):
            assert host.systemctl("is-enabled", service.unit).strip() == "enabled"
            if service.deps:  # the probe of the host's own install, by the interpreter of its venv
                text = host.read_file(f"{drill.UNIT_DIR}/{service.unit}")
                assert "\nExecStartPre=/opt/unitgen/bin/python" in text, text
    assert all(counts["changed"] > 0 for counts in controller.recap(first.stdout).values())
    drill.wait_healthy(fleet, TOPOLOGY)
    assert_started_in_order(drill.read_events(fleet, TOPOLOGY))
    before = pids(fleet)

    # 2. the same again: nothing changes anywhere, no unit restarted
    second = ctl.playbook()
    assert controller.recap(second.stdout) and all(
        counts["changed"] == 0 and counts["failed"] == 0 for counts in controller.recap(second.stdout).values()), \
        second.stdout[-4000:]
    assert all(r["changed"] is False and r["jobs"] == [] for r in ctl.results().values())
    assert pids(fleet) == before

    # 3. one service changed (web, on h3): --check --diff shows it and alters nothing
    conf["services"]["web"]["exec"][conf["services"]["web"]["exec"].index("--start-time") + 1] = "0.35"
    ctl.conf.write_text(yaml.safe_dump(conf, sort_keys=False))
    units_before = {h.name: {u: h.read_file(f"{drill.UNIT_DIR}/{u}") for u in units_of(h.name)} for h in fleet}
    check = ctl.playbook("--check", "--diff")
    counts = controller.recap(check.stdout)
    assert {name: c["changed"] for name, c in counts.items()} == {"h1": 0, "h2": 0, "h3": 1}, check.stdout[-4000:]
    results = ctl.results()
    assert results["h3"]["units"]["changed"] == ["web.service"] and results["h3"]["intended"]["restart"] == ["web.service"]
    (diff,) = results["h3"]["diff"]
    assert diff["before_header"] == diff["after_header"] == f"{drill.UNIT_DIR}/web.service"
    assert " 0.35 " in diff["after"] and " 0.35 " not in diff["before"]
    new_line = next(line for line in diff["after"].splitlines() if " 0.35 " in line)
    assert f"+{new_line}" in check.stdout  # the diff is shown
    assert all(results[h]["changed"] is False and results[h]["diff"] == [] for h in ("h1", "h2"))
    assert {h.name: {u: h.read_file(f"{drill.UNIT_DIR}/{u}") for u in units_of(h.name)} for h in fleet} == units_before
    assert fleet["h3"].read_file("/etc/unitgen/conf.yaml") != ctl.conf.read_text()  # the conf not shipped either
    assert pids(fleet) == before

    # 4. the change applied: changed=1 on h3 alone, web restarted, every other process kept
    changed = ctl.playbook()
    counts = controller.recap(changed.stdout)
    assert {name: c["changed"] for name, c in counts.items()} == {"h1": 0, "h2": 0, "h3": 1}, changed.stdout[-4000:]
    results = ctl.results()
    assert [(j["unit"], j["job"], j["result"]) for j in results["h3"]["jobs"]] == [("web.service", "restart", "ok")]
    assert results["h1"]["jobs"] == results["h2"]["jobs"] == []
    after = pids(fleet)
    assert after["web"] not in (before["web"], 0)
    assert {k: v for k, v in after.items() if k != "web"} == {k: v for k, v in before.items() if k != "web"}
    drill.wait_healthy(fleet, TOPOLOGY)

    # 5. the power-cut drill over the fleet the playbook set up
    seed = int(os.environ.get("UNITGEN_DRILL_SEED") or random.randrange(1 << 32))
    print(f"UNITGEN_DRILL_SEED={seed}")
    restored = drill.power_cycle(fleet, random.Random(seed))
    drill.wait_healthy(fleet, TOPOLOGY)
    assert_started_in_order(drill.read_events(fleet, TOPOLOGY, since=restored))
    states = drill.unit_states(fleet, TOPOLOGY)
    assert {name: s["ActiveState"] for name, s in states.items()} == {s.name: "active" for s in TOPOLOGY.services}


def test_generator_mode_ships_conf_d_and_installs_the_generator(make_controller):
    """unitgen_mode: generator, with unitgen and its dependencies from wheels copied
    from the controller (no index): the generator's units, from conf.yaml and conf.d,
    start at the next boot; a conf.d file the controller no longer has leaves the host."""
    ctl = make_controller(["g1"])
    ctl.prepare_hosts()
    ctl.fleet.boot_all()
    host = ctl.fleet["g1"]
    host.wait_active("ssh.service")
    server = lambda port: [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    ctl.conf.write_text(yaml.safe_dump({"version": 1, "hosts": {"g1": {"address": host.address}}, "services": {
        "db": {"host": "g1", "exec": server(8101), "listen": 8101}}}))
    conf_d = ctl.work / "conf.d"
    conf_d.mkdir()
    (conf_d / "web.yaml").write_text(yaml.safe_dump({"version": 1, "services": {
        "web": {"host": "g1", "exec": server(8102), "listen": 8102, "deps": [{"service": "db"}]}}}))
    generator = {"unitgen_mode": "generator", "unitgen_conf_d": str(conf_d), "unitgen_pip_index_url": "",
                 "unitgen_wheelhouse": [str(w) for w in ctl.wheels[1:]]}

    first = ctl.playbook(**generator)
    assert controller.recap(first.stdout)["g1"]["changed"] > 0
    assert host.read_file("/etc/unitgen/conf.d/web.yaml") == (conf_d / "web.yaml").read_text()
    assert host.run(["readlink", "/etc/systemd/system-generators/unitgen"]).stdout.strip() == \
        "/opt/unitgen/bin/unitgen-generator"
    for unit in ("db.service", "web.service"):
        assert host.systemctl("show", "-P", "FragmentPath", unit).strip() == f"/run/systemd/generator/{unit}"
    # unitgen is in place: the runs below leave installing out (the wheels' checks cost a
    # round trip each; the install's own idempotence is proven by the test above)
    generator["unitgen_install"] = False
    again = ctl.playbook(**generator)
    assert controller.recap(again.stdout)["g1"]["changed"] == 0, again.stdout[-3000:]

    host.power_cut()
    host.boot(wait=False)
    host.wait_active("db.service", "web.service")  # the generator's units, at boot, in order

    (conf_d / "web.yaml").unlink()
    gone = ctl.playbook(**generator)
    assert controller.recap(gone.stdout)["g1"]["changed"] > 0
    assert not host.exists("/etc/unitgen/conf.d/web.yaml")
    assert host.systemctl("show", "-P", "FragmentPath", "web.service").strip() == ""  # reloaded: no longer generated
