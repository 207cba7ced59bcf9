"""unitgen-probe: wait until a service's dependencies answer.

Standard library only, and independent of unitgen, which uses this API::

    from unitgen_probe import Target, Result, format_argv, parse_argv, check, UsageError

- `Target` (kind, spec, name=None, status=None, body=None, ca_file=None,
  insecure=False, timeout=None): one dependency; immutable, validated on
  construction (`UsageError` for a malformed spec or option); ``.label``.
- `format_argv` (targets, *, deadline=None, timeout=None, any_=False): the
  canonical argv, after the program name, of a probe waiting for *targets*.
- `parse_argv` (argv) -> `Invocation` (``.targets`` and the global options);
  ``parse_argv(format_argv(ts)).targets == tuple(ts)``.
- `check` (target, timeout=None) -> `Result` (ok, reason, latency): one
  blocking attempt, bounded by the timeout; never raises for a failure.
"""

from .argv import Invocation, format_argv, parse_argv
from .checks import Result, check
from .targets import DEFAULT_TIMEOUT, KINDS, Target, UsageError

__all__ = ["DEFAULT_TIMEOUT", "KINDS", "Invocation", "Result", "Target", "UsageError",
           "check", "format_argv", "parse_argv"]
