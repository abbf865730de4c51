"""COCO keypoint AP/AR (pycocotools' COCOeval on in-memory objects) and the single-person OKS formula.

The schema's own sigmas go to `params.kpt_oks_sigmas`, so any joint count (PASCAL's 14, COCO's 17, MPII's 16) is scored.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Collection, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval's keypoint `stats` order: AP, AP50, AP75, AP medium, AP large, AR, AR50, AR75, AR medium, AR large.
_STAT_KEYS = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar")
# COCOeval's area ranges, px^2 (its `params.areaRng`); keypoint evaluation leaves out "small", where COCO labels no
# joints, but crowds and wide shots are mostly small people: scored here in the same evaluation (`ap_small`)
ALL_AREAS = (0.0, 1e10)
AREA_RANGES = {"ap_small": (0.0, 32.0 ** 2), "ap_medium": (32.0 ** 2, 96.0 ** 2), "ap_large": (96.0 ** 2, ALL_AREAS[1])}


def oks_terms(gt_kpts: np.ndarray, pred_kpts: np.ndarray, area: float, sigmas: Sequence[float]) -> np.ndarray:
    """(K,) per-joint similarity exp(-d^2 / (2 * area * (2 sigma)^2)) of two (K, >=2) keypoint arrays, whatever
    their visibility: the terms `oks` averages (self-training also reads them joint by joint)."""
    gt = np.asarray(gt_kpts, np.float64).reshape(len(sigmas), -1)
    pred = np.asarray(pred_kpts, np.float64).reshape(len(sigmas), -1)
    variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2  # (K,)
    d2 = ((gt[:, :2] - pred[:, :2]) ** 2).sum(1)  # (K,)
    return np.exp(-d2 / variances / (float(area) + np.spacing(1)) / 2.0)


def oks(gt_kpts: np.ndarray, pred_kpts: np.ndarray, area: float, sigmas: Sequence[float]) -> float:
    """Object keypoint similarity of one prediction to one GT person, as COCOeval.computeOks scores it.

    gt_kpts, pred_kpts: (K, 3) [x, y, v] / [x, y, score]. OKS = mean over GT joints with v > 0 of
    exp(-d^2 / (2 * area * (2 sigma)^2)). NaN when the GT labels no joint (COCOeval then falls back to a box distance,
    which needs the GT box; use `coco_keypoint_ap` for that case).
    """
    labelled = np.asarray(gt_kpts, np.float64).reshape(-1, 3)[:, 2] > 0
    if not labelled.any():
        return float("nan")
    return float(oks_terms(gt_kpts, pred_kpts, area, sigmas)[labelled].mean())


def _check_inputs(images: list[dict[str, Any]], ground_truth: list[dict[str, Any]], results: list[dict[str, Any]],
                  k: int) -> None:
    """A ValueError naming what does not fit before pycocotools sees it (it fails with a bare AssertionError for a
    result on an unlisted image, or a numpy broadcast error inside COCOeval for keypoints of another length)."""
    listed = {image["id"] for image in images}
    for what, entries in (("ground-truth annotation", ground_truth), ("result", results)):
        for i, entry in enumerate(entries):
            if entry["image_id"] not in listed:
                raise ValueError(f"{what} {i}: image_id {entry['image_id']!r} is not among the images")
            joints = entry.get("keypoints")
            count = 0 if joints is None else int(np.size(joints))  # a list or an array (pycocotools takes both)
            if (count or what == "result") and (count != 3 * k or np.ndim(joints) != 1):
                shape = f" of shape {np.shape(joints)}: COCO's flat list, keypoints.reshape(-1)" \
                    if np.ndim(joints) > 1 else ""  # before: "14 keypoint values" for a (14, 3) array
                raise ValueError(f"{what} {i}: {count} keypoint values{shape}, expected 3 x {k} (one x, y, v or "
                                 f"score per sigma)")


def coco_ground_truth(ann: dict[str, Any], k: int) -> dict[str, Any]:
    """A copy of a GT annotation with the fields COCOeval reads filled in (crowds may come without keypoints)."""
    out = dict(ann)
    out.setdefault("category_id", 1)
    out.setdefault("iscrowd", 0)
    if out.get("keypoints") is None or len(out["keypoints"]) == 0:  # a list or an array
        out["keypoints"] = [0.0] * (3 * k)
    if "num_keypoints" not in out:
        out["num_keypoints"] = int(sum(1 for v in out["keypoints"][2::3] if v > 0))
    if "area" not in out:
        out["area"] = float(out["bbox"][2] * out["bbox"][3])
    return out


def coco_keypoint_ap(
    images: list[dict[str, Any]],
    ground_truth: list[dict[str, Any]],
    results: list[dict[str, Any]],
    sigmas: Sequence[float],
    *,
    people: Collection[int] | None = None,
    small: bool = True,
) -> dict[str, float | None]:
    """OKS AP / AR over `images` (COCO image dicts with an "id") by pycocotools, its prints silenced.

    ground_truth: COCO annotation dicts (keypoints, bbox, area, iscrowd, num_keypoints, image_id, id); crowds and
    annotations with no labelled joint are ignore regions, as in COCO. results: COCO keypoint results (image_id,
    keypoints, score). Returns fractions in [0, 1] for keys ap, ap50, ap75, ap_small, ap_medium, ap_large, ar (0 for
    those with people to find when there are no results); None for a figure COCOeval leaves undefined (-1: e.g.
    ap_medium with no medium-sized GT). ap_small is COCOeval's AP over its "small" area range (under 32^2 px^2),
    which its keypoint summary does not print, computed as the summary computes the others (a fourth area range:
    a quarter more time; `small=False` leaves it out, None, for callers that read AP and AP50 alone).
    `people`: score only these ground-truth people (annotation ids), a slice of the data: the images holding none of
    them are left out, and the other people on the rest are ignored (COCOeval's ignore flag, set by num_keypoints 0,
    as for COCO's area ranges: a prediction that matches one counts neither for nor against). Inputs are not modified.
    """
    if people is not None:
        kept = {ann["image_id"] for ann in ground_truth if ann["id"] in people}
        images = [image for image in images if image["id"] in kept]
        ground_truth = [ann if ann["id"] in people else {**ann, "num_keypoints": 0}
                        for ann in ground_truth if ann["image_id"] in kept]
        results = [r for r in results if r["image_id"] in kept]
    if not results:  # 0 where people were there to find; undefined (None) where none was (before: 0 there too)
        scored = (coco_ground_truth(ann, len(sigmas)) for ann in ground_truth)  # as COCOeval would read them
        areas = [gt["area"] for gt in scored if not gt["iscrowd"] and gt["num_keypoints"]]

        def found(key: str) -> bool:
            low, high = AREA_RANGES.get(key, ALL_AREAS)  # COCOeval's ranges; the other figures: all areas
            return any(low <= area <= high for area in areas)

        return _ordered({key: 0.0 if found(key) and (small or key != "ap_small") else None
                         for key in (*_STAT_KEYS, "ap_small")})
    k = len(sigmas)
    _check_inputs(images, ground_truth, results, k)
    dataset = {
        "images": [dict(img) for img in images],
        "annotations": [coco_ground_truth(ann, k) for ann in ground_truth],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    dets = [{"category_id": 1, **r} for r in results]  # copies: loadRes writes area/bbox/id into them
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluator.params.imgIds = sorted(img["id"] for img in images)
        if small:
            evaluator.params.areaRng = [*evaluator.params.areaRng, list(AREA_RANGES["ap_small"])]  # after COCOeval's
            evaluator.params.areaRngLbl = [*evaluator.params.areaRngLbl, "small"]  # own three, which it looks up
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {key: float(v) for key, v in zip(_STAT_KEYS, evaluator.stats)}
    stats["ap_small"] = -1.0
    if small:  # as `summarize` averages: over the IoU thresholds, recalls and categories at its maxDets (20)
        precision = evaluator.eval["precision"][..., evaluator.params.areaRngLbl.index("small"), -1]  # (T, R, K)
        stats["ap_small"] = float(precision[precision > -1].mean()) if (precision > -1).any() else -1.0
    return _ordered({key: None if v < 0 else v for key, v in stats.items()})


def _ordered(stats: dict[str, Any]) -> dict[str, Any]:
    """The figures in the order metrics.json lists them: AP, AP50, AP75, by area small to large, AR."""
    return {key: stats[key] for key in ("ap", "ap50", "ap75", *AREA_RANGES, "ar")}
