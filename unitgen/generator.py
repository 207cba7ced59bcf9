"""unitgen as a systemd generator: the units always match /etc/unitgen.

systemd runs every generator early at boot and again at each daemon-reload,
before it loads any unit (systemd.generator(7)):

    unitgen-generator NORMAL_DIR [EARLY_DIR LATE_DIR]

It reads /etc/unitgen/conf.yaml and /etc/unitgen/conf.d/*.yaml as one conf
(config.ConfFiles; UNITGEN_CONF_DIR replaces /etc/unitgen), renders this
host's units with the Renderer ``unitgen render`` uses, adding SourcePath=
(the file that defines the service), and writes them into NORMAL_DIR with
the links ``systemctl enable`` would make from their [Install] section
(generated units cannot be enabled; see install_links()). Where render would add
unitgen-watch.service, so does the generator, its watcher reading the conf
directory (``unitgen watch --conf-dir``) as the generator does. NORMAL_DIR
ranks below /etc/systemd/system, so drop-ins and overrides there still apply.

The links come from the model (wanted_by, and the typed RequiredBy=,
Alias= of the conf's raw [Install]), never from reading a unit's
text back: Python splits lines at U+2028 and others where systemd does not.

A bad conf costs neither the boot nor every service:
* a problem inside one service (a bad value, one that no unit can carry, a
  dependency on an unknown service, a dependency cycle, a name or an alias
  another service has) leaves out that service and, round after round,
  every service that depends on it;
* a conf.d file that is not a regular file (a FIFO, a device, a directory:
  never opened, so never waited for), cannot be read, has a name no unit's
  SourcePath= can carry (a newline, not UTF-8) or cannot be parsed leaves
  out that file only, unless it names defaults: (whose loss could change
  what runs as whom);
* a problem outside any one service (conf.yaml unusable, version:,
  defaults:, hosts:, this host missing from hosts:) leaves out the whole
  conf, since no service's settings are then known for sure.
Every problem is logged with its FILE:LINE:COL, after one line that says what
was left out (the first lines of a burst survive the kernel's rate limit).
Exit status: 0 when every service was generated (warnings may be logged),
1 when anything was left out, 2 for wrong arguments.

Messages go to /dev/kmsg, which the journal takes in at boot (syslog and the
journal are out of a generator's reach); to stderr when that is a terminal
(run by hand) or when /dev/kmsg cannot be opened. Nothing here blocks: no
lock, no network (this host is found by its hostname as is, with no DNS
lookup), and nothing is written outside the output directory.
"""

from __future__ import annotations

import os
import sys

# A run whose units are in the cache (gencache.py) imports only what this
# module and gencache import at the top: os and sys, nothing of typing,
# dataclasses, re, json, PyYAML or Jinja2 (tests/test_generator_cache.py
# proves it). Everything else is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import AbstractSet, Dict, List, Optional, Sequence, Set, TextIO, Tuple

    from .config import ConfFiles
    from .errors import Mark, Problem
    from .graph import UnitPlan
    from .model import Conf

CONF_DIR = "/etc/unitgen"
KMSG = "/dev/kmsg"
IDENTIFIER = "unitgen-generator"
LINK = "etc/systemd/system-generators/unitgen"  # below the root; systemd runs what it points to
_KMSG_LINE_MAX = 900  # bytes: the kernel refuses a longer record
_ERROR, _WARNING = 3, 4  # syslog priorities


def main(argv: Optional[Sequence[str]] = None, log: Optional[Log] = None) -> int:
    """The console script: ``unitgen-generator NORMAL_DIR [EARLY_DIR LATE_DIR]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    log = log or Log()
    try:
        if len(args) == 2 and args[0] == "--cache":  # run by unitgen-generator-cache.service, never by systemd
            return 0 if refresh_cache(args[1], log) else 1
        if len(args) not in (1, 3):
            log.error("usage: unitgen-generator NORMAL_DIR [EARLY_DIR LATE_DIR]")
            return 2
        return 0 if generate(args[0], os.environ.get("UNITGEN_CONF_DIR", CONF_DIR), log) else 1
    except Exception:  # a generator reports its failure, whatever it is, and lets the boot go on
        import traceback

        log.error("internal error; units may be missing:")
        for line in traceback.format_exc().splitlines():
            log.error(line)
        return 1
    finally:
        log.close()


def generate(out_dir: str, conf_dir: str, log: Log) -> bool:
    """Write this host's units from the conf in ``conf_dir`` into ``out_dir``.

    True when every service was generated; False when a problem (logged)
    left out services, files, or the whole conf.
    """
    outcome = units(conf_dir)
    for unit, (name, text, links) in outcome.units.items():
        try:
            write_unit(out_dir, unit, text, links)
        except OSError as exc:
            from .errors import Problem

            outcome.problems.append(Problem(f"{unit}: cannot write {exc.filename}: {exc.strerror}"
                                            + (" (another generator wrote it?)" if isinstance(exc, FileExistsError)
                                               else "")))
            if outcome.left_out is not None:  # (None: nothing was generated at all)
                outcome.left_out.add(name)
    if outcome.problems:
        _report(log, conf_dir, outcome)
    for warning in outcome.warnings:
        log.warning(str(warning))
    _report_shadowed(log, outcome)
    return not outcome.problems


def _report_shadowed(log: Log, outcome: Outcome) -> None:
    """A generated unit ranks below /etc/systemd/system and /run/systemd/system:
    a package's alias there (Debian's redis.service -> redis-server.service) or
    any unit file of that name silently wins. Say so (takeover.shadowing)."""
    from .shadowing import shadowing

    for unit, (_, _, links) in outcome.units.items():
        for name in [unit, *(link for link in links if "/" not in link)]:  # the unit and its aliases
            why = shadowing(name)
            if why:
                log.warning(f"{name} is generated but not in effect: {why}")


def conf_files(conf_dir: str) -> List[str]:
    """conf.yaml, then conf.d/*.yaml in name order (hidden files skipped), those that exist."""
    paths = [os.path.join(conf_dir, "conf.yaml")] if os.path.lexists(os.path.join(conf_dir, "conf.yaml")) else []
    drop_ins = os.path.join(conf_dir, "conf.d")
    try:
        names = sorted(n for n in os.listdir(drop_ins) if n.endswith(".yaml") and not n.startswith("."))
    except OSError:  # absent, not a directory, unreadable: as if empty (conf.yaml still counts)
        names = []
    return paths + [os.path.join(drop_ins, n) for n in names]


class Outcome:
    """What a conf gives this host: unit plans, and what was left out and why.
    (A plain class, not a dataclass: dataclasses costs a cache hit more than all the rest.)"""

    __slots__ = ("plans", "problems", "left_out", "warnings", "files_left_out", "units", "native")

    def __init__(self, plans: Optional[List[UnitPlan]] = None, problems: Optional[List[Problem]] = None,
                 left_out: Optional[Set[str]] = None, warnings: Optional[List[Problem]] = None,
                 files_left_out: Optional[List[str]] = None,
                 units: Optional[Dict[str, Tuple[str, str, List[str]]]] = None, native: bool = True):
        self.plans: List[UnitPlan] = plans if plans is not None else []
        self.problems: List[Problem] = problems if problems is not None else []
        self.left_out = left_out  # services left out; None: the whole conf
        self.warnings: List[Problem] = warnings if warnings is not None else []
        self.files_left_out: List[str] = files_left_out if files_left_out is not None else []  # conf.d files that cost only themselves
        self.units: Dict[str, Tuple[str, str, List[str]]] = units if units is not None else {}  # unit -> (service, text, links)
        self.native = native


def units(conf_dir: str) -> Outcome:
    """This host's units from the conf directory: every plan rendered (with
    SourcePath=, the file defining it), and the watcher if one is needed (it
    reads the conf directory, as the generator does; its SourcePath= is the
    first file). A service that cannot be rendered (a value no unit can
    carry) is left out with its dependents, as a service with a bad value is."""
    conf_dir = os.path.abspath(conf_dir)
    paths = conf_files(conf_dir)
    sources, file_problems = read_files(paths)
    if _cached(sources):  # a big conf: its units may be in the cache (gencache.py)
        from . import gencache

        found = gencache.load(gencache.key(conf_dir, paths, sources, file_problems))
        if found is not None:
            return found
    return _units(conf_dir, paths, sources, file_problems)


def _cached(sources: Dict[str, bytes]) -> bool:
    from .gencache import CACHE_MIN_BYTES

    return sum(len(data) for data in sources.values()) >= CACHE_MIN_BYTES


def refresh_cache(conf_dir: str, log: Log) -> bool:
    """``unitgen-generator --cache CONF_DIR``: compute this host's units as the
    generator would and keep them in the cache, for the next run of the generator."""
    from . import gencache

    conf_dir = os.path.abspath(conf_dir)
    paths = conf_files(conf_dir)
    sources, file_problems = read_files(paths)
    key = gencache.key(conf_dir, paths, sources, file_problems)
    try:
        gencache.store(key, _units(conf_dir, paths, sources, file_problems))
    except OSError as exc:
        log.error(f"cannot write the cache in {gencache.cache_dir()}: {exc.strerror}")
        return False
    return True


def _units(conf_dir: str, paths: List[str], sources: Dict[str, bytes], file_problems: List[Problem]) -> Outcome:
    """units(), computed from the files' bytes (no cache)."""
    from .errors import Problem, UnitgenError
    from .render import WATCH_UNIT, WATCH_WANTED_BY, Renderer

    skipped = [path for path in paths if path not in sources]
    if not sources:
        whole = bool(paths) and os.path.basename(paths[0]) == "conf.yaml" and paths[0] in skipped
        return Outcome(problems=file_problems, left_out=None if whole else set(), files_left_out=skipped)
    try:
        renderer = Renderer()
    except UnitgenError as exc:  # unitgen-probe is not installed: no unit could start
        return Outcome(problems=file_problems + [Problem(str(exc))], files_left_out=skipped)
    unrenderable: List[Problem] = []
    unrendered: Set[str] = set()  # read() finds the rest, and their problems, again each round
    while True:
        outcome = read(sources, unrendered)
        outcome.problems[:0] = file_problems + unrenderable
        outcome.files_left_out[:0] = skipped
        failed: Set[str] = set()
        for plan in outcome.plans:
            assert plan.service.mark is not None  # every service of a conf read from files has one
            source = plan.service.mark.file
            try:
                text = renderer.unit(plan, source, source)
                text.encode("utf-8")
            except Exception as exc:  # one service's value must not cost the others
                unrenderable.append(Problem(f"cannot be rendered: {_describe(exc)}", plan.service.mark,
                                            _service_path(outcome, plan.service.name)))
                failed.add(plan.service.name)
                continue
            outcome.units[plan.unit] = (plan.service.name, text, install_links(plan))
        if not failed or outcome.left_out is None:
            break
        unrendered |= failed
    if outcome.plans and outcome.left_out is not None:
        first = next(iter(sources))
        watcher = renderer.watcher(outcome.plans, ["--conf-dir", conf_dir], first, first)
        if watcher:
            outcome.units[WATCH_UNIT] = (WATCH_UNIT[:-len(".service")], watcher, _links(WATCH_UNIT, WATCH_WANTED_BY))
    if _cached(sources):
        from . import gencache

        outcome.units.update(gencache.units(conf_dir, next(iter(sources))))
    return outcome


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _service_path(outcome: Outcome, name: str) -> str:
    from .schema import format_path

    return format_path(("services", name) if outcome.native else (name,))


def read_files(paths: Sequence[str]) -> Tuple[Dict[str, bytes], List[Problem]]:
    """The bytes of each file, read without ever blocking: only a regular
    file is opened (O_NONBLOCK, so that a FIFO swapped in after the check
    cannot block either), and at most limits.MAX_FILE_BYTES + 1 of it.

    A conf.d file that cannot be used (not a regular file, unreadable, too
    big, a name that no unit's SourcePath= can carry) costs itself only: it is
    left out with a problem. conf.yaml, which holds what every file shares,
    costs everything: ({}, [problem])."""
    from . import limits

    sources: Dict[str, bytes] = {}
    problems: List[Problem] = []
    for i, path in enumerate(paths):
        why = _unusable_name(path)
        data = None
        if why is None:
            try:
                data = _read_regular(path, limits.MAX_FILE_BYTES + 1)
                if len(data) > limits.MAX_FILE_BYTES:  # never parse a cut file: its head may parse
                    why = f"larger than the {limits.MAX_FILE_BYTES} bytes a conf file may have"
            except OSError as exc:
                why = exc.strerror or str(exc)
            except _NotRegular as exc:
                why = str(exc)
        if why is not None:
            from .errors import Mark, Problem

            problems.append(Problem(f"left out: {why}; the generator reads only regular files "
                                    "whose name a unit can carry", Mark(path, 1, 1)))
            if i == 0 and os.path.basename(path) == "conf.yaml":
                return {}, problems
            continue
        assert data is not None  # read, since no reason stopped it
        sources[path] = data
    return sources, problems


class _NotRegular(Exception):
    pass


def _read_regular(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path`` if it is a regular file; never blocks."""
    import stat

    if not stat.S_ISREG(os.stat(path).st_mode):
        raise _NotRegular("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotRegular("not a regular file")
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, min(1 << 20, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _unusable_name(path: str) -> Optional[str]:
    """Why SourcePath= and a unit's comment could not carry this file's path, if they cannot."""
    if path.isascii() and path.isprintable() and path == path.strip() and not path.endswith("\\") \
            and len(path) < 4096:
        return None  # plain for systemd.check_plain too, which need not be imported for it (re)
    from . import systemd

    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    try:
        systemd.check_plain(path)
    except systemd.Unexpressible as exc:
        return f"its name {exc}"
    return None


def read(sources: Dict[str, bytes], leave_out: AbstractSet[str] = frozenset()) -> Outcome:
    """This host's unit plans from the conf files (path -> bytes), leaving
    out broken services (and those depending on them), a conf.d file that
    cannot be parsed, or the whole conf (see the module doc), and the
    services in ``leave_out``."""
    from . import config, graph
    from .errors import ConfigError, Problem, UsageError

    sources = dict(sources)
    file_problems: List[Problem] = []
    dropped: List[str] = []  # conf.d files that cannot be parsed, each costing itself only
    while True:
        try:
            files = config.ConfFiles(list(sources), sources)
            break
        except ConfigError as exc:
            broken = {p.mark.file for p in exc.problems if p.mark} & set(sources)
            if any(not _costs_itself_only(path, sources) for path in broken) or not broken or \
                    any(p.mark is None or p.mark.file not in broken for p in exc.problems):
                return Outcome(problems=file_problems + exc.problems)
            file_problems += exc.problems
            dropped += sorted(broken)
            for path in broken:
                del sources[path]
            if not sources:
                return Outcome(problems=file_problems, left_out=set(), files_left_out=dropped)
    problems: List[Problem] = file_problems
    left_out = set(leave_out)
    while True:
        conf = None
        try:
            conf = files.read(left_out)
            return Outcome(graph.plan(conf, graph.local_host(conf, dns=False, hint="")), problems, left_out,
                           conf.warnings, dropped, native=files.native)
        except ConfigError as exc:
            problems.extend(exc.problems)
            culprits = _culprits(exc.problems, files, conf)
        except UsageError as exc:  # this host is not in hosts:
            problems.append(Problem(str(exc)))
            culprits = None
        if culprits is None or culprits <= left_out:
            return Outcome(problems=problems)
        left_out |= culprits
        if left_out >= files.service_names:
            return Outcome([], problems, left_out, files_left_out=dropped)


def _costs_itself_only(path: str, sources: Dict[str, bytes]) -> bool:
    """Whether a file that cannot be parsed may be left out alone: a conf.d
    file, unless it might hold what other files' services depend on (its
    text names defaults:, which, lost, could change what runs as whom)."""
    return os.path.basename(os.path.dirname(path)) == "conf.d" and b"defaults" not in sources[path]


def _culprits(problems: Sequence[Problem], files: ConfFiles, conf: Optional[Conf]) -> Optional[Set[str]]:
    """The services the problems lie in; None when one lies outside every service.

    A problem of the reader names its service by its key path; one of the
    graph (a cycle, a dependency nothing can check) by the mark of a service
    or of one of its dependencies (a dependency from defaults: is in several).
    """
    at: Dict[Optional[Mark], Set[str]] = {}
    for service in conf.services.values() if conf else ():
        for mark in [service.mark, *(dep.mark for dep in service.deps)]:
            at.setdefault(mark, set()).add(service.name)
    culprits: Set[str] = set()
    for problem in problems:
        name = files.service_of(problem)
        found = {name} if name is not None else at.get(problem.mark) if problem.mark else None
        if not found:
            return None
        culprits |= found
    return culprits


def install_links(plan: UnitPlan) -> List[str]:
    """The links ``systemctl enable`` makes for a unit from its [Install]
    section, as paths below the output directory (TARGET.wants/UNIT, ...,
    ALIAS). They come from the model, the very values the [Install] lines
    were rendered from: never from reading a unit's text back, which
    could split a line where systemd does not."""
    s = plan.service
    return _links(plan.unit, s.wanted_by, s.required_by, s.aliases)


def _links(unit: str, wanted_by: Sequence[str] = (), required_by: Sequence[str] = (),
           aliases: Sequence[str] = ()) -> List[str]:
    from . import systemd

    suffix = systemd.INSTALL_LINKS
    links = [f"{target}{suffix['WantedBy']}/{unit}" for target in wanted_by]
    links += [f"{target}{suffix['RequiredBy']}/{unit}" for target in required_by]
    links += list(aliases)
    for link in links:  # the model holds unit names only; a path here is a bug, not a conf
        check_link(unit, link)
    return list(dict.fromkeys(links))


def check_link(unit: str, link: str) -> None:
    """A link below the output directory: TARGET.wants/UNIT or an alias, never a path out of it."""
    if any(part in ("", ".", "..") for part in link.split("/")) or link.count("/") > 1:
        raise AssertionError(f"{unit}: a link {link!r} that is not a unit name")


def write_unit(out_dir: str, unit: str, text: str, links: Sequence[str]) -> None:
    """Create ``out_dir/unit`` and its links (relative, as systemd's own generators
    make them). Nothing that exists is replaced: systemd hands every generator
    the same fresh directories, so an existing file is another generator's."""
    path = os.path.join(out_dir, unit)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "wb") as f:
        f.write(text.encode("utf-8"))
    for link in links:  # TARGET.wants/UNIT, or an alias beside the unit
        where = os.path.join(out_dir, link)
        directory = os.path.dirname(where)
        if directory != out_dir:
            try:
                os.mkdir(directory, 0o755)
            except FileExistsError:
                pass
        os.symlink(os.path.relpath(path, directory), where)


def _report(log: Log, conf_dir: str, outcome: Outcome) -> None:
    """What was left out in one line, then every problem (FILE:LINE:COL first)."""
    from .errors import one_line

    count = f"{len(outcome.problems)} problem{'s' if len(outcome.problems) != 1 else ''}"
    left_out = "everything" if outcome.left_out is None else ", ".join(
        sorted(outcome.left_out) + [f"the file {path}" for path in outcome.files_left_out])
    log.error(one_line(f"{conf_dir}: {count}; left out: {left_out}"))
    for problem in outcome.problems:
        log.error(str(problem))


class Log:
    """A generator's log: /dev/kmsg, else stderr (see the module doc)."""

    def __init__(self, kmsg: str = KMSG, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stderr
        self.fd = -1
        if not self.stream.isatty():
            try:
                self.fd = os.open(kmsg, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                pass

    def error(self, message: str) -> None:
        self.write(_ERROR, message)

    def warning(self, message: str) -> None:
        self.write(_WARNING, message)

    def write(self, priority: int, message: str) -> None:
        """One kmsg record (``<PRIORITY>unitgen-generator[PID]: message``) per line."""
        level = "warning: " if priority == _WARNING else ""
        for line in message.split("\n"):  # not splitlines(): a record per line as a terminal shows it
            if self.fd >= 0:
                record = f"<{priority}>{IDENTIFIER}[{os.getpid()}]: {level}{line}".encode("utf-8", "replace")
                record = record[:_KMSG_LINE_MAX].decode("utf-8", "ignore").encode("utf-8") + b"\n"
                try:
                    os.write(self.fd, record)
                    continue
                except OSError:
                    pass
            print(f"{IDENTIFIER}: {level}{line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


# -- installation: unitgen install-generator ---------------------------------------

def program() -> str:
    """The installed unitgen-generator."""
    from . import paths

    return paths.installed_script(IDENTIFIER)


def install(root: str = "/") -> Tuple[str, str]:
    """Link ROOT/etc/systemd/system-generators/unitgen to unitgen-generator;
    returns (link, target). A link of unitgen's to another target (an older
    install) is replaced; anything else there is the operator's and refused."""
    from .errors import UnitgenError

    link, target = os.path.join(root, LINK), program()
    if _ours(link) and os.readlink(link) == target:
        return link, target
    if os.path.lexists(link) and not _ours(link):
        raise UnitgenError(f"{link} exists and is not unitgen's link (a mask, or another program); remove it first")
    os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
    temp = f"{link}.unitgen-new"
    if os.path.lexists(temp):
        os.unlink(temp)
    os.symlink(target, temp)
    os.replace(temp, link)
    return link, target


def uninstall(root: str = "/") -> Optional[str]:
    """Remove unitgen's link; returns it, or None when there was none."""
    from .errors import UnitgenError

    link = os.path.join(root, LINK)
    if not os.path.lexists(link):
        return None
    if not _ours(link):
        raise UnitgenError(f"{link} is not unitgen's link (a mask, or another program); left alone")
    os.unlink(link)
    return link


def _ours(link: str) -> bool:
    """Whether ``link`` is a symlink to a unitgen-generator (a mask to /dev/null is not)."""
    return os.path.islink(link) and os.path.basename(os.readlink(link)) == IDENTIFIER
