"""Turn Autoheal confs, one per host, into one native conf for the whole fleet.

    convert([Source("web1", "web1.yaml"), Source("db1", "db1.yaml", "10.0.0.11")]) -> YAML text

Autoheal repeats addresses and ports in every host's conf; the native format
names each service once and lets dependents refer to it. So:
* each file's services are placed on its host (``host:``); a service defined
  identically on several hosts becomes one service on all of them, a
  different one of the same name is renamed NAME-HOST;
* a dependency that names a service of an imported host, at that host's name
  or address (or at loopback on the same host), becomes ``service: NAME``,
  and that service learns its ``listen:`` port (tcp) or ``health:`` URL (http,
  with ``{host}``) from it: the repeated address and port are said once;
* any other dependency stays as it was (``tcp:`` / ``http:``);
* scripts are kept verbatim (the native format lifts ``sudo -u`` the same
  way), and so are ``pname``, ``pid_file`` and ``foreground``, which mean
  the same there (unitgen-launch).
The result is loaded back before it is returned: it is always a valid conf.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import yaml

from . import config, yamlfile
from .errors import UsageError
from .graph import LOOPBACK


@dataclass(frozen=True)
class Source:
    host: Optional[str]  # None: a single conf for a fleet without hosts:
    path: str
    address: Optional[str] = None


def convert(sources: List[Source]) -> str:
    fleet = _Fleet(sources)
    data = fleet.native()
    header = "# Imported by unitgen from " + ", ".join(
        f"{s.path}" + (f" ({s.host})" if s.host else "") for s in sources) + "\n"
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=1000)
    config.load("<imported conf>", text.encode("utf-8"))  # proves the result is a valid conf
    return text


class _Fleet:
    def __init__(self, sources: List[Source]):
        self.sources = sources
        self.raw: List[Tuple[Source, dict]] = []
        for source in sources:
            conf = config.load(source.path)  # every problem of the input, with FILE:LINE
            if conf.format != "autoheal":
                raise UsageError(f"{source.path} is already in the native format")
            self.raw.append((source, yamlfile.load(source.path)))
        self.host_of: Dict[str, str] = {}
        for source in sources:
            if source.host:
                self.host_of[source.host.lower()] = source.host
                if source.address:
                    self.host_of[source.address.lower()] = source.host
        self.names: Dict[Tuple[Optional[str], str], str] = {}  # (host, Autoheal name) -> native name
        self.services: Dict[str, dict] = {}
        self.first_definition: Dict[str, dict] = {}  # native name -> the Autoheal service it came from

    def native(self) -> dict:
        self._place_services()
        for source, data in self.raw:
            for name, raw in data.items():
                service = self.services[self.names[(source.host, name)]]
                deps = [self._dependency(source, dep) for dep in raw.get("dep") or ()]
                if deps and "deps" not in service:
                    service["deps"] = deps
        out: dict = {"version": 1}
        hosts = {s.host: ({"address": s.address} if s.address else {}) for s in self.sources if s.host}
        if hosts:
            out["hosts"] = hosts
        out["services"] = self.services
        return out

    def _place_services(self) -> None:
        for source, data in self.raw:
            for name, raw in data.items():
                service = {"script": raw["script"]}
                if "pid_file" in raw:
                    service["pid_file"] = raw["pid_file"]
                for key in ("pname", "foreground"):
                    if key in raw:
                        service[key] = raw[key]
                same = self.services.get(name)
                if same is not None and raw == self.first_definition[name]:
                    same["host"] = _add_host(same["host"], source.host)
                    self.names[(source.host, name)] = name
                    continue
                native_name = name if same is None else f"{name}-{source.host}"
                if source.host:
                    service = {"host": source.host, **service}
                self.services[native_name] = service
                self.first_definition.setdefault(native_name, raw)
                self.names[(source.host, name)] = native_name

    def _dependency(self, source: Source, dep: dict) -> dict:
        label = dep.get("name")
        if "url" in dep:
            url = urlsplit(dep["url"])
            target = self._service_at(source, url.hostname or "", label)
            if target and self._learn(target, "health", _health_template(url)):
                return {"service": target}
            return {"http": dep["url"], **({"name": label} if label else {})}
        target = self._service_at(source, dep["host"], label)
        if target and self._learn(target, "listen", dep["port"]):
            return {"service": target}
        return {"tcp": config.join_host_port(dep["host"], dep["port"]), **({"name": label} if label else {})}

    def _service_at(self, source: Source, address: str, label: Optional[str]) -> Optional[str]:
        """The native name of the service ``label`` on the host at ``address``, if imported."""
        address = address.lower()
        host = source.host if address in LOOPBACK else self.host_of.get(address)
        if label is None or (host is None and address not in LOOPBACK):
            return None
        return self.names.get((host, label))

    def _learn(self, name: str, key: str, value) -> bool:
        """Record ``key: value`` on a service; False if it already says otherwise."""
        service = self.services[name]
        if service.setdefault(key, value) != value:
            return False
        return True


def _health_template(url) -> str:
    netloc = "{host}" + (f":{url.port}" if url.port else "")
    return urlunsplit((url.scheme, netloc, url.path, url.query, url.fragment))


def _add_host(current, host):
    hosts = [current] if isinstance(current, str) else list(current or [])
    return hosts + [host] if host not in hosts else current


def parse_sources(args: List[str], host: Optional[str], addresses: List[str]) -> List[Source]:
    """FILE, or HOST=FILE, for each argument; --host names the host of a single FILE."""
    known = dict(a.split("=", 1) for a in addresses if "=" in a)
    bad = [a for a in addresses if "=" not in a]
    if bad:
        raise UsageError(f"--address takes HOST=ADDRESS, not {bad[0]!r}")
    sources = []
    for arg in args:
        given, sep, path = arg.partition("=")
        name: Optional[str] = given
        if not sep or os.path.exists(arg):
            name, path = None, arg
        if name is None:
            if host and len(args) == 1:
                name = host
            elif len(args) > 1:
                name = os.path.splitext(os.path.basename(path))[0]
        sources.append(Source(name, path, known.get(name) if name else None))
    unknown = set(known) - {s.host for s in sources}
    if unknown:
        raise UsageError(f"--address names hosts that no file is for: {', '.join(sorted(unknown))}")
    return sources
