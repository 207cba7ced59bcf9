"""The ``unitgen`` command: thin click commands that wire the modules together.

Exit codes: 0 success; 1 an operational failure (a file unitgen does not own
is in the way, a job failed); 2 bad usage or a bad conf (click's convention);
3 a bug: an exception unitgen did not expect. Every UnitgenError is caught
once, in UnitgenGroup, and printed without a traceback; any other exception
is reported there in one line that says it is a bug and where its traceback
was written.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

import click

from . import __version__, defaults
from .errors import BUG_EXIT, MAX_PROBLEMS, ConfigError, Problem, UnitgenError, UsageError, one_line, write_traceback

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UnitgenGroup(click.Group):
    """Maps every UnitgenError to a clean message and its exit code, and any
    other exception to one line and exit 3 (a bug; the traceback goes to a file)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems[:MAX_PROBLEMS]:
                click.echo(str(problem), err=True)
            if len(exc.problems) > MAX_PROBLEMS:
                click.echo(f"... and {len(exc.problems) - MAX_PROBLEMS} more problems", err=True)
            ctx.exit(exc.exit_code)
        except UnitgenError as exc:
            click.echo(f"unitgen: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors (2), exits, Ctrl-C
        except Exception as exc:
            try:
                where = f"its traceback is in {write_traceback(exc)}"
            except OSError as error:
                where = f"its traceback could not be written: {error}"
            click.echo(one_line(f"unitgen: bug: unexpected {type(exc).__name__}: {exc}; {where}; "
                                "please report it"), err=True)
            ctx.exit(BUG_EXIT)


# -- options shared by several commands ---------------------------------------

conf_argument = click.argument("conf", type=click.Path(dir_okay=False))
host_option = click.option(
    "--host", metavar="NAME",
    help="Render for this host of the conf's hosts: (default: this machine's hostname).")
probe_option = click.option(
    "--probe", "probe_path", metavar="PATH", envvar="UNITGEN_PROBE",
    help="Absolute path of unitgen-probe in the units (default: the one installed with unitgen).")
force_option = click.option(
    "--force", is_flag=True, help="Take over files unitgen did not write, or that changed since.")
allow_unreachable_probe_option = click.option(
    "--allow-unreachable-probe", is_flag=True,
    help="Write units even if a service's user cannot run the probe here (they would fail with 203/EXEC).")
dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
bus_option = click.option(
    "--bus-address", metavar="ADDRESS", envvar="DBUS_SYSTEM_BUS_ADDRESS",
    help="D-Bus address of systemd's bus (default: the system bus, unix:path=/run/dbus/system_bus_socket).")


def _load(conf_path: str):
    from . import config

    conf = config.load(conf_path)
    _print_warnings(conf.warnings)
    return conf


def _print_warnings(warnings: List[Problem]) -> None:
    """Each warning as errors are printed (one line, escaped, short), at most MAX_PROBLEMS."""
    for warning in warnings[:MAX_PROBLEMS]:
        click.echo(warning.format("warning: "), err=True)
    if len(warnings) > MAX_PROBLEMS:
        click.echo(f"... and {len(warnings) - MAX_PROBLEMS} more warnings", err=True)


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
@dry_run_option
@click.option("--diff", "show_diff", is_flag=True, help="Show a unified diff of every changed unit.")
@force_option
@allow_unreachable_probe_option
def render(conf: str, output: str, host: Optional[str], probe_path: Optional[str],
           dry_run: bool, show_diff: bool, force: bool, allow_unreachable_probe: bool) -> None:
    """Render the conf's units for this host into DIR (or print them).

    Only files unitgen wrote (listed in DIR/.unitgen-manifest.json) are ever
    changed or removed; unchanged files are left alone; every write is atomic.

    \b
    Example:
      unitgen render /etc/unitgen/conf.yaml -o /etc/systemd/system
      unitgen render conf.yaml --host db1 --dry-run --diff -o /etc/systemd/system
    """
    from . import rendering

    sys.exit(rendering.run(_load(conf), output=output, host=host, probe=probe_path, dry_run=dry_run,
                           show_diff=show_diff, force=force, allow_unreachable_probe=allow_unreachable_probe,
                           out=lambda text: click.echo(text, nl=False),
                           err=lambda text: click.echo(text, nl=False, err=True)))


def _write_file(path: str, data: bytes) -> None:
    """-o FILE of graph and import: any OS error is one line, exit 1."""
    from .install import os_error

    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise os_error(path, "write", exc) from None


@cli.command(context_settings=CONTEXT)
@conf_argument
@host_option
@probe_option
def check(conf: str, host: Optional[str], probe_path: Optional[str]) -> None:
    """Validate the conf and its dependency graph; write nothing.

    Exit 0 when the conf is usable, 2 when not. Warnings: services that
    would run as root without saying so, secrets in world-readable units,
    and, for the services of this host (or --host), users that do not exist
    here and a probe their user cannot run.

    \b
    Example:
      unitgen check /etc/unitgen/conf.yaml
      unitgen check fleet.yaml --host db1
    """
    from . import graph, lint, paths

    model = _load(conf)
    problems = graph.check(model)
    if problems:
        raise ConfigError(problems)
    _render_everywhere(model, probe_path)
    try:
        here, local = graph.local_host(model, host), True
    except UsageError:
        if host:
            raise
        here, local = None, False  # this machine is not in the fleet: no host-local checks
    try:
        probe = paths.probe_command(probe_path)
    except UnitgenError:
        probe = None
    _print_warnings(lint.lint(model, here, probe, local))
    if local:
        from .takeover import warnings

        _print_warnings(warnings(graph.plan(model, here)))
    count = len(model.services)
    click.echo(f"{conf}: ok, {count} service{'s' if count != 1 else ''} ({model.format} format)")


def _render_everywhere(model, probe_path: Optional[str]) -> None:
    """check is render without writing: the units of every host of the fleet are
    rendered with the same Renderer, so whatever render would refuse, check
    reports (ConfigError, at its place). Nothing is written."""
    from . import graph
    from .render import Renderer

    try:
        renderer = Renderer(probe_path)
    except UnitgenError:  # no probe installed here: render the units as if it were
        renderer = Renderer("/usr/bin/unitgen-probe")
    problems: List[Problem] = []
    for host, plans in graph.plans_by_host(model, list(model.hosts) or [None]).items():
        try:
            renderer.render(model, host, plans=plans)
        except ConfigError as exc:
            problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise ConfigError(problems)


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.argument("service")
@host_option
@click.option("--timeout", type=float, metavar="SECONDS",
              help="Per-attempt timeout (default: each dependency's own, else 2 s).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dependency.")
def probe(conf: str, service: str, host: Optional[str], timeout: Optional[float], as_json: bool) -> None:
    """Check SERVICE's dependencies once, as its unit's probe would, and say why each fails.

    Exit 0 when every dependency answers (of a replicated service or an
    any:/of: group, its need of copies), 1 when one does not; an optional
    one (optional: true) is shown, and never fails it.

    \b
    Example:
      unitgen probe /etc/unitgen/conf.yaml api
      unitgen probe conf.yaml api --host app1 --json
    """
    from . import graph, probing

    model = _load(conf)
    unit = probing.plan_of(model, service, graph.local_host(model, host))
    targets = unit.all_targets
    results = probing.check_all(model.services[service], targets, timeout)
    if as_json:
        import json

        for target, result in zip(targets, results):
            click.echo(json.dumps({"target": target.label, "kind": target.kind, "spec": target.safe_spec,
                                   "ok": result.ok, "reason": result.reason,
                                   "latency_ms": round(result.latency * 1000, 1),
                                   "wait_at_most": probing.optional_bound(unit, target)}, ensure_ascii=False))
    elif not targets:
        click.echo(f"{service} has no dependencies")
    else:
        rows = [(t.display, ("ok" if r.ok else "FAIL") + _optional(probing.optional_bound(unit, t)), r.reason,
                 f"{r.latency * 1000:.1f} ms") for t, r in zip(targets, results)]
        _print_table(("TARGET", "RESULT", "REASON", "LATENCY"), rows)
        for line in probing.short_groups(unit, results):
            click.echo(line)
    if not probing.ready(unit, results):
        sys.exit(1)


def _optional(bound: Optional[float]) -> str:
    """`` (optional, 30 s)`` for an optional dependency's result, else ""."""
    return "" if bound is None else f" (optional, {bound:g} s)"


def _seconds(value: float) -> str:
    """Tenths of a second, rounded half up on the decimal value (12.35 -> 12.4,
    as 16.35 -> 16.4: binary floating point would print 12.3 and 16.4)."""
    from decimal import ROUND_HALF_UP, Decimal

    return f"{Decimal(repr(round(value, 9))).quantize(Decimal('0.1'), ROUND_HALF_UP)} s"


def _print_table(header, rows) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "svg", "png"]), default="mermaid",
              show_default=True, help="svg and png need Graphviz's dot.")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write to FILE (default: standard output).")
def graph(conf: str, fmt: str, output: str) -> None:
    """Draw the fleet: services grouped by host, arrows to what each waits for.

    Arrows are labelled with how readiness is checked (tcp, http); a dashed
    arrow is a tcp:/http: dependency that points at a service of the conf.

    \b
    Example:
      unitgen graph conf.yaml > fleet.mmd
      unitgen graph conf.yaml --format svg -o fleet.svg
    """
    from . import diagram, graph as fleet

    model = _load(conf)
    drawing = fleet.Graph(model)
    problems = fleet.check(model, drawing)
    if problems:
        raise ConfigError(problems)
    text = diagram.mermaid(drawing) if fmt == "mermaid" else diagram.dot(drawing)
    data = diagram.image(text, fmt) if fmt in diagram.IMAGE_FORMATS else text.encode("utf-8")
    if output == "-":
        if fmt == "png" and sys.stdout.isatty():
            raise UsageError("a png is not for a terminal: pass -o FILE")
        sys.stdout.flush()
        sys.stdout.buffer.write(data)  # click.get_binary_stream() is deprecated (Click 8.5, gone in 9)
        sys.stdout.buffer.flush()
    else:
        _write_file(output, data)


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.option("--start-time", "default_start", type=float, default=defaults.START_TIME, show_default=True, metavar="SECONDS",
              help="Start-to-ready time assumed for services without start_time:.")
@click.option("--json", "as_json", is_flag=True, help="The plan as one JSON document.")
@click.option("--down", "down", default="", metavar="HOST,...",
              help="Hosts that never come back: which services still come back, which wait for ever, and why.")
def plan(conf: str, default_start: float, as_json: bool, down: str) -> None:
    """How the fleet comes back after a full power cut: waves, critical path, time.

    Wave 1 needs nothing; wave k needs only services of earlier waves. Times
    are worst-case estimates from each service's start_time: and probe
    settings, every host up at t=0; dependencies outside the conf are
    taken as up.

    \b
    Example:
      unitgen plan /etc/unitgen/conf.yaml
      unitgen plan conf.yaml --json --start-time 5
      unitgen plan conf.yaml --down h3,h4
    """
    from . import graph as fleet

    model = _load(conf)
    gone = [h for h in dict.fromkeys(down.split(",")) if h]
    unknown = [h for h in gone if h not in model.hosts]
    if unknown:
        raise UsageError(f"--down {','.join(unknown)}: not in the conf's hosts: ({', '.join(sorted(model.hosts))})")
    drawing = fleet.Graph(model)
    problems = fleet.check(model, drawing)
    if problems:
        raise ConfigError(problems)
    recovery = drawing.recovery(default_start, gone)
    lost = [n for n in drawing.nodes if n[1] in gone]
    timings = list(recovery.timings.values())
    label = fleet.node_label
    if as_json:
        import json

        click.echo(json.dumps({
            "waves": [[label(n) for n in wave] for wave in recovery.waves()],
            "services": [{"service": t.node[0], "host": t.node[1], "wave": t.wave, "start": round(t.start, 3),
                          "ready": round(t.ready, 3), "start_time": t.start_time, "start_time_assumed": t.assumed,
                          "waits_for": label(t.waits_for) if t.waits_for else None, "slot": round(t.slot, 3),
                          "starts_without": [label(n) for n in t.without]}
                         for t in timings],
            "critical_path": [label(n) for n in recovery.critical_path],
            "estimated_recovery_seconds": round(recovery.total, 3),
            "down": gone,
            "down_with_their_host": [label(n) for n in lost],
            "never_start": [{"service": n[0], "host": n[1], "why": why} for n, why in recovery.stuck.items()],
        }, indent=1, ensure_ascii=False))
        return
    hosts = len(model.hosts) or 1
    services = len(drawing.nodes)
    but = f" but {', '.join(gone)} (never back)" if gone else ""
    click.echo(f"After a full power cut of {hosts} host{'s' if hosts != 1 else ''} "
               f"({services} service{'s' if services != 1 else ''}), every host up at t=0{but}:\n")
    rows = [(str(t.wave), label(t.node), _seconds(t.start), _seconds(t.ready) + ("*" if t.assumed else ""),
             ", ".join(filter(None, [label(t.waits_for) if t.waits_for else "",
                                     *(f"without {label(n)} (optional)" for n in t.without)])))
            for t in sorted(timings, key=lambda t: (t.wave, t.start))]
    _print_table(("WAVE", "SERVICE", "START", "READY", "WAITS FOR"), rows)
    if lost:
        click.echo(f"\ndown with their host: {', '.join(label(n) for n in lost)}")
    if recovery.stuck:
        click.echo(f"\nwait for ever ({len(recovery.stuck)}):")
        for node, why in recovery.stuck.items():
            click.echo(f"  {label(node)}: {why}")
    click.echo(f"\ncritical path: {' → '.join(label(n) for n in recovery.critical_path)}")
    click.echo(f"estimated recovery: {_seconds(recovery.total)} after the last host is up (worst case)")
    paced = [t.slot for t in timings if t.slot]
    if paced:
        click.echo(f"paced release: {len(paced)} service{'s' if len(paced) != 1 else ''} wait for their slot "
                   f"(accepts:), up to {_seconds(max(paced))}, included above")
    assumed = sum(t.assumed for t in timings)
    if assumed:
        click.echo(f"* no start_time: assumed {default_start:g} s ({assumed} service{'s' if assumed != 1 else ''})")


@cli.group("import", context_settings=CONTEXT)
def import_() -> None:
    """Convert confs of other tools into one native unitgen conf.

    \b
    Example:
      unitgen import autoheal web1=web1.yaml db1=db1.yaml --address db1=10.0.0.11 -o fleet.yaml
    """


@import_.command("autoheal", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, metavar="[HOST=]FILE...")
@click.option("--host", metavar="NAME", help="The host of a single FILE.")
@click.option("--address", "addresses", multiple=True, metavar="HOST=ADDRESS",
              help="How other hosts reach HOST (repeatable); its address in the confs' dependencies.")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write to FILE (default: standard output).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def import_autoheal(files, host: Optional[str], addresses, output: str, force: bool) -> None:
    """Merge Autoheal confs, one per host, into one native conf.

    Each FILE is HOST=FILE, or FILE for the host named like the file
    (web1.yaml: web1). A dependency naming a service of an imported host, at
    that host's name or --address (or at 127.0.0.1 on the same host), becomes
    "service: NAME", and the service gets the port or health URL once.

    \b
    Example:
      unitgen import autoheal web1.yaml db1.yaml --address db1=10.0.0.11 -o fleet.yaml
      unitgen import autoheal /etc/autoheal/conf.yaml --host web1
    """
    from . import importer

    text = importer.convert(importer.parse_sources(list(files), host, list(addresses)))
    if output == "-":
        click.echo(text, nl=False)
        return
    if os.path.exists(output) and not force:
        raise UsageError(f"{output} exists; pass --force to overwrite it")
    _write_file(output, text.encode("utf-8"))


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.option("-o", "--output", default="/etc/systemd/system", show_default=True, metavar="DIR",
              help="The directory systemd loads the units from.")
@host_option
@probe_option
@bus_option
@dry_run_option
@click.option("--no-start", is_flag=True,
              help="Write, enable and reload only: start and restart nothing (units that left the conf still stop).")
@click.option("--wait", type=click.FloatRange(min=0), default=defaults.APPLY_WAIT, show_default=True, metavar="SECONDS",
              help="How long to wait for the start/restart/stop jobs; a unit still starting then is reported "
                   "as waiting, and systemd carries on.")
@click.option("--settle", type=click.FloatRange(min=0), default=defaults.APPLY_SETTLE, show_default=True, metavar="SECONDS",
              help="How long each unit that came up is watched: its main process ending, or a restart, "
                   "meanwhile is a failure (0: do not watch).")
@force_option
@allow_unreachable_probe_option
@click.option("--diff", "show_diff", is_flag=True, help="Show a unified diff of every changed unit (secrets redacted).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (units, jobs, changed, diffs, error) instead of the lines above.")
@click.option("--source", metavar="PATH",
              help="The conf's own place, which unitgen records as the units' source, when CONF is a copy "
                   "staged elsewhere (a dry run of a conf not yet in place). Default: CONF.")
def apply(conf: str, output: str, host: Optional[str], probe_path: Optional[str], bus_address: Optional[str],
          dry_run: bool, no_start: bool, wait: float, settle: float, force: bool,
          allow_unreachable_probe: bool, show_diff: bool, as_json: bool, source: Optional[str]) -> None:
    """Render the conf's units for this host and make systemd run them, over D-Bus.

    Writes the units as render does (only files unitgen owns), enables and
    reloads, starts added units, restarts changed ones (unchanged running
    units are left alone), stops and disables units that left the conf, then
    waits for the jobs and watches each unit that came up for --settle
    seconds. A unit whose probe still waits for a dependency is reported as
    waiting, not failed. Exit 1 if a job failed, or a unit's main process
    ended or was restarted while watched (with systemd's reason).

    \b
    Example:
      unitgen apply /etc/unitgen/conf.yaml
      unitgen apply conf.yaml --host app1 --dry-run --diff
      unitgen apply /etc/unitgen/conf.yaml --json
    """
    from . import apply as applying

    options = dict(output=output, host=host, probe=probe_path, bus_address=bus_address, dry_run=dry_run,
                   start=not no_start, force=force, wait=wait, settle=settle,
                   allow_unreachable_probe=allow_unreachable_probe, show_diff=show_diff, source=source)
    if as_json:
        sys.exit(applying.run_json(lambda: _load(conf), out=click.echo, **options))
    sys.exit(applying.run(_load(conf), echo=click.echo, **options))


@cli.command(context_settings=CONTEXT)
@conf_argument
@host_option
@bus_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per unit.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=defaults.STATUS_INTERVAL, show_default=True,
              metavar="SECONDS", help="Time between refreshes with --watch.")
def status(conf: str, host: Optional[str], bus_address: Optional[str], as_json: bool, watch: bool,
           interval: float) -> None:
    """Show each service of the conf on this host: state, since when, restarts, and what it waits for.

    A unit restarted twice or more in the last minute is shown as a restart
    loop, with why its last run ended. A dependency the run-time watcher
    (unitgen watch) finds lost is shown with since when and why. Exit 0 only
    when every service is active and none loops.

    \b
    Example:
      unitgen status /etc/unitgen/conf.yaml
      unitgen status conf.yaml --watch
    """
    from . import status as showing

    colour = not as_json and showing.colour_wanted(sys.stdout, os.environ)
    sys.exit(showing.run(_load(conf), host=host, bus_address=bus_address, as_json=as_json, watch=watch,
                         interval=interval, colour=colour, clear=watch and sys.stdout.isatty(),
                         echo=lambda text: click.echo(text, color=colour)))


@cli.command(context_settings=CONTEXT)
@conf_argument
@click.option("--watch", is_flag=True, help="Refresh until every service is ready, or Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=defaults.BOARD_INTERVAL, show_default=True,
              metavar="SECONDS", help="Time between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document per refresh, one line each.")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=defaults.BOARD_TIMEOUT, show_default=True,
              metavar="SECONDS", help="Per check.")
@click.option("--in-flight", type=click.IntRange(min=1), default=defaults.BOARD_IN_FLIGHT, show_default=True,
              metavar="N", help="Checks at once, at most.")
@click.option("--ssh", is_flag=True,
              help="Also ask each host's systemd (ssh HOST systemctl show, your own ssh config) "
                   "what its units that are not ready wait for.")
@click.option("--ssh-config", metavar="FILE", type=click.Path(dir_okay=False),
              help="With --ssh: ssh -F FILE instead of your own ssh config.")
@click.option("--serve", metavar="ADDR:PORT",
              help="Serve a live page of the fleet (graph, root causes, timeline) and its JSON at "
                   "http://ADDR:PORT/ until Ctrl-C; ADDR is an IP address, bound as given.")
def board(conf: str, watch: bool, interval: float, as_json: bool, timeout: float, in_flight: int,
          ssh: bool, ssh_config: Optional[str], serve: Optional[str]) -> None:
    """Show the whole fleet's recovery from here: every service ready, waiting or a root cause.

    Checks every service of the conf on every host as its dependents do (its
    health URL, else its listen port), in parallel. A service that is down
    while something it needs is down is waiting; down while all it needs
    answers (or needing nothing), it is a root cause, listed first. Exit 0
    only when every service is ready (with --watch: once they are).

    \b
    Example:
      unitgen board /etc/unitgen/conf.yaml
      unitgen board conf.yaml --watch
      unitgen board conf.yaml --watch --json | tee recovery.jsonl
      unitgen board conf.yaml --serve 127.0.0.1:8080
    """
    import shutil

    from . import board as boarding

    if serve is not None:
        from . import boardpage

        if watch or as_json:
            raise UsageError("--serve refreshes by itself and serves the JSON: leave out --watch and --json")
        sys.exit(boardpage.run(_load(conf), serve, interval=interval, in_flight=in_flight, timeout=timeout,
                               ssh=ssh or ssh_config is not None, ssh_config=ssh_config, echo=click.echo))
    from .status import colour_wanted

    colour = not as_json and colour_wanted(sys.stdout, os.environ)
    tty = not as_json and sys.stdout.isatty()
    rows = max(shutil.get_terminal_size().lines - 12, 5) if tty and watch else None
    sys.exit(boarding.run(_load(conf), watch=watch, interval=interval, as_json=as_json, in_flight=in_flight,
                          timeout=timeout, ssh=ssh or ssh_config is not None, ssh_config=ssh_config,
                          colour=colour, clear=watch and tty, rows=rows,
                          echo=lambda text: click.echo(text, color=colour)))


@cli.command("install-generator", context_settings=CONTEXT)
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help="Install into the system below DIR (an image, a test).")
@click.option("--uninstall", is_flag=True, help="Remove the link instead.")
def install_generator(root: str, uninstall: bool) -> None:
    """Make systemd run unitgen as a generator, at every boot and daemon-reload.

    Links /etc/systemd/system-generators/unitgen to the installed
    unitgen-generator, which then turns /etc/unitgen/conf.yaml and
    /etc/unitgen/conf.d/*.yaml into this host's units, in /run: nothing to
    render, nothing stale. Units rendered into /etc/systemd/system before
    would take precedence: remove them.

    \b
    Example:
      unitgen install-generator && systemctl daemon-reload
      unitgen install-generator --uninstall && systemctl daemon-reload
    """
    from . import generator
    from .install import os_error

    try:
        if uninstall:
            removed = generator.uninstall(root)
            if not removed:
                click.echo("not installed: nothing to remove")
                return
            click.echo(f"removed  {removed}")
        else:
            link, target = generator.install(root)
            click.echo(f"linked   {link} -> {target}")
    except OSError as exc:
        raise os_error(os.path.join(root, generator.LINK), "link", exc) from None
    click.echo("Next:\n  systemctl daemon-reload")


@cli.command(context_settings=CONTEXT)
@click.argument("conf", required=False, type=click.Path(dir_okay=False))
@click.option("--conf-dir", metavar="DIR", help="Read DIR/conf.yaml and DIR/conf.d/*.yaml, as the generator does.")
@host_option
@bus_option
@click.option("--interval", type=click.FloatRange(min=0.1), default=defaults.WATCH_INTERVAL, show_default=True,
              metavar="SECONDS", help="How often each dependency is checked.")
@click.option("--restart-interval", type=click.FloatRange(min=0), default=defaults.RESTART_INTERVAL, show_default=True,
              metavar="SECONDS", help="A service is restarted at most once per this many seconds.")
def watch(conf: Optional[str], conf_dir: Optional[str], host: Optional[str], bus_address: Optional[str],
          interval: float, restart_interval: float) -> None:
    """Restart or stop services whose remote dependency is lost at run time,
    and restart those that stay unhealthy while their dependencies answer.

    For the services of this host with on_dependency_loss: restart or stop,
    their dependencies on other hosts are checked every --interval seconds;
    one is lost after loss_threshold failures in a row (3 over 10 s by
    default). restart: the service is restarted (if it runs), and its probe
    holds it until the dependency is back; stop: it is stopped until the
    dependency answers, then started. Runs until stopped; rendered as
    unitgen-watch.service where needed. Decisions go to the journal; the
    current view to /run/unitgen/watch.json, shown by unitgen status.
    on_unhealthy: restart: the service's own health: URL is checked too, and
    when it fails by the same threshold while everything it depends on
    answers, the service is restarted (at most once per --restart-interval).
    optional: true: a service its probe started without that dependency
    (its STATUS= says so) is restarted once the dependency answers.

    \b
    Example:
      unitgen watch /etc/unitgen/conf.yaml
      unitgen watch --conf-dir /etc/unitgen --bus-address unix:path=/run/dbus/system_bus_socket
    """
    import asyncio

    from . import graph, watch as watching

    if bool(conf) == bool(conf_dir):
        raise UsageError("give CONF or --conf-dir DIR")
    if conf_dir:
        from . import generator

        outcome = generator.units(conf_dir)
        for problem in outcome.problems:
            click.echo(f"{problem} (its services are not watched)", err=True)
        plans = outcome.plans
    else:
        assert conf is not None  # CONF or --conf-dir, checked above
        model = _load(conf)
        plans = graph.plan(model, graph.local_host(model, host))
    services = watching.watched_services(plans)
    if not services:
        click.echo("nothing to watch: no service of this host has on_dependency_loss: restart or stop "
                   "with a remote dependency, nor on_unhealthy: restart", err=True)
        return
    try:
        asyncio.run(watching.run(services, bus_address, interval=interval, restart_interval=restart_interval))
    except KeyboardInterrupt:
        pass


def main() -> None:
    cli(prog_name="unitgen")
