"""unitgen board on the bed: three real systemd hosts running the drill's
stand-ins, a power cut, a random restore order, and the board run from the
bridge (outside every host, as an operator's machine) with --watch --json;
and once with --ssh, through each host's own sshd (Debian's openssh-server).

The judges are the stand-ins' own logs (when each began serving) and the
board's documents: the order in which the board saw services become ready
is the order of the logs, the service made to fail on purpose is the one
root cause once its dependents wait for it, and the board exits 0 once all
are ready. The restore order comes from a seed, printed (run with -s); set
UNITGEN_DRILL_SEED to replay it. Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

import bed
import drill
from unitgen.board import view

TOPOLOGY = drill.DRILL_TOPOLOGY
UNITGEN = os.path.join(os.path.dirname(sys.executable), "unitgen")
FAIL_DROPIN = "/etc/systemd/system/db.service.d/fail-on-purpose.conf"


@pytest.fixture
def rng():
    seed = int(os.environ.get("UNITGEN_DRILL_SEED") or random.randrange(1 << 32))
    print(f"\nUNITGEN_DRILL_SEED={seed}")
    return random.Random(seed)


def operator_ssh(fleet: bed.Fleet, directory) -> str:
    """An operator's ssh config reaching every host as root with a key of its own
    (its public half in each host's /root/.ssh/authorized_keys); its path."""
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    for host in fleet:
        host.write_file("/root/.ssh/authorized_keys", (directory / "id_ed25519.pub").read_text(), mode=0o600)
    config = directory / "ssh_config"
    config.write_text("".join(f"Host {h.name}\n  HostName {h.address}\n" for h in fleet) +
                      f"Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    return str(config)


class BoardProcess:
    """``unitgen board CONF --watch --json`` on the bridge; its documents, as they come."""

    def __init__(self, fleet: bed.Fleet, conf_path: str):
        argv = [UNITGEN, "board", conf_path, "--watch", "--json", "--interval", "0.2", "--timeout", "0.5"]
        self.process = subprocess.Popen(fleet.keeper_command("-n", *argv), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.documents: list = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.documents.append(json.loads(line))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, what, timeout: float, why: str) -> dict:
        """The first document (from now on) for which what(document) holds."""
        deadline = time.monotonic() + timeout
        seen = len(self.documents)
        with self.changed:
            while True:
                for document in self.documents[seen:]:
                    if what(document):
                        return document
                seen = len(self.documents)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self.reader.is_alive()):
                    last = self.documents[-1] if self.documents else None
                    raise AssertionError(f"the board never showed {why}; last document: {last}")
                self.changed.wait(min(left, 1.0))

    def wait_exit(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def states(document) -> dict:
    return {s["service"]: s["state"] for s in document["services"]}


def first_ready_rounds(documents, since_round: int) -> dict:
    """{service: index of the first document, from since_round on, that has it ready}."""
    rounds = {}
    for index, document in enumerate(documents[since_round:], since_round):
        for name, state in states(document).items():
            if state == "ready" and name not in rounds:
                rounds[name] = index
    return rounds


def test_the_board_follows_a_restore_names_the_root_cause_and_exits_0_once_all_are_ready(make_fleet, rng, tmp_path):
    fleet = make_fleet(TOPOLOGY.hosts)
    conf = drill.conf_text(fleet, TOPOLOGY)
    drill.install(fleet, TOPOLOGY, conf)
    conf_path = tmp_path / "conf.yaml"  # the operator's copy, on the machine
    conf_path.write_text(conf)
    ssh_config = operator_ssh(fleet, tmp_path)
    fleet.power_cut_all()
    # db is made to fail on purpose: its unit cannot start until the drop-in goes.
    fleet["h1"].write_file(FAIL_DROPIN, "[Service]\nExecStartPre=/bin/false\n")
    board = BoardProcess(fleet, str(conf_path))
    try:
        everything_down = board.wait_for(lambda d: True, 30, "a first document")
        assert everything_down["ready"] == 0 and everything_down["total"] == len(TOPOLOGY.services)
        # Powered off, a host is silent: what needs nothing (db, cache) is where to look first.
        assert sorted(everything_down["root_causes"]) == ["cache@h2", "db@h1"]
        assert {s: x for s, x in states(everything_down).items() if x != "root-cause"} == \
            {"api": "waiting", "web": "waiting", "proxy": "waiting"}

        order = drill.random_order(fleet, rng)
        gaps = [0.0] + [rng.uniform(0.0, 1.5) for _ in order[1:]]
        print(f"restore order {order}, gaps {[round(g, 2) for g in gaps]}")
        restored = time.time()
        fleet.boot_all(order, gaps, wait=False)

        # Every host up (h1's network answers: db's port refuses), cache serving: db, failing on
        # purpose, is the one root cause; the rest wait for it.
        def db_refuses(d):
            return next(s for s in d["services"] if s["service"] == "db")["detail"] == \
                "connection refused (port closed)"

        blamed = board.wait_for(lambda d: states(d)["cache"] == "ready" and d["root_causes"] == ["db@h1"]
                                and db_refuses(d), 60, "db@h1 as the one root cause, its host up")
        print("\n".join(view(blamed, colour=False)))
        by_name = {s["service"]: s for s in blamed["services"]}
        assert states(blamed) == {"db": "root-cause", "cache": "ready", "api": "waiting", "web": "waiting",
                                  "proxy": "waiting"}
        assert by_name["api"]["waiting_on"] == ["db@h1"] and by_name["web"]["waiting_on"] == ["api@h2"]
        assert sorted(by_name["proxy"]["waiting_on"]) == ["db@h1", "web@h3"]
        assert blamed["waves"][0]["ready"] == 1 and blamed["down_since"] == everything_down["time"]

        # --ssh, through the operator's ssh (the hosts' own sshd, Debian's ssh.service): each
        # unit's state and STATUS=, where its probe says what it waits for.
        for host in fleet:  # the host that booted last may not have started its sshd yet
            host.wait_active("ssh.service")
        asked = fleet.run_on_bridge([UNITGEN, "board", str(conf_path), "--json", "--timeout", "0.5",
                                     "--ssh-config", str(ssh_config)], timeout=60)
        assert asked.returncode == 1, asked.stderr
        told = {s["service"]: s for s in json.loads(asked.stdout)["services"]}
        assert {h["name"]: h["ssh"] for h in json.loads(asked.stdout)["hosts"]} == \
            {"h1": "ok", "h2": "ok", "h3": "ok"}
        assert told["api"]["status_source"] == "ssh" and told["web"]["status_source"] == "ssh"
        assert told["api"]["status_line"].startswith("waiting for db (")
        assert told["web"]["status_line"].startswith("waiting for api (")
        assert told["db"]["status_source"] == "ssh" and not told["db"]["unit_state"].startswith("active")
        assert told["cache"]["status_source"] == "inferred"  # ready: nothing to ask
        print(f"--ssh: api: {told['api']['status_line']!r}; db: {told['db']['unit_state']}")

        fixed_round = len(board.documents)
        h1 = fleet["h1"]
        h1.run(["rm", FAIL_DROPIN])
        h1.systemctl("daemon-reload")
        h1.systemctl("reset-failed", "db.service", check=False)
        h1.systemctl("restart", "db.service")
        assert board.wait_exit(drill.RECOVERY_TIMEOUT) == 0
    finally:
        board.close()
    documents = board.documents
    last = documents[-1]
    assert last["all_ready"] and last["ready"] == last["total"] == len(TOPOLOGY.services)
    assert all(not d["all_ready"] for d in documents[:-1])  # it stopped at the first round all were ready

    events = drill.read_events(fleet, TOPOLOGY, since=restored)
    logged = {s.name: drill.ready_times(events, s.name)[0] for s in TOPOLOGY.services}
    seen = first_ready_rounds(documents, 0)
    print("logged ready (s after restore):", {n: round(t - restored, 2) for n, t in sorted(logged.items(),
                                                                                         key=lambda i: i[1])})
    print("board's first ready round:", seen)
    assert set(seen) == set(logged)
    assert seen["db"] >= fixed_round
    # Each service was seen ready in the order its log shows: a service that began serving
    # clearly later (a round's checks start within milliseconds of each other, on a machine
    # that is not overloaded: a second apart is clear) was not seen ready earlier.
    for a in logged:
        for b in logged:
            if logged[b] - logged[a] > 1.0:
                assert seen[a] <= seen[b], f"{b} seen ready before {a}, though {a} served first"
    for dependency, dependent in TOPOLOGY.edges():
        assert seen[dependency] <= seen[dependent]
        assert logged[dependency] < logged[dependent]  # the drill's own claim, from the same logs
    # Each service's transitions as the board reported them end in ready, once; never ready before.
    for service in TOPOLOGY.services:
        sequence = [states(d)[service.name] for d in documents]
        changes = [s for i, s in enumerate(sequence) if i == 0 or s != sequence[i - 1]]
        assert changes[-1] == "ready" and changes.count("ready") == 1, (service.name, changes)
        ready_at = next(s["ready_at"] for s in last["services"] if s["service"] == service.name)
        assert ready_at == documents[seen[service.name]]["time"]
