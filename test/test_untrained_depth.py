"""No depth that was never learned.

A checkpoint records whether its depth branch was trained (a Detectron2 conversion's was
not; the trainer marks it). ``info`` says so; the predictor, ``infer``, ``bag`` and the node
give panoptic and semantic outputs as usual and nothing derived from depth unless asked
(``untrained_depth``, ``--untrained-depth``). Files older than the record: conversions list
their initialised depth keys, trainer output its depth loss weight; the bundled model keeps
its depth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from node_utils import NodeHarness, camera_info_msg, image_msg, random_image
from panoptic_depthlab_ros import cli
from panoptic_depthlab_ros.bag import replay_bag
from panoptic_depthlab_ros.checkpoint import (
    bundled_checkpoint,
    describe_checkpoint,
    format_description,
    legacy_depth_trained,
    load_checkpoint,
)
from panoptic_depthlab_ros.errors import CheckpointError
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.visualize import overlay
from pdl_testing import write_image_bag

K = np.array([[100.0, 0, 64], [0, 100.0, 32], [0, 0, 1]])


def _rewrite_header(src: Path, dst: Path, change) -> Path:
    """``src`` with its metadata passed through ``change(meta)`` (same weights)."""
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    change(meta)
    save_file(load_file(src), dst, metadata=meta)
    return dst


def test_a_conversion_records_an_untrained_depth_branch_and_info_says_so(converted_checkpoint: Path) -> None:
    desc = describe_checkpoint(converted_checkpoint)
    assert desc["model_config"]["depth_trained"] is False and desc["depth_trained_inferred"] is False
    assert "depth: NOT TRAINED" in format_description(desc)
    assert load_checkpoint(converted_checkpoint).model_config.depth_trained is False


def test_the_bundled_model_predates_the_record_and_keeps_its_depth() -> None:
    desc = describe_checkpoint(bundled_checkpoint())
    assert "depth_trained" not in json.loads(_meta(bundled_checkpoint())["model_config"])  # an older file
    assert desc["model_config"]["depth_trained"] is True and desc["depth_trained_inferred"] is True
    assert "depth: 1-150 m, learnt for fx = 424.2 px (trained: this older file does not record it" in (
        format_description(desc)
    )
    result = Predictor.from_checkpoint(bundled_checkpoint(), device="cpu").predict(random_image(1, 96, 192))
    assert result.depth is not None and np.isfinite(result.depth).all()


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def test_older_files_are_judged_by_how_they_were_made(tmp_path: Path, converted_checkpoint: Path) -> None:
    assert legacy_depth_trained({"initialized_keys": ["depth_head.predictor.weight"]}) is False
    assert legacy_depth_trained({"training": {"config": {"loss": {"depth_weight": 5.0}}}}) is True
    assert legacy_depth_trained({"training": {"config": {"loss": {"depth_weight": 0}}}}) is False
    assert legacy_depth_trained({"purpose": "tests"}) is True

    def drop_record(meta: dict[str, str]) -> None:
        config = json.loads(meta["model_config"])
        del config["depth_trained"]
        meta["model_config"] = json.dumps(config)

    old = _rewrite_header(converted_checkpoint, tmp_path / "old_conversion.safetensors", drop_record)
    assert load_checkpoint(old).model_config.depth_trained is False  # it lists its initialised depth keys
    assert describe_checkpoint(old)["depth_trained_inferred"] is True


@pytest.mark.parametrize("value", ['"yes"', "1", "null"])
def test_a_bad_record_is_refused_at_load_naming_the_field(tmp_path: Path, tiny_checkpoint: Path, value: str) -> None:
    def corrupt(meta: dict[str, str]) -> None:
        config = json.loads(meta["model_config"])
        config["depth_trained"] = json.loads(value)
        meta["model_config"] = json.dumps(config)

    bad = _rewrite_header(tiny_checkpoint, tmp_path / "bad.safetensors", corrupt)
    with pytest.raises(
        CheckpointError, match=r"bad.safetensors: invalid metadata: model_config: depth_trained must be true or false"
    ):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="depth_trained must be true or false"):
        describe_checkpoint(bad)
    assert cli.main(["info", str(bad)]) == 2


def test_the_predictor_gives_no_depth_from_an_untrained_branch(converted_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(converted_checkpoint, device="cpu")
    assert not predictor.depth_enabled
    # The depth branch is not even run (raw() still shows everything the network computes).
    predictor.network.depth_head.forward = None  # type: ignore[method-assign, assignment, union-attr]
    image = random_image(2, 128, 256)
    result = predictor.predict(image, camera_k=K)
    assert result.depth is None and result.segments
    for seg in result.segments:
        assert seg.depth_valid_pixels == 0 and math.isnan(seg.depth_mean) and math.isnan(seg.depth_median)
        assert all(math.isnan(c) for c in seg.centroid)
    asked = Predictor.from_checkpoint(converted_checkpoint, device="cpu", untrained_depth=True)
    with_depth = asked.predict(image, camera_k=K)
    np.testing.assert_array_equal(with_depth.panoptic, result.panoptic)  # segmentation unchanged
    assert with_depth.depth is not None and np.isfinite(with_depth.depth).all()
    assert all(s.depth_valid_pixels == s.area and math.isfinite(s.centroid[2]) for s in with_depth.segments)
    assert "depth" in asked.raw(image)


def test_the_overlay_without_depth_shows_classes_not_distances(converted_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(converted_checkpoint, device="cpu")
    image = random_image(4, 128, 256)
    result = predictor.predict(image)
    seg = max(result.segments, key=lambda s: s.area)
    picture = overlay(image, result, class_colors=predictor.classes.colors, legend=True, min_label_area=10**9)
    inside = np.argwhere(result.panoptic == seg.id)
    # a pixel away from outlines: tinted half-and-half with the class colour (BGR), no depth colour
    y, x = next(p for p in inside if (result.panoptic[p[0] - 1 : p[0] + 2, p[1] - 1 : p[1] + 2] == seg.id).all())
    colour = np.array(predictor.classes.colors[seg.category_id][::-1], np.float32)
    expected = (image[y, x].astype(np.float32) * 0.5 + colour * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(picture[y, x], expected)
    # no near/far legend: asking for one changes nothing without depth
    no_legend = overlay(image, result, class_colors=predictor.classes.colors, legend=False, min_label_area=10**9)
    np.testing.assert_array_equal(picture, no_legend)


def test_infer_writes_no_depth_files_unless_asked(tmp_path: Path, converted_checkpoint: Path, capsys) -> None:
    cv2.imwrite(str(tmp_path / "f.png"), random_image(5, 96, 160))
    args = ["infer", str(tmp_path / "f.png"), "--checkpoint", str(converted_checkpoint), "--device", "cpu"]
    assert cli.main([*args, "--out", str(tmp_path / "plain")]) == 0
    captured = capsys.readouterr()
    assert "depth branch was never trained" in captured.err and "--untrained-depth gives them anyway" in captured.err
    assert "wrote 3 files for 1 frames" in captured.out
    assert not (tmp_path / "plain" / "f_depth.png").exists() and not (tmp_path / "plain" / "f_depth.npy").exists()
    doc = json.loads((tmp_path / "plain" / "f_segments.json").read_text())
    assert doc["segments"] and all(s["depth_mean"] is None and s["centroid"] == [None] * 3 for s in doc["segments"])
    assert cli.main([*args, "--out", str(tmp_path / "asked"), "--untrained-depth", "--fx", "100"]) == 0
    assert "never trained" not in capsys.readouterr().err
    assert np.isfinite(np.load(tmp_path / "asked" / "f_depth.npy")).all()


def test_bag_has_no_depth_topic_unless_asked(tmp_path: Path, converted_checkpoint: Path) -> None:
    from rosbags.rosbag2 import Reader

    from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages

    src = write_image_bag(tmp_path / "in", [random_image(i, 64, 128) for i in range(2)])
    plain = Predictor.from_checkpoint(converted_checkpoint, device="cpu")
    summary = replay_bag(src, tmp_path / "plain", predictor=plain, progress=False)
    assert summary.frames == 2 and "/panoptic_depthlab/depth" not in summary.output_topics
    ts = typestore_with_our_messages()
    with Reader(tmp_path / "plain") as reader:
        topics = {c.topic for c in reader.connections}
        segments = [
            ts.deserialize_cdr(raw, c.msgtype)
            for c, _, raw in reader.messages()
            if c.topic == "/panoptic_depthlab/segments"
        ]
    assert "/panoptic_depthlab/depth" not in topics and "/panoptic_depthlab/panoptic" in topics
    assert all(math.isnan(s.depth_mean) and math.isnan(s.centroid.z) for m in segments for s in m.segments)
    asked = Predictor.from_checkpoint(converted_checkpoint, device="cpu", untrained_depth=True)
    again = replay_bag(src, tmp_path / "asked", predictor=asked, progress=False)
    assert "/panoptic_depthlab/depth" in again.output_topics


def test_node_publishes_no_depth_outputs_and_says_why(ros_context, converted_checkpoint: Path, capfd) -> None:
    params = {"qos_reliability": "reliable", "qos_depth": 10}
    harness = NodeHarness(ros_context, converted_checkpoint, params=params, outputs=("segments", "panoptic", "overlay"))
    try:
        assert set(harness.node.pipeline.outputs.publishers) == {
            "segments",
            "panoptic",
            "tracked_panoptic",
            "semantic",
            "overlay",
        }
        harness.wait_connected()
        harness.info_pub.publish(camera_info_msg(K, width=128, height=64))
        harness.wait_for(lambda: harness.counts()["camera_info_received"] == 1, 30, "camera_info")
        harness.image_pub.publish(image_msg(random_image(6), stamp=(7, 0)))
        harness.wait_for(lambda: harness.answered((7, 0)), 60, "the outputs")
        segments = harness.answer("segments", (7, 0)).segments
        assert segments and all(math.isnan(s.depth_mean) and math.isnan(s.centroid.x) for s in segments)
        assert harness.probe.count_publishers("/panoptic_depthlab/depth") == 0
        assert harness.probe.count_publishers("/panoptic_depthlab/points") == 0
    finally:
        harness.close()
    log = capfd.readouterr().err
    assert "no ~/depth, ~/markers or ~/points: the checkpoint's depth branch was never trained" in log
    assert "the parameter untrained_depth:=true gives them anyway" in log
    asked = NodeHarness(ros_context, converted_checkpoint, params={**params, "untrained_depth": True})
    try:
        assert {"depth", "markers", "points"} <= set(asked.node.pipeline.outputs.publishers)
        asked.wait_connected()
        asked.image_pub.publish(image_msg(random_image(6), stamp=(8, 0)))
        asked.wait_for(lambda: asked.answered((8, 0), ("depth",)), 60, "the depth image")
    finally:
        asked.close()


def test_depth_branch_is_skipped_in_the_network() -> None:
    """``with_depth=False`` leaves the depth branch out (no key) and the rest unchanged."""
    from panoptic_depthlab_ros.model import ModelConfig, build_model

    model = build_model(ModelConfig.tiny(size_divisibility=32)).eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        full, lean = model(x), model(x, with_depth=False)
    assert set(full) - set(lean) == {"depth"}
    for key in lean:
        assert torch.equal(full[key], lean[key])
