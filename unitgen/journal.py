"""What this host's journal says of units: restarts and a service's last lines.

Read with ``journalctl -o json`` and systemd's structured fields, never its
wording: a restart is an entry with MESSAGE_ID=5eb03494b6584870a536b337290809b3
("Scheduled restart job", SD_MESSAGE_UNIT_RESTART_SCHEDULED) and UNIT=the unit;
a service's own output is the entries with _SYSTEMD_UNIT=the unit. There is no
D-Bus API for the journal, so this is the one place unitgen runs journalctl.

Only the local journal is read: a caller talking to systemd on another bus
(``--bus-address``) must not ask (``readable()`` says whether to). Every
failure (no journalctl, no permission, a damaged entry) means "nothing known",
never an error: the journal only adds detail to what D-Bus said.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from .errors import one_line

RESTART_SCHEDULED = "5eb03494b6584870a536b337290809b3"
TIMEOUT = 10.0
# Groups whose members may read the whole system journal (systemd-journald(8)).
READER_GROUPS = ("systemd-journal", "adm", "wheel")


def readable() -> bool:
    """Whether this process may read the system journal: as root or in a reader group."""
    if shutil.which("journalctl") is None:
        return False
    if os.geteuid() == 0:
        return True
    import grp

    gids = set()
    for name in READER_GROUPS:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    return bool(gids & set(os.getgroups()))


def restarts_since(units: Sequence[str], since: float) -> Optional[Dict[str, int]]:
    """Restarts systemd scheduled for each of ``units`` since ``since`` (seconds
    since the epoch), this boot; None if the journal cannot be read."""
    entries = _entries(["-b", f"--since=@{int(since)}", f"MESSAGE_ID={RESTART_SCHEDULED}"])
    if entries is None:
        return None
    wanted = set(units)
    counts = {unit: 0 for unit in units}
    for entry in entries:
        unit = entry.get("UNIT")
        if unit in wanted:
            counts[unit] += 1
    return counts


def last_lines(unit: str, count: int = 3) -> List[str]:
    """The last ``count`` lines the unit's own processes logged this boot, one line each."""
    entries = _entries(["-b", "-n", str(count), f"_SYSTEMD_UNIT={unit}"])
    lines = []
    for entry in entries or []:
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald's form for a message that is not UTF-8
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
        if isinstance(message, str) and message.strip():
            lines.append(one_line(message.strip()))
    return lines[-count:]


def _entries(args: List[str]) -> Optional[List[Dict[str, Any]]]:
    try:
        done = subprocess.run(["journalctl", "--no-pager", "-q", "-o", "json", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    entries = []
    for line in done.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
