"""Pairing the people of two lists one-to-one by their joints (the Hungarian method).

Below `data` and `metrics`, which both need it: PCKh and PCK_dist pair ground-truth people with predictions, and the
MPII reader pairs its annotation people with those of `valid.h5` to attach their head sizes. Arrays (N, K, 3)
[x, y, v-or-score]; a joint counts on a side where its third value is > 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def joint_distances(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint distances (N, M, K) between every GT and predicted person, and where both sides have the joint."""
    d = np.linalg.norm(gt[:, None, :, :2] - pred[None, :, :, :2], axis=-1)  # (N, M, K)
    valid = (gt[:, None, :, 2] > 0) & (pred[None, :, :, 2] > 0)  # (N, M, K)
    return d, valid


def match_people(
    gt: np.ndarray, pred: np.ndarray, thresholds: np.ndarray | Sequence[float] | None = None
) -> list[tuple[int, int]]:
    """One-to-one (gt index, pred index) pairs by the Hungarian method (scipy's linear_sum_assignment).

    With `thresholds` (N,) (one distance per GT person, e.g. alpha x head size) the assignment maximises the number of
    GT joints whose predicted joint lies within the person's threshold, ties broken by the smaller mean distance in
    thresholds; a GT person whose threshold is not finite (no normaliser) takes no part. Without thresholds it
    pairs as many people sharing a joint as it can, then minimises their mean pixel distances. Only joints labelled
    in the GT and predicted count; a pair sharing no such joint is never returned, so some people may stay unmatched
    (at most min(N, M) pairs).
    """
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    if gt.size == 0 or pred.size == 0:
        return []
    gt, pred = gt.reshape(len(gt), -1, 3), pred.reshape(len(pred), -1, 3)
    rows = np.arange(len(gt))
    if thresholds is not None:
        thr = np.asarray(thresholds, np.float64).reshape(-1)
        rows = rows[np.isfinite(thr) & (thr > 0)]
    if len(rows) == 0 or len(pred) == 0:
        return []
    d, valid = joint_distances(gt[rows], pred)
    shared = valid.sum(-1)  # (n, M)
    if thresholds is None:
        mean_d = np.where(valid, d, 0.0).sum(-1) / np.maximum(shared, 1)
        # a pair sharing nothing costs more than all real pairs together: one more real pair always wins (finite:
        # the solver rejects inf)
        cost = np.where(shared > 0, mean_d, mean_d[shared > 0].sum() + 1.0)
    else:
        nd = d / thr[rows, None, None]  # distances in units of each person's threshold
        hits = (valid & (nd <= 1.0)).sum(-1)
        mean_nd = np.where(valid, nd, 0.0).sum(-1) / np.maximum(shared, 1)
        # each pair's tie-breaker lies in [0, 1 / (pairs + 1)), so their sum over any assignment stays below 1 and
        # can never outweigh one more joint within the threshold (one pair's [0, 1) could, summed over several)
        pairs = min(len(rows), len(pred))
        cost = -hits + np.where(shared > 0, mean_nd / (1.0 + mean_nd), 1.0) / (pairs + 1)
    gi, pj = linear_sum_assignment(cost)
    return [(int(rows[g]), int(p)) for g, p in zip(gi, pj) if shared[g, p] > 0]
