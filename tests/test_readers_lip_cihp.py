"""LIP (pose CSV + parsing PNGs) and CIHP (multi-person parsing) readers on the real fixtures."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from reader_checks import convert, inspect_json, oracle

from posepart import cli
from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.readers.cihp import convert_cihp
from posepart.data.readers.lip import convert_lip, read_pose_csv
from posepart.schema import Schema

LIP = Schema.lip()


def test_lip_fixture_pose(fixtures, tmp_path):
    result = convert_lip(tmp_path / "ds", images=fixtures / "lip/images",
                         pose=fixtures / "lip/pose/examples_val_pose.csv", progress=False)
    assert (result.images, result.people, result.part_maps) == (6, 6, 0)
    ds = PosePartDataset.open(tmp_path / "ds")
    assert ds.schema == LIP and len(ds) == 6
    rec = next(r for r in ds if r.file_name == "114317_456748.jpg")
    assert rec.keypoints[0, LIP.joint("right_ankle")].tolist() == [7, 188, 2]  # "7,188,0": flag 0 = not occluded
    assert rec.keypoints[0, LIP.joint("left_wrist")].tolist() == [108, 109, 2]
    rec = next(r for r in ds if r.file_name == "76680_475011.jpg")
    assert rec.keypoints[0, LIP.joint("pelvis")].tolist() == [116, 428, 1]  # "116,428,1": occluded
    assert (rec.keypoints[0, :6, 2] == 0).all()  # legs are "nan" in the CSV
    assert rec.boxes[0].tolist() == [37, 85, 299 - 37, 428 - 85]  # the box of the labelled joints


def test_lip_full_csv_counts_missing_images(fixtures, tmp_path):
    poses = read_pose_csv(fixtures / "lip/pose/lip_val_groundtruth.csv")
    assert len(poses) == 10000
    labelled = np.stack(list(poses.values()))[..., 2]
    assert (labelled == 1).sum() == 11920 and (labelled == 2).sum() == 132528  # flags 1 / 0 counted in the CSV
    result = convert_lip(tmp_path / "ds", images=fixtures / "lip/images", pose=fixtures / "lip/pose/"
                         "lip_val_groundtruth.csv", progress=False)
    assert result.images == 6 and result.skips.counts["missing image"] == 9994


def test_lip_parsing_pngs_in_the_release_layout(tmp_path):
    """The fixture has no LIP parsing PNGs: a release-layout root with two written here (one with a bad value)."""
    root = tmp_path / "LIP"
    images = root / "TrainVal_images/val_images"
    parsing = root / "TrainVal_parsing_annotations/val_segmentations"
    images.mkdir(parents=True)
    parsing.mkdir(parents=True)
    labels = np.zeros((40, 30), np.uint8)
    labels[2:10, 5:20] = LIP.part_classes.index("face")  # 13
    labels[20:38, 5:25] = LIP.part_classes.index("pants")  # 9
    labels[0, 0] = 255
    for name in ("good", "bad", "nolabel"):
        cv2.imwrite(str(images / f"{name}.jpg"), np.full((40, 30, 3), 128, np.uint8))
    cv2.imwrite(str(parsing / "good.png"), labels)
    cv2.imwrite(str(parsing / "bad.png"), np.full((40, 30), 20, np.uint8))  # 20 classes: 0..19
    (root / "ids.txt").write_text("good\nbad\nnolabel\n")
    result = convert_lip(tmp_path / "out", src=root, split="val", id_list=root / "ids.txt", progress=False)
    assert result.images == 1 and result.part_maps == 1
    assert "bad.png: label value 20" in result.skips.examples["bad part PNG"]
    assert result.skips.counts["neither a pose row nor a parsing PNG (image skipped)"] == 1
    ds = PosePartDataset.open(tmp_path / "out")
    assert np.array_equal(ds.load_parts(ds.records[0]), labels)
    assert not ds.records[0].pose_labeled  # parsing only: no pose loss for it
    with pytest.raises(DatasetError, match="no image folder found"):
        convert_lip(tmp_path / "x", src=tmp_path / "nowhere", progress=False)


def test_lip_cli_inspect_oracle(fixtures, tmp_path, capsys):
    out = tmp_path / "lip"
    convert(capsys, ["lip", "--images", fixtures / "lip/images", "--pose", fixtures / "lip/pose/examples_val_pose.csv",
                     "--out", out])
    counts = inspect_json(capsys, out)
    assert counts["images"] == 6 and counts["people"] == 6
    assert counts["keypoints_per_joint"]["right_ankle"] == {"visible": 4, "occluded": 0}  # 2 rows have nan ankles
    metrics = oracle(out, tmp_path)
    assert metrics["pose"]["ap"] == pytest.approx(1.0) and metrics["pose"]["pckh"] == pytest.approx(1.0)


CIHP = Schema.cihp()


def test_cihp_pgn_layout(fixtures, tmp_path):
    src = fixtures / "cihp_pgn/CIHP"
    result = convert_cihp(src, tmp_path / "ds", progress=False)
    assert (result.images, result.people, result.part_maps) == (5, 0, 5)
    ds = PosePartDataset.open(tmp_path / "ds")
    assert ds.schema == CIHP and not ds.schema.has_pose
    for rec in ds:  # ids are CIHP's: the maps are the raw labels unchanged
        raw = cv2.imread(str(src / "labels" / f"{rec.file_name[:-4]}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(ds.load_parts(rec), raw)
    rec = next(r for r in ds if r.file_name == "0002190.jpg")
    present = [CIHP.part_classes[i] for i in np.unique(ds.load_parts(rec))]
    assert present == ["background", "hair", "upper_clothes", "torso_skin", "face", "right_arm"]  # ids 0 2 5 10 13 15


def test_cihp_graphonomy_layout_and_split(fixtures, tmp_path):
    src = fixtures / "graphonomy/CIHP"
    assert convert_cihp(src, tmp_path / "all", progress=False).images == 1  # Images/ + Category_ids/ 0000002
    with pytest.raises(DatasetError, match="no image converted .*: 5000 x missing image"):  # 0000002 is not in val
        convert_cihp(src, tmp_path / "val", split="val", progress=False)
    assert not (tmp_path / "val").exists()  # before: an empty dataset there, and a re-run refused without --overwrite
    with pytest.raises(DatasetError, match="no split list for 'test'"):
        convert_cihp(src, tmp_path / "test", split="test", progress=False)


def test_a_release_converted_into_its_own_folder_is_refused_before_anything_is_removed(fixtures, tmp_path, capsys,
                                                                                      monkeypatch):
    """CIHP keeps its images in ROOT/images/, the folder a dataset written into ROOT replaces. Before, `convert cihp
    --src ROOT --out ROOT --overwrite` deleted them first, then converted 0 images (exit 1). conversion.json records
    the inputs absolute (before: as typed, so a relative --src meant nothing from another folder)."""
    release = tmp_path / "CIHP"
    shutil.copytree(fixtures / "cihp_pgn/CIHP", release)
    before = sorted(p.name for p in (release / "images").iterdir())
    assert cli.main(["convert", "cihp", "--src", str(release), "--split", "val", "--out", str(release),
                     "--overwrite"]) == 2
    assert f"lies in {(release / 'images').resolve()}, which writing the dataset" in capsys.readouterr().err
    assert sorted(p.name for p in (release / "images").iterdir()) == before and before
    monkeypatch.chdir(tmp_path)
    convert(capsys, ["cihp", "--src", "CIHP", "--split", "val", "--out", "converted"])
    provenance = json.loads((tmp_path / "converted" / "conversion.json").read_text())["source"]
    assert provenance["src"] == str(release) and provenance["list"] is None
    convert_cihp("CIHP", "by_list", id_list="CIHP/list/val_id.txt", progress=False)  # str paths, as the API takes
    provenance = json.loads((tmp_path / "by_list" / "conversion.json").read_text())["source"]
    assert provenance["list"] == str(release / "list" / "val_id.txt")


def test_cihp_cli_inspect_oracle(fixtures, tmp_path, capsys):
    out = tmp_path / "cihp"
    convert(capsys, ["cihp", "--src", fixtures / "cihp_pgn/CIHP", "--split", "val", "--out", out])
    counts = inspect_json(capsys, out)
    assert counts["images"] == 5 == counts["images_part_labeled"] and counts["images_pose_labeled"] == 0
    assert counts["part_pixel_share"]["glove"] == 0 and counts["part_pixel_share"]["upper_clothes"] > 0.05
    metrics = oracle(out, tmp_path)
    assert "pose" not in metrics and metrics["segmentation"]["mean_iou"] >= 0.9


def test_inspect_notes_part_maps_resized_with_interpolation(fixtures, tmp_path, capsys):
    """A label map resized with linear interpolation (PIL's default for a grey image is cubic) takes the pixels
    along its edges for the classes whose numbers lie between their neighbours': before, inspect counted them as
    parts without a word. CIHP's own maps (real annotations) are not noted; one of them resized down and back up
    is, by name."""
    from PIL import Image

    out = tmp_path / "cihp"
    convert(capsys, ["cihp", "--src", fixtures / "cihp_pgn/CIHP", "--split", "val", "--out", out])
    assert inspect_json(capsys, out)["part_maps_interpolated"] == {"maps": 0, "first": None, "ramps": None}
    resized = sorted((out / "parts").glob("*.png"))[1]
    labels = np.asarray(Image.open(resized))
    height, width = labels.shape
    smaller = cv2.resize(labels, (width * 2 // 3, height * 2 // 3), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(cv2.resize(smaller, (width, height), interpolation=cv2.INTER_LINEAR)).save(resized)
    interpolated = inspect_json(capsys, out)["part_maps_interpolated"]
    assert interpolated["maps"] == 1 and interpolated["first"] == str(resized) and interpolated["ramps"] > 0.2
    assert cli.main(["inspect", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"note: 1 part map(s) have ramps of in-between labels along their edges (first: {resized}" in printed
    assert "nearest-neighbour interpolation" in printed
