"""Any camera size with Detectron2's weights (the tiny fixture model at 1/8 of the full sizes).

The tiny config's pooling window is 4x8 res5 cells (its 64x128 crop / 16), an eighth of the
Cityscapes configs' 512x1024 px; so frames of 60x80, 90x160, 135x240 and 150x240 relate to
it as 480x640, 720x1280, 1080x1920 and 1200x1920 frames do to the full-size model: Detectron2
refuses all four. By default they run (Detectron2's pooling without the refusal), through the
predictor, ``infer``, ``bag`` and the node; ``strict_pool_size`` refuses them as Detectron2
does; where Detectron2 accepts a size the default gives exactly its outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rosbags.rosbag2 import Reader

from node_utils import NodeHarness, image_msg, random_image
from panoptic_depthlab_ros import cli
from panoptic_depthlab_ros.bag import replay_bag
from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.errors import InputError, NothingDoneError
from panoptic_depthlab_ros.model.aspp import ASPP
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import FIXTURES, write_image_bag

# Full-size camera -> the tiny model's equivalent (1/8).
CAMERAS = {"480x640": (60, 80), "720x1280": (90, 160), "1080x1920": (135, 240), "1200x1920": (150, 240)}
REFUSED = "Detectron2 refuses this size"


@pytest.fixture(scope="module")
def default() -> Predictor:
    return Predictor.from_detectron2(FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml", device="cpu")


@pytest.fixture(scope="module")
def strict() -> Predictor:
    return Predictor.from_detectron2(
        FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml", device="cpu", strict_pool_size=True
    )


def _frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return random_image(seed, height, width)


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_every_camera_size_through_the_predictor(default: Predictor, strict: Predictor, camera: str) -> None:
    h, w = CAMERAS[camera]
    image = _frame(h, w)
    result = default.predict(image)
    assert result.panoptic.shape == (h, w) and result.semantic.shape == (h, w)
    assert result.segments and {s.id for s in result.segments} == set(np.unique(result.panoptic)) - {-1}
    assert REFUSED in default.frame_handling(h, w)
    with pytest.raises(InputError, match=rf"frames of {h}x{w}; res5 .*refused as Detectron2 refuses it"):
        strict.predict(image)


@pytest.mark.parametrize("size", [(128, 256), (64, 128), (192, 384)])
def test_default_is_exactly_detectron2_where_it_accepts(default: Predictor, strict: Predictor, size) -> None:
    image = _frame(*size, seed=3)
    assert "exactly Detectron2's outputs" in default.frame_handling(*size)
    a, b = default.raw(image), strict.raw(image)
    for key in ("sem_seg", "center", "offset"):  # Detectron2's outputs (the depth branch is each load's own)
        assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(default.predict(image).panoptic, strict.predict(image).panoptic)


def test_default_matches_the_real_detectron2_fixture(default: Predictor) -> None:
    case = dict(np.load(FIXTURES / "tiny_case.npz"))
    result = default.predict(np.ascontiguousarray(case["image"][:, :, ::-1]))
    outside = ~case["near_tie_mask"]
    np.testing.assert_array_equal(result.panoptic[outside], case["panoptic_seg"][outside])


def test_the_default_pooling_is_detectron2s_window_without_the_refusal() -> None:
    """The window slides over res5 as Detectron2's AvgPool2d does (computed as two 1-D averages:
    equal up to float rounding); a res5 smaller than it is averaged whole in that direction;
    strict refuses what Detectron2 refuses."""
    torch.manual_seed(0)
    lenient = ASPP(8, 4, (1,), pool_kernel_size=(4, 8), strict_pool_size=False)
    exact = ASPP(8, 4, (1,), pool_kernel_size=(4, 8), strict_pool_size=True)
    x = torch.randn(1, 8, 6, 10)  # 90x160's res5
    torch.testing.assert_close(lenient._pool(x), F.avg_pool2d(x, (4, 8), stride=1), rtol=1e-6, atol=1e-6)
    assert lenient._pool(x).shape[-2:] == (3, 3)
    small = torch.randn(1, 8, 4, 5)  # 60x80's res5: narrower than the window
    torch.testing.assert_close(lenient._pool(small), small.mean((2, 3), keepdim=True), rtol=1e-6, atol=1e-6)
    flat = torch.randn(1, 8, 3, 16)
    torch.testing.assert_close(lenient._pool(flat), F.avg_pool2d(flat, (3, 8), stride=1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"feature size \(6, 10\) is not divisible by the pooling kernel \(4, 8\)"):
        exact._pool(x)
    even = torch.randn(1, 8, 8, 16)
    torch.testing.assert_close(lenient._pool(even), exact._pool(even), rtol=0, atol=0)


def test_infer_takes_every_camera_size(tmp_path: Path, converted_checkpoint: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name, (h, w) in CAMERAS.items():
        cv2.imwrite(str(src / f"cam_{name}.png"), _frame(h, w, seed=h))
    out = tmp_path / "out"
    args = ["infer", str(src), "--out", str(out), "--checkpoint", str(converted_checkpoint), "--device", "cpu"]
    assert cli.main(args) == 0
    assert f"for {len(CAMERAS)} frames" in capsys.readouterr().out
    for name, (h, w) in CAMERAS.items():
        panoptic = cv2.imread(str(out / f"cam_{name}_panoptic.png"))
        assert panoptic.shape == (h, w, 3)
    assert cli.main([*args, "--out", str(tmp_path / "strict"), "--strict-pool-size"]) == 2
    err = capsys.readouterr().err
    refused = re.findall(
        r"skipped: \S+: frames of \d+x\d+; res5 \d+x\d+: not a multiple of the 4x8 pooling window", err
    )
    assert len(refused) == len(CAMERAS), err  # each frame named and skipped, the run goes on
    assert "no frame of 4 input file(s) could be used" in err


def test_bag_takes_every_camera_size(tmp_path: Path, converted_checkpoint: Path) -> None:
    sizes = list(CAMERAS.values())
    src = write_image_bag(tmp_path / "in", [_frame(h, w) for h, w in sizes])
    predictor = Predictor.from_checkpoint(converted_checkpoint, device="cpu")
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.frames == len(sizes) and not summary.skipped
    ts = typestore_with_our_messages()
    with Reader(tmp_path / "out") as reader:
        got = [
            (m.height, m.width)
            for c, _, raw in reader.messages()
            if c.topic == "/panoptic_depthlab/panoptic"
            for m in [ts.deserialize_cdr(raw, c.msgtype)]
        ]
    assert got == sizes
    strict = Predictor.from_checkpoint(converted_checkpoint, device="cpu", strict_pool_size=True)
    with pytest.raises(NothingDoneError, match=r"no frame could be replayed: .*refused as Detectron2 refuses it") as e:
        replay_bag(src, tmp_path / "strict", predictor=strict, progress=False)
    assert len(e.value.skipped) == len(sizes)
    assert all("refused as Detectron2 refuses it" in line for line in e.value.skipped)
    assert not (tmp_path / "strict").exists()  # nothing done: no output


def test_node_takes_every_camera_size_and_says_how(ros_context, converted_checkpoint: Path, capfd) -> None:
    params = {"qos_reliability": "reliable", "qos_depth": 10}
    harness = NodeHarness(ros_context, converted_checkpoint, params=params, outputs=("panoptic", "segments"))
    try:
        harness.wait_connected()
        for i, (h, w) in enumerate(CAMERAS.values()):
            harness.image_pub.publish(image_msg(_frame(h, w), stamp=(20 + i, 0)))
            harness.wait_for(lambda i=i: harness.answered((20 + i, 0)), 60, f"frame {h}x{w}")
            panoptic = harness.answer("panoptic", (20 + i, 0))
            assert (panoptic.height, panoptic.width) == (h, w)
        assert harness.counts()["processed"] == len(CAMERAS)
    finally:
        harness.close()
    log = capfd.readouterr().err
    assert "ASPP image pooling: Detectron2's 4x8 window (64x128 px of network input); any frame size" in log
    for h, w in CAMERAS.values():
        assert re.search(rf"frames of {h}x{w}; res5 \d+x\d+: {REFUSED}", log), log[-3000:]
    strict = NodeHarness(ros_context, converted_checkpoint, params={**params, "strict_pool_size": True})
    try:
        strict.wait_connected()
        strict.image_pub.publish(image_msg(_frame(90, 160), stamp=(40, 0)))
        strict.wait_for(lambda: strict.counts()["dropped_bad_input"] == 1, 60, "the refused frame")
        assert strict.counts()["processed"] == 0 and strict.counts()["errors"] == 0
    finally:
        strict.close()
    assert "refused as Detectron2 refuses it" in capfd.readouterr().err
