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
