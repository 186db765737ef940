"""How the tracker associates segments and filters motion: :class:`TrackerConfig`.

Its own module so that the tracker's parts (:mod:`.track_association`, :mod:`.track_motion`)
read their settings without importing the tracker; users import it from :mod:`.tracker`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrackerConfig:
    """How segments are associated and how motion is filtered.

    Ages (frames are the frames given to :meth:`.tracker.Tracker.update`):
        confirm_frames: frames in a row a new track must be seen to become confirmed
            (1: confirmed at once). A tentative track unseen once dies.
        report_tentative: give tentative tracks' segments their track id too. Off by
            default: a segment's id stays 0 until its track is confirmed, so that an id
            once given is one the tracker keeps following (a thing seen for a frame or
            two, or a fragment of one, would otherwise show an id that vanishes or
            passes on: on synthetic drives reporting them raised ID switches by 14-50 %,
            docs/tracking.md).
        max_lost_frames: frames a confirmed track may go unseen and still be
            re-identified (the re-identification window); then it dies.
        max_gap_s: a stamp gap over this many seconds resets every track (the scene
            may have changed entirely; a prediction over it means little).
        min_area_px: thing segments smaller than this (pixels) stay untracked (id 0).
        border_px: a segment whose box comes within this many pixels of the image border
            is cut by it: associated as usual, it measures no 3D motion (0: every
            segment measures).

    Association (a pair is allowed if same class, inside the depth gate and either
    overlapping by ``min_iou`` or inside the distance gate):
        min_iou: mask (or predicted box) IoU that alone admits a pair.
        gate_distance_m, gate_distance_rel: 3D distance gate, metres, is
            ``gate_distance_m + gate_distance_rel * z + gate_growth_mps * t_unseen``.
        gate_image: image-plane gate (without 3D centroids) as a multiple of the mean of
            the two boxes' half-diagonals, plus 3 standard deviations of the filter's
            predicted box centre (which grow while a track goes unseen).
        gate_depth_rel: depth gate, metres, is ``gate_depth_rel * z + gate_growth_mps * t_unseen``.
        gate_growth_mps: how fast (m/s) the gates widen while a track goes unseen
            (``t_unseen``: seconds since its last match, one ``dt`` for a track seen last frame).
        iou_weight, distance_weight, depth_weight: weights of ``1 - IoU``, of the
            gate-normalised distance and of the gate-normalised depth difference in the cost.
            Monocular depth jumps from frame to frame by more than neighbours differ, so by
            default depth only gates (depth_weight 0) and the overlap decides.
        mask_samples: about how many pixels of the panoptic map the mask IoU samples (a
            regular grid of stride ``floor(sqrt(H * W / mask_samples))``, at least 1);
            bounds the cost per frame whatever the image size.

    Motion filter (constant velocity per axis, white-noise acceleration):
        position_noise_m, depth_noise_rel: standard deviation of a centroid measurement
            on each axis, ``position_noise_m + depth_noise_rel * z`` metres (monocular
            depth errors grow with depth, and x, y scale with it).
        pixel_noise_px: standard deviation of a box-centre measurement.
        accel_noise_mps2: standard deviation of the unmodelled acceleration, m/s^2: larger
            follows braking and turns faster, smaller smooths more.
        pixel_accel_noise: the same for the box centre, px/s^2.
        velocity_min_frames: measurements an axis needs before its velocity is reported.
        velocity_max_std_mps: and the most uncertain (1 sigma, m/s) a reported velocity may be.
            This keeps the first, two-point estimates (sqrt(2) sigma / dt: ~10 m/s at 20 m
            and 10 Hz) out; with the default noise the filter's steady state is 1.1 m/s at
            10 m, 1.5 at 40 m and 1.7 at 60 m, so at 10 Hz a velocity is known from the
            4th frame at 10 m, the 6th at 20 m, the 9th at 40 m and the 13th at 60 m.
        min_closing_speed_mps: closing speeds below this count as not closing (time to
            contact +inf), so that a still object's noise does not read as a contact.
        smooth_depth: report the filter's depth (:attr:`SegmentTrack.depth`) instead of
            the segment's own ``depth_mean``; less flicker, some lag when an object brakes
            (figures: ``bench/README.md``, bench_tracker.py).
        size_noise_px: standard deviation (px) of a box-height measurement, for looming: the
            inverse box height of a rigid thing grows in proportion to its depth, so its rate
            times the depth is vz, free of the monocular depth's frame-to-frame noise; it is
            fused with the depth's own rate by inverse variance where the two agree within 2
            sigma (a box being covered shrinks while its thing approaches). 0: looming off.

    Association, continued:
        size_weight: weight of the area ratio in the cost, ``min(|ln(area / last area)| /
            ln 4, 1)``: a thing's area changes little from frame to frame, a fragment of it or
            a mask merged with a neighbour does not (0: off).
        appearance_weight: weight of the appearance distance in the cost: the Hellinger
            distance (0 to 1) between the colour histogram of a segment and its track's (the
            track's follows its matches); it tells apart two things of one class that cross or
            come back from behind something. Only where the tracker is given the frame's image
            (0: off).

    At rest, when the tracker is given the camera's own motion (:class:`.ego_motion.EgoMotion`,
    from odometry): a thing whose filtered velocity, once known (``velocity_max_std_mps``), is that
    of the world, ``-v - w x p``, within ``static_gate`` (chi-square of the difference over the
    three axes' variances) and within ``static_max_speed_mps`` of it, is reported at rest: its
    velocity is exactly the world's (monocular depth puts a parked car's approach speed a few
    per cent off).
        static_gate: the chi-square gate, 3 degrees of freedom (7.81: 95 %). 0: off.
        static_max_speed_mps: the most a thing may move in the world, by its filter, and still
            be taken as at rest.
        static_labels: the classes that may be at rest. Pedestrians are left out by default:
            one walking at 1.4 m/s along the road and one standing differ by less than the
            depth tells apart at 20 m (docs/tracking.md).
    """

    confirm_frames: int = 3
    report_tentative: bool = False
    max_lost_frames: int = 10
    max_gap_s: float = 1.0
    min_area_px: int = 1
    border_px: int = 2
    min_iou: float = 0.1
    gate_distance_m: float = 1.5
    gate_distance_rel: float = 0.1
    gate_image: float = 1.0
    gate_depth_rel: float = 0.4
    gate_growth_mps: float = 3.0
    iou_weight: float = 1.0
    distance_weight: float = 1.0
    depth_weight: float = 0.0
    mask_samples: int = 16384
    position_noise_m: float = 0.1
    depth_noise_rel: float = 0.03
    pixel_noise_px: float = 4.0
    accel_noise_mps2: float = 2.0
    pixel_accel_noise: float = 400.0
    velocity_min_frames: int = 3
    velocity_max_std_mps: float = 2.0
    min_closing_speed_mps: float = 0.1
    smooth_depth: bool = False
    size_noise_px: float = 2.0
    size_weight: float = 0.5
    appearance_weight: float = 1.5
    static_gate: float = 7.81
    static_max_speed_mps: float = 1.5
    static_labels: tuple[str, ...] = ("car", "truck", "bus", "train", "motorcycle", "bicycle")

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"TrackerConfig.{name} must be {what}, got {getattr(self, name)!r}")

        least = {"confirm_frames": 1, "max_lost_frames": 0, "min_area_px": 1, "mask_samples": 1, "border_px": 0}
        least["velocity_min_frames"] = 2  # a velocity needs two positions
        for name, low in least.items():
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= low, name, f"an integer >= {low}")
        for name in ("smooth_depth", "report_tentative"):
            need(isinstance(getattr(self, name), bool), name, "a bool")
        positive = ("max_gap_s", "gate_image", "gate_depth_rel", "pixel_noise_px", "velocity_max_std_mps")
        non_negative = (
            "min_iou",
            "gate_distance_m",
            "gate_distance_rel",
            "gate_growth_mps",
            "iou_weight",
            "distance_weight",
            "depth_weight",
            "position_noise_m",
            "depth_noise_rel",
            "accel_noise_mps2",
            "pixel_accel_noise",
            "min_closing_speed_mps",
            "size_noise_px",
            "size_weight",
            "appearance_weight",
            "static_gate",
            "static_max_speed_mps",
        )
        for name in positive + non_negative:
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if name == "velocity_max_std_mps":  # +inf: report a velocity as soon as it has the frames
                ok = number and (value > 0) and not math.isnan(value)
            else:
                ok = number and math.isfinite(value) and (value > 0 if name in positive else value >= 0)
            what = "a finite number > 0" if name in positive else "a finite number >= 0"
            need(ok, name, "a number > 0 (inf allowed)" if name == "velocity_max_std_mps" else what)
        need(self.min_iou <= 1, "min_iou", "in [0, 1]")
        labels = self.static_labels
        need(isinstance(labels, tuple) and all(isinstance(x, str) for x in labels), "static_labels", "a tuple of str")
        need(self.position_noise_m > 0 or self.depth_noise_rel > 0, "position_noise_m", "> 0 or depth_noise_rel > 0")
        need(self.gate_distance_m > 0 or self.gate_distance_rel > 0, "gate_distance_m", "> 0 or gate_distance_rel > 0")
