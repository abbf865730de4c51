"""Metrics against hand-computed cases and against pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posepart.metrics import (ConfusionMatrix, coco_keypoint_ap, match_people, mpii_head_size, oks, pck_dist, pckh,
                              pckh_counts)
from posepart.schema import Schema

# ---------------------------------------------------------------------------------------------------------------
# segmentation

# n[i, j] = pixels of true class i predicted as j, written out by hand
HAND = np.array([[3, 1, 0],
                 [0, 2, 2],
                 [1, 0, 1]])


def _pixels(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) pixel vectors realising a confusion matrix."""
    t, p = np.nonzero(mat)
    counts = mat[t, p]
    return np.repeat(p, counts).astype(np.uint8), np.repeat(t, counts).astype(np.uint8)


def test_confusion_matrix_hand_computed_fcn_scores():
    pred, target = _pixels(HAND)
    # two images: one numpy (H, W) with ignore pixels, one torch; split the 10 pixels 6 / 4
    pred_a = np.concatenate([pred[:6], [2, 0]]).reshape(2, 4)
    target_a = np.concatenate([target[:6], [255, 255]]).reshape(2, 4)
    cm = ConfusionMatrix(3)
    cm.update(pred_a, target_a)
    cm.update(torch.from_numpy(pred[6:].astype(np.int64)), torch.from_numpy(target[6:].astype(np.int64)))
    np.testing.assert_array_equal(cm.mat, HAND)
    r = cm.compute()
    # t = (4, 4, 2), diag = (3, 2, 1), column sums = (4, 3, 3), unions = (5, 5, 4)
    assert r["pixel_accuracy"] == pytest.approx(6 / 10)
    assert r["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 4 + 1 / 2) / 3)
    assert r["iou_per_class"] == pytest.approx([3 / 5, 2 / 5, 1 / 4])
    assert r["mean_iou"] == pytest.approx((3 / 5 + 2 / 5 + 1 / 4) / 3)
    assert r["frequency_weighted_iou"] == pytest.approx((4 * 3 / 5 + 4 * 2 / 5 + 2 * 1 / 4) / 10)
    json.dumps(r)  # plain floats, fit metrics.json


def test_confusion_matrix_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 4, (2, 5, 7, 9))
    target[0] = 255  # the whole first image (7 x 9) is ignored
    whole, a, b = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(pred, target)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    assert a.merge(b) is a
    np.testing.assert_array_equal(a.mat, whole.mat)
    assert whole.mat.sum() == pred.size - 7 * 9
    assert a.compute() == whole.compute()


def test_confusion_matrix_absent_classes():
    # 4 classes: 3 never appears; 2 is predicted but never labelled
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    r = cm.compute()
    # IoU: class 0 = 1 / (2 + 1 - 1) = 1/2, class 1 = 1, class 2 = 0 / (0 + 1 - 0) = 0, class 3 absent
    assert r["iou_per_class"] == [0.5, 1.0, 0.0, None]
    assert r["mean_iou"] == pytest.approx(1.5 / 3)
    assert r["mean_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # classes with GT pixels only
    assert r["pixel_accuracy"] == pytest.approx(3 / 4)
    assert r["frequency_weighted_iou"] == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)
    assert ConfusionMatrix(3).compute()["mean_iou"] is None  # nothing counted yet


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError):
        cm.update(np.array([0, 3]), np.array([0, 1]))  # prediction class 3 of 3
    cm.update(np.array([7, 0]), np.array([255, 0]))  # an ignored pixel's prediction is never looked at
    assert cm.mat.sum() == 1


# ---------------------------------------------------------------------------------------------------------------
# OKS / COCO AP

SIGMAS3 = [0.1, 0.1, 0.1]


def _gt(image_id: int, ann_id: int, kpts: np.ndarray, area: float, iscrowd: int = 0, bbox=None) -> dict:
    kpts = np.asarray(kpts, np.float64)
    labelled = kpts[:, 2] > 0
    if bbox is None:
        lo, hi = kpts[labelled, :2].min(0), kpts[labelled, :2].max(0)
        bbox = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kpts.reshape(-1).tolist(),
            "num_keypoints": int(labelled.sum()), "area": float(area), "bbox": list(map(float, bbox)),
            "iscrowd": iscrowd}


def _res(image_id: int, kpts: np.ndarray, score: float) -> dict:
    kp = np.asarray(kpts, np.float64).copy()
    kp[:, 2] = 1.0
    return {"image_id": image_id, "category_id": 1, "keypoints": kp.reshape(-1).tolist(), "score": score}


PERSON = np.array([[100, 100, 2], [150, 120, 2], [130, 200, 1]], np.float64)
AREA = 100.0 * 100.0  # large (> 96^2)


def test_oks_hand_case_matches_pycocotools():
    gt = np.array([[10, 10, 2], [20, 10, 2], [30, 30, 0]], np.float64)
    pred = np.array([[10, 10, 1], [23, 14, 1], [90, 90, 1]], np.float64)  # joint 1 off by (3, 4); joint 2 unlabelled
    # e = d^2 / (2 * area * (2 sigma)^2) = 25 / (2 * 100 * 0.04) = 3.125 for joint 1, 0 for joint 0
    expected = (1.0 + math.exp(-3.125)) / 2
    assert oks(gt, pred, 100.0, SIGMAS3) == pytest.approx(expected, rel=1e-9)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "person"}],
                        "annotations": [_gt(1, 1, gt, 100.0)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([_res(1, pred, 1.0)]), iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.array(SIGMAS3)
        ev._prepare()
        reference = ev.computeOks(1, 1)
    assert reference[0, 0] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(oks(np.zeros((3, 3)), pred, 100.0, SIGMAS3))


def test_coco_ap_names_inputs_that_do_not_fit():
    """Before: pycocotools' bare AssertionError ("Results do not correspond to current coco set") for a result on an
    image not listed, and a numpy broadcast error from inside COCOeval for sigmas of another schema."""
    images = [{"id": 1}]
    gts = [_gt(1, 1, PERSON, AREA)]
    with pytest.raises(ValueError, match="result 0: image_id 7 is not among the images"):
        coco_keypoint_ap(images, gts, [_res(7, PERSON, 0.9)], SIGMAS3)
    with pytest.raises(ValueError, match="ground-truth annotation 0: 9 keypoint values, expected 3 x 4"):
        coco_keypoint_ap(images, gts, [_res(1, PERSON, 0.9)], SIGMAS3 + [0.1])
    with pytest.raises(ValueError, match="result 0: 6 keypoint values, expected 3 x 3"):
        coco_keypoint_ap(images, gts, [_res(1, PERSON[:2], 0.9)], SIGMAS3)
    as_rows = {**_res(1, PERSON, 0.9), "keypoints": np.asarray(_res(1, PERSON, 0.9)["keypoints"]).reshape(3, 3)}
    with pytest.raises(ValueError, match=re.escape("result 0: 9 keypoint values of shape (3, 3): COCO's flat list, "
                                                   "keypoints.reshape(-1), expected 3 x 3")):  # before: "3 values"
        coco_keypoint_ap(images, gts, [as_rows], SIGMAS3)
    arrays = [{**gts[0], "keypoints": np.asarray(gts[0]["keypoints"])}]  # numpy keypoints, as pycocotools takes
    result = _res(1, PERSON, 0.9)
    assert coco_keypoint_ap(images, arrays, [{**result, "keypoints": np.asarray(result["keypoints"])}],
                            SIGMAS3)["ap"] == pytest.approx(1.0)


def test_coco_ap_perfect_predictions_and_empty_results():
    images = [{"id": 1}, {"id": 2}, {"id": 3}]  # image 3 has no GT and no detection
    gts = [_gt(1, 1, PERSON, AREA), _gt(2, 2, PERSON + [300, 0, 0], AREA)]
    results = [_res(1, PERSON, 0.9), _res(2, PERSON + [300, 0, 0], 0.8)]
    r = coco_keypoint_ap(images, gts, results, SIGMAS3)
    assert list(r) == ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar"]
    assert r["ap"] == pytest.approx(1.0) and r["ar"] == pytest.approx(1.0) and r["ap_large"] == pytest.approx(1.0)
    assert r["ap_medium"] is None and r["ap_small"] is None  # no medium-sized or small GT: COCOeval's -1, undefined
    # no results: 0 where there were people to find, undefined where COCOeval leaves it so (before: 0 everywhere)
    assert coco_keypoint_ap(images, gts, [], SIGMAS3) == {k: None if v is None else 0.0 for k, v in r.items()}
    assert set(coco_keypoint_ap(images, [], [], SIGMAS3).values()) == {None}
    assert gts[0]["keypoints"] == PERSON.reshape(-1).tolist() and "id" not in results[0]  # inputs untouched


def test_coco_ap_known_shift_gives_hand_oks_and_thresholds():
    # shift every joint by d with OKS = exp(-d^2 / (2 * area * (2 sigma)^2)) = 0.62: matched at 0.50, 0.55, 0.60 only
    target = 0.62
    d = math.sqrt(-math.log(target) * 2 * AREA * (2 * 0.1) ** 2)
    shifted = PERSON + [d / math.sqrt(2), d / math.sqrt(2), 0]
    assert oks(PERSON, shifted, AREA, SIGMAS3) == pytest.approx(target)
    r = coco_keypoint_ap([{"id": 1}], [_gt(1, 1, PERSON, AREA)], [_res(1, shifted, 1.0)], SIGMAS3)
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(0.0)
    assert r["ap"] == pytest.approx(3 / 10) and r["ar"] == pytest.approx(3 / 10)


def test_coco_ap_crowd_region_does_not_penalise_detection_inside():
    person = _gt(1, 1, PERSON, AREA)
    crowd = _gt(1, 2, np.zeros((3, 3)), 50 * 50, iscrowd=1, bbox=[400, 100, 50, 50])
    inside = np.array([[410, 110, 1], [420, 120, 1], [430, 130, 1]], np.float64)
    results = [_res(1, inside, 0.95), _res(1, PERSON, 0.9)]  # the crowd detection outranks the true one
    with_crowd = coco_keypoint_ap([{"id": 1}], [person, crowd], results, SIGMAS3)
    without = coco_keypoint_ap([{"id": 1}], [person], results, SIGMAS3)
    assert with_crowd["ap"] == pytest.approx(1.0)
    # without the crowd region it is a false positive ranked first: precision 1/2 at every recall
    assert without["ap"] == pytest.approx(0.5)


def test_coco_ap_duplicate_detection_lowers_precision():
    a, b = PERSON, PERSON + [300, 0, 0]
    gts = [_gt(1, 1, a, AREA), _gt(1, 2, b, AREA)]
    # ranked: A (TP, recall 1/2), duplicate of A (FP), B (TP, recall 1, precision 2/3)
    results = [_res(1, a, 0.9), _res(1, a + [1, 0, 0], 0.8), _res(1, b, 0.7)]
    r = coco_keypoint_ap([{"id": 1}], gts, results, SIGMAS3)
    # 101 recall points: 0.00..0.50 (51) at precision 1, 0.51..1.00 (50) at the interpolated 2/3
    assert r["ap"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101, abs=1e-6)
    assert r["ar"] == pytest.approx(1.0)


def test_coco_ap_of_a_slice_ignores_the_other_people():
    """`people=`: image 1 holds A and B, both found exactly; image 2 holds C, missed, and a prediction far from
    everyone outranks all. A's slice: B's prediction matches B, ignored, and image 2 is left out: AP 1. C's slice:
    nothing found, one false positive: AP 0. Everyone: the false positive ranked first and C missed."""
    a, b, c = PERSON, PERSON + [300, 0, 0], PERSON + [0, 200, 0]
    images = [{"id": 1}, {"id": 2}]
    gts = [_gt(1, 1, a, AREA), _gt(1, 2, b, AREA), _gt(2, 3, c, AREA)]
    results = [_res(1, a, 0.9), _res(1, b, 0.8), _res(2, PERSON + [600, 600, 0], 0.95)]
    ap = {name: coco_keypoint_ap(images, gts, results, SIGMAS3, people=ids)["ap"]
          for name, ids in {"A": {1}, "A+B": {1, 2}, "C": {3}, "none": set()}.items()}
    assert ap["A"] == pytest.approx(1.0) and ap["A+B"] == pytest.approx(1.0) and ap["C"] == 0.0
    assert ap["none"] is None  # no people: undefined, as COCOeval leaves it
    assert coco_keypoint_ap(images, gts, results, SIGMAS3, people={1, 2, 3}) == \
        coco_keypoint_ap(images, gts, results, SIGMAS3)  # every person: the plain score
    # ranked: the false positive, A, B: recall 2/3 at precision 2/3, so 67 of the 101 recall points (0.00-0.66) at 2/3
    assert coco_keypoint_ap(images, gts, results, SIGMAS3)["ap"] == pytest.approx(67 * 2 / 3 / 101, abs=1e-6)
    assert [g["num_keypoints"] for g in gts] == [3, 3, 3]  # inputs untouched


def test_coco_ap_matches_pycocotools_on_real_coco_annotations(fixtures):
    """Real COCO GT (crowds, unlabelled people), perturbed detections: same numbers as a plain COCOeval run."""
    data = json.loads((fixtures / "coco_mini/annotations/person_keypoints_train2017.json").read_text())
    rng = np.random.default_rng(1)
    results = []
    for ann in data["annotations"]:
        if ann["iscrowd"] or not ann["num_keypoints"]:
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, 4, (len(kp), 2))
        results.append(_res(ann["image_id"], kp, float(rng.uniform(0.1, 1.0))))
    sigmas = Schema.coco().sigmas
    ours = coco_keypoint_ap(data["images"], data["annotations"], results, sigmas)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="keypoints")  # COCO's own sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [ours[k] for k in ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar")] == pytest.approx(ev.stats[:6])
    assert 0.3 < ours["ap"] < 1.0
    assert ours["ap_small"] is None  # COCO labels no joints on people under 32^2 px^2
    # AP of the small people (COCOeval's "small" range, which its keypoint summary leaves out), with every other
    # person made small (a sixteenth of its area): a COCOeval whose only area range is that one gives it first
    shrunk = [{**ann, "area": ann["area"] / 16} if ann["id"] % 2 else ann for ann in data["annotations"]]
    ours = coco_keypoint_ap(data["images"], shrunk, results, sigmas)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**data, "annotations": shrunk}
        coco.createIndex()
        small = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="keypoints")
        small.params.areaRng, small.params.areaRngLbl = [[0.0, 32.0 ** 2]], ["all"]
        small.evaluate()
        small.accumulate()
        small.summarize()
    assert ours["ap_small"] is not None and ours["ap_small"] == pytest.approx(small.stats[0])
    without = coco_keypoint_ap(data["images"], shrunk, results, sigmas, small=False)  # for AP and AP50 alone
    assert without == {**ours, "ap_small": None}


# ---------------------------------------------------------------------------------------------------------------
# PCKh / PCK_dist

PASCAL = Schema.pascal_person_part()


def _pascal_person(dx: float = 0.0) -> np.ndarray:
    """A labelled 14-joint PASCAL person, head (50, 10) above neck (50, 30): head-to-neck 20 px."""
    kp = np.zeros((PASCAL.num_joints, 3), np.float32)
    kp[:, 0] = 50 + dx + 3 * np.arange(PASCAL.num_joints)
    kp[:, 1] = 30 + 5 * np.arange(PASCAL.num_joints)
    kp[PASCAL.joint("head"), :2] = (50 + dx, 10)
    kp[PASCAL.joint("neck"), :2] = (50 + dx, 30)
    kp[:, 2] = 2
    return kp


def _as_pred(gt: np.ndarray) -> np.ndarray:
    pred = gt.copy()
    pred[..., 2] = np.where(gt[..., 2] > 0, 0.8, 0.0)
    return pred


def test_mpii_head_size():
    assert mpii_head_size(10, 20, 40, 60) == pytest.approx(0.6 * 50)


def test_match_people_recovers_swapped_order():
    gt = np.stack([_pascal_person(0), _pascal_person(200)])
    pred = _as_pred(gt[::-1]) + [2, 1, 0]  # listed in the other order, slightly off
    assert sorted(match_people(gt, pred)) == [(0, 1), (1, 0)]
    assert sorted(match_people(gt, pred, [10.0, 10.0])) == [(0, 1), (1, 0)]
    assert match_people(gt, pred, [np.nan, 10.0]) == [(1, 0)]  # a person without a normaliser takes no part
    assert match_people(gt, pred[:0]) == []


def test_match_people_maximises_joints_within_threshold():
    # one GT person, two candidates: P has 3 of 4 joints exact and one 100 px off (mean 25 px, 3 joints within 5 px);
    # Q has every joint 6 px off (mean 6 px, none within 5 px)
    gt = np.array([[[0, 0, 2], [10, 0, 2], [20, 0, 2], [30, 0, 2]]], np.float32)
    p = _as_pred(gt[0])
    p[3, 1] += 100.0
    q = _as_pred(gt[0]) + [0, 6, 0]
    pred = np.stack([p, q])
    assert match_people(gt, pred) == [(0, 1)]  # smallest mean distance
    assert match_people(gt, pred, [5.0]) == [(0, 0)]  # most joints within the threshold
    # PCKh uses the threshold matching: 3 of 4 joints correct (head size 10, alpha 0.5)
    schema = Schema(keypoints=("a", "b", "c", "d"), skeleton=((0, 1), (1, 2), (2, 3)))
    assert pckh([gt], [pred], [np.array([10.0])], schema) == pytest.approx(3 / 4)


def test_match_people_maximises_hits_and_pairs_over_the_whole_assignment():
    """Before: each pair's tie-breaker was below one hit, but their sum over two pairs was not, so PCKh paired g1
    with the prediction that found 1 joint of 4 instead of 2; without thresholds, one pair sharing nothing cost
    less than two real ones (max + 1), leaving a person unmatched. Hand-built cases, checked by brute force."""
    import itertools

    schema = Schema(keypoints=("j0", "j1", "j2", "j3"), skeleton=((0, 1), (2, 3)))
    gt, pred = np.zeros((2, 4, 3)), np.zeros((2, 4, 3))
    gt[0, :2] = [(0, 0, 2), (0, 100, 2)]
    gt[1, 2:] = [(500, 0, 2), (500, 100, 2)]
    pred[0] = [(0, 0, 1), (1000, 100, 1), (510.5, 0, 1), (510.5, 100, 1)]  # g0's j0 exact; g1's 10.5 px off
    pred[1] = [(0, 0, 1), (0, 0, 0), (500, 0, 1), (1500, 100, 1)]  # g0's j0 exact; g1's j2 exact
    hits = (np.linalg.norm(gt[:, None, :, :2] - pred[None, :, :, :2], axis=-1) <= 10) & (gt[:, None, :, 2] > 0)
    best = max(hits[0, p].sum() + hits[1, q].sum() for p, q in itertools.permutations(range(2)))
    assert best == 2
    assert sorted(match_people(gt, pred, [10.0, 10.0])) == [(0, 0), (1, 1)]
    assert pckh([gt], [pred], [np.array([20.0, 20.0])], schema) == 0.5  # 0.25 before: 1 of 4
    gt, pred = np.zeros((2, 3, 3)), np.zeros((2, 3, 3))
    gt[0, 0], gt[1, 1], gt[1, 2] = (0, 0, 2), (300, 0, 2), (300, 50, 2)
    pred[0, 0], pred[0, 1], pred[1, 0] = (0, 0, 1), (400, 0, 1), (100, 0, 1)  # p1 shares only joint 0, with g0
    assert sorted(match_people(gt, pred)) == [(0, 1), (1, 0)]  # both 100 px: before [(0, 0)] alone


def test_pckh_head_neck_fallback_and_given_head_sizes():
    gt = _pascal_person()
    pred = _as_pred(gt)
    lw, rw = PASCAL.joint("left_wrist"), PASCAL.joint("right_wrist")
    pred[lw, 0] += 8.0  # 0.4 head sizes (head-to-neck = 20): within alpha = 0.5
    pred[rw, 1] += 12.0  # 0.6 head sizes: outside
    assert pckh([gt[None]], [pred[None]], None, PASCAL) == pytest.approx(13 / 14)
    # a given head size (MPII style) wins over head-to-neck: 40 -> threshold 20, both wrists inside
    assert pckh([gt[None]], [pred[None]], [np.array([40.0])], PASCAL) == pytest.approx(1.0)
    # NaN head size falls back to head-to-neck
    assert pckh([gt[None]], [pred[None]], [np.array([np.nan])], PASCAL) == pytest.approx(13 / 14)
    # an unpredicted joint (score 0) is wrong even at the right place
    pred[0, 2] = 0.0
    assert pckh([gt[None]], [pred[None]], None, PASCAL) == pytest.approx(12 / 14)


def test_pckh_unmatched_people_and_skipped_people():
    a, b = _pascal_person(0), _pascal_person(200)
    gt = np.stack([a, b])
    # one prediction for two people: the other person's 14 joints are all wrong
    assert pckh([gt], [_as_pred(b)[None]], None, PASCAL) == pytest.approx(14 / 28)
    # a second image whose person lacks head and neck (and no head size) is skipped entirely
    legs = _pascal_person(0)
    legs[[PASCAL.joint("head"), PASCAL.joint("neck")], 2] = 0
    assert pckh([gt, legs[None]], [_as_pred(gt), np.zeros((0, 14, 3))], None, PASCAL) == pytest.approx(1.0)
    assert pckh([], [], None, PASCAL) is None


def test_pckh_per_joint_counts_each_joint_type_and_pool_to_pckh():
    """Two people, one predicted with the left wrist off and one not predicted: per joint type the hits are
    hand-counted, and pooled they give `pckh`."""
    a, b = _pascal_person(0), _pascal_person(200)
    b[PASCAL.joint("right_knee"), 2] = 0  # not labelled: not counted for b
    gt = np.stack([a, b])
    pred = _as_pred(a)
    pred[PASCAL.joint("left_wrist"), 0] += 12.0  # 0.6 head sizes: outside
    counts = pckh_counts([gt], [pred[None]], None, PASCAL)
    expected_total = np.full(14, 2)
    expected_total[PASCAL.joint("right_knee")] = 1
    expected_correct = np.ones(14, int)
    expected_correct[PASCAL.joint("left_wrist")] = 0
    assert counts.total.tolist() == expected_total.tolist() and counts.correct.tolist() == expected_correct.tolist()
    per_joint = counts.per_joint(PASCAL)
    assert per_joint["left_wrist"] == 0.0 and per_joint["right_knee"] == 1.0 and per_joint["head"] == 0.5
    assert counts.pooled() == pytest.approx(13 / 27) == pckh([gt], [pred[None]], None, PASCAL)
    empty = pckh_counts([], [], None, PASCAL)
    assert empty.pooled() is None and set(empty.per_joint(PASCAL).values()) == {None}


def test_pckh_schema_without_head_joints():
    coco = Schema.coco()
    gt = np.zeros((1, 17, 3), np.float32)
    gt[0, :, :2] = np.arange(34).reshape(17, 2) * 4
    gt[0, :, 2] = 2
    pred = _as_pred(gt)
    pred[0, 5, 0] += 6.0
    assert pckh([gt], [pred], None, coco) is None  # no head/neck joints, no head sizes: undefined
    assert pckh([gt], [pred], [np.array([10.0])], coco) == pytest.approx(16 / 17)  # threshold 5


def test_pck_dist_hand_case_with_cutoff():
    schema = Schema(keypoints=("a", "b", "c"), skeleton=((0, 1), (1, 2)))
    gt = np.array([[[0, 0, 2], [10, 0, 2], [10, 4, 2]]], np.float32)  # limbs 10 and 4 -> shortest 4, cutoff 20
    pred = _as_pred(gt)
    pred[0, 0, :2] += (3, 4)  # 5 px: counted
    pred[0, 1, 0] += 25.0  # 25 px > 20: excluded
    r = pck_dist([gt], [pred], schema, factor=5.0)
    assert r["pck_dist_pairs"] == 2
    assert r["pck_dist_px"] == pytest.approx((5 + 0) / 2)
    assert r["pck_dist"] == pytest.approx((5 / 20 + 0 / 20) / 2)
    assert r["pck_dist_px_per_joint"] == {"a": pytest.approx(5.0), "b": None, "c": 0.0}  # b: past the cutoff
    # a person with a single labelled joint has no limb: skipped, nothing counted
    lone = gt.copy()
    lone[0, 1:, 2] = 0
    assert pck_dist([lone], [pred], schema) == {"pck_dist": None, "pck_dist_px": None, "pck_dist_pairs": 0,
                                                "pck_dist_px_per_joint": {"a": None, "b": None, "c": None}}


def test_pck_dist_matches_people_across_order():
    gt = np.stack([_pascal_person(0), _pascal_person(200)])
    pred = _as_pred(gt[::-1]) + [3, 4, 0]  # every joint 5 px off, listed in the other order
    r = pck_dist([gt], [pred], PASCAL)
    assert r["pck_dist_pairs"] == 28
    assert r["pck_dist_px"] == pytest.approx(5.0)
    shortest = min(np.hypot(*(gt[0, a, :2] - gt[0, b, :2])) for a, b in PASCAL.skeleton)
    assert r["pck_dist"] == pytest.approx(5.0 / (5.0 * shortest))
