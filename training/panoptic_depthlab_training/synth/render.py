"""The synthetic camera: ray casting and shading of a :class:`~.scene.Scene`.

:meth:`SceneGenerator.render` ray-casts every pixel against the scene's primitives with a
z-buffer (vectorised numpy: one python iteration per *primitive*, restricted to the
primitive's projected screen rectangle, never per pixel), so labels, instances and depth
are geometrically exact and mutually consistent. The image is shaded from the same hits
(Lambert + ambient, procedural textures, fog, sensor noise).

Conventions
-----------
* The camera looks along +Z, pitched down by ``pitch`` radians, at height
  ``mount_height`` (Cityscapes optical frame: x right, y down, z forward).
* Pixel centres sit at integer coordinates (OpenCV); ``u0 = (W - 1) / 2`` and
  ``v0 = (H - 1) / 2`` so a horizontal flip is an exact mirror of the camera.
* ``depth`` is the z-depth in the camera frame in metres (what a disparity map encodes),
  ``0.0`` where invalid (sky, beyond ``max_depth``, nearer than the 16-bit disparity
  encoding can express) with ``depth_valid`` false there; it is never NaN or inf.
* Disparity PNG: Cityscapes encoding ``p = round(d * 256) + 1`` for ``d = baseline * fx
  / depth > 0``, ``p = 0`` invalid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .scene import (
    KIND_BOX,
    KIND_CYL_X,
    KIND_CYL_Y,
    KIND_ELLIPSOID,
    KIND_PLANE,
    MAT_BUS,
    MAT_EMISSIVE,
    MAT_FACADE,
    MAT_FENCE,
    MAT_FOLIAGE,
    MAT_GLASS,
    MAT_ROAD,
    MAT_SIDEWALK,
    MAT_TERRAIN,
    SKY_ID,
    Primitives,
    Scene,
    rgb01,
)
from .street import make_street

# Cityscapes 2048x1024 camera (typical values of the dataset's camera JSON files).
CITYSCAPES_FX_2048 = 2262.52
CITYSCAPES_BASELINE = 0.209313
DEFAULT_MAX_DEPTH = 150.0
NEAR_PLANE = 0.3


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


class SceneGenerator:
    """A camera that composes (:func:`.street.make_street`) and renders synthetic streets.

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

    def make_scene(
        self, rng: np.random.Generator | None = None, *, length_m: float = 180.0, behind_m: float = 30.0
    ) -> Scene:
        """Lay out a random street from ``-behind_m`` to ``length_m`` metres along Z."""
        return make_street(self._rng if rng is None else rng, length_m=length_m, behind_m=behind_m)

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
        cam, rot = camera_pose(scene, camera_z_offset)
        rays = np.einsum("ij,jhw->ihw", rot, self._rays_cam).astype(np.float32)  # [3, H, W]

        p = scene.prims
        centers = p.center + agent_velocities(scene, ego_speed_mps) * time_s  # [N, 3]

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
        cam_pts = (primitive_corners(p, centers) - cam) @ rot  # [N, 8, 3]: world -> camera is rot^T
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
            glass = rgb01(0.07, 0.09, 0.12)[:, None] + 0.15 * (1 + normal[1][m]) * 0.2
            color[:, m] = np.where(side, glass, color[:, m])
        m = mat == MAT_BUS
        if m.any():
            band = (-y[m] > tex[..., 0][m]) & (-y[m] < tex[..., 1][m]) & (normal[1][m] > -0.5)
            color[:, m] = np.where(band, rgb01(0.08, 0.1, 0.13)[:, None], color[:, m])
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


@functools.lru_cache(maxsize=4)
def cached_generator(height: int, width: int) -> SceneGenerator:
    """One generator per image size and process (it caches the per-pixel rays)."""
    return SceneGenerator(height, width)


def camera_pose(scene: Scene, camera_z_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The camera moved ``camera_z_offset`` m along the street: world position [3], rotation [3, 3].

    The rotation takes camera-frame vectors to the world frame (pitched down by
    ``scene.pitch``); a world point ``P`` is ``rot.T @ (P - position)`` in the camera frame.
    """
    cam = np.array([scene.camera_x, -scene.mount_height, camera_z_offset])
    cp, sp = math.cos(scene.pitch), math.sin(scene.pitch)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])  # camera -> world
    return cam, rot


def agent_velocities(scene: Scene, ego_speed_mps: float) -> np.ndarray:
    """[N, 3] world velocity of every primitive as rendered: ego-lane traffic at least at the ego speed."""
    p = scene.prims
    vel = p.velocity.copy()
    in_ego_lane = p.lane == scene.ego_lane
    vel[in_ego_lane, 2] = np.maximum(vel[in_ego_lane, 2], ego_speed_mps)
    return vel


def primitive_corners(p: Primitives, centers: np.ndarray) -> np.ndarray:
    """[N, 8, 3] world corners of each primitive's bounding box (its local box, yawed) at ``centers``."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)  # [8, 3]
    local = signs[None] * p.half[:, None, :]  # [N, 8, 3]
    c, s = np.cos(p.yaw)[:, None], np.sin(p.yaw)[:, None]
    rotated = np.stack(
        [c * local[..., 0] + s * local[..., 2], local[..., 1], -s * local[..., 0] + c * local[..., 2]], axis=-1
    )
    return rotated + centers[:, None, :]


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
