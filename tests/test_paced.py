"""Paced release (accepts:): each dependent of a paced service gets a fixed
slot at render time, which its probe waits once ready."""

from __future__ import annotations

import signal
import textwrap

import pytest
from probe_helpers import ProbeProcess, open_port

from unitgen import config, graph, render
from unitgen_probe.argv import format_argv, parse_argv
from unitgen_probe import Target


def _conf(tmp_path, text):
    path = tmp_path / "conf.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return config.load(str(path))


def fleet(clients=20, accepts="accepts: 10/s", extra=""):
    lines = ["version: 1", "hosts: {h1: {address: 10.0.0.1}, h2: {address: 10.0.0.2}, h3: {address: 10.0.0.3}}",
             "services:", f"  db: {{exec: [/bin/db], host: h1, listen: 5432, {accepts}}}"]
    lines += [f"  app{i}: {{exec: [/bin/app], host: h{2 + i % 2}, deps: [{{service: db}}]}}" for i in range(clients)]
    lines += [extra] if extra else []
    return "\n".join(lines) + "\n"


def slots_of(conf):
    return {node: slot for node, slot in graph.Graph(conf).slots().items()}


def test_slots_are_even_fixed_and_a_new_dependent_reorders_nobody(tmp_path):
    conf = _conf(tmp_path, fleet(20))
    slots = slots_of(conf)
    assert sorted(slots.values()) == pytest.approx([k / 10 for k in range(20)])  # 10 a second, evenly
    assert ("db", "h1") not in slots
    assert slots_of(_conf(tmp_path, fleet(20))) == slots  # the same on every render
    grown = slots_of(_conf(tmp_path, fleet(20, extra="  late: {exec: [/bin/l], host: h3, deps: [{service: db}]}")))
    order = sorted(slots, key=slots.get)
    assert sorted(slots, key=grown.get) == order  # the others keep their order...
    assert all(grown[n] - slots[n] in (pytest.approx(0.0), pytest.approx(0.1)) for n in slots)  # ...and move by 1/R at most


def test_units_wait_their_slot_and_their_start_timeout_allows_it(tmp_path):
    conf = _conf(tmp_path, fleet(4))
    slots = slots_of(conf)
    renderer = render.Renderer("/usr/bin/unitgen-probe")
    for host in ("h2", "h3"):
        units = renderer.render(conf, host)
        for name, unit in units.items():
            slot = slots[(name.removesuffix(".service"), host)]
            assert (f" --slot={slot:g} " in unit) == (slot > 0), unit
            assert f"\nTimeoutStartSec={60 + slot + 30:g}" in unit or slot != int(slot)
    plain = _conf(tmp_path, fleet(4, accepts="health: 'http://{host}:5432/'"))
    assert not slots_of(plain)
    assert all("--slot" not in unit for unit in renderer.render(plain, "h2").values())


def test_plan_includes_the_slots(tmp_path):
    paced = graph.Graph(_conf(tmp_path, fleet(20))).recovery()
    plain = graph.Graph(_conf(tmp_path, fleet(20, accepts="health: 'http://{host}:5432/'"))).recovery()
    last = max(paced.timings.values(), key=lambda t: t.slot)
    assert last.slot == pytest.approx(1.9)
    assert paced.total == pytest.approx(plain.total + 1.9)
    assert plain.timings[last.node].start + last.slot == pytest.approx(last.start)


@pytest.mark.parametrize("value", ["fast", "0/s", "-3/s", "20/min", "inf/s", "nan/s"])
def test_accepts_is_a_rate_above_zero(tmp_path, value):
    with pytest.raises(config.ConfigError, match="expected a rate above 0 such as 20/s") as err:
        _conf(tmp_path, f"version: 1\nservices:\n  db:\n    exec: [/bin/db]\n    accepts: {value}\n")
    assert "conf.yaml:5" in str(err.value)


def test_accepts_reads_a_bare_number(tmp_path):
    conf = _conf(tmp_path, "version: 1\nservices:\n  db: {exec: [/bin/db], listen: 1, accepts: 2.5}\n")
    assert conf.services["db"].accepts == 2.5


def test_slot_round_trips_the_probe_command_line():
    words = format_argv([Target("tcp", "db:1")], deadline=60, slot=0.35)
    assert "--slot=0.35" in words
    assert parse_argv(words).slot == 0.35 and parse_argv(["tcp", "db:1"]).slot == 0
    assert "--slot" not in " ".join(format_argv([Target("tcp", "db:1")], deadline=60))


def test_the_probe_waits_its_slot_once_ready_and_a_signal_ends_the_wait():
    with open_port() as up:
        probe = ProbeProcess("--slot=3600", "tcp", f"127.0.0.1:{up.port}", "--name", "db")
        try:
            probe.wait_for("waiting for its slot: 1 h 0 min (paced release)")
            assert probe.proc.poll() is None  # ready, yet not exited: in its slot
            probe.proc.send_signal(signal.SIGTERM)
            assert probe.finish() == 128 + signal.SIGTERM
        finally:
            if probe.proc.poll() is None:
                probe.proc.kill()
        short = ProbeProcess("--slot=0.05", "tcp", f"127.0.0.1:{up.port}", "--name", "db")
        assert short.finish() == 0 and "waiting for its slot" in short.stderr and "ready after" in short.stderr
