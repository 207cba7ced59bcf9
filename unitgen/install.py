"""Write unit files into a directory safely: the manifest decides what is ours.

    with OutputDir("/etc/systemd/system") as out:
        changes = out.plan(units, source="/etc/unitgen/conf.yaml", force=False)
        out.apply(changes)

Rules, in the order they protect an operator:
* Only files in the manifest (``.unitgen-manifest.json`` in the directory) are
  unitgen's. A file it did not write is never overwritten or deleted, nor is
  one whose content changed since unitgen wrote it: the render stops and says
  which, before writing anything, unless ``force`` takes them over. A file of
  identical content is adopted silently (it may be from an interrupted run).
* Entries belong to the conf that wrote them: rendering conf B never removes
  conf A's units from a shared directory.
* Nothing is followed out of the directory: every file is opened relative to
  the directory's descriptor with O_NOFOLLOW, and a symlink in a unit's place
  is a conflict (with ``force``, rename() replaces the link, not its target).
* Writes are atomic: temp file, fsync, rename; mode 0644 whatever the umask;
  unchanged files are not touched (their mtime stays). The manifest first
  records the old and the new content hash of every file in flight, so an
  interruption at any point leaves each unit old or new, both recognised as
  unitgen's, and the next render completes the job.
* One render at a time per directory: an exclusive flock on the directory.
* The directory is not trusted either: the manifest is parsed strictly (an
  entry is a plain file name in this directory, never a path, ``..``, an
  absolute path or a NUL, even with ``force``; a damaged manifest is a
  one-line error saying what to do), and a file is removed only when its
  content is one unitgen recorded writing there (``force`` never removes).
* Every OS error (read-only or full file system, no permission, not a
  directory, a name too long) is a one-line UnitgenError; temp files are
  written and synced before the manifest names any new content, so a
  failure leaves every unit old or new, and the manifest true.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Collection, Dict, List, Literal, Optional, Tuple

from .errors import OwnershipError, UnitgenError, one_line

MANIFEST = ".unitgen-manifest.json"
TEMP_PREFIX = ".unitgen-tmp."
FILE_MODE = 0o644
LOCK_WAIT_SECONDS = 60.0
MANIFEST_MAX_BYTES = 64 * 1024 * 1024  # some 300,000 entries; a bigger one is damaged, not read
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{16}\.[0-9]+\Z")
_HASH = re.compile(r"[0-9a-f]{64}\Z")
_ENTRY_KEYS = {"source", "sha256", "previous"}
_DAMAGED_ADVICE = ("move it away and render again (files identical to what unitgen renders are then "
                   "adopted again)")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# unchanged: same content, ours; adopt: same content, not yet in the manifest;
# forget: ours, gone from the disk (only the manifest entry goes).
Action = Literal["create", "update", "remove", "unchanged", "adopt", "forget", "release"]


@dataclass
class Change:
    """What happens to one file: create, update, remove, unchanged, adopt, forget
    (it is gone already) or release (--force: left in place, no longer unitgen's)."""

    name: str
    action: Action
    old: Optional[str] = None  # current content, when it is a regular file
    new: Optional[str] = None  # content to write

    @property
    def text(self) -> str:
        """The new content; every action but remove and forget has one."""
        assert self.new is not None, (self.name, self.action)
        return self.new


@dataclass
class Plan:
    """Every change for one render into one directory, plus refusals."""

    source: str
    changes: List[Change] = field(default_factory=list)
    conflicts: List[str] = field(default_factory=list)

    def named(self, *actions: Action) -> List[str]:
        return [c.name for c in self.changes if c.action in actions]

    @property
    def writes(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


class OutputDir:
    """An output directory, opened and locked for the duration of a ``with``."""

    def __init__(self, path: str, create: bool = True, lock: bool = True):
        self.path = path
        self.create = create
        self.lock = lock
        self.fd = -1

    def __enter__(self) -> "OutputDir":
        try:
            if self.create:
                os.makedirs(self.path, mode=0o755, exist_ok=True)
            elif not os.path.lexists(self.path):
                return self  # planning only (a dry run): a directory yet to be made is empty
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            if self.lock:
                self._lock()
                self._remove_stale_temp_files()
        except OSError as exc:
            self.__exit__()
            raise os_error(self.path, "open the output directory", exc) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
        self.fd = -1

    def _lock(self) -> None:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UnitgenError(f"{self.path}: another unitgen has held the directory lock for "
                                       f"{LOCK_WAIT_SECONDS:.0f} s; giving up") from None
                time.sleep(0.05)

    # -- reading -------------------------------------------------------------

    def read_manifest(self) -> Dict[str, dict]:
        try:
            text = self._read(MANIFEST, MANIFEST_MAX_BYTES)
        except _Damaged as exc:
            raise UnitgenError(f"{os.path.join(self.path, MANIFEST)} is damaged ({exc}); {_DAMAGED_ADVICE}") from None
        except _NotRegular as exc:
            raise UnitgenError(f"{os.path.join(self.path, MANIFEST)} {exc}; unitgen does not follow it") from None
        if text is None:
            return {}
        try:
            return parse_manifest(text)
        except _Damaged as exc:
            raise UnitgenError(one_line(f"{os.path.join(self.path, MANIFEST)} is damaged ({exc}); "
                                        f"{_DAMAGED_ADVICE}")) from None

    def _read(self, name: str, limit: Optional[int] = None) -> Optional[str]:
        """Content of a regular file in the directory; None if absent.

        Raises _NotRegular for a symlink or anything else that is not a file,
        and _Damaged when it holds more than ``limit`` bytes.
        """
        if self.fd < 0:
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _NotRegular("is a symlink") from None
            raise UnitgenError(f"{os.path.join(self.path, name)}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _NotRegular("is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read() if limit is None else f.read(limit + 1)
            if limit is not None and len(data) > limit:
                raise _Damaged(f"over {limit // (1024 * 1024)} MiB")
            return data.decode("utf-8", errors="surrogateescape")
        except OSError as exc:
            raise os_error(os.path.join(self.path, name), "read", exc) from None
        finally:
            os.close(fd)

    # -- planning ------------------------------------------------------------

    def plan(self, units: Dict[str, str], source: str, force: bool = False,
             replace_links: Collection[str] = ()) -> Plan:
        """Compare ``units`` (name -> text) with the directory; change nothing.

        ``replace_links``: names whose symlink is a package's alias that ours
        takes over (takeover.py): the link is replaced by our file (rename,
        never a write through it) without --force."""
        manifest = self.read_manifest()
        self._check_names(units)
        result = Plan(source)
        for name, text in units.items():
            self._plan_one(result, manifest.get(name), name, text, force, name in replace_links)
        for name, entry in manifest.items():
            if entry.get("source") == source and name not in units:
                self._plan_removal(result, entry, name, force)
        return result

    def _plan_one(self, result: Plan, entry: Optional[dict], name: str, text: str, force: bool,
                  replace_link: bool = False) -> None:
        try:
            old = self._read(name)
        except _NotRegular as exc:
            if replace_link and "symlink" in str(exc):
                result.changes.append(Change(name, "create", None, text))
            elif force and "symlink" in str(exc):
                result.changes.append(Change(name, "update", None, text))
            else:
                result.conflicts.append(f"{name} {exc}; unitgen does not write through it"
                                        + ("" if "symlink" not in str(exc) else " (--force replaces the link itself)"))
            return
        if old is None:
            result.changes.append(Change(name, "create", None, text))
            return
        foreign = entry is not None and entry.get("source") != result.source
        if old == text and not foreign:
            result.changes.append(Change(name, "unchanged" if entry else "adopt", old, text))
            return
        problem = _ownership_problem(entry, old, result.source)
        if problem and not force:
            result.conflicts.append(f"{name} {problem}")
            return
        result.changes.append(Change(name, "update", old, text))

    def _plan_removal(self, result: Plan, entry: dict, name: str, force: bool) -> None:
        try:
            old = self._read(name)
        except _NotRegular as exc:
            if force:  # not a file unitgen wrote: released, never removed
                result.changes.append(Change(name, "release"))
            else:
                result.conflicts.append(f"{name} left the conf but {exc}; not removed "
                                        "(--force forgets it and leaves it in place)")
            return
        if old is None:
            result.changes.append(Change(name, "forget"))
        elif digest(old) in _hashes(entry):
            result.changes.append(Change(name, "remove", old, None))
        elif force:  # unitgen cannot prove it wrote this content: forced, it lets the file go, not deletes it
            result.changes.append(Change(name, "release"))
        else:
            result.conflicts.append(f"{name} left the conf but was changed since unitgen wrote it; not removed "
                                    "(--force forgets it and leaves it in place)")

    # -- writing -------------------------------------------------------------

    def refuse_conflicts(self, plan: Plan) -> None:
        """Raise OwnershipError naming every file in the way, if any is."""
        if plan.conflicts:
            raise OwnershipError(_conflict_message(self.path, plan.conflicts))

    def apply(self, plan: Plan) -> None:
        """Carry out a conflict-free plan (see the module doc for the order)."""
        self.refuse_conflicts(plan)
        manifest = self.read_manifest()
        if not plan.writes and all(c.name in manifest for c in plan.changes):
            return
        writes = [c for c in plan.changes if c.action in ("create", "update")]
        temps: List[Tuple[str, str]] = []
        try:  # phase 1: every new file on disk, then both hashes are ours while in flight
            for change in writes:
                temps.append((self._write_temp(change.text), change.name))
            self._sync(temps)
            for change in writes:
                manifest[change.name] = {
                    "source": plan.source,
                    "sha256": digest(change.text),
                    "previous": digest(change.old) if change.old is not None else None,
                }
            self._write_manifest(manifest)
        except OSError as exc:
            self._remove_temps(temps)
            raise os_error(self.path, "write", exc, "nothing was changed") from None
        try:
            for temp, name in temps:  # phase 2
                os.rename(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            for change in plan.changes:  # phase 3: removals, adoptions
                if change.action == "remove":
                    if self._still(change.name, change.old):
                        _unlink_quietly(change.name, self.fd)
                        manifest.pop(change.name, None)
                elif change.action in ("forget", "release"):
                    manifest.pop(change.name, None)
                elif change.action in ("create", "update", "adopt", "unchanged"):
                    manifest[change.name] = {"source": plan.source, "sha256": digest(change.text)}
            self._write_manifest(manifest)
            os.fsync(self.fd)
        except OSError as exc:
            self._remove_temps(temps)
            raise os_error(self.path, "write", exc, "every unit is old or new; render again to finish") from None

    def _still(self, name: str, content: Optional[str]) -> bool:
        """Whether ``name`` still holds ``content`` (checked again just before a removal)."""
        try:
            return self._read(name) == content
        except (_NotRegular, UnitgenError):
            return False

    def _remove_temps(self, temps: List[Tuple[str, str]]) -> None:
        for temp, _ in temps:
            try:
                _unlink_quietly(temp, self.fd)
            except OSError:
                pass

    def _check_names(self, units: Dict[str, str]) -> None:
        """Every unit name is a plain file name this file system can hold, checked
        before anything is written (a manifest never names a file never written)."""
        try:
            name_max = os.fpathconf(self.fd, "PC_NAME_MAX") if self.fd >= 0 else 255
        except (OSError, ValueError):
            name_max = 255
        for name in units:
            why = _bad_name(name)
            if why is None and len(name.encode("utf-8", "surrogateescape")) > name_max:
                why = f"is longer than the {name_max} bytes a file name may have on this file system"
            if why:
                raise UnitgenError(one_line(f"{self.path}: the unit name {_short(name)} {why}; nothing was written"))

    def _write_manifest(self, manifest: Dict[str, dict]) -> None:
        text = json.dumps({"unitgen": 1, "files": dict(sorted(manifest.items()))}, indent=1, ensure_ascii=False)
        temp = self._write_temp(text + "\n")
        self._sync([(temp, MANIFEST)])
        os.rename(temp, MANIFEST, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def _write_temp(self, text: str) -> str:
        """Write ``text`` to a new temp file; returns its name, short whatever
        the unit's (a name too long fails before the manifest names it)."""
        temp = f"{TEMP_PREFIX}{os.urandom(8).hex()}.{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                     dir_fd=self.fd)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(text.encode("utf-8", errors="surrogateescape"))
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            _unlink_quietly(temp, self.fd)
            raise
        finally:
            os.close(fd)
        return temp

    def _sync(self, temps: List[Tuple[str, str]]) -> None:
        """Make the temp files durable: one syncfs() of the directory's
        filesystem when there are several (one journal commit, not one per
        file), else fsync() each."""
        if len(temps) > 1 and _syncfs(self.fd):
            return
        for temp, _ in temps:
            fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _remove_stale_temp_files(self) -> None:
        """Temp files of an interrupted run (we hold the lock: none is in use)."""
        for entry in os.scandir(self.fd):
            if _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                _unlink_quietly(entry.name, self.fd)


class _NotRegular(Exception):
    pass


class _Damaged(Exception):
    """Why a manifest cannot be trusted."""


def parse_manifest(text: str) -> Dict[str, dict]:
    """The ``files`` of a manifest, every entry checked; raises _Damaged.

    An entry is ``NAME: {"source": str, "sha256": HEX, "previous": HEX|null}``
    where NAME is a plain file name (see _bad_name): a manifest can only ever
    name files in its own directory.
    """
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _Damaged("nested too deeply") from None
    except ValueError as exc:
        raise _Damaged(f"not JSON: {exc}" if not isinstance(exc, _Damaged) else str(exc)) from None
    if not isinstance(data, dict) or data.get("unitgen") != 1 or not isinstance(data.get("files"), dict):
        raise _Damaged('not {"unitgen": 1, "files": {...}}')
    for name, entry in data["files"].items():
        why = _bad_name(name)
        if why:
            raise _Damaged(f"the entry {_short(name)} {why}")
        if not isinstance(entry, dict) or set(entry) - _ENTRY_KEYS or not isinstance(entry.get("source"), str) \
                or not _HASH.match(str(entry.get("sha256"))) \
                or not (entry.get("previous") is None or _HASH.match(str(entry["previous"]))):
            raise _Damaged(f"the entry {_short(name)} is not "
                           '{"source": PATH, "sha256": HASH, "previous": HASH or null}')
    return data["files"]


def _unique_keys(pairs: List[Tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Damaged("a name listed twice")
    return dict(pairs)


def _bad_name(name: str) -> Optional[str]:
    """Why ``name`` is not a plain file name of an output directory, if it is not."""
    if not name or name in (".", ".."):
        return "is not a file name"
    if "/" in name or "\0" in name:
        return "is a path, not a plain file name in this directory"
    if name == MANIFEST or name.startswith(TEMP_PREFIX):
        return "is unitgen's own bookkeeping"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "has a control character"
    return None


def _short(name: str) -> str:
    """A name for a message: quoted, and cut when long."""
    return repr(name if len(name) <= 80 else name[:80] + "...")


def os_error(path: str, what: str, exc: OSError, outcome: str = "") -> UnitgenError:
    """One line for an operator: where, what failed, the system's reason, a
    hint for the usual causes, and what state things are left in."""
    hints = {errno.EACCES: "unitgen must run as root to write there", errno.EPERM: "unitgen must run as root",
             errno.EROFS: "a read-only file system", errno.ENOSPC: "the file system is full",
             errno.EDQUOT: "over the disk quota", errno.ENOTDIR: "not a directory",
             errno.EEXIST: "it exists and is not a directory",
             errno.ENAMETOOLONG: "a name is too long for the file system"}
    where = exc.filename if isinstance(exc.filename, str) and exc.filename.startswith("/") else path
    hint = hints.get(exc.errno) if exc.errno is not None else None
    text = f"{where}: cannot {what}: {exc.strerror or exc}" + (f" ({hint})" if hint else "") \
        + (f"; {outcome}" if outcome else "")
    return UnitgenError(one_line(text))


def _hashes(entry: dict) -> set:
    return {entry.get("sha256"), entry.get("previous")} - {None}


def _ownership_problem(entry: Optional[dict], old: str, source: str) -> Optional[str]:
    if entry is None:
        return "exists and was not written by unitgen (--force takes it over)"
    if entry.get("source") != source:
        return f"belongs to another conf, {entry.get('source')} (--force takes it over)"
    if digest(old) not in _hashes(entry):
        return "was changed since unitgen wrote it (--force overwrites it)"
    return None


def _syncfs(fd: int) -> bool:
    """syncfs(2) through libc; False where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs(fd) == 0
    except (OSError, AttributeError):
        return False


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _conflict_message(path: str, conflicts: List[str]) -> str:
    lines = [f"{path}: nothing was written, because:"] + [f"  {c}" for c in conflicts]
    return "\n".join(lines)
