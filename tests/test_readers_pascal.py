"""PASCAL-Person-Part reader: the real colour PNGs + Berkeley keypoints, index/palette PNGs, Xia .mat pose files."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from reader_checks import convert, inspect_json, oracle
from scipy.io import savemat

from posepart.cli import main
from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.readers.pascal import BERKELEY_TO_PASCAL, convert_pascal, part_lut, read_part_png, xia_joint_names
from posepart.errors import UsageError
from posepart.schema import Schema, voc_palette

SCHEMA = Schema.pascal_person_part()


@pytest.fixture(scope="module")
def pascal(fixtures, tmp_path_factory):
    """The 8 fixture images converted with their Berkeley keypoints."""
    out = tmp_path_factory.mktemp("pascal") / "ds"
    result = convert_pascal(fixtures / "grapy_ml/pascal_person_part", out, progress=False,
                            berkeley_dir=fixtures / "pascal_berkeley_keypoints/person")
    return result, PosePartDataset.open(out)


def test_fixture_counts_and_exact_values(pascal):
    result, ds = pascal
    assert (result.images, result.people, result.part_maps) == (8, 18, 8)  # 18 person XMLs for the 8 images
    # joints outside the image, checked by hand in the XMLs: both knees of 2008_000026_0, L_Knee of 2008_000034_3,
    # L_Shoulder of 2008_000041_5 and of 2008_000041_6 (L_Ear of _6 is outside too but has no PASCAL joint)
    assert result.skips.counts["keypoint outside the image (joint dropped)"] == 5
    assert ds.schema == SCHEMA
    rec = next(r for r in ds if r.file_name == "2008_000041.jpg")
    assert rec.num_people == 7 and (rec.width, rec.height) == (500, 375)
    first = rec.keypoints[0]  # 2008_000041_0.xml
    assert first[SCHEMA.joint("left_shoulder")].tolist() == pytest.approx([364.78, 199.63, 2])  # visible="1"
    assert first[SCHEMA.joint("left_hip")].tolist() == pytest.approx([353.93, 250.25, 1])  # visible="0": occluded
    # neck = midpoint of L_Shoulder (364.78, 199.63) and R_Shoulder (331.73, 194.80); head: B_Head is not the top
    assert first[SCHEMA.joint("neck")].tolist() == pytest.approx([348.255, 197.215, 2])
    assert (np.concatenate([r.keypoints for r in ds])[:, SCHEMA.joint("head"), 2] == 0).all()
    # the two dropped L_Shoulders of 2008_000041 take their necks with them (before: a neck beside the dropped one)
    people = np.concatenate([r.keypoints for r in ds])
    necks, shoulders = people[:, SCHEMA.joint("neck"), 2] > 0, people[:, SCHEMA.joint("left_shoulder"), 2] > 0
    assert necks.sum() == shoulders.sum() == 16 and not (necks & ~shoulders).any()
    # part pixels of 2008_000003.png counted in the raw RGBA file: green 163 (torso), magenta (126,1,128) 73
    # (lower leg), cyan (0,128,128) 142 (upper leg), the rest black
    parts = ds.load_parts(next(r for r in ds if r.file_name == "2008_000003.jpg"))
    counts = np.bincount(parts.ravel(), minlength=7)
    assert counts.tolist() == [333 * 500 - 163 - 73 - 142, 0, 163, 0, 0, 142, 73]


def test_an_unreadable_image_is_counted_not_fatal_with_berkeley_keypoints(fixtures, tmp_path):
    """A review caught a version that read each Berkeley image's size for the neck and let PIL's error end the
    conversion; the writer counts an unreadable image and goes on."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(fixtures / "grapy_ml/pascal_person_part", src)
    (src / "JPEGImages" / "2008_000003.jpg").write_text("not a jpeg")
    result = convert_pascal(src, tmp_path / "out", progress=False,
                            berkeley_dir=fixtures / "pascal_berkeley_keypoints/person")
    assert result.images == 7 and sum(n for reason, n in result.skips.counts.items() if "unreadable" in reason) == 1


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((p - a) @ ab / max(float(ab @ ab), 1e-9), 0, 1)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def test_observed_part_order_agrees_with_the_keypoints(pascal):
    """Independent truth for the colour -> part table: pixels of each limb part lie on that limb's bones."""
    _, ds = pascal
    bones = {"upper_arm": ("shoulder", "elbow"), "lower_arm": ("elbow", "wrist"),
             "upper_leg": ("hip", "knee"), "lower_leg": ("knee", "ankle")}
    near = {(part, bone): 0 for part in bones for bone in bones}
    for rec in ds:
        parts = ds.load_parts(rec)
        for part in bones:
            ys, xs = np.nonzero(parts == SCHEMA.part_classes.index(part))
            pixels = np.stack([xs, ys], 1).astype(np.float64)
            for bone, (a, b) in bones.items():
                for person in rec.keypoints:
                    for side in ("left", "right"):
                        ja, jb = person[SCHEMA.joint(f"{side}_{a}")], person[SCHEMA.joint(f"{side}_{b}")]
                        if len(pixels) and ja[2] > 0 and jb[2] > 0:
                            near[part, bone] += int((_segment_distance(pixels, ja[:2], jb[:2]) < 6).sum())
    for part in bones:  # e.g. lower_arm pixels: 6245 near forearms vs 1211 near upper arms
        others = max(near[part, bone] for bone in bones if bone != part)
        assert near[part, part] > 2 * others, (part, near)


def test_index_and_palette_pngs_and_part_orders(tmp_path):
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, 255]], np.uint8)
    grey, pal = tmp_path / "grey.png", tmp_path / "pal.png"
    Image.fromarray(ids, "L").save(grey)
    palette_image = Image.fromarray(ids, "P")
    palette_image.putpalette(voc_palette(256).reshape(-1).tolist())
    palette_image.save(pal)
    colour = tmp_path / "colour.png"
    Image.fromarray(voc_palette(256)[ids], "RGB").save(colour)  # 255 -> VOC void colour (224, 224, 192)
    common = [SCHEMA.part_classes.index(n) for n in ("head", "torso", "upper_arm", "lower_arm", "upper_leg",
                                                      "lower_leg")]
    expected = np.array([[0, *common[:3]], [*common[3:], 255]], np.uint8)
    for path in (grey, pal, colour):
        assert np.array_equal(read_part_png(path, part_lut("common", SCHEMA)), expected), path
    observed = read_part_png(grey, part_lut("observed", SCHEMA))
    assert [SCHEMA.part_classes[i] for i in observed[0, 1:]] == ["head", "torso", "lower_arm"]
    custom = part_lut("head,torso,upper_arm,lower_arm,upper_leg,lower_leg", SCHEMA)
    assert np.array_equal(custom, part_lut("common", SCHEMA))
    for order, words in [("head,torso,arm", "unknown: ['arm']"), ("head,torso,head", "repeated: ['head']"),
                         ("head,torso,upper_arm,lower_arm,upper_leg", "missing: ['lower_leg']")]:  # the last was
        with pytest.raises(UsageError, match=re.escape(words)):  # accepted, and its id 6 pixels dropped as unknown
            part_lut(order, SCHEMA)


def test_a_berkeley_folder_without_xml_is_refused(fixtures, tmp_path):
    """The release's parent folder instead of its person/: before, 0 people were written without a word."""
    with pytest.raises(DatasetError, match="no keypoint XML.*person/"):
        convert_pascal(fixtures / "grapy_ml/pascal_person_part", tmp_path / "out", progress=False,
                       berkeley_dir=fixtures / "pascal_berkeley_keypoints")


def _write_root(root: Path, ids: list[str], size=(60, 80)) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationPart").mkdir()
    rng = np.random.default_rng(0)
    for i in ids:
        cv2.imwrite(str(root / "JPEGImages" / f"{i}.jpg"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        Image.fromarray(np.zeros(size, np.uint8), "L").save(root / "SegmentationPart" / f"{i}.png")


def test_bad_part_pngs_are_counted_or_raised(tmp_path):
    root = tmp_path / "src"
    _write_root(root, ["a", "b", "c"])
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[5, 7] = (200, 30, 90)  # no VOC palette colour
    Image.fromarray(rgb, "RGB").save(root / "SegmentationPart/b.png")
    Image.fromarray(np.full((60, 80), 9, np.uint8), "L").save(root / "SegmentationPart/c.png")  # id 9 > 6
    (root / "list").mkdir()
    (root / "list/val_id.txt").write_text("a\nb\nc\nmissing\n")
    result = convert_pascal(root, tmp_path / "out", split="val", progress=False)
    assert result.images == 1
    assert result.skips.counts["unknown colour in part PNG"] == 1
    assert "b.png: unknown colour (200, 30, 90) (1 px, first at x=7, y=5)" in result.skips.examples[
        "unknown colour in part PNG"]
    assert result.skips.counts["bad part PNG"] == 1 and "c.png: label value 9" in result.skips.examples["bad part PNG"]
    assert result.skips.counts["missing image"] == 1 and "missing.jpg" in result.skips.examples["missing image"]
    with pytest.raises(DatasetError, match=r"b\.png: unknown colour"):
        convert_pascal(root, tmp_path / "strict", split="val", strict=True, progress=False)


def test_xia_mat_pose_files(tmp_path):
    """A file in Xia et al.'s documented structure: 1xN cell of 14x3 [x, y, v], v 1 visible / 2 occluded / NaN."""
    root = tmp_path / "src"
    _write_root(root, ["p"], size=(100, 120))
    (root / "pose_annotations").mkdir()
    person = np.full((14, 3), np.nan)
    person[0] = (50, 10, 1)  # head
    person[1] = (50, 25, 1)  # neck
    person[2] = (40, 30, 2)  # first arm's shoulder, occluded
    person[8] = (60, 30, 1)  # second arm's shoulder
    person[13] = (55, 200, 1)  # second leg's ankle: below the 100-px image
    joints = np.empty((1, 3), object)
    joints[0, 0], joints[0, 1], joints[0, 2] = person, np.zeros((0, 0)), np.full((14, 3), np.nan)
    boxes = np.array([[30, 0, 10], [5, 0, 10], [70, 0, 40], [95, 0, 50]], np.float64)  # 4 x N, x1 y1 x2 y2
    savemat(root / "pose_annotations/p.mat", {"joints": joints, "boxes": boxes})
    assert xia_joint_names("right")[2:5] == ("right_shoulder", "right_elbow", "right_wrist")
    for side, other in (("right", "left"), ("left", "right")):
        out = tmp_path / side
        result = convert_pascal(root, out, first_side=side, progress=False)
        rec = PosePartDataset.open(out).records[0]
        assert rec.num_people == 1 and len(rec.ignore_regions) == 1  # the empty person with a box
        assert rec.ignore_regions[0] == [10.0, 10.0, 30.0, 40.0]  # the all-NaN person's box; the empty one's is 0x0
        kp = rec.keypoints[0]
        assert kp[SCHEMA.joint("head")].tolist() == [50, 10, 2]
        assert kp[SCHEMA.joint(f"{side}_shoulder")].tolist() == [40, 30, 1]  # v 2 (occluded) -> COCO 1
        assert kp[SCHEMA.joint(f"{other}_shoulder")].tolist() == [60, 30, 2]
        assert kp[SCHEMA.joint(f"{other}_ankle"), 2] == 0  # outside the image: dropped and counted
        assert int((kp[:, 2] > 0).sum()) == 4  # NaN rows stay unlabelled
        assert result.skips.counts["person without joints (ignore region if boxed)"] == 2
        assert result.skips.counts["keypoint outside the image (joint dropped)"] == 1


def test_bad_pose_files_are_errors_with_strict_and_leave_their_image_unlabelled(fixtures, tmp_path):
    """A bad Xia .mat (wrong joint count) or an unreadable Berkeley XML is an error under --strict (before: counted and
    skipped whatever --strict said) and otherwise a skip counted once (before: again as "no pose annotation"). An
    image one of whose XMLs is unreadable keeps no pose labels (before: that person was dropped alone, and would have
    been taught as background)."""
    import shutil

    root = tmp_path / "src"
    _write_root(root, ["good", "bad"])
    (root / "pose_annotations").mkdir()
    joints = np.empty((1, 1), object)
    joints[0, 0] = np.full((13, 3), 10.0)  # 13 joints, not 14
    savemat(root / "pose_annotations/bad.mat", {"joints": joints})
    joints[0, 0] = np.full((14, 3), 10.0)
    savemat(root / "pose_annotations/good.mat", {"joints": joints})
    with pytest.raises(DatasetError, match=r"bad\.mat: person 0 joints have shape \(13, 3\), expected \(14, 3\)"):
        convert_pascal(root, tmp_path / "strict", strict=True, progress=False)
    assert not (tmp_path / "strict").exists()
    result = convert_pascal(root, tmp_path / "lenient", progress=False)
    assert result.images == 2 and dict(result.skips.counts) == {"bad pose file": 1}
    labelled = {Path(r.file_name).stem: r.pose_labeled for r in PosePartDataset.open(tmp_path / "lenient").records}
    assert labelled == {"good": True, "bad": False}
    # a truncated file and text joints: counted too (before: a traceback, and a fatal error naming no file)
    (root / "pose_annotations/bad.mat").write_bytes((root / "pose_annotations/good.mat").read_bytes()[:150])
    savemat(root / "pose_annotations/good.mat", {"joints": "oops"})
    result = convert_pascal(root, tmp_path / "worse", progress=False)
    assert result.images == 2 and dict(result.skips.counts) == {"bad pose file": 2}, result.skips.examples
    with pytest.raises(DatasetError, match=r"bad\.mat: cannot read MATLAB file"):
        convert_pascal(root, tmp_path / "strict", strict=True, progress=False)

    person = tmp_path / "person"
    shutil.copytree(fixtures / "pascal_berkeley_keypoints/person", person)
    (person / "2008_000023_2.xml").write_text("<annotation><image>2008_0000")  # truncated; 2 more people there
    src = fixtures / "grapy_ml/pascal_person_part"
    with pytest.raises(DatasetError, match=r"2008_000023_2\.xml: cannot parse keypoint XML"):
        convert_pascal(src, tmp_path / "strict_xml", berkeley_dir=person, strict=True, progress=False)
    result = convert_pascal(src, tmp_path / "xml", berkeley_dir=person, progress=False)
    assert result.skips.counts["bad keypoint XML (its image's pose left out)"] == 1
    assert "no pose annotation (image kept as parts-only)" not in result.skips.counts
    records = {Path(r.file_name).stem: r for r in PosePartDataset.open(tmp_path / "xml").records}
    assert not records["2008_000023"].pose_labeled and records["2008_000023"].num_people == 0
    assert all(r.pose_labeled for stem, r in records.items() if stem != "2008_000023")


def test_a_part_map_of_another_size_is_named(tmp_path):
    """The skip names the part PNG whose size is wrong (before: the JPEG, which is right)."""
    root = tmp_path / "src"
    _write_root(root, ["a", "b"])
    Image.fromarray(np.zeros((60, 79), np.uint8), "L").save(root / "SegmentationPart/b.png")
    result = convert_pascal(root, tmp_path / "out", progress=False)
    example = result.skips.examples["part map size mismatch"]
    assert "SegmentationPart/b.png: part map is 79x60 but the image b.jpg is 80x60" in example


def test_berkeley_table_is_limb_joints_only():
    assert set(BERKELEY_TO_PASCAL.values()) == set(SCHEMA.keypoints) - {"head", "neck"}
    assert BERKELEY_TO_PASCAL["L_Shoulder"] == "left_shoulder" and "B_Head" not in BERKELEY_TO_PASCAL


def test_cli_convert_split_inspect_and_oracle(fixtures, tmp_path, capsys):
    src = fixtures / "grapy_ml/pascal_person_part"
    out = tmp_path / "val"
    summary = convert(capsys, ["pascal-person-part", "--src", src, "--split", "val", "--out", out,
                               "--berkeley", fixtures / "pascal_berkeley_keypoints/person"])
    listed = len((src / "list/val_id.txt").read_text().split())  # 1831 ids, 4 of them in the fixture
    assert f"skipped {listed - 4} x missing image" in summary
    counts = inspect_json(capsys, out)
    assert counts["images"] == 4 and counts["images_part_labeled"] == 4
    assert counts["people"] == 1 + 1 + 1 + 3  # XMLs of 2008_000003, _026, _032 and three of _034
    assert counts["keypoints_per_joint"]["head"] == {"visible": 0, "occluded": 0}
    assert main(["convert", "pascal-person-part", "--src", str(src), "--out", str(out)]) == 2  # no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    metrics = oracle(out, tmp_path)
    assert metrics["pose"]["ap"] >= 0.95 and metrics["segmentation"]["mean_iou"] >= 0.9
    # the same conversion again with --overwrite replaces it (a version of this session claimed the folder twice, and
    # the second claim refused the annotations.json the first had kept, after the images were gone)
    convert(capsys, ["pascal-person-part", "--src", src, "--split", "val", "--out", out, "--overwrite",
                     "--berkeley", fixtures / "pascal_berkeley_keypoints/person"])
    assert inspect_json(capsys, out)["images"] == 4
