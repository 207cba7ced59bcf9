"""One way to run the unitgen command in-process, on every supported click."""

from __future__ import annotations

from click.testing import CliRunner


def cli_runner() -> CliRunner:
    """A CliRunner that keeps stderr apart from stdout. click 8.2 always does
    and dropped ``mix_stderr``; click 8.0 and 8.1 (what Python 3.9 gets) mix
    them unless told not to."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def with_sigint(disposition: str, argv: list) -> list:
    """``argv`` run with SIGINT at its default ("default": a terminal's foreground
    job) or ignored ("ignored": what a script's ``cmd &`` starts, with no job
    control), whatever this process has: pytest may itself run as such a job,
    and a shell's ``trap - INT`` cannot undo an ignore it inherited."""
    import sys

    action = {"default": "SIG_DFL", "ignored": "SIG_IGN"}[disposition]
    code = f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{action}); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", code, *argv]
