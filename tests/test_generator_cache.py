"""The generator's cache (unitgen/gencache.py): a hit writes exactly what the
conf gives; any change of an input (conf bytes, a conf.d file, the host name,
the probe, unitgen's code) is a miss; a cache anyone else could have written,
or a malformed one, is never read; the generator itself never writes it."""

from __future__ import annotations

import json
import os

import pytest

from unitgen import gencache, generator

from test_generator import Run
from unitverify import verify

CONF = """\
version: 1
hosts:
  alpha: {address: 10.248.0.1}
  beta: {address: 10.248.0.2}
services:
  db:
    host: alpha
    exec: [/usr/bin/sleep, infinity]
    listen: 5432
  api:
    host: alpha
    exec: [/usr/bin/sleep, infinity]
    deps: [{service: db}, {service: remote}]
  remote:
    host: beta
    exec: [/usr/bin/sleep, infinity]
    listen: 9000
  broken:
    host: alpha
    exec: [/usr/bin/sleep, infinity]
    deps: [{service: nowhere}]
"""


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(gencache, "CACHE_MIN_BYTES", 0)  # every conf is big enough to cache
    monkeypatch.setenv("UNITGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("socket.gethostname", lambda: "alpha")
    run = Run(tmp_path, monkeypatch)
    run.cache = tmp_path / "cache"
    run.write("conf.yaml", CONF)
    return run


def result(run) -> tuple:
    """What one run of the generator did: exit code, files, log (its PIDs as written)."""
    code = run()
    files = {name: (run.out / name).read_text() if kind == "file" else kind for name, kind in run.listing().items()}
    return code, files, run.log


def fill(run) -> None:
    assert run("--cache", str(run.conf_dir)) == 0  # written (a service left out is the generator's to say)
    assert (run.cache / "generator.json").is_file()


@pytest.fixture
def computed(monkeypatch):
    """Counts the runs that computed their units from the conf (misses)."""
    calls = []
    real = generator._units

    def counting(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(generator, "_units", counting)
    return calls


def test_a_hit_writes_exactly_what_the_conf_gives(run, computed):
    fresh = result(run)
    assert fresh[0] == 1 and "api.service" in fresh[1] and "broken.service" not in fresh[1]
    assert "unitgen-generator-cache.service" in fresh[1] and "paths.target.wants/unitgen-generator-cache.path" in fresh[1]
    assert not run.cache.exists()  # the generator never writes its cache
    fill(run)
    computed.clear()
    assert result(run) == fresh
    assert computed == []


def test_the_cache_units_pass_systemd_analyze_verify(run):
    run()
    verified = verify([run.out / gencache.SERVICE, run.out / gencache.PATH_UNIT])
    assert verified.stderr == "", verified.stderr
    assert verified.command_lines == [[generator.program(), "--cache", str(run.conf_dir)]]


def _edit_conf(run, monkeypatch):
    run.write("conf.yaml", CONF.replace("listen: 9000", "listen: 9001"))


def _add_drop_in(run, monkeypatch):
    run.write("conf.d/more.yaml", "services:\n  more:\n    host: alpha\n    exec: [/usr/bin/true]\n")


def _same_size_edit(run, monkeypatch):  # same length, same mtime second: only the bytes differ
    path = run.conf_dir / "conf.yaml"
    stat = path.stat()
    path.write_text(CONF.replace("listen: 5432", "listen: 5433"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _other_host(run, monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "beta")


def _other_probe(run, monkeypatch):
    monkeypatch.setenv("UNITGEN_PROBE", "/opt/elsewhere/bin/unitgen-probe")


def _new_code(run, monkeypatch):
    code = run.conf_dir.parent / "code"
    code.mkdir()
    (code / "render.py").write_text("# version 1\n")
    dirs = gencache._code_dirs()
    monkeypatch.setattr(gencache, "_code_dirs", lambda: dirs + [str(code)])
    fill(run)
    (code / "render.py").write_text("# version 2\n")


def _unusable_drop_in(run, monkeypatch):
    os.mkfifo(run.conf_dir / "conf.d" / "fifo.yaml")


@pytest.mark.parametrize("change", [_edit_conf, _add_drop_in, _same_size_edit, _other_host, _other_probe,
                                    _new_code, _unusable_drop_in])
def test_any_changed_input_is_a_miss(run, computed, monkeypatch, change):
    fill(run)
    change(run, monkeypatch)
    computed.clear()
    after = result(run)
    assert computed == [str(run.conf_dir)]  # computed from the conf, not taken from the cache
    os.unlink(run.cache / "generator.json")
    assert result(run) == after  # the same as with no cache at all


def _world_writable(path):
    os.chmod(path / "generator.json", 0o666)


def _group_writable_dir(path):
    os.chmod(path, 0o775)


def _symlink(path):
    os.rename(path / "generator.json", path / "real.json")
    os.symlink("real.json", path / "generator.json")


def _other_owner(path):
    os.chown(path / "generator.json", 65534, 65534)


def _truncated(path):
    data = (path / "generator.json").read_bytes()
    (path / "generator.json").write_bytes(data[:len(data) // 2])


def _a_link_out_of_the_directory(path):
    data = json.loads((path / "generator.json").read_text())
    data["units"]["api.service"][2] = ["../../etc/systemd/system/api.service"]
    (path / "generator.json").write_text(json.dumps(data))


def _wrong_types(path):
    data = json.loads((path / "generator.json").read_text())
    data["problems"] = [1]
    (path / "generator.json").write_text(json.dumps(data))


def _a_unit_path(path):
    data = json.loads((path / "generator.json").read_text())
    data["units"]["../evil.service"] = data["units"].pop("api.service")
    (path / "generator.json").write_text(json.dumps(data))


@pytest.mark.parametrize("spoil", [_world_writable, _group_writable_dir, _symlink, _other_owner, _truncated,
                                   _a_link_out_of_the_directory, _wrong_types, _a_unit_path])
def test_a_cache_that_cannot_be_trusted_is_not_read(run, computed, spoil):
    if spoil is _other_owner and os.geteuid() != 0:
        pytest.skip("chown needs root")
    fresh = result(run)
    fill(run)
    spoil(run.cache)
    computed.clear()
    assert result(run) == fresh
    assert computed == [str(run.conf_dir)]


def test_a_small_conf_has_no_cache_and_no_cache_units(run, computed, monkeypatch):
    monkeypatch.setattr(gencache, "CACHE_MIN_BYTES", 10**9)
    fill(run)
    computed.clear()
    code, files, _ = result(run)
    assert computed == [str(run.conf_dir)]
    assert not any(name.startswith("unitgen-generator-cache") or "/unitgen-generator-cache" in name for name in files)


def test_refresh_reports_an_unwritable_cache(run, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("UNITGEN_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert run("--cache", str(run.conf_dir)) == 1
    assert any("cannot write the cache in" in line for line in run.log)
