"""MPII reader: the mmpose JSON + valid.h5 (a real PCKh check), the annolist .mat layout (real MHP file and a RELEASE
file written in the official structure)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from reader_checks import convert, inspect_json, oracle
from scipy.io import savemat

from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.readers.common import Person, Skips
from posepart.data.readers.mpii import attach_head_sizes, convert_mpii, read_annolist_mat, read_valid_h5
from posepart.errors import UsageError
from posepart.metrics import pckh
from posepart.schema import Schema

SCHEMA = Schema.mpii()
# rows 0-4 of valid.h5 = the 5 mmpose/mpii images; their `normalize` (0.6 x head-box diagonal), read with h5py
HEAD_SIZES = {"005808361.jpg": 117.96219733456985, "052475643.jpg": 44.04588516535909,
              "051423444.jpg": 78.48082568372992, "004645041.jpg": 81.2219182240853,
              "060754485.jpg": 84.36989984585735}


@pytest.fixture(scope="module")
def mpii(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpii") / "ds"
    result = convert_mpii(fixtures / "mmpose/mpii/test_mpii.json", fixtures / "mmpose/mpii", out,
                          head_sizes=fixtures / "mpii_eval/valid.h5", progress=False)
    return result, PosePartDataset.open(out)


def test_json_counts_values_and_head_sizes(mpii):
    result, ds = mpii
    assert (result.images, result.people) == (5, 5) and not result.skips.counts
    assert ds.schema == SCHEMA
    for rec in ds:
        assert rec.head_sizes.tolist() == [pytest.approx(HEAD_SIZES[rec.file_name], abs=1e-4)]
    rec = next(r for r in ds if r.file_name == "005808361.jpg")
    # test_mpii.json entry 0: r_ankle [804, 711], head_top [962.2409, 80.0306], 1-based -> minus 1
    assert rec.keypoints[0, SCHEMA.joint("right_ankle")].tolist() == [803, 710, 2]
    head_top = rec.keypoints[0, SCHEMA.joint("head_top")].tolist()
    assert head_top == pytest.approx([961.2409, 79.0306, 2], abs=1e-3)  # stored to 3 decimals
    rec = next(r for r in ds if r.file_name == "051423444.jpg")  # joints_vis 0 for both ankles
    assert rec.keypoints[0, [0, 5], 2].tolist() == [0, 0] and (rec.keypoints[0, 1:5, 2] == 2).all()


def test_split_is_refused_for_a_file_that_holds_one_split(fixtures, tmp_path):
    """Before: `--split train` with the mmpose JSON (or valid.h5) was ignored without a word."""
    for src in (fixtures / "mmpose/mpii/test_mpii.json", fixtures / "mpii_eval/valid.h5"):
        with pytest.raises(UsageError, match="only the release .mat holds several splits"):
            convert_mpii(src, fixtures / "mmpose/mpii", tmp_path / src.stem, split="train", progress=False)
        assert not (tmp_path / src.stem).exists()


def test_a_missing_annotation_file_is_named_as_missing(tmp_path):
    """Before: scipy's "Reader needs file name or open file-like object" and h5py's errno text."""
    for read in (read_annolist_mat, read_valid_h5):
        with pytest.raises(DatasetError, match=f"{tmp_path / 'no.file'}: annotation file not found"):
            read(tmp_path / "no.file")


def test_pckh_on_the_five_real_images(mpii, fixtures):
    _, ds = mpii
    records = sorted(ds, key=lambda r: r.file_name)
    gt = [r.keypoints for r in records]
    heads = [r.head_sizes for r in records]
    assert sum(int((g[..., 2] > 0).sum()) for g in gt) == 76  # 16 + 16 + 14 + 14 + 16 labelled joints
    assert pckh(gt, gt, heads, SCHEMA) == 1.0
    # the independent valid.h5 annotation (its head/neck differ from the JSON's by ~1 px) scored as a prediction
    h5 = read_valid_h5(fixtures / "mpii_eval/valid.h5")
    pred = [np.stack([p.keypoints for p in h5[r.file_name]]) for r in records]
    assert pckh(gt, pred, heads, SCHEMA) == 1.0
    # perturbation by hand: 2 of the 76 joints moved just beyond 0.5 x head size, 1 just within -> 74 / 76
    moved = [np.array(g, copy=True) for g in gt]
    index = {r.file_name: i for i, r in enumerate(records)}
    moved[index["005808361.jpg"]][0, SCHEMA.joint("right_wrist"), 0] += 0.5 * HEAD_SIZES["005808361.jpg"] + 0.5
    moved[index["060754485.jpg"]][0, SCHEMA.joint("head_top"), 1] -= 0.5 * HEAD_SIZES["060754485.jpg"] + 0.5
    moved[index["052475643.jpg"]][0, SCHEMA.joint("left_ankle"), 0] += 0.5 * HEAD_SIZES["052475643.jpg"] - 0.5
    assert pckh(gt, moved, heads, SCHEMA) == pytest.approx(74 / 76)


def test_mhp_annolist_mat(fixtures, tmp_path):
    """The real MHP file in MPII's annolist layout: counts, values and head boxes; it has no image names."""
    mat = fixtures / "mhp_official/annolist_test_multi_mhp.mat"
    entries = read_annolist_mat(mat)
    assert len(entries) == 5000 and all(name is None for name, _ in entries)
    assert sum(len(people) for _, people in entries) == 13297  # 13306 annorects, 9 without annopoints
    first = entries[0][1][0]
    # annorect(1): head box x1 131 y1 154 x2 167 y2 196; point id 1 (r_knee) at (123, 401), id 9 (head_top) (149, 151)
    assert first.extra["head_box"] == [130, 153, 166, 195]
    assert first.keypoints[1].tolist() == [122, 400, 2] and first.keypoints[9].tolist() == [148, 150, 2]
    assert first.keypoints[[0, 5, 14, 15], 2].tolist() == [0, 0, 0, 0]  # ids absent from the file
    for i in (1, 2):  # blank stand-ins for the first two images, large enough for their points
        xy = np.concatenate([p.keypoints[:, :2] for p in entries[i - 1][1]])
        cv2.imwrite(str(tmp_path / f"{i:05d}.jpg"), np.zeros((int(xy[:, 1].max()) + 8, int(xy[:, 0].max()) + 8, 3),
                                                             np.uint8))
    result = convert_mpii(mat, tmp_path, tmp_path / "out", image_names="{index:05d}.jpg", progress=False)
    assert result.images == 2 and result.skips.counts["missing image"] == 4998
    rec = PosePartDataset.open(tmp_path / "out").records[0]
    assert rec.num_people == len(entries[0][1]) == 2
    assert rec.head_sizes[0] == pytest.approx(0.6 * np.hypot(167 - 131, 196 - 154))  # 0.6 x diagonal = 33.19

    # MHP marks 243 labelled people's missing head boxes with -1s, as in image 8's: before, written as [-2, -2, -2, -2],
    # which every reader of the dataset refused ("head_box: expected [x1, y1, x2, y2] with x2 > x1")
    assert all(p.extra["head_box"][2] > p.extra["head_box"][0] and p.extra["head_box"][3] > p.extra["head_box"][1]
               for _, people in entries for p in people if "head_box" in p.extra)
    assert sum("head_box" not in p.extra for _, people in entries for p in people) == 243
    xy = np.concatenate([p.keypoints[:, :2] for p in entries[7][1]])
    height, width = int(xy[:, 1].max()) + 8, int(xy[:, 0].max()) + 8
    cv2.imwrite(str(tmp_path / "00008.jpg"), np.zeros((height, width, 3), np.uint8))
    result = convert_mpii(mat, tmp_path, tmp_path / "out8", image_names="{index:05d}.jpg", progress=False)
    why = "head box missing or empty (x2 <= x1 or y2 <= y1: PCKh falls back to head-neck)"
    assert result.skips.counts[why] == 243
    eighth = next(r for r in PosePartDataset.open(tmp_path / "out8").records if r.file_name == "00008.jpg")
    assert eighth.num_people == len(entries[7][1]) == 3
    assert np.isnan(eighth.head_sizes).tolist() == [True, False, False]  # no head size: PCKh's head-neck fallback


def _struct_array(rows: list[tuple], names: list[str]) -> np.ndarray:
    """A 1xN MATLAB struct array for savemat."""
    array = np.empty((1, len(rows)), dtype=[(n, "O") for n in names])
    for i, row in enumerate(rows):
        for name, value in zip(names, row):
            array[0, i][name] = value
    return array


def test_release_mat_structure(tmp_path):
    """A file in the official RELEASE layout: img_train split, is_visible as int / string / empty, an unannotated
    person (no annopoints) that becomes an ignore box from objpos and scale."""
    empty = np.zeros((0, 0))
    points = _struct_array([(11.0, 21.0, 0, 1), (31.0, 41.0, 9, "0"), (36.0, 46.0, 12, empty), (500.0, 5.0, 3, 1)],
                           ["x", "y", "id", "is_visible"])
    rects = _struct_array([(6.0, 7.0, 26.0, 31.0, {"point": points}, 2.0, {"x": 51.0, "y": 61.0}),
                           (empty, empty, empty, empty, empty, 0.5, {"x": 151.0, "y": 101.0})],
                          ["x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"])
    annolist = _struct_array([({"name": "a.jpg"}, rects), ({"name": "b.jpg"}, empty)], ["image", "annorect"])
    mat = tmp_path / "release.mat"
    savemat(mat, {"RELEASE": {"annolist": annolist, "img_train": np.array([[1, 0]])}})
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.zeros((200, 300, 3), np.uint8))
    assert [name for name, _ in read_annolist_mat(mat, "all")] == ["a.jpg", "b.jpg"]
    nameless = tmp_path / "nameless.mat"  # an annolist without image names, as MHP's
    savemat(nameless, {"annolist": _struct_array([(rects,)], ["annorect"])})
    with pytest.raises(DatasetError, match=r"nameless\.mat: the annolist has no image names.*--image-names"):
        convert_mpii(nameless, images, tmp_path / "nonames", progress=False)
    for pattern in ("{idx}.jpg", "img{index:q}.jpg", "{0}.jpg"):  # a wrong field or spec: the user's mistake
        with pytest.raises(UsageError, match=r"--image-names .*not a file name pattern over \{index\}"):
            convert_mpii(nameless, images, tmp_path / "badnames", image_names=pattern, progress=False)
    # one file for every entry: before, all of them written onto it ("wrote 1 images (13090 people...)" on MHP)
    with pytest.raises(UsageError, match=r"--image-names 'a\.jpg': gives every annolist entry the same file name"):
        convert_mpii(nameless, images, tmp_path / "onename", image_names="a.jpg", progress=False)
    assert not (tmp_path / "onename").exists()
    unlabelled = tmp_path / "unlabelled.mat"  # a person, then an image of nobody labelled: neither file exists
    savemat(unlabelled, {"annolist": _struct_array([(rects,), (empty,)], ["annorect"])})
    with pytest.raises(DatasetError, match="no image converted") as raised:  # before: an empty dataset, exit 1
        convert_mpii(unlabelled, images, tmp_path / "nofiles", split="all", image_names="{index}.jpg",
                     progress=False)
    assert "2 x missing image" in str(raised.value) and not (tmp_path / "nofiles").exists()
    assert "image without an annotated person" not in str(raised.value)  # none written
    result = convert_mpii(mat, images, tmp_path / "out", progress=False)  # default split: train = a.jpg only
    assert result.images == 1 and result.skips.counts["keypoint outside the image (joint dropped)"] == 1
    assert result.skips.counts["person without keypoints (ignore region when it has objpos and scale)"] == 1
    rec = PosePartDataset.open(tmp_path / "out").records[0]
    kp = rec.keypoints[0]
    assert kp[0].tolist() == [10, 20, 2] and kp[9].tolist() == [30, 40, 1] and kp[12].tolist() == [35, 45, 2]
    assert kp[3, 2] == 0  # (500, 5) lies outside the 300-px-wide image
    assert rec.head_sizes[0] == pytest.approx(0.6 * np.hypot(20, 24))  # by hand, not the reader's function
    assert rec.ignore_regions == ([100.0, 50.0, 100.0, 100.0],)  # side 200 x 0.5 around objpos (150, 100)


def test_malformed_json_names_file_and_entry(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "x.jpg", "joints": [[1, 2]] * 15, "joints_vis": [1] * 15}]))
    with pytest.raises(DatasetError, match=r"bad\.json: entry 0: 15 joints"):
        convert_mpii(bad, tmp_path, tmp_path / "out", progress=False)


def test_cli_convert_inspect_and_oracle(fixtures, tmp_path, capsys):
    out = tmp_path / "mpii"
    convert(capsys, ["mpii", "--src", fixtures / "mpii_eval/valid.h5", "--images", fixtures / "mmpose/mpii",
                     "--out", out])
    counts = inspect_json(capsys, out)
    assert counts["images"] == 5 and counts["people"] == 5
    # valid.h5 carries occlusion: of rows 0-4 only row 2 (051423444) has labelled joints with visible 0, its right
    # wrist and right elbow (its ankles are unlabelled: part (0, 0))
    occluded = {name: n["occluded"] for name, n in counts["keypoints_per_joint"].items() if n["occluded"]}
    assert occluded == {"right_wrist": 1, "right_elbow": 1}
    metrics = oracle(out, tmp_path)
    assert metrics["pose"]["ap"] == pytest.approx(1.0) and metrics["pose"]["pckh"] == pytest.approx(1.0)


def test_an_image_name_that_leaves_the_image_folder_is_skipped(fixtures, tmp_path):
    """Before: `"image": "../outside/x.jpg"` was read beside --images and written beside the dataset (and the dataset
    reader then refused what convert had written)."""
    images = tmp_path / "release" / "images"
    images.mkdir(parents=True)
    photo = next((fixtures / "mmpose/mpii").glob("*.jpg"))
    shutil.copy(photo, images / "a.jpg")
    shutil.copy(photo, tmp_path / "release" / "secret.jpg")
    person = {"joints": [[100.0 + 10 * i, 200.0] for i in range(16)], "joints_vis": [1] * 16}
    src = tmp_path / "annotations.json"
    src.write_text(json.dumps([{"image": "a.jpg", **person}, {"image": "../secret.jpg", **person}]))
    result = convert_mpii(src, images, tmp_path / "out" / "ds", progress=False)
    assert result.images == 1 and result.skips.counts["unsafe file name"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ds"]  # nothing written beside the dataset
    assert [r.file_name for r in PosePartDataset.open(tmp_path / "out" / "ds").records] == ["a.jpg"]


def test_head_sizes_go_to_the_person_with_the_most_joints_in_reach():
    """Before: the pairing of the most people gave the reference person with g0's two joints exactly to g1 (and the
    other reference, 290 px away, to g0), both then refused as too far: g0 lost its head size."""
    def person(joints: dict[int, tuple[float, float]], size: float | None = None) -> Person:
        kp = np.zeros((16, 3), np.float32)
        for j, xy in joints.items():
            kp[j] = (*xy, 2)
        return Person(kp, extra={} if size is None else {"head_size": size})

    people = {"a.jpg": [person({0: (0, 0), 1: (0, 10)}), person({2: (100, 0)})]}
    reference = {"a.jpg": [person({0: (0, 0), 1: (0, 10), 2: (500, 500)}, 20.0), person({1: (0, 300)}, 20.0)]}
    skips = Skips()
    attach_head_sizes(people, reference, skips)
    assert people["a.jpg"][0].extra == {"head_size": 20.0} and people["a.jpg"][1].extra == {}
    assert sum(skips.counts.values()) == 1  # g1: no reference person of its own
