"""Check rendered units with systemd itself: ``systemd-analyze verify``.

verify(paths) runs ``systemd-analyze verify --man=no`` and returns its stderr:
any line there ("Unknown key", "ignoring", "Failed to parse", "not
executable") is a failure. verify() also returns, from the debug log, each
parsed command line (argv as systemd will exec it, before $VAR expansion).

verify checks that every Exec program exists. Units for a real fleet name
programs this machine lacks (/opt/api/bin/api), so when one is missing the
check runs in a private mount namespace, chrooted into an overlay of / whose
upper layer holds an empty executable at each missing path: the units are
verified exactly as a host with those programs installed would load them.
The namespace, and every mount in it, ends with the command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

_EXEC_LINE = re.compile(r"^Exec\w+=[-@:+!]*(\"(?:[^\"\\]|\\.)*\"|\S+)", re.M)
_CMDLINE = re.compile(rb"^\s*Command Line: (.*)$", re.M)
_SIMPLE_ESCAPES = {b"\\": b"\\", b'"': b'"', b"$": b"$", b"`": b"`", b"t": b"\t", b"n": b"\n",
                   b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f", b"v": b"\v", b"'": b"'"}


@dataclass
class Verified:
    stderr: str
    command_lines: List[List[str]]  # parsed Exec*= commands, in the order systemd printed them
    dump: str  # systemd's debug dump of the loaded units ("\t\tDescription: ..." lines)

    def setting(self, name: str) -> List[str]:
        """Values of one setting in the dump, e.g. setting("Description")."""
        return re.findall(rf"^\t\t{name}: (.*)$", self.dump, re.M)


def verify(unit_paths: Sequence[os.PathLike]) -> Verified:
    """Run systemd-analyze verify on unit files; see the module doc."""
    paths = [Path(p).resolve() for p in unit_paths]
    renamed = None
    names: List[str] = [""] * len(paths)
    if any(":" in p.name for p in paths):
        # systemd-analyze verify reads FILE:NAME in its arguments (a unit file loaded
        # under that name), so a file whose name holds ":" (valid in a unit name) is
        # given as a copy without it, loaded under its own name: COPY:a:b.service.
        renamed = Path(tempfile.mkdtemp(prefix="unitgen-verify-names-"))
        copies = []
        for i, p in enumerate(paths):
            copies.append(renamed / f"renamed{i}{p.suffix}" if ":" in p.name else p)
            if ":" in p.name:
                shutil.copy(p, copies[-1])
                names[i] = ":" + p.name
        paths = copies
    missing = sorted({prog for p in paths for prog in _programs(p.read_text()) if not _is_executable(prog)})
    try:
        with _Root(paths, missing, names) as root:
            plain = root.run({})
            debug = root.run({"SYSTEMD_LOG_LEVEL": "debug"})
    finally:
        if renamed:
            shutil.rmtree(renamed, ignore_errors=True)
    return Verified(plain.stderr.decode("utf-8", "replace"), parse_command_lines(debug.stdout),
                    debug.stdout.decode("utf-8", "surrogateescape"))


def _programs(text: str) -> List[str]:
    programs = []
    for match in _EXEC_LINE.finditer(text):
        word = match.group(1)
        if word.startswith('"'):
            word = _parse_words(word.encode())[0]
        programs.append(word.replace("%%", "%"))
    return [p for p in programs if p.startswith("/")]


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class _Root:
    """Where verify runs: this machine, or an overlay of it with placeholder programs."""

    def __init__(self, paths: List[Path], missing: List[str], names: List[str]):
        self.paths = paths
        self.names = names  # ":NAME" to load paths[i] under NAME, else ""
        self.missing = missing
        self.work = None

    def __enter__(self) -> "_Root":
        if self.missing:
            self.work = Path(tempfile.mkdtemp(prefix="unitgen-verify-"))
            upper = self.work / "upper"
            for program in self.missing:
                target = upper / program.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("#!/bin/sh\nexit 0\n")
                target.chmod(0o755)
            (upper / "unitgen-verify").mkdir(parents=True)
            for p in self.paths:
                shutil.copy(p, upper / "unitgen-verify" / p.name)
            (self.work / "work").mkdir()
            (self.work / "merged").mkdir()
        return self

    def __exit__(self, *exc) -> None:
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    def run(self, env: Dict[str, str]) -> subprocess.CompletedProcess:
        environ = {**os.environ, "SYSTEMD_LOG_COLOR": "0", **env}
        if not self.work:
            return subprocess.run(_VERIFY + [str(p) + n for p, n in zip(self.paths, self.names)], capture_output=True,
                                  env=environ, timeout=120)
        w = self.work
        units = " ".join(_sh_quote("/unitgen-verify/" + p.name + n) for p, n in zip(self.paths, self.names))
        script = (
            "set -e; "
            f"mount -t overlay overlay -o lowerdir=/,upperdir={w}/upper,workdir={w}/work {w}/merged; "
            f"mount -t proc proc {w}/merged/proc; mount --rbind /dev {w}/merged/dev; "
            f"mount -t tmpfs tmpfs {w}/merged/run; "
            f"exec chroot {w}/merged {' '.join(_VERIFY)} {units}"
        )
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, env=environ, timeout=120)


_VERIFY = ["systemd-analyze", "verify", "--man=no"]


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def parse_command_lines(dump: bytes) -> List[List[str]]:
    """The argv lists in the unit dump verify prints at debug level (``Command Line:`` lines)."""
    return [_parse_words(m.group(1)) for m in _CMDLINE.finditer(dump)]


def _parse_words(line: bytes) -> List[str]:
    words, i, n = [], 0, len(line)
    while i < n:
        if line[i:i + 1] == b" ":
            i += 1
            continue
        if line[i:i + 1] != b'"':
            end = line.find(b" ", i)
            end = n if end < 0 else end
            words.append(line[i:end].decode("utf-8", "surrogateescape"))
            i = end
            continue
        i += 1
        out = bytearray()
        while line[i:i + 1] != b'"':
            ch = line[i:i + 1]
            if ch != b"\\":
                out += ch
                i += 1
                continue
            nxt = line[i + 1:i + 2]
            if nxt in _SIMPLE_ESCAPES:
                out += _SIMPLE_ESCAPES[nxt]
                i += 2
            elif re.fullmatch(rb"[0-7]{3}", line[i + 1:i + 4]):
                out.append(int(line[i + 1:i + 4], 8))
                i += 4
            elif nxt in (b"u", b"U") and re.fullmatch(rb"[0-9a-fA-F]+", line[i + 2:i + (6 if nxt == b"u" else 10)]):
                end = i + (6 if nxt == b"u" else 10)  # systemd writes characters it deems unprintable so
                out += chr(int(line[i + 2:end], 16)).encode("utf-8", "surrogatepass")
                i = end
            elif nxt == b"x" and re.fullmatch(rb"[0-9a-fA-F]{2}", line[i + 2:i + 4]):
                out.append(int(line[i + 2:i + 4], 16))
                i += 4
            else:
                raise ValueError(f"unknown escape in systemd's dump: {line[i:i + 4]!r}")
        words.append(bytes(out).decode("utf-8", "surrogateescape"))
        i += 1
    return words


def expected_dump(argv: Sequence[str]) -> List[str]:
    """What the dump shows for an argv unitgen meant: "$" is still "$$" there
    (systemd turns "$$" into "$" when it expands variables, at exec time)."""
    return [a.replace("$", "$$") for a in argv]


def write_units(directory: Path, units: Dict[str, str]) -> List[Path]:
    paths = []
    for name, text in units.items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
