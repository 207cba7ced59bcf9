"""The generator's cache (unitgen/gencache.py): a hit writes exactly what the
conf gives; any change of an input (conf bytes, a conf.d file, the host name,
the probe, unitgen's code) is a miss; a cache anyone else could have written,
or a malformed one, is never read; the generator itself never writes it; a hit
imports nothing of PyYAML, Jinja2, click, json, re, typing or dataclasses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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
    assert (run.cache / gencache.CACHE_FILE).is_file()


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


def _filled_with_code(run, monkeypatch):
    """A code directory of one file, render.py, that the key covers; the cache filled."""
    code = run.conf_dir.parent / "code"
    code.mkdir()
    (code / "render.py").write_text("# version 1\n")
    dirs = gencache._code_dirs()
    monkeypatch.setattr(gencache, "_code_dirs", lambda: dirs + [str(code)])
    fill(run)
    return code / "render.py"


def _new_code(run, monkeypatch):
    _filled_with_code(run, monkeypatch).write_text("# version 2\n")


def _code_edited_as_it_was(run, monkeypatch):  # same size, its mtime put back: only the ctime tells
    path = _filled_with_code(run, monkeypatch)
    stat = path.stat()
    path.write_text("# version 2\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _unusable_drop_in(run, monkeypatch):
    os.mkfifo(run.conf_dir / "conf.d" / "fifo.yaml")


@pytest.mark.parametrize("change", [_edit_conf, _add_drop_in, _same_size_edit, _other_host, _other_probe,
                                    _new_code, _code_edited_as_it_was, _unusable_drop_in])
def test_any_changed_input_is_a_miss(run, computed, monkeypatch, change):
    fill(run)
    change(run, monkeypatch)
    computed.clear()
    after = result(run)
    assert computed == [str(run.conf_dir)]  # computed from the conf, not taken from the cache
    os.unlink(run.cache / gencache.CACHE_FILE)
    assert result(run) == after  # the same as with no cache at all


def _world_writable(path):
    os.chmod(path / gencache.CACHE_FILE, 0o666)


def _group_writable_dir(path):
    os.chmod(path, 0o775)


def _symlink(path):
    os.rename(path / gencache.CACHE_FILE, path / "real.json")
    os.symlink("real.json", path / gencache.CACHE_FILE)


def _other_owner(path):
    os.chown(path / gencache.CACHE_FILE, 65534, 65534)


def _truncated(path):
    data = (path / gencache.CACHE_FILE).read_bytes()
    (path / gencache.CACHE_FILE).write_bytes(data[:len(data) // 2])


def _edit_fields(path, edit):
    cache = path / gencache.CACHE_FILE
    fields = gencache.fields(cache.read_bytes())
    edit(fields)
    cache.write_bytes(gencache.encode(fields))


def _a_link_out_of_the_directory(path):
    def edit(fields):
        at = fields.index("api.service")  # unit, service, text, link count, links
        assert fields[at + 3] == "1"
        fields[at + 4] = "../../etc/systemd/system/api.service"
    _edit_fields(path, edit)


def _a_count_that_is_not_a_number(path):
    def edit(fields):
        fields[2] = " 4"  # the number of units; int() would read it
    _edit_fields(path, edit)


def _trailing_fields(path):
    _edit_fields(path, lambda fields: fields.append("more"))


def _a_unit_path(path):
    _edit_fields(path, lambda fields: fields.__setitem__(fields.index("api.service"), "../evil.service"))


def _a_length_past_the_end(path):
    cache = path / gencache.CACHE_FILE
    cache.write_bytes(cache.read_bytes()[:-1] + b"9:x,")


@pytest.mark.parametrize("spoil", [_world_writable, _group_writable_dir, _symlink, _other_owner, _truncated,
                                   _a_link_out_of_the_directory, _a_count_that_is_not_a_number, _trailing_fields,
                                   _a_unit_path, _a_length_past_the_end])
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


def test_the_cache_file_is_fields_read_back_as_written(run):
    fill(run)
    data = (run.cache / gencache.CACHE_FILE).read_bytes()
    fields = gencache.fields(data)
    assert gencache.encode(fields) == data
    assert fields[:2] == [str(gencache.FORMAT), gencache.key(*_inputs(run))]
    for bad in (b"", data[:-1], data + b"x", data.replace(gencache.MAGIC, b"unitgen-generator-cache-0\n", 1)):
        with pytest.raises(ValueError):
            gencache.fields(bad)


def _inputs(run):
    conf_dir = str(run.conf_dir)
    paths = generator.conf_files(conf_dir)
    sources, problems = generator.read_files(paths)
    return conf_dir, paths, sources, problems


HEAVY = {"yaml", "jinja2", "markupsafe", "click", "json", "re", "typing", "dataclasses", "socket", "pathlib",
         "importlib.util", "hashlib", "unitgen.errors", "unitgen.config", "unitgen.render", "unitgen.systemd",
         "unitgen.takeover", "unitgen_probe"}


def test_a_hit_imports_only_what_it_needs(run, tmp_path):
    """In a process of its own, as systemd runs it: a hit writes the units and
    imports none of HEAVY (the generator's cost at every daemon-reload);
    a miss, for contrast, imports them. (A hit with problems to report
    imports errors.py to say them, as without the cache.)"""
    padding = "".join(f"# padding line {i:06d} {'x' * 40}\n" for i in range(5000))  # over CACHE_MIN_BYTES
    run.write("conf.yaml", CONF[:CONF.index("  broken:")] + padding)
    fill(run)
    code = ("import sys; from unitgen.generator import main; code = main(sys.argv[1:]); "
            f"print(sorted(m for m in sys.modules if m in {sorted(HEAVY)!r})); sys.exit(code)")
    fake_hostname = ("import os, _socket; real = os.uname(); "  # the conf's host, for both ways of asking
                     "os.uname = lambda: os.uname_result(real[:1] + ('alpha',) + real[2:]); "
                     "_socket.gethostname = lambda: 'alpha'")  # what socket will import, if imported

    def imported():
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        done = subprocess.run([sys.executable, "-c", f"{fake_hostname}; {code}", str(out)], capture_output=True,
                              text=True)
        return done.returncode, done.stdout, sorted(p.name for p in out.glob("*.service"))

    code_hit, modules, units = imported()
    assert (code_hit, modules) == (0, "[]\n")
    assert units == ["api.service", "db.service", "unitgen-generator-cache.service"]
    os.unlink(run.cache / gencache.CACHE_FILE)
    code_miss, modules, units_miss = imported()
    assert (code_miss, units_miss) == (code_hit, units)
    assert {"yaml", "jinja2", "re", "dataclasses"} <= set(eval(modules))
