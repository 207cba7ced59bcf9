"""The exec check: a shell command exits 0 within its own timeout.

The command runs as ``/bin/sh -c COMMAND`` in a session of its own, so that
on timeout (or when the probe is stopped) its whole process group can be
killed: a probe must not leave a hung ``curl`` behind at every attempt.
"""

import os
import select
import signal
import subprocess

from .frame import Failed, adopt, children, kill_group, spawning
from .targets import printable

#: How much of the command's output is kept; its last line explains a failure.
TAIL = 4096
#: How often a running command is checked for having exited while its
#: output stays open (a background child may hold the pipe).
_POLL = 0.05


def check_exec(target, budget):
    """exec COMMAND: ``/bin/sh -c COMMAND`` exits 0 before *budget* runs out."""
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)  # the command must not speak for the unit
    with spawning:  # the probe cannot stop between the start and the adoption
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", target.address], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            raise Failed(f"cannot run /bin/sh: {error.strerror}") from None
        adopt(proc.pid)  # its session's process group, for frame.kill_running()
    try:
        tail, status = _wait(proc, budget)
    finally:
        children.discard(proc.pid)
        proc.stdout.close()
    if status is None:
        words = f"killed after {budget.seconds:g} s timeout"
    elif status >= 0:
        words = f"exit status {status}"
    else:
        words = f"killed by {_signal_name(-status)}"
    if status == 0:
        return words
    line = _last_line(tail)
    raise Failed(f"{words}: {line}" if line else words)


def _wait(proc, budget):
    """Collect the output's tail until the command exits or time runs out.

    Returns (tail bytes, exit status), the status None when the command was
    killed for running out of time.
    """
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    tail = b""
    while proc.poll() is None:
        left = budget.left()
        if left <= 0:
            _kill_group(proc)
            return tail, None
        if not select.select([fd], [], [], min(left, _POLL))[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:  # output closed: only the exit is left to wait for
            try:
                proc.wait(budget.left())
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return tail, None
            break
        tail = (tail + chunk)[-TAIL:]
    return (tail + _drain(fd))[-TAIL:], proc.returncode


def _drain(fd, reads=16):
    """What is left in the pipe (bounded: a background child may keep writing)."""
    data = b""
    for _ in range(reads):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data = (data + chunk)[-TAIL:]
    return data


def _kill_group(proc):
    kill_group(proc.pid)
    proc.wait()


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(output):
    lines = output.decode("utf-8", "replace").strip().splitlines()
    line = printable(lines[-1].strip()) if lines else ""
    return line if len(line) <= 200 else line[:199] + "…"
