"""Pictures of the fleet graph: Mermaid and Graphviz dot text, svg/png through dot.

Services are grouped by host; an arrow goes from a service to what it waits
for, labelled with how readiness is checked (tcp, http). A dashed arrow is a
dependency inferred from a tcp:/http: target that points at a service of the
conf. Dependencies outside the conf are drawn in their own group.

A replicated service (placed on several hosts) is drawn once more, outside
the hosts, as one node (``etcd ×3``, with its ``peers:`` need) linked to its
copies; a ``service:`` dependency on it is one arrow to that node, labelled
with how many copies it needs (``http, 2 of 3``). The arrows of an any:/of:
group of checks say the same (``tcp, 1 of 2``). An optional dependency's arrow
is dotted (dot; dashed in Mermaid, which has no dotted arrow) and its label
says ``optional ≤ 10 s``: the service starts without it after that bound.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Dict, Iterator, List, Optional, Tuple

from .errors import UnitgenError
from .graph import Graph, Node, node_label, placements
from .model import GroupDependency, ServiceDependency, need_count, wait_at_most

IMAGE_FORMATS = ("svg", "png")


class _Layout:
    """Stable ids and groups for one graph, shared by both text formats."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.ids: Dict[Node, str] = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
        self.external_ids: Dict[str, str] = {}
        for node in graph.nodes:
            for target in graph.externals[node]:
                self.external_ids.setdefault(target.display, f"x{len(self.external_ids)}")
        conf = graph.conf
        self.replicated: Dict[str, str] = {
            name: f"r{i}" for i, name in enumerate(n for n, s in conf.services.items() if len(placements(conf, s)) > 1)}

    def replica_sets(self) -> Iterator[Tuple[str, str, List[str]]]:
        """(id, label, ids of its copies) of every replicated service."""
        conf = self.graph.conf
        for name, rid in self.replicated.items():
            service = conf.services[name]
            copies = placements(conf, service)
            label = f"{name} ×{len(copies)}"
            if service.peers is not None:
                label += f", peers need {need_count(service.peers, len(copies))}"
            yield rid, label, [self.ids[(name, host)] for host in copies]

    def groups(self) -> Iterator[Tuple[Optional[str], List[Node]]]:
        by_host: Dict[Optional[str], List[Node]] = {}
        for node in self.graph.nodes:
            by_host.setdefault(node[1], []).append(node)
        order: List[Optional[str]] = [*self.graph.conf.hosts] or [None]
        for host in order:
            if host in by_host:
                yield host, by_host[host]

    def edges(self) -> Iterator[Tuple[str, str, str, bool, bool]]:
        """(from id, to id, label, dashed (inferred), optional) for every arrow."""
        for node in self.graph.nodes:
            for source, target, label, dashed, bound in self._edges(node):
                yield source, target, label + ("" if bound is None else f", optional ≤ {bound:g} s"), dashed, \
                    bound is not None

    def _edges(self, node: Node) -> Iterator[Tuple[str, str, str, bool, Optional[float]]]:
        """(from id, to id, label, dashed, wait_at_most) for every arrow from ``node``."""
        drawn = set()
        for edge in self.graph.out[node]:
            if not edge.need:
                yield self.ids[node], self.ids[edge.target], edge.kind, edge.inferred, edge.wait_at_most
                continue
            members = [e for e in self.graph.out[node] if e.dep is edge.dep]
            of = f"{edge.need} of {len(members)}"
            if isinstance(edge.dep, ServiceDependency):
                if id(edge.dep) not in drawn:
                    drawn.add(id(edge.dep))
                    yield (self.ids[node], self.replicated[edge.dep.service], f"{edge.kind}, {of}", False,
                           edge.wait_at_most)
                continue
            yield self.ids[node], self.ids[edge.target], f"{edge.kind}, {of}", edge.inferred, edge.wait_at_most
        groups = {t: dep for dep in self.graph.conf.services[node[0]].deps
                  if isinstance(dep, GroupDependency) for t in dep.targets}
        for target in self.graph.externals[node]:
            dep = groups.get(target)
            label = target.kind if dep is None else \
                f"{target.kind}, {need_count(dep.need, len(dep.targets))} of {len(dep.targets)}"
            yield (self.ids[node], self.external_ids[target.display], label, False,
                   target.wait_at_most if dep is None else wait_at_most(dep))


def layout_ids(graph: Graph) -> Dict[str, str]:
    """{a node's id in mermaid/dot/svg (dot's node name, svg's ``<title>``):
    the board's id of it (``service@host``, board.node_id)}; a replicated
    service's own node (the hexagon) maps to the service's name."""
    layout = _Layout(graph)
    ids = {nid: node_label(node) for node, nid in layout.ids.items()}
    ids.update({rid: name for name, rid in layout.replicated.items()})
    return ids


def mermaid(graph: Graph) -> str:
    layout = _Layout(graph)
    lines = ["flowchart LR"]
    for host, nodes in layout.groups():
        indent = "  "
        if host is not None:
            lines.append(f'  subgraph host_{layout.ids[nodes[0]]}["{_mermaid_text(host)}"]')
            indent = "    "
        lines.extend(f'{indent}{layout.ids[n]}["{_mermaid_text(n[0])}"]' for n in nodes)
        if host is not None:
            lines.append("  end")
    if layout.external_ids:
        lines.append('  subgraph outside["outside the conf"]')
        lines.extend(f'    {xid}[/"{_mermaid_text(text)}"/]' for text, xid in layout.external_ids.items())
        lines.append("  end")
    for rid, label, copies in layout.replica_sets():
        lines.append(f'  {rid}{{{{"{_mermaid_text(label)}"}}}}')
        lines.extend(f"  {rid} -.- {copy}" for copy in copies)
    for source, target, label, dashed, optional in layout.edges():
        arrow = "-.->" if dashed or optional else "-->"
        lines.append(f"  {source} {arrow}|{label}| {target}")
    return "\n".join(lines) + "\n"


# The longest state word the board writes into a node's second line
# (unitgen/boardpage.py): dot sizes the box for it, the page replaces it.
STATE_PLACEHOLDER = "root-cause"


def element_id(label: str, kind: str = "u") -> str:
    """An SVG element id for a node label ("db@h1", kind "u") or a host (kind "h"):
    hex, so nothing of a conf reaches markup raw."""
    return f"{kind}-" + label.encode("utf-8", "surrogatepass").hex()


def dot(graph: Graph, board: bool = False) -> str:
    """Graphviz dot text; ``board``: every service node and host cluster also
    carries an ``id`` (element_id) and a second line for the live page to fill."""
    layout = _Layout(graph)
    lines = ["digraph unitgen {", "  rankdir=LR;", '  graph [fontname="sans-serif"];',
             '  node [shape=box, style=rounded, fontname="sans-serif"];',
             '  edge [fontname="sans-serif", fontsize=10];']
    for host, nodes in layout.groups():
        indent = "  "
        if host is not None:
            lines.append(f"  subgraph cluster_{layout.ids[nodes[0]]} {{")
            lines.append(f"    label={_dot_text(host)};")
            if board:
                lines.append(f'    id="{element_id(host, "h")}";')
            indent = "    "
        if board:
            lines.extend(f'{indent}{layout.ids[n]} [label={_dot_text(n[0])[:-1]}\\n{STATE_PLACEHOLDER}", '
                         f'id="{element_id(node_label(n))}"];' for n in nodes)
        else:
            lines.extend(f"{indent}{layout.ids[n]} [label={_dot_text(n[0])}];" for n in nodes)
        if host is not None:
            lines.append("  }")
    if layout.external_ids:
        lines.append("  subgraph cluster_outside {")
        lines.append('    label="outside the conf"; style=dashed;')
        lines.extend(f"    {xid} [label={_dot_text(text)}, shape=parallelogram, style=solid];"
                     for text, xid in layout.external_ids.items())
        lines.append("  }")
    for rid, label, copies in layout.replica_sets():
        lines.append(f"  {rid} [label={_dot_text(label)}, shape=hexagon, style=solid];")
        lines.extend(f"  {rid} -> {copy} [style=dotted, arrowhead=none];" for copy in copies)
    for source, target, label, dashed, optional in layout.edges():
        style = ", style=dotted" if optional else ", style=dashed" if dashed else ""
        lines.append(f"  {source} -> {target} [label={_dot_text(label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def image(dot_text: str, fmt: str) -> bytes:
    """svg or png bytes from dot text, through Graphviz's dot."""
    program = shutil.which("dot")
    if program is None:
        raise UnitgenError(f"--format {fmt} needs Graphviz's dot, which is not installed "
                           "(Debian/Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz); "
                           "--format dot or mermaid need nothing")
    done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=300)
    if done.returncode != 0:
        raise UnitgenError(f"dot failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: entity codes for what would end or break it."""
    out = []
    for ch in text:
        if ch in '"#<>&' or not ch.isprintable():
            out.append(f"#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def _dot_text(text: str) -> str:
    """A double-quoted dot string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch.isprintable() else f"\\\\x{ord(ch):02x}" for ch in escaped)
    return f'"{escaped}"'
