"""Semantic-segmentation scores from an accumulated confusion matrix (FCN, Long et al. 2015, sec. 5).

With n_ij = pixels of class i predicted as j and t_i = sum_j n_ij:
  pixel_accuracy          = sum_i n_ii / sum_i t_i
  mean_accuracy           = mean_i n_ii / t_i
  mean_iou                = mean_i n_ii / (t_i + sum_j n_ji - n_ii)
  frequency_weighted_iou  = (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

Absent classes (the FCN formulas leave them undefined): `mean_accuracy` averages over classes present in the ground
truth (t_i > 0); `mean_iou` and `iou_per_class` cover classes present in the ground truth OR the prediction, so a class
predicted but never labelled scores IoU 0. A class absent from both has `iou_per_class` None and is left out of every
mean (frequency weighting gives it weight 0 anyway). Every score is None while no pixel has been counted.
`compute(labelable)` leaves out, likewise, the classes the data could never label alone (a coarser dataset read in a
finer schema: its "arm" pixels are the set {upper_arm, lower_arm}, not scored), so that one stray predicted pixel of
such a class does not add an IoU of 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from posepart.schema import IGNORE_LABEL


def _flat(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any-shape label array or tensor -> flat int64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1).astype(np.int64)


class ConfusionMatrix:
    """Accumulates `mat[true, pred]` pixel counts over images; `merge` sums matrices from other sources or ranks."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_LABEL) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), np.int64)  # (true, pred)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Count one batch; pixels whose target is `ignore_index` are skipped. Shapes must match."""
        p, t = _flat(pred), _flat(target)
        if p.shape != t.shape:
            raise ValueError(f"prediction has {p.size} pixels, target {t.size}")
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        n = self.num_classes
        if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= n):
            raise ValueError(f"labels outside [0, {n}) (other than ignore {self.ignore_index})")
        self.mat += np.bincount(n * t + p, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same classes); returns self."""
        if other.mat.shape != self.mat.shape:
            raise ValueError(f"cannot merge {other.mat.shape} into {self.mat.shape}")
        self.mat += other.mat
        return self

    def reset(self) -> None:
        self.mat[:] = 0

    def compute(self, labelable: np.ndarray | None = None) -> dict[str, Any]:
        """The four FCN scores as floats in [0, 1] plus `iou_per_class` (None for classes absent from both sides, and
        for classes outside `labelable`, a (num_classes,) bool mask, when given)."""
        m = self.mat.astype(np.float64)
        diag, t, predicted = np.diag(m), m.sum(1), m.sum(0)
        union = t + predicted - diag
        total = t.sum()
        if total == 0:
            return dict(pixel_accuracy=None, mean_accuracy=None, mean_iou=None, frequency_weighted_iou=None,
                        iou_per_class=[None] * self.num_classes)
        in_gt, seen = t > 0, union > 0
        if labelable is not None:
            seen &= np.asarray(labelable, bool)
        iou = np.divide(diag, union, out=np.zeros_like(diag), where=seen)
        return dict(
            pixel_accuracy=float(diag.sum() / total),
            mean_accuracy=float((diag[in_gt] / t[in_gt]).mean()),
            mean_iou=float(iou[seen].mean()),
            frequency_weighted_iou=float((t * iou).sum() / total),
            iou_per_class=[float(v) if s else None for v, s in zip(iou, seen)],
        )
