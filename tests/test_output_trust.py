"""The output directory is never trusted (issue 12, item 6): the manifest is
parsed strictly and names only files in its directory; unitgen removes only
files it can prove it wrote; every OS error is one line and exit 1, leaving
every unit old or new. File-system failures are real: a read-only or full
tmpfs in a private mount namespace (nothing of it outside the command), a
user without write permission."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from unitgen.install import MANIFEST, OutputDir, digest

UNITGEN = [sys.executable, "-m", "unitgen"]
CONF = """\
    version: 1
    services:
      web: {exec: [/usr/bin/sleep, infinity]}
      db: {exec: [/usr/bin/sleep, infinity]}
"""


def unitgen(*args, user=None):
    argv = [*UNITGEN, *map(str, args)]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]  # user: a uid
    return subprocess.run(argv, capture_output=True, text=True, cwd="/")


def one_line_error(done, code=1, start="unitgen: "):
    """Exit ``code`` with one line on stderr, unitgen's own, no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(start), done.stderr
    return done.stderr


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(textwrap.dedent(CONF))
    return path


def entry(text="", source="/x.yaml"):
    return {"source": source, "sha256": digest(text)}


def write_manifest(directory, files, top=None):
    directory.mkdir(exist_ok=True)
    data = top if top is not None else json.dumps({"unitgen": 1, "files": files})
    (directory / MANIFEST).write_text(data) if isinstance(data, str) else (directory / MANIFEST).write_bytes(data)


# -- the manifest ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../keep.txt", "../x/keep.txt", "{outside}", "a/b.service", "a\0b.service",
                                  "", ".", "..", MANIFEST, ".unitgen-tmp.0123456789abcdef.1", "a\nb.service"])
@pytest.mark.parametrize("force", [False, True])
def test_a_manifest_entry_that_is_not_a_plain_name_here_is_refused_and_nothing_is_touched(
        tmp_path, conf, name, force):
    keep = tmp_path / "keep.txt"
    keep.write_text("")  # its hash is the entry's: a render that trusted the entry would delete it
    out = tmp_path / "out"
    name = name.format(outside=keep)
    source = str(conf)
    write_manifest(out, {name: entry("", source)})
    before = sorted(os.listdir(out))
    message = one_line_error(unitgen("render", conf, "-o", out, *(["--force"] if force else [])))
    assert f"{out / MANIFEST} is damaged" in message and "move it away and render again" in message
    assert keep.exists() and sorted(os.listdir(out)) == before


# ids are the names only: a 400 kB value in a test's id reaches the environment of
# every command it runs (PYTEST_CURRENT_TEST), past the kernel's limit (E2BIG)
DAMAGED = [
    ("entry a list", json.dumps({"unitgen": 1, "files": {"a.service": ["x"]}})),
    ("entry a string", json.dumps({"unitgen": 1, "files": {"a.service": "x"}})),
    ("entry null", json.dumps({"unitgen": 1, "files": {"a.service": None}})),
    ("source not text", json.dumps({"unitgen": 1, "files": {"a.service": {"source": 1, "sha256": "0" * 64}}})),
    ("hash not a hash", json.dumps({"unitgen": 1, "files": {"a.service": {"source": "/c", "sha256": "x"}}})),
    ("unknown key", json.dumps({"unitgen": 1, "files": {"a.service": {**entry(), "remove": "/etc/passwd"}}})),
    ("files a list", json.dumps({"unitgen": 1, "files": ["a.service"]})),
    ("top a list", "[]"),
    ("no version", json.dumps({"files": {}})),
    ("not JSON", "{not json"),
    ("NUL", '{"unitgen": 1, "files": {}}\0'),
    ("not UTF-8", b'{"unitgen": 1, "files": {"\xff": {}}}'),
    ("a name twice", '{"unitgen": 1, "files": {"a.service": %s, "a.service": %s}}' % (
        json.dumps(entry()), json.dumps(entry()))),
    ("deep nesting", "[" * 200_000 + "]" * 200_000),
    ("deep in files", json.dumps({"unitgen": 1, "files": {}})[:-2] + '"a.service": ' + "[" * 100_000),
]


@pytest.mark.parametrize("what, data", DAMAGED, ids=[what for what, _ in DAMAGED])
def test_a_damaged_manifest_is_one_line_naming_it_and_what_to_do(tmp_path, conf, what, data):
    out = tmp_path / "out"
    write_manifest(out, None, data)
    for command in (["render", conf, "-o", out], ["render", conf, "-o", out, "--dry-run"],
                    ["render", conf, "-o", out, "--force"]):
        message = one_line_error(unitgen(*command))
        assert f"{out / MANIFEST} is damaged (" in message and "move it away and render again" in message
    assert sorted(os.listdir(out)) == [MANIFEST]


def test_a_huge_manifest_is_damaged_without_being_read_whole(tmp_path, monkeypatch):
    from unitgen import install

    monkeypatch.setattr(install, "MANIFEST_MAX_BYTES", 1024 * 1024)
    out = tmp_path / "out"
    write_manifest(out, {f"s{i}.service": entry() for i in range(20_000)})
    assert (out / MANIFEST).stat().st_size > install.MANIFEST_MAX_BYTES
    with pytest.raises(install.UnitgenError, match=r"is damaged \(over 1 MiB\); move it away"):
        with OutputDir(str(out)) as directory:
            directory.plan({"a.service": "A\n"}, "/c.yaml")


def test_force_removes_nothing_it_cannot_prove_it_wrote(tmp_path, conf):
    """A file that left the conf is removed only when its content is one unitgen
    wrote; a changed file, a symlink, a directory in its place are let go."""
    out = tmp_path / "out"
    assert unitgen("render", conf, "-o", out).returncode == 0
    entries = json.loads((out / MANIFEST).read_text())["files"]
    target = tmp_path / "target"
    target.write_text("precious\n")
    (out / "web.service").write_text("edited\n")
    (out / "db.service").unlink()
    (out / "db.service").symlink_to(target)
    (out / "old.service").mkdir()
    entries["old.service"] = entries["web.service"]
    write_manifest(out, entries)
    conf.write_text("version: 1\nservices:\n  api: {exec: [/usr/bin/sleep, infinity]}\n")
    refused = unitgen("render", conf, "-o", out)
    assert refused.returncode == 1 and "nothing was written" in refused.stderr
    done = unitgen("render", conf, "-o", out, "--force")
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[1] for line in done.stdout.splitlines() if line.startswith("released ")) == [
        str(out / "db.service"), str(out / "old.service"), str(out / "web.service")]
    assert (out / "web.service").read_text() == "edited\n" and (out / "db.service").is_symlink()
    assert target.read_text() == "precious\n" and (out / "old.service").is_dir()
    assert set(json.loads((out / MANIFEST).read_text())["files"]) == {"api.service"}


# -- OS errors -------------------------------------------------------------------------

def test_output_naming_a_file_is_one_line(tmp_path, conf):
    a_file = tmp_path / "units"
    a_file.write_text("mine\n")
    for extra in ([], ["--dry-run"]):
        one_line_error(unitgen("render", conf, "-o", a_file, *extra))
    one_line_error(unitgen("render", conf, "-o", a_file / "sub"))
    assert a_file.read_text() == "mine\n"


@pytest.mark.parametrize("command", [["graph", "{conf}"], ["import", "autoheal", "{autoheal}"]])
def test_graph_and_import_into_a_missing_directory_are_one_line(tmp_path, conf, command):
    autoheal = tmp_path / "autoheal.yaml"
    autoheal.write_text("web:\n  script: /usr/bin/web\n")
    argv = [a.format(conf=conf, autoheal=autoheal) for a in command]
    message = one_line_error(unitgen(*argv, "-o", tmp_path / "missing/out.txt"))
    assert str(tmp_path / "missing/out.txt") in message or str(tmp_path / "missing") in message


def test_no_write_permission_is_one_line_saying_root():
    """sudo forgotten: a user who may read the conf but not write the directory."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        conf = os.path.join(top, "conf.yaml")
        with open(conf, "w") as f:
            f.write(textwrap.dedent(CONF))
        os.chmod(conf, 0o644)
        out = os.path.join(top, "out")
        os.mkdir(out, 0o755)
        for target in (out, os.path.join(out, "sub")):
            message = one_line_error(unitgen("render", conf, "-o", target, user=65534))  # nobody
            assert "must run as root" in message
        assert os.listdir(out) == []


def test_a_unit_name_too_long_for_the_file_system_writes_nothing(tmp_path, monkeypatch):
    """Checked before anything is written: the manifest never lists a file never written."""
    out = tmp_path / "out"
    with OutputDir(str(out)) as directory:
        directory.apply(directory.plan({"a.service": "A1\n"}, "/c.yaml"))
    before = (out / MANIFEST).read_text()
    monkeypatch.setattr(os, "fpathconf", lambda fd, name: 143)  # eCryptfs's NAME_MAX
    from unitgen.errors import UnitgenError

    with pytest.raises(UnitgenError, match="longer than the 143 bytes a file name may have") as raised:
        with OutputDir(str(out)) as directory:
            directory.apply(directory.plan({"a.service": "A2\n", "x" * 140 + ".service": "X\n"}, "/c.yaml"))
    assert "\n" not in str(raised.value)
    assert (out / MANIFEST).read_text() == before and sorted(os.listdir(out)) == [MANIFEST, "a.service"]
    assert (out / "a.service").read_text() == "A1\n"


def test_a_long_escaped_unit_name_is_written_and_listed(tmp_path):
    name = "\u00e9" * 30  # escaped: 30 times \xc3\xa9, 248 bytes with .service (tmpfs, ext4: 255)
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"version: 1\nservices:\n  {name}: {{exec: [/usr/bin/sleep, infinity]}}\n")
    out = tmp_path / "out"
    done = unitgen("render", conf, "-o", out)
    assert done.returncode == 0, done.stderr
    [unit] = json.loads((out / MANIFEST).read_text())["files"]
    assert len(unit) == 248 and (out / unit).is_file() and sorted(os.listdir(out)) == sorted([MANIFEST, unit])


def _in_a_private_tmpfs(tmp_path, script: str, options: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a tmpfs of ``options`` on $OUT, in a mount
    namespace of its own: the mount ends with the script."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a private tmpfs")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    wrapped = f"set -e; mount -t tmpfs -o {options} unitgen-test \"$OUT\"\n{script}"
    env = {**os.environ, "OUT": str(out), "UNITGEN": " ".join(UNITGEN), "CONF": str(tmp_path / "conf.yaml")}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapped],
                          capture_output=True, text=True, env=env, timeout=120)


def test_a_read_only_file_system_is_one_line(tmp_path, conf):
    (tmp_path / "other.yaml").write_text("version: 1\nservices:\n  api: {exec: [/usr/bin/sleep, infinity]}\n")
    done = _in_a_private_tmpfs(tmp_path, f"""
        $UNITGEN render "$CONF" -o "$OUT" > /dev/null
        mount -o remount,ro "$OUT"
        set +e; $UNITGEN render {tmp_path / "other.yaml"} -o "$OUT" --force 2>"$OUT.err"; echo "rc=$?"
        $UNITGEN render "$CONF" -o "$OUT/sub" 2>>"$OUT.err"; echo "rc=$?"
    """, "size=1m")
    assert done.stdout.count("rc=1") == 2, (done.stdout, done.stderr)
    err = (tmp_path / "out.err").read_text().splitlines()
    assert len(err) == 2 and all(line.startswith("unitgen: ") for line in err), err
    assert "read-only file system" in err[0] and "Traceback" not in done.stderr


def test_a_full_file_system_leaves_every_unit_old_and_the_manifest_true(tmp_path, conf):
    """ENOSPC while writing: one line, exit 1, every unit old, the manifest
    unchanged, no temp file left; once there is room, the render completes."""
    big = "version: 1\nservices:\n" + "".join(
        f"  s{i}: {{exec: [/usr/bin/sleep, infinity], description: {'x' * 3000}}}\n" for i in range(40))
    (tmp_path / "big.yaml").write_text(big)
    done = _in_a_private_tmpfs(tmp_path, f"""
        $UNITGEN render "$CONF" -o "$OUT" > /dev/null
        cp -a "$OUT" "$OUT.before"
        set +e
        dd if=/dev/zero of="$OUT/filler" bs=4k 2>/dev/null
        $UNITGEN render {tmp_path / "big.yaml"} -o "$OUT" 2>"$OUT.err"; echo "rc=$?"
        sed -i 's/{tmp_path / "big.yaml"}/x/' "$OUT/{MANIFEST}" 2>/dev/null
        ls -A "$OUT" > "$OUT.after"
        diff -r -x filler "$OUT.before" "$OUT" > "$OUT.diff"; echo "diff=$?"
        rm "$OUT/filler"
        $UNITGEN render {tmp_path / "big.yaml"} -o "$OUT" > /dev/null; echo "rc=$?"
        ls "$OUT" | grep -c '^s[0-9]*.service$'
    """, "size=256k")
    lines = done.stdout.split()
    assert lines == ["rc=1", "diff=0", "rc=0", "40"], (done.stdout, done.stderr,
                                                        (tmp_path / "out.diff").read_text())
    err = (tmp_path / "out.err").read_text()
    assert err.count("\n") == 1 and err.startswith("unitgen: ") and "the file system is full" in err, err
    assert "nothing was changed" in err
    assert sorted((tmp_path / "out.after").read_text().split()) == sorted(
        [MANIFEST, "db.service", "filler", "web.service"])


def test_install_generator_on_a_read_only_file_system_is_one_line(tmp_path):
    (tmp_path / "conf.yaml").write_text("version: 1\nservices: {}\n")
    done = _in_a_private_tmpfs(tmp_path, """
        mount -o remount,ro "$OUT"
        set +e; $UNITGEN install-generator --root "$OUT" 2>"$OUT.err"; echo "rc=$?"
    """, "size=1m")
    assert done.stdout.split() == ["rc=1"], (done.stdout, done.stderr)
    err = (tmp_path / "out.err").read_text()
    assert err.count("\n") == 1 and err.startswith("unitgen: ") and "read-only file system" in err, err
