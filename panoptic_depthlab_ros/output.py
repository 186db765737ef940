"""Outputs that never cost what was there before.

A tool writes its output into a hidden staging folder beside the target (same
directory, so the final move is a rename on one filesystem) and moves it into place
only when the run has ended: a run that fails, or is killed, leaves the previous
output exactly as it was.  An existing output is replaced only when asked
(``--overwrite``) and only when this package wrote it; never the working directory
or a folder holding it, and never a path that is or holds an input.  An empty folder
holds nothing to lose and is always replaced.

Directory outputs carry a marker file (:data:`MARKER`, what wrote them and from
what); bags carry the same in their ``metadata.yaml`` (see :mod:`.bag`); files say
it in their own metadata (checkpoint header, export description).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import OutputError

MARKER = "panoptic_depthlab.json"
STAGING_SUFFIX = ".partial"

# Why an existing path may not be replaced: None when this package wrote it, else the reason.
WhyNotOurs = Callable[[Path], "str | None"]


def write_marker(folder: Path, tool: str, **details: Any) -> None:
    """Mark ``folder`` as written by ``tool`` (``panoptic-depthlab infer``, ...), with what it was given."""
    (folder / MARKER).write_text(json.dumps({"written_by": tool, **details}, indent=1, default=str) + "\n")


def written_by_says(document: Path, tool: str) -> str | None:
    """None when JSON file ``document`` says ``"written_by": tool``; else why it does not."""
    try:
        doc = json.loads(document.read_text())
    except FileNotFoundError:
        return f"there is no {document.name}"
    except (OSError, ValueError) as exc:
        return f"{document.name} is unreadable ({exc})"
    if not isinstance(doc, dict) or doc.get("written_by") != tool:
        return f"{document.name} does not say written_by: {tool}"
    return None


def marker_says(folder: Path, tool: str) -> str | None:
    """None when ``folder``'s marker names ``tool``; else why ``folder`` is not ``tool``'s output."""
    return written_by_says(folder / MARKER, tool) if folder.is_dir() else "it is not a folder"


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class StagedOutput:
    """The entries ``names`` of folder ``parent``, written aside and moved in place at the end.

    Constructing it checks every rule (so a command can refuse before loading a model);
    ``with`` creates the staging folder and yields it: write each entry ``name`` into it.
    Leaving the block normally moves the entries into ``parent`` (replacing the previous
    ones); leaving it by an exception discards the staging folder and keeps the previous
    output.

    Args:
        parent: the folder the entries go in (created when missing).
        names: the entries the run writes (a bag or results folder, a model file and its sidecar, ...).
        what: the tool, for messages (``panoptic-depthlab bag``).
        overwrite: whether an existing entry may be replaced (when ``why_not_ours`` allows).
        why_not_ours: None for an existing entry this package wrote, else the reason it is not ours.
        inputs: paths an entry must neither be nor hold.
        containers: folders an entry must not be inside (an input bag).
    """

    def __init__(
        self,
        parent: Path,
        names: Sequence[str],
        *,
        what: str,
        overwrite: bool,
        why_not_ours: WhyNotOurs,
        inputs: Sequence[Path] = (),
        containers: Sequence[Path] = (),
    ) -> None:
        self.parent = Path(parent)
        self.names = list(names)
        self.what = what
        self.overwrite = overwrite
        self.why_not_ours = why_not_ours
        self.targets = [self.parent / n for n in self.names]
        self._root: Path | None = None
        self.check(inputs=inputs, containers=containers)

    @classmethod
    def at(
        cls,
        path: str | Path,
        *,
        what: str,
        overwrite: bool,
        why_not_ours: WhyNotOurs,
        inputs: Sequence[Path] = (),
        containers: Sequence[Path] = (),
    ) -> StagedOutput:
        """The single entry ``path`` (a file or folder) in its parent folder."""
        path = Path(path)
        return cls(
            path.parent,
            [path.name],
            what=what,
            overwrite=overwrite,
            why_not_ours=why_not_ours,
            inputs=inputs,
            containers=containers,
        )

    # ------------------------------------------------------------------ rules
    def check(self, *, inputs: Sequence[Path] = (), containers: Sequence[Path] = ()) -> None:
        """Raise :class:`OutputError` unless every entry may be written (see the module docstring)."""
        cwd = Path.cwd().resolve()
        for target in self.targets:
            real = target.resolve()
            if real == cwd or real in cwd.parents:
                raise OutputError(f"{target}: is the working directory or holds it; it is not replaced")
            for item in map(Path, inputs):
                source = item.resolve()
                if source == real or real in source.parents:
                    raise OutputError(f"{target}: is or holds the input {item}; choose another output")
            for item in map(Path, containers):
                if item.resolve() in real.parents:
                    raise OutputError(f"{target}: is inside the input {item}; choose another output")
            self._check_existing(target)
        self._check_writable()

    def _check_existing(self, target: Path) -> None:
        if not (target.exists() or target.is_symlink()) or _is_empty_dir(target):
            return
        if target.is_symlink():
            raise OutputError(f"{target}: is a symbolic link; give the path it points to, or another output")
        if not self.overwrite:
            raise OutputError(f"{target} exists; pass --overwrite to replace it")
        reason = self.why_not_ours(target)
        if reason is not None:
            raise OutputError(
                f"{target} exists and was not written by {self.what} ({reason}); it is left as it is:"
                " choose another output, or move it away yourself"
            )

    def _check_writable(self) -> None:
        """The nearest existing folder on the way to ``parent`` must be a folder we can write in."""
        base = _nearest_existing(self.parent)
        if not base.is_dir():
            raise OutputError(f"{self.targets[0]}: cannot be created: {base} is a file, not a folder")
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".pdl-write-test-", dir=base))
        except OSError as exc:
            raise OutputError(f"{self.targets[0]}: cannot write in {base} ({exc.strerror})") from exc

    # ------------------------------------------------------------ the run
    def __enter__(self) -> Path:
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix=f".{self.names[0]}.", suffix=STAGING_SUFFIX, dir=self.parent))
        except OSError as exc:
            raise OutputError(f"{self.targets[0]}: cannot write in {self.parent} ({exc.strerror})") from exc
        staging = self._root / "new"
        staging.mkdir()
        return staging

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._root is not None
        if kind is None:
            self._commit(self._root)
        else:
            shutil.rmtree(self._root, ignore_errors=True)  # only what this run wrote

    def _commit(self, root: Path) -> None:
        """Move each written entry into place; a previous one goes to the staging folder, then away."""
        staging, previous = root / "new", root / "previous"
        previous.mkdir()
        try:
            for name, target in zip(self.names, self.targets, strict=True):
                new = staging / name
                if not (new.exists() or new.is_symlink()):
                    continue  # not written by this run: whatever is there stays
                self._check_existing(target)  # again: something may have appeared meanwhile
                if target.exists():
                    os.rename(target, previous / name)
                os.rename(new, target)
        except (OSError, OutputError) as exc:
            raise OutputError(
                f"{self.targets[0]}: could not move the output into place ({exc}); it is in {root}"
            ) from exc
        shutil.rmtree(root, ignore_errors=True)


def check_output_dir(out: Path, *, what: str, overwrite: bool, inputs: Sequence[Path] = ()) -> StagedOutput:
    """A results folder ``out`` written whole by ``what`` (marked with :data:`MARKER`)."""
    return StagedOutput.at(
        out, what=what, overwrite=overwrite, why_not_ours=lambda path: marker_says(path, what), inputs=inputs
    )
