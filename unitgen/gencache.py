"""The generator's cache: this host's units from a conf too big to read at every daemon-reload.

With one fleet conf of 10,000 services on every host, reading it (YAML,
validation, the whole graph) costs seconds at every boot and every
``systemctl daemon-reload``, to write a host's ten units; a YAML parse of
it alone costs several times a Python start-up. So the units, once
computed, are kept with the key of everything they were computed from.

* **Where**: ``/var/cache/unitgen/generator.cache`` (UNITGEN_CACHE_DIR
  replaces the directory), one entry, in a format of length-prefixed fields
  read without json (whose import, with re's, costs more than the rest of a
  hit). The generator only ever *reads* it (a
  generator writes nothing outside its output directories); when /var is
  not mounted yet at boot, the file is simply absent and the units are
  computed as without a cache.
* **Who writes it**: ``unitgen-generator --cache CONF_DIR``, run by
  unitgen-generator-cache.service, which the generator adds (with
  unitgen-generator-cache.path, which starts it when conf.yaml is written,
  or a file in the conf directory or conf.d is added, replaced or removed)
  for a conf of CACHE_MIN_BYTES or more. It is started at boot too (proven
  on the bed; the path unit's trigger is not, yet). A
  conf.d file written in place is not seen until the next change or boot:
  until then the generator reads the conf (the key differs), as without a
  cache.
* **Why a stale cache can never give stale units**: the key is a BLAKE2b
  hash over every input the units are computed from: the conf directory,
  the path and the bytes of every conf file (or, for one that cannot be
  used, why), this machine's host name, the probe the units run, unitgen's
  own code (its modules, templates and probe package, and the files of
  PyYAML, Jinja2 and MarkupSafe, each by its device, inode, size, mtime and
  ctime; the interpreter's version and path), the cache directory and the
  generator's own path (written into the cache's units). Code is keyed by
  its files' status, not their bytes: no write to a file leaves all of these
  as they were (the kernel sets the ctime at every change, and no system call
  sets it back), and it is more than Python itself asks before it runs a
  module's cached bytecode (the source's mtime and size). The generator
  computes the key at every run from the bytes it has just read, and takes
  the cached units only when the keys are equal; otherwise (and when the
  file is absent, unreadable, malformed, larger than it may be, or could
  have been written by anyone but the generator's own user) it computes the
  units from the conf. tests/test_generator_cache.py changes each input in
  turn.

A hit imports nothing but os, sys and BLAKE2's C module, besides
unitgen's own generator, paths and shadowing modules, which import nothing
more at the top (tests/test_generator_cache.py runs one and lists them): no
typing, dataclasses, re, json, PyYAML or Jinja2.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple

    from .generator import Outcome

CACHE_DIR = "/var/cache/unitgen"
CACHE_FILE = "generator.cache"
CACHE_MIN_BYTES = 256 * 1024  # confs smaller than this are read at every run; no cache units
SERVICE = "unitgen-generator-cache.service"
PATH_UNIT = "unitgen-generator-cache.path"
FORMAT = 2
MAGIC = b"unitgen-generator-cache\n"
_MAX_CACHE_BYTES = 256 * 1024 * 1024


def cache_dir() -> str:
    return os.environ.get("UNITGEN_CACHE_DIR") or CACHE_DIR


def key(conf_dir: str, paths: Sequence[str], sources: Dict[str, bytes], file_problems: Sequence[object]) -> str:
    """The hash of every input of the generator's units (see the module doc)."""
    from . import __version__, paths as unitgen_paths
    from .generator import program

    digest = _hash()

    def add(item: object) -> None:
        data = item if isinstance(item, bytes) else repr(item).encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    add(("unitgen-generator-cache", FORMAT, __version__, sys.version, sys.executable))
    add(cache_dir())
    add(conf_dir)
    add(list(paths))
    for path in paths:
        add(path)
        add(sources.get(path, b"") if path in sources else ("unusable",))
    add([str(p) for p in file_problems])
    add(_hostname())
    for find in (lambda: unitgen_paths.probe_argv(unitgen_paths.probe_command()), program):
        try:
            add(find())
        except Exception as exc:  # UnitgenError (not imported here: errors imports dataclasses)
            add(("not found", type(exc).__name__, str(exc)))
    code = _code_dirs() + [unitgen_paths.package_dir(p) or f"no {p}" for p in ("yaml", "jinja2", "markupsafe")]
    for directory in code:
        add(_files(directory))
    return digest.hexdigest()


def _hostname() -> str:
    """What graph.local_host() asks: socket.gethostname(), which on Linux is
    uname's node name; socket (with enum, selectors) is imported only for the
    generator's full path, so a hit asks uname unless it is loaded already."""
    socket = sys.modules.get("socket")
    return socket.gethostname() if socket is not None else os.uname().nodename


def _hash():
    """BLAKE2b from CPython's own C module, without hashlib, which loads
    OpenSSL at every boot; faster than that module's SHA-256 on a conf (no
    figure is claimed here: bench/generator.py measures the whole run)."""
    try:
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b
    return blake2b()


def _code_dirs() -> List[str]:
    from . import paths as unitgen_paths

    dirs = [unitgen_paths.PACKAGE_DIR]
    try:
        dirs.append(unitgen_paths.templates_path())
    except Exception:  # missing templates: the units fail to render, whatever the cache says
        dirs.append("no templates")
    dirs.append(unitgen_paths.package_dir("unitgen_probe") or "no unitgen_probe")
    return dirs


def _files(directory: str) -> List[tuple]:
    """(path, (device, inode, size, mtime_ns, ctime_ns)) of the entries directly in
    ``directory`` but __pycache__, in name order (a file that cannot be looked
    at: why)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return [(directory, "absent")]
    found: List[tuple] = []
    for name in names:
        if name == "__pycache__":
            continue
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
            found.append((path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)))
        except OSError as exc:
            found.append((path, exc.strerror))
    return found


def load(expected: str) -> Optional[Outcome]:
    """The cached outcome if the cache holds ``expected``; None otherwise
    (absent, unreadable, malformed, not the generator's user's alone, another key)."""
    import stat

    from .generator import Outcome, check_link

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        dir_fd = os.open(cache_dir(), flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        if not _private(os.fstat(dir_fd)):
            return None
        fd = os.open(CACHE_FILE, flags, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > _MAX_CACHE_BYTES:
                return None
            with open(fd, "rb", closefd=False) as f:
                data = f.read(_MAX_CACHE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        items = iter(fields(data))
        take = items.__next__

        def count() -> int:
            text = take()
            if not (text.isascii() and text.isdigit()):
                raise ValueError("malformed count")
            return int(text)

        if take() != str(FORMAT) or take() != expected:
            return None
        units = {}
        for _ in range(count()):
            unit, service, text = take(), take(), take()
            links = [take() for _ in range(count())]
            if "/" in unit or unit in units:
                return None
            for link in links:
                check_link(unit, link)
            units[unit] = (service, text, links)
        problems = [take() for _ in range(count())]
        kind = take()
        if kind not in ("everything", "services"):
            raise ValueError("malformed left_out")
        left_out = None if kind == "everything" else {take() for _ in range(count())}
        warnings = [take() for _ in range(count())]
        files_left_out = [take() for _ in range(count())]
        if next(items, None) is not None:
            raise ValueError("trailing fields")
    except (ValueError, AssertionError, StopIteration):  # (UnicodeDecodeError is a ValueError)
        return None
    if problems or warnings:
        from .errors import Problem  # (dataclasses: only for an outcome with something to say)

        return Outcome(problems=[Problem(p) for p in problems], left_out=left_out,
                       warnings=[Problem(w) for w in warnings], files_left_out=files_left_out, units=units)
    return Outcome(left_out=left_out, files_left_out=files_left_out, units=units)


def fields(data: bytes) -> List[str]:
    """The cache file's fields: after MAGIC, each ``LENGTH:BYTES,`` (a
    netstring) of UTF-8 text, to the end; ValueError for anything else."""
    if not data.startswith(MAGIC):
        raise ValueError("not a cache file")
    found, at = [], len(MAGIC)
    while at < len(data):
        colon = data.find(b":", at, at + 12)
        digits = data[at:colon]
        if colon < 0 or not digits.isdigit():
            raise ValueError("malformed length")
        end = colon + 1 + int(digits)
        if data[end:end + 1] != b",":
            raise ValueError("malformed field")
        found.append(data[colon + 1:end].decode("utf-8", "surrogatepass"))
        at = end + 1
    return found


def encode(items: Sequence[str]) -> bytes:
    """The bytes of a cache file of these fields (what fields() reads back)."""
    encoded = [item.encode("utf-8", "surrogatepass") for item in items]
    return MAGIC + b"".join(b"%d:%s," % (len(data), data) for data in encoded)


def _private(st: os.stat_result) -> bool:
    """Written by this user only: owned by it, writable by no group or other."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def store(expected: str, outcome: Outcome) -> str:
    """Write the outcome under ``expected`` (atomically: a reader sees the old
    entry or the new one); returns the file's path."""
    items = [str(FORMAT), expected, str(len(outcome.units))]
    for unit, (service, text, links) in outcome.units.items():
        items += [unit, service, text, str(len(links)), *links]
    items += [str(len(outcome.problems)), *map(str, outcome.problems)]
    if outcome.left_out is None:
        items.append("everything")
    else:
        items += ["services", str(len(outcome.left_out)), *sorted(outcome.left_out)]
    items += [str(len(outcome.warnings)), *map(str, outcome.warnings)]
    items += [str(len(outcome.files_left_out)), *outcome.files_left_out]
    data = encode(items)
    directory = cache_dir()
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, CACHE_FILE)
    temp = f"{path}.{os.getpid()}.new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return path


def units(conf_dir: str, first_file: str) -> Dict[str, Tuple[str, str, List[str]]]:
    """unitgen-generator-cache.service and .path for this conf directory:
    {unit: (name, text, links)}; none when the generator's own path or the
    directory cannot be written into a unit."""
    from . import systemd
    from .errors import UnitgenError
    from .generator import _links, program

    try:
        command = systemd.exec_command([program(), "--cache", conf_dir])
        source, directory = systemd.value(first_file), systemd.value(conf_dir)
        env = systemd.environment("UNITGEN_CACHE_DIR", cache_dir()) if os.environ.get("UNITGEN_CACHE_DIR") else None
        mounts = systemd.value(cache_dir())
        header = f"# Generated by unitgen-generator from {systemd.comment(first_file)}\n" \
                 "# The generator's cache (unitgen/gencache.py): never read unless every input is unchanged.\n\n"
    except (UnitgenError, systemd.Unexpressible):
        return {}
    service = header + (
        "[Unit]\n"
        "Description=unitgen: keep this host's units computed, so that daemon-reload need not read the whole conf\n"
        f"SourcePath={source}\n"
        f"RequiresMountsFor={mounts}\n"
        "After=local-fs.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        + (f"Environment={env}\n" if env else "") +
        f"ExecStart={command}\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n")
    path_unit = header + (
        "[Unit]\n"
        "Description=unitgen: refresh the generator's cache when a conf file changes\n"
        f"SourcePath={source}\n\n"
        "[Path]\n"
        # the directories see a file replaced by rename (editors, config management) or added;
        # conf.yaml itself, a write in place
        f"PathChanged={directory}\n"
        f"PathChanged={directory}/conf.yaml\n"
        f"PathChanged={directory}/conf.d\n"
        f"Unit={SERVICE}\n\n"
        "[Install]\n"
        "WantedBy=paths.target\n")
    return {
        SERVICE: (SERVICE[:-len(".service")], service, _links(SERVICE, ["multi-user.target"])),
        PATH_UNIT: (PATH_UNIT[:-len(".path")], path_unit, _links(PATH_UNIT, ["paths.target"])),
    }
