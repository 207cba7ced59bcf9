"""An Ansible controller for the tests: ansible-core from this test environment
(the test extra), the example's ansible.cfg (examples/ansible/ansible.cfg: the
collection in this checkout, pipelining, no facts), a clean environment.

Used by tests/test_ansible.py (no host) and tests/test_ansible_bed.py (three
systemd hosts over SSH, the controller on the bed's bridge).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "ansible_collections" / "unitgen" / "fleet"
EXAMPLE = ROOT / "examples" / "ansible"
BIN = Path(sys.executable).parent  # ansible-playbook, ansible-doc, ansible-galaxy and unitgen (the controller's)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unavailable() -> str:
    """Why ansible-core cannot run here, or ""."""
    try:
        import ansible  # noqa: F401
    except ImportError:
        return "ansible-core is not installed (the test extra: pip install -e '.[test]')"
    if not (BIN / "ansible-playbook").exists():
        return f"ansible-playbook is not in {BIN}"
    return ""


def environment(work: Path, **extra: str) -> Dict[str, str]:
    """A clean environment for ansible commands: the example's config, state under ``work``."""
    env = {
        "PATH": f"{BIN}:{SYSTEM_PATH}",
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "ANSIBLE_CONFIG": str(EXAMPLE / "ansible.cfg"),
        "ANSIBLE_HOME": str(work / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",  # results as JSON: a long message is never wrapped
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOG_PATH": str(work / "ansible.log"),  # timestamped, for a failure's post-mortem
    }
    env.update(extra)
    return env


def env_argv(env: Dict[str, str], argv: Sequence[str]) -> List[str]:
    """argv run with exactly ``env`` (for fleet.run_on_bridge, which has no env of its own)."""
    return ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]


_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def recap(output: str) -> Dict[str, Dict[str, int]]:
    """The PLAY RECAP's counts per host: {host: {ok, changed, unreachable, failed}}."""
    return {m.group(1): dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:])))
            for m in _RECAP.finditer(output)}


REPORT_PLAY = """\
# after the example playbook: each host's unitgen_apply result, as JSON, on the controller
- name: Report
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the result
      ansible.builtin.copy:
        content: "{{ unitgen_applied | default({}) | to_json }}"
        dest: "{{ report_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
      changed_when: false
"""


def write_report_play(work: Path) -> Path:
    path = work / "report.yml"
    path.write_text(REPORT_PLAY)
    return path

