"""Multi-person PCKh and the seed paper's PCK-style distance (PCK_dist).

Both first pair GT people with predicted people one-to-one (`match_people`), then score joint by joint. Arrays per
image: GT (N, K, 3) [x, y, v] (a joint counts when v > 0), predictions (M, K, 3) [x, y, score] (a joint is predicted
when score > 0). A GT person left without a prediction scores every joint as wrong (PCKh) or adds no pair (PCK_dist).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from posepart.matching import joint_distances, match_people
from posepart.schema import Schema

class PCKhCounts(NamedTuple):
    """Per joint type: the labelled GT joints whose matched predicted joint lies within alpha x the person's head
    size (`correct`, (K,)) and the labelled GT joints scored (`total`, (K,))."""

    correct: np.ndarray
    total: np.ndarray

    def pooled(self) -> float | None:
        """PCKh over every joint type (None when no joint was scored)."""
        return float(self.correct.sum() / self.total.sum()) if self.total.sum() else None

    def per_joint(self, schema: Schema) -> dict[str, float | None]:
        """{joint name: PCKh of that joint type} (None where none was labelled): MPII's per-joint table, which shows
        what the pooled figure hides (a network that finds heads and misses elbows)."""
        return {name: (float(c / t) if t else None) for name, c, t in zip(schema.keypoints, self.correct, self.total)}


def pckh_counts(
    gt_per_image: Sequence[np.ndarray],
    pred_per_image: Sequence[np.ndarray],
    head_sizes_per_image: Sequence[np.ndarray] | None,
    schema: Schema,
    alpha: float = 0.5,
) -> PCKhCounts:
    """PCKh's hits and totals per joint type, the one computation behind `pckh` and the per-joint table.

    Head size per person: the annotation's (`head_sizes_per_image[i][n]`, e.g. `mpii_head_size`) when given (not
    NaN), else the distance between the person's GT head (head / head_top) and neck (neck / upper_neck) joints. A
    person with neither, or whose given size is 0 (a source read in another schema that could not measure it), is
    skipped (neither counted nor matched). A GT person without a matched prediction counts every labelled
    joint as wrong. The distance test is inclusive (d <= alpha x head size).
    """
    if len(gt_per_image) != len(pred_per_image):
        raise ValueError(f"{len(gt_per_image)} GT images but {len(pred_per_image)} prediction images")
    k = schema.num_joints
    correct, total = np.zeros(k, np.int64), np.zeros(k, np.int64)
    for i, (gt, pred) in enumerate(zip(gt_per_image, pred_per_image)):
        gt = np.asarray(gt, np.float64).reshape(-1, k, 3)
        pred = np.asarray(pred, np.float64).reshape(-1, k, 3)
        sizes = schema.head_neck_sizes(gt)
        if head_sizes_per_image is not None:
            given = np.asarray(head_sizes_per_image[i], np.float64).reshape(-1)
            if len(given) != len(gt):
                raise ValueError(f"image {i}: {len(given)} head sizes for {len(gt)} GT people")
            sizes = np.where(np.isnan(given), sizes, given)  # 0: given as not measurable (skipped), not replaced
        scored = np.isfinite(sizes) & (sizes > 0)
        total += (gt[scored, :, 2] > 0).sum(0)
        thr = alpha * sizes
        for g, p in match_people(gt, pred, thr):
            d, valid = joint_distances(gt[g : g + 1], pred[p : p + 1])  # (1, 1, K)
            correct += (valid & (d <= thr[g]))[0, 0]
    return PCKhCounts(correct, total)


def pckh(
    gt_per_image: Sequence[np.ndarray],
    pred_per_image: Sequence[np.ndarray],
    head_sizes_per_image: Sequence[np.ndarray] | None,
    schema: Schema,
    alpha: float = 0.5,
) -> float | None:
    """Fraction of labelled GT joints whose matched predicted joint lies within alpha x the person's head size
    (`pckh_counts`, every joint type pooled). None when no person can be scored, e.g. a schema without head/neck
    joints and no head sizes."""
    return pckh_counts(gt_per_image, pred_per_image, head_sizes_per_image, schema, alpha).pooled()


def _shortest_limbs(gt: np.ndarray, schema: Schema) -> np.ndarray:
    """(N,) length of each person's shortest skeleton edge with both joints labelled (zero lengths ignored); NaN if
    none."""
    if not schema.skeleton or len(gt) == 0:
        return np.full(len(gt), np.nan)
    a, b = np.asarray(schema.skeleton).T  # (L,), (L,)
    length = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)  # (N, L)
    ok = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0) & (length > 0)
    shortest = np.where(ok, length, np.inf).min(1)
    return np.where(np.isfinite(shortest), shortest, np.nan)


def pck_dist(
    gt_per_image: Sequence[np.ndarray],
    pred_per_image: Sequence[np.ndarray],
    schema: Schema,
    factor: float = 5.0,
) -> dict[str, float | int | None]:
    """The seed paper's PCK-style distance between matched predicted and GT joints (lower is better).

    Each GT person's cutoff is factor x its shortest labelled limb; people are matched with those cutoffs as
    `match_people` thresholds (a person with no labelled limb is skipped). A (GT joint, predicted joint) pair of a
    matched couple counts only when its distance is within the cutoff (inclusive). Returns `pck_dist` = mean of
    distance / cutoff over counted pairs (in [0, 1]), `pck_dist_px` = their mean distance in pixels and
    `pck_dist_pairs` = their number; both means are None with no counted pair; and `pck_dist_px_per_joint`, the
    mean distance of each joint type's pairs ({name: px or None}: a per-joint table for any schema, where PCKh's
    needs a head and a neck).
    """
    if len(gt_per_image) != len(pred_per_image):
        raise ValueError(f"{len(gt_per_image)} GT images but {len(pred_per_image)} prediction images")
    k = schema.num_joints
    normalised: list[np.ndarray] = []
    pixels: list[np.ndarray] = []
    joint_sum, joint_pairs = np.zeros(k), np.zeros(k, np.int64)
    for gt, pred in zip(gt_per_image, pred_per_image):
        gt = np.asarray(gt, np.float64).reshape(-1, k, 3)
        pred = np.asarray(pred, np.float64).reshape(-1, k, 3)
        cutoff = factor * _shortest_limbs(gt, schema)
        for g, p in match_people(gt, pred, cutoff):
            d, valid = joint_distances(gt[g : g + 1], pred[p : p + 1])
            counted = (valid & (d <= cutoff[g]))[0, 0]  # (K,)
            kept = d[0, 0][counted]
            pixels.append(kept)
            normalised.append(kept / cutoff[g])
            joint_sum[counted] += kept
            joint_pairs += counted
    px = np.concatenate(pixels) if pixels else np.zeros(0)
    per_joint = {name: (float(total / n) if n else None)
                 for name, total, n in zip(schema.keypoints, joint_sum, joint_pairs)}
    if px.size == 0:
        return {"pck_dist": None, "pck_dist_px": None, "pck_dist_pairs": 0, "pck_dist_px_per_joint": per_joint}
    return {"pck_dist": float(np.concatenate(normalised).mean()), "pck_dist_px": float(px.mean()),
            "pck_dist_pairs": int(px.size), "pck_dist_px_per_joint": per_joint}
