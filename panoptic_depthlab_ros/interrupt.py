"""SIGINT and SIGTERM end a long run the way the end of its input does.

Inside :func:`stop_on_signals` the first SIGINT (Ctrl-C) or SIGTERM (``kill``, a job
scheduler, ``docker stop``) only raises a flag; the run checks it between frames,
stops taking new ones and finishes its output as at the end of the input.  A second
signal acts at once as usual (KeyboardInterrupt, or termination): a run then keeps
nothing new, and the previous output stays (see :mod:`.output`).  Elsewhere in a
command, :func:`raise_on_sigterm` makes SIGTERM raise :class:`Terminated` as Ctrl-C
raises KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
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


class Terminated(BaseException):
    """SIGTERM outside a loop that handles it, raised as Ctrl-C raises KeyboardInterrupt.

    Every ``with`` and ``finally`` on the way out runs (a staging folder is removed, worker
    processes are stopped) instead of the process vanishing mid-write.
    """


@contextmanager
def _signals_handled(signals: tuple[int, ...], on_signal: Callable[[int], None]) -> Iterator[None]:
    """Within: the first of ``signals`` puts every previous handler back, then calls ``on_signal``.

    So a second signal acts as it did before. Main thread only (elsewhere nothing changes).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in signals}

    def handle(signum: int, _frame: FrameType | None) -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        on_signal(signum)

    for s in signals:
        signal.signal(s, handle)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn the first SIGINT / SIGTERM into a :class:`StopRequest` (main thread only; elsewhere a no-op)."""
    request = StopRequest()

    def stop(signum: int) -> None:
        request.signum = signum

    with _signals_handled(SIGNALS, stop):
        yield request


@contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within: the first SIGTERM raises :class:`Terminated` in the main thread; a second acts at once."""

    def terminate(_signum: int) -> None:
        raise Terminated

    with _signals_handled((signal.SIGTERM,), terminate):
        yield
