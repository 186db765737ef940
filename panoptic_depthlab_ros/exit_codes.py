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
from collections.abc import Callable

from .errors import NothingDoneError, PanopticDepthLabError
from .interrupt import Terminated, raise_on_sigterm

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


def run_command(prog: str, func: Callable[[], int], *, expected: tuple[type[Exception], ...] = ()) -> int:
    """``func()``'s exit code; an expected failure prints ``<prog>: error: <what>`` and gives 2.

    Expected: this package's errors, ``OSError`` (a path that cannot be read or written),
    anything in ``expected``; Ctrl-C outside a loop that handles it gives 130, SIGTERM 143.
    """
    known: tuple[type[Exception], ...] = (PanopticDepthLabError, *expected)
    try:
        with raise_on_sigterm():
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
