"""Drives: the camera driving along a street among moving things, with each thing's true motion.

A drive is a street (:func:`.street.make_street`) plus the agents a tracker has to follow
across the image: one to three pedestrians and, in half the drives, a cyclist crossing the
road ahead, and on a street with two forward lanes a car overtaking the camera on the other
lane. The street brings the rest: oncoming traffic, traffic ahead, cyclists in a bike lane
that the camera overtakes, parked cars it passes, pedestrians on the sidewalks. Things whose
path a new agent would cross during the drive are taken out of the street (as if they were
elsewhere), so that no two things pass through each other.

Every thing moves at a constant velocity and the camera drives forward at a constant speed,
so each thing's motion in the camera frame is exact: its ``center`` (the centre of the 3D
bounding box of all its parts) at the frame's time, and its ``velocity`` relative to the
camera, the rate of change of ``center`` (a parked car approaches at the ego speed). Both
are in the camera's optical frame (x right, y down, z forward), as is the camera's own motion
that each frame carries (what a vehicle's odometry would give): its velocity is the ego speed
along the street, and it does not turn, so a parked car's velocity is exactly minus it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .render import SceneGenerator, SynthFrame, agent_velocities, camera_pose, primitive_corners
from .scene import THING_ID_BASE, Footprint, InstanceCounter, PrimitiveList, Primitives, Scene
from .street import add_person, add_rider, add_vehicle, make_street

EGO_SPEED_MPS = (6.0, 11.0)  # range of the camera's speed when a drive draws it
CROSSING_AHEAD_M = (8.0, 30.0)  # a crossing is this far ahead of where the camera ends
CLEARANCE_M = 1.0  # least gap between the ground rectangles of two things at any frame
_PLACEMENT_TRIES = 10

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class Drive:
    """A street and how the camera drives along it: ``frames`` frames ``1 / fps`` s apart."""

    scene: Scene
    ego_speed_mps: float
    fps: float
    frames: int

    @property
    def times(self) -> np.ndarray:
        """[frames] seconds since the first frame."""
        return np.arange(self.frames) / self.fps


@dataclass(frozen=True)
class ThingMotion:
    """A thing's true motion at one frame, camera frame: metres and m/s relative to the camera."""

    instance_id: int  # Cityscapes instanceIds value (labelId * 1000 + k), stable over the drive
    center: Vector
    velocity: Vector


@dataclass(frozen=True)
class DriveFrame:
    """One rendered frame of a drive and the motion of every thing visible in it (by instance id).

    ``camera_velocity`` (m/s) and ``camera_angular_velocity`` (rad/s): the camera's own motion
    in its optical frame, relative to the world.
    """

    index: int
    time_s: float
    frame: SynthFrame
    things: tuple[ThingMotion, ...]
    camera_velocity: Vector
    camera_angular_velocity: Vector = (0.0, 0.0, 0.0)


def make_drive(rng: np.random.Generator, *, frames: int, fps: float, ego_speed_mps: float | None = None) -> Drive:
    """Compose a street with crossing and overtaking agents for a drive of ``frames`` frames.

    ``ego_speed_mps`` (m/s) is drawn from :data:`EGO_SPEED_MPS` when not given.
    """
    if frames < 1:
        raise ValueError(f"a drive needs at least 1 frame, got {frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    ego = float(rng.uniform(*EGO_SPEED_MPS)) if ego_speed_mps is None else float(ego_speed_mps)
    if not ego >= 0:
        raise ValueError(f"ego_speed_mps must be >= 0, got {ego_speed_mps}")
    times = np.arange(frames) / fps
    duration = float(times[-1])
    travel = ego * duration
    scene = make_street(rng, length_m=travel + 120.0)

    counter = InstanceCounter.continuing(scene.prims)
    prims = PrimitiveList()
    added: list[Footprint] = []
    if scene.forward_lanes > 1:  # a car overtakes the camera on the other forward lane
        lane = int(rng.choice([k for k in range(scene.forward_lanes) if k != scene.ego_lane]))
        length = float(rng.uniform(3.8, 4.9))
        speed = ego + float(rng.uniform(3.0, 6.0))
        start = (float((lane + 0.5) * scene.lane_width), 0.0, -float(rng.uniform(3.0, 8.0)))
        add_vehicle(prims, added, counter, rng, "car", start, float(rng.normal(0, 0.02)), length, (0, 0, speed), lane)
    crossings = [float(rng.uniform(1.0, 1.8)) for _ in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.5:
        crossings.append(-float(rng.uniform(3.0, 5.0)))  # negative: a cyclist
    for speed in crossings:
        _add_crossing(prims, added, counter, rng, scene, abs(speed), cyclist=speed < 0, ego=ego, times=times)

    footprints = list(scene.footprints)
    clash = _conflicts(footprints, added, scene, ego, times)
    gone = {i for f, hit in zip(footprints, clash, strict=True) if hit for i in f.instance_ids}
    keep_prims = ~np.isin(scene.prims.instance_id, sorted(gone))
    kept = [f for f in footprints if not gone.intersection(f.instance_ids)]
    new_prims: Primitives = scene.prims.select(keep_prims)
    if prims.rows:
        new_prims = new_prims.concat(prims.build())
    scene = dataclasses.replace(scene, prims=new_prims, footprints=tuple(kept + added))
    return Drive(scene=scene, ego_speed_mps=ego, fps=float(fps), frames=int(frames))


def _add_crossing(
    prims: PrimitiveList,
    added: list[Footprint],
    counter: InstanceCounter,
    rng: np.random.Generator,
    scene: Scene,
    speed: float,
    *,
    cyclist: bool,
    ego: float,
    times: np.ndarray,
) -> None:
    """A pedestrian (or cyclist) crossing the road ahead, clear of the agents added before it."""
    direction = 1.0 if rng.random() < 0.5 else -1.0
    duration = float(times[-1])
    for _ in range(_PLACEMENT_TRIES):
        z = ego * duration + float(rng.uniform(*CROSSING_AHEAD_M))
        x_mid = float(rng.uniform(scene.road_left + 0.5, scene.road_right - 0.5))
        pos = (x_mid - direction * speed * duration / 2, 0.0, z)
        vel = (direction * speed, 0.0, 0.0)
        trial = [Footprint((pos[0], z), (0.3, 0.8 if cyclist else 0.3), direction * math.pi / 2, (vel[0], 0.0), -1, 0)]
        if not _conflicts(added, trial, scene, ego, times).any():
            break
    else:
        return  # no clear spot: the drive has one crossing fewer
    if cyclist:
        add_rider(prims, added, counter, rng, pos, direction * math.pi / 2, vel)
    else:
        add_person(prims, added, counter, rng, pos, direction * math.pi / 2, vel)


def _conflicts(
    existing: Sequence[Footprint], new: Sequence[Footprint], scene: Scene, ego_speed_mps: float, times: np.ndarray
) -> np.ndarray:
    """[len(existing)] whether each existing footprint comes within CLEARANCE_M of a new one at a frame."""
    if not existing or not new:
        return np.zeros(len(existing), bool)
    a_center, a_half = _footprint_paths(existing, scene, ego_speed_mps, times)
    b_center, b_half = _footprint_paths(new, scene, ego_speed_mps, times)
    gap = np.abs(a_center[:, None] - b_center[None, :])  # [A, B, T, 2]
    reach = (a_half[:, None] + b_half[None, :])[:, :, None, :] + CLEARANCE_M  # [A, B, 1, 2]
    return np.asarray(np.all(gap < reach, axis=-1).any(axis=(1, 2)))


def _footprint_paths(
    footprints: Sequence[Footprint], scene: Scene, ego_speed_mps: float, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[F, T, 2] ground-rectangle centres (x, z) at ``times`` and [F, 2] axis-aligned half extents."""
    center = np.array([f.center for f in footprints], np.float64)
    vel = np.array([f.velocity for f in footprints], np.float64)
    ego_lane = np.array([f.lane == scene.ego_lane for f in footprints])
    vel[ego_lane, 1] = np.maximum(vel[ego_lane, 1], ego_speed_mps)  # as rendered
    half = np.array([f.half for f in footprints], np.float64)
    c, s = np.abs(np.cos([f.yaw for f in footprints])), np.abs(np.sin([f.yaw for f in footprints]))
    aabb = np.stack([c * half[:, 0] + s * half[:, 1], s * half[:, 0] + c * half[:, 1]], axis=1)
    return center[:, None, :] + vel[:, None, :] * times[None, :, None], aabb


def thing_paths(drive: Drive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every thing of the drive: [M] instance ids, [M, 3] world bounding-box centre at time 0, [M, 3] world velocity."""
    p = drive.scene.prims
    velocity = agent_velocities(drive.scene, drive.ego_speed_mps)
    thing = p.instance_id >= THING_ID_BASE
    ids, inverse = np.unique(p.instance_id[thing], return_inverse=True)
    corners = primitive_corners(p, p.center)[thing]  # [N_thing, 8, 3]
    lo = np.full((ids.size, 3), np.inf)
    hi = np.full((ids.size, 3), -np.inf)
    np.minimum.at(lo, inverse, corners.min(axis=1))
    np.maximum.at(hi, inverse, corners.max(axis=1))
    parts = velocity[thing]
    first = np.zeros(ids.size, np.int64)
    first[inverse[::-1]] = np.arange(inverse.size)[::-1]  # each thing's first part
    if not np.array_equal(parts, parts[first][inverse]):
        raise ValueError("the parts of a thing move at different velocities")
    return ids, (lo + hi) / 2, parts[first]


def render_drive(gen: SceneGenerator, drive: Drive) -> Iterator[DriveFrame]:
    """Render the drive's frames in order, each with the true motion of the things visible in it."""
    ids, center0, velocity = thing_paths(drive)
    ego = np.array([0.0, 0.0, drive.ego_speed_mps])  # the camera's world velocity: along the street
    relative = velocity - ego  # world frame, relative to the camera
    frames = gen.render_sequence(drive.scene, drive.frames, drive.ego_speed_mps, drive.fps)
    for i, (t, frame) in enumerate(zip(drive.times.tolist(), frames, strict=True)):
        position, rot = camera_pose(drive.scene, drive.ego_speed_mps * t)
        center = (center0 + velocity * t - position) @ rot  # world -> camera is rot^T
        velocity_cam = relative @ rot
        camera_velocity = ego @ rot  # rot is the same every frame: the camera does not turn
        visible = np.flatnonzero(np.isin(ids, frame.instance_ids))
        things = tuple(
            ThingMotion(
                instance_id=int(ids[j]),
                center=(float(center[j, 0]), float(center[j, 1]), float(center[j, 2])),
                velocity=(float(velocity_cam[j, 0]), float(velocity_cam[j, 1]), float(velocity_cam[j, 2])),
            )
            for j in visible.tolist()
        )
        yield DriveFrame(
            index=i,
            time_s=t,
            frame=frame,
            things=things,
            camera_velocity=(float(camera_velocity[0]), float(camera_velocity[1]), float(camera_velocity[2])),
        )
