"""Shared pytest fixtures.

``make_fleet(names)`` boots nothing by itself: it gives a ``bed.Fleet`` of
real systemd hosts (see tests/bed.py and DEVELOPERS.md), closed after the
test whatever happened. Where this machine cannot boot such hosts the test
skips with a one-line reason; set UNITGEN_REQUIRE_BED=1 (CI must) to make
that a failure instead, so the bed tests can never silently stop running.

Markers (pyproject.toml): every test that uses ``make_fleet`` is marked
``bed`` here, so ``-m "not bed"`` runs what needs no systemd host; ``bench``
tests repeat a measurement for seconds and are left out of the default run
(``-m bench`` runs them; .ci/run does).
"""

import os

import pytest

import bed


def bed_available() -> None:
    """Skip (or, with UNITGEN_REQUIRE_BED=1, fail) the test if no host can boot here."""
    reason = bed.unavailable_reason()
    if reason is None:
        return
    if os.environ.get("UNITGEN_REQUIRE_BED") == "1":
        pytest.fail(f"UNITGEN_REQUIRE_BED=1 but {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "make_fleet" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.bed)


@pytest.fixture
def open_dir():
    """A scratch directory every user can search (pytest's own is mode 700)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="unitgen-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def make_fleet():
    """Factory: ``make_fleet(["h1", "h2"])`` -> a bed.Fleet, torn down after the test."""
    bed_available()
    fleets = []

    def make(names, **options):
        fleet = bed.Fleet(names, **options)
        fleets.append(fleet)
        return fleet

    yield make
    errors = []
    for fleet in reversed(fleets):
        try:
            fleet.close()
        except bed.BedError as error:
            errors.append(error)
    if errors:
        raise errors[0]
