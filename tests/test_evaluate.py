"""Oracle evaluation end to end: synth -> inspect -> evaluate --oracle, and on the real COCO fixtures."""

import json
from pathlib import Path

import numpy as np
import pytest

from posepart.cli import main
from posepart.data.format import ImageRecord, PosePartDataset
from posepart.evaluate import Evaluator, Prediction, evaluate_oracle, format_metrics, scored_parts
from posepart.schema import Schema

SEG_KEYS = {"pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou", "iou_per_class"}
POSE_KEYS = {"ap", "ap50", "ap75", "ar", "pckh", "pck_dist"}


@pytest.fixture(scope="module")
def synth300(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "val"
    assert main(["synth", str(root), "--n", "300", "--seed", "1"]) == 0
    return root


def test_synth_oracle_meets_the_bar(synth300, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--oracle", "--data", str(synth300), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert SEG_KEYS <= set(metrics["segmentation"]) and POSE_KEYS <= set(metrics["pose"])
    for task in ("segmentation", "pose"):
        for key, value in metrics[task].items():
            if key in ("ap", "ap50", "ap75", "ar", "pckh", "pixel_accuracy", "mean_iou", "pck_dist"):
                assert 0.0 <= value <= 1.0, (task, key, value)
    assert metrics["pose"]["ap"] >= 0.95  # the bar for 300 synthetic images at the default size
    assert metrics["segmentation"]["mean_iou"] == pytest.approx(1.0)  # 368 -> 368: label maps survive exactly
    assert "ap" in capsys.readouterr().out  # the printed table


def test_synth_slices_by_view_and_pose(synth300):
    """On synthetic data the pose scores add `slices`: every labelled person in one view and one pose kind (as its
    annotation's `synth` says, in SLICES order), each slice's AP that of `coco_keypoint_ap` on its people alone."""
    from posepart.data.synth import MADE_KEY, SLICES
    from posepart.metrics import coco_keypoint_ap

    dataset = PosePartDataset.open(synth300)
    evaluator = Evaluator(dataset.schema)
    truth: dict[str, dict[str, set[int]]] = {}
    n = 0
    for record in dataset.records:
        evaluator.add(record, Prediction([], None), None)
        for ann in record.annotations:
            n += 1  # the Evaluator numbers the annotations from 1 in the records' order
            if not ann["iscrowd"] and ann["num_keypoints"]:
                for field in SLICES:
                    truth.setdefault(field, {}).setdefault(ann[MADE_KEY][field], set()).add(n)
    slices = evaluator.slices()
    assert slices == truth and list(slices) == ["view", "pose"]
    for field, groups in slices.items():
        assert list(groups) == [value for value in SLICES[field] if value in groups]
    assert set(slices["view"]) == {"front", "oblique", "side", "back"}
    # scored: the first person of every image found exactly, so each slice's AP is that of its own people
    evaluator = Evaluator(dataset.schema)
    for record in dataset.records:
        found = [{"image_id": record.image_id, "keypoints": record.keypoints[0].reshape(-1).tolist(), "score": 1.0}]
        evaluator.add(record, Prediction(found[: len(record.keypoints)], None), None)
    pose = evaluator.compute()["pose"]
    for field, groups in slices.items():
        for value, people in groups.items():
            alone = coco_keypoint_ap(evaluator.images, evaluator.ground_truth, evaluator.results,
                                     dataset.schema.sigmas, people=people)
            assert pose["slices"][field][value] == {"people": len(people), "ap": alone["ap"], "ap50": alone["ap50"]}
    assert 0.0 < pose["slices"]["view"]["front"]["ap"] < 1.0  # some images hold a second person, not found
    front = pose["slices"]["view"]["front"]
    assert f"{'ap/view/front':<24} {front['ap']:.4f}  ({front['people']} people)" in format_metrics({"pose": pose})
    one = {"pose": {"slices": {"view": {"back": {"people": 1, "ap": 0.25}}}}}
    assert format_metrics(one) == f"{'pose':<13} {'ap/view/back':<24} 0.2500  (1 person)"  # before: "(1 people)"


def test_synth_inspect_round_trip(synth300, capsys):
    assert main(["inspect", str(synth300), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    ds = PosePartDataset.open(synth300)
    assert counts["images"] == 300 == len(ds) and counts["problems"] == []
    assert counts["people"] == sum(r.num_people for r in ds)
    assert set(counts["part_pixel_share"]) == set(ds.schema.part_classes)
    assert sum(counts["part_pixel_share"].values()) == pytest.approx(1.0)


def test_coco_fixtures_oracle(fixtures):
    mini = PosePartDataset.open(annotations=fixtures / "coco_mini/annotations/person_keypoints_train2017.json",
                                images=fixtures / "coco_mini/train2017")
    metrics = evaluate_oracle(mini, input_size=640, progress=False)  # COCO's native resolution
    assert metrics["pose"]["ap"] >= 0.90
    assert "segmentation" not in metrics  # no part labels: the key is absent
    assert metrics["pose"]["pckh"] is None  # COCO has neither head boxes nor head/neck joints
    mm = PosePartDataset.open(annotations=fixtures / "mmpose/coco/test_coco.json", images=fixtures / "mmpose/coco")
    assert evaluate_oracle(mm, progress=False)["pose"]["ap"] >= 0.90


def test_oracle_on_parts_only_and_pose_only(tmp_path):
    from test_format import write_custom

    ds = PosePartDataset.open(write_custom(tmp_path / "ds"))
    metrics = evaluate_oracle(ds, input_size=64, progress=False)
    assert metrics["images"] == 3
    assert metrics["segmentation"]["pixel_accuracy"] > 0.9  # 60x40 -> 64x64 -> back: only nearest-neighbour loss
    # every person found where labelled: 3 images x 3 joints paired, AP 1 (the middle image has no part map)
    assert metrics["pose"]["ap"] == 1.0 and metrics["pose"]["pck_dist_pairs"] == 9
    assert metrics["pose"]["pck_dist_px"] < 0.5


def test_people_without_box_or_area_are_scored_at_their_own_size(tmp_path):
    """A dataset that gives a person keypoints but no bbox or area (DatasetWriter's own output) scored OKS against the
    whole image's area, so a prediction 6 px off on a 40 x 100 px person scored AP 1.0. Truth: the same file with the
    box and area the reader derives (the labelled joints' box) written in, scored by pycocotools."""
    from posepart.data.writer import DatasetWriter
    from posepart.metrics import coco_keypoint_ap

    schema = Schema.pascal_person_part()
    rng = np.random.default_rng(0)
    xy = np.stack([rng.uniform(300, 340, schema.num_joints), rng.uniform(200, 300, schema.num_joints)], 1)
    joints = np.concatenate([xy, np.full((schema.num_joints, 1), 2.0)], 1)
    with DatasetWriter(tmp_path / "d", schema) as writer:
        writer.add(np.zeros((480, 640, 3), np.uint8), [{"keypoints": joints.ravel().tolist(), "iscrowd": 0}])
    record = PosePartDataset.open(tmp_path / "d").records[0]
    guess = joints.copy()
    guess[:, 0] += 6.0
    result = {"image_id": record.image_id, "category_id": 1, "keypoints": guess.ravel().tolist(), "score": 1.0}
    evaluator = Evaluator(schema, parts=False)
    evaluator.add(record, Prediction([result], None), None)
    box = [float(xy[:, 0].min()), float(xy[:, 1].min()), float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))]
    truth = coco_keypoint_ap([record.image_info()], [{"id": 1, "image_id": record.image_id, "category_id": 1,
                                                       "keypoints": joints.ravel().tolist(), "iscrowd": 0,
                                                       "num_keypoints": schema.num_joints, "bbox": box,
                                                       "area": box[2] * box[3]}], [result], schema.sigmas)
    assert 0.0 < truth["ap"] < 0.9
    assert evaluator.compute()["pose"]["ap"] == pytest.approx(truth["ap"])

    # the reviews of that fix: an annotation with no joints and no box or segmentation (which the reader reads as
    # nothing) got a whole-image ignore box, hiding a higher-scored false positive anywhere in the image (AP 0.5 ->
    # 1.0); a person of one labelled joint got a box of area 0 and could never be matched (now the whole image's
    # scale: it has none); one of joints on a line took the whole image's and scored a 40 px miss at AP 0.9
    exact = {**result, "keypoints": joints.ravel().tolist()}
    stray = {**result, "keypoints": (joints + [200.0, 0.0, 0.0]).ravel().tolist(), "score": 2.0}
    lone = np.zeros_like(joints)
    lone[0] = [100.0, 100.0, 2.0]
    near = np.zeros_like(joints)
    near[0] = [100.5, 100.0, 1.0]
    row = np.zeros_like(joints)
    row[:2] = [[100.0, 200.0, 2.0], [300.0, 200.0, 2.0]]  # 200 px apart on one row: OKS scale 200^2
    off = row + [40.0, 0.0, 0.0]
    with DatasetWriter(tmp_path / "e", schema) as writer:
        writer.add(np.zeros((480, 640, 3), np.uint8), [{"keypoints": joints.ravel().tolist(), "iscrowd": 0},
                                                        {"iscrowd": 1}])
        writer.add(np.zeros((480, 640, 3), np.uint8), [{"keypoints": lone.ravel().tolist(), "iscrowd": 0}])
        writer.add(np.zeros((480, 640, 3), np.uint8), [{"keypoints": row.ravel().tolist(), "iscrowd": 0}])
    first, second, third = PosePartDataset.open(tmp_path / "e").records
    for record, results, expected in ((first, [exact, stray], 0.5), (second, [{**result, "keypoints": near.ravel()
                                                                                .tolist()}], 1.0),
                                      (third, [{**result, "keypoints": off.ravel().tolist()}], 0.0)):
        evaluator = Evaluator(schema, parts=False)
        evaluator.add(record, Prediction([{**r, "image_id": record.image_id} for r in results], None), None)
        assert evaluator.compute()["pose"]["ap"] == pytest.approx(expected), record.image_id


def test_parts_scored_in_advance_count_as_the_map_they_replace():
    """`scored_parts` (what training's validation keeps of an image until the epoch ends) gives the metrics the
    part map itself gives, set-valued and ignored labels included; an image without a ground truth adds nothing."""
    schema = Schema.pascal_person_part()
    p = schema.num_parts
    rng = np.random.default_rng(0)
    truths = [rng.choice(np.array([*range(p), p + 1, 255], np.uint8), (12, 16)) for _ in range(3)] + [None]
    maps = [rng.integers(0, p, (12, 16), dtype=np.uint8) for _ in truths]
    direct, scored = Evaluator(schema, pose=False), Evaluator(schema, pose=False)
    record = ImageRecord(1, "a.png", Path("a.png"), 16, 12, np.zeros((0, schema.num_joints, 3), np.float32),
                         np.zeros((0, 4), np.float32), np.zeros(0, np.float32), (), None,
                         False, ())
    for truth, parts in zip(truths, maps):
        direct.add(record, Prediction([], parts), truth)
        compact = scored_parts(Prediction([], parts), truth, p)
        assert compact.parts is None and (compact.part_counts is None) == (truth is None)
        scored.add(record, compact, None)
    assert scored.part_images == direct.part_images == 3
    assert scored.compute() == direct.compute()
