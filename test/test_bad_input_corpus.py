"""The bad-input corpus through every ``panoptic-depthlab`` entry point that takes each case.

Every case asserts: no traceback (the CLI runs in this process: an uncaught exception fails
the test), the named error, the exit code (0 all done, 1 done with skipped or salvaged input,
2 nothing done, 128 + N a signal), and that every file there before is byte-identical after.
Subprocesses only where a real signal matters. Generators: ``bad_inputs.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from bad_inputs import (
    assert_unchanged,
    bad_checkpoints,
    bad_image_files,
    bad_pickles,
    corrupt_mcap_chunk,
    good_image,
    png_bytes,
    png_declaring,
    run_main,
    snapshot,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from panoptic_depthlab_ros import cli
from panoptic_depthlab_ros.errors import CheckpointError, InputError
from panoptic_depthlab_ros.image_io import read_image
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import FIXTURES, REPO, rosbags_camera_info

TS = get_typestore(Stores.ROS2_JAZZY)
K = np.array([100.0, 0.0, 64.0, 0.0, 100.0, 32.0, 0.0, 0.0, 1.0])
IMAGE_CASES = sorted(bad_image_files().items())
CHECKPOINT_CASES = sorted(bad_checkpoints().items())


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> list[str]:
    return ["--checkpoint", str(tiny_checkpoint), "--device", "cpu"]


def _main(argv: list[str]):
    return run_main(cli.main, argv)


# ----------------------------------------------------------------------------- bags
def _header(i: int):
    t = TS.types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=0), frame_id="cam")


def _image(i: int, image: np.ndarray) -> bytes:
    h, w = image.shape[:2]
    msg = TS.types["sensor_msgs/msg/Image"](
        header=_header(i), height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3, data=image.ravel()
    )
    return TS.serialize_cdr(msg, msg.__msgtype__)


def _compressed(i: int, data: bytes, fmt: str = "png") -> bytes:
    msg = TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(i), format=fmt, data=np.frombuffer(data, np.uint8).copy()
    )
    return TS.serialize_cdr(msg, msg.__msgtype__)


def _camera_info(i: int, k: np.ndarray) -> bytes:
    msg = rosbags_camera_info(TS, _header(i), k)
    return TS.serialize_cdr(msg, msg.__msgtype__)


def write_bag(path: Path, messages: list[tuple[str, str, bytes]], storage=StoragePlugin.MCAP) -> Path:
    """A bag of ``(topic, type, cdr bytes)`` messages, 0.1 s apart, whatever the bytes hold."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {}
        for i, (topic, msgtype, raw) in enumerate(messages):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(conns[topic], (1000 + i) * 10**8, raw)
    return path


def good_bag(path: Path, frames: int = 3, storage=StoragePlugin.MCAP, filler: int = 0) -> Path:
    """``frames`` images with their CameraInfo; ``filler`` bytes of another topic after each
    (rosbags closes an MCAP chunk at 1 MiB: a few frames then make several chunks)."""
    messages = []
    for i in range(frames):
        messages.append(("/cam/info", "sensor_msgs/msg/CameraInfo", _camera_info(i, K)))
        messages.append(("/cam/image", "sensor_msgs/msg/Image", _image(i, good_image(i))))
        if filler:
            text = TS.types["std_msgs/msg/String"](data="x" * filler)
            messages.append(("/lidar", "std_msgs/msg/String", TS.serialize_cdr(text, text.__msgtype__)))
    return write_bag(path, messages, storage)


def _frames_in(bag: Path) -> int:
    with Reader(bag) as r:
        return sum(c.msgcount for c in r.connections if c.topic == "/panoptic_depthlab/segments")


# ============================================================================= images
@pytest.mark.parametrize(("name", "case"), IMAGE_CASES, ids=[n for n, _ in IMAGE_CASES])
def test_image_files_through_infer(tmp_path: Path, model: list[str], name: str, case) -> None:
    data, suffix, words = case
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "good.png"), good_image(0))
    bad = src / f"bad_{name}{suffix}"
    bad.write_bytes(data)
    before = snapshot(tmp_path)
    run = _main(["infer", str(src), "--out", str(tmp_path / "out"), *model])
    assert run.code == 1, run.err  # done, with a skipped input
    assert f"skipped: {bad}: " in run.err and words in run.err
    assert (tmp_path / "out" / "good_overlay.png").is_file() and not list((tmp_path / "out").glob("bad_*"))
    assert_unchanged(before)
    alone = _main(["infer", str(bad), "--out", str(tmp_path / "alone"), *model])
    assert alone.code == 2 and words in alone.err and "no frame of 1 input file(s) could be used" in alone.err
    assert not (tmp_path / "alone").exists()  # nothing done, nothing written
    assert_unchanged(before)


@pytest.mark.parametrize(("name", "case"), IMAGE_CASES, ids=[n for n, _ in IMAGE_CASES])
def test_image_files_through_the_library(tmp_path: Path, name: str, case) -> None:
    data, suffix, words = case
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(data)
    with pytest.raises(InputError, match="unreadable image|above the limit|absurd size") as info:
        read_image(path)
    assert str(path) in str(info.value) and words.replace("--max-pixels=", "") in str(info.value)


def test_predictor_refuses_frames_over_its_pixel_limit(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", max_pixels=64 * 128)
    assert predictor.predict(good_image(0)).panoptic.shape == (64, 128)
    with pytest.raises(InputError, match=r"image 128x65 has 8320 pixels, above the limit max_pixels=8192") as info:
        predictor.predict(good_image(0, 65, 128))
    assert info.value.kind == "too_large"


def test_a_pixel_limit_of_our_own_applies_before_decoding(tmp_path: Path, model: list[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), good_image(0))
    cv2.imwrite(str(src / "b.png"), good_image(1, 64, 256))
    run = _main(["infer", str(src), "--out", str(tmp_path / "out"), "--max-pixels", str(64 * 128), *model])
    assert run.code == 1 and "b.png: image 256x64 has 16384 pixels, above the limit --max-pixels=8192" in run.err
    assert (tmp_path / "out" / "a_overlay.png").is_file()


# ============================================================================= checkpoints
@pytest.fixture(scope="module")
def bad_checkpoint_dir(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    folder = tmp_path_factory.mktemp("bad_checkpoints")
    for name, (write, _) in CHECKPOINT_CASES:
        write(folder / f"{name}.safetensors", tiny_checkpoint)
    return folder


@pytest.mark.parametrize(("name", "case"), CHECKPOINT_CASES, ids=[n for n, _ in CHECKPOINT_CASES])
def test_checkpoints_through_every_entry_point(tmp_path: Path, bad_checkpoint_dir: Path, name: str, case) -> None:
    _, words = case
    ckpt = bad_checkpoint_dir / f"{name}.safetensors"
    cv2.imwrite(str(tmp_path / "frame.png"), good_image(0))
    bag = good_bag(tmp_path / "in_bag", frames=1)
    before = snapshot(tmp_path) | snapshot(bad_checkpoint_dir)
    runs = {
        "info": _main(["info", str(ckpt)]),
        "infer": _main(
            ["infer", str(tmp_path / "frame.png"), "--out", str(tmp_path / "o1"), "--checkpoint", str(ckpt)]
        ),
        "bag": _main(["bag", str(bag), str(tmp_path / "o2"), "--checkpoint", str(ckpt), "--device", "cpu"]),
        "export": _main(["export", str(ckpt), str(tmp_path / "o3.onnx"), "--height", "64", "--width", "128"]),
    }
    for entry, run in runs.items():
        assert run.code == 2, (entry, run.err)
        assert str(ckpt) in run.err and words in run.err, (entry, run.err)
        assert run.err.count("\n") == 1, (entry, run.err)  # one line
    with pytest.raises(CheckpointError, match=re.escape(words)):
        Predictor.from_checkpoint(ckpt, device="cpu")
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3.onnx", "o3.onnx.json"))
    assert_unchanged(before)


def test_checkpoint_through_the_node(ros_context, bad_checkpoint_dir: Path) -> None:
    """The node refuses at start-up with the field's name (one case per section of the metadata)."""
    from rclpy.parameter import Parameter

    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode, StartupError

    for name, words in (("stem_channels", "stem_channels"), ("color_short", "colors"), ("top_k_text", "top_k")):
        ckpt = bad_checkpoint_dir / f"{name}.safetensors"
        with pytest.raises(StartupError, match=words):
            PanopticDepthLabNode(
                context=ros_context,
                parameter_overrides=[Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu")],
            )


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    from panoptic_depthlab_ros.export import export_model

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_model(tiny_checkpoint, path, dynamic=True)
    return path


ONNX_CASES = {
    "stem_channels": (lambda d: d["model_config"].update(stem_channels=10**7), "stem_channels"),
    "height_text": (lambda d: d["shape"].update(dynamic=False, height="tall", width=128), "shape.height"),
    "divisibility": (lambda d: d["preprocessing"].update(size_divisibility=10**6), "size_divisibility"),
    "pixel_std": (lambda d: d["model_config"].update(pixel_std=[0, 1, 1]), "pixel_std"),
    "no_shape": (lambda d: d.pop("shape"), "preprocessing and shape"),
}


@pytest.mark.parametrize("name", sorted(ONNX_CASES))
def test_export_descriptions_are_checked_when_loaded(tmp_path: Path, tiny_onnx: Path, name: str) -> None:
    import onnx

    edit, words = ONNX_CASES[name]
    graph = onnx.load(str(tiny_onnx))
    desc = json.loads(graph.metadata_props[0].value)
    edit(desc)
    graph.metadata_props[0].value = json.dumps(desc)
    path = tmp_path / f"{name}.onnx"
    onnx.save(graph, str(path))
    cv2.imwrite(str(tmp_path / "frame.png"), good_image(0))
    before = snapshot(tmp_path)
    for argv in (
        ["info", str(path)],
        ["infer", str(tmp_path / "frame.png"), "--out", str(tmp_path / "o"), "--checkpoint", str(path)],
    ):
        run = _main(argv)
        assert run.code == 2 and words in run.err and str(path) in run.err, run.err
    with pytest.raises(CheckpointError, match=words):
        Predictor.from_checkpoint(path, device="cpu", backend="onnxruntime")
    assert_unchanged(before)


# ============================================================================= convert
@pytest.fixture(scope="module")
def detectron2_weights() -> dict[str, np.ndarray]:
    from panoptic_depthlab_ros.checkpoint import read_detectron2_weights

    return {k: v.numpy() for k, v in read_detectron2_weights(FIXTURES / "tiny_model.pkl").items()}


PICKLE_NAMES = [
    "code_execution",
    "empty",
    "no_state_dict",
    "non_string_key",
    "object_array",
    "string_array",
    "truncated",
]


@pytest.mark.parametrize("name", PICKLE_NAMES)
def test_pickles_through_convert(tmp_path: Path, detectron2_weights, name: str) -> None:
    data, words = bad_pickles(detectron2_weights)[name]
    weights = tmp_path / "model.pkl"
    weights.write_bytes(data)
    before = snapshot(tmp_path)
    run = _main(
        ["convert", str(weights), "--config", str(FIXTURES / "tiny_config.yaml"), str(tmp_path / "out.safetensors")]
    )
    assert run.code == 2 and words in run.err and str(weights) in run.err, run.err
    assert "pwned" not in run.out
    assert not (tmp_path / "out.safetensors").exists()
    assert_unchanged(before)


CONFIG_CASES = {
    "empty": ("", "does not hold a mapping"),
    "not_yaml": ("MODEL: [unclosed", "not valid YAML"),
    "crop_not_divisible": ("INPUT:\n  CROP:\n    SIZE: [100, 100]\n", "not divisible by 16"),
    "wrong_type": ("MODEL:\n  RESNETS:\n    DEPTH: fifty\n", "invalid config"),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_detectron2_configs_through_convert(tmp_path: Path, name: str) -> None:
    text, words = CONFIG_CASES[name]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    before = snapshot(tmp_path)
    run = _main(
        ["convert", str(FIXTURES / "tiny_model.pkl"), "--config", str(config), str(tmp_path / "out.safetensors")]
    )
    assert run.code == 2 and words in run.err and str(config) in run.err, run.err
    assert_unchanged(before)


def test_pth_files_through_convert(tmp_path: Path) -> None:
    for name, data in (("empty.pth", b""), ("garbage.pth", b"PK\x03\x04 not a zip at all")):
        (tmp_path / name).write_bytes(data)
        run = _main(
            [
                "convert",
                str(tmp_path / name),
                "--config",
                str(FIXTURES / "tiny_config.yaml"),
                str(tmp_path / "o.safetensors"),
            ]
        )
        assert run.code == 2 and str(tmp_path / name) in run.err, run.err
    assert not (tmp_path / "o.safetensors").exists()


# ============================================================================= outputs
def _readonly_dir(tmp_path: Path) -> Path:
    """A folder nobody can write in: chmod for users, /sys for root (chmod does not stop root)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _output_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "a_file").write_text("mine\n")
    (tmp_path / "user_folder").mkdir()
    (tmp_path / "user_folder" / "notes.txt").write_text("my notes\n")
    return {
        "existing_file": (tmp_path / "a_file", "--overwrite"),
        "under_a_file": (tmp_path / "a_file" / "out", "is a file, not a folder"),
        "read_only": (_readonly_dir(tmp_path) / "pdl_out", "cannot write in"),
        "user_folder": (tmp_path / "user_folder", "exists; pass --overwrite"),
    }


@pytest.mark.parametrize("command", ["infer", "bag", "convert", "export"])
def test_output_paths_that_cannot_be_written(
    tmp_path: Path, tiny_checkpoint: Path, model: list[str], command: str
) -> None:
    cv2.imwrite(str(tmp_path / "frame.png"), good_image(0))
    bag = good_bag(tmp_path / "in_bag", frames=1)
    cases = _output_cases(tmp_path)
    before = snapshot(tmp_path)
    for case, (out, words) in cases.items():
        argv = {
            "infer": ["infer", str(tmp_path / "frame.png"), "--out", str(out), *model],
            "bag": ["bag", str(bag), str(out), *model],
            "convert": [
                "convert",
                str(FIXTURES / "tiny_model.pkl"),
                "--config",
                str(FIXTURES / "tiny_config.yaml"),
                str(out),
            ],
            "export": ["export", str(tiny_checkpoint), str(out), "--height", "64", "--width", "128"],
        }[command]
        for extra in ([], ["--overwrite"]):
            run = _main(argv + extra)
            assert run.code == 2, (case, extra, run.err)
            assert str(out) in run.err and run.err.count("\n") == 1, (case, extra, run.err)
            if not (extra and words.startswith("exists")):
                assert words in run.err or "was not written by" in run.err, (case, extra, run.err)
            else:
                assert "was not written by" in run.err and "left as it is" in run.err, run.err
    assert_unchanged(before)
    assert not [p for p in tmp_path.rglob(".*partial")]  # no staging left behind


def test_bag_never_deletes_what_it_did_not_write(tmp_path: Path, model: list[str], monkeypatch) -> None:
    """The issue's case: OUT is the folder holding the input bag and the user's notes."""
    p = tmp_path / "p"
    p.mkdir()
    shutil.copytree(REPO / "data" / "demo_bag", p / "in_bag")
    (p / "notes.txt").write_text("x\n")
    before = snapshot(tmp_path)
    run = _main(["bag", str(p / "in_bag"), str(p), "--overwrite", *model])
    assert run.code == 2 and "is or holds the input" in run.err, run.err
    monkeypatch.chdir(p / "in_bag")
    for out in (".", "..", str(tmp_path)):
        run = _main(["bag", str(p / "in_bag"), out, "--overwrite", *model])
        assert run.code == 2 and ("working directory" in run.err or "holds the input" in run.err), run.err
    assert_unchanged(before)


def test_infer_output_rules(tmp_path: Path, model: list[str], monkeypatch) -> None:
    src = tmp_path / "frames"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), good_image(0))
    out = src / "results"  # inside the input folder: its own files are not inputs
    assert _main(["infer", str(src), "--out", str(out), *model]).code == 0
    first = snapshot(out)
    again = _main(["infer", str(src), "--out", str(out), "--overwrite", *model])
    assert again.code == 0 and "for 1 frames" in again.out  # results/ is not read as input
    assert json.loads((out / "panoptic_depthlab.json").read_text())["written_by"] == "panoptic-depthlab infer"
    assert set(first) == set(snapshot(out))
    before = snapshot(tmp_path)
    holds = _main(["infer", str(src / "a.png"), "--out", str(src), "--overwrite", *model])
    assert holds.code == 2 and "is or holds the input" in holds.err
    monkeypatch.chdir(out)
    for here in (".", ".."):
        run = _main(["infer", str(src / "a.png"), "--out", here, "--overwrite", *model])
        assert run.code == 2 and "working directory" in run.err, run.err
    assert_unchanged(before)


def test_a_failed_run_keeps_the_previous_output(tmp_path: Path, tiny_checkpoint: Path, model: list[str]) -> None:
    cv2.imwrite(str(tmp_path / "frame.png"), good_image(0))
    (tmp_path / "broken.png").write_bytes(b"nope")
    bag = good_bag(tmp_path / "in_bag", frames=1)
    ok = {
        "infer": _main(["infer", str(tmp_path / "frame.png"), "--out", str(tmp_path / "o_infer"), *model]),
        "bag": _main(["bag", str(bag), str(tmp_path / "o_bag"), *model]),
        "export": _main(["export", str(tiny_checkpoint), str(tmp_path / "o.onnx"), "--height", "64", "--width", "128"]),
        "convert": _main(
            [
                "convert",
                str(FIXTURES / "tiny_model.pkl"),
                "--config",
                str(FIXTURES / "tiny_config.yaml"),
                str(tmp_path / "o.safetensors"),
            ]
        ),
    }
    assert all(run.code == 0 for run in ok.values()), {k: r.err for k, r in ok.items()}
    before = snapshot(tmp_path)
    (tmp_path / "bad.pkl").write_bytes(b"")
    failing = {
        "infer": ["infer", str(tmp_path / "broken.png"), "--out", str(tmp_path / "o_infer"), "--overwrite", *model],
        "bag": ["bag", str(bag), str(tmp_path / "o_bag"), "--overwrite", "--image-topic", "/nope", *model],
        "export": [
            "export",
            str(tiny_checkpoint),
            str(tmp_path / "o.onnx"),
            "--height",
            "60",
            "--width",
            "128",
            "--overwrite",
        ],
        "convert": [
            "convert",
            str(tmp_path / "bad.pkl"),
            "--config",
            str(FIXTURES / "tiny_config.yaml"),
            str(tmp_path / "o.safetensors"),
            "--overwrite",
        ],
    }
    for name, argv in failing.items():
        run = _main(argv)
        assert run.code == 2, (name, run.err)
    assert_unchanged(before)
    assert not [p for p in tmp_path.rglob(".*partial")]
    # ... and a run that succeeds replaces what the tool wrote before.
    replaced = _main(["bag", str(bag), str(tmp_path / "o_bag"), "--overwrite", "--near", "1", "--far", "9", *model])
    assert replaced.code == 0 and _frames_in(tmp_path / "o_bag") == 1


def test_near_far_fx_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    missing = ["--checkpoint", str(tmp_path / "no_model.safetensors")]
    cv2.imwrite(str(tmp_path / "frame.png"), good_image(0))
    bag = good_bag(tmp_path / "in_bag", frames=1)
    for values, words in (
        (["--near", "10", "--far", "5"], "near=10.0, far=5.0"),
        (["--near", "nan"], "near=nan"),
        (["--far", "inf"], "far=inf"),
        (["--near", "-1"], "near=-1.0"),
    ):
        for argv in (
            ["infer", str(tmp_path / "frame.png"), "--out", str(tmp_path / "o")],
            ["bag", str(bag), str(tmp_path / "o")],
        ):
            run = _main([*argv, *missing, *values])
            assert run.code == 2 and words in run.err and "no_model" not in run.err, run.err
    run = _main(["infer", str(tmp_path / "frame.png"), "--out", str(tmp_path / "o"), "--fx", "-3", *missing])
    assert run.code == 2 and "--fx must be a positive focal length" in run.err
    for bad in ("-5", "many"):
        run = _main(["infer", str(tmp_path / "frame.png"), "--out", str(tmp_path / "o"), "--max-pixels", bad, *missing])
        assert run.code == 2 and "--max-pixels" in run.err


# ============================================================================= bags
def _bad_content_bag(path: Path) -> tuple[Path, dict[str, str]]:
    """A compressed-image bag: good frames between broken ones, and broken camera infos; stamp -> words."""
    cases = {
        "corrupt jpeg": (_compressed(1, b"\xff\xd8\xff\xe0 not really a jpeg", "jpeg"), "unreadable image"),
        "png bomb": (_compressed(2, png_declaring(12000, 12000)), "above the limit --max-pixels="),
        "over 2^30": (_compressed(3, png_declaring(40000, 40000)), "absurd size"),
        "empty data": (_compressed(4, b""), "compressed image has no data"),
        "a string, not an image": (
            TS.serialize_cdr(TS.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"),
            "not a sensor_msgs/msg/CompressedImage",
        ),
        "depth": (_compressed(6, png_bytes(good_image(6)), "16UC1; compressedDepth"), "compressed depth"),
    }
    messages = [("/cam/image", "sensor_msgs/msg/CompressedImage", _compressed(0, png_bytes(good_image(0))))]
    messages += [("/cam/image", "sensor_msgs/msg/CompressedImage", raw) for raw, _ in cases.values()]
    messages += [
        ("/cam/info", "sensor_msgs/msg/CameraInfo", _camera_info(7, np.full(9, np.nan))),
        ("/cam/info", "sensor_msgs/msg/CameraInfo", b"\x00\x01\x00\x00garbage"),
        ("/cam/image", "sensor_msgs/msg/CompressedImage", _compressed(9, png_bytes(good_image(9)))),
    ]
    words = {name: w for name, (_, w) in cases.items()}
    words |= {"nan K": "finite", "garbage info": "not a sensor_msgs/msg/CameraInfo"}
    return write_bag(path, messages), words


def test_broken_messages_through_bag(tmp_path: Path, model: list[str]) -> None:
    bag, words = _bad_content_bag(tmp_path / "in_bag")
    before = snapshot(tmp_path)
    run = _main(["bag", str(bag), str(tmp_path / "out"), *model])
    assert run.code == 1, run.err  # done, with skipped messages
    skipped = [line for line in run.err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == len(words)
    for name, w in words.items():
        assert any(w in line for line in skipped), (name, w, skipped)
    assert "wrote" in run.out and _frames_in(tmp_path / "out") == 2
    assert_unchanged(before)


def test_a_bag_without_one_usable_frame_is_nothing_done(tmp_path: Path, model: list[str]) -> None:
    text = TS.serialize_cdr(TS.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String")
    bag = write_bag(tmp_path / "in_bag", [("/cam/image", "sensor_msgs/msg/Image", text)] * 3)
    before = snapshot(tmp_path)
    run = _main(["bag", str(bag), str(tmp_path / "out"), *model])
    assert run.code == 2 and "no frame could be replayed" in run.err and "not a sensor_msgs/msg/Image" in run.err
    assert run.err.count("skipped: ") == 3 and not (tmp_path / "out").exists()
    assert_unchanged(before)
    info_only = write_bag(tmp_path / "info_bag", [("/cam/info", "sensor_msgs/msg/CameraInfo", _camera_info(0, K))])
    run = _main(["bag", str(info_only), str(tmp_path / "out"), *model])
    assert run.code == 2 and "no image topics" in run.err
    run = _main(
        [
            "bag",
            str(bag),
            str(tmp_path / "out"),
            "--image-topic",
            "/cam/image",
            "--camera-info-topic",
            "/cam/image",
            *model,
        ]
    )
    assert run.code == 2 and "is sensor_msgs/msg/Image, not sensor_msgs/msg/CameraInfo" in run.err


def _damaged_bags(tmp_path: Path) -> dict[str, tuple[Path, int, str]]:
    """name -> (bag, exit code, words)."""
    cases: dict[str, tuple[Path, int, str]] = {}
    big = good_bag(tmp_path / "big", frames=5, filler=600_000)  # three chunks
    mcap = next(big.glob("*.mcap"))
    with Reader(big) as r:
        chunks = [c.chunk_start_offset for c in r.storage.storages[0].chunks]
    assert len(chunks) == 3
    whole = mcap.read_bytes()

    def variant(name: str, data: bytes, code: int, words: str, keep_metadata: bool = True) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / mcap.name).write_bytes(data)
        if keep_metadata:
            shutil.copy(big / "metadata.yaml", folder / "metadata.yaml")
        cases[name] = (folder, code, words)

    variant("truncated", whole[: chunks[1] + 3000], 1, "cut short")
    variant("no_metadata_truncated", whole[: chunks[1] + 3000], 1, "cut short", keep_metadata=False)
    variant("magic_only", whole[:8], 2, "cannot open bag")
    variant("empty_file", b"", 2, "")
    variant("garbage", np.random.default_rng(0).bytes(4000), 2, "")
    crc = bytearray(whole)
    variant("corrupt_chunk", bytes(crc), 1, "checksum mismatch")
    corrupt_mcap_chunk(tmp_path / "corrupt_chunk" / mcap.name, chunks[1])
    cut_db = good_bag(tmp_path / "db_src", frames=6, storage=StoragePlugin.SQLITE3, filler=20_000)
    db = next(cut_db.glob("*.db3"))
    (tmp_path / "truncated_db3").mkdir()
    (tmp_path / "truncated_db3" / db.name).write_bytes(db.read_bytes()[: int(db.stat().st_size * 0.6)])
    cases["truncated_db3"] = (tmp_path / "truncated_db3", 1, "cut short")
    (tmp_path / "bad_yaml").mkdir()
    (tmp_path / "bad_yaml" / mcap.name).write_bytes(whole)
    (tmp_path / "bad_yaml" / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
    cases["bad_yaml"] = (tmp_path / "bad_yaml", 1, "read a salvaged copy")
    return cases


def test_damaged_bags(tmp_path: Path, model: list[str]) -> None:
    cases = _damaged_bags(tmp_path / "in")
    before = snapshot(tmp_path)
    for name, (bag, code, words) in sorted(cases.items()):
        out = tmp_path / f"out_{name}"
        run = _main(["bag", str(bag), str(out), *model])
        assert run.code == code and words in run.err, (name, run.code, run.err)
        assert str(bag) in run.err, (name, run.err)
        if code == 1:
            with Reader(out) as r:  # a complete, readable bag of what was done
                assert r.message_count > 0
        else:
            assert not out.exists(), name
    assert_unchanged(before)


@pytest.mark.parametrize(
    ("sig", "storage"), [(signal.SIGTERM, StoragePlugin.MCAP), (signal.SIGINT, StoragePlugin.SQLITE3)]
)
def test_a_signal_ends_the_replay_like_the_end_of_the_input(
    tmp_path: Path, tiny_checkpoint: Path, sig, storage
) -> None:
    src = good_bag(tmp_path / "in_bag", frames=400, storage=storage)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag", str(src), str(out)]
    proc = subprocess.Popen(
        cmd + ["--checkpoint", str(tiny_checkpoint), "--device", "cpu"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*.partial/new/out/*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # some frames into the replay
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if signal.Signals(sig).name in line]
    assert len(message) == 1 and f"{out} is a complete bag of them" in message[0]
    assert (out / "metadata.yaml").is_file()
    with Reader(out) as r:  # rosbags opens it: metadata, MCAP footer / sqlite consistent
        counts = {c.topic: c.msgcount for c in r.connections}
        assert len(list(r.messages())) == sum(counts.values())
    done = counts["/panoptic_depthlab/segments"]
    assert 0 < done < 400 and f"{done} frames" in stdout
    assert counts["/panoptic_depthlab/depth"] == done and counts["/cam/image"] in (done, done + 1)
    assert not list(tmp_path.glob(".*partial"))


# ============================================================================= the node
def test_compressed_images_and_camera_info_through_the_node(ros_context, tiny_checkpoint: Path) -> None:
    """Every broken compressed image and CameraInfo is dropped, warned and counted; the node goes on."""
    from sensor_msgs.msg import CompressedImage

    from node_utils import NodeHarness, camera_info_msg

    h = NodeHarness(
        ros_context,
        tiny_checkpoint,
        params={"qos_reliability": "reliable", "qos_depth": 100, "image_transport": "compressed"},
    )
    try:
        h.wait_connected(compressed=True)
        images = [(data, "png") for data, _, _ in bad_image_files().values()]
        images.append((png_bytes(good_image(5)), "16UC1; compressedDepth"))
        infos = [np.full(9, np.nan), np.zeros(9), np.array([-5.0, 0, 64, 0, 100, 32, 0, 0, 1])]
        for i, (data, fmt) in enumerate(images):
            h.compressed_pub.publish(CompressedImage(format=fmt, data=data))
            h.wait_for(lambda n=i + 1: h.counts()["dropped_bad_input"] == n, 30, f"bad image {i}")
        for i, k in enumerate(infos):
            h.info_pub.publish(camera_info_msg(k, width=128, height=64))
            h.wait_for(lambda n=i + 1: h.counts()["camera_info_dropped_bad_input"] == n, 30, f"bad info {i}")
        good = CompressedImage(format="png", data=png_bytes(good_image(6)))
        good.header.stamp.sec = 77
        h.compressed_pub.publish(good)
        h.wait_for(lambda: h.answered((77, 0)), 60, "the good frame after the bad ones")
        counts = h.counts()
        assert counts["dropped_bad_input"] == len(images) and counts["processed"] == 1 and counts["errors"] == 0
        assert counts["received"] == len(images) + 1  # images only
        assert counts["camera_info_received"] == counts["camera_info_dropped_bad_input"] == len(infos)
        assert h.node.pipeline.camera_k is None
    finally:
        h.close()
