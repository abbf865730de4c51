"""The synthetic dataset: determinism, annotation rules (COCO visibility, RLE/area/bbox), part maps, writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from posepart.data.synth import iter_scenes, scene_at, write_synth
from posepart.schema import PASCAL_KEYPOINTS, Schema

SCHEMA = Schema.pascal_person_part()
SIZE = 128
SEED = 11
N_SCENES = 16

# The parts a joint touches (from the part definitions: a wrist joins lower arm and hand, which counts as lower arm).
ADJACENT = {
    "head": {"head"}, "neck": {"head", "torso"}, "shoulder": {"torso", "upper_arm"},
    "elbow": {"upper_arm", "lower_arm"}, "wrist": {"lower_arm"}, "hip": {"torso", "upper_leg"},
    "knee": {"upper_leg", "lower_leg"}, "ankle": {"lower_leg"},
}


@pytest.fixture(scope="module")
def scenes() -> list:
    return list(iter_scenes(N_SCENES, SEED, SIZE))


def _masks(scene) -> list[np.ndarray]:
    return [mask_utils.decode(a["segmentation"]).astype(bool) for a in scene.annotations]


def test_deterministic_and_independent_of_n() -> None:
    a = list(iter_scenes(2, 3, 96))
    b = list(iter_scenes(4, 3, 96))
    for x, y in zip(a, b):
        assert x.image.tobytes() == y.image.tobytes()
        assert x.parts.tobytes() == y.parts.tobytes()
        assert json.dumps(x.annotations) == json.dumps(y.annotations)
    again = scene_at(3, 1, 96)
    assert again.image.tobytes() == a[1].image.tobytes() and again.parts.tobytes() == a[1].parts.tobytes()
    other = scene_at(4, 1, 96)
    assert other.image.tobytes() != a[1].image.tobytes()
    assert a[0].image.tobytes() != a[1].image.tobytes()


def test_arrays_and_people_counts(scenes) -> None:
    counts = []
    for sc in scenes:
        assert sc.image.shape == (SIZE, SIZE, 3) and sc.image.dtype == np.uint8
        assert sc.parts.shape == (SIZE, SIZE) and sc.parts.dtype == np.uint8
        assert set(np.unique(sc.parts)) <= set(range(SCHEMA.num_parts))
        labelled = sum(a["iscrowd"] == 0 for a in sc.annotations)
        assert 1 <= labelled <= 5
        counts.append(labelled)
        assert 35 <= sc.jpeg_quality <= 95
    assert len(set(counts)) >= 3  # the number of people varies
    assert any(a["iscrowd"] for sc in scenes for a in sc.annotations)  # some ignore regions are included


def test_masks_area_bbox_and_part_map_agree(scenes) -> None:
    for sc in scenes:
        masks = _masks(sc)
        union = np.zeros((SIZE, SIZE), int)
        for ann, m in zip(sc.annotations, masks):
            assert ann["area"] == pytest.approx(float(mask_utils.area(ann["segmentation"])))
            assert ann["area"] == m.sum() > 0
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == pytest.approx([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
            assert isinstance(ann["segmentation"]["counts"], str)
            union += m
        assert union.max() <= 1  # visible masks of different people never overlap
        # every person pixel carries a part label and nothing else does (distractors are background)
        np.testing.assert_array_equal(union.astype(bool), sc.parts > 0)


def test_keypoint_visibility_rules(scenes) -> None:
    names = SCHEMA.keypoints
    seen = {0: 0, 1: 0, 2: 0}
    for sc in scenes:
        for ann, xy in zip(sc.annotations, sc.joints):
            kp = np.asarray(ann["keypoints"], float).reshape(SCHEMA.num_joints, 3)
            if ann["iscrowd"]:
                assert not kp.any() and ann["num_keypoints"] == 0
                continue
            assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
            inside = np.all((np.floor(xy + 0.5) >= 0) & (np.floor(xy + 0.5) < SIZE), 1)
            np.testing.assert_array_equal(kp[:, 2] > 0, inside)  # v=0 exactly for joints outside the image
            assert not kp[~inside].any()  # ... and those are written as 0, 0, 0
            np.testing.assert_array_equal(kp[inside, :2], xy[inside])  # the drawn joint positions, exactly
            assert np.all(kp[:, :2] * 16 == np.round(kp[:, :2] * 16))  # drawn with 1/16 px precision
            for j in np.flatnonzero(kp[:, 2] == 2):
                x, y = (int(np.floor(c + 0.5)) for c in kp[j, :2])
                window = sc.parts[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
                kind = names[j].split("_", 1)[-1]
                allowed = {SCHEMA.part_classes.index(p) for p in ADJACENT[kind]}
                assert set(np.unique(window)) & allowed, f"visible {names[j]} at ({x}, {y}) not on {ADJACENT[kind]}"
            for v in (0, 1, 2):
                seen[v] += int((kp[:, 2] == v).sum())
    assert min(seen.values()) > 0, seen  # occlusions and border cuts both happen


def test_write_synth_round_trip(tmp_path) -> None:
    from posepart.data.format import PosePartDataset

    root = write_synth(tmp_path / "a", n=3, seed=5, size=96)
    ds = PosePartDataset.open(root)
    assert ds.schema == SCHEMA and len(ds) == 3 and ds.has_parts
    for i, record in enumerate(ds):
        sc = scene_at(5, i, 96)
        np.testing.assert_array_equal(ds.load_parts(record), sc.parts)
        img = ds.load_image(record).astype(float)
        assert np.abs(img - sc.image).mean() < 12  # the same picture, JPEG-compressed
        assert len(record.annotations) == len(sc.annotations)
        assert record.num_people == sum(a["iscrowd"] == 0 for a in sc.annotations)
    root2 = write_synth(tmp_path / "b", n=3, seed=5, size=96, workers=2)
    assert (root / "annotations.json").read_bytes() == (root2 / "annotations.json").read_bytes()
    for name in ("000000", "000001", "000002"):
        assert (root / "images" / f"{name}.jpg").read_bytes() == (root2 / "images" / f"{name}.jpg").read_bytes()


def test_a_synthetic_dataset_and_its_split_record_how_to_make_them_again(tmp_path) -> None:
    """A walkthrough: neither `posepart synth` nor `split` wrote their seed or options anywhere, so a synthetic
    benchmark could not be made again from its folder (a run records its data by path and image counts alone)."""
    from posepart.data.format import PosePartDataset
    from posepart.data.split import split_dataset
    from posepart.data.synth import SceneConfig

    root = write_synth(tmp_path / "a", n=4, seed=3, size=64, config=SceneConfig.easy())
    made = json.loads((root / "annotations.json").read_text())["info"]["posepart synth"]
    assert made == {"n": 4, "seed": 3, "size": 64, "scene": {"max_people": 2, "min_height": 0.5, "crowd_prob": 0.0,
                                                              "clutter": 0.0}}
    again = write_synth(tmp_path / "b", n=made["n"], seed=made["seed"], size=made["size"],
                        config=SceneConfig(**made["scene"]))
    assert (again / "annotations.json").read_bytes() == (root / "annotations.json").read_bytes()
    split = split_dataset(PosePartDataset.open(root), 0.25, tmp_path / "split", seed=1)
    val = json.loads(split.val.read_text())
    assert val["info"]["posepart split"] == {"of": str((root / "annotations.json").resolve()), "val": 0.25,
                                             "seed": 1, "subset": "val"}
    assert val["info"]["posepart synth"] == made  # the dataset's own record kept
    # a split of a split keeps the first split's record (before: replaced by the second's)
    again = split_dataset(PosePartDataset.open(root, annotations=split.train), 1, tmp_path / "split2", seed=2)
    record = json.loads(again.val.read_text())["info"]["posepart split"]
    assert record["of"] == str(split.train.resolve()) and record["seed"] == 2
    assert record["earlier"] == {**val["info"]["posepart split"], "subset": "train"}


def test_synth_keeps_an_existing_dataset_unless_told(tmp_path, capsys) -> None:
    """Before: `posepart synth DIR` over a dataset replaced its annotations.json and left its files behind unlisted
    (a user's data lost without a word), and --n 0, --size 0 and a negative seed went through or gave tracebacks."""
    from posepart.cli import main

    root = write_synth(tmp_path / "a", n=3, seed=5, size=64)
    before = (root / "annotations.json").read_bytes()
    assert main(["synth", str(root), "--n", "1", "--size", "64"]) == 2
    assert "annotations.json exists; pass --overwrite" in capsys.readouterr().err
    assert (root / "annotations.json").read_bytes() == before and len(list((root / "images").iterdir())) == 3
    assert main(["synth", str(root), "--n", "1", "--size", "64", "--overwrite"]) == 0
    assert sorted(p.name for p in (root / "images").iterdir()) == ["000000.jpg"]  # the old files went with it
    assert sorted(p.name for p in (root / "parts").iterdir()) == ["000000.png"]
    for option in (["--n", "0"], ["--size", "0"], ["--seed", "-5"]):
        assert main(["synth", str(tmp_path / "b"), *option]) == 2, option
        assert "synth: need n >= 1, size >= 1 and seed >= 0" in capsys.readouterr().err
    victim = tmp_path / "victim"  # images/ a link: before, --overwrite kept the link and wrote into its target
    victim.mkdir()
    (victim / "mine.jpg").write_bytes(b"mine")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "images").symlink_to(victim)
    assert main(["synth", str(tmp_path / "linked"), "--n", "1", "--size", "64", "--overwrite"]) == 2
    assert "images is a link" in capsys.readouterr().err and sorted(p.name for p in victim.iterdir()) == ["mine.jpg"]
    with pytest.raises(SystemExit):  # before: 0 or -1 workers ran as one
        main(["synth", str(tmp_path / "b"), "--workers", "0"])
    assert "--workers: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before anything was written
    photos = tmp_path / "photos" / "images"  # no annotations.json: before, 000000.jpg was overwritten and
    photos.mkdir(parents=True)                 # holiday.jpg joined the synthetic dataset
    (photos / "000000.jpg").write_bytes(b"mine")
    (photos / "holiday.jpg").write_bytes(b"mine too")
    assert main(["synth", str(photos.parent), "--n", "1", "--size", "64"]) == 2
    assert "images exists; pass --overwrite" in capsys.readouterr().err
    assert (photos / "000000.jpg").read_bytes() == b"mine" and (photos / "holiday.jpg").read_bytes() == b"mine too"
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)  # an empty images/ holds nothing to lose
    assert main(["synth", str(empty), "--n", "1", "--size", "64"]) == 0


def test_scene_config_bounds_people_and_size() -> None:
    from posepart.data.synth import SceneConfig

    config = SceneConfig(max_people=2, min_height=0.6, crowd_prob=0.0)
    easy = list(iter_scenes(12, 5, 128, config=config))
    assert all(1 <= len(s.annotations) <= 2 and not any(a["iscrowd"] for a in s.annotations) for s in easy)

    def mean_height(scenes: list) -> float:
        return float(np.mean([a["bbox"][3] for s in scenes for a in s.annotations if not a["iscrowd"]]))

    assert mean_height(easy) > 1.3 * mean_height(list(iter_scenes(12, 5, 128)))
    with pytest.raises(ValueError, match="max_people"):
        SceneConfig(max_people=0)


def test_clutter_scales_background_detail_and_keeps_the_default_scene() -> None:
    from posepart.data.synth import SceneConfig

    def roughness(scenes: list) -> float:
        """Mean absolute horizontal colour step between neighbouring background pixels."""
        steps = []
        for s in scenes:
            step = np.abs(np.diff(s.image.astype(float), axis=1)).sum(-1)
            background = (s.parts[:, 1:] == 0) & (s.parts[:, :-1] == 0)
            steps.append(step[background].mean())
        return float(np.mean(steps))

    plain = list(iter_scenes(8, 3, 128, config=SceneConfig(clutter=0.0)))
    busy = list(iter_scenes(8, 3, 128))
    assert roughness(plain) < 0.7 * roughness(busy)
    explicit = next(iter_scenes(1, 3, 128, config=SceneConfig(clutter=1.0)))
    assert np.array_equal(explicit.image, busy[0].image)  # clutter=1 is the benchmark, draw for draw
    assert SceneConfig.easy().clutter == 0.0
    with pytest.raises(ValueError, match="clutter"):
        SceneConfig(clutter=1.5)


def test_the_bodys_joint_indices_are_the_schemas() -> None:
    """The renderer's joint constants are read off `PASCAL_KEYPOINTS` (before: numbers written by hand), and its
    limbs take the right joint as the left one's next index."""
    from posepart.data.synth import pose

    assert PASCAL_KEYPOINTS[pose.HEAD_TOP] == "head" and PASCAL_KEYPOINTS[pose.NECK] == "neck"
    for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        left = getattr(pose, joint.upper())
        assert PASCAL_KEYPOINTS[left: left + 2] == (f"left_{joint}", f"right_{joint}")


def test_view_of_names_the_yaw_by_hand() -> None:
    from posepart.data.synth.pose import view_of

    cases = {0: "front", -29.9: "front", 30: "front", 45: "oblique", -67.5: "oblique", 90: "side", -120: "side",
             131: "back", 180: "back", 200: "back", -170: "back", 355: "front", 270: "side"}
    assert {yaw: view_of(yaw) for yaw in cases} == cases


def test_people_carry_how_they_were_made_and_the_view_matches_the_drawing() -> None:
    """Each annotation's `synth` metadata (pose kind, view, yaw): seen from the front a person's left shoulder and hip
    are drawn right of the right ones in the image, seen from the back left of them."""
    from posepart.data.synth.pose import POSE_KINDS, view_of

    names = SCHEMA.keypoints
    pairs = [(names.index(f"left_{j}"), names.index(f"right_{j}")) for j in ("shoulder", "hip")]
    seen = {"front": 0, "back": 0}
    for sc in iter_scenes(40, SEED, SIZE):
        for ann, xy in zip(sc.annotations, sc.joints):
            made = ann["synth"]
            assert made["pose"] in POSE_KINDS and made["view"] == view_of(made["yaw"])
            if made["view"] in seen:
                seen[made["view"]] += 1
                sign = 1 if made["view"] == "front" else -1
                assert all(sign * (xy[left, 0] - xy[right, 0]) > 0 for left, right in pairs), made
    assert seen["front"] >= 10 and seen["back"] >= 2
