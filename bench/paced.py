"""Paced release (accepts:) against a thundering herd after a full power cut, side by side.

    python3 bench/paced.py [--rate PER_SECOND] [--runs N]

tests/paceddrill.py's fleet, each run on fresh bed hosts: a real PostgreSQL 15
on h1 (max_connections 40) and 100 stand-in clients on h2, h3 and h4 (a sh
script each) that open 2 connections at once with psql at their start (held
1 s) and crash if one is refused. The fleet is brought up, the power of all
four hosts is cut, and they all boot again. Without accepts: and with
accepts: RATE/s, interleaved N times. Printed for each: the most backends
PostgreSQL had at once (replayed from its own log, log_connections and
log_disconnections, in the order it wrote them; it frees a backend's slot just
before it logs the disconnection, so this can exceed the true figure by the
exits in flight), the connections it refused for too many clients (SQLSTATE
53300 in its log), the clients' restarts (systemd's NRestarts) and how many
clients were restarted, and the time to full recovery (the last client's first
successful burst) from PostgreSQL's readiness (ready.service active) and from
the power's return; with the slots' span (the last client's slot,
(clients - 1) / rate: the floor pacing sets) and the ratio of the two
recoveries. With N > 1: min / median / max of each. Prints figures, asserts
nothing. Needs root; see DEVELOPERS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import bed  # noqa: E402
import paceddrill  # noqa: E402

COLUMNS = (("peak backends", "{:.0f}"), ("refused 53300", "{:.0f}"), ("restarts", "{:.0f}"),
           ("clients restarted", "{:.0f}"), ("db ready -> all up", "{:.1f} s"), ("power -> all up", "{:.1f} s"))


def measure(accepts):
    with bed.Fleet(list(paceddrill.HOSTS)) as fleet:
        run = paceddrill.herd(fleet, accepts)
    return (run.backends.peak, run.backends.too_many, sum(run.restarts.values()),
            sum(1 for n in run.restarts.values() if n), run.from_db, run.from_power)


def spread(values, form):
    if len(values) == 1:
        return form.format(values[0])
    return "/".join(form.format(v).replace(" s", "") for v in (min(values), statistics.median(values), max(values))) \
        + (" s" if form.endswith(" s") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=float(paceddrill.RATE.split("/")[0]),
                        help=f"accepts: RATE/s in the paced run (default {paceddrill.RATE})")
    parser.add_argument("--runs", type=int, default=1, help="pairs of runs, interleaved (default 1)")
    args = parser.parse_args()
    runs = (("no accepts:", None), (f"accepts: {args.rate:g}/s", f"{args.rate:g}/s"))
    results = {label: [] for label, _ in runs}
    for _ in range(args.runs):
        for label, accepts in runs:
            results[label].append(measure(accepts))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {paceddrill.CLIENTS} clients on "
          f"{', '.join(paceddrill.CLIENT_HOSTS)} x {paceddrill.BURST} connections (held {paceddrill.HOLD} s), "
          f"max_connections {paceddrill.MAX_CONNECTIONS}, after a power cut of every host; "
          f"slots span {(paceddrill.CLIENTS - 1) / args.rate:.2f} s at {args.rate:g}/s; "
          f"{args.runs} run(s) each" + (", min/median/max" if args.runs > 1 else ""))
    widths = [max(len(name), 14) for name, _ in COLUMNS]
    print(f"{'run':<16}" + "".join(f" {name:>{w}}" for (name, _), w in zip(COLUMNS, widths)))
    for label, rows in results.items():
        cells = [spread([row[i] for row in rows], form) for i, (_, form) in enumerate(COLUMNS)]
        print(f"{label:<16}" + "".join(f" {cell:>{w}}" for cell, w in zip(cells, widths)))
    unpaced, paced = (statistics.median(row[4] for row in results[label]) for label, _ in runs)
    span = (paceddrill.CLIENTS - 1) / args.rate
    print(f"full recovery from db ready (medians): paced / unpaced {paced / unpaced:.2f}, "
          f"paced / slots' span {paced / span:.2f}")


if __name__ == "__main__":
    main()
