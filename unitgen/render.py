"""Unit texts from a plan, through templates/ (the renderer never reads YAML).

    Renderer(probe="/usr/bin/unitgen-probe").render(conf, host) -> {unit name: text}

The jinja2 environment is built once per Renderer: StrictUndefined (a typo in
a template is an error, not an empty value), keep_trailing_newline, no HTML
autoescape, and a ``finalize`` hook that refuses to print any plain string:
only ``systemd.Escaped`` values, made by the filters below, reach a unit.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

import jinja2

from unitgen_probe import format_argv

from . import graph, paths, systemd
from .errors import ConfigError, Problem
from .model import LAUNCH_PID_DIR, START_TIMEOUT_MARGIN, WATCH_UNIT, Conf, Service

WATCH_WANTED_BY = ("multi-user.target",)  # the watcher's [Install] (templates/watch.j2)
LAUNCH_SCRIPT = "unitgen-launch"
_DIRECTIVE = re.compile(r"[A-Z][A-Za-z0-9]*\Z")
# A line a unit may not hold: neither a comment, a section, one directive nor
# empty, or one ending in a backslash (which would join the next line).
_BAD_LINE = re.compile(r"^(?!#|\[(?:Unit|Service|Install)\]$|[A-Z][A-Za-z0-9]*=|$).*$|\\$", re.M)


def _finalize(value: Any) -> Any:
    if isinstance(value, systemd.Escaped) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"template printed an unescaped value {value!r}: pass it through a systemd filter")


def _directive(name: str) -> systemd.Escaped:
    if not _DIRECTIVE.match(name):
        raise systemd.Unexpressible(f"{name!r} is not a directive name")
    return systemd.Escaped(name)


def environment() -> jinja2.Environment:
    """The one jinja2 environment factory for unit templates."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters.update(
        value=systemd.value,
        exec=systemd.exec_command,
        env=systemd.environment,
        span=systemd.timespan,
        raw=systemd.raw,
        comment=systemd.comment,
        directive=_directive,
    )
    return env


class Renderer:
    """Renders the units of one host; build once, call render() many times."""

    def __init__(self, probe: Optional[str] = None, systemd_version: Optional[int] = None):
        """``systemd_version``: the major version of the systemd that loads the
        units; directives it does not know are left out (as comments). None
        (unknown) renders every directive."""
        self.probe = paths.probe_command(probe)
        self.probe_argv = paths.probe_argv(self.probe)  # what ExecStartPre= runs
        # unitgen-launch is installed beside unitgen-probe: one package, one scripts directory
        self.launcher_argv = paths.launch_argv(self.probe_argv, os.path.join(os.path.dirname(self.probe),
                                                                             LAUNCH_SCRIPT))
        self.systemd_version = systemd_version
        env = environment()
        self.template = env.get_template("service.j2")
        self.watch_template = env.get_template("watch.j2")

    def render(self, conf: Conf, host: Optional[str], source_path: Optional[str] = None,
               plans: Optional[List[graph.UnitPlan]] = None) -> Dict[str, str]:
        """{unit name: unit text} for every service ``host`` runs, in conf order.

        ``source_path`` adds SourcePath= (for the generator: systemd then knows
        which file a unit came from); ``plans``: graph.plan(conf, host), when
        the caller has it already.
        """
        source = os.path.abspath(conf.path)
        if plans is None:
            plans = graph.plan(conf, host)
        units = {p.unit: self.unit(p, source, source_path) for p in plans}
        watcher = self.watcher(plans, [source] + (["--host", host] if host else []), source, source_path)
        if watcher:
            units[WATCH_UNIT] = watcher
        return units

    def watcher(self, plans: List[graph.UnitPlan], conf_args: List[str], source: str,
                source_path: Optional[str] = None) -> Optional[str]:
        """unitgen-watch.service for these plans, if one of them acts on a lost
        remote dependency or on its own health; ``conf_args`` tell `unitgen watch` where the conf is."""
        if not any(p.watched for p in plans):
            return None
        # unitgen is installed beside unitgen-probe: one package, one scripts directory
        command = [os.path.join(os.path.dirname(self.probe), "unitgen"), "watch", *conf_args]
        text = self.watch_template.render(source=source, source_path=source_path, command=command,
                                          wanted_by=WATCH_WANTED_BY)
        _check_shape(text)
        return text

    def unit(self, plan: graph.UnitPlan, source: str, source_path: Optional[str] = None) -> str:
        s = plan.service
        probe: List[str] = []
        if plan.targets or plan.groups:
            probe = [*self.probe_argv, *format_argv(plan.targets, deadline=s.probe.deadline, timeout=s.probe.timeout,
                                              any_=s.probe.any, groups=plan.groups, slot=plan.slot)]
        raw, left_out = _version_gate(s.raw, self.systemd_version)
        try:
            text = self._render_unit(s, raw, left_out, plan, source, source_path, probe)
        except systemd.Unexpressible as exc:  # config reads every value first: a last guard, at the service
            raise ConfigError([Problem(f"cannot be written as a unit: {exc}", s.mark, s.name)]) from None
        _check_shape(text)
        _check_line_lengths(text, s)
        return text

    def _render_unit(self, s: Service, raw: Dict[str, List[Tuple[str, str]]],
                     left_out: List[Tuple[str, str, int]], plan: graph.UnitPlan, source: str,
                     source_path: Optional[str], probe: List[str]) -> str:
        exec_start = systemd.exec_command(s.command)
        launch_pid_file = None
        if s.launched:
            launch_pid_file = f"{LAUNCH_PID_DIR}/{plan.unit}.pid"
            if s.pname is not None:
                found_by = ["--pname", s.pname]
            else:
                assert s.pid_file is not None  # launched: found by its pname or its pid_file
                found_by = ["--from-pid-file", s.pid_file]
            credentials = [*(["--user", s.user] if s.user else []), *(["--group", s.group] if s.group else [])]
            exec_start = systemd.exec_command(
                [*self.launcher_argv, "--pid-file", launch_pid_file, *found_by, *credentials, "--", *s.command])
            if credentials:  # "+": the launcher runs as root, writes /run/unitgen, and drops to User= for the command
                exec_start = systemd.Escaped("+" + exec_start)
        return self.template.render(
            s=s,
            raw=raw,
            left_out=left_out,
            systemd_version=self.systemd_version,
            plan=plan,
            source=source,
            source_path=source_path,
            ident=_identifier(s.name),
            probe=probe,
            exec_start=exec_start,
            launch_pid_file=launch_pid_file,
            start_timeout=s.probe.deadline + plan.slot + START_TIMEOUT_MARGIN,
        )


def _version_gate(raw, version: Optional[int]):
    """The conf's raw directives split into ({section: [(key, text)]} that
    systemd ``version`` understands, [(key, text, since)] that it does not)."""
    kept: Dict[str, List[Tuple[str, str]]] = {}
    left_out: List[Tuple[str, str, int]] = []
    for section, lines in raw:
        kept[section] = []
        for key, text in lines:
            if systemd.understood(key, version):
                kept[section].append((key, text))
            else:
                left_out.append((key, text, systemd.DIRECTIVE_SINCE[key]))
    return kept, left_out


def _identifier(name: str) -> str:
    """SyslogIdentifier=: the service name, or its unit-name form when it is not plain."""
    try:
        systemd.check_plain(name)
        return name
    except systemd.Unexpressible:
        return systemd.unit_name(name, suffix="")


def _check_shape(text: str) -> None:
    """Defence in depth: every line is a comment, a section or one directive,
    and no character but \\n could end a line for any reader (\\r, \\v, U+2028 ...)."""
    bad = _BAD_LINE.search(text)
    if bad or _LINE_BREAKING.search(text):
        raise AssertionError(f"a rendered unit has a malformed line: {bad.group() if bad else text!r}")


_LINE_BREAKING = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _check_line_lengths(text: str, service: Service) -> None:
    """systemd refuses a whole unit with a line over LONG_LINE_MAX (1 MiB)."""
    if len(text) <= systemd.LINE_MAX // 4:  # a character is at most 4 bytes: nothing can be over
        return
    for line in text.split("\n"):
        size = len(line.encode("utf-8"))
        if size > systemd.LINE_MAX:
            directive = line.split("=", 1)[0]
            raise ConfigError([Problem(
                f"its unit would have a {directive}= line of {size} bytes, over systemd's limit of "
                f"{systemd.LINE_MAX} (1 MiB): systemd would refuse the whole unit", service.mark, service.name)])
