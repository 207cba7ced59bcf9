"""The ``unitgen`` command: thin click commands that wire the modules together.

Exit codes: 0 success; 1 an operational failure (a file unitgen does not own
is in the way, a job failed); 2 bad usage or a bad conf (click's convention).
Every UnitgenError is caught once, in UnitgenGroup, and printed without a
traceback.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Dict, List, Optional

import click

from . import __version__
from .errors import ConfigError, Problem, UnitgenError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UnitgenGroup(click.Group):
    """Maps every UnitgenError to a clean message and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            ctx.exit(exc.exit_code)
        except UnitgenError as exc:
            click.echo(f"unitgen: {exc}", err=True)
            ctx.exit(exc.exit_code)


# -- options shared by several commands ---------------------------------------

conf_argument = click.argument("conf", type=click.Path(dir_okay=False))
host_option = click.option(
    "--host", metavar="NAME",
    help="Render for this host of the conf's hosts: (default: this machine's hostname).")
probe_option = click.option(
    "--probe", "probe_path", metavar="PATH", envvar="UNITGEN_PROBE",
    help="Absolute path of unitgen-probe in the units (default: the one installed with unitgen).")


def _load(conf_path: str):
    from . import config

    conf = config.load(conf_path)
    _print_warnings(conf.warnings)
    return conf


def _print_warnings(warnings: List[Problem]) -> None:
    for warning in warnings:
        where = f"{warning.mark}: " if warning.mark else ""
        key = f"{warning.path}: " if warning.path else ""
        click.echo(f"{where}{key}warning: {warning.message}", err=True)


@click.group(cls=UnitgenGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="unitgen")
def cli() -> None:
    """Render systemd units that bring services back, in dependency order, after a power cut.

    \b
    Example:
      unitgen check conf.yaml
      unitgen render conf.yaml -o /etc/systemd/system
      systemctl daemon-reload
    """


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.option("-o", "--output", default="-", show_default=True, metavar="DIR",
              help="Directory to write the units to; - prints them.")
@host_option
@probe_option
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--diff", "show_diff", is_flag=True, help="Show a unified diff of every changed unit.")
@click.option("--force", is_flag=True, help="Take over files unitgen did not write, or that changed since.")
def render(conf: str, output: str, host: Optional[str], probe_path: Optional[str],
           dry_run: bool, show_diff: bool, force: bool) -> None:
    """Render the conf's units for this host into DIR (or print them).

    Only files unitgen wrote (listed in DIR/.unitgen-manifest.json) are ever
    changed or removed; unchanged files are left alone; every write is atomic.

    \b
    Example:
      unitgen render /etc/unitgen/conf.yaml -o /etc/systemd/system
      unitgen render conf.yaml --host db1 --dry-run --diff -o /etc/systemd/system
    """
    from . import graph
    from .install import OutputDir
    from .render import Renderer

    model = _load(conf)
    units = Renderer(probe_path).render(model, graph.local_host(model, host))
    if output == "-":
        _print_units(units)
        return
    source = os.path.abspath(conf)
    with OutputDir(output, create=not dry_run, lock=not dry_run) as out:
        plan = out.plan(units, source, force)
        if show_diff:
            _print_diffs(plan, output)
        if dry_run:
            _print_plan(plan, output, dry_run=True)
            if plan.conflicts:
                sys.exit(1)
            return
        out.apply(plan)
    _print_plan(plan, output, dry_run=False)


def _print_units(units: Dict[str, str]) -> None:
    for i, (name, text) in enumerate(units.items()):
        if i:
            click.echo()
        click.echo(f"### {name}")
        click.echo(text, nl=False)


def _print_diffs(plan, output: str) -> None:
    for change in plan.changes:
        if change.action in ("create", "update", "remove"):
            old = (change.old or "").splitlines(keepends=True)
            new = (change.new or "").splitlines(keepends=True)
            path = os.path.join(output, change.name)
            click.echo("".join(difflib.unified_diff(
                old, new, "/dev/null" if change.action == "create" else path,
                "/dev/null" if change.action == "remove" else path)), nl=False)


def _print_plan(plan, output: str, dry_run: bool) -> None:
    verb = {"create": "create", "update": "update", "remove": "remove"} if dry_run else \
        {"create": "created", "update": "updated", "remove": "removed"}
    for action in ("create", "update", "remove"):
        for name in plan.named(action):
            click.echo(f"{verb[action]:8} {os.path.join(output, name)}")
    same = len(plan.named("unchanged", "adopt"))
    if same:
        click.echo(f"{'unchanged':8} {same} unit{'s' if same != 1 else ''}")
    for conflict in plan.conflicts:
        click.echo(f"refused  {conflict}", err=True)
    if dry_run or not plan.writes:
        return
    removed, created, updated = plan.named("remove"), plan.named("create"), plan.named("update")
    click.echo("Next:")
    if removed:
        click.echo(f"  systemctl disable --now {_unit_list(removed)}")
    click.echo("  systemctl daemon-reload")
    if created:
        click.echo(f"  systemctl enable --now {_unit_list(created)}")
    if updated:
        click.echo(f"  systemctl restart {_unit_list(updated)}")


def _unit_list(names: List[str], most: int = 12) -> str:
    """Unit names for a command line; a long list is cut (the lines above list them all)."""
    if len(names) <= most:
        return " ".join(names)
    return " ".join(names[:most]) + f" ... ({len(names) - most} more, listed above)"


@cli.command(context_settings=CONTEXT)
@conf_argument
def check(conf: str) -> None:
    """Validate the conf and its dependency graph; write nothing.

    Exit 0 when the conf is usable (warnings may be printed), 2 when not.

    \b
    Example:
      unitgen check /etc/unitgen/conf.yaml
    """
    from . import graph

    model = _load(conf)
    problems = graph.check(model)
    if problems:
        raise ConfigError(problems)
    count = len(model.services)
    click.echo(f"{conf}: ok, {count} service{'s' if count != 1 else ''} ({model.format} format)")


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.argument("service")
@host_option
@click.option("--timeout", type=float, metavar="SECONDS",
              help="Per-attempt timeout (default: each dependency's own, else 2 s).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dependency.")
def probe(conf: str, service: str, host: Optional[str], timeout: Optional[float], as_json: bool) -> None:
    """Check SERVICE's dependencies once, as its unit's probe would, and say why each fails.

    Exit 0 when every dependency answers, 1 when one does not.

    \b
    Example:
      unitgen probe /etc/unitgen/conf.yaml api
      unitgen probe conf.yaml api --host app1 --json
    """
    from . import graph, probing

    model = _load(conf)
    targets = probing.targets_of(model, service, graph.local_host(model, host))
    results = probing.check_all(targets, timeout)
    if as_json:
        import json

        for target, result in zip(targets, results):
            click.echo(json.dumps({"target": target.label, "kind": target.kind, "spec": target.safe_spec,
                                   "ok": result.ok, "reason": result.reason,
                                   "latency_ms": round(result.latency * 1000, 1)}, ensure_ascii=False))
    elif not targets:
        click.echo(f"{service} has no dependencies")
    else:
        rows = [(t.display, "ok" if r.ok else "FAIL", r.reason, f"{r.latency * 1000:.1f} ms")
                for t, r in zip(targets, results)]
        _print_table(("TARGET", "RESULT", "REASON", "LATENCY"), rows)
    if not all(r.ok for r in results):
        sys.exit(1)


def _print_table(header, rows) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def main() -> None:
    cli(prog_name="unitgen")
