"""Paced release (accepts:) against a thundering herd, side by side.

    python3 bench/paced.py [--rate PER_SECOND]

tests/paceddrill.py's fleet, twice, each on fresh bed hosts: a real
PostgreSQL 15 on h1 (max_connections 10) and 16 stand-in clients on h2 and h3
that open 2 connections each at start (held 2 s) and crash if one is refused.
The clients start while the database is down; then it starts. Printed for
both runs: the most client backends PostgreSQL served at once (sampled from
h1's process table as often as the bed answers, so a lower bound), the
clients' restarts (systemd's NRestarts), and the time from the database's
start to the last client up; with the slots' span (the floor pacing sets:
the last client's slot, (clients - 1) / rate) and the ratio of the two
recoveries. Prints figures, asserts nothing. Needs root; see DEVELOPERS.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import bed  # noqa: E402
import paceddrill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1.0, help="accepts: RATE/s in the paced run (default 1)")
    args = parser.parse_args()
    rows = []
    for label, accepts in (("no accepts:", None), (f"accepts: {args.rate:g}/s", f"{args.rate:g}/s")):
        with bed.Fleet(["h1", "h2", "h3"]) as fleet:
            restarts, peak, recovered = paceddrill.herd(fleet, accepts)
        rows.append((label, peak, sum(restarts.values()), sum(1 for n in restarts.values() if n), recovered))
    print(f"{paceddrill.CLIENTS} clients x {paceddrill.BURST} connections, "
          f"max_connections {paceddrill.MAX_CONNECTIONS}; slots span {(paceddrill.CLIENTS - 1) / args.rate:.1f} s "
          f"at {args.rate:g}/s")
    print(f"{'run':<16} {'peak backends':>13} {'restarts':>9} {'clients restarted':>18} {'full recovery':>14}")
    for label, peak, total, clients, recovered in rows:
        print(f"{label:<16} {peak:>13} {total:>9} {clients:>18} {recovered:>12.1f} s")
    print(f"recovery, paced / unpaced: {rows[1][4] / rows[0][4]:.2f}")


if __name__ == "__main__":
    main()
