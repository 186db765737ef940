"""Where ``synth`` writes, by the package's output rules (``panoptic_depthlab_ros.output``).

A frame dataset is its four top-level folders (``leftImg8bit/``, ``gtFine/``,
``disparity/``, ``camera/``); a set of drives is one split's ``video_sequence/<split>/``,
so that the other split can be rendered beside it by a second run. Each is rendered into
a staging folder and moved into place whole at the end: a failed or interrupted run
leaves the previous dataset as it was, and a re-run with fewer frames leaves none of the
old ones behind. An existing folder is replaced only with ``--overwrite`` and only when
its marker (``panoptic_depthlab.json``: seed, sizes, counts) says ``synth`` wrote it;
the datasets' readers look for their own file names and pass the marker by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from panoptic_depthlab_ros.output import StagedOutput, marker_says, write_marker

from ..video_dataset import video_dir

WRITTEN_BY = "panoptic-depthlab-training synth"
FRAME_FOLDERS = ("leftImg8bit", "gtFine", "disparity", "camera")


def _ours(path: Path) -> str | None:
    return marker_says(path, WRITTEN_BY)


def dataset_output(out: Path, *, overwrite: bool) -> StagedOutput:
    """The four folders of a frame dataset at ``out``, checked before anything is rendered."""
    return StagedOutput(Path(out), list(FRAME_FOLDERS), what=WRITTEN_BY, overwrite=overwrite, why_not_ours=_ours)


def sequences_output(out: Path, split: str, *, overwrite: bool) -> StagedOutput:
    """``out/video_sequence/<split>``, checked before anything is rendered."""
    return StagedOutput.at(video_dir(out, split), what=WRITTEN_BY, overwrite=overwrite, why_not_ours=_ours)


def mark(folder: Path, **details: Any) -> None:
    """Mark a rendered folder (created when the run rendered nothing into it) as ``synth``'s."""
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, WRITTEN_BY, **details)
