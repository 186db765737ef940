"""Command line ``panoptic-depthlab``: convert, export, infer, bag, info.

Exit codes (the same for every command, see ``exit_codes``): 0 all done; 1 done with
input skipped or salvaged; 2 nothing done (one line says why); 128 + N ended by signal N.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .exit_codes import DONE, outcome, run_command
from .inference_options import add_inference_args, inference_options, int_at_least, number_above
from .interrupt import stop_on_signals

if TYPE_CHECKING:
    from .ego_motion import CameraMount


def _convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert_detectron2

    report = convert_detectron2(args.weights, args.config, args.out, overwrite=args.overwrite)
    print(
        f"wrote {args.out}: loaded {len(report.loaded)} keys from {args.weights}, "
        f"initialized {len(report.initialized)} depth-branch keys (not in Detectron2 files)"
    )
    return DONE


def _export(args: argparse.Namespace) -> int:
    from .export import export_model
    from .quantize import Int8Settings

    if args.calibration is not None and not args.int8:
        raise InputError("--calibration goes with --int8")
    int8 = None
    if args.int8:
        if args.calibration is None:
            raise InputError("--int8 needs --calibration SOURCE: a folder of images, a video or a bag")
        int8 = Int8Settings(
            args.calibration,
            frames=args.calibration_frames,
            method=args.calibration_method,
            image_topic=args.image_topic,
        )
    side = export_model(
        args.checkpoint,
        args.out,
        fmt=args.format,
        height=args.height,
        width=args.width,
        dynamic=args.dynamic,
        overwrite=args.overwrite,
        int8=int8,
    )
    what = "onnx, INT8" if int8 else args.format
    print(f"wrote {args.out} ({what}) and its description {side}")
    return DONE


def check_overlay_range(near: float, far: float) -> None:
    """``--near`` / ``--far``: finite, ``0 <= near < far`` (checked before a model loads)."""
    if not (math.isfinite(near) and math.isfinite(far) and 0 <= near < far):
        raise InputError(f"--near and --far need 0 <= near < far (metres), got near={near}, far={far}")


def _predictor(args: argparse.Namespace):
    from .checkpoint import bundled_checkpoint
    from .predictor import Predictor, untrained_depth_note

    path = args.checkpoint or bundled_checkpoint()
    predictor = Predictor.from_checkpoint(
        path, device=args.device, untrained_depth=args.untrained_depth, **inference_options(args)
    )
    if not predictor.depth_enabled:
        print(f"panoptic-depthlab {args.command}: {path}: {untrained_depth_note('--untrained-depth')}", file=sys.stderr)
    return predictor


def finite_number(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


# bag's mount options: what each takes per camera.
MOUNT_OPTIONS = {"--camera-mount-xyz": "X Y Z", "--camera-mount-rpy": "ROLL PITCH YAW"}


def camera_mount_args(args: argparse.Namespace) -> list[CameraMount] | None:
    """``--camera-mount-xyz`` / ``--camera-mount-rpy``: one CameraMount per camera (per ``--image-topic``).

    None without ``--odometry-topic`` (the mounts are unused).  Each option takes 3 numbers
    per camera; with several cameras and odometry both must be given (cameras placed
    differently move differently: one mount shared by them is a mistake).  A bad count
    raises :class:`InputError` naming the option, before a model loads.
    """
    from .ego_motion import CameraMount
    from .odometry import mount_numbers_fit, mounts_from_numbers

    topics = list(args.image_topic or ())
    cameras = max(len(topics), 1)
    values = {option: getattr(args, option[2:].replace("-", "_")) for option in MOUNT_OPTIONS}
    for option, per_camera in MOUNT_OPTIONS.items():
        given = values[option]
        count = 3 if given is None else len(given)  # not given: the default mount's 3 numbers
        if mount_numbers_fit(count, cameras, used=bool(args.odometry_topic)):
            continue
        if cameras == 1:
            raise InputError(f"{option} takes 3 numbers ({per_camera}), got {count}")
        got = "none" if given is None else str(count)
        if not args.odometry_topic:
            raise InputError(f"{option} takes 3 numbers, or {per_camera} for each of the {cameras} cameras, got {got}")
        shared = " (one mount shared by differently placed cameras is a mistake)" if got in ("none", "3") else ""
        raise InputError(
            f"{option}: --odometry-topic with {cameras} cameras ({', '.join(topics)}) needs {3 * cameras} numbers, "
            f"{per_camera} for each camera in the order of --image-topic; got {got}{shared}"
        )
    if not args.odometry_topic:
        return None
    xyz, rpy = values["--camera-mount-xyz"], values["--camera-mount-rpy"]
    default = CameraMount()
    return list(mounts_from_numbers(xyz or default.xyz, rpy or default.rpy, cameras))


def _bag(args: argparse.Namespace) -> int:
    from .bag import bag_output, replay_bag

    check_overlay_range(args.near, args.far)
    mounts = camera_mount_args(args)
    bag_output(args.input, args.output, overwrite=args.overwrite)  # refused before the model loads
    predictor = _predictor(args)
    with stop_on_signals() as stop:
        summary = replay_bag(
            args.input,
            args.output,
            predictor=predictor,
            image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic,
            overwrite=args.overwrite,
            near=args.near,
            far=args.far,
            max_pixels=args.max_pixels,
            stop=stop,
            tracking=not args.no_tracking,
            odometry_topic=args.odometry_topic,
            odometry_max_age_s=args.odometry_max_age_s,
            camera_mount=mounts,
        )
    per_camera = ", ".join(f"{n} {c}" for n, c in summary.frames_per_camera.items())
    frames = f"{summary.frames} frames" + (f" ({per_camera})" if per_camera else "")
    print(f"wrote {args.output}: {frames}, outputs on {', '.join(summary.output_topics)}")
    if summary.damage:  # the output is complete, the input was not: say so
        print(f"panoptic-depthlab bag: warning: {summary.damage}", file=sys.stderr)
    for topic, count in summary.upgraded.items():
        print(f"  {topic}: {count} messages of an older SegmentDepthArray definition written with today's")
    if summary.tracker_resets:  # the stamps jumped: the tracks started afresh there
        more = f" (+{len(summary.tracker_resets) - 1} more)" if len(summary.tracker_resets) > 1 else ""
        print(f"panoptic-depthlab bag: tracks reset at {summary.tracker_resets[0]}{more}", file=sys.stderr)
    if args.odometry_topic and not args.no_tracking:
        print(f"  {args.odometry_topic}: {summary.odometry_messages} odometry messages")
    if summary.without_odometry:  # those frames were tracked without the camera's motion
        print(
            f"panoptic-depthlab bag: {len(summary.without_odometry)} of {summary.frames} frames tracked without "
            f"odometry, the first at {summary.without_odometry[0]}",
            file=sys.stderr,
        )
    return outcome(
        "panoptic-depthlab bag",
        skipped=summary.skipped,
        partial=bool(summary.damage),
        interrupted_by=stop.signum if summary.interrupted else None,
        ended=f"the replay ended after {summary.frames} frames; {args.output} is a complete bag of them",
    )


def _infer(args: argparse.Namespace) -> int:
    from .infer import check_fx, infer_output, run_infer

    check_overlay_range(args.near, args.far)
    check_fx(args.fx)
    infer_output(args.out, args.inputs, overwrite=args.overwrite)  # refused before the model loads
    predictor = _predictor(args)
    with stop_on_signals() as stop:
        summary = run_infer(
            args.inputs,
            args.out,
            predictor=predictor,
            near=args.near,
            far=args.far,
            fx=args.fx,
            overwrite=args.overwrite,
            max_pixels=args.max_pixels,
            stop=stop,
            tracking=not args.no_tracking,
        )
    print(f"wrote {len(summary.written)} files for {summary.frames} frames to {args.out}")
    return outcome(
        "panoptic-depthlab infer",
        skipped=summary.skipped,
        partial=False,
        interrupted_by=stop.signum if summary.interrupted else None,
        ended=f"ended after {summary.frames} frames; {args.out} holds them",
    )


def _info(args: argparse.Namespace) -> int:
    from .checkpoint import bundled_checkpoint, describe_checkpoint, format_description

    path = args.checkpoint or bundled_checkpoint()
    if str(path).endswith(".onnx"):
        from .onnx_backend import describe_export

        desc = describe_export(path)
    else:
        desc = describe_checkpoint(path)
    print(json.dumps(desc, indent=2) if args.json else format_description(desc))
    return DONE


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, help="our .safetensors or an exported .onnx (default: bundled demo)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--near", type=float, default=5.0, help="overlay: red at this depth (m)")
    p.add_argument("--far", type=float, default=60.0, help="overlay: blue at this depth (m)")
    p.add_argument("--overwrite", action="store_true", help="replace an output this command wrote before")
    p.add_argument(
        "--untrained-depth",
        action="store_true",
        help="give depth, segment depths and distances even from a checkpoint whose depth branch was never"
        " trained (e.g. converted from Detectron2; they are noise until it is trained)",
    )
    p.add_argument(
        "--no-tracking",
        action="store_true",
        help="do not track things over frames (bag: over the images; infer: over each video's frames)",
    )
    add_inference_args(p)


def add_int8_args(p: argparse.ArgumentParser) -> None:
    """``export``'s INT8 options (see :mod:`.quantize`)."""
    from .calibration import DEFAULT_FRAMES
    from .quantize import DEFAULT_METHOD, METHODS

    p.add_argument(
        "--int8",
        action="store_true",
        help="quantize the ONNX network to INT8 (static, QDQ, per-channel weights), calibrated on --calibration",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="SOURCE",
        help="calibration frames: a folder of images, a video or a bag, like what the model will see",
    )
    p.add_argument(
        "--calibration-frames",
        type=int_at_least(1),
        default=DEFAULT_FRAMES,
        metavar="N",
        help=f"frames taken evenly over SOURCE (default {DEFAULT_FRAMES})",
    )
    p.add_argument(
        "--calibration-method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"how activation ranges are set (default {DEFAULT_METHOD}, measured best: docs/performance.md)",
    )
    p.add_argument("--image-topic", help="a bag SOURCE's image topic (default: its only one)")


def add_odometry_args(p: argparse.ArgumentParser) -> None:
    """``bag``'s odometry options: the node's parameters of the same names."""
    from .odometry import DEFAULT_MAX_AGE_S

    p.add_argument(
        "--odometry-topic",
        metavar="T",
        help="nav_msgs/Odometry topic (e.g. /odom): the tracker is given the camera's motion, from the twist nearest "
        "each image's stamp; with several cameras the odometry is used for each, moved by that camera's mount",
    )
    p.add_argument(
        "--odometry-max-age-s",
        type=number_above(0, or_equal=True),
        default=DEFAULT_MAX_AGE_S,
        metavar="S",
        help=f"use the odometry nearest an image's stamp only when at most S seconds from it (default "
        f"{DEFAULT_MAX_AGE_S:g}); else that frame is tracked without it",
    )
    p.add_argument(
        "--camera-mount-xyz",
        type=finite_number,
        nargs="+",
        metavar="X Y Z",
        help="position (m) of the camera's optical frame in the odometry's child frame (default 0 0 0); with "
        "several --image-topic one X Y Z per camera, in their order",
    )
    p.add_argument(
        "--camera-mount-rpy",
        type=finite_number,
        nargs="+",
        metavar="ROLL PITCH YAW",
        help="orientation (rad, fixed axes as in URDF) of the camera's optical frame in the odometry's child frame "
        "(default -1.5708 0 -1.5708: looking along the body's x axis); with several --image-topic one ROLL PITCH "
        "YAW per camera, in their order",
    )


def get_args_parser() -> argparse.ArgumentParser:
    """The argument parser (one subparser per job)."""
    parser = argparse.ArgumentParser(prog="panoptic-depthlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="Detectron2 Panoptic-DeepLab weights -> our checkpoint (+ depth branch)")
    p.add_argument("weights", type=Path, help="Detectron2 .pkl (model zoo) or .pth")
    p.add_argument("--config", type=Path, required=True, help="the Detectron2 YAML config of those weights")
    p.add_argument("out", type=Path, help="output .safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint of ours already at OUT")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="export the network to ONNX or TorchScript (+ a JSON description)")
    p.add_argument("checkpoint", type=Path, help="our .safetensors checkpoint")
    p.add_argument("out", type=Path, help="output file (.onnx or .pt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--height", type=int, help="fixed input height (multiple of 32)")
    p.add_argument("--width", type=int, help="fixed input width (multiple of 32)")
    p.add_argument("--dynamic", action="store_true", help="free height/width (multiples of 32; ONNX only)")
    p.add_argument("--overwrite", action="store_true", help="replace an export of ours already at OUT")
    add_int8_args(p)
    p.set_defaults(func=_export)

    p = sub.add_parser("bag", help="replay a rosbag2 (sqlite3/MCAP) through the model into a new bag")
    p.add_argument("input", type=Path, help="input bag directory (or .mcap / .db3 file)")
    p.add_argument("output", type=Path, help="output bag directory")
    p.add_argument(
        "--image-topic",
        action="append",
        help="sensor_msgs/Image or CompressedImage topic (default: the only one); repeat it for several cameras: "
        "each camera's outputs go to /panoptic_depthlab/<camera>/..., the camera being the topic's namespace",
    )
    p.add_argument(
        "--camera-info-topic",
        action="append",
        help="sensor_msgs/CameraInfo topic for 3D centroids, markers and points (default: the only one); with "
        "several cameras one per --image-topic, in order (default: each camera's <namespace>/camera_info)",
    )
    add_odometry_args(p)
    _add_model_args(p)
    p.set_defaults(func=_bag)

    p = sub.add_parser("infer", help="images, folders and videos -> overlay, depth, panoptic, segments files")
    p.add_argument("inputs", nargs="+", type=Path, help="image files, folders or videos")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--fx", type=float, help="the inputs' focal length in pixels: depth in their camera's metres, 3D centroids"
    )
    _add_model_args(p)
    p.set_defaults(func=_infer)

    p = sub.add_parser("info", help="what a checkpoint or export says about itself: network, classes, fusion, training")
    p.add_argument("checkpoint", type=Path, nargs="?", help="our .safetensors or an exported .onnx (default: bundled)")
    p.add_argument("--json", action="store_true", help="the whole description as JSON")
    p.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; every failure a user can cause is one line and an exit code (see the module docstring)."""
    args = get_args_parser().parse_args(argv)
    return run_command(f"panoptic-depthlab {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
