"""Procedural street scenes written in the exact Cityscapes layout.

A scene is a flat list of analytic primitives (boxes, vertical/horizontal elliptic
cylinders, ellipsoids) over a ground plane, each carrying its Cityscapes ``labelId``
and ``instanceId``. :meth:`SceneGenerator.render` ray-casts every pixel against them
with a z-buffer (vectorised numpy: one python iteration per *primitive*, restricted to
the primitive's projected screen rectangle, never per pixel), so labels, instances and
depth are geometrically exact and mutually consistent. The image is shaded from the same
hits (Lambert + ambient, procedural textures, fog, sensor noise).

Conventions
-----------
* World frame: X right, Y down, Z along the street (forward); the road surface is
  ``Y = 0``. The camera looks along +Z, pitched down by ``pitch`` radians, at height
  ``mount_height`` (Cityscapes optical frame: x right, y down, z forward).
* Pixel centres sit at integer coordinates (OpenCV); ``u0 = (W - 1) / 2`` and
  ``v0 = (H - 1) / 2`` so a horizontal flip is an exact mirror of the camera.
* ``depth`` is the z-depth in the camera frame in metres (what a disparity map encodes),
  ``0.0`` where invalid (sky, beyond ``max_depth``, nearer than the 16-bit disparity
  encoding can express) with ``depth_valid`` false there; it is never NaN or inf.
* Disparity PNG: Cityscapes encoding ``p = round(d * 256) + 1`` for ``d = baseline * fx
  / depth > 0``, ``p = 0`` invalid.
* instanceIds: ``labelId * 1000 + k`` for things, ``k`` counted from 0 per class and scene
  (as ``cityscapesscripts.preparation.json2instanceImg`` numbers them), stable over the
  frames of a sequence; stuff pixels hold their ``labelId``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels, name2label
from tqdm import tqdm

# Cityscapes 2048x1024 camera (typical values of the dataset's camera JSON files).
CITYSCAPES_FX_2048 = 2262.52
CITYSCAPES_BASELINE = 0.209313
DEFAULT_MAX_DEPTH = 150.0
NEAR_PLANE = 0.3

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

_ID = {name: lab.id for name, lab in name2label.items()}
SKY_ID = _ID["sky"]
# instanceIds is written as 16-bit PNG: labelId * 1000 + k must stay below 2**16
MAX_INSTANCES_PER_CLASS = 1000


def _color_lut() -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.color
    return lut


_LABEL_COLORS = _color_lut()  # [256, 3] RGB by labelId


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


@dataclass(frozen=True)
class Footprint:
    """Ground rectangle darkened as a contact shadow under a vehicle or person."""

    center: tuple[float, float]  # (x, z) at time 0
    half: tuple[float, float]  # (half width, half length)
    yaw: float
    velocity: tuple[float, float]  # (vx, vz)
    lane: int
    strength: float


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


@dataclass(frozen=True)
class SynthFrame:
    """One rendered frame; every array is [H, W] (image [H, W, 3]) in pixel (row, col) order.

    ``image_rgb`` uint8 RGB; ``label_ids`` uint8 Cityscapes labelIds; ``instance_ids``
    int32 Cityscapes instanceIds; ``depth`` float32 z-depth in metres, 0 where
    ``depth_valid`` is false (sky, beyond max range); ``disparity_png`` uint16 in the
    Cityscapes encoding; ``camera`` the Cityscapes camera JSON dict; ``K`` [3, 3].
    """

    image_rgb: np.ndarray
    label_ids: np.ndarray
    instance_ids: np.ndarray
    depth: np.ndarray
    depth_valid: np.ndarray
    disparity_png: np.ndarray
    camera: dict[str, Any]
    K: np.ndarray


class _PrimitiveList:
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
        label_id = _ID[label]
        inst = label_id if instance is None else label_id * 1000 + instance
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


def _rgb(rgb: tuple[int, int, int]) -> np.ndarray:
    """[3] float32 colour in 0..1 from 0..255 RGB."""
    return np.asarray(rgb, np.float32) / 255.0


def _f32(r: float, g: float, b: float) -> np.ndarray:
    """[3] float32 colour in 0..1."""
    return np.array([r, g, b], np.float32)


_CAR_COLORS = [
    _rgb(c)
    for c in (
        (235, 235, 235),
        (20, 20, 24),
        (160, 163, 168),
        (110, 112, 118),
        (150, 20, 25),
        (25, 45, 110),
        (40, 70, 50),
        (190, 170, 140),
        (200, 120, 30),
        (70, 100, 150),
    )
]
_FACADE_COLORS = [
    _rgb(c)
    for c in (
        (196, 180, 160),
        (170, 160, 150),
        (150, 80, 60),
        (210, 205, 195),
        (120, 115, 110),
        (185, 150, 110),
        (140, 150, 160),
        (225, 215, 180),
        (100, 90, 85),
    )
]
_CLOTH_COLORS = [
    _rgb(c)
    for c in (
        (30, 30, 35),
        (50, 60, 90),
        (120, 30, 30),
        (200, 200, 200),
        (70, 90, 60),
        (150, 120, 80),
        (40, 40, 110),
        (170, 60, 120),
        (210, 170, 40),
        (90, 90, 95),
    )
]
_SKIN_COLORS = [_rgb(c) for c in ((240, 200, 170), (200, 150, 110), (140, 95, 65), (90, 60, 40))]


class _Counter:
    """Per-class instance numbering k = 0, 1, ... (Cityscapes json2instanceImg style)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def next(self, label: str) -> int:
        k = self.counts.get(label, 0)
        if k >= MAX_INSTANCES_PER_CLASS:
            raise ValueError(f"more than {MAX_INSTANCES_PER_CLASS} {label} instances in one scene")
        self.counts[label] = k + 1
        return k


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(color * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 4, 3), 0, 1).astype(np.float32)


class SceneGenerator:
    """Make and render synthetic Cityscapes-like street scenes.

    ``height`` x ``width`` image; intrinsics are the Cityscapes camera scaled to
    ``width`` (``fx = fy = 2262.52 * width / 2048``), principal point at the image centre.
    ``seed`` seeds the generator used when :meth:`make_scene` gets no ``rng``.
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 512,
        seed: int = 0,
        *,
        max_depth: float = DEFAULT_MAX_DEPTH,
        baseline: float = CITYSCAPES_BASELINE,
    ) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
        self.height = height
        self.width = width
        self.fx = self.fy = CITYSCAPES_FX_2048 * width / 2048.0
        self.u0 = (width - 1) / 2.0
        self.v0 = (height - 1) / 2.0
        self.baseline = baseline
        self.max_depth = max_depth
        # nearest depth the 16-bit disparity encoding can express: p = d * 256 + 1 <= 65535
        self.min_depth = baseline * self.fx * 256.0 / 65533.0
        self._rng = np.random.default_rng(seed)
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        # camera-frame ray directions with z = 1, so a ray parameter t IS the z-depth
        self._rays_cam = np.stack([(u - self.u0) / self.fx, (v - self.v0) / self.fy, np.ones_like(u)])  # [3, H, W]

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name of the matrix
        """Intrinsic matrix [3, 3]."""
        return np.array([[self.fx, 0.0, self.u0], [0.0, self.fy, self.v0], [0.0, 0.0, 1.0]])

    def camera_json(self, scene: Scene) -> dict[str, Any]:
        """Cityscapes ``camera.json`` content for frames of ``scene``."""
        return {
            "extrinsic": {
                "baseline": self.baseline,
                "pitch": scene.pitch,
                "roll": 0.0,
                "x": 1.7,
                "y": 0.0,
                "yaw": 0.0,
                "z": scene.mount_height,
            },
            "intrinsic": {"fx": self.fx, "fy": self.fy, "u0": self.u0, "v0": self.v0},
        }

    # ------------------------------------------------------------------ scene layout
    def make_scene(
        self, rng: np.random.Generator | None = None, *, length_m: float = 180.0, behind_m: float = 30.0
    ) -> Scene:
        """Lay out a random street from ``-behind_m`` to ``length_m`` metres along Z."""
        rng = self._rng if rng is None else rng
        prims = _PrimitiveList()
        counter = _Counter()
        footprints: list[Footprint] = []
        z0, z1 = -behind_m, length_m

        # ground plane placeholders: index 0 = road surface, 1 = terrain beyond the curbs
        road_col = _rgb((88, 88, 92)) * np.float32(rng.uniform(0.75, 1.2))  # grey, no tint
        prims.add(KIND_PLANE, (0, 0, 0), (1, 1, 1), road_col, "road", material=MAT_ROAD)
        terrain_col = _jitter(rng, _rgb((110, 125, 70)), 0.2)
        prims.add(KIND_PLANE, (0, 0, 0), (1, 1, 1), terrain_col, "terrain", material=MAT_TERRAIN)

        lane_w = rng.uniform(3.0, 3.6)
        n_fwd = int(rng.integers(1, 3))
        n_onc = int(rng.integers(1, 3))
        edge_types = [str(rng.choice(["parking", "bike", "none"], p=[0.55, 0.3, 0.15])) for _ in range(2)]
        edge_w = [rng.uniform(2.2, 2.7) if t != "none" else rng.uniform(0.3, 0.8) for t in edge_types]
        x_left = -n_onc * lane_w - edge_w[0]
        x_right = n_fwd * lane_w + edge_w[1]
        ego_lane = int(rng.integers(0, n_fwd))
        camera_x = (ego_lane + 0.5) * lane_w + rng.normal(0, 0.15)

        markings = [Marking(0.0, 0.15, bool(rng.random() < 0.3))]
        markings += [Marking(k * lane_w, 0.12, True) for k in range(1, n_fwd)]
        markings += [Marking(-k * lane_w, 0.12, True) for k in range(1, n_onc)]
        markings += [Marking(n_fwd * lane_w, 0.12, False), Marking(-n_onc * lane_w, 0.12, False)]

        # lanes: index >= 0 forward (ego direction), < -1 oncoming (so -1 stays "no lane")
        lane_speed = {k: rng.uniform(6, 14) for k in range(n_fwd)}
        lane_speed.update({-2 - k: -rng.uniform(6, 14) for k in range(n_onc)})
        lane_x = {k: (k + 0.5) * lane_w for k in range(n_fwd)}
        lane_x.update({-2 - k: -(k + 0.5) * lane_w for k in range(n_onc)})
        for lane, x in lane_x.items():
            z = z0 + rng.uniform(0, 15)
            while z < z1:
                kind = rng.choice(["car", "truck", "bus"], p=[0.9, 0.05, 0.05])
                length = {"car": rng.uniform(3.8, 4.9), "truck": rng.uniform(6.5, 9), "bus": rng.uniform(10.5, 12.5)}[
                    kind
                ]
                zc = z + length / 2
                ego_clear = lane != ego_lane or zc - length / 2 > 7.0
                if ego_clear and rng.random() < 0.75:
                    yaw = (0.0 if lane >= 0 else math.pi) + rng.normal(0, 0.02)
                    vel = (0.0, 0.0, lane_speed[lane])
                    self._add_vehicle(
                        prims, footprints, counter, rng, kind, (x + rng.normal(0, 0.2), 0.0, zc), yaw, length, vel, lane
                    )
                z += length + rng.exponential(14) + 3

        sidewalk_h = rng.uniform(0.1, 0.16)
        sidewalk_w = [rng.uniform(2.5, 5.5), rng.uniform(2.5, 5.5)]
        sidewalk_col = _jitter(rng, _rgb((150, 145, 140)), 0.12)
        for side, sign in ((0, -1.0), (1, 1.0)):
            curb = x_left if side == 0 else x_right
            outer = curb + sign * sidewalk_w[side]
            xc, hx = (curb + outer) / 2, sidewalk_w[side] / 2
            prims.add(
                KIND_BOX,
                (xc, -sidewalk_h / 2, (z0 + z1 + 200) / 2),
                (hx, sidewalk_h / 2, (z1 + 200 - z0) / 2),
                sidewalk_col,
                "sidewalk",
                material=MAT_SIDEWALK,
            )
            self._add_edge_lane(prims, footprints, counter, rng, edge_types[side], curb, sign, edge_w[side], z0, z1)
            self._add_sidewalk_life(prims, footprints, counter, rng, curb, sign, sidewalk_w[side], sidewalk_h, z0, z1)
            self._add_buildings(prims, rng, outer, sign, z0, z1)

        lighting = self._make_lighting(rng)
        return Scene(
            seed=int(rng.integers(0, 2**31 - 1)),
            mount_height=float(rng.uniform(1.25, 1.45)),
            pitch=float(rng.uniform(0.01, 0.05)),
            camera_x=float(camera_x),
            ego_lane=ego_lane,
            road_left=float(x_left),
            road_right=float(x_right),
            markings=tuple(markings),
            lighting=lighting,
            prims=prims.build(),
            footprints=tuple(footprints),
            length_m=float(length_m),
        )

    @staticmethod
    def _make_lighting(rng: np.random.Generator) -> Lighting:
        overcast = rng.random() < 0.3
        elev = rng.uniform(np.radians(20), np.radians(70))
        azim = rng.uniform(-np.pi, np.pi)
        sun = (math.cos(elev) * math.sin(azim), -math.sin(elev), math.cos(elev) * math.cos(azim))
        if overcast:
            horizon = _jitter(rng, _rgb((200, 205, 210)), 0.06)
            zenith = _jitter(rng, _rgb((160, 168, 178)), 0.06)
            ambient, diffuse = rng.uniform(0.65, 0.8), rng.uniform(0.1, 0.25)
        else:
            horizon = _jitter(rng, _rgb((190, 210, 230)), 0.06)
            zenith = _jitter(rng, _rgb((70, 125, 200)), 0.1)
            ambient, diffuse = rng.uniform(0.4, 0.55), rng.uniform(0.45, 0.7)
        gains = rng.uniform(0.8, 1.15) * rng.uniform(0.93, 1.07, 3)
        return Lighting(
            sun_dir=sun,
            ambient=float(ambient),
            diffuse=float(diffuse),
            sky_horizon=tuple(float(c) for c in horizon),  # type: ignore[arg-type]
            sky_zenith=tuple(float(c) for c in zenith),  # type: ignore[arg-type]
            fog_distance=float(rng.uniform(250, 900)),
            gains=tuple(float(g) for g in gains),  # type: ignore[arg-type]
            noise_sigma=float(rng.uniform(0.006, 0.02)),
        )

    @staticmethod
    def _add_vehicle(
        prims: _PrimitiveList,
        footprints: list[Footprint],
        counter: _Counter,
        rng: np.random.Generator,
        kind: str,
        pos: tuple[float, float, float],
        yaw: float,
        length: float,
        vel: tuple[float, float, float],
        lane: int,
    ) -> None:
        label = str(kind)
        k = counter.next(label)
        kw: dict[str, Any] = {"instance": k, "velocity": vel, "lane": lane}
        add = prims.add_part
        dark = _f32(0.06, 0.06, 0.07)
        if kind == "car":
            width = rng.uniform(1.65, 1.9)
            clear, hb, hc = rng.uniform(0.22, 0.3), rng.uniform(0.6, 0.8), rng.uniform(0.45, 0.6)
            rw = rng.uniform(0.3, 0.35)
            color = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.08)
            lc = rng.uniform(0.45, 0.6) * length
            add(KIND_BOX, pos, yaw, (0, -(clear + hb / 2), 0), (width / 2, hb / 2, length / 2), color, label, **kw)
            add(
                KIND_BOX,
                pos,
                yaw,
                (0, -(clear + hb + hc / 2), -0.08 * length),
                (width / 2 - 0.09, hc / 2, lc / 2),
                color,
                label,
                material=MAT_GLASS,
                **kw,
            )
            wheel_x, wheel_z = width / 2 - 0.13, length / 2 - 0.75
            wheels = [(sx * wheel_x, sz * wheel_z) for sx in (-1, 1) for sz in (-1, 1)]
        else:
            width = rng.uniform(2.4, 2.55)
            clear, rw = 0.35, 0.5
            if kind == "bus":
                hb = rng.uniform(2.7, 3.1)
                color = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.1)
                add(
                    KIND_BOX,
                    pos,
                    yaw,
                    (0, -(clear + hb / 2), 0),
                    (width / 2, hb / 2, length / 2),
                    color,
                    label,
                    material=MAT_BUS,
                    tex=(clear + 0.9, clear + hb - 0.35, 0, 0),
                    **kw,
                )
            else:
                hb = rng.uniform(2.6, 3.4)
                cab_l = 2.0
                color = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.1)
                cargo = _jitter(rng, _rgb((200, 200, 195)), 0.15)
                add(
                    KIND_BOX,
                    pos,
                    yaw,
                    (0, -(clear + 1.1), length / 2 - cab_l / 2),
                    (width / 2, 1.1, cab_l / 2),
                    color,
                    label,
                    **kw,
                )
                add(
                    KIND_BOX,
                    pos,
                    yaw,
                    (0, -(clear + 2.2 + 0.25), length / 2 - cab_l / 2 + 0.2),
                    (width / 2 - 0.1, 0.25, cab_l / 2 - 0.3),
                    color,
                    label,
                    material=MAT_GLASS,
                    **kw,
                )
                add(
                    KIND_BOX,
                    pos,
                    yaw,
                    (0, -(clear + hb / 2 + 0.1), -cab_l / 2 - 0.15),
                    (width / 2, hb / 2, length / 2 - cab_l / 2 - 0.15),
                    cargo,
                    label,
                    **kw,
                )
            wheel_x, wheel_z = width / 2 - 0.2, length / 2 - 1.3
            wheels = [(sx * wheel_x, sz * wheel_z) for sx in (-1, 1) for sz in (-1, 1)]
        for wx, wz in wheels:
            add(KIND_CYL_X, pos, yaw, (wx, -rw, wz), (0.11, rw, rw), dark, label, **kw)
        # tail light bar (red) and head light bar (warm white), emissive
        ly = -(clear + min(hb, 1.0) * 0.75)
        add(
            KIND_BOX,
            pos,
            yaw,
            (0, ly, -length / 2 - 0.01),
            (width / 2 - 0.15, 0.05, 0.02),
            _f32(0.75, 0.05, 0.05),
            label,
            material=MAT_EMISSIVE,
            **kw,
        )
        add(
            KIND_BOX,
            pos,
            yaw,
            (0, ly, length / 2 + 0.01),
            (width / 2 - 0.2, 0.05, 0.02),
            _f32(0.95, 0.92, 0.8),
            label,
            material=MAT_EMISSIVE,
            **kw,
        )
        footprints.append(
            Footprint((pos[0], pos[2]), (width / 2 + 0.15, length / 2 + 0.2), yaw, (vel[0], vel[2]), lane, 0.7)
        )

    @staticmethod
    def _add_person(
        prims: _PrimitiveList,
        footprints: list[Footprint],
        counter: _Counter,
        rng: np.random.Generator,
        pos: tuple[float, float, float],
        yaw: float,
        vel: tuple[float, float, float],
        *,
        label: str = "person",
        seated_at: float | None = None,
        lane: int = -1,
    ) -> None:
        """Add a person standing at ``pos``, or seated on a saddle ``seated_at`` m high."""
        k = counter.next(label)
        kw: dict[str, Any] = {"instance": k, "velocity": vel, "lane": lane}
        height = rng.uniform(1.55, 1.95)
        leg = 0.47 * height
        torso = 0.31 * height
        shirt = _jitter(rng, _CLOTH_COLORS[rng.integers(len(_CLOTH_COLORS))], 0.1)
        pants = _jitter(rng, _CLOTH_COLORS[rng.integers(len(_CLOTH_COLORS))], 0.1)
        skin = _jitter(rng, _SKIN_COLORS[rng.integers(len(_SKIN_COLORS))], 0.05)
        add = prims.add_part
        hip = leg if seated_at is None else seated_at
        if seated_at is None:
            stride = rng.uniform(-0.15, 0.15) if vel != (0.0, 0.0, 0.0) else 0.0
            for sx, sz in ((-1, stride), (1, -stride)):
                add(KIND_CYL_Y, pos, yaw, (sx * 0.09, -leg / 2, sz), (0.075, leg / 2, 0.075), pants, label, **kw)
        else:
            # legs from the saddle down to the pedals, slightly forward
            for sx in (-1, 1):
                add(
                    KIND_CYL_Y,
                    pos,
                    yaw,
                    (sx * 0.13, -(hip - 0.2) / 2 - 0.2, 0.12),
                    (0.07, (hip - 0.2) / 2, 0.07),
                    pants,
                    label,
                    **kw,
                )
        lean = 0.0 if seated_at is None else 0.18
        add(KIND_CYL_Y, pos, yaw, (0, -(hip + torso / 2), lean), (0.2, torso / 2, 0.12), shirt, label, **kw)
        if seated_at is None:
            for sx in (-1, 1):
                add(KIND_CYL_Y, pos, yaw, (sx * 0.25, -(hip + torso - 0.29), 0), (0.05, 0.29, 0.05), shirt, label, **kw)
        else:
            for sx in (-1, 1):  # arms reaching forward to the handlebar
                add(
                    KIND_CYL_X,
                    pos,
                    yaw,
                    (sx * 0.22, -(hip + torso - 0.1), lean + 0.25),
                    (0.27, 0.05, 0.05),
                    shirt,
                    label,
                    part_yaw=math.pi / 2,
                    **kw,
                )
        add(KIND_ELLIPSOID, pos, yaw, (0, -(hip + torso + 0.14), lean + 0.02), (0.095, 0.125, 0.11), skin, label, **kw)
        footprints.append(Footprint((pos[0], pos[2]), (0.3, 0.3), yaw, (vel[0], vel[2]), lane, 0.35))

    @staticmethod
    def _add_bicycle(
        prims: _PrimitiveList,
        footprints: list[Footprint],
        counter: _Counter,
        rng: np.random.Generator,
        pos: tuple[float, float, float],
        yaw: float,
        vel: tuple[float, float, float],
        lane: int = -1,
    ) -> float:
        """Add a bicycle along its yaw direction; returns the saddle height."""
        k = counter.next("bicycle")
        kw: dict[str, Any] = {"instance": k, "velocity": vel, "lane": lane}
        r = rng.uniform(0.32, 0.36)
        frame = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.1)
        dark = _f32(0.05, 0.05, 0.05)
        add = prims.add_part
        for wz in (-0.52, 0.52):
            add(KIND_CYL_X, pos, yaw, (0, -r, wz), (0.025, r, r), dark, "bicycle", **kw)
        saddle = 2 * r + 0.25
        add(KIND_BOX, pos, yaw, (0, -(r + 0.2), 0.05), (0.02, 0.025, 0.45), frame, "bicycle", **kw)
        add(KIND_BOX, pos, yaw, (0, -(r + saddle) / 2, -0.2), (0.02, (saddle - r) / 2, 0.02), frame, "bicycle", **kw)
        add(
            KIND_BOX,
            pos,
            yaw,
            (0, -(r + saddle + 0.1) / 2, 0.45),
            (0.02, (saddle + 0.1 - r) / 2, 0.02),
            frame,
            "bicycle",
            **kw,
        )
        add(KIND_BOX, pos, yaw, (0, -(saddle + 0.1), 0.45), (0.27, 0.02, 0.02), dark, "bicycle", **kw)
        add(KIND_BOX, pos, yaw, (0, -saddle, -0.2), (0.07, 0.03, 0.12), dark, "bicycle", **kw)
        footprints.append(Footprint((pos[0], pos[2]), (0.2, 0.8), yaw, (vel[0], vel[2]), lane, 0.3))
        return saddle

    def _add_rider(
        self,
        prims: _PrimitiveList,
        footprints: list[Footprint],
        counter: _Counter,
        rng: np.random.Generator,
        pos: tuple[float, float, float],
        yaw: float,
        vel: tuple[float, float, float],
    ) -> None:
        saddle = self._add_bicycle(prims, footprints, counter, rng, pos, yaw, vel)
        # the rider's origin is over the saddle (0.2 m behind the bicycle centre)
        c, s = math.cos(yaw), math.sin(yaw)
        origin = (pos[0] - s * 0.2, 0.0, pos[2] - c * 0.2)
        self._add_person(prims, footprints, counter, rng, origin, yaw, vel, label="rider", seated_at=saddle)

    def _add_edge_lane(
        self,
        prims: _PrimitiveList,
        footprints: list[Footprint],
        counter: _Counter,
        rng: np.random.Generator,
        kind: str,
        curb: float,
        sign: float,
        width: float,
        z0: float,
        z1: float,
    ) -> None:
        """Parked cars or cyclists in the lane along the curb."""
        x = curb - sign * width / 2
        z = z0 + rng.uniform(0, 6)
        while z < z1:
            if kind == "parking":
                length = rng.uniform(3.8, 4.8)
                if rng.random() < 0.7:
                    yaw = (0.0 if rng.random() < 0.5 else math.pi) + rng.normal(0, 0.03)
                    self._add_vehicle(
                        prims,
                        footprints,
                        counter,
                        rng,
                        "car",
                        (x + rng.normal(0, 0.1), 0.0, z + length / 2),
                        yaw,
                        length,
                        (0.0, 0.0, 0.0),
                        -1,
                    )
                z += length + rng.uniform(0.6, 3.0)
            elif kind == "bike":
                if rng.random() < 0.35:
                    forward = sign > 0
                    yaw = (0.0 if forward else math.pi) + rng.normal(0, 0.04)
                    vel = (0.0, 0.0, (1 if forward else -1) * rng.uniform(3.5, 6.5))
                    self._add_rider(prims, footprints, counter, rng, (x + rng.normal(0, 0.2), 0.0, z), yaw, vel)
                z += rng.uniform(8, 20)
            else:
                return

    def _add_sidewalk_life(
        self,
        prims: _PrimitiveList,
        footprints: list[Footprint],
        counter: _Counter,
        rng: np.random.Generator,
        curb: float,
        sign: float,
        width: float,
        top: float,
        z0: float,
        z1: float,
    ) -> None:
        """Poles (with signs / lights) at the curb, trees outside, pedestrians in between."""
        grey = _jitter(rng, _rgb((120, 122, 125)), 0.1)
        z = z0 + rng.uniform(0, 10)
        while z < z1:
            x = curb + sign * rng.uniform(0.35, 0.6)
            pole_h = rng.uniform(3.5, 8.0)
            r = rng.uniform(0.05, 0.11)
            prims.add(KIND_CYL_Y, (x, -top - pole_h / 2, z), (r, pole_h / 2, r), grey, "pole")
            u = rng.random()
            if u < 0.45:
                sy = -top - rng.uniform(2.0, min(3.0, pole_h - 0.4))
                sign_col = [_rgb((200, 30, 30)), _rgb((30, 70, 170)), _rgb((230, 230, 230)), _rgb((230, 190, 20))][
                    rng.integers(4)
                ]
                shape = KIND_CYL_X if rng.random() < 0.5 else KIND_BOX
                half = (0.02, 0.3, 0.3) if shape == KIND_CYL_X else (0.3, 0.3, 0.02)
                yaw = math.pi / 2 if shape == KIND_CYL_X else 0.0
                prims.add(shape, (x, sy, z - r - 0.03), half, sign_col, "traffic sign", yaw=yaw)
            elif u < 0.65 and pole_h > 4.5:
                ly = -top - pole_h + 0.5
                prims.add(KIND_BOX, (x, ly, z - r - 0.16), (0.16, 0.45, 0.14), _f32(0.08, 0.08, 0.08), "traffic light")
                lamp = rng.integers(3)
                lamp_col = [_f32(1, 0.1, 0.1), _f32(1, 0.75, 0.1), _f32(0.1, 1, 0.4)][lamp]
                prims.add(
                    KIND_ELLIPSOID,
                    (x, ly - 0.28 + 0.28 * lamp, z - r - 0.31),
                    (0.09, 0.09, 0.03),
                    lamp_col,
                    "traffic light",
                    material=MAT_EMISSIVE,
                )
            z += rng.uniform(12, 35)

        if width > 3.0 and rng.random() < 0.8:
            z = z0 + rng.uniform(0, 10)
            while z < z1:
                x = curb + sign * (width - rng.uniform(0.6, 0.9))
                self._add_tree(prims, rng, (x, -top, z))
                z += rng.uniform(7, 18)

        z = z0 + rng.exponential(6)
        while z < z1:
            x = curb + sign * rng.uniform(1.0, max(1.1, width - 1.3))
            u = rng.random()
            if u < 0.8:
                walking = rng.random() < 0.7
                direction = 1.0 if rng.random() < 0.5 else -1.0
                yaw = (0.0 if direction > 0 else math.pi) if walking else rng.uniform(-np.pi, np.pi)
                vel = (0.0, 0.0, direction * rng.uniform(0.9, 1.7)) if walking else (0.0, 0.0, 0.0)
                self._add_person(prims, footprints, counter, rng, (x, -top, z), yaw, vel)
                if rng.random() < 0.3:  # a companion walking alongside
                    self._add_person(
                        prims,
                        footprints,
                        counter,
                        rng,
                        (x + rng.uniform(0.55, 0.8) * -sign, -top, z + rng.normal(0, 0.3)),
                        yaw,
                        vel,
                    )
            elif u < 0.9:
                yaw = rng.choice([0.0, math.pi]) + rng.normal(0, 0.1)
                self._add_bicycle(prims, footprints, counter, rng, (x, -top, z), yaw, (0.0, 0.0, 0.0))
            else:
                direction = 1.0 if rng.random() < 0.5 else -1.0
                self._add_rider(
                    prims,
                    footprints,
                    counter,
                    rng,
                    (x, -top, z),
                    0.0 if direction > 0 else math.pi,
                    (0.0, 0.0, direction * rng.uniform(2.5, 4.5)),
                )
            z += rng.exponential(9) + 1.5

    @staticmethod
    def _add_tree(prims: _PrimitiveList, rng: np.random.Generator, base: tuple[float, float, float]) -> None:
        x, y, z = base
        trunk_h = rng.uniform(1.8, 3.5)
        r = rng.uniform(0.1, 0.22)
        bark = _jitter(rng, _rgb((85, 65, 45)), 0.15)
        leaves = _jitter(rng, _rgb((70, 110, 40)), 0.2)
        prims.add(KIND_CYL_Y, (x, y - trunk_h / 2, z), (r, trunk_h / 2, r), bark, "vegetation")
        cr = rng.uniform(1.3, 3.0)
        crh = cr * rng.uniform(0.9, 1.4)
        prims.add(
            KIND_ELLIPSOID,
            (x, y - trunk_h - crh * 0.8, z),
            (cr, crh, cr),
            leaves,
            "vegetation",
            material=MAT_FOLIAGE,
            tex=(rng.uniform(0, 6.28), 0, 0, 0),
        )

    def _add_buildings(
        self, prims: _PrimitiveList, rng: np.random.Generator, outer: float, sign: float, z0: float, z1: float
    ) -> None:
        """Blocks of facades behind the sidewalk, with gaps holding walls, fences, hedges."""
        z = z0 - 20
        while z < z1 + 40:
            length = rng.uniform(8, 35)
            if rng.random() < 0.22:  # a gap
                gap = rng.uniform(3, 15)
                u = rng.random()
                setback = rng.uniform(0.0, 1.0)
                x = outer + sign * setback
                if u < 0.35:
                    h = rng.uniform(0.8, 2.5)
                    col = _jitter(rng, _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))], 0.1)
                    prims.add(KIND_BOX, (x + sign * 0.15, -h / 2, z + gap / 2), (0.15, h / 2, gap / 2), col, "wall")
                elif u < 0.6:
                    h = rng.uniform(1.0, 2.0)
                    col = _jitter(rng, _rgb((150, 140, 120)), 0.2)
                    prims.add(
                        KIND_BOX,
                        (x + sign * 0.03, -h / 2, z + gap / 2),
                        (0.03, h / 2, gap / 2),
                        col,
                        "fence",
                        material=MAT_FENCE,
                        tex=(rng.uniform(0.1, 0.25), 0, 0, 0),
                    )
                elif u < 0.85:
                    h = rng.uniform(0.8, 2.2)
                    col = _jitter(rng, _rgb((60, 100, 40)), 0.2)
                    prims.add(
                        KIND_BOX,
                        (x + sign * 0.5, -h / 2, z + gap / 2),
                        (0.5, h / 2, gap / 2),
                        col,
                        "vegetation",
                        material=MAT_FOLIAGE,
                        tex=(rng.uniform(0, 6), 0, 0, 0),
                    )
                if rng.random() < 0.5:
                    self._add_tree(prims, rng, (x + sign * rng.uniform(2, 6), 0.0, z + gap / 2))
                z += gap
                continue
            setback = rng.uniform(0.0, 4.0) if rng.random() < 0.4 else 0.0
            depth = rng.uniform(10, 20)
            height = rng.uniform(6, 30)
            x_front = outer + sign * setback
            col = _jitter(rng, _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))], 0.08)
            floor_h = rng.uniform(2.8, 3.6)
            window_w = rng.uniform(1.0, 1.8)
            spacing = window_w + rng.uniform(0.8, 2.5)
            prims.add(
                KIND_BOX,
                (x_front + sign * depth / 2, -height / 2, z + length / 2),
                (depth / 2, height / 2, length / 2),
                col,
                "building",
                material=MAT_FACADE,
                tex=(floor_h, spacing, window_w, rng.uniform(0, 1)),
            )
            z += length

    # ---------------------------------------------------------------------- rendering
    def render(
        self,
        scene: Scene,
        camera_z_offset: float = 0.0,
        *,
        time_s: float = 0.0,
        ego_speed_mps: float = 0.0,
        frame_index: int = 0,
    ) -> SynthFrame:
        """Render ``scene`` with the camera moved ``camera_z_offset`` m along the street.

        Agents move by ``velocity * time_s``; traffic in the ego lane moves at least at
        ``ego_speed_mps`` (so a camera driving at that speed never runs into it).
        ``frame_index`` seeds the sensor noise (with ``scene.seed``).
        """
        h, w = self.height, self.width
        cam = np.array([scene.camera_x, -scene.mount_height, camera_z_offset])
        cp, sp = math.cos(scene.pitch), math.sin(scene.pitch)
        rot = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])  # camera -> world
        rays = np.einsum("ij,jhw->ihw", rot, self._rays_cam).astype(np.float32)  # [3, H, W]

        p = scene.prims
        vel = p.velocity.copy()
        in_ego_lane = p.lane == scene.ego_lane
        vel[in_ego_lane, 2] = np.maximum(vel[in_ego_lane, 2], ego_speed_mps)
        centers = p.center + vel * time_s  # [N, 3]

        zbuf = np.full((h, w), np.inf, np.float32)
        pid = np.full((h, w), -1, np.int32)
        # ground plane Y = 0, camera at Y = -mount_height
        with np.errstate(divide="ignore"):
            t_ground = np.where(rays[1] > 1e-6, scene.mount_height / rays[1], np.inf)
        x_ground = cam[0] + t_ground * rays[0]
        on_ground = np.isfinite(t_ground)
        zbuf[on_ground] = t_ground[on_ground]
        off_road = (x_ground < scene.road_left) | (x_ground > scene.road_right)
        pid[on_ground] = np.where(off_road, 1, 0)[on_ground]

        for i, z_near, (r0, r1, c0, c1) in self._screen_rects(p, centers, cam, rot):
            if zbuf[r0:r1, c0:c1].max() < z_near:
                continue  # everything in its rectangle is already nearer: fully occluded
            self._raycast_primitive(
                p, i, centers[i] - cam, rays[:, r0:r1, c0:c1], zbuf[r0:r1, c0:c1], pid[r0:r1, c0:c1]
            )

        sky = pid < 0
        safe = np.where(sky, 0, pid)
        depth = np.where(sky, 0.0, zbuf).astype(np.float32)
        label_ids = np.where(sky, SKY_ID, p.label_id[safe]).astype(np.uint8)
        instance_ids = np.where(sky, SKY_ID, p.instance_id[safe]).astype(np.int32)

        rng = np.random.default_rng([scene.seed, frame_index])
        image = self._shade(scene, p, centers, time_s, ego_speed_mps, cam, rays, depth, pid, sky, rng)

        valid = ~sky & (depth <= self.max_depth) & (depth >= self.min_depth)
        depth = np.where(valid, depth, 0.0).astype(np.float32)
        disparity_png = encode_disparity(depth, valid, baseline=self.baseline, fx=self.fx)
        return SynthFrame(
            image_rgb=image,
            label_ids=label_ids,
            instance_ids=instance_ids,
            depth=depth,
            depth_valid=valid,
            disparity_png=disparity_png,
            camera=self.camera_json(scene),
            K=self.K,
        )

    def render_sequence(self, scene: Scene, n_frames: int, speed_mps: float, fps: float) -> Iterator[SynthFrame]:
        """Frames of ``scene`` with the camera driving forward at ``speed_mps``.

        Make the scene long enough: ``length_m >= speed_mps * n_frames / fps + 100``.
        """
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        for i in range(n_frames):
            t = i / fps
            yield self.render(scene, speed_mps * t, time_s=t, ego_speed_mps=speed_mps, frame_index=i)

    def _screen_rects(
        self, p: Primitives, centers: np.ndarray, cam: np.ndarray, rot: np.ndarray
    ) -> Iterator[tuple[int, float, tuple[int, int, int, int]]]:
        """Visible primitives near to far: index, nearest camera z, pixel rectangle.

        The rectangle (rows r0:r1, cols c0:c1) conservatively bounds the projection of the
        primitive's camera-frame bounding box clipped to the near plane.
        """
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)  # [8, 3]
        local = signs[None] * p.half[:, None, :]  # [N, 8, 3]
        c, s = np.cos(p.yaw)[:, None], np.sin(p.yaw)[:, None]
        world = (
            np.stack(
                [c * local[..., 0] + s * local[..., 2], local[..., 1], -s * local[..., 0] + c * local[..., 2]], axis=-1
            )
            + centers[:, None, :]
        )
        cam_pts = (world - cam) @ rot  # [N, 8, 3]: world -> camera is rot^T
        lo, hi = cam_pts.min(axis=1), cam_pts.max(axis=1)  # [N, 3] camera-frame AABB
        visible = (hi[:, 2] > NEAR_PLANE) & (p.kind != KIND_PLANE)
        zlo = np.maximum(lo[:, 2], NEAR_PLANE)
        zs = np.stack([zlo, hi[:, 2]], axis=1)  # [N, 2]
        ux = np.concatenate([lo[:, :1] / zs, hi[:, :1] / zs], axis=1) * self.fx + self.u0
        vy = np.concatenate([lo[:, 1:2] / zs, hi[:, 1:2] / zs], axis=1) * self.fy + self.v0
        c0 = np.clip(np.floor(ux.min(axis=1)), 0, self.width).astype(np.int64)
        c1 = np.clip(np.ceil(ux.max(axis=1)) + 1, 0, self.width).astype(np.int64)
        r0 = np.clip(np.floor(vy.min(axis=1)), 0, self.height).astype(np.int64)
        r1 = np.clip(np.ceil(vy.max(axis=1)) + 1, 0, self.height).astype(np.int64)
        visible &= (c1 > c0) & (r1 > r0)
        order = np.flatnonzero(visible)
        order = order[np.argsort(zlo[order], kind="stable")]  # near to far: better culling
        for i in order:
            yield int(i), float(zlo[i]), (int(r0[i]), int(r1[i]), int(c0[i]), int(c1[i]))

    @staticmethod
    def _raycast_primitive(
        p: Primitives, i: int, rel: np.ndarray, rays: np.ndarray, zbuf: np.ndarray, pid: np.ndarray
    ) -> None:
        """Intersect rays [3, h, w] with primitive ``i``; update zbuf/pid views in place.

        The ray ``cam + t * d`` is mapped to the primitive's unit space (rotate by -yaw,
        divide by the half extents); the affine map keeps ``t``, so the hit ``t`` is the
        z-depth directly.
        """
        c, s = math.cos(p.yaw[i]), math.sin(p.yaw[i])
        hx, hy, hz = p.half[i]
        # unit-space ray origin (camera relative to the primitive centre) and directions
        ox = (c * -rel[0] - s * -rel[2]) / hx
        oy = -rel[1] / hy
        oz = (s * -rel[0] + c * -rel[2]) / hz
        if s == 0.0:
            dx, dz = rays[0] * np.float32(1 / hx), rays[2] * np.float32(1 / hz)
        else:
            dx = (c * rays[0] - s * rays[2]) * np.float32(1 / hx)
            dz = (s * rays[0] + c * rays[2]) * np.float32(1 / hz)
        dy = rays[1] * np.float32(1 / hy)
        kind = p.kind[i]
        t_in: np.ndarray | None = None
        t_out: np.ndarray | None = None
        slabs: tuple[tuple[np.ndarray, float], ...] = ()
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == KIND_ELLIPSOID:
                t_in, t_out = _quadratic(dx, dy, dz, ox, oy, oz)
            else:
                if kind == KIND_BOX:
                    slabs = ((dx, ox), (dy, oy), (dz, oz))
                elif kind == KIND_CYL_Y:
                    t_in, t_out = _quadratic(dx, None, dz, ox, 0.0, oz)
                    slabs = ((dy, oy),)
                else:  # KIND_CYL_X
                    t_in, t_out = _quadratic(None, dy, dz, 0.0, oy, oz)
                    slabs = ((dx, ox),)
                for d, o in slabs:
                    inv = 1.0 / d
                    ta, tb = (-1.0 - o) * inv, (1.0 - o) * inv
                    near, far = np.minimum(ta, tb), np.maximum(ta, tb)
                    t_in = near if t_in is None else np.maximum(t_in, near)
                    t_out = far if t_out is None else np.minimum(t_out, far)
            assert t_in is not None and t_out is not None
            hit = (t_in <= t_out) & (t_in > NEAR_PLANE) & (t_in < zbuf)
        np.copyto(zbuf, t_in, where=hit, casting="unsafe")
        pid[hit] = i

    def _shade(
        self,
        scene: Scene,
        p: Primitives,
        centers: np.ndarray,
        time_s: float,
        ego_speed_mps: float,
        cam: np.ndarray,
        rays: np.ndarray,
        depth: np.ndarray,
        pid: np.ndarray,
        sky: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Colour every pixel from its hit (normal, material, fog); returns [H, W, 3] uint8."""
        light = scene.lighting
        safe = np.where(sky, 0, pid)
        pts = cam.astype(np.float32)[:, None, None] + depth[None] * rays  # [3, H, W] world hits
        normal = _normals(p, centers, safe, pts)  # [3, H, W]
        mat = np.where(sky, -1, p.material[safe])
        color = p.color[safe].transpose(2, 0, 1).copy()  # [3, H, W]
        tex = p.tex[safe]  # [H, W, 4]
        x, y, z = pts

        m = mat == MAT_ROAD
        if m.any():
            xr, zr = x[m], z[m]
            patch = 1.0 + 0.06 * np.sin(0.9 * xr + 0.3 * zr) * np.sin(0.23 * zr + 1.7)
            paint = np.zeros_like(xr, dtype=bool)
            for mk in scene.markings:
                line = np.abs(xr - mk.x) < mk.width / 2
                if mk.dashed:
                    line &= np.mod(zr, 9.0) < 3.0
                paint |= line
            color[:, m] = np.where(paint, np.float32(0.82), color[:, m] * patch)
        m = mat == MAT_SIDEWALK
        if m.any():
            up = normal[1][m] < -0.5
            grout = (np.mod(x[m], 0.6) < 0.04) | (np.mod(z[m], 0.6) < 0.04)
            factor = np.where(up, np.where(grout, 0.8, 1.0), 1.12)
            color[:, m] *= factor
        m = mat == MAT_TERRAIN
        if m.any():
            color[:, m] *= 1.0 + 0.12 * np.sin(1.3 * x[m]) * np.sin(0.7 * z[m] + 0.5 * x[m])
        m = mat == MAT_FOLIAGE
        if m.any():
            ph = tex[..., 0][m]
            xs, ys, zs = x[m], y[m], z[m]
            n = np.sin(5.1 * xs + ph) * np.sin(4.3 * ys + 2 * ph) * np.sin(4.7 * zs - ph) + 0.5 * np.sin(
                11.0 * (xs + zs) + 3 * ph
            ) * np.sin(9.0 * ys)
            color[:, m] *= 1.0 + 0.25 * n
        m = mat == MAT_FACADE
        if m.any():
            floor_h, spacing, win_w, tint = (tex[..., k][m] for k in range(4))
            along = np.where(np.abs(normal[0][m]) > 0.5, z[m], x[m])
            height = -y[m]
            in_floor = np.mod(height, floor_h)
            window = (
                (np.mod(along, spacing) < win_w)
                & (in_floor > 0.9)
                & (in_floor < floor_h - 0.5)
                & (height > 2.5)
                & (normal[1][m] > -0.5)
            )
            glass = np.stack([0.12 + 0.1 * tint, 0.15 + 0.08 * tint, 0.2 + 0.05 * tint])
            color[:, m] = np.where(window, glass, color[:, m])
        m = mat == MAT_GLASS
        if m.any():
            side = normal[1][m] > -0.7  # cabin roof keeps the body colour
            color[:, m] = np.where(side, _f32(0.07, 0.09, 0.12)[:, None] + 0.15 * (1 + normal[1][m]) * 0.2, color[:, m])
        m = mat == MAT_BUS
        if m.any():
            band = (-y[m] > tex[..., 0][m]) & (-y[m] < tex[..., 1][m]) & (normal[1][m] > -0.5)
            color[:, m] = np.where(band, _f32(0.08, 0.1, 0.13)[:, None], color[:, m])
        m = mat == MAT_FENCE
        if m.any():
            along = np.where(np.abs(normal[0][m]) > 0.5, z[m], x[m])
            bar = np.mod(along, tex[..., 0][m]) < 0.05
            color[:, m] *= np.where(bar, 0.6, 1.0)

        sun = np.asarray(light.sun_dir, np.float32)[:, None, None]
        lambert = np.maximum(0.0, (normal * sun).sum(axis=0))
        sky_light = 0.85 + 0.15 * -normal[1]  # up-facing surfaces see more sky
        shade = light.ambient * sky_light + light.diffuse * lambert
        shade = shade * self._contact_shadows(scene, time_s, ego_speed_mps, x, z, mat, normal)
        emissive = mat == MAT_EMISSIVE
        color = np.where(emissive, color, color * shade)

        # sky gradient by ray elevation, then distance fog towards the horizon colour
        norm = np.sqrt((rays**2).sum(axis=0))
        elevation = np.clip(-rays[1] / norm * 3.0 + 0.15, 0.0, 1.0)
        horizon = np.asarray(light.sky_horizon, np.float32)[:, None, None]
        zenith = np.asarray(light.sky_zenith, np.float32)[:, None, None]
        sky_col = horizon + (zenith - horizon) * elevation
        fog = np.exp(-depth / light.fog_distance)
        color = np.where(sky, sky_col, color * fog + horizon * (1.0 - fog))

        color = color * np.asarray(light.gains, np.float32)[:, None, None]
        color += rng.normal(0.0, light.noise_sigma, color.shape).astype(np.float32)
        image = np.clip(color.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(image, (3, 3), 0.6)

    @staticmethod
    def _contact_shadows(
        scene: Scene,
        time_s: float,
        ego_speed_mps: float,
        x: np.ndarray,
        z: np.ndarray,
        mat: np.ndarray,
        normal: np.ndarray,
    ) -> np.ndarray:
        """Multiplicative darkening [H, W] of ground pixels under vehicles and people."""
        factor = np.ones(x.shape, np.float32)
        ground = np.flatnonzero((normal[1] < -0.9) & ((mat == MAT_ROAD) | (mat == MAT_SIDEWALK) | (mat == MAT_TERRAIN)))
        if ground.size == 0:
            return factor
        # ground pixels sorted by world z: each footprint only looks at its z slice
        gz_all = z.ravel()[ground]
        order = np.argsort(gz_all, kind="stable")
        gz_sorted = gz_all[order]
        flat = factor.ravel()
        for fp in scene.footprints:
            vz = fp.velocity[1]
            if fp.lane == scene.ego_lane:
                vz = max(vz, ego_speed_mps)  # as the primitives in render()
            cx, cz = fp.center[0] + fp.velocity[0] * time_s, fp.center[1] + vz * time_s
            reach = fp.half[0] + fp.half[1] + 0.5
            lo, hi = np.searchsorted(gz_sorted, [cz - reach, cz + reach])
            if hi <= lo:
                continue
            idx = ground[order[lo:hi]]
            dx, dz = x.ravel()[idx] - cx, z.ravel()[idx] - cz
            c, s = math.cos(fp.yaw), math.sin(fp.yaw)
            lx, lz = c * dx - s * dz, s * dx + c * dz
            out = np.maximum(np.abs(lx) - fp.half[0], 0) + np.maximum(np.abs(lz) - fp.half[1], 0)
            dark = fp.strength * np.clip(1.0 - out / 0.35, 0, 1)
            flat[idx] = np.minimum(flat[idx], 1.0 - dark)
        return factor


def _quadratic(
    dx: np.ndarray | None, dy: np.ndarray | None, dz: np.ndarray | None, ox: float, oy: float, oz: float
) -> tuple[np.ndarray, np.ndarray]:
    """Entry/exit t of a ray with the unit sphere (or circle, skipping ``None`` axes)."""
    a = b = None
    cc = -1.0
    for d, o in ((dx, ox), (dy, oy), (dz, oz)):
        if d is None:
            continue
        a = d * d if a is None else a + d * d
        b = d * o if b is None else b + d * o  # b is half of the usual 2 (o . d)
        cc += o * o
    assert a is not None and b is not None
    disc = b * b - a * cc
    root = np.sqrt(np.maximum(disc, 0.0))
    miss = disc < 0
    t_in = np.where(miss, np.inf, (-b - root) / a)
    t_out = np.where(miss, -np.inf, (-b + root) / a)
    return t_in, t_out


def _normals(p: Primitives, centers: np.ndarray, pid: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """World-frame unit normals [3, H, W] at the hit points ``pts`` of primitives ``pid``.

    Ground-plane pixels (and whatever ``pid`` maps to a plane) get the up vector.
    """
    normal = np.zeros((3,) + pid.shape, np.float32)
    normal[1] = -1.0
    flat = pid.ravel()
    idx = np.flatnonzero(p.kind[flat] != KIND_PLANE)
    if idx.size == 0:
        return normal
    ids = flat[idx]
    kind = p.kind[ids]
    c, s = np.cos(p.yaw[ids]).astype(np.float32), np.sin(p.yaw[ids]).astype(np.float32)
    half = p.half[ids].T.astype(np.float32)  # [3, M]
    rel = pts.reshape(3, -1)[:, idx] - centers[ids].T.astype(np.float32)
    q = np.stack([c * rel[0] - s * rel[2], rel[1], s * rel[0] + c * rel[2]]) / half  # unit space
    aq = np.abs(q)
    n_local = q / half  # ellipsoid: gradient of |q|^2
    box = kind == KIND_BOX  # the face whose unit coordinate is largest in magnitude
    axis = np.argmax(aq[:, box], axis=0)
    n_local[:, box] = np.where(np.arange(3)[:, None] == axis[None], np.sign(q[:, box]), 0.0)
    for cyl_kind, ax in ((KIND_CYL_Y, 1), (KIND_CYL_X, 0)):
        # cap if the axial coordinate dominates, else the radial direction
        m = kind == cyl_kind
        radial = np.sqrt(np.maximum((q[:, m] ** 2).sum(axis=0) - q[ax, m] ** 2, 0.0))
        cap = aq[ax, m] > radial
        side = n_local[:, m]
        side[ax] = 0.0
        capped = np.zeros_like(side)
        capped[ax] = np.sign(q[ax, m])
        n_local[:, m] = np.where(cap, capped, side)
    n = np.stack([c * n_local[0] + s * n_local[2], n_local[1], -s * n_local[0] + c * n_local[2]])
    n /= np.maximum(np.sqrt((n * n).sum(axis=0)), 1e-6)
    normal.reshape(3, -1)[:, idx] = n
    return normal


def encode_disparity(depth: np.ndarray, valid: np.ndarray, *, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG [H, W] uint16 from z-depth [H, W] metres.

    ``p = round(baseline * fx / depth * 256) + 1`` where ``valid``, else 0.
    """
    with np.errstate(divide="ignore"):
        disparity = np.where(valid, baseline * fx / np.where(valid, depth, 1.0), 0.0)
    p = np.where(valid, np.round(disparity * 256.0) + 1.0, 0.0)
    return np.clip(p, 0, 65535).astype(np.uint16)


# ------------------------------------------------------------------------------ writing
def frame_polygons(frame: SynthFrame) -> dict[str, Any]:
    """Cityscapes ``gtFine_polygons.json`` content from the rendered segments.

    One object per outer contour of every segment (stuff: per labelId; things: per
    instance), ordered far to near (sky first) so that drawing them in order, as
    ``json2labelImg`` does, lets nearer objects cover farther ones. The PNGs are exact;
    the polygons are their contours (``cv2.findContours``, CHAIN_APPROX_SIMPLE).
    """
    h, w = frame.label_ids.shape
    objects: list[tuple[float, dict[str, Any]]] = []
    ids, inverse = np.unique(frame.instance_ids, return_inverse=True)
    inverse = inverse.reshape(h, w)
    depth_sum = np.bincount(inverse.ravel(), weights=frame.depth.ravel(), minlength=len(ids))
    valid_n = np.bincount(inverse.ravel(), weights=frame.depth_valid.ravel(), minlength=len(ids))
    for k, seg_id in enumerate(ids):
        label_id = int(seg_id) // 1000 if seg_id >= 1000 else int(seg_id)
        name = id2label[label_id].name
        mean_depth = depth_sum[k] / valid_n[k] if valid_n[k] > 0 else math.inf
        mask = (inverse == k).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            pts = contour.reshape(-1, 2).tolist()
            while len(pts) < 3:  # single pixels / lines: keep a drawable polygon
                pts.append(pts[-1])
            objects.append((mean_depth, {"label": name, "polygon": pts}))
    objects.sort(key=lambda o: -o[0])
    return {"imgHeight": h, "imgWidth": w, "objects": [o for _, o in objects]}


def color_image(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes ``gtFine_color`` RGBA [H, W, 4] uint8 from labelIds [H, W]."""
    rgb = _LABEL_COLORS[label_ids]
    alpha = np.full(label_ids.shape + (1,), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)


def cityscapes_stem(city: str, seq: int, frame: int) -> str:
    """``{city}_{seq:06d}_{frame:06d}``."""
    return f"{city}_{seq:06d}_{frame:06d}"


def write_frame(root: Path, split: str, city: str, stem: str, frame: SynthFrame) -> None:
    """Write ``frame`` as the Cityscapes files of ``stem`` under ``root``."""

    def path(folder: str, suffix: str) -> Path:
        d = root / folder / split / city
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{stem}_{suffix}"

    def imwrite(target: Path, array: np.ndarray) -> None:
        if not cv2.imwrite(str(target), array):
            raise OSError(f"could not write {target}")

    imwrite(path("leftImg8bit", "leftImg8bit.png"), frame.image_rgb[..., ::-1])
    imwrite(path("gtFine", "gtFine_labelIds.png"), frame.label_ids)
    imwrite(path("gtFine", "gtFine_instanceIds.png"), frame.instance_ids.astype(np.uint16))
    imwrite(path("gtFine", "gtFine_color.png"), color_image(frame.label_ids)[..., [2, 1, 0, 3]])
    imwrite(path("disparity", "disparity.png"), frame.disparity_png)
    path("gtFine", "gtFine_polygons.json").write_text(json.dumps(frame_polygons(frame)))
    path("camera", "camera.json").write_text(json.dumps(frame.camera, indent=4))


DATASET_FRAME_NUMBER = 19  # Cityscapes annotates the 20th frame of each snippet


@dataclass(frozen=True)
class _Job:
    out: Path
    split: str
    city: str
    index: int
    seed: int
    height: int
    width: int


_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}


def dataset_frame(seed: int, split: str, index: int, *, height: int = 256, width: int = 512) -> SynthFrame:
    """Frame ``index`` of ``split`` exactly as :func:`generate_dataset` renders it."""
    gen = _generator(height, width)
    rng = np.random.default_rng([seed, _SPLIT_KEYS[split], index])
    return gen.render(gen.make_scene(rng))


def _render_job(job: _Job) -> str:
    frame = dataset_frame(job.seed, job.split, job.index, height=job.height, width=job.width)
    stem = cityscapes_stem(job.city, job.index, DATASET_FRAME_NUMBER)
    write_frame(job.out, job.split, job.city, stem, frame)
    return stem


@functools.lru_cache(maxsize=4)
def _generator(height: int, width: int) -> SceneGenerator:
    """One generator per image size and process (it caches the per-pixel rays)."""
    return SceneGenerator(height, width)


def generate_dataset(
    out: Path,
    *,
    train: int,
    val: int,
    seed: int,
    height: int = 256,
    width: int = 512,
    city: str = "synthcity",
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Render ``train`` + ``val`` independent scenes into a Cityscapes tree at ``out``.

    Frame ``i`` of a split depends only on ``(seed, split, i)``: the same arguments give
    byte-identical files whatever ``workers`` is. Returns the frame count per split.
    """
    if train < 0 or val < 0:
        raise ValueError(f"frame counts must be >= 0, got train={train} val={val}")
    jobs = [
        _Job(Path(out), split, city, i, seed, height, width)
        for split, n in (("train", train), ("val", val))
        for i in range(n)
    ]
    bar = tqdm(total=len(jobs), desc="synth", unit="frame", disable=not progress)
    if workers <= 1:
        for job in jobs:
            _render_job(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_render_job, jobs, chunksize=4):
                bar.update()
    bar.close()
    return {"train": train, "val": val}


def synth_main(
    out: Path,
    train: int,
    val: int,
    seed: int,
    height: int = 256,
    width: int = 512,
    *,
    city: str = "synthcity",
    workers: int = 1,
) -> int:
    """CLI body of ``panoptic-depthlab-training synth``; returns the exit code."""
    counts = generate_dataset(
        out, train=train, val=val, seed=seed, height=height, width=width, city=city, workers=workers
    )
    print(f"wrote {counts['train']} train + {counts['val']} val frames ({height}x{width}) to {out}")
    return 0
