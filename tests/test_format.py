"""The dataset format: round trips, schema read from the file, real COCO fixtures, and every bad-input error."""

import dataclasses
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posepart.cli import main
from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.images import read_image
from posepart.data.inspect import inspect_dataset
from posepart.data.records import PackedRecords
from posepart.data.writer import DatasetWriter
from posepart.errors import OutputError
from posepart.files import OutputInUse
from posepart.schema import Schema

CUSTOM = Schema(keypoints=("top", "left_hand", "right_hand"), skeleton=((0, 1), (0, 2)),
                part_classes=("background", "body", "arm"))


def _person(points, v=2):
    kp = []
    for x, y in points:
        kp += [float(x), float(y), v]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {"keypoints": kp, "num_keypoints": len(points), "bbox": [min(xs), min(ys), max(xs) - min(xs) + 1,
            max(ys) - min(ys) + 1], "area": 100.0, "iscrowd": 0}


def write_custom(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    with DatasetWriter(root, CUSTOM) as w:
        for i in range(n):
            image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
            parts = np.zeros((40, 60), np.uint8)
            parts[10:30, 20:30] = 1
            parts[10:15, 30:50] = 2
            parts[0, 0] = 255
            crowd = {"iscrowd": 1, "bbox": [0, 0, 5, 5], "area": 25, "keypoints": [0] * 9, "num_keypoints": 0,
                     "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]}
            w.add(image, [_person([(25, 10), (22, 28), (45 - i, 12)]), crowd], parts if i != 1 else None,
                  file_name=f"img{i}.png")
    return root


def test_round_trip_custom_schema(tmp_path):
    root = write_custom(tmp_path / "ds")
    ds = PosePartDataset.open(root)
    assert ds.schema == CUSTOM  # schema comes from the file, nothing hard-coded
    assert len(ds) == 3 and ds.has_parts
    rec = ds.records[0]
    assert rec.keypoints.shape == (1, 3, 3)
    assert rec.keypoints[0, 2].tolist() == [45.0, 12.0, 2.0]
    assert len(rec.ignore_regions) == 1 and rec.ignore_mask()[:5, :5].all() and rec.ignore_mask().sum() == 25
    assert ds.load_image(rec).shape == (40, 60, 3)
    parts = ds.load_parts(rec)
    assert parts[12, 40] == 2 and parts[0, 0] == 255
    assert ds.records[1].parts_path is None and ds.load_parts(ds.records[1]) is None  # parts-unlabelled image
    counts = inspect_dataset(ds).counts
    assert counts["people"] == 3 and counts["images_part_labeled"] == 2
    assert counts["keypoints_per_joint"]["right_hand"] == {"visible": 3, "occluded": 0}
    labelled = 2 * (40 * 60 - 1)
    assert counts["part_pixel_share"]["arm"] == pytest.approx(2 * 100 / labelled)


def test_labels_that_are_likely_mistakes_are_noted_and_warned_about(tmp_path, capsys):
    """A custom-data walkthrough: keypoints normalised to 0..1, people whose joints are all unlabelled, and a joint
    no person labels were each inspected and trained on without a word (every person at pixel (0, 0); a pose task
    that learns only "nobody"; a joint never learnt)."""
    import warnings

    from posepart.engine.data import PosePartDataModule
    from posepart.engine.config import load_config
    from posepart.errors import PosepartWarning

    def variant(name: str, change) -> Path:
        root = write_custom(tmp_path / name)
        coco = json.loads((root / "annotations.json").read_text())
        for ann in coco["annotations"]:
            if not ann["iscrowd"]:
                ann["keypoints"] = change(ann["keypoints"])
        (root / "annotations.json").write_text(json.dumps(coco))
        return root

    assert PosePartDataset.open(write_custom(tmp_path / "plain")).label_concerns() == []
    normalised = variant("normalised", lambda kp: [v / 60 if i % 3 == 0 else v / 40 if i % 3 == 1 else v
                                                  for i, v in enumerate(kp)])
    nobody = variant("nobody", lambda kp: [0.0] * len(kp))
    no_top = variant("no_top", lambda kp: [0.0, 0.0, 0.0, *kp[3:]])
    expected = {normalised: "every labelled joint lies within 1 px of its image's top-left corner (the largest "
                            "coordinate is 0.75): are they normalised to 0..1?",
                nobody: "none of its 3 people (annotations of pose-labelled images) labels a joint (v > 0): each "
                        "is an ignore region",
                no_top: "no person labels top: a model neither learns it from it (the channels are masked) nor "
                        "is scored on it there"}
    for root, words in expected.items():
        (concern,) = PosePartDataset.open(root).label_concerns()
        assert concern.startswith(words), concern
        assert main(["inspect", str(root), "--no-pixels"]) == 0 and f"note: {words}" in capsys.readouterr().out
        config = load_config("demo_cpu_joint.yaml", [f"data.train={root}"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            PosePartDataModule(config)
        said = [str(w.message) for w in caught if issubclass(w.category, PosepartWarning)]
        assert any(message.startswith(f"data.train ({root}): {words}") for message in said), said


def test_unlabelled_joints_without_coordinates_read_as_absent(tmp_path):
    """DeepLabCut's and SLEAP's converters write NaN (or null) for a joint they do not have, with v = 0: before, the
    file was refused ("contains NaN or infinity"). A labelled joint's NaN still is."""
    root = write_custom(tmp_path / "ds")
    coco = json.loads((root / "annotations.json").read_text())
    person = next(ann for ann in coco["annotations"] if not ann["iscrowd"])
    person["keypoints"][3:6] = [float("nan"), None, 0]  # left_hand: not labelled
    (root / "annotations.json").write_text(json.dumps(coco))
    dataset = PosePartDataset.open(root)
    record = next(r for r in dataset.records if r.image_id == person["image_id"])
    assert record.keypoints[0, 1].tolist() == [0.0, 0.0, 0.0] and record.keypoints[0, 0, 2] == 2
    (read,) = [ann for ann in record.annotations if not ann["iscrowd"]]
    assert read["keypoints"][3:6] == [0.0, 0.0, 0]  # what evaluation scores: no NaN left in its ground truth
    assert main(["evaluate", "--oracle", "--data", str(root), "--input-size", "64"]) == 0
    person["keypoints"][3:6] = [float("nan"), 5.0, 2]
    (root / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="keypoints: contains NaN or infinity"):
        PosePartDataset.open(root)


def test_a_write_that_fails_leaves_the_folder_as_it_was(tmp_path):
    """Everything goes into a hidden folder first and takes its place at close(): a write that fails half-way leaves
    no half dataset, and an --overwrite that fails keeps the earlier dataset whole. Before: a failed conversion left
    images without annotations.json (and the next run was refused: 'images exists'), and a failed --overwrite left
    the old annotations.json over the few new images written."""
    import os

    schema, image = CUSTOM, np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(DatasetError, match="part map must be uint8"):
        with DatasetWriter(tmp_path / "new", schema) as w:
            w.add(image, [])
            w.add(image, [], np.zeros((3, 3), np.uint8))
    assert not (tmp_path / "new").exists()  # the writer made it: nothing is left
    with DatasetWriter(tmp_path / "old", schema) as w:
        for _ in range(3):
            w.add(image, [], np.ones((40, 60), np.uint8))
    (tmp_path / "old" / "notes.txt").write_text("the user's")
    before = sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "old").rglob("*"))
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(tmp_path / "old", schema, overwrite=True) as w:
            w.add(image, [])
            raise KeyboardInterrupt
    assert sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "old").rglob("*")) == before
    assert len(PosePartDataset.open(tmp_path / "old")) == 3
    # a writer killed mid-write leaves its hidden folder: the next writer removes it (it holds the folder's lock, so
    # no writer that left one is alive), and nothing else of the folder's
    orphan = tmp_path / "old" / ".writing-dataset-0000"
    (orphan / "images").mkdir(parents=True)
    (tmp_path / "old" / ".venv.tmp-99999").mkdir()  # the user's
    second = DatasetWriter(tmp_path / "old", schema, overwrite=True)
    with pytest.raises(OutputInUse, match="being written by another posepart process"):
        DatasetWriter(tmp_path / "old", schema, overwrite=True)  # before: the later close replaced the first's
    second.add(image, [])
    second.close()
    with pytest.raises(OutputError, match="closed already"):
        second.close()  # before: a second close moved the new images aside and deleted them
    with pytest.raises(OutputError, match="writer is closed"):
        second.add(image, [])
    assert not orphan.exists() and len(PosePartDataset.open(tmp_path / "old")) == 1
    assert not (tmp_path / "old" / "parts").exists() or not any((tmp_path / "old" / "parts").iterdir())
    assert sorted(p.name for p in (tmp_path / "old").iterdir() if p.name != ".posepart.lock") == [
        ".venv.tmp-99999", "annotations.json", "images", "notes.txt", "parts"]
    assert os.listdir(tmp_path / "old" / "images") == ["000001.jpg"]


def test_a_writer_refused_leaves_the_running_ones_lock(tmp_path, monkeypatch):
    """Two writers started at once into a folder that did not exist: the one refused (the other took the lock
    first) removes nothing. Before: it removed the folder's lock file, which the running writer held, so a third
    writer was let in and deleted the running one's work (a review's race, made deterministic here)."""
    import posepart.data.writer as writer_module

    real_lock, first = writer_module.lock_output, []

    def late_lock(folder, *args, **kwargs):  # the other writer takes the new folder between check and lock
        if not first:
            first.append(None)
            first[0] = DatasetWriter(folder, CUSTOM)
        return real_lock(folder, *args, **kwargs)

    monkeypatch.setattr(writer_module, "lock_output", late_lock)
    with pytest.raises(OutputInUse):
        DatasetWriter(tmp_path / "new", CUSTOM)
    monkeypatch.undo()
    assert (tmp_path / "new" / ".posepart.lock").is_file()
    with pytest.raises(OutputInUse):
        DatasetWriter(tmp_path / "new", CUSTOM)
    first[0].add(np.zeros((40, 60, 3), np.uint8), [])
    first[0].close()
    assert len(PosePartDataset.open(tmp_path / "new")) == 1


def test_a_swap_that_fails_puts_the_earlier_dataset_back(tmp_path, monkeypatch):
    """A failure while the new dataset takes the earlier one's place (a permission, a busy mount) moves back what it
    had moved: the earlier dataset stays whole. Before: its images/ was left in a hidden folder the next writer
    deleted."""
    import os

    schema, image = CUSTOM, np.zeros((40, 60, 3), np.uint8)
    with DatasetWriter(tmp_path / "d", schema) as w:
        for _ in range(2):
            w.add(image, [], np.ones((40, 60), np.uint8))
    before = {str(f.relative_to(tmp_path)): f.read_bytes() for f in (tmp_path / "d").rglob("*") if f.is_file()}
    replace = os.replace

    def failing(source, target):  # the earlier images/ moves aside, then its parts/ cannot
        if Path(source).name == "parts" and Path(source).parent == tmp_path / "d":
            raise PermissionError(13, "Permission denied", str(source))
        return replace(source, target)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OutputError, match="Permission denied"):
        with DatasetWriter(tmp_path / "d", schema, overwrite=True) as w:
            w.add(image, [])
    monkeypatch.undo()
    after = {str(f.relative_to(tmp_path)): f.read_bytes() for f in (tmp_path / "d").rglob("*") if f.is_file()}
    assert after == before


def test_writer_refuses_what_it_would_write_wrong(tmp_path):
    """Before: a float image in [0, 1] was written black, a dataset written into another's folder took its part maps
    (same file names), and numpy keypoints failed only in close(), after the images were written."""
    schema, image = CUSTOM, np.zeros((40, 60, 3), np.uint8)
    parts = np.ones((40, 60), np.uint8)
    with DatasetWriter(tmp_path / "old", schema) as w:
        w.add(image, [], parts)
    with pytest.raises(DatasetError, match="annotations.json exists; pass --overwrite"):
        DatasetWriter(tmp_path / "old", schema)
    with DatasetWriter(tmp_path / "old", schema, overwrite=True) as w:
        w.add(image, [])
    assert PosePartDataset.open(tmp_path / "old").records[0].parts_path is None  # not the old run's part map
    with DatasetWriter(tmp_path / "new", schema) as w:
        with pytest.raises(DatasetError, match="uint8 RGB .* got float64 of shape \\(40, 60, 3\\)"):
            w.add(np.full((40, 60, 3), 0.8), [])
        with pytest.raises(DatasetError, match=re.escape("3 keypoint values (a list of [x, y, v] lists: COCO's is "
                                                         "flat, [x1, y1, v1, x2, ...]), expected 3 x 3")):
            w.add(image, [{"keypoints": np.zeros((3, 3))}])  # (K, 3) instead of COCO's flat list
        with pytest.raises(DatasetError, match="6 keypoint values, expected 3 x 3"):
            w.add(image, [{"keypoints": [1, 2, 2, 3, 4, 2]}])
        with pytest.raises(DatasetError, match="part map must be uint8 40x60, got \\(40, 61\\) uint8"):
            w.add(image, [], np.zeros((40, 61), np.uint8))  # refused before its image was written
        # a label above the classes (a walkthrough: written, refused only when the dataset was read), and a
        # channels-first image (told to scale floats)
        above = np.full((40, 60), schema.num_parts, np.uint8)
        with pytest.raises(DatasetError, match=f"part label {schema.num_parts} at \\(x=0, y=0\\) is not in the "
                                               f"schema's classes 0..{schema.num_parts - 1}"):
            w.add(image, [], above)
        ignored_parts = np.full((40, 60), 255, np.uint8)  # the ignore value is a label of its own
        with pytest.raises(DatasetError, match=re.escape("(channels last: image.transpose(1, 2, 0))")):
            w.add(image.transpose(2, 0, 1).copy(), [], ignored_parts)
        with pytest.raises(DatasetError, match=re.escape("(drop the alpha channel, image[..., :3])")):
            w.add(np.zeros((40, 60, 4), np.uint8), [])
        with pytest.raises(DatasetError, match=re.escape("(a grey image is (H, W): image.squeeze())")):
            w.add(np.zeros((1, 40, 60), np.uint8), [])
        kp = np.array([25, 10, 2, 22, 28, 2, 45, 12, 1], np.float32)  # numpy values are JSON numbers
        w.add(image, [{"keypoints": kp, "num_keypoints": np.int64(3), "bbox": np.array([20.0, 8, 30, 24])}])
    assert not list((tmp_path / "new" / "images").iterdir())[1:]  # only the good image was written
    with DatasetWriter(tmp_path / "ignored", schema) as w:
        w.add(image, [], np.full((40, 60), 255, np.uint8))  # all ignored: allowed, and read back as written
    ignored = PosePartDataset.open(tmp_path / "ignored")
    assert (ignored.load_parts(ignored.records[0]) == 255).all()
    record = PosePartDataset.open(tmp_path / "new").records[0]
    assert record.keypoints[0].ravel().tolist() == kp.tolist() and record.boxes[0].tolist() == [20, 8, 30, 24]


def test_png_image_round_trip_is_lossless(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    with DatasetWriter(tmp_path, Schema.coco()) as w:
        w.add(image, [], None, file_name="a.png")
    ds = PosePartDataset.open(tmp_path)
    assert np.array_equal(ds.load_image(ds.records[0]), image)


def test_coco_release_layout_skips_missing_images(fixtures):
    ds = PosePartDataset.open(annotations=fixtures / "coco_mini/annotations/person_keypoints_train2017.json",
                              images=fixtures / "coco_mini/train2017")
    # 80 images listed, 36 on disk; 172 annotations: 86 with keypoints, the rest crowds or unlabelled people
    assert len(ds) == 36 and ds.skipped["missing image"] == 44
    assert sum(r.num_people for r in ds) == 86
    assert sum(len(r.ignore_regions) for r in ds) == 86
    assert ds.schema == Schema.coco()
    rec = next(r for r in ds if r.file_name == "000000000790.jpg")
    assert ds.load_image(rec).shape == (rec.height, rec.width, 3)


def test_mmpose_coco_fixture_values(fixtures):
    ds = PosePartDataset.open(annotations=fixtures / "mmpose/coco/test_coco.json", images=fixtures / "mmpose/coco")
    rec = next(r for r in ds if r.image_id == 785)
    # the first annotation of image 785 (checked by reading the JSON): nose at (367, 81), visible
    assert rec.keypoints[0, 0].tolist() == [367.0, 81.0, 2.0]
    assert rec.keypoints[0, 16].tolist() == [396.0, 341.0, 2.0]


def test_crowdpose_release_reads_with_its_joints_joined_by_name(fixtures, capsys):
    """CrowdPose's JSON carries COCO's 17-joint skeleton for its 14 joints: before, the file was refused ("skeleton edge
    (15, 13) is not a pair of distinct joints"). Its joints are PASCAL-Person-Part's, joined as that skeleton joins
    them, with a warning that names the limbs; the CLI shows it as one `warning:` line."""
    from posepart.schema import PASCAL_SKELETON_NAMES

    folder = fixtures / "mmpose/crowdpose"
    with pytest.warns(UserWarning, match="is COCO's, for its 17 joints, not these 14"):
        ds = PosePartDataset.open(annotations=folder / "test_crowdpose.json", images=folder)
    joined = {frozenset((ds.schema.keypoints[a], ds.schema.keypoints[b])) for a, b in ds.schema.skeleton}
    assert joined == {frozenset(pair) for pair in PASCAL_SKELETON_NAMES}
    assert ds.schema.flip_perm != tuple(range(14)) and sum(len(r.keypoints) for r in ds) == 4
    pascal = list(Schema.pascal_person_part().keypoints)
    for joints, edges in ((["tip", "base"], [[1, 3]]), (pascal, [[1, 2], [1, 99]])):
        with pytest.raises(ValueError, match="names a joint outside 1..(2|14)"):  # not COCO's, or joints none knows
            Schema.from_category({"keypoints": joints, "skeleton": edges})
    assert main(["inspect", "--annotations", str(folder / "test_crowdpose.json"), "--images", str(folder)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: the skeleton [[16, 14]") and "format.py" not in err


def test_a_dataset_folder_that_is_not_there_is_named_as_missing(tmp_path):
    """Before (a walkthrough, a data folder moved before a --resume): "dataset root is not a directory"."""
    with pytest.raises(DatasetError, match="gone: no such folder \\(moved or deleted\\?\\)"):
        PosePartDataset.open(tmp_path / "gone")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="file: dataset root is not a directory"):
        PosePartDataset.open(tmp_path / "file")


def test_a_part_folder_given_must_exist(tmp_path, capsys):
    """Before: a mistyped --parts was dropped, and the dataset read as pose-only (inspect: 0 part-labelled images,
    0 problems; evaluate: no segmentation scores), without a word. ROOT/parts absent still means no part maps."""
    root = write_custom(tmp_path / "ds")
    with pytest.raises(DatasetError, match="nonexistent: the part-map folder given is not a directory"):
        PosePartDataset.open(root, parts=tmp_path / "nonexistent")
    assert main(["inspect", str(root), "--parts", str(tmp_path / "nonexistent")]) == 2
    assert "not a directory" in capsys.readouterr().err
    shutil.rmtree(root / "parts")
    assert all(record.parts_path is None for record in PosePartDataset.open(root).records)


def test_posepart_format_missing_image_is_an_error(tmp_path):
    root = write_custom(tmp_path / "ds")
    (root / "images/img2.png").unlink()
    with pytest.raises(DatasetError, match=r"img2\.png: image missing \(images\[2\], id 3"):
        PosePartDataset.open(root)
    assert len(PosePartDataset.open(root, skip_missing_images=True)) == 2


def _edit_json(root: Path, edit) -> None:
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_malformed_json(tmp_path):
    root = write_custom(tmp_path / "ds")
    (root / "annotations.json").write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"annotations\.json: malformed JSON at line 1 column 13"):
        PosePartDataset.open(root)


def test_keypoints_outside_image(tmp_path, capsys):
    """Before, one joint a few pixels past the border refused the whole dataset (converters already dropped such
    joints with a count): it is dropped and counted now, and only a joint an image's size away is refused."""
    root = write_custom(tmp_path / "ds")
    _edit_json(root, lambda d: d["annotations"][0]["keypoints"].__setitem__(3, 63.5))  # 3.5 px past x = 60
    dataset = PosePartDataset.open(root)
    assert len(dataset) == 3 and dataset.skipped == {"keypoint outside the image (joint dropped)": 1}
    example = dataset.skipped_examples["keypoint outside the image (joint dropped)"]
    assert "img0.png: 'left_hand' at (63.5, 28)" in example
    np.testing.assert_array_equal(dataset.records[0].keypoints[0, :, 2], [2, 0, 2])  # that joint alone is unlabelled
    np.testing.assert_array_equal(dataset.records[1].keypoints[0, :, 2], [2, 2, 2])
    assert main(["inspect", str(root)]) == 0
    assert "skipped 1 x keypoint outside the image (joint dropped)" in capsys.readouterr().err

    # evaluation scores what the reader reads (before, the raw file's joint past the border: exact predictions of
    # the read people scored AP 0.37 on a review's data)
    from posepart.evaluate import Evaluator, Prediction

    evaluator = Evaluator(dataset.schema, parts=False)
    for record in dataset.records:
        results = [{"image_id": record.image_id, "category_id": 1, "keypoints": person.reshape(-1).tolist(),
                    "score": 1.0} for person in record.keypoints]
        evaluator.add(record, Prediction(results, None), None)
    assert evaluator.compute()["pose"]["ap"] == pytest.approx(1.0)

    _edit_json(root, lambda d: d["annotations"][0].__setitem__("keypoints", [70.0, 1, 2, 80.0, 2, 2, -9.0, 3, 2]))
    record = PosePartDataset.open(root).records[0]  # nothing left inside: the person is an ignore region (its box)
    assert record.keypoints.shape[0] == 0 and len(record.ignore_regions) == 2

    _edit_json(root, lambda d: d["annotations"][0]["keypoints"].__setitem__(3, 200.0))  # (x, y) swapped, say
    with pytest.raises(DatasetError, match=r"annotation id 1 \(image img0\.png\): keypoint 'left_hand' at \(200, 2\) "
                                           r"lies far outside the 60x40 image"):
        PosePartDataset.open(root)


def test_an_image_folder_source_says_what_its_subfolders_hold(tmp_path):
    """`train: {images: DIR}` reads DIR's top level: a dataset's root would bring its part maps and validation images
    in as photos. Before (a walkthrough), images in subfolders were left out without a word, and a folder of clip
    folders was "no images"."""
    image = np.zeros((12, 20, 3), np.uint8)
    for name in ("a.jpg", "b.png", "clip1/f0001.png", "clip2/deep/f0001.jpg"):
        path = tmp_path / "frames" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
    dataset = PosePartDataset.from_images(tmp_path / "frames", Schema.pascal_person_part())
    assert [r.file_name for r in dataset.records] == ["a.jpg", "b.png"]
    assert (dataset.records[0].width, dataset.records[0].height) == (20, 12)
    assert sum(n for reason, n in dataset.skipped.items() if "subfolder" in reason) == 2
    for name in ("a.jpg", "b.png"):
        (tmp_path / "frames" / name).unlink()
    with pytest.raises(DatasetError, match="at its top level; 2 in its subfolders, which are not read"):
        PosePartDataset.from_images(tmp_path / "frames", Schema.pascal_person_part())


def test_hidden_files_are_no_images_in_any_folder_read_as_images(tmp_path):
    """macOS's AppleDouble companions (`._a.jpg`, written beside every photo on a FAT or exFAT drive) and dot folders
    are left out of an unlabelled image folder and of `convert masks`' folders, as `predict` leaves them out. Before,
    each companion was counted as an unreadable image (a self-training source) or as an image without pose."""
    frames = tmp_path / "frames"
    (frames / ".thumbs").mkdir(parents=True)
    assert cv2.imwrite(str(frames / "a.jpg"), np.zeros((12, 20, 3), np.uint8))
    (frames / "._a.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    assert cv2.imwrite(str(frames / ".thumbs" / "a.jpg"), np.zeros((4, 4, 3), np.uint8))
    dataset = PosePartDataset.from_images(frames, Schema.pascal_person_part())
    assert [r.file_name for r in dataset.records] == ["a.jpg"] and not dataset.skipped
    from posepart.data.format import hidden

    assert hidden(frames / "._a.jpg", frames) and hidden(frames / ".thumbs" / "a.jpg", frames)
    assert not hidden(frames / "a.jpg", frames) and not hidden(tmp_path / "frames" / "a.jpg", tmp_path)


def test_an_image_missing_as_named_but_there_in_another_spelling_is_named(tmp_path):
    """A Windows tool's backslashes between folders, and a name stored decomposed (macOS: NFD) where the JSON writes
    it composed (NFC): the two print alike, and "image missing" alone sent a user looking at a file that is there.
    The error, and the count's example in the COCO layout, now name the file on disk and what differs."""
    root = write_custom(tmp_path / "ds")
    images = root / "images"
    (images / "sub").mkdir()
    (images / "img0.png").rename(images / "sub" / "img0.png")
    (images / "img1.png").rename(images / "cafe\u0301.png")  # NFD on disk
    names = {"img0.png": "sub\\img0.png", "img1.png": "caf\u00e9.png"}  # as the JSON writes them
    _edit_json(root, lambda d: [i.__setitem__("file_name", names.get(i["file_name"], i["file_name"]))
                                for i in d["images"]])
    with pytest.raises(DatasetError, match=r"image missing .*'sub/img0.png' is there: write the name with '/' "):
        PosePartDataset.open(root)
    _edit_json(root, lambda d: d["images"][0].__setitem__("file_name", "sub/img0.png"))
    with pytest.raises(DatasetError, match=r"image missing .*is there: write the name in Unicode form NFD"):
        PosePartDataset.open(root)
    coco = PosePartDataset.open(annotations=root / "annotations.json", images=images)  # the COCO layout: skipped
    assert [r.file_name for r in coco.records] == ["sub/img0.png", "img2.png"]
    assert "Unicode form NFD" in coco.skipped_examples["missing image"]


def test_inspect_notes_part_maps_that_no_image_reads(tmp_path):
    """An image's part map is parts/<its name>.png: `parts/IMG1.PNG` for `img1.png` (a tool's upper case) or
    `parts/img1.png.png` was left out without a word (inspect: "part-labelled 2" of 3, "problems 0")."""
    root = write_custom(tmp_path / "ds")  # img1 has no part map
    shutil.copy(root / "parts" / "img0.png", root / "parts" / "IMG1.PNG")
    shutil.copy(root / "parts" / "img0.png", root / "parts" / "img1.png.png")
    (root / "parts" / "._img0.png").write_bytes(b"AppleDouble")  # hidden: not counted
    report = inspect_dataset(PosePartDataset.open(root))
    assert report.counts["part_maps_unread"] == {"files": 2, "first": str(root / "parts" / "IMG1.PNG")}
    assert "note: 2 file(s) in the part-map folder are named for an image without its part map" in report.format()
    split = root / "split.json"  # a split over a shared parts/ folder: the other images' maps are not counted
    data = json.loads((root / "annotations.json").read_text())
    split.write_text(json.dumps({**data, "images": data["images"][:1],
                                 "annotations": [a for a in data["annotations"] if a["image_id"] == 1]}))
    single = PosePartDataset.open(annotations=split, images=root / "images", parts=root / "parts")
    assert inspect_dataset(single).counts["part_maps_unread"]["files"] == 0
    shutil.rmtree(root / "parts")
    assert inspect_dataset(PosePartDataset.open(root)).counts["part_maps_unread"]["files"] == 0


def test_wrong_keypoint_count(tmp_path):
    root = write_custom(tmp_path / "ds")
    _edit_json(root, lambda d: d["annotations"][2].__setitem__("keypoints", [1, 2, 2]))
    with pytest.raises(DatasetError, match=r"annotation id 3 .*3 keypoint values, expected 3 x 3"):
        PosePartDataset.open(root)


def test_inspect_lists_every_broken_record_in_one_pass(tmp_path, capsys):
    """Before (a walkthrough of the README), `inspect` stopped at the first record it could not read (a missing
    image, keypoints far outside, a wrong keypoint count) with one error line and exit 2: a dataset with 50 missing
    images took 50 runs to list. Now each such record is a problem of the report (exit 1), beside the files it
    decodes, and the good images are counted; training and evaluation still refuse the file at the first."""
    root = write_custom(tmp_path / "ds", n=5)
    (root / "images/img1.png").unlink()
    (root / "images/img3.png").write_bytes(b"not a png")  # a file problem, found by decoding
    _edit_json(root, lambda d: d["annotations"][0]["keypoints"].__setitem__(3, 200.0))  # img0: far outside
    _edit_json(root, lambda d: d["annotations"][8].__setitem__("keypoints", [1, 2, 2]))  # img4: a wrong count
    assert main(["inspect", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 2  # img2 and img3 read (img3's file is broken: a problem of its own)
    problems = report["problems"]
    assert len(problems) == 4, problems
    assert "img0.png): keypoint 'left_hand' at (200, 28) lies far outside" in problems[0]
    assert "img1.png: image missing" in problems[1]
    assert "3 keypoint values, expected 3 x 3" in problems[2] and "img4.png" in problems[2]
    assert "img3.png" in problems[3]
    with pytest.raises(DatasetError, match="lies far outside"):  # what trains and scores: refused at the first
        PosePartDataset.open(root)
    for name in ("img0.png", "img2.png", "img3.png"):  # every record broken: listed, not "no images to read"
        (root / "images" / name).unlink()
    assert main(["inspect", str(root)]) == 1
    out = capsys.readouterr().out
    assert "problems      5" in out and "img2.png: image missing" in out and "img3.png: image missing" in out


def test_the_people_are_read_from_the_category_that_lists_keypoints(tmp_path, capsys):
    """Annotation tools' exports as a walkthrough found them: Roboflow puts a placeholder category first, Label Studio
    appends its keypoint category last (ids from 0), a CVAT project lists its labels in its own order. Before, each
    read as a schema of 0 joints: `inspect` said "problems 0", `evaluate --oracle` wrote empty metrics (exit 0),
    every person dropped without a word. A second keypoint category's people are skipped with a count, and a file
    whose categories list no keypoints or part classes is refused."""
    from posepart.engine.data import target_schema
    from posepart.inference.inputs import annotation_index

    root = write_custom(tmp_path / "ds")
    person = json.loads((root / "annotations.json").read_text())["categories"][0]

    def categories(*listed):
        _edit_json(root, lambda d: d.__setitem__("categories", list(listed)))

    categories({"id": 0, "name": "people-Qg7R", "supercategory": "none"}, person)  # Roboflow's placeholder
    dataset = PosePartDataset.open(root)
    assert dataset.schema.keypoints == tuple(person["keypoints"]) and sum(r.num_people for r in dataset) == 3
    assert annotation_index(root / "annotations.json").keypoints == person["keypoints"]
    assert target_schema(root).keypoints == dataset.schema.keypoints
    assert main(["inspect", str(root)]) == 0

    # the results written for COCO tools carry the people's category (a review: pycocotools scored perfect results
    # in category 1 at AP 0 against a file whose people are in another)
    from posepart.evaluate_cli import in_category

    _edit_json(root, lambda d: [a.__setitem__("category_id", 5) for a in d["annotations"]])
    categories({"id": 0, "name": "box"}, {**person, "id": 5})
    assert PosePartDataset.open(root).category_id == annotation_index(root / "annotations.json").category_id == 5
    assert in_category([{"image_id": 1, "category_id": 1, "score": 1.0}], 5)[0]["category_id"] == 5
    # categories of the same joints and limbs are one kind of body (AP-10K's species share one list)
    _edit_json(root, lambda d: d["annotations"][0].__setitem__("category_id", 6))
    categories({**person, "id": 5, "name": "cat"}, {**person, "id": 6, "name": "dog"})
    dataset = PosePartDataset.open(root)
    assert sum(r.num_people for r in dataset) == 3 and not dataset.skipped
    _edit_json(root, lambda d: [a.__setitem__("category_id", 1) for a in d["annotations"]])

    _edit_json(root, lambda d: [a.__setitem__("category_id", 2) for a in d["annotations"][:2]])
    hand = {"id": 2, "name": "hand", "keypoints": ["wrist", "thumb"], "skeleton": [[1, 2]]}
    categories(person, hand)  # two skeletons (CVAT): one read, the other's people counted
    dataset = PosePartDataset.open(root)
    assert dataset.schema.name == person["name"] and sum(r.num_people for r in dataset) == 2
    assert list(dataset.skipped.values()) == [2] and "another keypoint category" in next(iter(dataset.skipped))

    _edit_json(root, lambda d: [a.__setitem__("category_id", 1) for a in d["annotations"]])
    categories({"id": 1, "name": "person"}, {"id": 2, "name": "ball"})  # boxes or polygons only (makesense.ai)
    assert main(["inspect", str(root)]) == 2
    assert "no category lists \"keypoints\" or \"part_classes\": nothing to inspect or score" in \
        capsys.readouterr().err


def _tagged_jpeg(path: Path, image: np.ndarray, orientation: int) -> None:
    """Write `image` (RGB) as a JPEG whose EXIF orientation tag says how a viewer turns it (a phone photo)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, "JPEG", quality=95, exif=exif.tobytes())


def test_photos_tagged_with_an_exif_orientation(tmp_path, capsys, monkeypatch):
    """Phone photos (an image-files review): annotated ones are read as stored (COCO's annotations refer to the stored
    pixels) and `inspect` now says that they are tagged; a size mismatch that the tag explains says so (before: "image
    is 96x64 but the annotations say 64x96", nothing of EXIF). An unlabelled folder's photos are read upright, as
    `predict` reads them (before: sideways for self-training, upright for predict); a photo over PIL's pixel guard no
    longer ends training with a traceback; `.jfif` files are images."""
    from PIL import Image

    from posepart.inference.preprocess import load_image

    root = write_custom(tmp_path / "ds")
    stored = cv2.cvtColor(cv2.imread(str(root / "images/img0.png")), cv2.COLOR_BGR2RGB)  # 60 x 40
    _tagged_jpeg(root / "images/img0.jpg", stored, 3)  # upside down: the sizes agree, only the tag tells
    _edit_json(root, lambda d: d["images"][0].update(file_name="img0.jpg"))
    assert main(["inspect", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exif_rotated"] == {"images": 1, "first": str(root / "images/img0.jpg")}
    assert main(["inspect", str(root)]) == 0
    assert "note: 1 image(s) carry an EXIF orientation tag" in capsys.readouterr().out
    from posepart.engine.data import _open  # a run warns too (it reads the first images' headers)
    from posepart.errors import PosepartWarning

    with pytest.warns(PosepartWarning, match=r"data.train \(.*\): 1 of its first 3 images carry an EXIF orientation "
                                             r"tag \(first: .*img0.jpg\): dataset images are read as stored"):
        _open(root, "data.train")
    _tagged_jpeg(root / "images/img0.jpg", stored, 6)  # annotated as shown: 40 x 60
    _edit_json(root, lambda d: d["images"][0].update(width=40, height=60))
    with pytest.raises(DatasetError, match="image is 60x40 but the annotations say 40x60 .*its EXIF orientation 6 "
                                           "shows it turned"):
        dataset = PosePartDataset.open(root)
        dataset.load_image(dataset.records[0])

    photos = tmp_path / "photos"
    photos.mkdir()
    _tagged_jpeg(photos / "a.jpg", stored, 6)
    _tagged_jpeg(photos / "b.jfif", stored, 1)
    unlabelled = PosePartDataset.from_images(photos, Schema.pascal_person_part())
    a, b = unlabelled.records
    assert (a.width, a.height, a.orientation) == (40, 60, 6) and b.file_name == "b.jfif"
    np.testing.assert_array_equal(unlabelled.load_image(a), load_image(photos / "a.jpg"))  # as predict reads it
    # 2,400 pixels: past twice PIL's guard, as a 200 MP photo is. Its size is decoded (before: a traceback), its
    # tag, beyond what PIL opens, left unread, by predict alike
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    big = PosePartDataset.from_images(photos, Schema.pascal_person_part())
    assert [(r.width, r.height, r.orientation) for r in big] == [(60, 40, 1), (60, 40, 1)]
    np.testing.assert_array_equal(big.load_image(big.records[0]), load_image(photos / "a.jpg"))


def test_truncated_jpeg(tmp_path):
    image = np.full((32, 32, 3), 100, np.uint8)
    with DatasetWriter(tmp_path, Schema.coco()) as w:
        w.add(image, [], file_name="t.jpg")
    path = tmp_path / "images/t.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    ds = PosePartDataset.open(tmp_path)
    with pytest.raises(DatasetError, match=r"t\.jpg: truncated JPEG .*image id 1"):
        ds.load_image(ds.records[0])
    report = inspect_dataset(ds)
    assert len(report.problems) == 1 and "truncated" in report.problems[0]


def test_two_images_with_one_part_map_are_refused(tmp_path):
    """Before: img0.png and img0.jpg both took parts/img0.png, and inspect found nothing wrong."""
    image, parts = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8)
    with DatasetWriter(tmp_path, CUSTOM) as w:
        w.add(image, [], parts, file_name="img0.png")
        w.add(image, [], parts, file_name="img0.jpg")
    with pytest.raises(DatasetError, match=r"images 'img0\.png' and 'img0\.jpg' would share the part map .*img0\.png"):
        PosePartDataset.open(tmp_path)


def test_jpeg_trailers_and_exif_thumbnails(tmp_path):
    """Before: a complete JPEG with bytes after its end-of-image marker (a phone's trailer, a Motion Photo's video)
    was refused as truncated. An EXIF thumbnail's own end marker must not make a truncated photo look complete."""
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    photo = cv2.imencode(".jpg", image)[1].tobytes()
    thumbnail = cv2.imencode(".jpg", image[::4, ::4])[1].tobytes()
    exif = b"Exif\x00\x00" + thumbnail  # as an APP1 segment right after the start-of-image marker
    with_exif = photo[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + photo[2:]
    decoded = read_image(_write(tmp_path / "plain.jpg", photo))
    for name, data in [("trailer.jpg", photo + b"\x00" * 300), ("video.jpg", photo + b"ftypmp42" * 4000),
                       ("exif.jpg", with_exif), ("exif_trailer.jpg", with_exif + b"\x00" * 300)]:
        np.testing.assert_array_equal(read_image(_write(tmp_path / name, data)), decoded, err_msg=name)
    for name, data in [("cut.jpg", photo[:-300]), ("exif_cut.jpg", with_exif[:-300]), ("header.jpg", photo[:40])]:
        with pytest.raises(DatasetError, match="truncated JPEG"):
            read_image(_write(tmp_path / name, data))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_image_size_mismatch_and_garbage(tmp_path):
    root = write_custom(tmp_path / "ds")
    ds = PosePartDataset.open(root)
    cv2.imwrite(str(root / "images/img0.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"img0\.png: image is 10x10 but the annotations say 60x40"):
        ds.load_image(ds.records[0])
    (root / "images/img2.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"img2\.png: not a decodable image"):
        ds.load_image(ds.records[2])


def test_part_map_errors(tmp_path):
    root = write_custom(tmp_path / "ds")
    ds = PosePartDataset.open(root)
    cv2.imwrite(str(root / "parts/img0.png"), np.zeros((40, 61), np.uint8))
    with pytest.raises(DatasetError, match=r"img0\.png: part map is 61x40 but image id 1 is 60x40"):
        ds.load_parts(ds.records[0])
    bad = np.zeros((40, 60), np.uint8)
    bad[3, 3] = 7
    cv2.imwrite(str(root / "parts/img2.png"), bad)
    with pytest.raises(DatasetError,
                       match=r"img2\.png: label value 7 at \(x=\d+, y=\d+\) above the classes 0\.\.2 \['background'"):
        ds.load_parts(ds.records[2])


def test_read_image_converts_grey_rgba_16bit(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert read_image(tmp_path / "g.png").shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    deep = np.full((3, 4), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    assert read_image(tmp_path / "d.png")[0, 0].tolist() == [255, 255, 255]


def test_parts_only_dataset(tmp_path):
    schema = Schema(keypoints=(), skeleton=(), part_classes=("background", "head"))
    with DatasetWriter(tmp_path, schema) as w:
        w.add(np.zeros((8, 8, 3), np.uint8), [], np.ones((8, 8), np.uint8), file_name="p.png")
    ds = PosePartDataset.open(tmp_path)
    assert not ds.schema.has_pose and ds.has_parts
    assert not ds.records[0].pose_labeled


def test_inspect_notes_part_maps_saved_as_0_255_masks(tmp_path, capsys):
    """A binary mask saved as 0/255 reads as background and ignore: before, inspect showed the class at 0.00 % with
    "problems 0", and training scored a perfect mean IU for a model that never saw it."""
    schema = Schema(keypoints=(), skeleton=(), part_classes=("background", "person"))
    mask = np.zeros((40, 40), np.uint8)
    mask[5:35, 10:30] = 255
    with DatasetWriter(tmp_path / "masks", schema) as writer:
        writer.add(np.zeros((40, 40, 3), np.uint8), [], mask)
    assert main(["inspect", str(tmp_path / "masks")]) == 0
    out = capsys.readouterr().out
    assert "note: 37.5 % of the part-map pixels are 255" in out and "if these are 0/255 masks" in out
    assert main(["inspect", str(write_custom(tmp_path / "indices"))]) == 0  # index maps with a few 255s: no note
    assert "note:" not in capsys.readouterr().out


def test_label_ramps_by_hand():
    """`label_ramps`: an edge pixel has two different labels on either side (along a row or a column), a ramp pixel
    lies strictly between them; IGNORE_LABEL pixels take no part."""
    from posepart.data.images import label_ramps

    row = np.array([[0, 3, 6, 6, 6, 2, 1, 0]], np.uint8)
    # triples: (0,3,6) ramp; (3,6,6) edge; (6,6,6); (6,6,2) edge; (6,2,1) ramp; (2,1,0) ramp
    assert label_ramps(row) == (3, 5)
    assert label_ramps(row.T) == (3, 5)  # columns count alike
    assert label_ramps(np.array([[0, 3, 255, 6, 2]], np.uint8)) == (0, 0)  # every triple holds an ignored pixel
    assert label_ramps(np.array([[1, 5, 1]], np.uint8)) == (0, 0)  # a thin part between two of one class: no edge
    assert label_ramps(np.zeros((2, 2), np.uint8)) == (0, 0)  # too small for a triple


def test_cli_inspect_json_and_show(tmp_path, capsys):
    root = write_custom(tmp_path / "ds")
    assert main(["inspect", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 3 and out["problems"] == []
    fig = tmp_path / "show.png"
    assert main(["inspect", str(root), "--show", "2", "--out", str(fig)]) == 0
    assert cv2.imread(str(fig)) is not None
    (root / "images" / "img0.png").write_bytes(b"broken")  # the first image broken: the next two are drawn
    capsys.readouterr()
    assert main(["inspect", str(root), "--show", "2", "--out", str(fig)]) == 1
    assert "drew 2 samples" in capsys.readouterr().err  # before: 1 (the first two records, one of them broken)
    for name in ("img1.png", "img2.png"):
        (root / "images" / name).write_bytes(b"broken")
    fig.unlink()
    assert main(["inspect", str(root), "--show", "2", "--out", str(fig)]) == 1
    assert "note: no sample could be drawn (none of the 3 images can be read)" in capsys.readouterr().err
    assert not fig.exists()  # before: an image of the legend alone
    # an --out that cannot take the figure is refused before the dataset is read (before: after, and for a folder
    # "OpenCV has no image format for 'no suffix'"); an --out without --show is noted (before: nothing, silently)
    for out, why in ((tmp_path, "a folder"), (tmp_path / "figure", "no file type")):
        assert main(["inspect", str(root), "--show", "2", "--out", str(out)]) == 2
        assert f"inspect --out {out}: {why}; --show draws one figure file" in capsys.readouterr().err
    assert main(["inspect", str(root), "--no-pixels", "--out", str(fig)]) == 0
    assert "without --show nothing is drawn" in capsys.readouterr().err and not fig.exists()


def test_inspect_no_pixels_counts_from_the_json_and_large_files_say_they_are_read(tmp_path, capsys, monkeypatch):
    """`inspect --no-pixels` gives the counts without decoding a file (a truncated image is then no problem; COCO's
    train set: seconds instead of 9 minutes); an annotation file past `LARGE_ANNOTATIONS` is announced before the
    half minute its reading takes. Before: no such option, and no word while reading."""
    import posepart.data.format

    root = write_custom(tmp_path / "ds")
    path = root / "images/img1.png"
    path.write_bytes(path.read_bytes()[:-200])
    assert main(["inspect", str(root), "--json"]) == 1  # a problem found
    decoded = json.loads(capsys.readouterr().out)
    assert len(decoded["problems"]) == 1 and "img1.png" in decoded["problems"][0]
    assert main(["inspect", str(root), "--json", "--no-pixels"]) == 0
    counted, err = capsys.readouterr()
    counted = json.loads(counted)
    assert counted["problems"] == [] and "reading" not in err
    assert decoded["pixels_checked"] and not counted["pixels_checked"]
    pixels = ("problems", "part_pixel_share", "part_ignore_share", "pixels_checked")
    assert {k: v for k, v in counted.items() if k not in pixels} == \
        {k: v for k, v in decoded.items() if k not in pixels}
    assert main(["inspect", str(root), "--no-pixels"]) == 0  # the text says what was not checked (before: problems 0)
    text = capsys.readouterr().out
    assert "problems      0  (the JSON's alone: --no-pixels decoded no image or part map)" in text
    assert "part pixel share: not measured" in text
    monkeypatch.setattr(posepart.data.format, "LARGE_ANNOTATIONS", 0)
    assert main(["inspect", str(root), "--json", "--no-pixels"]) == 0
    assert f"reading {root / 'annotations.json'}" in capsys.readouterr().err


def test_cli_reports_bad_dataset_clearly(tmp_path, capsys):
    root = write_custom(tmp_path / "ds")
    (root / "annotations.json").write_text("[1, 2")
    assert main(["inspect", str(root)]) == 2
    assert "malformed JSON" in capsys.readouterr().err


@pytest.mark.parametrize("name, why", [("../../outside/x.png", "resolves outside"),
                                       ("sub/../../x.png", "resolves outside"),
                                       ("/etc/passwd", "must be a path to a file"), ("", "must be a path to a file"),
                                       (".", "must be a path to a file"),  # before: ValueError from with_suffix
                                       ("a\x00b.png", "must be a path to a file"),  # before: "embedded null byte"
                                       ("escape.png", "resolves outside .* \\(it leads to .*outside.png through a "
                                                      "symlink: make .* itself a link to the folder")])
def test_file_names_never_leave_the_dataset(tmp_path, capsys, name, why):
    """An annotation's file_name is relative to images/ (and parts/) and must resolve inside them: `..`, absolute
    names, empty names and symlinks that lead out are errors naming the record, in the API and in `inspect`; one
    that leads out refuses the file in `inspect` too, also where the record is broken otherwise (a review: it was
    listed as a broken record, the escape unsaid), while a name of no file is a broken record it lists (before: it
    stopped the pass that lists every broken record)."""
    root = write_custom(tmp_path / "ds")
    outside = tmp_path / "outside.png"
    outside.write_bytes((root / "images/img0.png").read_bytes())
    (root / "images/escape.png").symlink_to(outside)
    (root / "images/inner.png").symlink_to(root / "images/img0.png")  # a symlink that stays inside is fine
    _edit_json(root, lambda d: d["images"][1].update(file_name="inner.png"))
    assert PosePartDataset.open(root).records[1].image_path == root / "images/inner.png"
    _edit_json(root, lambda d: d["images"][2].update(file_name=name))
    with pytest.raises(DatasetError, match=rf"images\[2\] \(id 3\): file name .*{why}"):
        PosePartDataset.open(root)
    capsys.readouterr()
    hostile = name in ("/etc/passwd", "escape.png") or ".." in name
    assert main(["inspect", str(root)]) == (2 if hostile else 1)
    out, err = capsys.readouterr()
    assert re.search(why, err if hostile else out)
    if hostile:
        _edit_json(root, lambda d: d["images"][2].update(width=0))  # broken otherwise too: still refused
        assert main(["inspect", str(root)]) == 2 and re.search(why, capsys.readouterr().err)


def test_oracle_reads_the_images_it_scores(tmp_path, capsys):
    """`evaluate --oracle` skips and counts, naming it, an image no model could read (a truncated file) instead of
    scoring its ground truth as if it were fine."""
    from posepart.evaluate import evaluate_oracle

    root = write_custom(tmp_path / "ds")
    path = root / "images/img1.png"
    path.write_bytes(path.read_bytes()[:-200])
    metrics = evaluate_oracle(PosePartDataset.open(root), input_size=64, progress=False)
    assert metrics["images"] == 2 and metrics["skipped"] == 1
    assert "img1.png" in capsys.readouterr().out
    for name in ("img0.png", "img2.png"):  # every image unreadable: refused (before: empty metrics, exit 0)
        (root / "images" / name).write_bytes(b"")
    assert main(["evaluate", "--oracle", "--data", str(root), "--input-size", "64", "--out",
                 str(tmp_path / "m.json")]) == 2
    assert "no image could be scored: all 3 were skipped" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_compressed_rle_counts_match_pycocotools():
    """The checked parser of COCO's compressed RLE strings reads back the run lengths pycocotools encoded."""
    from pycocotools import mask as mask_utils

    from posepart.data.validate import compressed_rle_counts

    rng = np.random.default_rng(0)
    for height, width in [(64, 64), (37, 91), (1, 1), (200, 150)]:
        mask = rng.random((height, width)) < 0.3
        mask[: height // 2] = rng.random() < 0.5  # long runs too
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        flat = mask.T.ravel()  # COCO runs are column-major and start with a (possibly empty) run of zeros
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat.astype(int))) + 1, [flat.size]])
        expected = ([0] if flat[0] else []) + np.diff(bounds).tolist()
        assert compressed_rle_counts(encoded, "t") == expected
    for garbage in ("\x00", "o", "abc~"):
        with pytest.raises(DatasetError, match="RLE counts"):
            compressed_rle_counts(garbage, "t")


def test_rle_runs_past_64_bits_are_refused_by_the_pixels_they_claim():
    """A run length of 2**63 or more fits no int64: it was refused as "not run lengths >= 0", which it is; now the
    error says what is wrong with it, as for any run that overruns the image."""
    from posepart.data.validate import region

    with pytest.raises(DatasetError, match=f"RLE runs cover {2**63 + 4} pixels, the image has 12"):
        region({"size": [3, 4], "counts": [4, 2**63]}, 3, 4, "t")
    with pytest.raises(DatasetError, match="list of run lengths >= 0"):
        region({"size": [3, 4], "counts": [-(2**63) - 1, 13]}, 3, 4, "t")


def test_an_image_larger_than_opencv_decodes_is_refused_when_the_dataset_opens(tmp_path):
    """A declared size past OpenCV's pixel limit names an image no reader can decode; before, it was accepted, and
    its crowd masks were allocated at that size (2**32 x 2**32 passed an RLE whose runs overflow int64)."""
    from posepart.data.images import MAX_DECODED_PIXELS

    root = write_custom(tmp_path / "ds")
    _edit_json(root, lambda d: d["images"][1].update(width=2**16, height=2**16))
    with pytest.raises(DatasetError, match=rf"images\[1\] \(img1.png\) is 65536x65536: more pixels than OpenCV "
                                           rf"decodes \({MAX_DECODED_PIXELS}"):
        PosePartDataset.open(root)


def test_a_polygon_far_outside_its_image_is_refused_before_pycocotools_sees_it():
    """pycocotools rasterised [[1e8, 1e8, -1e8, 5, 3, 1e8]] in native code and crashed the process (SIGSEGV):
    `posepart evaluate` died without a word. COCO's polygons stray a few pixels past the border: those pass."""
    from posepart.data.format import region_mask
    from posepart.data.validate import region

    with pytest.raises(DatasetError, match="polygon coordinate 1e\\+08 lies far outside the 64x48 image"):
        region([[1e8, 1e8, -1e8, 5, 3, 1e8]], 48, 64, "t")
    stray = region([[-3.5, -2.0, 66.0, 1.0, 30.0, 49.5]], 48, 64, "t")
    assert region_mask(stray, 48, 64).any()


def test_palette_part_maps_of_predict_read_as_labels(tmp_path):
    """`posepart predict` writes part labels as indexed PNGs (colours for people, indices for programs); a dataset
    may use them as part maps: the indices are the labels (OpenCV would expand them to colours)."""
    from posepart.inference.draw import save_parts

    root = write_custom(tmp_path / "ds")
    labels = np.zeros((40, 60), np.uint8)
    labels[5:20, 10:40] = 1
    labels[25:, :] = 2
    save_parts(root / "parts/img0.png", labels, CUSTOM)
    dataset = PosePartDataset.open(root)
    np.testing.assert_array_equal(dataset.load_parts(dataset.records[0]), labels)


def _assert_same_records(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_equal(dataclasses.asdict(x), dataclasses.asdict(y))  # NaN head sizes equal too


def test_packed_records_index_slice_iterate_and_pickle_as_the_list_they_pack(tmp_path):
    records = list(PosePartDataset.open(write_custom(tmp_path / "ds", n=4)).records)
    packed = PackedRecords(records)
    assert len(packed) == 4 and len(PackedRecords()) == 0
    _assert_same_records(packed, records)
    _assert_same_records([packed[-1], packed[True]], [records[3], records[1]])
    assert [r.file_name for r in packed[1:4:2]] == ["img1.png", "img3.png"] and packed[5:] == []
    with pytest.raises(IndexError):
        packed[4]
    with pytest.raises(IndexError):
        packed[-5]
    with pytest.raises(TypeError):
        packed[1.0]
    again = pickle.loads(pickle.dumps(packed))  # a DataLoader worker that is spawned, not forked, gets a copy
    _assert_same_records(again, records)


COCO_FILES = [("coco_mini/annotations/person_keypoints_train2017.json", "coco_mini/train2017"),
              *((f"mmpose/{name}/test_{name}.json", f"mmpose/{name}") for name in ("coco", "aic", "crowdpose", "mhp",
                                                                                  "ochuman")),
              ("mmpose/coco/test_coco_wholebody.json", "mmpose/coco")]


@pytest.mark.filterwarnings("ignore::posepart.errors.PosepartWarning")  # crowdpose's skeleton, said elsewhere
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 as float32, one by one
def test_the_numpy_pass_over_a_file_reads_every_record_as_the_checks_one_by_one_do(tmp_path, fixtures, monkeypatch):
    """A file's keypoints and boxes are checked in one numpy pass (17 s over COCO's train set one by one); every row
    it does not pass is checked one by one. Every real file, and one made of the cases at the pass's edges (joints
    just inside the tolerance and past it, a crowd's joints outside, null and huge unlabelled coordinates, integer
    coordinates, no box, no labelled joint), reads to the same records and skips as with every row one by one."""
    root = write_custom(tmp_path / "ds", n=4)

    def edges(data):
        people = [ann for ann in data["annotations"] if not ann["iscrowd"]]
        people[0]["keypoints"][3:6] = [60.9, -0.9, 1]  # inside the 1 px tolerance of the 60 x 40 image
        people[1]["keypoints"][6:9] = [62.5, 12.0, 2]  # past it: dropped and counted
        people[1].pop("bbox")
        people[2]["keypoints"] = [25, 10, 2, None, float("nan"), 0, 1e39, 3, 0]  # ints, null, beyond float32
        people[3]["keypoints"] = [25.0, 10.0, 0] * 3  # nobody labelled: an ignore region
        crowd = next(ann for ann in data["annotations"] if ann["iscrowd"])
        crowd["keypoints"] = [70.0, 50.0, 2] * 3  # a crowd's joints are never read

    _edit_json(root, edges)
    import posepart.data.format as format_module
    from posepart.data.records import check_annotations

    def one_by_one(annotations, num_joints, sizes):
        checked = check_annotations(annotations, num_joints, sizes)
        return dataclasses.replace(checked, keypoints_ok=np.zeros_like(checked.keypoints_ok),
                                   boxes_ok=np.zeros_like(checked.boxes_ok), inside=np.zeros_like(checked.inside))

    sources = [{"root": root}] + [{"annotations": fixtures / a, "images": fixtures / i} for a, i in COCO_FILES]
    for source in sources:
        fast = PosePartDataset.open(**source)
        with monkeypatch.context() as m:
            m.setattr(format_module, "check_annotations", one_by_one)
            slow = PosePartDataset.open(**source)
        _assert_same_records(fast.records, slow.records)
        assert (fast.skipped, fast.skipped_examples) == (slow.skipped, slow.skipped_examples)
    assert fast.records[0].keypoints.size and sum(r.num_people for r in slow.records) == 12  # not vacuous
    # values the float32 rows would pass: the pass checks in float64 first, as the one-by-one checks do
    good = (root / "annotations.json").read_text()
    for field, index, value, error in (("keypoints", 2, 1.00000001, "visibility must be 0, 1 or 2"),
                                       ("keypoints", 5, 1e-50, "visibility must be 0, 1 or 2"),
                                       ("bbox", 2, -1e-46, "width and height must be >= 0")):
        _edit_json(root, lambda d: d["annotations"][0][field].__setitem__(index, value))
        messages = []
        for check in (check_annotations, one_by_one):
            with monkeypatch.context() as m, pytest.raises(DatasetError, match=error) as refused:
                m.setattr(format_module, "check_annotations", check)
                PosePartDataset.open(root)
            messages.append(str(refused.value))
        assert messages[0] == messages[1]
        (root / "annotations.json").write_text(good)
    edited = PosePartDataset.open(root)
    assert edited.skipped == {"keypoint outside the image (joint dropped)": 1}
    np.testing.assert_array_equal(edited.records[0].keypoints[0, 1], np.float32([60.9, -0.9, 1]))
    np.testing.assert_array_equal([r.num_people for r in edited.records], [1, 1, 1, 0])


def test_what_a_dataset_labels_is_read_in_one_pass_over_its_records(tmp_path, monkeypatch):
    # each read of a packed record unpickles it (a pass over COCO's train set: seconds), so the whole-dataset
    # questions training asks share one pass, kept
    dataset = PosePartDataset.open(write_custom(tmp_path / "ds"))  # img1 has no part map
    passes = []
    iterate = PackedRecords.__iter__
    monkeypatch.setattr(PackedRecords, "__iter__", lambda self: passes.append(1) or iterate(self))
    assert dataset.has_parts and dataset.has_people and dataset.annotated_joints.all()
    labels = dataset.record_labels
    assert labels.pose.tolist() == [True] * 3 and labels.parts.tolist() == [True, False, True]
    assert labels.joints.tolist() == [True] * 3 and len(passes) == 1


# Run in a fresh process, as `posepart train`'s main process is: forked from a long-lived test worker, the child's
# allocations would land in that worker's scattered free slots and copy their pages, whatever the records are.
_FORKED_WORKER = """
import gc, multiprocessing, sys
from posepart.data.format import PosePartDataset

def private_dirty_mb():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:")) / 1024

def touch(dataset, out):
    before = private_dirty_mb()
    for record in dataset.records:  # what a worker reads of each record over an epoch
        _ = (record.keypoints.shape, record.image_path, [len(region) for region in record.ignore_regions],
             [ann["area"] for ann in record.annotations])
    out.put(private_dirty_mb() - before)

if __name__ == "__main__":
    dataset = PosePartDataset.open(annotations=sys.argv[1], images=sys.argv[2])
    gc.collect()
    context = multiprocessing.get_context("fork")  # as DataLoader's workers are started on Linux
    out = context.Queue()
    worker = context.Process(target=touch, args=(dataset, out))
    worker.start()
    print(out.get(timeout=120))
    worker.join()
"""


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux's page accounting")
def test_a_forked_dataloader_worker_shares_the_records_instead_of_copying_them(tmp_path):
    # A worker forked from the process (as DataLoader's are) that reads records held as Python objects writes to
    # their pages (reference counts) and so copies them: 0.7 GB per worker over COCO's train set. Packed, they stay
    # shared. 2,000 images with a 400-vertex crowd polygon and a person each: ~40 MB of objects in a list.
    n, polygon = 2000, [float(v) for v in np.random.default_rng(0).uniform(1, 30, 800)]
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(1, n + 1):
        (tmp_path / "images" / f"{i}.jpg").touch()  # opening checks that the image exists; nothing decodes it
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 40, "height": 40})
        annotations += [{"id": 2 * i, "image_id": i, "iscrowd": 1, "segmentation": [polygon], "area": 100.0,
                         "bbox": [1, 1, 29, 29], "category_id": 1},
                        {**_person([(25, 10), (22, 28), (35, 12)]), "id": 2 * i + 1, "image_id": i, "category_id": 1}]
    category = {"id": 1, "name": "person", "keypoints": list(CUSTOM.keypoints),
                "skeleton": [[a + 1, b + 1] for a, b in CUSTOM.skeleton]}
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                 "categories": [category]}))
    (tmp_path / "worker.py").write_text(_FORKED_WORKER)
    run = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "a.json"),
                          str(tmp_path / "images")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    copied = float(run.stdout.split()[-1])
    assert copied < 4, f"the worker copied {copied:.1f} MB of the parent's pages reading the records"


def test_inspect_reports_the_same_for_any_number_of_threads(tmp_path, capsys):
    """`inspect --threads N` decodes N files at once (OpenCV releases Python's lock): the same counts, part shares
    and problems, in record order, as one thread."""
    root = write_custom(tmp_path / "ds", n=12)
    for broken in ("img3.png", "img8.png"):
        path = root / "images" / broken
        path.write_bytes(path.read_bytes()[:-200])
    reports = []
    for threads in (1, 3):
        assert main(["inspect", str(root), "--json", "--threads", str(threads)]) == 1
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1] and len(reports[0]["problems"]) == 2
    assert "img3.png" in reports[0]["problems"][0] and reports[0]["part_pixel_share"]
