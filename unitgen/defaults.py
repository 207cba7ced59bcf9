"""One source for each of unitgen's defaults, in seconds unless said.

Imports nothing, so that every module (the model, the CLI, the watcher, the
generator) can read it at no cost. The CLI's option defaults, the model's
field defaults and the ``default`` keywords of schema.json are these values;
tests/test_defaults.py holds all three equal to them.

The probe's per-attempt timeout is not here: the probe (probes/unitgen_probe)
is standard library only and never imports unitgen, so its own constant,
``unitgen_probe.DEFAULT_TIMEOUT``, is the one source, and unitgen reads it
from the probe (model.ProbeSettings), never the reverse.
"""

#: probe.deadline: how long a unit's probe waits before the unit fails (and
#: Restart= tries again).
PROBE_DEADLINE = 60.0
#: restart_sec: RestartSec= of every service unit.
RESTART_SEC = 3.0
#: loss_threshold: a remote dependency is lost (unitgen watch) after this many
#: failed checks in a row, failing for at least this long.
LOSS_FAILURES = 3
LOSS_SECONDS = 10.0
#: unitgen watch --interval: how often each watched dependency is checked.
WATCH_INTERVAL = 2.0
#: unitgen watch --restart-interval: a service is restarted at most once per this.
RESTART_INTERVAL = 60.0
#: unitgen plan --start-time: start-to-ready time assumed without start_time:.
START_TIME = 1.0
#: unitgen apply --wait: how long apply waits for its jobs: long enough for a
#: service whose dependencies are up (the probe answers within seconds, local
#: dependencies start first), short enough that a dependency that is down does
#: not hold the terminal for the probe's whole deadline. Past it, a start job
#: still running is reported as waiting and systemd goes on with it.
APPLY_WAIT = 30.0
#: unitgen apply --settle: how long a unit that came up is watched; a main
#: process that ends, or that systemd restarts, within it is a failure.
APPLY_SETTLE = 5.0
#: unitgen status --watch --interval: time between refreshes.
STATUS_INTERVAL = 2.0
#: unitgen board: --interval between refreshes with --watch, --timeout of each
#: check, --in-flight checks at once at most.
BOARD_INTERVAL = 1.0
BOARD_TIMEOUT = 1.0
BOARD_IN_FLIGHT = 256
#: deps: - {…, optional: true}: how long the probe waits for an optional
#: dependency before the service starts without it (wait_at_most:). Half the
#: probe's deadline: room for the required ones to answer after it.
OPTIONAL_WAIT = 30.0
