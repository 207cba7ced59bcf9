"""How long-running commands (status --watch, board --watch, board --serve) take Ctrl-C.

SIGINT ends them even when it was inherited ignored, as watch(1) takes it: a
job that a script starts with ``&`` (no job control) gets SIGINT ignored,
Python keeps the ignore, and neither KeyboardInterrupt nor asyncio.run's own
handler would ever see a Ctrl-C or a ``kill -INT``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, List


@contextmanager
def ctrl_c() -> Iterator[None]:
    """Inside, SIGINT raises KeyboardInterrupt, whatever was inherited (in the
    main thread; elsewhere, where Python lets no handler be set, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_on_interrupt() -> Callable[[], bool]:
    """From now on SIGINT cancels the running task and makes the returned
    function true; call it inside the event loop.

    The loop's own handler wakes it through its wake-up fd, even when the
    signal lands just before it goes to sleep, and the flag ends a loop that
    checks it even when the cancellation is lost: before Python 3.12,
    asyncio.wait_for returns the reply instead of raising CancelledError when
    both arrive together.
    """
    task = asyncio.current_task()
    assert task is not None, "call it inside the event loop"
    cancel = task.cancel
    seen: List[bool] = []

    def on_sigint() -> None:
        seen.append(True)
        cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
    return lambda: bool(seen)
