"""The Cityscapes writer: files, layout and what cityscapesscripts reads of them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from panoptic_depthlab_training.cityscapes import list_samples, load_sample
from panoptic_depthlab_training.synth import dataset_frame, generate_dataset

THING_LABEL_IDS = [lab.id for lab in id2label.values() if lab.hasInstances and lab.id >= 0]


def test_written_files_have_cityscapes_layout(synth_spec, synth_root: Path):
    for split, n in synth_spec.counts.items():
        stems = sorted(
            p.name[: -len("_leftImg8bit.png")] for p in (synth_root / "leftImg8bit" / split / "synthcity").iterdir()
        )
        assert stems == [f"synthcity_{i:06d}_000019" for i in range(n)]
        for stem in stems:
            for rel in (
                f"gtFine/{split}/synthcity/{stem}_gtFine_labelIds.png",
                f"gtFine/{split}/synthcity/{stem}_gtFine_instanceIds.png",
                f"gtFine/{split}/synthcity/{stem}_gtFine_color.png",
                f"gtFine/{split}/synthcity/{stem}_gtFine_polygons.json",
                f"disparity/{split}/synthcity/{stem}_disparity.png",
                f"camera/{split}/synthcity/{stem}_camera.json",
            ):
                assert (synth_root / rel).is_file(), rel
    stem = "synthcity_000001_000019"
    inst = cv2.imread(str(synth_root / f"gtFine/train/synthcity/{stem}_gtFine_instanceIds.png"), cv2.IMREAD_UNCHANGED)
    assert inst.dtype == np.uint16 and inst.shape == synth_spec.size


def test_written_dataset_reads_back_exactly(synth_spec, synth_root: Path):
    samples = list_samples(synth_root, "train")
    assert len(samples) == synth_spec.counts["train"]
    for i, files in enumerate(samples):
        frame = dataset_frame(synth_spec.seed, "train", i, height=synth_spec.size[0], width=synth_spec.size[1])
        sample = load_sample(files)
        np.testing.assert_array_equal(sample.image, frame.image_rgb)  # RGB after the BGR write
        np.testing.assert_array_equal(sample.depth_valid, frame.depth_valid)
        bound = (
            frame.depth * sample.depth / (frame.camera["extrinsic"]["baseline"] * frame.camera["intrinsic"]["fx"]) / 512
        )
        assert (np.abs(sample.depth - frame.depth) <= bound * 1.0001 + 1e-6).all()
        thing = np.isin(frame.label_ids, THING_LABEL_IDS)
        # one panoptic segment per rendered instance, and class-consistent
        assert len(np.unique(sample.panoptic[thing])) == len(np.unique(frame.instance_ids[thing]))
        np.testing.assert_array_equal(sample.panoptic[thing] // 1000, sample.semantic[thing])


def test_cityscapesscripts_reads_the_written_dataset(synth_spec, synth_root: Path, tmp_path: Path):
    convert2panoptic(str(synth_root / "gtFine"), str(tmp_path), True, ["train"])
    coco = json.loads((tmp_path / "cityscapes_panoptic_train_trainId.json").read_text())
    assert len(coco["annotations"]) == synth_spec.counts["train"]
    samples = {s.stem: s for s in list_samples(synth_root, "train")}
    for ann in coco["annotations"]:
        ours = load_sample(samples[ann["image_id"]])
        theirs = sorted((s["category_id"], s["area"], s["iscrowd"]) for s in ann["segments_info"])
        mine = sorted((s["category_id"], s["area"], s["iscrowd"]) for s in ours.segments)
        assert theirs == mine
        rgb = cv2.imread(str(tmp_path / "cityscapes_panoptic_train_trainId" / ann["file_name"]))
        rgb = rgb.astype(np.int64)
        ids = rgb[..., 2] + 256 * rgb[..., 1] + 65536 * rgb[..., 0]
        inst = cv2.imread(str(samples[ann["image_id"]].instance_ids), cv2.IMREAD_UNCHANGED)
        evaluated = ours.panoptic >= 0
        np.testing.assert_array_equal(ids[evaluated], inst[evaluated])


def test_polygons_redraw_the_label_image(synth_spec, synth_root: Path):
    files = list_samples(synth_root, "val")[0]
    annotation = Annotation()
    annotation.fromJsonFile(str(files.polygons))
    assert (annotation.imgHeight, annotation.imgWidth) == synth_spec.size
    redrawn = np.asarray(createLabelImage(annotation, "ids"))
    label_ids = cv2.imread(str(files.label_ids), cv2.IMREAD_UNCHANGED)
    assert (redrawn == label_ids).mean() > 0.99


def test_generation_is_independent_of_worker_count(synth_spec, synth_root: Path, tmp_path: Path):
    generate_dataset(
        tmp_path,
        train=2,
        val=0,
        seed=synth_spec.seed,
        height=synth_spec.size[0],
        width=synth_spec.size[1],
        workers=2,
        progress=False,
    )
    for i in range(2):
        for rel in (
            f"leftImg8bit/train/synthcity/synthcity_{i:06d}_000019_leftImg8bit.png",
            f"disparity/train/synthcity/synthcity_{i:06d}_000019_disparity.png",
        ):
            assert (tmp_path / rel).read_bytes() == (synth_root / rel).read_bytes()
