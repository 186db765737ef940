"""SIGINT and SIGTERM end a long run the way the end of its input does.

Inside :func:`stop_on_signals` the first SIGINT (Ctrl-C) or SIGTERM (``kill``, a job
scheduler, ``docker stop``) only raises a flag; the run checks it between frames,
stops taking new ones and finishes its output as at the end of the input.  A second
signal acts at once as usual (KeyboardInterrupt, or termination): a run then keeps
nothing new, and the previous output stays (see :mod:`.output`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Callable flag: ``stop()`` is True once a signal asked the run to end; ``signum`` says which."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:  # noqa: D102
        return self.signum is not None

    @property
    def name(self) -> str:
        """``SIGINT`` / ``SIGTERM`` (empty while no signal came)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn the first SIGINT / SIGTERM into a :class:`StopRequest` (main thread only; elsewhere a no-op)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in SIGNALS}

    def handle(signum: int, _frame: FrameType | None) -> None:
        request.signum = signum
        for s, handler in previous.items():  # a second signal acts at once
            signal.signal(s, handler)

    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
