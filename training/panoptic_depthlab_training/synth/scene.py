"""What a synthetic street scene is: analytic primitives with Cityscapes labels, and light.

A scene is a flat structure of arrays of primitives (boxes, vertical/horizontal elliptic
cylinders, ellipsoids) over a ground plane, each carrying its Cityscapes ``labelId`` and
``instanceId`` and a constant velocity. :mod:`.street` composes scenes; :mod:`.render`
ray-casts them.

Conventions
-----------
* World frame: X right, Y down, Z along the street (forward); the road surface is
  ``Y = 0``.
* instanceIds: ``labelId * 1000 + k`` for things, ``k`` counted from 0 per class and scene
  (as ``cityscapesscripts.preparation.json2instanceImg`` numbers them), stable over the
  frames of a sequence; stuff pixels hold their ``labelId``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import id2label, name2label

KIND_BOX, KIND_CYL_Y, KIND_CYL_X, KIND_ELLIPSOID, KIND_PLANE = range(5)
(
    MAT_PLAIN,
    MAT_ROAD,
    MAT_SIDEWALK,
    MAT_TERRAIN,
    MAT_FACADE,
    MAT_FOLIAGE,
    MAT_GLASS,
    MAT_EMISSIVE,
    MAT_FENCE,
    MAT_BUS,
) = range(10)

LABEL_ID = {name: lab.id for name, lab in name2label.items()}
SKY_ID = LABEL_ID["sky"]
# instanceIds is written as 16-bit PNG: labelId * 1000 + k must stay below 2**16
MAX_INSTANCES_PER_CLASS = 1000
THING_ID_BASE = 1000  # instanceIds of things are labelId * 1000 + k; stuff holds its labelId


def thing_id(label: str, k: int) -> int:
    """The instanceIds value of the ``k``-th thing of class ``label``."""
    return LABEL_ID[label] * THING_ID_BASE + k


@dataclass(frozen=True)
class Lighting:
    """Per-scene illumination and atmosphere (colours RGB in 0..1)."""

    sun_dir: tuple[float, float, float]  # unit vector towards the sun (world frame)
    ambient: float
    diffuse: float
    sky_horizon: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    fog_distance: float  # metres; fog factor exp(-depth / fog_distance)
    gains: tuple[float, float, float]  # exposure * white balance per channel
    noise_sigma: float  # sensor noise, 0..1 units


@dataclass(frozen=True)
class Marking:
    """A painted line on the road: lateral position, width, dashed or solid."""

    x: float
    width: float
    dashed: bool


@dataclass(frozen=True)
class Primitives:
    """Structure-of-arrays of the scene's N primitives (all arrays have length N).

    ``kind``: KIND_*; ``center`` [N, 3] and ``velocity`` [N, 3] in the world frame;
    ``half`` [N, 3] local half extents (box half sizes; cylinder: radii in the two
    radial axes and half length along its axis; ellipsoid: radii); ``yaw`` rotation
    about the world Y axis; ``color`` [N, 3] RGB 0..1; ``material`` MAT_*;
    ``label_id`` Cityscapes labelId; ``instance_id`` Cityscapes instanceIds value;
    ``lane`` driving lane index or -1; ``tex`` [N, 4] material parameters.
    """

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    color: np.ndarray
    material: np.ndarray
    label_id: np.ndarray
    instance_id: np.ndarray
    velocity: np.ndarray
    lane: np.ndarray
    tex: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def select(self, keep: np.ndarray) -> Primitives:
        """The primitives where the [N] bool ``keep`` holds."""
        return Primitives(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def concat(self, other: Primitives) -> Primitives:
        """These primitives followed by ``other``'s."""
        return Primitives(
            **{f.name: np.concatenate((getattr(self, f.name), getattr(other, f.name))) for f in fields(self)}
        )


@dataclass(frozen=True)
class Footprint:
    """Ground rectangle darkened as a contact shadow under a vehicle or person."""

    center: tuple[float, float]  # (x, z) at time 0
    half: tuple[float, float]  # (half width, half length)
    yaw: float
    velocity: tuple[float, float]  # (vx, vz)
    lane: int
    strength: float
    instance_ids: tuple[int, ...] = ()  # the things standing on it (a cyclist: bicycle and rider)


@dataclass(frozen=True)
class Scene:
    """One procedurally generated street (static layout plus moving agents)."""

    seed: int
    mount_height: float
    pitch: float
    camera_x: float
    ego_lane: int
    road_left: float  # X of the left road edge (curb)
    road_right: float
    markings: tuple[Marking, ...]
    lighting: Lighting
    prims: Primitives
    footprints: tuple[Footprint, ...]
    length_m: float
    lane_width: float
    forward_lanes: int  # lanes 0 .. forward_lanes - 1 at X = (lane + 0.5) * lane_width
    oncoming_lanes: int  # lanes -2 .. -1 - oncoming_lanes at X = (lane + 1.5) * lane_width


class PrimitiveList:
    """Row-wise builder for :class:`Primitives`."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self,
        kind: int,
        center: tuple[float, float, float],
        half: tuple[float, float, float],
        color: np.ndarray | tuple[float, float, float],
        label: str,
        *,
        instance: int | None = None,
        yaw: float = 0.0,
        material: int = MAT_PLAIN,
        velocity: tuple[float, float, float] = (0.0, 0.0, 0.0),
        lane: int = -1,
        tex: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    ) -> None:
        """Add one primitive; ``instance`` k makes it thing ``labelId * 1000 + k``, else stuff."""
        label_id = LABEL_ID[label]
        inst = label_id if instance is None else thing_id(label, instance)
        self.rows.append(
            (kind, center, half, yaw, tuple(np.clip(color, 0.0, 1.0)), material, label_id, inst, velocity, lane, tex)
        )

    def add_part(
        self,
        kind: int,
        origin: tuple[float, float, float],
        yaw: float,
        offset: tuple[float, float, float],
        half: tuple[float, float, float],
        color: np.ndarray | tuple[float, float, float],
        label: str,
        *,
        part_yaw: float = 0.0,
        **kw: Any,
    ) -> None:
        """Add a part at ``offset`` in an object frame placed at ``origin`` with ``yaw``."""
        c, s = math.cos(yaw), math.sin(yaw)
        ox, oy, oz = offset
        center = (origin[0] + c * ox + s * oz, origin[1] + oy, origin[2] - s * ox + c * oz)
        self.add(kind, center, half, color, label, yaw=yaw + part_yaw, **kw)

    def build(self) -> Primitives:
        """The rows added so far as arrays."""
        cols = list(zip(*self.rows, strict=True))
        return Primitives(
            kind=np.asarray(cols[0], np.int32),
            center=np.asarray(cols[1], np.float64),
            half=np.asarray(cols[2], np.float64),
            yaw=np.asarray(cols[3], np.float64),
            color=np.asarray(cols[4], np.float32),
            material=np.asarray(cols[5], np.int32),
            label_id=np.asarray(cols[6], np.int32),
            instance_id=np.asarray(cols[7], np.int32),
            velocity=np.asarray(cols[8], np.float64),
            lane=np.asarray(cols[9], np.int32),
            tex=np.asarray(cols[10], np.float32),
        )


class InstanceCounter:
    """Per-class instance numbering k = 0, 1, ... (Cityscapes json2instanceImg style)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @classmethod
    def continuing(cls, prims: Primitives) -> InstanceCounter:
        """A counter that numbers on after the things already in ``prims``."""
        counter = cls()
        ids = np.unique(prims.instance_id[prims.instance_id >= THING_ID_BASE])
        for label_id, k in zip((ids // THING_ID_BASE).tolist(), (ids % THING_ID_BASE).tolist(), strict=True):
            name = id2label[label_id].name
            counter.counts[name] = max(counter.counts.get(name, 0), k + 1)
        return counter

    def next(self, label: str) -> int:
        """The next instance number of ``label``."""
        k = self.counts.get(label, 0)
        if k >= MAX_INSTANCES_PER_CLASS:
            raise ValueError(f"more than {MAX_INSTANCES_PER_CLASS} {label} instances in one scene")
        self.counts[label] = k + 1
        return k


def rgb255(rgb: tuple[int, int, int]) -> np.ndarray:
    """[3] float32 colour in 0..1 from 0..255 RGB."""
    return np.asarray(rgb, np.float32) / 255.0


def rgb01(r: float, g: float, b: float) -> np.ndarray:
    """[3] float32 colour in 0..1."""
    return np.array([r, g, b], np.float32)
