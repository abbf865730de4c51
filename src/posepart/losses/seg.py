"""Part segmentation loss: pixel-wise cross-entropy over part logits, with optional set-valued labels.

Labels are (B, H, W) int64 maps: values 0..P-1 are the schema's part classes, 255 is ignore. Sources with a coarser
label space (CIHP/LIP merged classes, "some arm part", ...) write a value v >= P, meaning "one of the classes in row
v - P of `allowed_sets`"; the loss there is -log(sum of the softmax probabilities of the allowed classes). A plain
label c is the singleton set {c}, so both cases are one formula:

    loss(pixel) = logsumexp(all logits) - logsumexp(logits of the allowed classes)

and the batch loss is the sum over labelled pixels of the samples with `has_parts` divided by the number of those
pixels (one denominator for the whole batch, so a mixed batch normalises exactly as its labelled samples alone would).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posepart.schema import IGNORE_LABEL



def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (B, P, h, w) logits to `size` = (H, W) bilinearly (no-op when already that size).

    `align_corners=False` is exactly the project's stride convention: with H = s*h it samples output cell g at input
    coordinate s*g + (s-1)/2, i.e. each low-resolution logit sits at the centre of its s x s block of input pixels.
    Upsampling the logits (not downsampling the labels) keeps every labelled pixel and thin parts intact.
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SegLoss(nn.Module):
    """Cross-entropy over part logits, normalised by the number of labelled pixels in the batch.

    Args:
        allowed_sets: optional (S, P) bool table; a label value P + i means "any class j with allowed_sets[i, j]".
            Every row must allow at least one class and P + S must stay below 255 (the uint8 ignore value).
        check_labels: raise a ValueError on label values that are neither a class, a set row nor 255 (costs one
            host sync per call; without it an out-of-range label is a CUDA device-side assert).
    """

    allowed_sets: Tensor | None

    def __init__(self, *, allowed_sets: Tensor | None = None, check_labels: bool = True) -> None:
        super().__init__()
        if allowed_sets is not None:
            allowed_sets = torch.as_tensor(allowed_sets)
            if allowed_sets.dim() != 2 or allowed_sets.dtype != torch.bool:
                raise ValueError(f"allowed_sets must be a 2-D bool tensor (S, P), got {allowed_sets.dtype} "
                                 f"{tuple(allowed_sets.shape)}")
            if not bool(allowed_sets.any(1).all()):
                raise ValueError("every row of allowed_sets must allow at least one class (else the loss is +inf)")
            if allowed_sets.shape[0] + allowed_sets.shape[1] > IGNORE_LABEL:
                raise ValueError(f"P + S = {sum(allowed_sets.shape)} label values do not fit below {IGNORE_LABEL}")
        # A buffer so that .to(device) moves it; not persistent: it is configuration, not learned state.
        self.register_buffer("allowed_sets", allowed_sets, persistent=False)
        self.check_labels = check_labels

    def prepare_labels(self, labels: Tensor, has_parts: Tensor | None) -> tuple[Tensor, Tensor]:
        """Labels of samples without part annotation set to ignore; returns (labels (B,H,W) int64, valid (B,H,W))."""
        labels = labels.long()
        if has_parts is not None:
            labels = torch.where(has_parts.to(labels.device, torch.bool)[:, None, None], labels, IGNORE_LABEL)
        return labels, labels != IGNORE_LABEL

    def _check(self, labels: Tensor, valid: Tensor, num_classes: int) -> None:
        num_values = num_classes + (0 if self.allowed_sets is None else self.allowed_sets.shape[0])
        bad = valid & ((labels < 0) | (labels >= num_values))
        if bool(bad.any()):
            values = torch.unique(labels[bad]).tolist()
            raise ValueError(f"part labels {values[:10]} are outside 0..{num_values - 1} (P={num_classes} classes"
                             f" + {num_values - num_classes} allowed sets) and not {IGNORE_LABEL} (ignore)")

    def forward(self, logits: Tensor | Sequence[Tensor], labels: Tensor, has_parts: Tensor | None = None) -> Tensor:
        """Loss of one stage's logits (B, P, h, w), or the sum over a list of stages; labels (B, H, W)."""
        stages = [logits] if isinstance(logits, Tensor) else list(logits)
        return torch.stack(self.per_stage(stages, labels, has_parts)).sum()

    def per_stage(self, stages: Sequence[Tensor], labels: Tensor, has_parts: Tensor | None = None) -> list[Tensor]:
        """One scalar loss per stage (each stage supervised with the same labels)."""
        if not stages:
            raise ValueError("no segmentation stages given")
        labels, valid = self.prepare_labels(labels, has_parts)
        if self.check_labels:
            self._check(labels, valid, stages[0].shape[1])
        count = valid.sum().clamp(min=1)  # all-ignored batch: numerator is 0 -> loss 0, gradient 0, no NaN
        return [self._nll_sum(s, labels, valid) / count for s in stages]

    def _nll_sum(self, logits: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
        """Summed negative log-likelihood over the valid pixels of one stage (float32 for AMP safety)."""
        if logits.dim() != 4 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)} (B,P,h,w)")
        logits = upsample_logits(logits.float(), (labels.shape[-2], labels.shape[-1]))  # (B, P, H, W)
        num_classes = logits.shape[1]
        if self.allowed_sets is None:
            return F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="sum")
        if self.allowed_sets.shape[1] != num_classes:
            raise ValueError(f"allowed_sets has {self.allowed_sets.shape[1]} columns, logits {num_classes} classes")
        eye = torch.eye(num_classes, dtype=torch.bool, device=logits.device)
        table = torch.cat([eye, self.allowed_sets.to(logits.device)])  # (P + S, P): row v = classes label v allows
        allowed = table[torch.where(valid, labels, 0)].permute(0, 3, 1, 2)  # (B, P, H, W) bool
        nll = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), 1)
        return torch.where(valid, nll, 0.0).sum()
