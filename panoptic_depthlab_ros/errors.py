"""The package's one domain exception family; library errors are wrapped in these."""

from __future__ import annotations


class PanopticDepthLabError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(PanopticDepthLabError, ValueError):
    """A weights file that cannot be used: missing, corrupt, unsafe or mismatched.

    ``path`` names the file; ``keys`` lists the offending state-dict keys, if any.
    """

    def __init__(self, path: object, reason: str, keys: list[str] | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.keys = list(keys or [])
        shown = ""
        if self.keys:
            head = ", ".join(self.keys[:20])
            more = f" (+{len(self.keys) - 20} more)" if len(self.keys) > 20 else ""
            shown = f": {head}{more}"
        super().__init__(f"{self.path}: {reason}{shown}")


class InputError(PanopticDepthLabError, ValueError):
    """An image (or camera model) the predictor cannot take, with the reason.

    ``kind`` names the class of problem (``too_large``, ``decode``, ...) so that
    callers can count and throttle per kind rather than per message.  ``index``: which
    image of a batch it is about (``Predictor.predict_batch``), so the caller can drop
    that one and run the others.
    """

    def __init__(self, reason: str, *, kind: str = "input", index: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.index = index


class BagError(PanopticDepthLabError):
    """A bag that cannot be replayed or salvaged as asked (names the bag and the reason)."""


class OutputError(PanopticDepthLabError):
    """An output path that cannot be written as asked (names the path and the reason)."""


class NothingDoneError(PanopticDepthLabError):
    """A run that could use none of its input: nothing was written, a previous output is kept.

    ``skipped`` names each input left out and why, for the user to see them all.
    """

    def __init__(self, message: str, skipped: list[str] | None = None) -> None:
        super().__init__(message)
        self.skipped = list(skipped or [])
