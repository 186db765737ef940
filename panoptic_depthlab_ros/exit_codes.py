"""Exit codes, the same for every command of ``panoptic-depthlab`` and ``panoptic-depthlab-training``.

* 0: all done;
* 1: done, with input skipped or salvaged (each named on stderr), or a check that found problems;
* 2: nothing done: a bad argument, file or output path (one line names it); a previous output is unchanged;
* 128 + N: ended by signal N (130 Ctrl-C, 143 SIGTERM); what was done until then is complete and kept.

:func:`run_command` turns every failure a user can cause into one line and a code: never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .errors import NothingDoneError, PanopticDepthLabError

DONE = 0
PARTIAL = 1
NOTHING = 2


def interrupted(signum: int) -> int:
    """The exit code of a run ended by signal ``signum``."""
    return 128 + signum


def outcome(prog: str, *, skipped: list[str], partial: bool, interrupted_by: int | None, ended: str) -> int:
    """A run's exit code, after naming every skipped input (stderr) and, if a signal ended it, ``ended``."""
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if interrupted_by is not None:
        print(f"{prog}: {signal.Signals(interrupted_by).name}: {ended}", file=sys.stderr)
        return interrupted(interrupted_by)
    return PARTIAL if partial or skipped else DONE


def describe_os_error(exc: OSError) -> str:
    """``<file>: <reason>`` (an OSError's own text is ``[Errno 13] Permission denied: '<file>'``)."""
    if exc.filename is not None and exc.strerror:
        other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{other}: {exc.strerror}"
    return str(exc)


class Terminated(BaseException):
    """SIGTERM outside a loop that handles it, raised as Ctrl-C raises KeyboardInterrupt.

    Every ``with`` and ``finally`` on the way out runs (a staging folder is removed, worker
    processes are stopped) instead of the process vanishing mid-write.
    """


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within: the first SIGTERM raises :class:`Terminated` in the main thread; a second acts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handle(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        raise Terminated

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(prog: str, func: Callable[[], int], *, expected: tuple[type[Exception], ...] = ()) -> int:
    """``func()``'s exit code; an expected failure prints ``<prog>: error: <what>`` and gives 2.

    Expected: this package's errors, ``OSError`` (a path that cannot be read or written),
    anything in ``expected``; Ctrl-C outside a loop that handles it gives 130, SIGTERM 143.
    """
    known: tuple[type[Exception], ...] = (PanopticDepthLabError, *expected)
    try:
        with _sigterm_raises():
            return int(func())
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return interrupted(signal.SIGINT)
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
        return interrupted(signal.SIGTERM)
    except known as exc:
        for line in exc.skipped if isinstance(exc, NothingDoneError) else []:
            print(f"skipped: {line}", file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return NOTHING
    except OSError as exc:
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return NOTHING
