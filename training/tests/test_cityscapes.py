from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cityscapes_labels

from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_training.cityscapes import (
    LABEL_TO_TRAIN_ID,
    CityscapesPanopticDepth,
    DatasetError,
    depth_from_disparity,
    list_samples,
    load_sample,
    panoptic_from_instance_ids,
    require_valid,
    sample_files,
    verify_cityscapes,
)
from panoptic_depthlab_training.transforms import TrainAugmentation


def test_core_class_table_is_cityscapesscripts():
    """The core writes the table out (no cityscapesscripts at run time); it must be the dataset's own."""
    train = sorted((lab for lab in cityscapes_labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    meta = cityscapes_metadata()
    assert meta.names == tuple(lab.name for lab in train)
    assert meta.dataset_ids == tuple(lab.id for lab in train)
    assert meta.colors == tuple(tuple(lab.color) for lab in train)
    assert meta.thing_ids == tuple(lab.trainId for lab in train if lab.hasInstances)
    assert [lab.trainId for lab in train] == list(range(19))


def test_depth_from_disparity_hand_values():
    p = np.array([[0, 1, 257, 513], [2, 129, 1025, 65535]], np.uint16)
    # baseline * fx = 0.2 * 1000 = 200 m px; d = (p - 1) / 256:
    # 257 -> 1 px -> 200 m; 513 -> 2 px -> 100 m; 2 -> 1/256 px -> 51200 m;
    # 129 -> 0.5 px -> 400 m; 1025 -> 4 px -> 50 m; 65535 -> 255.9921875 px -> 0.78127 m;
    # 0 (no measurement) and 1 (d = 0) are invalid and hold 0
    depth, valid = depth_from_disparity(p, 0.2, 1000.0)
    np.testing.assert_array_equal(valid, [[False, False, True, True], [True, True, True, True]])
    np.testing.assert_allclose(depth, [[0, 0, 200, 100], [51200, 400, 50, 200 / 255.9921875]], rtol=1e-6)
    assert depth.dtype == np.float32 and np.isfinite(depth).all()
    depth, valid = depth_from_disparity(p, 0.2, 1000.0, max_depth=300.0)
    np.testing.assert_array_equal(valid, [[False, False, True, True], [False, False, True, True]])
    assert depth[1, 0] == 0 and depth[1, 1] == 0


def test_depth_from_disparity_rejects_bad_input():
    with pytest.raises(ValueError, match="uint16"):
        depth_from_disparity(np.zeros((2, 2), np.float32), 0.2, 1000.0)
    with pytest.raises(ValueError, match="positive"):
        depth_from_disparity(np.zeros((2, 2), np.uint16), 0.0, 1000.0)


def _write_fabricated(root: Path) -> None:
    """One 2x3 frame with hand-chosen labels, instances and disparity."""
    files = sample_files(root, "val", "handcity", "handcity_000000_000019")
    for path in (files.image, files.label_ids, files.disparity, files.camera):
        path.parent.mkdir(parents=True, exist_ok=True)
    image = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]], np.uint8)  # RGB
    cv2.imwrite(str(files.image), image[..., ::-1])
    # road, car, car / sidewalk, person, unlabeled
    cv2.imwrite(str(files.label_ids), np.array([[7, 26, 26], [8, 24, 0]], np.uint8))
    cv2.imwrite(str(files.instance_ids), np.array([[7, 26000, 26001], [8, 24000, 0]], np.uint16))
    files.polygons.write_text(json.dumps({"imgHeight": 2, "imgWidth": 3, "objects": []}))
    cv2.imwrite(str(files.disparity), np.array([[513, 1025, 0], [129, 1, 257]], np.uint16))
    files.camera.write_text(
        json.dumps(
            {
                "extrinsic": {"baseline": 0.25, "pitch": 0.0, "roll": 0.0, "x": 1.7, "y": 0.0, "yaw": 0.0, "z": 1.2},
                "intrinsic": {"fx": 800.0, "fy": 800.0, "u0": 1.0, "v0": 0.5},
            }
        )
    )


def test_load_sample_on_fabricated_files(tmp_path: Path):
    _write_fabricated(tmp_path)
    (files,) = list_samples(tmp_path, "val")
    s = load_sample(files)
    assert s.stem == "handcity_000000_000019"
    assert s.image[0, 1].tolist() == [40, 50, 60]  # RGB order
    np.testing.assert_array_equal(s.semantic, [[0, 13, 13], [1, 11, 255]])
    np.testing.assert_array_equal(s.panoptic, [[0, 13001, 13002], [1000, 11001, -1]])
    # baseline * fx = 200: 513 -> 2 px -> 100 m, 1025 -> 4 px -> 50 m, 129 -> 0.5 px -> 400 m,
    # 257 -> 1 px -> 200 m; 0 and 1 invalid
    np.testing.assert_allclose(s.depth, [[100, 50, 0], [400, 0, 200]])
    np.testing.assert_array_equal(s.depth_valid, [[True, True, False], [True, False, True]])
    assert s.camera == {"fx": 800.0, "fy": 800.0, "u0": 1.0, "v0": 0.5, "baseline": 0.25}


def test_panoptic_from_instance_ids_matches_create_panoptic_imgs_rules():
    inst = np.array(
        [
            [7, 7, 11, 11],
            [26000, 26000, 26002, 26],  # two cars and a car crowd region (26 < 1000)
            [24005, 0, 5, 29000],  # person, unlabeled, dynamic, caravan (ignored in eval)
        ],
        np.int32,
    )
    pan, segments = panoptic_from_instance_ids(inst)
    np.testing.assert_array_equal(
        pan,
        [
            [0, 0, 2000, 2000],
            [13001, 13001, 13002, 13000],
            [11001, -1, -1, -1],
        ],
    )
    by_id = {s["id"]: s for s in segments}
    assert set(by_id) == {0, 2000, 13000, 13001, 13002, 11001}
    assert by_id[13000] == {"id": 13000, "category_id": 13, "iscrowd": 1, "area": 1, "is_thing": True}
    assert by_id[13001]["area"] == 2 and by_id[13001]["iscrowd"] == 0
    assert by_id[2000] == {"id": 2000, "category_id": 2, "iscrowd": 0, "area": 2, "is_thing": False}


def test_label_to_train_id_table():
    assert LABEL_TO_TRAIN_ID[7] == 0 and LABEL_TO_TRAIN_ID[33] == 18
    assert LABEL_TO_TRAIN_ID[0] == 255 and LABEL_TO_TRAIN_ID[29] == 255


def test_verify_accepts_the_synthetic_dataset(synth_spec, synth_root: Path):
    report = verify_cityscapes(synth_root)
    assert report.ok, report.format()
    assert report.counts == synth_spec.counts
    assert "OK" in report.format()
    assert require_valid(synth_root).ok


def test_verify_reports_each_bad_file_by_path(synth_spec, synth_copy: Path):
    train = list_samples(synth_copy, "train")
    deleted = train[0].disparity
    deleted.unlink()
    truncated = train[1].image
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    wrong_dtype = train[2].label_ids
    cv2.imwrite(str(wrong_dtype), np.zeros(synth_spec.size, np.uint16))
    bad_json = list_samples(synth_copy, "val")[0].camera
    bad_json.write_text('{"intrinsic": {"fx": 1}}')

    report = verify_cityscapes(synth_copy)
    assert not report.ok
    assert report.missing == [deleted]
    assert sorted(p for p, _ in report.unreadable) == sorted([truncated, wrong_dtype, bad_json])
    text = report.format()
    for path in (deleted, truncated, wrong_dtype, bad_json):
        assert str(path) in text
    with pytest.raises(DatasetError, match=str(deleted)):
        require_valid(synth_copy)


def test_verify_reports_a_missing_split_and_size_mismatch(synth_spec, synth_copy: Path):
    files = list_samples(synth_copy, "val")[1]
    cv2.imwrite(str(files.disparity), np.zeros((10, 10), np.uint16))
    report = verify_cityscapes(synth_copy, ("train", "val", "test"))
    assert report.counts == {**synth_spec.counts, "test": 0}
    assert report.missing == [synth_copy / "leftImg8bit" / "test"]
    ((path, why),) = report.unreadable
    assert path == files.disparity and "size" in why


def test_load_sample_names_the_missing_file(synth_copy: Path):
    files = list_samples(synth_copy, "train")[0]
    files.instance_ids.unlink()
    with pytest.raises(DatasetError, match=str(files.instance_ids)):
        load_sample(files)
    files = list_samples(synth_copy, "train")[1]
    files.camera.write_text("not json")
    with pytest.raises(DatasetError, match=str(files.camera)):
        load_sample(files)


def test_list_samples_errors():
    with pytest.raises(DatasetError, match="unknown split"):
        list_samples("/nonexistent", "training")
    with pytest.raises(DatasetError, match="no image directory"):
        list_samples("/nonexistent", "train")


def test_dataset_items(synth_spec, synth_root: Path):
    ds = CityscapesPanopticDepth(synth_root, "train")
    assert len(ds) == synth_spec.counts["train"]
    item = ds[0]
    h, w = synth_spec.size
    expected = {
        "image": ((3, h, w), torch.float32),
        "sem_seg": ((h, w), torch.int64),
        "sem_seg_weights": ((h, w), torch.float32),
        "center": ((1, h, w), torch.float32),
        "center_weights": ((1, h, w), torch.float32),
        "offset": ((2, h, w), torch.float32),
        "offset_weights": ((1, h, w), torch.float32),
        "depth": ((1, h, w), torch.float32),
        "depth_valid": ((1, h, w), torch.bool),
        "panoptic": ((h, w), torch.int64),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key
    sample = load_sample(ds.samples[0])
    np.testing.assert_array_equal(item["sem_seg"].numpy(), sample.semantic)
    np.testing.assert_array_equal(item["image"].numpy(), sample.image.transpose(2, 0, 1))
    assert item["image"].max() > 1.0  # 0..255, not normalised
    assert item["center"].max() == pytest.approx(1.0)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, h, w) and batch["stem"][1] == ds.samples[1].stem


def test_dataset_augmentation_is_deterministic_per_epoch(synth_root: Path):
    aug = TrainAugmentation(crop_size=(48, 80))
    ds = CityscapesPanopticDepth(synth_root, "train", transform=aug, seed=3)
    a, b = ds[1], ds[1]
    assert a["image"].shape == (3, 48, 80)
    for key in ("image", "sem_seg", "offset", "depth"):
        assert torch.equal(a[key], b[key]), key
    ds.set_epoch(1)
    c = ds[1]
    assert not torch.equal(a["image"], c["image"])
    # targets were built after the augmentation: offsets point inside the crop
    thing = c["offset_weights"][0] > 0
    ys, xs = torch.nonzero(thing, as_tuple=True)
    cy, cx = ys + c["offset"][0][thing], xs + c["offset"][1][thing]
    assert (cy >= 0).all() and (cy <= 47).all() and (cx >= 0).all() and (cx <= 79).all()
