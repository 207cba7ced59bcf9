"""Units a package installed under a name the conf uses: what ours takes over.

Debian's redis-server installs redis-server.service with ``Alias=redis.service``,
and enabling it links /etc/systemd/system/redis.service to it; nginx installs
/lib/systemd/system/nginx.service, enabled. A conf naming services ``redis`` and
``nginx`` takes over those names. Done silently, that left two units for one
daemon, or ours disabled, or (with the generator, whose units rank below
/etc/systemd/system) the package's alias shadowing ours. So, for each unit name
and alias of the conf's services on this host:

* ``find()`` looks where systemd does (systemd.unit(5), highest precedence
  first): /etc/systemd/system, /run/systemd/system, /lib and /usr/lib/systemd/system
  (one directory on a merged-/usr system), for
  - a symlink there to a unit of another name: an **alias** of that unit (the
    package's, made when it was enabled);
  - a unit file of that name in /lib or /usr/lib: the **package's unit** of the
    same name, which ours overrides;
  - a package unit that declares ``Alias=`` that name in its [Install]
    section without being enabled: enabling it later would collide with ours.
* ``check`` and ``render`` name each takeover; ``render`` replaces an alias
  symlink with our file (rename: never writing through the link) and prints
  ``systemctl disable --now PACKAGE-UNIT`` before ``enable --now`` ours;
  ``apply`` stops and disables the package's unit first, over D-Bus, then
  enables ours (also when our file existed before) and restarts it where the
  package's process still runs under that name: exactly one enabled unit of
  that name, started at the next boot.
* The generator reports a name that a unit in /etc/systemd/system or
  /run/systemd/system shadows (``shadowing()``), since its own units rank below
  both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import Problem, UnitgenError
from .shadowing import ADMIN_DIRS, below as _below, shadowing  # noqa: F401 (shadowing: this module's API too)

if TYPE_CHECKING:
    from .graph import UnitPlan

VENDOR_DIRS = ("/lib/systemd/system", "/usr/lib/systemd/system")
_INSTALL_SECTION = re.compile(r"^\[Install\]\s*$", re.M)
_SECTION = re.compile(r"^\[", re.M)
_ALIAS = re.compile(r"^[ \t]*Alias[ \t]*=(.*)$", re.M)
READ_LIMIT = 1 << 20  # a unit file bigger than this is not a package's


@dataclass(frozen=True)
class Takeover:
    """One name of the conf on this host that an installed unit already uses."""

    name: str  # our unit name, or an alias of ours: redis.service
    unit: str  # the installed unit behind it: redis-server.service (nginx.service for the same name)
    path: str  # that unit's file: /lib/systemd/system/redis-server.service
    link: Optional[str] = None  # the alias symlink, e.g. /etc/systemd/system/redis.service
    declared_only: bool = False  # only an Alias= in the package's [Install]: no link (yet)

    @property
    def same_name(self) -> bool:
        return self.unit == self.name

    def describe(self) -> str:
        """One line for check and render."""
        if self.link and self.same_name:
            how = f"the link {self.link} -> {self.path}"
        elif self.link:
            how = f"its alias {self.link} -> {self.unit}"
        elif self.declared_only:
            how = f"an Alias= of {self.unit} ({self.path}), not enabled now"
        else:
            how = f"the package's unit {self.path}"
        return f"{self.name} takes over {how}"

    @property
    def to_disable(self) -> Optional[str]:
        """The installed unit to disable (and, when of another name, stop) so ours is the one."""
        return None if self.declared_only else self.unit


def find(names: Iterable[str], root: str = "/", ours: Sequence[str] = ()) -> Dict[str, Takeover]:
    """The takeover of each of ``names`` on the system below ``root``, if any.

    ``ours``: paths (below root) of files that are unitgen's own (its manifest):
    never reported."""
    wanted = list(dict.fromkeys(names))
    found: Dict[str, Takeover] = {}
    own = {os.path.normpath(p) for p in ours}
    judged = []
    for name in wanted:
        if any(os.path.normpath(os.path.join(d, name)) in own for d in ADMIN_DIRS):
            continue  # ours already: taken over before, if ever
        hit = _installed(name, root)
        if hit and os.path.normpath(hit.path) not in own:  # not an alias link to a unit of ours
            found[name] = hit
        judged.append(name)
    missing = [n for n in judged if n not in found]
    if missing:
        for name, (unit, path) in _declared_aliases(missing, root).items():
            found[name] = Takeover(name, unit, path, declared_only=True)
    return found


def _installed(name: str, root: str) -> Optional[Takeover]:
    for directory in ADMIN_DIRS + VENDOR_DIRS:
        path = os.path.join(directory, name)
        full = _below(root, path)
        if os.path.islink(full):
            target = os.readlink(full)
            unit = os.path.basename(target.rstrip("/"))
            if target == "/dev/null" or not unit:
                return None  # masked: nothing runs under that name
            resolved = os.path.join(directory, target) if not os.path.isabs(target) else target
            if unit != name:
                return Takeover(name, unit, resolved, link=path)
            return Takeover(name, name, resolved, link=path)  # a linked unit file (systemctl link)
        if os.path.isfile(full):
            if directory in VENDOR_DIRS:
                return Takeover(name, name, path)
            return None  # a file in /etc or /run: the output directory's rules judge it
    return None


def _declared_aliases(names: Sequence[str], root: str) -> Dict[str, Tuple[str, str]]:
    """Package units (in the vendor directories) whose [Install] says Alias= one of ``names``."""
    wanted = set(names)
    found: Dict[str, Tuple[str, str]] = {}
    seen = set()
    for directory in VENDOR_DIRS:
        full_dir = _below(root, directory)
        real = os.path.realpath(full_dir)
        if real in seen or not os.path.isdir(full_dir):
            continue  # /lib is /usr/lib on a merged-/usr system
        seen.add(real)
        for entry in sorted(os.scandir(full_dir), key=lambda e: e.name):
            if entry.is_symlink() or not entry.is_file() or "." not in entry.name:
                continue
            for alias in _aliases(entry.path):
                if alias in wanted and alias not in found and alias != entry.name:
                    found[alias] = (entry.name, os.path.join(directory, entry.name))
    return found


def _aliases(path: str) -> List[str]:
    try:
        with open(path, "rb") as f:
            text = f.read(READ_LIMIT).decode("utf-8", "replace")
    except OSError:
        return []
    match = _INSTALL_SECTION.search(text)
    if not match:
        return []
    section = text[match.end():]
    end = _SECTION.search(section)
    section = section[:end.start()] if end else section
    return [word for value in _ALIAS.findall(section) for word in value.split()]


def system_dir(output: str, root: str = "/") -> Optional[str]:
    """The systemd directory ``output`` is (/etc/systemd/system or /run/systemd/system),
    else None: units rendered elsewhere are for another machine or a later copy."""
    real = os.path.realpath(output)
    for directory in ADMIN_DIRS:
        if real == os.path.realpath(_below(root, directory)):
            return directory
    return None


def for_plans(plans: Iterable["UnitPlan"], directory: str, manifest: Iterable[str], root: str = "/") -> Dict[str, Takeover]:
    """The takeovers of the planned units' names and aliases, ours (``manifest``'s
    names in ``directory``) left out."""
    names = [name for plan in plans for name in (plan.unit, *plan.service.aliases)]
    return find(names, root, ours=[os.path.join(directory, name) for name in manifest])


def links_to_replace(takeovers: Dict[str, Takeover], directory: str) -> List[str]:
    """Names whose alias symlink in ``directory`` our file replaces."""
    return [t.name for t in takeovers.values() if t.link and os.path.dirname(t.link) == directory]


def advice(t: Takeover) -> str:
    """What unitgen does (render prints, apply does) so that the name is ours alone."""
    if t.declared_only:
        return f"do not enable {t.unit}: its alias would collide with ours"
    if t.same_name:
        return f"its links are replaced by ours (systemctl disable {t.unit}, then enable ours)"
    return f"{t.unit} is stopped and disabled, so that {t.name} is ours alone " \
           f"(or name the service otherwise and add Conflicts={t.unit})"


def warnings(plans: Sequence["UnitPlan"], directory: str = ADMIN_DIRS[0]) -> List[Problem]:
    """``check``'s warnings: each takeover, at the service that makes it (units
    unitgen wrote into ``directory``, per its manifest, are ours, not taken)."""
    from .install import OutputDir

    try:
        with OutputDir(directory, create=False, lock=False) as out:
            manifest = out.read_manifest()
    except UnitgenError:
        manifest = {}
    owner = {name: plan.service for plan in plans for name in (plan.unit, *plan.service.aliases)}
    found = []
    for t in for_plans(plans, directory, manifest).values():
        shadow = f"; with the generator, {t.link} hides the generated {t.name} until {t.unit} is disabled" \
            if t.link and os.path.dirname(t.link) in ADMIN_DIRS else ""
        service = owner[t.name]
        found.append(Problem(f"{t.describe()}: render and apply take it over: {advice(t)}{shadow}",
                             service.mark, service.name))
    return found
