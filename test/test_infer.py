"""Offline CLI on a folder with images, a broken image and a short video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from panoptic_depthlab_ros.errors import InputError, PanopticDepthLabError
from panoptic_depthlab_ros.infer import cityscapes_panoptic, depth_to_png_mm, run_infer
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import REPO


def _img(i: int) -> np.ndarray:
    img = np.random.default_rng(i).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    img[:20] = (180, 140, 90)
    return img


def test_infer_folder_with_broken_image_and_video(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"frame{i}.png"), _img(i))
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    video = cv2.VideoWriter(str(src / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 64))
    for i in range(3):
        video.write(_img(10 + i))
    video.release()
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "panoptic_depthlab_ros.cli",
            "infer",
            str(src),
            "--out",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr  # done, with a skipped input
    assert f"skipped: {src / 'broken.png'}: unreadable image" in proc.stderr
    assert "for 5 frames" in proc.stdout  # 2 images + 3 video frames
    for stem in ("frame0", "frame1", "clip_000000", "clip_000002"):
        for suffix in ("_overlay.png", "_depth.png", "_depth.npy", "_panoptic.png", "_segments.json"):
            assert (out / f"{stem}{suffix}").is_file(), stem + suffix
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3

    # The files hold the predictor's result for that image.
    pred = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    image = cv2.imread(str(src / "frame0.png"))
    r = pred.predict(image)
    np.testing.assert_allclose(np.load(out / "frame0_depth.npy"), r.depth)
    mm = cv2.imread(str(out / "frame0_depth.png"), cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and np.abs(mm.astype(np.float64) / 1000 - r.depth).max() <= 0.0005 + 1e-6
    rgb = cv2.imread(str(out / "frame0_panoptic.png"))[:, :, ::-1].astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    expected_ids, info = cityscapes_panoptic(r, pred.classes)
    np.testing.assert_array_equal(ids, expected_ids)
    doc = json.loads((out / "frame0_segments.json").read_text())
    assert doc["segments_info"] == info
    assert [s["id"] for s in doc["segments"]] == [s.id for s in r.segments]


def test_inputs_with_the_same_stem_keep_their_own_outputs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "in"
    for rel, i in (("cam0/000001.png", 0), ("cam1/000001.png", 1), ("cam1/a.png", 2), ("cam1/a.jpg", 3)):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / rel), _img(i))
    clip = cv2.VideoWriter(str(src / "cam1" / "x.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 64))
    clip.write(_img(4))
    clip.release()
    cv2.imwrite(str(src / "x_000000.png"), _img(5))  # the video's first frame would be named so too
    pred = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    summary = run_infer([src], tmp_path / "out", predictor=pred, progress=False)
    assert summary.frames == 6 and not summary.skipped
    out = tmp_path / "out"
    sources = {
        f.name[: -len("_segments.json")]: json.loads(f.read_text())["source"] for f in out.glob("*_segments.json")
    }
    assert sources == {
        "cam0_000001": str(src / "cam0/000001.png"),
        "cam1_000001": str(src / "cam1/000001.png"),
        "cam1_a": str(src / "cam1/a.jpg"),  # sorted: .jpg before .png
        "cam1_a-2": str(src / "cam1/a.png"),
        "x_000000": str(src / "cam1/x.avi") + " frame 0",
        "x_000000-2": str(src / "x_000000.png"),
    }
    for name, source in sources.items():  # each file holds its own input's result
        if source.endswith(".png"):
            depth = pred.predict(cv2.imread(source)).depth
            np.testing.assert_allclose(np.load(out / f"{name}_depth.npy"), depth, rtol=1e-5)
    assert (out / "x_overlay.mp4").is_file()


def test_infer_flip_average(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cv2.imwrite(str(tmp_path / "frame.png"), _img(0))
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "infer", str(tmp_path / "frame.png")]
    cmd += ["--out", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--flip-average"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    image = cv2.imread(str(tmp_path / "frame.png"))
    expected = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", flip_average=True).predict(image).depth
    plain = Predictor.from_checkpoint(tiny_checkpoint, device="cpu").predict(image).depth
    got = np.load(tmp_path / "out" / "frame_depth.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # the flag reached the predictor


def test_scales_option_reaches_the_predictor(tiny_checkpoint: Path) -> None:
    from panoptic_depthlab_ros.cli import _predictor, get_args_parser

    args = get_args_parser().parse_args(["infer", "x.png", "--out", "o", "--checkpoint", str(tiny_checkpoint)])
    assert args.scales == (1.0,) and _predictor(args).scales == (1.0,)
    args = get_args_parser().parse_args(
        ["bag", "in", "out", "--checkpoint", str(tiny_checkpoint), "--scales", "1.25,1", "--device", "cpu"]
    )
    assert _predictor(args).scales == (1.0, 1.25)


def test_input_scale_option_reaches_the_predictor(tiny_checkpoint: Path) -> None:
    from panoptic_depthlab_ros.cli import _predictor, get_args_parser

    base = ["infer", "x.png", "--out", "o", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert _predictor(get_args_parser().parse_args(base)).model_config.input_scale == 1.0  # the checkpoint's
    zoomed = _predictor(get_args_parser().parse_args([*base, "--input-scale", "1.5"]))
    assert zoomed.model_config.input_scale == 1.5
    assert zoomed.predict(_img(0)).panoptic.shape == _img(0).shape[:2]
    with pytest.raises(PanopticDepthLabError, match=r"input_scale must lie in 0.25..4, got 8.0"):
        _predictor(get_args_parser().parse_args([*base, "--input-scale", "8"]))


def test_fx_puts_depth_in_the_cameras_metres(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cv2.imwrite(str(tmp_path / "frame.png"), _img(0))
    pred = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    pred.model_config = pred.model_config.with_(depth_focal_px=100.0)
    run_infer([tmp_path / "frame.png"], tmp_path / "plain", predictor=pred, progress=False)
    run_infer([tmp_path / "frame.png"], tmp_path / "fx", predictor=pred, fx=150.0, progress=False)
    plain, scaled = np.load(tmp_path / "plain" / "frame_depth.npy"), np.load(tmp_path / "fx" / "frame_depth.npy")
    np.testing.assert_allclose(scaled, 1.5 * plain, rtol=1e-6)
    segments = json.loads((tmp_path / "fx" / "frame_segments.json").read_text())["segments"]
    assert segments and all(s["centroid"][2] > 0 for s in segments)  # K known: 3D centroids
    with pytest.raises(InputError, match="--fx"):
        run_infer([tmp_path / "frame.png"], tmp_path / "bad", predictor=pred, fx=0.0, progress=False)


def test_cityscapes_ids_and_depth_png() -> None:
    from panoptic_depthlab_ros.metadata import cityscapes_metadata
    from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth

    pan = np.array([[0, 13001, -1], [13002, 0, 11001]], np.int32)
    segs = [
        SegmentDepth(
            id=i,
            category_id=i // 1000,
            label="",
            is_thing=i >= 11000,
            score=1.0,
            area=1,
            x_min=0,
            y_min=0,
            x_max=0,
            y_max=0,
        )
        for i in (0, 11001, 13001, 13002)
    ]
    r = PanopticDepthResult(
        panoptic=pan, semantic=np.zeros_like(pan, np.uint8), depth=np.zeros((2, 3), np.float32), segments=segs
    )
    ids, info = cityscapes_panoptic(r, cityscapes_metadata())
    # road labelId 7 (stuff), car labelId 26, person labelId 24; void 0.
    assert ids.tolist() == [[7, 26001, 0], [26002, 7, 24001]]
    assert [(d["id"], d["category_id"]) for d in info] == [(7, 7), (24001, 24), (26001, 26), (26002, 26)]
    depth = np.array([1.2344, np.nan, -1.0, 70.0, 0.0], np.float32)  # 70 m > 65.535 m: not representable
    assert depth_to_png_mm(depth).tolist() == [1234, 0, 0, 0, 0]


def _still_video(path: Path, frames: int, fps: float) -> Path:
    """The same picture ``frames`` times (lossless: every frame decodes alike)."""
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (128, 64))
    for _ in range(frames):
        video.write(_img(7))
    video.release()
    return path


def test_infer_tracks_the_things_of_a_video(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _still_video(src / "drive.mkv", 4, 5.0)
    cv2.imwrite(str(src / "still.png"), _img(7))
    pred = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    summary = run_infer([src], tmp_path / "out", predictor=pred, progress=False)
    assert summary.frames == 5 and summary.skipped == []
    docs = [json.loads((tmp_path / "out" / f"drive_{i:06d}_segments.json").read_text()) for i in range(4)]
    assert all(d["tracked"] for d in docs)
    things = [{s["id"]: (s["track_id"], s["track_age"]) for s in d["segments"] if s["is_thing"]} for d in docs]
    # Ids show once a track is confirmed (its third frame); frames seen count from the first.
    assert things[0] and all(track == (0, 1) for track in things[0].values())
    assert all(track_id > 0 for track_id, _ in things[2].values())
    for i, frame in enumerate(things):  # one id per thing over the video, ageing frame by frame
        ids = {pid: track_id if i >= 2 else 0 for pid, (track_id, _) in things[2].items()}
        assert frame == {pid: (ids[pid], i + 1) for pid in things[0]}
    # The tracked panoptic PNG: track ids as instances (0 before a track is confirmed), else as _panoptic.png.
    for i, d in enumerate(docs):
        assert d["tracked_panoptic_png"] == f"drive_{i:06d}_tracked_panoptic.png"
        rgb = cv2.imread(str(tmp_path / "out" / d["tracked_panoptic_png"]))[:, :, ::-1].astype(np.int64)
        video = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        rgb = cv2.imread(str(tmp_path / "out" / d["panoptic_png"]))[:, :, ::-1].astype(np.int64)
        pan = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        for info, seg in zip(d["segments_info"], d["segments"], strict=True):  # same order
            want = info["category_id"] * 1000 + seg["track_id"] if seg["track_id"] else info["category_id"]
            assert set(np.unique(video[pan == info["id"]]).tolist()) == {want}
        assert any(s["track_id"] for s in d["segments"]) == (i >= 2)
    stuff = [s for d in docs for s in d["segments"] if not s["is_thing"]]
    assert stuff and all(s["track_id"] == 0 and s["velocity"] == [None] * 3 for s in stuff)
    # A video has no odometry: nothing is found at rest (a JSON false in every segment, things too).
    assert all(s["at_rest"] is False for d in docs for s in d["segments"])
    # Time is the frame index over the frame rate (0.2 s): a still thing's velocity, once known, is 0.
    for s in docs[-1]["segments"]:
        if s["is_thing"] and s["velocity"][2] is not None:
            assert abs(s["velocity"][2]) < 1e-6 and s["time_to_contact"] == "inf"
    # A single image is no sequence: not tracked.
    still = json.loads((tmp_path / "out" / "still_segments.json").read_text())
    assert not still["tracked"] and all(s["track_id"] == 0 for s in still["segments"])
    assert still["tracked_panoptic_png"] is None and not (tmp_path / "out" / "still_tracked_panoptic.png").exists()

    run_infer([src / "drive.mkv"], tmp_path / "off", predictor=pred, progress=False, tracking=False)
    off = json.loads((tmp_path / "off" / "drive_000003_segments.json").read_text())
    assert not off["tracked"] and all(s["track_id"] == 0 for s in off["segments"])
