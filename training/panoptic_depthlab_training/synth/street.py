"""Street composition: a random street laid out as a :class:`~.scene.Scene`.

Lanes with traffic (forward and oncoming), parking or bike lanes along the curbs,
sidewalks with poles, signs, trees and pedestrians, building blocks behind them, and the
lighting. Every choice comes from the given random generator, so a seed is a street.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

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
    Footprint,
    InstanceCounter,
    Lighting,
    Marking,
    PrimitiveList,
    Scene,
    rgb01,
    rgb255,
    thing_id,
)

_CAR_COLORS = [
    rgb255(c)
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
    rgb255(c)
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
    rgb255(c)
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
_SKIN_COLORS = [rgb255(c) for c in ((240, 200, 170), (200, 150, 110), (140, 95, 65), (90, 60, 40))]


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(color * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 4, 3), 0, 1).astype(np.float32)


def make_street(rng: np.random.Generator, *, length_m: float = 180.0, behind_m: float = 30.0) -> Scene:
    """Lay out a random street from ``-behind_m`` to ``length_m`` metres along Z."""
    prims = PrimitiveList()
    counter = InstanceCounter()
    footprints: list[Footprint] = []
    z0, z1 = -behind_m, length_m

    # ground plane placeholders: index 0 = road surface, 1 = terrain beyond the curbs
    road_col = rgb255((88, 88, 92)) * np.float32(rng.uniform(0.75, 1.2))  # grey, no tint
    prims.add(KIND_PLANE, (0, 0, 0), (1, 1, 1), road_col, "road", material=MAT_ROAD)
    terrain_col = _jitter(rng, rgb255((110, 125, 70)), 0.2)
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
            length = {"car": rng.uniform(3.8, 4.9), "truck": rng.uniform(6.5, 9), "bus": rng.uniform(10.5, 12.5)}[kind]
            zc = z + length / 2
            ego_clear = lane != ego_lane or zc - length / 2 > 7.0
            if ego_clear and rng.random() < 0.75:
                yaw = (0.0 if lane >= 0 else math.pi) + rng.normal(0, 0.02)
                vel = (0.0, 0.0, lane_speed[lane])
                add_vehicle(
                    prims, footprints, counter, rng, kind, (x + rng.normal(0, 0.2), 0.0, zc), yaw, length, vel, lane
                )
            z += length + rng.exponential(14) + 3

    sidewalk_h = rng.uniform(0.1, 0.16)
    sidewalk_w = [rng.uniform(2.5, 5.5), rng.uniform(2.5, 5.5)]
    sidewalk_col = _jitter(rng, rgb255((150, 145, 140)), 0.12)
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
        _add_edge_lane(prims, footprints, counter, rng, edge_types[side], curb, sign, edge_w[side], z0, z1)
        _add_sidewalk_life(prims, footprints, counter, rng, curb, sign, sidewalk_w[side], sidewalk_h, z0, z1)
        _add_buildings(prims, rng, outer, sign, z0, z1)

    lighting = _make_lighting(rng)
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
        lane_width=float(lane_w),
        forward_lanes=n_fwd,
        oncoming_lanes=n_onc,
    )


def _make_lighting(rng: np.random.Generator) -> Lighting:
    overcast = rng.random() < 0.3
    elev = rng.uniform(np.radians(20), np.radians(70))
    azim = rng.uniform(-np.pi, np.pi)
    sun = (math.cos(elev) * math.sin(azim), -math.sin(elev), math.cos(elev) * math.cos(azim))
    if overcast:
        horizon = _jitter(rng, rgb255((200, 205, 210)), 0.06)
        zenith = _jitter(rng, rgb255((160, 168, 178)), 0.06)
        ambient, diffuse = rng.uniform(0.65, 0.8), rng.uniform(0.1, 0.25)
    else:
        horizon = _jitter(rng, rgb255((190, 210, 230)), 0.06)
        zenith = _jitter(rng, rgb255((70, 125, 200)), 0.1)
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


def add_vehicle(
    prims: PrimitiveList,
    footprints: list[Footprint],
    counter: InstanceCounter,
    rng: np.random.Generator,
    kind: str,
    pos: tuple[float, float, float],
    yaw: float,
    length: float,
    vel: tuple[float, float, float],
    lane: int,
) -> None:
    """Add a car, truck or bus (parts, wheels, lights and a contact shadow) at ``pos``."""
    label = str(kind)
    k = counter.next(label)
    kw: dict[str, Any] = {"instance": k, "velocity": vel, "lane": lane}
    add = prims.add_part
    dark = rgb01(0.06, 0.06, 0.07)
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
            cargo = _jitter(rng, rgb255((200, 200, 195)), 0.15)
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
        rgb01(0.75, 0.05, 0.05),
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
        rgb01(0.95, 0.92, 0.8),
        label,
        material=MAT_EMISSIVE,
        **kw,
    )
    footprints.append(
        Footprint(
            (pos[0], pos[2]),
            (width / 2 + 0.15, length / 2 + 0.2),
            yaw,
            (vel[0], vel[2]),
            lane,
            0.7,
            (thing_id(label, k),),
        )
    )


def add_person(
    prims: PrimitiveList,
    footprints: list[Footprint],
    counter: InstanceCounter,
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
    footprints.append(Footprint((pos[0], pos[2]), (0.3, 0.3), yaw, (vel[0], vel[2]), lane, 0.35, (thing_id(label, k),)))


def add_bicycle(
    prims: PrimitiveList,
    footprints: list[Footprint],
    counter: InstanceCounter,
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
    dark = rgb01(0.05, 0.05, 0.05)
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
    footprints.append(
        Footprint((pos[0], pos[2]), (0.2, 0.8), yaw, (vel[0], vel[2]), lane, 0.3, (thing_id("bicycle", k),))
    )
    return saddle


def add_rider(
    prims: PrimitiveList,
    footprints: list[Footprint],
    counter: InstanceCounter,
    rng: np.random.Generator,
    pos: tuple[float, float, float],
    yaw: float,
    vel: tuple[float, float, float],
) -> None:
    """Add a cyclist: a bicycle at ``pos`` and a rider seated on it."""
    saddle = add_bicycle(prims, footprints, counter, rng, pos, yaw, vel)
    # the rider's origin is over the saddle (0.2 m behind the bicycle centre)
    c, s = math.cos(yaw), math.sin(yaw)
    origin = (pos[0] - s * 0.2, 0.0, pos[2] - c * 0.2)
    add_person(prims, footprints, counter, rng, origin, yaw, vel, label="rider", seated_at=saddle)
    both = footprints[-2].instance_ids + footprints[-1].instance_ids  # one goes, both go
    footprints[-2:] = [dataclasses.replace(f, instance_ids=both) for f in footprints[-2:]]


def _add_edge_lane(
    prims: PrimitiveList,
    footprints: list[Footprint],
    counter: InstanceCounter,
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
                add_vehicle(
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
                add_rider(prims, footprints, counter, rng, (x + rng.normal(0, 0.2), 0.0, z), yaw, vel)
            z += rng.uniform(8, 20)
        else:
            return


def _add_sidewalk_life(
    prims: PrimitiveList,
    footprints: list[Footprint],
    counter: InstanceCounter,
    rng: np.random.Generator,
    curb: float,
    sign: float,
    width: float,
    top: float,
    z0: float,
    z1: float,
) -> None:
    """Poles (with signs / lights) at the curb, trees outside, pedestrians in between."""
    grey = _jitter(rng, rgb255((120, 122, 125)), 0.1)
    z = z0 + rng.uniform(0, 10)
    while z < z1:
        x = curb + sign * rng.uniform(0.35, 0.6)
        pole_h = rng.uniform(3.5, 8.0)
        r = rng.uniform(0.05, 0.11)
        prims.add(KIND_CYL_Y, (x, -top - pole_h / 2, z), (r, pole_h / 2, r), grey, "pole")
        u = rng.random()
        if u < 0.45:
            sy = -top - rng.uniform(2.0, min(3.0, pole_h - 0.4))
            sign_col = [rgb255((200, 30, 30)), rgb255((30, 70, 170)), rgb255((230, 230, 230)), rgb255((230, 190, 20))][
                rng.integers(4)
            ]
            shape = KIND_CYL_X if rng.random() < 0.5 else KIND_BOX
            half = (0.02, 0.3, 0.3) if shape == KIND_CYL_X else (0.3, 0.3, 0.02)
            yaw = math.pi / 2 if shape == KIND_CYL_X else 0.0
            prims.add(shape, (x, sy, z - r - 0.03), half, sign_col, "traffic sign", yaw=yaw)
        elif u < 0.65 and pole_h > 4.5:
            ly = -top - pole_h + 0.5
            prims.add(KIND_BOX, (x, ly, z - r - 0.16), (0.16, 0.45, 0.14), rgb01(0.08, 0.08, 0.08), "traffic light")
            lamp = rng.integers(3)
            lamp_col = [rgb01(1, 0.1, 0.1), rgb01(1, 0.75, 0.1), rgb01(0.1, 1, 0.4)][lamp]
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
            _add_tree(prims, rng, (x, -top, z))
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
            add_person(prims, footprints, counter, rng, (x, -top, z), yaw, vel)
            if rng.random() < 0.3:  # a companion walking alongside
                add_person(
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
            add_bicycle(prims, footprints, counter, rng, (x, -top, z), yaw, (0.0, 0.0, 0.0))
        else:
            direction = 1.0 if rng.random() < 0.5 else -1.0
            add_rider(
                prims,
                footprints,
                counter,
                rng,
                (x, -top, z),
                0.0 if direction > 0 else math.pi,
                (0.0, 0.0, direction * rng.uniform(2.5, 4.5)),
            )
        z += rng.exponential(9) + 1.5


def _add_tree(prims: PrimitiveList, rng: np.random.Generator, base: tuple[float, float, float]) -> None:
    x, y, z = base
    trunk_h = rng.uniform(1.8, 3.5)
    r = rng.uniform(0.1, 0.22)
    bark = _jitter(rng, rgb255((85, 65, 45)), 0.15)
    leaves = _jitter(rng, rgb255((70, 110, 40)), 0.2)
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
    prims: PrimitiveList, rng: np.random.Generator, outer: float, sign: float, z0: float, z1: float
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
                col = _jitter(rng, rgb255((150, 140, 120)), 0.2)
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
                col = _jitter(rng, rgb255((60, 100, 40)), 0.2)
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
                _add_tree(prims, rng, (x + sign * rng.uniform(2, 6), 0.0, z + gap / 2))
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
