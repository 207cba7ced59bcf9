"""Read a conf file, in either format, into one validated model.Conf.

    load("conf.yaml") -> Conf        # or raises ConfigError with every problem

Formats:
* native: a top-level ``version: 1`` (see schema.json and the README);
* Autoheal: a mapping of service name -> pname | pid_file, script, dep
  (https://github.com/oilbeater/Autoheal), accepted verbatim.

Structure, types and ranges are checked by the schema (schema.py); what a
schema cannot say is checked here: values systemd cannot carry, URLs and
host:port specs (by the probe's own Target, so that the conf and the probe
never disagree), references to hosts and services, ``sudo -u`` in scripts.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, overload

from unitgen_probe import Target, UsageError as ProbeUsageError

from . import defaults, systemd, yamlfile
from .errors import ConfigError, Mark, Problem
from .model import (
    CheckDependency,
    GroupDependency,
    Conf,
    Dependency,
    Host,
    LossThreshold,
    SCRIPT_SHELL,
    ProbeSettings,
    Service,
    ServiceDependency,
    WATCH_UNIT,
    wait_at_most,
)
from .schema import describe, did_you_mean, format_path, quote, validator
from .model import Format
from .yamlfile import MarkedList, MarkedMap

# Mappings in ``defaults:`` that merge key by key into a service's own.
_DEEP_KEYS = {"environment", "probe", "loss_threshold", "systemd"}
_COMMAND_KEYS = ("exec", "script")
# systemd's strict user/group name rules (anything else draws a warning from
# systemd), or a numeric id.
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}\Z")
# systemd's numeric ids (parse_uid): decimal, no sign, no leading zero, below
# 2^32 - 1, and never 65535 (the 16-bit -1): anything else systemd refuses.
_NUMERIC_ID = re.compile(r"[0-9]+\Z")


def valid_id(text: str) -> bool:
    """Whether systemd accepts ``text`` as User=/Group=: a strict name or a numeric id."""
    if _USER_NAME.match(text):
        return True
    if not _NUMERIC_ID.match(text) or (len(text) > 1 and text[0] == "0"):
        return False
    number = int(text)
    return number < 2**32 - 1 and number != 65535
_NATIVE_SERVICE_KEYS = set(validator().property_names("#/$defs/service_keys"))


def load(path: str, text: Optional[bytes] = None) -> Conf:
    """Read and validate ``path``. Raises ConfigError listing every problem."""
    data = yamlfile.load(path, text)
    if not isinstance(data, MarkedMap):
        top = data.mark if hasattr(data, "mark") and data.mark else Mark(path, 1, 1)
        raise ConfigError([Problem("the top level must be a mapping (service name: settings, or version: 1)", top)])
    reader = _NativeReader(path, data) if "version" in data else _AutohealReader(path, data)
    return reader.read()


class _Reader:
    """Shared by both formats: schema first, then a model, collecting problems."""

    format: Format

    def __init__(self, path: str, data: MarkedMap, reserved: Optional[Dict[str, Mark]] = None):
        """``reserved``: unit names of services left out of ``data`` (the
        generator's leave_out) -> where they are defined; no alias takes them."""
        self.path = path
        self.data = data
        self.problems: List[Problem] = []
        self.warnings: List[Problem] = []
        self.reserved = dict(reserved or {})
        self.alias_marks: Dict[Tuple[str, str], Tuple[Tuple[Any, ...], Optional[Mark]]] = {}

    def read(self) -> Conf:
        self.check_expansion()
        self.problems = validator().validate(self.data)
        broken = self.broken_services({p.keys for p in self.problems})
        hosts = self.read_hosts()
        services: Dict[str, Service] = {}
        for name, raw, keys, mark in self.service_entries():
            if name in broken or not isinstance(name, str):
                continue
            service = self.build_service(name, raw, keys, mark, hosts)
            if service is not None:
                services[name] = service
        if not broken:
            self.check_references(services, hosts)
        self.check_unit_names(services)
        if self.problems:
            raise ConfigError(self.problems)
        return Conf(self.path, self.format, services, hosts, self.warnings)

    def check_expansion(self) -> None:
        """Refuse a conf whose aliases and defaults expand past MAX_EXPANDED
        characters, before anything walks or copies the expanded values (one
        1 MB value aliased into 10,000 services must not end in MemoryError).
        A service counts once per host it is rendered on, defaults included."""
        data = self.data
        native = isinstance(data.get("services"), dict) and "version" in data
        services = data["services"] if native else data
        defaults = data.get("defaults") if native else None
        hosts: dict = data["hosts"] if native and isinstance(data.get("hosts"), dict) else {}
        budget = MAX_EXPANDED
        shared = _expanded_size(defaults, budget) if isinstance(defaults, dict) else 0
        for name, raw in services.items():
            if native or not (isinstance(name, str) and name.startswith("x-")):
                copies = _placements(raw, hosts)
                budget -= copies * (shared + _expanded_size(raw, budget // copies + 1) + len(str(name)))
            if budget < 0:
                where = services.key_mark_of(name) if isinstance(services, MarkedMap) else None
                raise ConfigError([Problem(
                    f"the conf expands to more than {MAX_EXPANDED // (1024 * 1024)} MiB of values once its "
                    "aliases and defaults are applied to every service (and host); it stops here: share "
                    "less, or split the fleet", where)])

    # -- per format -------------------------------------------------------
    def broken_services(self, problem_keys: Set[Tuple[Any, ...]]) -> Set[Any]:
        raise NotImplementedError

    def service_entries(self):
        raise NotImplementedError

    def read_hosts(self) -> Dict[str, Host]:
        return {}

    # -- helpers ------------------------------------------------------------
    def problem(self, message: str, keys: Tuple[Any, ...], mark: Optional[Mark]) -> None:
        self.problems.append(Problem(message, mark, format_path(keys), keys))

    def warn(self, message: str, keys: Tuple[Any, ...], mark: Optional[Mark]) -> None:
        self.warnings.append(Problem(message, mark, format_path(keys), keys))

    def plain(self, raw: MarkedMap, key: str, keys: Tuple[Any, ...]) -> Optional[str]:
        """A value bound for a plain systemd setting; a problem if it cannot be."""
        value = raw.get(key)
        if value is None:
            return None
        try:
            systemd.check_plain(value)
        except systemd.Unexpressible as exc:
            self.problem(str(exc), keys + (key,), raw.mark_of(key))
            return None
        return value

    @overload
    def span(self, raw: Any, key: str, keys: Tuple[Any, ...], default: float) -> float: ...
    @overload
    def span(self, raw: Any, key: str, keys: Tuple[Any, ...], default: None = None) -> Optional[float]: ...

    def span(self, raw: Any, key: str, keys: Tuple[Any, ...], default: Optional[float] = None) -> Optional[float]:
        """A time span in seconds (``default`` when not given); a problem, and the
        default, when systemd would read it differently (nan, huge, sub-microsecond)."""
        value = raw.get(key) if isinstance(raw, dict) else None
        if value is None:
            return default
        try:
            return systemd.parse_timespan(value)
        except ValueError as exc:
            self.problem(str(exc), keys + (key,), raw.mark_of(key))
            return default

    def path_value(self, raw: MarkedMap, key: str, keys: Tuple[Any, ...], value: Optional[str] = None,
                   index: Optional[int] = None) -> Optional[str]:
        """An absolute path for a systemd setting: plain, and normalized."""
        where = keys + ((key,) if index is None else (key, index))
        mark = raw.mark_of(key) if index is None else raw[key].mark_of(index)
        text: str = raw[key] if value is None else value
        body = text[1:] if text.startswith("-/") else text
        try:
            systemd.check_plain(text)
        except systemd.Unexpressible as exc:
            self.problem(str(exc), where, mark)
            return None
        if body != "~" and ("//" in body or any(part in (".", "..") for part in body.split("/"))
                            or (body.endswith("/") and body != "/")):
            self.problem(f"{text!r} must be a normalized absolute path (no //, . or .., no trailing /)", where, mark)
            return None
        return text

    def command(self, raw: MarkedMap, keys: Tuple[Any, ...], mark: Optional[Mark], user: Optional[str]):
        """(argv, script, user) from exec: or script: (with sudo -u lifted into User=)."""
        if "exec" in raw:
            argv = tuple(raw["exec"])
            try:
                systemd.exec_command(argv)
            except systemd.Unexpressible as exc:
                self.problem(str(exc), keys + ("exec",), raw.mark_of("exec"))
            return argv, None, user
        script = raw.get("script")
        if script is None:
            self.problem("needs exec (a command as a list) or script (a shell command line)", keys, mark)
            return (), None, user
        command = script
        if user is None:
            sudo_user, command, why_kept = split_sudo(script)
            if why_kept:
                self.warn(why_kept, keys + ("script",), raw.mark_of("script"))
            user = sudo_user
        return (SCRIPT_SHELL, "-c", command), script, user

    def process(self, raw: MarkedMap, keys: Tuple[Any, ...]) -> Tuple[Optional[str], bool]:
        """(pname, foreground): the pattern Autoheal found the process by
        (``pgrep -f``: a regular expression), and whether the command is the
        service itself."""
        pname = raw.get("pname")
        if pname is not None:
            try:
                re.compile(pname)
            except re.error as exc:
                self.problem(f"{pname!r} is not a regular expression (pgrep -f matches it as one): {exc}",
                             keys + ("pname",), raw.mark_of("pname"))
        return pname, bool(raw.get("foreground", False))

    def dependency(self, item: MarkedMap, keys: Tuple[Any, ...], mark: Optional[Mark],
                   member: bool = False) -> Optional[Dependency]:
        name = item.get("name")
        timeout = self.span(item, "timeout", keys)
        bound = self.optional_bound(item, keys, member)
        if "service" in item:
            return ServiceDependency(item["service"], name=name, timeout=timeout, need=item.get("need"),
                                     wait_at_most=bound, mark=mark)
        if "any" in item or "of" in item:
            key = "any" if "any" in item else "of"
            members = [self.dependency(member, keys + (key, i), item[key].mark_of(i), member=True)
                       for i, member in enumerate(item[key])]
            checks = [m for m in members if isinstance(m, CheckDependency)]  # a group holds checks (schema)
            if len(checks) != len(members):
                return None
            return GroupDependency(tuple(m.target for m in checks), "any" if key == "any" else item.get("need", "all"),
                                   name=name, wait_at_most=bound, mark=mark)
        kind, spec = _dependency_kind(item)
        try:
            target = Target(
                kind, spec, name=name, status=_status(item.get("status")), body=item.get("body"),
                ca_file=item.get("ca_file"), insecure=item.get("insecure", False), timeout=timeout,
                wait_at_most=bound,
            )
        except ProbeUsageError as exc:
            self.problem(str(exc), keys, mark)
            return None
        legacy = _legacy_ipv4(_target_host(kind, spec, item))
        if legacy:
            self.problem(legacy, keys, mark)
            return None
        return CheckDependency(target, mark=mark)

    def optional_bound(self, item: MarkedMap, keys: Tuple[Any, ...], member: bool) -> Optional[float]:
        """optional: true [wait_at_most: SPAN] -> the bound (default defaults.OPTIONAL_WAIT); None: required.

        wait_at_most without optional: true is refused rather than read as
        optional: a required dependency is waited for up to the probe's
        deadline, then Restart= tries again; a bound that silently turned a
        required dependency into one the service starts without would be the
        worse surprise."""
        optional = item.get("optional", False)
        if member:
            for key in ("optional", "wait_at_most"):
                if key in item:
                    self.problem(f"a check inside any:/of: cannot be optional on its own: give {key}: to the "
                                 "group (the any:/of: entry)", keys + (key,), item.mark_of(key))
            return None
        bound = self.span(item, "wait_at_most", keys)
        if bound is not None and not optional:
            self.problem("wait_at_most: bounds the wait for an optional dependency; add optional: true (a "
                         "required one is waited for until the probe's deadline, then Restart= tries again)",
                         keys + ("wait_at_most",), item.mark_of("wait_at_most"))
            return None
        if not optional:
            return None
        if bound is None:
            return defaults.OPTIONAL_WAIT
        if bound <= 0:
            self.problem("must be above 0: an optional dependency gets at least one chance to answer",
                         keys + ("wait_at_most",), item.mark_of("wait_at_most"))
            return None
        return bound

    def check_optional_at(self, dep: Dependency, probe: ProbeSettings, keys: Tuple[Any, ...],
                          item: MarkedMap) -> None:
        """An optional dependency's bound must end before the probe's deadline
        (else the unit fails first and never starts without it), and means
        nothing when any one dependency is enough (probe: any: true)."""
        bound = wait_at_most(dep)
        if bound is None:
            return
        key = "wait_at_most" if "wait_at_most" in item else "optional"
        where, mark = keys + (key,), item.mark_of(key)
        if probe.any:
            self.problem("optional: has no meaning with probe: any: true (one answer is enough already)",
                         where, mark)
        elif bound >= probe.deadline:
            given = "" if key == "wait_at_most" else f" (the default, {defaults.OPTIONAL_WAIT:g} s)"
            self.problem(f"wait_at_most{given} must be below the probe's deadline ({probe.deadline:g} s): "
                         "the unit would fail before it starts without this dependency", where, mark)

    def finish_service(self, name: str, keys: Tuple[Any, ...], mark: Optional[Mark], **fields: Any) -> Optional[Service]:
        try:
            systemd.unit_name(name)
        except systemd.Unexpressible as exc:
            self.problem(f"the service name cannot become a unit name: {exc}", keys, mark)
            return None
        if name == "unitgen-watch":
            self.problem("the name unitgen-watch is unitgen's own (its run-time watcher); choose another", keys, mark)
            return None
        description = fields.pop("description", None) or _default_description(name)
        return Service(name=name, description=description, mark=mark, **fields)

    def check_references(self, services: Dict[str, Service], hosts: Dict[str, Host]) -> None:
        names = list(services)
        for service in services.values():
            for i, dep in enumerate(service.deps):
                if isinstance(dep, ServiceDependency) and dep.service not in services:
                    self.problem(
                        f"no service named {dep.service!r} in this conf{did_you_mean(dep.service, names)}",
                        self.service_keys(service.name) + ("deps", i, "service"), dep.mark,
                    )

    def check_unit_names(self, services: Dict[str, Service]) -> None:
        """Every unit name and alias belongs to one service: an alias can take
        neither another service's unit name (whichever file defines it) nor
        another service's alias; each such alias is a problem naming the other
        place."""
        owners: Dict[str, List[Tuple[str, Optional[Mark]]]] = {}
        for unit, defined in self.reserved.items():
            owners.setdefault(unit, []).append(("", defined))
        for service in services.values():
            owners.setdefault(systemd.unit_name(service.name), []).append(("", service.mark))
        for service in services.values():
            for alias in service.aliases:
                owners.setdefault(alias, []).append((service.name, self.alias_marks[service.name, alias][1]))
        for service in services.values():
            for alias in service.aliases:
                keys, mark = self.alias_marks[service.name, alias]
                for other, where in owners[alias]:
                    if other == service.name:
                        continue
                    what = f"an alias of service {other!r}" if other else "the unit of another service"
                    self.problem(f"Alias={alias} is also {what}, at {where}; one unit name, one service",
                                 keys, mark)

    def service_keys(self, name: str) -> Tuple[Any, ...]:
        raise NotImplementedError

    def build_service(self, name: str, raw: MarkedMap, keys: Tuple[Any, ...], mark: Optional[Mark],
                      hosts: Dict[str, Host]) -> Optional[Service]:
        raise NotImplementedError


class _AutohealReader(_Reader):
    format = "autoheal"

    def broken_services(self, problem_keys):
        broken = {keys[0] for keys in problem_keys if keys}
        native = [k for k in problem_keys if len(k) == 2 and k[1] in _NATIVE_SERVICE_KEYS]
        if native:
            where = self.data.key_mark_of(native[0][0])
            self.problems.append(Problem(
                "this file is read as an Autoheal conf because it has no top-level 'version: 1'; "
                "add it to use the native format", where))
        return broken

    def service_entries(self):
        for name, raw in self.data.items():
            yield name, raw, (name,), self.data.key_mark_of(name)

    def service_keys(self, name):
        return (name,)

    def build_service(self, name: str, raw: MarkedMap, keys, mark, hosts) -> Optional[Service]:
        argv, script, user = self.command(raw, keys, mark, None)
        deps = []
        for i, item in enumerate(raw.get("dep") or ()):
            dep = self.dependency(item, keys + ("dep", i), raw["dep"].mark_of(i))
            if dep:
                deps.append(dep)
                self.check_optional_at(dep, ProbeSettings(), keys + ("dep", i), item)
        pid_file = self.path_value(raw, "pid_file", keys) if "pid_file" in raw else None
        pname, foreground = self.process(raw, keys)
        return self.finish_service(
            name, keys, mark,
            command=argv, script=script, user=user, pid_file=pid_file, pname=pname, foreground=foreground,
            type="forking" if (pname is not None or pid_file) and not foreground else "exec", deps=tuple(deps),
        )


class _NativeReader(_Reader):
    format = "native"

    def broken_services(self, problem_keys):
        if any(k[:1] in (("defaults",), ("version",)) or k == () for k in problem_keys):
            services = self.data.get("services")
            return set(services if isinstance(services, dict) else ()) | {None}
        return {k[1] for k in problem_keys if len(k) > 1 and k[0] == "services"}

    def service_entries(self):
        services = self.data.get("services")
        if not isinstance(services, dict):
            return
        defaults = self.data.get("defaults") or MarkedMap()
        for name, raw in services.items():
            if isinstance(raw, dict):
                yield name, merge_defaults(defaults, raw), ("services", name), services.key_mark_of(name)

    def service_keys(self, name):
        return ("services", name)

    def read_hosts(self) -> Dict[str, Host]:
        raw_hosts = self.data.get("hosts")
        if not isinstance(raw_hosts, dict):
            return {}
        hosts = {}
        for name, settings in raw_hosts.items():
            address = settings.get("address") if isinstance(settings, dict) else None
            legacy = _legacy_ipv4(address) if address is not None else None
            if legacy:
                self.problem(legacy, ("hosts", name, "address"), settings.mark_of("address"))
            elif address is not None and not _is_address(address):
                self.problem(f"{quote(address)} is not an IP address or a DNS name", ("hosts", name, "address"),
                             settings.mark_of("address"))
            hosts[name] = Host(name, address)
        return hosts

    def build_service(self, name: str, raw: MarkedMap, keys, mark, hosts: Dict[str, Host]) -> Optional[Service]:
        user = self.plain(raw, "user", keys)
        if user is not None and not valid_id(user):
            self.problem(f"{quote(user)} is not a user systemd accepts (a letter or _, then letters, digits, _ "
                         "or -, at most 31 characters; or an id: decimal, no leading 0, not 65535 nor "
                         "4294967295)", keys + ("user",), raw.mark_of("user"))
        group = self.plain(raw, "group", keys)
        if group is not None and not valid_id(group):
            self.problem(f"{quote(group)} is not a group systemd accepts (a letter or _, then letters, digits, "
                         "_ or -, at most 31 characters; or an id: decimal, no leading 0, not 65535 nor "
                         "4294967295)", keys + ("group",), raw.mark_of("group"))
        argv, script, user = self.command(raw, keys, mark, user)
        pid_file = self.path_value(raw, "pid_file", keys) if "pid_file" in raw else None
        pname, foreground = self.process(raw, keys)
        launched = (pname is not None or pid_file) and not foreground
        unit_type = raw.get("type") or ("forking" if launched else "exec")
        if launched and unit_type != "forking":
            key = "pname" if pname is not None else "pid_file"
            self.problem(f"{key} starts the service through unitgen-launch (type forking), not type {unit_type}; "
                         "say foreground: true if the command stays in the foreground", keys + ("type",),
                         raw.mark_of("type"))
        env_files = raw.get("environment_file") or ()
        if isinstance(env_files, str):
            env_files = (env_files,)
        deps = []
        optional_at = []
        for i, item in enumerate(raw.get("deps") or ()):
            dep = self.dependency(item, keys + ("deps", i), raw["deps"].mark_of(i))
            if dep:
                deps.append(dep)
                optional_at.append((dep, keys + ("deps", i), item))
        probe = raw.get("probe") or MarkedMap()
        deadline = self.span(probe, "deadline", keys + ("probe",), ProbeSettings.deadline)
        if deadline <= 0:
            self.problem("the probe deadline must be above 0 in a unit, or a boot could wait forever",
                         keys + ("probe", "deadline"), probe.mark_of("deadline"))
        attempt = self.span(probe, "timeout", keys + ("probe",), ProbeSettings.timeout)
        if attempt <= 0:
            self.problem("the per-attempt timeout must be above 0", keys + ("probe", "timeout"), probe.mark_of("timeout"))
        settings = ProbeSettings(deadline, attempt, bool(probe.get("any", False)))
        for dep, where, item in optional_at:
            self.check_optional_at(dep, settings, where, item)
        loss = raw.get("loss_threshold") or MarkedMap()
        peers = raw.get("peers")
        return self.finish_service(
            name, keys, mark,
            command=argv, script=script, user=user, group=group,
            description=self.plain(raw, "description", keys),
            working_dir=self.path_value(raw, "working_dir", keys) if "working_dir" in raw else None,
            environment=self.environment(raw, keys),
            environment_files=tuple(
                f for i, f in enumerate(env_files)
                if self.path_value(raw, "environment_file", keys, f, None if isinstance(raw["environment_file"], str) else i)
            ),
            pid_file=pid_file,
            pname=pname,
            foreground=foreground,
            type=unit_type,
            restart_sec=self.span(raw, "restart_sec", keys, Service.restart_sec),
            **self.install_settings(name, raw, keys),
            hosts=self.placement(raw, keys, mark, hosts),
            listen=raw.get("listen"),
            health=self.health(raw, keys),
            deps=tuple(deps),
            peers=None if peers is None else peers.get("need", "quorum"),
            probe=settings,
            on_dependency_loss=raw.get("on_dependency_loss", "ignore"),
            on_unhealthy=self.on_unhealthy(raw, keys),
            accepts=self.accepts(raw, keys),
            loss_threshold=LossThreshold(
                loss.get("failures", LossThreshold.failures),
                self.span(loss, "seconds", keys + ("loss_threshold",), LossThreshold.seconds)
            ),
            start_time=self.span(raw, "start_time", keys),
            raw=self.raw_directives(raw, keys),
        )

    def install_settings(self, name: str, raw: MarkedMap, keys) -> Dict[str, Tuple[str, ...]]:
        """wanted_by, and the raw [Install] settings that make links, as typed
        unit names (the generator links from these, never from a unit's text)."""
        settings: Dict[str, List[str]] = {
            "wanted_by": list(self.unit_references(raw, "wanted_by", keys) or Service.wanted_by),
            "required_by": [], "aliases": [],
        }
        field_of = {"WantedBy": "wanted_by", "RequiredBy": "required_by", "Alias": "aliases"}
        directives = (raw.get("systemd") or MarkedMap()).get("Install") or MarkedMap()
        unit = systemd.unit_name(name) if _unit_name_ok(name) else None
        for key, value in directives.items():
            where, mark = keys + ("systemd", "Install", key), directives.mark_of(key)
            if key == "UpheldBy":
                self.problem("systemd 252 ignores UpheldBy= in [Install] (it makes no link); "
                             "write Upholds= in the upholding unit instead", where, mark)
            if key == "Also":
                self.problem("Also= enables other units, which the generator cannot do for units it does not "
                             "make; give those units their own WantedBy=", where, mark)
            if key not in field_of:
                continue
            for item in value if isinstance(value, list) else [value]:
                try:
                    words = systemd.install_words(str(item))
                except systemd.Unexpressible as exc:
                    self.problem(str(exc), where, mark)
                    continue
                for word in words:
                    if key == "Alias" and not self.alias_ok(word, unit, where, mark):
                        continue
                    settings[field_of[key]].append(word)
                    if key == "Alias":
                        self.alias_marks.setdefault((name, word), (where, mark))
        return {k: tuple(dict.fromkeys(v)) for k, v in settings.items()}

    def alias_ok(self, alias: str, unit: Optional[str], where, mark) -> bool:
        """An alias systemd accepts for a service's unit and that is not unitgen's own."""
        if not alias.endswith(".service") or "@" in alias:
            self.problem(f"Alias={alias}: an alias of a service is a NAME.service (not a template instance)",
                         where, mark)
        elif alias == unit:
            self.problem(f"Alias={alias} is the service's own unit name", where, mark)
        elif alias == WATCH_UNIT:
            self.problem(f"Alias={alias} is unitgen's own (its run-time watcher)", where, mark)
        else:
            return True
        return False

    def environment(self, raw: MarkedMap, keys) -> Tuple[Tuple[str, str], ...]:
        pairs = []
        variables = raw.get("environment") or MarkedMap()
        for name, value in variables.items():
            try:
                systemd.environment(name, str(value))
            except systemd.Unexpressible as exc:
                self.problem(str(exc), keys + ("environment", name), variables.mark_of(name))
                continue
            pairs.append((name, str(value)))
        return tuple(pairs)

    def unit_references(self, raw: MarkedMap, key: str, keys) -> Tuple[str, ...]:
        value = raw.get(key)
        names = (value,) if isinstance(value, str) else tuple(value or ())
        for name in names:
            try:
                systemd.check_unit_reference(name)
            except systemd.Unexpressible as exc:
                self.problem(str(exc), keys + (key,), raw.mark_of(key))
        return names

    def placement(self, raw: MarkedMap, keys, mark, hosts: Dict[str, Host]) -> Tuple[str, ...]:
        value = raw.get("host")
        if value is None:
            if hosts:
                self.problem("needs host: (the conf lists hosts:, so every service says where it runs; "
                             'host: "*" for every host)', keys, mark)
            return ()
        names = (value,) if isinstance(value, str) else tuple(value)
        if not hosts:
            self.problem("host: needs a hosts: section listing the fleet", keys + ("host",), raw.mark_of("host"))
            return ()
        if names == ("*",):
            return tuple(hosts)
        for name in names:
            if name not in hosts:
                self.problem(f"no host named {name!r} in hosts:{did_you_mean(name, list(hosts))}",
                             keys + ("host",), raw.mark_of("host"))
        return names

    def accepts(self, raw: MarkedMap, keys) -> Optional[float]:
        """accepts: ``20/s`` (or a bare number), new dependents per second, above 0."""
        value = raw.get("accepts")
        if value is None:
            return None
        rate = None
        if isinstance(value, str):
            number, slash, unit = value.partition("/")
            if slash and unit.strip() == "s":
                try:
                    rate = float(number.strip())
                except ValueError:
                    rate = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rate = float(value)
        if rate is None or not 0 < rate < float("inf"):
            self.problem("expected a rate above 0 such as 20/s (new dependents per second)",
                         keys + ("accepts",), raw.mark_of("accepts"))
            return None
        return rate

    def on_unhealthy(self, raw: MarkedMap, keys) -> str:
        """on_unhealthy: restart judges the service by its own health: URL; without one there is nothing to judge."""
        mode = raw.get("on_unhealthy", "ignore")
        if mode != "ignore" and not raw.get("health"):
            self.problem(f"on_unhealthy: {mode} needs the service's own health: URL, which the watcher checks",
                         keys + ("on_unhealthy",), raw.mark_of("on_unhealthy"))
        return mode

    def health(self, raw: MarkedMap, keys) -> Optional[str]:
        url = raw.get("health")
        if url is None:
            return None
        try:
            Target("http", url.replace("{host}", "localhost"))
            if "{" in url.replace("{host}", "") or "}" in url.replace("{host}", ""):
                raise ProbeUsageError("the only placeholder a health URL may hold is {host}")
        except ProbeUsageError as exc:
            self.problem(str(exc), keys + ("health",), raw.mark_of("health"))
            return None
        return url

    def raw_directives(self, raw: MarkedMap, keys):
        sections = []
        for section, directives in (raw.get("systemd") or MarkedMap()).items():
            lines = []
            for key, value in directives.items():
                if section == "Install" and key in systemd.INSTALL_LINKS:
                    continue  # typed: install_settings()
                # a plain boolean is written as the conf wrote it (on, True ...): systemd reads
                # the same words as booleans, and a setting that takes text gets the text
                items = ([value.text_of(i) for i in range(len(value))] if isinstance(value, MarkedList)
                         else [directives.text_of(key)])
                for item in items:
                    text = str(item)
                    try:
                        systemd.raw(text)
                        if section == "Service" and _EXEC_KEY.match(key):
                            _check_raw_program(text)
                    except systemd.Unexpressible as exc:
                        self.problem(str(exc), keys + ("systemd", section, key), directives.mark_of(key))
                    lines.append((key, text))
            sections.append((section, tuple(lines)))
        return tuple(sections)


_EXEC_KEY = re.compile(r"Exec[A-Za-z]+\Z")
_EXEC_FLAGS = re.compile(r"[-@:+!]*")


def _check_raw_program(text: str) -> None:
    """The program of a raw Exec line, when written plainly (no quotes, no
    specifier), must be one systemd runs: not a relative path."""
    flags = _EXEC_FLAGS.match(text)  # matches every text, if only the empty prefix
    program = text[flags.end() if flags else 0:].split(" ", 1)[0]
    if program and not any(c in program for c in "\"'%\\"):
        systemd.check_program(program)


MAX_EXPANDED = 32 * 1024 * 1024  # characters of values a conf may expand to (twice the largest file)


def _expanded_size(value: Any, budget: int) -> int:
    """Characters in ``value`` with every alias expanded, counting at most a
    little past ``budget`` (a billion-laughs list is never walked whole)."""
    size, stack = 0, [value]
    while stack and size <= budget:
        item = stack.pop()
        if isinstance(item, dict):  # x- keys are notes: never rendered, never walked
            kept = [k for k in item if not (isinstance(k, str) and k.startswith("x-"))]
            size += 1 + sum(len(k) if isinstance(k, str) else 1 for k in kept)
            stack.extend(item[k] for k in kept)
        elif isinstance(item, list):
            size += 1
            stack.extend(item)
        else:
            size += len(item) if isinstance(item, str) else 1
    return size


def _placements(raw: Any, hosts: dict) -> int:
    """On how many hosts a service (raw) is rendered: its units multiply."""
    host = raw.get("host") if isinstance(raw, dict) else None
    if host == "*":
        return max(1, len(hosts))
    return max(1, len(host)) if isinstance(host, list) else 1


def merge_defaults(defaults: MarkedMap, service: MarkedMap) -> MarkedMap:
    """A service's settings over the defaults: mappings merge key by key, and a
    service's own exec or script replaces both of the defaults' command keys."""
    if not defaults:
        return service
    own_command = any(k in service for k in _COMMAND_KEYS)
    skip = _COMMAND_KEYS if own_command else ()
    return _merge_maps(defaults, service, {k: 2 if k == "systemd" else 1 for k in _DEEP_KEYS}, skip)


def _merge_maps(base: MarkedMap, over: MarkedMap, deep: dict, skip=()) -> MarkedMap:
    """``over`` on top of ``base``; keys in ``deep`` merge recursively (to their depth).
    Marks are copied as they are (both maps come from the same file)."""
    merged = MarkedMap(over.file, over.mark)
    for source in (base, over):
        for key, value in source.items():
            if source is base and key in skip:
                continue
            depth = deep.get(key) if isinstance(key, str) else None
            if depth and isinstance(value, MarkedMap) and isinstance(merged.get(key), MarkedMap):
                value = _merge_maps(merged[key], value, {} if depth == 1 else dict.fromkeys(value, 1))
            merged[key] = value
            merged.key_marks[key] = source.key_marks.get(key, source.mark)
            merged.value_marks[key] = source.value_marks.get(key, source.mark)
            if key in source.bool_texts:
                merged.bool_texts[key] = source.bool_texts[key]
    return merged


# --- several files as one conf (the generator's conf.yaml and conf.d/*.yaml) ---

_SECTIONS = ("services", "hosts")  # native keys whose entries may come from several files


class ConfFiles:
    """Several files read as one conf, each problem with its own FILE:LINE:COL.

        files = ConfFiles(["/etc/unitgen/conf.yaml", "/etc/unitgen/conf.d/web.yaml"])
        conf = files.read()                  # one Conf, or ConfigError with every problem
        conf = files.read(leave_out={"web"})  # as if "web" were defined nowhere
        files.service_of(problem)            # the service a problem lies in, or None

    The files are one conf split up, so they share one format. Native: the
    entries of ``services:`` and ``hosts:`` come from every file, each name
    from one file only (a name in two files is a problem naming both places);
    ``defaults:`` apply to the services of every file, so they, like any
    other top-level key, are given in one file only; ``version:`` is the same
    in each; ``x-`` keys are free in each. Autoheal: the services of every
    file, each name once. The constructor parses every file and raises
    ConfigError if one cannot be a part of the conf at all.
    """

    def __init__(self, paths: Sequence[str], texts: Optional[Dict[str, bytes]] = None):
        """``texts``: the files' bytes, already read (the generator reads them
        without blocking); otherwise each file is read here."""
        self.paths = list(paths)
        self.documents: List[Tuple[str, MarkedMap]] = []
        problems: List[Problem] = []
        for path in self.paths:
            try:
                data = yamlfile.load(path, None if texts is None else texts[path])
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            problem = self._misfit(path, data)
            if problem:
                problems.append(problem)
            else:
                self.documents.append((path, data))
        if problems:
            raise ConfigError(problems)
        self.native = "version" in self.documents[0][1]
        if self.native:
            for _, data in self.documents:
                _pin_marks(data.get("defaults"))

    def _misfit(self, path: str, data: Any) -> Optional[Problem]:
        """Why a parsed file cannot be a part of this conf, if it cannot."""
        if not isinstance(data, MarkedMap):
            where = data.mark if isinstance(data, MarkedList) else Mark(path, 1, 1)
            return Problem("the top level of a conf file must be a mapping (version: 1, or Autoheal services)", where)
        if self.documents and ("version" in data) != ("version" in self.documents[0][1]):
            first = self.documents[0][0]
            return Problem(f"{first} is {_format_name(self.documents[0][1])} but this file is "
                           f"{_format_name(data)}: the files of a conf share one format", data.mark)
        return None

    @property
    def service_names(self) -> Set[Any]:
        """Every service name the files define."""
        names: Set[Any] = set()
        for _, data in self.documents:
            section = data.get("services") if self.native else data
            if isinstance(section, dict):
                names.update(section)
        return names

    def read(self, leave_out: Iterable[str] = ()) -> Conf:
        """The files as one validated Conf; raises ConfigError with every problem."""
        problems: List[Problem] = []
        data = self._combine(set(leave_out), problems)
        reader = (_NativeReader if self.native else _AutohealReader)(self.paths[0], data, self._units_of(leave_out))
        try:
            conf = reader.read()
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        return conf

    def _units_of(self, names: Iterable[str]) -> Dict[str, Mark]:
        """The unit names of these services -> where they are defined."""
        units: Dict[str, Mark] = {}
        for path, data in self.documents:
            section = data.get("services") if self.native else data
            for name in names:
                if isinstance(section, MarkedMap) and name in section and isinstance(name, str) and _unit_name_ok(name):
                    units[systemd.unit_name(name)] = section.key_mark_of(name) or Mark(path, 1, 1)
        return units

    def service_of(self, problem: Problem) -> Optional[str]:
        """The service ``problem`` lies in, by its key path; None for the conf as a whole."""
        keys = problem.keys
        if self.native:
            return keys[1] if len(keys) > 1 and keys[0] == "services" else None
        return keys[0] if keys else None

    def _combine(self, leave_out: Set[str], problems: List[Problem]) -> MarkedMap:
        """One document from every file, by the rules in the class doc; its
        marks are Marks that name their own file."""
        first_path, first = self.documents[0]
        combined = MarkedMap(first_path, first.mark)
        for path, data in self.documents:
            if not self.native:
                _merge_entries(combined, data, (), leave_out, problems)
                continue
            for key, value in data.items():
                if key in _SECTIONS:
                    if not isinstance(value, MarkedMap):
                        problems.append(Problem(f"expected a mapping, got {describe(value)}", data.mark_of(key),
                                                format_path((key,)), (key,)))
                        continue
                    if key not in combined:
                        _copy_entry(combined, data, key, MarkedMap(path, value.mark))
                    _merge_entries(combined[key], value, (key,), leave_out if key == "services" else (), problems)
                elif key not in combined:
                    _copy_entry(combined, data, key, value)
                elif key == "version" and value != combined[key]:
                    problems.append(Problem(f"every file of a conf has the same version: {combined[key]!r} at "
                                            f"{combined.key_mark_of(key)}", data.mark_of(key), "version", (key,)))
                elif key != "version" and not (isinstance(key, str) and key.startswith("x-")):
                    problems.append(Problem(f"may be given in one file only; it is also at {combined.key_mark_of(key)}",
                                            data.key_mark_of(key), format_path((key,)), (key,)))
        return combined


def _merge_entries(into: MarkedMap, source: MarkedMap, keys: Tuple[Any, ...], leave_out: Iterable[str],
                   problems: List[Problem]) -> None:
    """The entries of ``source`` added to ``into``, each name once."""
    for name, value in source.items():
        if name in leave_out:
            continue
        if name in into:
            problems.append(Problem(f"defined twice: here and at {into.key_mark_of(name)}", source.key_mark_of(name),
                                    format_path(keys + (name,)), keys + (name,)))
            continue
        _copy_entry(into, source, name, value)


def _copy_entry(into: MarkedMap, source: MarkedMap, key: Any, value: Any) -> None:
    """``into[key] = value``, marked where ``source`` has ``key`` (a Mark naming its file)."""
    into[key] = value
    into.key_marks[key] = source.key_mark_of(key)
    into.value_marks[key] = source.mark_of(key)
    if key in source.bool_texts:
        into.bool_texts[key] = source.bool_texts[key]


def _pin_marks(value: Any) -> None:
    """Make the marks of every mapping in ``value`` Marks that name their file, so
    that they stay true when merged into a service of another file (defaults:)."""
    if isinstance(value, MarkedMap):
        value.key_marks = {key: value.key_mark_of(key) for key in value}
        value.value_marks = {key: value.mark_of(key) for key in value}
        for item in value.values():
            _pin_marks(item)
    elif isinstance(value, list):
        for item in value:
            _pin_marks(item)


def _format_name(data: MarkedMap) -> str:
    return "native (version: 1)" if "version" in data else "an Autoheal conf (no version:)"


# --- sudo -u ----------------------------------------------------------------

_SUDO = re.compile(r"[ \t]*sudo[ \t]+-u[ \t]*(?P<user>[^ \t]+)[ \t]+(?P<rest>.*)\Z", re.S)
# Characters a shell word may hold unquoted that mean the same to any shell run
# by anyone: no expansion ($ ` ~ * ? [), no operator (; & | < > ( )), no comment
# (#), no escape (\\), no brace or reserved-word trickery ({ } !).
_PLAIN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")
# Words the shell runs itself where sudo would run a program of that name.
_SHELL_OWN = frozenset(
    "! { } case do done elif else esac fi for if in then until while function select "
    ". : [ alias bg break cd command continue echo eval exec exit export false fc fg getopts hash jobs "
    "kill local printf pwd read readonly return set shift test times trap true type ulimit umask unalias "
    "unset wait".split())


def split_sudo(script: str) -> Tuple[Optional[str], str, Optional[str]]:
    """Lift a leading ``sudo -u USER`` into User=USER, only when provably the same.

    Returns ``(user, command, why_kept)``:

    * ``(USER, rest, None)``: the script is ``sudo -u USER rest`` and running
      ``/bin/sh -c rest`` as USER does exactly what root's shell running sudo
      did: USER is a user *name* (systemd and sudo read it alike), and ``rest``
      is one simple command whose words are plain characters or quoted text
      with no expansion, no operator, no comment, no redirection, and whose
      program is not one the shell runs itself;
    * ``(None, script, why)``: it starts with ``sudo -u`` but cannot be lifted;
      it is kept whole (sudo runs it, as Autoheal's cron did) and ``why`` says
      why, for a warning;
    * ``(None, script, None)``: no leading ``sudo -u``.

    Never a guess: ``sudo -u daemon echo a#b && id`` stays whole (``id`` would
    run as root under sudo, as daemon under User=); ``sudo -u 0 cmd`` stays
    whole (sudo reads ``0`` as a user *named* 0, systemd as uid 0).
    """
    match = _SUDO.match(script)
    if not match:
        return None, script, None
    user, rest = match.group("user"), match.group("rest")
    if _NUMERIC_ID.match(user):
        return None, script, (f"kept as is (sudo runs it): sudo reads -u {user} as a user named {user!r} "
                              "(an id is -u '#ID'), User= would read it as an id")
    if not _USER_NAME.match(user):
        return None, script, f"kept as is (sudo runs it): {quote(user)} is not a plain user name"
    if rest.startswith("-- "):
        rest = rest[3:].lstrip(" \t")
    elif rest.startswith("-"):
        return None, script, "kept as is (sudo runs it): sudo options other than -u cannot become User="
    words = _plain_words(rest)
    if not words or words[0] in _SHELL_OWN or "=" in rest.split(None, 1)[0]:
        if any(c in rest for c in ";&|\n"):
            return None, script, (
                "kept as is (sudo runs it): sudo -u covers only the first command of this line, "
                "so User= would change what runs as whom; split it, or use user: and exec:")
        return None, script, (
            "kept as is (sudo runs it): only one simple command of plain words (no expansion, "
            "redirection or shell builtin) can move from sudo -u to User= unchanged; use user: and exec:")
    return user, rest, None


def _plain_words(command: str) -> Optional[List[str]]:
    """The words of ``command`` if it is only plain characters, blanks and quoted
    text without expansion (no $, `, \\ in double quotes); None otherwise."""
    words: List[str] = []
    word: Optional[List[str]] = None
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        word = word if word is not None else []
        if c in _PLAIN_CHARS:
            word.append(c)
        elif c in "'\"":
            end = command.find(c, i + 1)
            segment = command[i + 1:end]
            if end < 0 or systemd.has_control(segment) or (c == '"' and any(x in segment for x in "$`\\")):
                return None
            word.append(segment)
            i = end
        else:
            return None
        i += 1
    if word is not None:
        words.append("".join(word))
    return words


# --- small conversions --------------------------------------------------------

def _dependency_kind(item: dict) -> Tuple[str, str]:
    """(probe kind, spec) of a validated dependency mapping."""
    if "url" in item:
        return "http", item["url"]
    if "port" in item:
        return "tcp", join_host_port(item["host"], item["port"])
    for kind in ("tcp", "http", "unix", "dns", "exec"):
        if kind in item:
            return kind, item[kind]
    raise AssertionError(f"dependency validated without a kind: {sorted(item)}")


def join_host_port(host: str, port: int) -> str:
    """host:port, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _status(value: Any) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return tuple(str(v) for v in items)


def _unit_name_ok(name: str) -> bool:
    try:
        systemd.unit_name(name)
        return True
    except systemd.Unexpressible:
        return False


def _default_description(name: str) -> str:
    try:
        systemd.check_plain(name)
        return name
    except systemd.Unexpressible:
        return systemd.unit_name(name)


_DNS_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?\Z")


_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*\Z|[0-9]+\Z")


def _legacy_ipv4(host: Optional[str]) -> Optional[str]:
    """Why ``host`` is refused, if the C library would read it as an IPv4
    address other than the one it spells (inet_aton: 0177.0.0.1 is octal
    127.0.0.1, 127.1 and 2130706433 are 127.0.0.1, 0x7f.1 too); None if not."""
    if not host:
        return None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    if len(labels) == 4 and host.count(".") == 3:
        try:
            ipaddress.IPv4Address(host)
            return None
        except ValueError:
            pass
    try:
        import socket

        reading = socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, ValueError):
        reading = None
    meant = f"it is read as {reading}" if reading else "it is no address"
    return (f"{quote(host)} is not an IPv4 address in plain dotted decimal, and {meant} (leading zeros are "
            "octal, 0x hex, missing parts zeros): write the four numbers in decimal, or quote a DNS name")


def _target_host(kind: str, spec: str, item: dict) -> Optional[str]:
    """The host a tcp/http/dns check connects to, as written in the conf."""
    if "host" in item:
        return item["host"]
    if kind == "tcp":
        return spec.rsplit(":", 1)[0].strip("[]")
    if kind == "http":
        from urllib.parse import urlsplit

        try:
            return urlsplit(spec).hostname
        except ValueError:
            return None
    return spec if kind == "dns" else None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_DNS_NAME.match(text))
