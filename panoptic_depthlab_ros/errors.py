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
    """An image (or camera model) the predictor cannot take, with the reason."""


class BagError(PanopticDepthLabError):
    """A bag that cannot be replayed or salvaged as asked (names the bag and the reason)."""
