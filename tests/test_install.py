"""The output directory: the manifest decides, nothing is followed out, no file is
half-written, and an interrupted render is completed by the next one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from unitgen.errors import OwnershipError, UnitgenError
from unitgen.install import MANIFEST, OutputDir, digest

SOURCE = "/etc/unitgen/conf.yaml"


def install(directory, units, source=SOURCE, force=False):
    with OutputDir(str(directory)) as out:
        plan = out.plan(units, source, force)
        out.apply(plan)
    return plan


def actions(plan):
    return sorted((c.name, c.action) for c in plan.changes)


def manifest(directory):
    return json.loads((directory / MANIFEST).read_text())["files"]


def test_create_update_remove(tmp_path):
    plan = install(tmp_path, {"a.service": "A1\n", "b.service": "B1\n"})
    assert actions(plan) == [("a.service", "create"), ("b.service", "create")]
    assert (tmp_path / "a.service").read_text() == "A1\n"
    assert manifest(tmp_path)["a.service"] == {"source": SOURCE, "sha256": digest("A1\n")}

    plan = install(tmp_path, {"a.service": "A2\n"})
    assert actions(plan) == [("a.service", "update"), ("b.service", "remove")]
    assert (tmp_path / "a.service").read_text() == "A2\n"
    assert not (tmp_path / "b.service").exists()
    assert set(manifest(tmp_path)) == {"a.service"}


def test_unchanged_files_are_not_touched(tmp_path):
    install(tmp_path, {"a.service": "A\n"})
    before = os.stat(tmp_path / "a.service")
    plan = install(tmp_path, {"a.service": "A\n"})
    after = os.stat(tmp_path / "a.service")
    assert actions(plan) == [("a.service", "unchanged")] and not plan.writes
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_a_file_unitgen_did_not_write_is_never_overwritten(tmp_path):
    (tmp_path / "a.service").write_text("mine\n")
    with pytest.raises(OwnershipError, match="a.service exists and was not written by unitgen"):
        install(tmp_path, {"a.service": "A\n", "b.service": "B\n"})
    assert (tmp_path / "a.service").read_text() == "mine\n"
    assert sorted(os.listdir(tmp_path)) == ["a.service"]  # nothing else written either
    install(tmp_path, {"a.service": "A\n"}, force=True)
    assert (tmp_path / "a.service").read_text() == "A\n"
    assert "a.service" in manifest(tmp_path)


def test_an_identical_file_is_adopted(tmp_path):
    (tmp_path / "a.service").write_text("A\n")
    plan = install(tmp_path, {"a.service": "A\n"})
    assert actions(plan) == [("a.service", "adopt")]
    assert "a.service" in manifest(tmp_path)


def test_a_file_changed_since_unitgen_wrote_it_is_reported(tmp_path):
    install(tmp_path, {"a.service": "A\n", "b.service": "B\n"})
    (tmp_path / "a.service").write_text("hand edit\n")
    (tmp_path / "b.service").write_text("hand edit\n")
    with pytest.raises(OwnershipError) as err:
        install(tmp_path, {"a.service": "A2\n"})
    assert "a.service was changed since unitgen wrote it" in str(err.value)
    assert "b.service left the conf but was changed since unitgen wrote it" in str(err.value)
    assert (tmp_path / "a.service").read_text() == "hand edit\n"
    assert (tmp_path / "b.service").read_text() == "hand edit\n"
    install(tmp_path, {"a.service": "A2\n"}, force=True)
    # --force takes a.service over; b.service, whose content unitgen cannot prove
    # it wrote, is let go (out of the manifest), never deleted
    assert (tmp_path / "a.service").read_text() == "A2\n" and (tmp_path / "b.service").read_text() == "hand edit\n"
    assert set(manifest(tmp_path)) == {"a.service"}


def test_units_of_another_conf_are_left_alone(tmp_path):
    install(tmp_path, {"a.service": "A\n"}, source="/etc/unitgen/one.yaml")
    plan = install(tmp_path, {"b.service": "B\n"}, source="/etc/unitgen/two.yaml")
    assert actions(plan) == [("b.service", "create")]
    assert (tmp_path / "a.service").exists()
    with pytest.raises(OwnershipError, match="belongs to another conf, /etc/unitgen/one.yaml"):
        install(tmp_path, {"a.service": "A\n"}, source="/etc/unitgen/two.yaml")


def test_a_symlink_is_never_written_through(tmp_path):
    outside = tmp_path / "shadow"
    outside.write_text("root:secret\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.service").symlink_to(outside)
    with pytest.raises(OwnershipError, match="a.service is a symlink"):
        install(out, {"a.service": "A\n"})
    assert outside.read_text() == "root:secret\n"
    install(out, {"a.service": "A\n"}, force=True)  # replaces the link itself
    assert outside.read_text() == "root:secret\n"
    assert not (out / "a.service").is_symlink() and (out / "a.service").read_text() == "A\n"


def test_a_symlinked_manifest_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text('{"unitgen": 1, "files": {}}')
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).symlink_to(outside)
    with pytest.raises(UnitgenError, match="is a symlink; unitgen does not follow it"):
        install(out, {"a.service": "A\n"})
    assert outside.read_text() == '{"unitgen": 1, "files": {}}'


def test_mode_is_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        install(tmp_path, {"a.service": "A\n"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.service").st_mode) == 0o644


def test_a_damaged_manifest_stops_the_render(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UnitgenError, match="is damaged"):
        install(tmp_path, {"a.service": "A\n"})


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("fail_at", range(6))
def test_an_interrupted_render_leaves_old_or_new_and_the_next_completes(tmp_path, monkeypatch, fail_at):
    """Interrupt at every rename (manifest, each unit, manifest again)."""
    old_units = {"a.service": "A1\n", "b.service": "B1\n", "c.service": "C1\n"}
    new_units = {"a.service": "A2\n", "b.service": "B2\n", "d.service": "D2\n"}
    install(tmp_path, old_units)
    real_rename = os.rename
    calls = []

    def flaky_rename(*args, **kwargs):
        if len(calls) == fail_at:
            raise Interrupted()
        calls.append(args)
        return real_rename(*args, **kwargs)

    monkeypatch.setattr(os, "rename", flaky_rename)
    try:
        install(tmp_path, new_units)
        completed = True
    except Interrupted:
        completed = False
    monkeypatch.setattr(os, "rename", real_rename)
    for name in ("a.service", "b.service"):
        assert (tmp_path / name).read_text() in (old_units[name], new_units[name])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".unitgen-tmp")] or not completed

    install(tmp_path, new_units)  # the next render completes it, with no conflict
    assert {n: (tmp_path / n).read_text() for n in os.listdir(tmp_path) if n.endswith(".service")} == new_units
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".unitgen-tmp")]


def test_kill_9_between_files_is_completed_by_the_next_render(tmp_path):
    """A real SIGKILL in the middle of writing many files, then a clean render."""
    out = tmp_path / "out"
    old = {f"s{i}.service": f"old {i}\n" for i in range(200)}
    new = {f"s{i}.service": f"new {i}\n" for i in range(200)}
    install(out, old)
    code = (
        "import json, os, signal, sys\n"
        "from unitgen.install import OutputDir\n"
        "real = os.rename\n"
        "count = [0]\n"
        "def rename(*a, **k):\n"
        "    count[0] += 1\n"
        "    if count[0] == 50: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a, **k)\n"
        "os.rename = rename\n"
        "units = json.loads(sys.argv[2])\n"
        "with OutputDir(sys.argv[1]) as out: out.apply(out.plan(units, sys.argv[3]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(out), json.dumps(new), SOURCE])
    assert run.returncode == -9
    contents = {n: (out / n).read_text() for n in os.listdir(out) if n.endswith(".service")}
    assert all(contents[n] in (old[n], new[n]) for n in old)
    assert {n for n in contents if contents[n] == new[n]} and {n for n in contents if contents[n] == old[n]}
    install(out, new)
    assert {n: (out / n).read_text() for n in os.listdir(out) if n.endswith(".service")} == new
    assert not [n for n in os.listdir(out) if n.startswith(".unitgen-tmp")]


def test_two_renders_into_one_directory_do_not_interleave(tmp_path):
    """While one holds the lock the other waits; both end with a consistent manifest."""
    first = OutputDir(str(tmp_path))
    first.__enter__()
    done = threading.Event()

    def second():
        install(tmp_path, {"b.service": "B\n"}, source="/etc/unitgen/two.yaml")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.5)  # blocked on the lock
    first.apply(first.plan({"a.service": "A\n"}, SOURCE))
    first.__exit__(None, None, None)
    thread.join(30)
    assert done.is_set()
    assert set(manifest(tmp_path)) == {"a.service", "b.service"}
