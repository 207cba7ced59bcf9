"""What hides a generated unit: takeover.py's ``shadowing()``, in a module that
imports only os, since the generator asks it at every run, also when its units
come from the cache (gencache.py) and nothing else of unitgen is imported."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

ADMIN_DIRS = ("/etc/systemd/system", "/run/systemd/system")


def shadowing(name: str, root: str = "/") -> Optional[str]:
    """What in /etc/systemd/system or /run/systemd/system hides a generated unit
    ``name`` (generators' units rank below both), as one phrase; None if nothing."""
    for directory in ADMIN_DIRS:
        path = os.path.join(directory, name)
        full = below(root, path)
        if os.path.islink(full):
            target = os.readlink(full)
            if target == "/dev/null":
                return f"{path} masks it"
            unit = os.path.basename(target)
            if unit != name:
                return f"{path} is an alias of {unit}: systemctl disable {unit}, then systemctl daemon-reload"
            return f"{path} links another {name}: remove it"
        if os.path.exists(full):
            return f"{path} is another unit file of that name: remove it"
    return None


def below(root: str, path: str) -> str:
    """``path`` inside ``root`` (an image being installed into); ``path`` itself for /."""
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path
