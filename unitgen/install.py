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
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple

from .errors import OwnershipError, UnitgenError

MANIFEST = ".unitgen-manifest.json"
TEMP_PREFIX = ".unitgen-tmp."
FILE_MODE = 0o644
LOCK_WAIT_SECONDS = 60.0


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# unchanged: same content, ours; adopt: same content, not yet in the manifest;
# forget: ours, gone from the disk (only the manifest entry goes).
Action = Literal["create", "update", "remove", "unchanged", "adopt", "forget"]


@dataclass
class Change:
    """What happens to one file: create, update, remove, unchanged or adopt."""

    name: str
    action: Action
    old: Optional[str] = None  # current content, when it is a regular file
    new: Optional[str] = None  # content to write


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
        if self.create:
            os.makedirs(self.path, mode=0o755, exist_ok=True)
        elif not os.path.lexists(self.path):
            return self  # planning only (a dry run): a directory yet to be made is empty
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnitgenError(f"{self.path}: cannot open the output directory: {exc.strerror}") from None
        if self.lock:
            self._lock()
            self._remove_stale_temp_files()
        return self

    def __exit__(self, *exc_info) -> None:
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
            text = self._read(MANIFEST)
        except _NotRegular as exc:
            raise UnitgenError(f"{os.path.join(self.path, MANIFEST)} {exc}; unitgen does not follow it") from None
        if text is None:
            return {}
        try:
            data = json.loads(text)
            files = data["files"]
            if not isinstance(files, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise UnitgenError(
                f"{os.path.join(self.path, MANIFEST)} is damaged; move it away and render again "
                "(files identical to what unitgen renders are then adopted again)") from None
        return files

    def _read(self, name: str) -> Optional[str]:
        """Content of a regular file in the directory; None if absent.

        Raises _NotRegular for a symlink or anything else that is not a file.
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
                return f.read().decode("utf-8", errors="surrogateescape")
        finally:
            os.close(fd)

    # -- planning ------------------------------------------------------------

    def plan(self, units: Dict[str, str], source: str, force: bool = False) -> Plan:
        """Compare ``units`` (name -> text) with the directory; change nothing."""
        manifest = self.read_manifest()
        result = Plan(source)
        for name, text in units.items():
            self._plan_one(result, manifest.get(name), name, text, force)
        for name, entry in manifest.items():
            if entry.get("source") == source and name not in units:
                self._plan_removal(result, entry, name, force)
        return result

    def _plan_one(self, result: Plan, entry: Optional[dict], name: str, text: str, force: bool) -> None:
        try:
            old = self._read(name)
        except _NotRegular as exc:
            if force and "symlink" in str(exc):
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
            if force:
                result.changes.append(Change(name, "remove"))
            else:
                result.conflicts.append(f"{name} left the conf but {exc}; not removed")
            return
        if old is None:
            result.changes.append(Change(name, "forget"))
        elif digest(old) in _hashes(entry) or force:
            result.changes.append(Change(name, "remove", old, None))
        else:
            result.conflicts.append(f"{name} left the conf but was changed since unitgen wrote it; not removed")

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
        for change in writes:  # phase 1: both hashes are ours while in flight
            manifest[change.name] = {
                "source": plan.source,
                "sha256": digest(change.new),
                "previous": digest(change.old) if change.old is not None else None,
            }
        self._write_manifest(manifest)
        temps = [(self._write_temp(change.name, change.new), change.name) for change in writes]
        self._sync(temps)  # phase 2: every new file is on disk before any of them replaces one
        for temp, name in temps:
            os.rename(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        for change in plan.changes:  # phase 3: removals, adoptions
            if change.action == "remove":
                _unlink_quietly(change.name, self.fd)
                manifest.pop(change.name, None)
            elif change.action == "forget":
                manifest.pop(change.name, None)
            elif change.action in ("create", "update", "adopt", "unchanged"):
                manifest[change.name] = {"source": plan.source, "sha256": digest(change.new)}
        self._write_manifest(manifest)
        os.fsync(self.fd)

    def _write_manifest(self, manifest: Dict[str, dict]) -> None:
        text = json.dumps({"unitgen": 1, "files": dict(sorted(manifest.items()))}, indent=1, ensure_ascii=False)
        temp = self._write_temp(MANIFEST, text + "\n")
        self._sync([(temp, MANIFEST)])
        os.rename(temp, MANIFEST, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def _write_temp(self, name: str, text: str) -> str:
        """Write ``text`` to a new temp file beside ``name``; returns the temp name."""
        temp = f"{TEMP_PREFIX}{name}.{os.getpid()}"
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
            if entry.name.startswith(TEMP_PREFIX):
                _unlink_quietly(entry.name, self.fd)


class _NotRegular(Exception):
    pass


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
