"""Procedural street scenes with exact labels and depth, written in the Cityscapes layouts.

One job per module: :mod:`.scene` (what a scene is: primitives, lighting), :mod:`.street`
(composing a random street), :mod:`.render` (the camera: ray casting and shading),
:mod:`.writer` (single frames in the Cityscapes layout, and datasets of them),
:mod:`.drive` (the camera driving among moving things, with their true motion) and
:mod:`.sequences` (drives written as Cityscapes-DVPS video sequences).
"""

from .render import (
    CITYSCAPES_BASELINE,
    CITYSCAPES_FX_2048,
    DEFAULT_MAX_DEPTH,
    NEAR_PLANE,
    SceneGenerator,
    SynthFrame,
    encode_disparity,
)
from .scene import (
    KIND_BOX,
    KIND_CYL_X,
    KIND_CYL_Y,
    KIND_ELLIPSOID,
    KIND_PLANE,
    MAX_INSTANCES_PER_CLASS,
    SKY_ID,
    Footprint,
    Lighting,
    Marking,
    Primitives,
    Scene,
)
from .street import make_street
from .writer import (
    DATASET_FRAME_NUMBER,
    cityscapes_stem,
    color_image,
    dataset_frame,
    frame_polygons,
    generate_dataset,
    synth_main,
    write_frame,
)

__all__ = [
    "CITYSCAPES_BASELINE",
    "CITYSCAPES_FX_2048",
    "DATASET_FRAME_NUMBER",
    "DEFAULT_MAX_DEPTH",
    "KIND_BOX",
    "KIND_CYL_X",
    "KIND_CYL_Y",
    "KIND_ELLIPSOID",
    "KIND_PLANE",
    "MAX_INSTANCES_PER_CLASS",
    "NEAR_PLANE",
    "SKY_ID",
    "Footprint",
    "Lighting",
    "Marking",
    "Primitives",
    "Scene",
    "SceneGenerator",
    "SynthFrame",
    "cityscapes_stem",
    "color_image",
    "dataset_frame",
    "encode_disparity",
    "frame_polygons",
    "generate_dataset",
    "make_street",
    "synth_main",
    "write_frame",
]
