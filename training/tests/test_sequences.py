"""Synthetic drives as video sequences: moving things, true motion, the Cityscapes-DVPS layout, the loader."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from panoptic_depthlab_ros.ego_motion import EgoMotion
from panoptic_depthlab_training import cli
from panoptic_depthlab_training.cityscapes import DatasetError
from panoptic_depthlab_training.synth import SceneGenerator
from panoptic_depthlab_training.synth.drive import make_drive, render_drive, thing_paths
from panoptic_depthlab_training.synth.sequences import (
    START_NS,
    generate_sequences,
    panoptic_ids,
    sequence_drive,
)
from panoptic_depthlab_training.video_dataset import (
    DEPTH_PNG_SCALE,
    list_sequences,
    load_video_frame,
    read_sequence,
    video_stem,
)

H, W = 96, 192
FPS = 10.0
FRAMES = 6
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two drives of six frames, 96x192, split val."""
    out = tmp_path_factory.mktemp("sequences")
    generate_sequences(out, sequences=2, frames=FRAMES, seed=3, fps=FPS, height=H, width=W, progress=False)
    return out


@pytest.fixture(scope="module")
def samples(root):
    return [list(read_sequence(seq)) for seq in list_sequences(root, "val")]


def test_drives_have_crossing_oncoming_and_overtaking_things():
    seen = {"crossing": 0, "oncoming": 0, "overtaking": 0, "two-lane drives": 0}
    for index in range(6):
        drive = sequence_drive(5, "val", index, frames=30, fps=FPS)
        ids, center, velocity = thing_paths(drive)
        ego = drive.ego_speed_mps
        assert 6.0 <= ego <= 11.0
        crossing = (np.abs(velocity[:, 0]) > 0.5) & (velocity[:, 2] == 0)
        assert crossing.any(), index  # every drive has someone crossing the road ahead
        # ... ahead of where the camera ends, and on the road while the drive lasts
        assert (center[crossing, 2] > ego * drive.times[-1]).all()
        seen["crossing"] += int(crossing.sum())
        seen["oncoming"] += int((velocity[:, 2] < -5).sum())
        if drive.scene.forward_lanes > 1:
            seen["two-lane drives"] += 1
            overtaking = (velocity[:, 2] > ego) & (center[:, 2] < 0)  # starts behind, faster than the camera
            assert overtaking.any(), index
            seen["overtaking"] += int(overtaking.any())
    assert seen["oncoming"] > 0 and seen["two-lane drives"] > 0, seen


def _ground_box(footprint, drive, t: float) -> tuple[float, float, float, float]:
    """(x, z, half x, half z) of a footprint's axis-aligned ground box at time ``t``, as rendered."""
    vx, vz = footprint.velocity
    if footprint.lane == drive.scene.ego_lane:
        vz = max(vz, drive.ego_speed_mps)
    c, s = abs(np.cos(footprint.yaw)), abs(np.sin(footprint.yaw))
    hx, hz = footprint.half
    return footprint.center[0] + vx * t, footprint.center[1] + vz * t, c * hx + s * hz, s * hx + c * hz


def test_crossing_and_overtaking_things_pass_through_nothing():
    checked = 0
    for index in range(6):
        drive = sequence_drive(5, "val", index, frames=30, fps=FPS)
        footprints = drive.scene.footprints
        agents = [
            f
            for f in footprints
            if f.velocity[0] != 0 or (f.velocity[1] > drive.ego_speed_mps and f.lane >= 0 and f.center[1] < 0)
        ]
        assert agents
        for t in drive.times.tolist():
            for agent in agents:
                ax, az, ahx, ahz = _ground_box(agent, drive, t)
                for other in footprints:
                    if set(other.instance_ids) & set(agent.instance_ids):
                        continue  # itself, or the other half of a cyclist
                    ox, oz, ohx, ohz = _ground_box(other, drive, t)
                    assert not (abs(ax - ox) < ahx + ohx and abs(az - oz) < ahz + ohz), (index, t)
                    checked += 1
    assert checked > 1000


def test_layout_is_cityscapes_dvps(root):
    names = sorted(p.name for p in (root / "video_sequence" / "val").iterdir())
    assert len(names) == 2 * FRAMES * 4
    pattern = re.compile(
        r"^(\d{6})_(\d{6})_synthcity_\1_\2_(leftImg8bit\.png|gtFine_instanceTrainIds\.png|depth\.png|frame\.json)$"
    )
    assert all(pattern.match(n) for n in names), names[:4]
    stem = "000001_000002_synthcity_000001_000002"
    folder = root / "video_sequence" / "val"
    pan = cv2.imread(str(folder / f"{stem}_gtFine_instanceTrainIds.png"), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(folder / f"{stem}_depth.png"), cv2.IMREAD_UNCHANGED)
    assert pan.dtype == np.uint16 and depth.dtype == np.uint16 and pan.shape == depth.shape == (H, W)
    assert set(np.unique(pan // 1000).tolist()) <= set(range(19)) | {32}  # trainIds, 32 void
    record = json.loads((folder / f"{stem}_frame.json").read_text())
    assert record["stamp_ns"] == START_NS + 200_000_000
    assert set(record) == {"stamp_ns", "K", "camera", "things"}
    assert set(record["camera"]) == {"velocity", "angular_velocity"}
    assert {"id", "label", "center", "velocity"} == set(record["things"][0])


def test_loader_reads_frames_in_order_exactly(root, samples):
    assert [s.sequence for s in list_sequences(root, "val")] == [0, 1]
    gen = SceneGenerator(H, W)
    for index, sequence in enumerate(samples):
        assert [s.frame for s in sequence] == list(range(FRAMES))
        assert [s.stamp_ns for s in sequence] == [START_NS + i * 100_000_000 for i in range(FRAMES)]
        drive = sequence_drive(3, "val", index, frames=FRAMES, fps=FPS)
        for sample, truth in zip(sequence, render_drive(gen, drive), strict=True):
            frame = truth.frame
            np.testing.assert_array_equal(sample.image, frame.image_rgb)
            np.testing.assert_array_equal(sample.K, frame.K)
            np.testing.assert_array_equal(sample.panoptic, panoptic_ids(frame.instance_ids))
            np.testing.assert_array_equal(sample.depth_valid, frame.depth_valid)
            assert np.abs(sample.depth - frame.depth).max() <= 0.5 / DEPTH_PNG_SCALE + 1e-6
            assert set(sample.velocity) == set(np.unique(sample.panoptic[sample.panoptic % 1000 > 0]).tolist())
            assert sample.camera_motion == EgoMotion(linear=truth.camera_velocity, angular=(0.0, 0.0, 0.0))


def test_frame_json_has_the_camera_motion_and_parked_things_move_against_it(root, samples):
    # The camera drives at the ego speed along the street (world +z), pitched down by the
    # scene's pitch and never turning: in its optical frame it moves forward and up.
    folder = root / "video_sequence" / "val"
    parked_seen = moving_seen = 0
    for index, sequence in enumerate(samples):
        drive = sequence_drive(3, "val", index, frames=FRAMES, fps=FPS)
        ego, pitch = drive.ego_speed_mps, drive.scene.pitch
        assert 6.0 <= ego <= 11.0 and 0.01 <= pitch <= 0.05
        ids, _, world_velocity = thing_paths(drive)
        parked = set(panoptic_ids(ids[np.all(world_velocity == 0, axis=1)]).tolist())
        for frame, sample in enumerate(sequence):
            record = json.loads((folder / f"{video_stem('synthcity', index, frame)}_frame.json").read_text())
            camera = record["camera"]
            assert camera["angular_velocity"] == [0.0, 0.0, 0.0]
            np.testing.assert_allclose(
                camera["velocity"], [0.0, -ego * math.sin(pitch), ego * math.cos(pitch)], rtol=1e-15, atol=0
            )
            assert math.hypot(*camera["velocity"]) == pytest.approx(ego, rel=1e-12)
            assert sample.camera_motion == EgoMotion(linear=tuple(camera["velocity"]), angular=(0.0, 0.0, 0.0))
            for thing in record["things"]:
                if thing["id"] in parked:  # still in the world: exactly minus the camera's velocity
                    assert thing["velocity"] == [-v for v in camera["velocity"]], thing
                    # ... which is what the tracker takes for a thing at rest, given that motion
                    at_rest = sample.camera_motion.static_velocity(np.array([thing["center"]]))[0]
                    assert at_rest.tolist() == thing["velocity"]
                    parked_seen += 1
                else:
                    assert thing["velocity"] != [-v for v in camera["velocity"]], thing
                    moving_seen += 1
    assert parked_seen >= 40 and moving_seen >= 100, (parked_seen, moving_seen)


def test_instance_ids_are_consistent_over_a_sequence():
    # the drive's rendering: one panoptic id per rendered instance, the same in every frame
    gen = SceneGenerator(H, W)
    drive = sequence_drive(3, "val", 0, frames=FRAMES, fps=FPS)
    mapping: dict[int, int] = {}
    for truth in render_drive(gen, drive):
        inst = truth.frame.instance_ids
        pan = panoptic_ids(inst)
        for i, p in zip(inst[inst >= 1000].tolist(), pan[inst >= 1000].tolist(), strict=True):
            assert mapping.setdefault(i, p) == p
    assert len(set(mapping.values())) == len(mapping) > 5
    assert all(p // 1000 in range(11, 19) and p % 1000 > 0 for p in mapping.values())  # things, never crowd


def test_velocity_is_the_finite_difference_of_the_centres(samples):
    checked = 0
    for sequence in samples:
        for a, b in zip(sequence, sequence[1:], strict=False):
            dt = (b.stamp_ns - a.stamp_ns) / 1e9
            for thing, velocity in a.velocity.items():
                if thing not in b.center:
                    continue
                ca, cb = np.array(a.center[thing]), np.array(b.center[thing])
                # float64 centres of at most a few hundred metres: a few ulps each, over dt
                tol = 8 * EPS * max(np.abs(ca).max(), np.abs(cb).max()) / dt + 8 * EPS * np.abs(velocity).max()
                np.testing.assert_allclose((cb - ca) / dt, velocity, rtol=0, atol=tol)
                np.testing.assert_allclose(b.velocity[thing], velocity, rtol=0, atol=tol)  # constant
                checked += 1
    assert checked > 50


def test_velocity_moves_the_rendered_pixels(samples):
    # Back-project a thing's pixels in frame i, move them by velocity * dt (the camera does
    # not rotate, so the camera frames differ by a translation that velocity includes),
    # project into frame i + 3: they land on the same thing at the predicted depth.
    # Pixel rounding moves a point by at most half a pixel: the depth it reads differs by
    # the surface's depth change over that, small for most pixels (hence medians).
    errors = {"true": [], "off by 1 m/s": []}
    for a, b in [(sequence[i], sequence[i + 3]) for sequence in samples for i in range(FRAMES - 3)]:
        dt = (b.stamp_ns - a.stamp_ns) / 1e9
        k = a.K
        v_img, u_img = np.mgrid[0:H, 0:W]
        for thing, velocity in a.velocity.items():
            mask = (a.panoptic == thing) & a.depth_valid
            if mask.sum() < 80 or thing not in b.velocity:
                continue
            z = a.depth[mask].astype(np.float64)
            pts = np.stack([(u_img[mask] - k[0, 2]) * z / k[0, 0], (v_img[mask] - k[1, 2]) * z / k[1, 1], z], axis=1)
            for name, v in (("true", np.array(velocity)), ("off by 1 m/s", np.array(velocity) + [0, 0, 1.0])):
                moved = pts + v * dt
                u = np.rint(moved[:, 0] / moved[:, 2] * k[0, 0] + k[0, 2]).astype(int)
                w = np.rint(moved[:, 1] / moved[:, 2] * k[1, 1] + k[1, 2]).astype(int)
                inside = (u >= 0) & (u < W) & (w >= 0) & (w < H)
                hit = inside.copy()
                hit[inside] = (b.panoptic[w[inside], u[inside]] == thing) & b.depth_valid[w[inside], u[inside]]
                if hit.mean() < 0.8:
                    continue  # occluded or leaving the image: nothing to compare
                rel = np.abs(b.depth[w[hit], u[hit]] - moved[hit, 2]) / moved[hit, 2]
                errors[name].append(float(np.median(rel)))
    assert len(errors["true"]) >= 5
    assert np.median(errors["true"]) < 0.005
    assert np.median(errors["off by 1 m/s"]) > 3 * np.median(errors["true"])


def test_same_arguments_same_files(root, tmp_path):
    # a drive depends on its length (the street, where crossings happen): same frames, same drive
    generate_sequences(tmp_path, sequences=1, frames=FRAMES, seed=3, fps=FPS, height=H, width=W, progress=False)
    for path in sorted((tmp_path / "video_sequence" / "val").iterdir()):
        assert path.read_bytes() == (root / "video_sequence" / "val" / path.name).read_bytes(), path.name


def test_make_drive_refuses_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 1 frame"):
        make_drive(rng, frames=0, fps=10)
    with pytest.raises(ValueError, match="fps must be positive"):
        make_drive(rng, frames=3, fps=0)


def _copy(root: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def test_loader_errors_name_the_file(root, tmp_path):
    with pytest.raises(DatasetError, match=r"no directory .*video_sequence/train"):
        list_sequences(root, "train")
    data = _copy(root, tmp_path)
    folder = data / "video_sequence" / "val"
    stem = "000000_000001_synthcity_000000_000001"
    (folder / f"{stem}_frame.json").unlink()
    sequence = list_sequences(data, "val")[0]
    with pytest.raises(DatasetError, match=rf"missing .*{stem}_frame\.json"):
        list(read_sequence(sequence))
    frame_json = folder / f"{stem}_frame.json"
    frame_json.write_text(json.dumps({"stamp_ns": 1.5, "K": np.eye(3).tolist(), "things": []}))
    with pytest.raises(DatasetError, match=rf"{stem}_frame\.json: stamp_ns must be an integer"):
        load_video_frame(sequence.frames[1])
    frame_json.write_text(json.dumps({"stamp_ns": START_NS, "K": np.eye(3).tolist(), "things": []}))
    with pytest.raises(DatasetError, match=rf"{stem}_frame\.json: stamp_ns {START_NS} does not follow"):
        list(read_sequence(sequence))
    (folder / f"{stem}_depth.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=rf"{stem}_depth\.png: unreadable image"):
        load_video_frame(sequence.frames[1])
    (folder / "nonsense_leftImg8bit.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"nonsense_leftImg8bit\.png: the name does not start with SEQUENCE_FRAME_"):
        list_sequences(data, "val")


def test_folders_written_without_the_camera_motion_still_load(root, samples, tmp_path):
    data = _copy(root, tmp_path)
    folder = data / "video_sequence" / "val"
    for path in folder.glob("000000_*_frame.json"):  # sequence 0 as written before the field existed
        record = json.loads(path.read_text())
        del record["camera"]
        path.write_text(json.dumps(record))
    old, new = (list(read_sequence(seq)) for seq in list_sequences(data, "val"))
    assert [s.camera_motion for s in old] == [None] * FRAMES
    assert [s.camera_motion for s in new] == [s.camera_motion for s in samples[1]]
    for sample, before in zip(old, samples[0], strict=True):
        assert (sample.stamp_ns, sample.velocity, sample.center) == (before.stamp_ns, before.velocity, before.center)
        np.testing.assert_array_equal(sample.K, before.K)
        np.testing.assert_array_equal(sample.panoptic, before.panoptic)
    # A camera motion that is there must be whole and finite.
    sequence = list_sequences(data, "val")[1]
    path = sequence.frames[2].frame_json
    record = json.loads(path.read_text())
    for camera, message in (
        ([1.0, 2.0, 3.0], "camera must be an object with velocity and angular_velocity"),
        ({"velocity": [0.0, 0.0, 8.0]}, r"camera\.angular_velocity must be a list of 3 numbers, got None"),
        ({"velocity": [0.0, 8.0], "angular_velocity": [0, 0, 0]}, r"camera\.velocity must be a list of 3 numbers"),
        ({"velocity": [0.0, float("nan"), 8.0], "angular_velocity": [0, 0, 0]}, r"camera\.velocity must be finite"),
    ):
        path.write_text(json.dumps({**record, "camera": camera}))
        with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: {message}"):
            load_video_frame(sequence.frames[2])


def test_cli_synth_sequences(tmp_path, capsys):
    code = cli.main(["synth", str(tmp_path), "--sequences", "1", "--frames", "2", "--height", "32", "--width", "64"])
    assert code == 0
    assert "wrote 1 sequences x 2 frames (32x64, 10 Hz)" in capsys.readouterr().out
    (sequence,) = list_sequences(tmp_path, "val")
    assert [f.frame for f in sequence.frames] == [0, 1]
    assert not (tmp_path / "leftImg8bit").exists()  # no single frames besides


def test_synth_replaces_only_its_own_output_whole(tmp_path, capsys, monkeypatch):
    small = ["--height", "32", "--width", "64"]
    drives = ["synth", str(tmp_path), "--sequences", "2", "--frames", "2", *small]

    def refused(args: list[str], *words: str) -> None:
        capsys.readouterr()  # earlier runs' progress bars
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err

    assert cli.main(drives) == 0
    val = tmp_path / "video_sequence" / "val"
    assert json.loads((val / "panoptic_depthlab.json").read_text())["seed"] == 0
    refused(drives, f"{val} exists; pass --overwrite")
    # The other split goes beside the first; a re-run with fewer drives leaves none of the old.
    assert cli.main([*drives, "--split", "train"]) == 0
    assert cli.main(["synth", str(tmp_path), "--sequences", "1", "--frames", "2", *small, "--overwrite"]) == 0
    assert [len(list_sequences(tmp_path, s)) for s in ("val", "train")] == [1, 2]
    # A failed run keeps the previous output and leaves no staging folder.
    before = sorted(p.name for p in val.iterdir())
    import panoptic_depthlab_training.synth.sequences as seq_module

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seq_module, "generate_sequences", broken)
    refused([*drives, "--overwrite"], "No space left on device")
    monkeypatch.undo()
    assert sorted(p.name for p in val.iterdir()) == before
    assert not list((tmp_path / "video_sequence").glob(".*"))
    # Folders synth did not write are left as they are, even with --overwrite.
    frames = tmp_path / "frames"
    (frames / "leftImg8bit").mkdir(parents=True)
    (frames / "leftImg8bit" / "mine.txt").write_text("keep")
    args = ["synth", str(frames), "--train", "1", "--val", "0", *small, "--overwrite"]
    refused(args, f"{frames / 'leftImg8bit'} exists and was not written by panoptic-depthlab-training synth")
    assert (frames / "leftImg8bit" / "mine.txt").read_text() == "keep" and not (frames / "gtFine").exists()
    (frames / "leftImg8bit" / "mine.txt").unlink()
    (frames / "leftImg8bit").rmdir()
    assert cli.main(args) == 0
    assert cli.main([*args[:5], "1", *args[6:]]) == 0  # its own output: replaced, now with a val frame
    assert {p.name for p in frames.iterdir()} == {"leftImg8bit", "gtFine", "disparity", "camera"}
    assert len(list((frames / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))) == 1
    assert cli.main(["verify-cityscapes", str(frames)]) == 0


def test_sigterm_stops_synth_and_its_workers_and_keeps_the_previous_dataset(tmp_path):
    out = tmp_path / "synth_sigterm_out"
    small = ["--height", "32", "--width", "64"]
    assert cli.main(["synth", str(out), "--train", "1", "--val", "0", *small]) == 0
    marker = (out / "leftImg8bit" / "panoptic_depthlab.json").read_text()
    cmd = [sys.executable, "-m", "panoptic_depthlab_training.cli", "synth", str(out), "--train", "5000"]
    proc = subprocess.Popen(
        [*cmd, "--val", "0", *small, "--workers", "2", "--overwrite"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not list(out.glob(".leftImg8bit.*.partial/new/leftImg8bit/train/*/*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "synth: terminated (SIGTERM)" in stderr
    assert (out / "leftImg8bit" / "panoptic_depthlab.json").read_text() == marker  # the previous dataset
    assert not list(out.glob(".*.partial"))

    def rendering() -> list[str]:  # worker processes still at it (forked: the parent's command line)
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if str(out).encode() in cmdline.read_bytes():
                    found.append(cmdline.parent.name)
            except OSError:
                pass  # ended meanwhile
        return found

    deadline = time.monotonic() + 10
    while rendering() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rendering() == []
