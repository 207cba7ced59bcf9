"""``unitgen render``: the conf's units for this host, printed or written into a directory.

Into a directory, by install.OutputDir's rules (only files unitgen owns,
atomic writes, a conflict stops everything before a byte is written), after
two refusals of its own: a probe the services' users cannot run here
(lint.refuse_unreachable_probe), unless the operator allows it; and nothing
written through a symlink but a package's alias that ours takes over
(takeover.py). Then it says what to run next, so that exactly the conf's units
are enabled, ours, and run.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from . import graph, takeover
from .install import Action, OutputDir, Plan
from .model import Conf

Write = Callable[[str], None]  # writes its text as is (no newline added)


def run(conf: Conf, *, output: str = "-", host: Optional[str] = None, probe: Optional[str] = None,
        dry_run: bool = False, show_diff: bool = False, force: bool = False, allow_unreachable_probe: bool = False,
        out: Write, err: Write) -> int:
    """The exit code: 0, or 1 when a dry run found a conflict (a real run raises OwnershipError)."""
    from .render import Renderer

    where = graph.local_host(conf, host)
    renderer = Renderer(probe)
    plans = graph.plan(conf, where)
    units = renderer.render(conf, where, plans=plans)
    if output == "-":
        out("\n".join(f"### {name}\n{text}" for name, text in units.items()))
        return 0
    if not allow_unreachable_probe and _for_this_machine(conf, where):
        from .lint import refuse_unreachable_probe

        refuse_unreachable_probe(plans, renderer.probe)
    system = takeover.system_dir(output)
    with OutputDir(output, create=not dry_run, lock=not dry_run) as directory:
        taken = takeover.for_plans(plans, system, directory.read_manifest()) if system else {}
        plan = directory.plan(units, os.path.abspath(conf.path), force,
                              replace_links=takeover.links_to_replace(taken, system or ""))
        if show_diff:
            _print_diffs(plan, output, out)
        for t in taken.values():
            out(f"takeover {t.describe()}; {takeover.advice(t)}\n")
        if dry_run:
            _print_plan(plan, output, out, err)
            return 1 if plan.conflicts else 0
        directory.apply(plan)
    _print_plan(plan, output, out, err, taken=taken, done=True)
    return 0


def _for_this_machine(conf: Conf, where: Optional[str]) -> bool:
    """Whether the units are this machine's (its users and paths judge the probe):
    a conf without hosts:, or --host naming this machine; not units rendered
    here for another host (--host db1 on a build machine)."""
    from .errors import UsageError

    try:
        return graph.local_host(conf, None) == where
    except UsageError:
        return False  # this machine is not in the conf's hosts


@dataclass(frozen=True)
class UnitDiff:
    """One unit's change as a reviewer sees it: its old and new texts with
    secrets redacted (systemd.redact_unit), and their unified diff."""

    unit: str
    action: str  # create, update or remove
    path: str
    before: str
    after: str
    unified: str


def unit_diffs(plan: Plan, output: str) -> List[UnitDiff]:
    """The redacted diff of every unit the plan creates, updates or removes."""
    from .systemd import redact_unit

    diffs = []
    for change in plan.changes:
        if change.action in ("create", "update", "remove"):
            before, after = redact_unit(change.old or ""), redact_unit(change.new or "")
            path = os.path.join(output, change.name)
            unified = "".join(difflib.unified_diff(
                _unit_lines(before), _unit_lines(after), "/dev/null" if change.action == "create" else path,
                "/dev/null" if change.action == "remove" else path))
            diffs.append(UnitDiff(change.name, change.action, path, before, after, unified))
    return diffs


def _print_diffs(plan: Plan, output: str, out: Write) -> None:
    for diff in unit_diffs(plan, output):
        out(diff.unified)


def _unit_lines(text: str) -> List[str]:
    """A unit's lines as systemd reads them: split at \\n only (splitlines() would
    also split at U+2028 and others, showing lines systemd never sees)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _print_plan(plan: Plan, output: str, out: Write, err: Write, taken: Optional[Dict[str, takeover.Takeover]] = None,
                done: bool = False) -> None:
    verb = {"create": "created", "update": "updated", "remove": "removed"} if done else \
        {"create": "create", "update": "update", "remove": "remove"}
    changes: Tuple[Action, ...] = ("create", "update", "remove")
    for action in changes:
        for name in plan.named(action):
            out(f"{verb[action]:8} {os.path.join(output, name)}\n")
    same = len(plan.named("unchanged", "adopt"))
    if same:
        out(f"{'unchanged':8} {same} unit{'s' if same != 1 else ''}\n")
    for name in plan.named("release"):  # --force: not provably unitgen's, so neither deleted nor acted on
        out(f"{'released' if done else 'release':8} {os.path.join(output, name)} (left in place: not unitgen's now)\n")
    for conflict in plan.conflicts:
        err(f"refused  {conflict}\n")
    if not done or not plan.writes:
        return
    taken = taken or {}
    # A package's unit of another name (redis-server.service behind the alias redis.service)
    # stops and leaves; one of the same name (nginx.service) is replaced: its links by ours
    # (reenable), its process by ours (restart). An updated unit is re-enabled too: its file
    # may have existed, never enabled, or its [Install] changed.
    leaving = list(dict.fromkeys(t.to_disable for t in taken.values() if t.to_disable and not t.same_name))
    replaced = [t.name for t in taken.values() if t.same_name and t.name in plan.named("create")]
    removed, updated = plan.named("remove"), plan.named("update") + replaced
    # adopted: a file identical to ours was there, perhaps never enabled
    created = [name for name in plan.named("create", "adopt") if name not in replaced]
    out("Next:\n")
    if removed or leaving:
        out(f"  systemctl disable --now {_unit_list(removed + leaving)}\n")
    out("  systemctl daemon-reload\n")
    if created:
        out(f"  systemctl enable --now {_unit_list(created)}\n")
    if updated:
        out(f"  systemctl reenable {_unit_list(updated)}\n")
        out(f"  systemctl restart {_unit_list(updated)}\n")


def _unit_list(names: List[str], most: int = 12) -> str:
    """Unit names for a command line; a long list is cut (the lines above list them all)."""
    if len(names) <= most:
        return " ".join(names)
    return " ".join(names[:most]) + f" ... ({len(names) - most} more, listed above)"
