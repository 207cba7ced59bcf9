"""``python -m unitgen_probe.serve`` (or its `main`): run checks on request, as whoever runs it.

unitgen runs as root; a service's checks must not. Its watcher and
``unitgen probe`` start this worker with the service's user, group and
supplementary groups (dropped before exec, as systemd drops them for the
unit's own probe) and hand it the checks one by one, so that whoever can edit
an ``exec:`` script gets that service's user, never root, and a tcp, http,
unix or dns check sees what the service's own probe sees (a unix socket, a CA
file the service may read, or not).

Protocol: one JSON object per line.

- stdin, from unitgen: ``{"id": N, "argv": [...], "timeout": SECONDS or null}``;
  *argv* is `format_argv` of one target. EOF: the worker kills the commands
  in flight and exits 0.
- stdout, to unitgen: ``{"id": N, "ok": BOOL, "reason": TEXT, "latency": SECONDS}``
  when that check ends, in any order; checks run in parallel, each on a
  thread of its own.
- ``--cwd DIR`` (the unit's WorkingDirectory=) is entered after the drop, as
  systemd does, so the service's own permissions decide. Failing that,
  the worker answers ``{"error": TEXT}`` and exits 1.

unitgen reads the answers as untrusted (the service's user can write into
this process): bounded lines, checked types, reasons redacted again.
"""

import _thread  # threading's C core: see wait.py
import json
import os
import sys

from .argv import parse_argv
from .checks import Result, check, check_of
from .frame import kill_running
from .targets import UsageError, printable

_out_lock = _thread.allocate_lock()


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--cwd"] and len(args) == 2:
        try:
            os.chdir(args[1])
        except OSError as error:
            _answer({"error": f"cannot enter the working directory {printable(args[1])}: "
                              f"{error.strerror}"})
            return 1
    elif args:
        sys.stderr.write("usage: python -m unitgen_probe.serve [--cwd DIR]\n")
        return 2
    for line in sys.stdin:
        try:
            request = json.loads(line)
            target, = parse_argv(request["argv"]).targets
            ident, timeout = request["id"], request.get("timeout")
        except (ValueError, KeyError, TypeError) as error:  # UsageError is a ValueError
            words = str(error) if isinstance(error, UsageError) else "malformed request"
            _answer({"id": _id_of(line), "ok": False, "reason": f"not checked: {words}",
                     "latency": 0.0})
            continue
        check_of(target.kind)  # imported on the main thread (see checks.check_of)
        try:
            _thread.start_new_thread(_run, (ident, target, timeout))
        except RuntimeError as error:  # no memory, no threads left: say so, unitgen asks again
            _answer(_result(ident, Result(False, f"cannot start a thread: {error}", 0.0)))
    kill_running()
    return 0


def _run(ident, target, timeout):
    try:
        result = check(target, timeout)
    except BaseException as error:  # MemoryError while reporting one: still an answer
        result = Result(False, f"cannot check: {type(error).__name__}", 0.0)
    _answer(_result(ident, result))


def _result(ident, result):
    return {"id": ident, "ok": result.ok, "reason": result.reason, "latency": result.latency}


def _answer(obj):
    line = json.dumps(obj) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def _id_of(line):
    try:
        return json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
