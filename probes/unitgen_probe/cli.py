"""The ``unitgen-probe`` command: parse, wait, exit.

Exit status: 0 ready; 1 deadline passed (``--once``: a target failed); 2
usage or configuration error; 128+N stopped by signal N.
"""

import _signal  # signal's C core: see wait.py
import sys
from time import monotonic

from .argv import HELP, PROG, parse_argv
from .frame import kill_running
from .notify import Notifier
from .report import Reporter
from .targets import UsageError
from .wait import Interrupted, Waiter

_SIGNAL_NAMES = {_signal.SIGTERM: "SIGTERM", _signal.SIGINT: "SIGINT"}


def main(argv=None):
    """Run the probe with *argv* (default: ``sys.argv[1:]``); return the exit status."""
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # SIGINT before the wait loop took over signals
        return 128 + _signal.SIGINT


def _run(args):
    try:
        inv = parse_argv(args)
    except UsageError as error:
        sys.stderr.write(f"{PROG}: error: {error}\nTry '{PROG} --help'.\n")
        return 2
    if inv.help:
        sys.stdout.write(HELP)
        return 0
    if inv.version:
        sys.stdout.write(f"{PROG} {_version()}\n")
        return 0
    reporter = Reporter(inv, Notifier.from_environment())
    try:
        return 0 if Waiter(inv, reporter).run() else 1
    except OSError as error:  # the wait loop's own pipe: no file descriptor left
        sys.stderr.write(f"{PROG}: cannot wait: {error.strerror}\n")
        return 1
    except Interrupted as stop:
        kill_running()  # exec commands and body matchers in flight
        reporter.stopped(_SIGNAL_NAMES.get(stop.signum, f"signal {stop.signum}"), monotonic())
        return 128 + stop.signum


def _version():
    """The version of the distribution the probe ships in (unitgen's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unitgen")
    except PackageNotFoundError:
        return "unknown (not installed)"
