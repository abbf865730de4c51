"""`PosePartLoss`: segmentation + heatmap + PAF losses over every stage, combined by a pluggable task weighting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from posepart.losses.pose import FOCAL_BETA, SEED_THRESHOLD, TARGET_KEYS, HeatmapLoss, MaskMode, PoseLoss
from posepart.losses.seg import SegLoss
from posepart.losses.weighting import FixedWeighting, TaskWeighting, weighted_total
from posepart.schema import Schema

# Task name -> the model-output attribute holding its per-stage list (also the batch key of its target).
TASK_OUTPUTS: dict[str, str] = {"seg": "parts", **TARGET_KEYS}


@dataclass
class LossResult:
    """`total` to backpropagate; `terms`: detached values for logging ("seg", "heatmap/stage1", "total", ...);
    with `keep_tasks`, `tasks`: each task's weighted term (total = their sum; what a gradient aggregator takes one row
    from) and `present`: whether the batch supervises that task at all (0-dim bool)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    tasks: dict[str, Tensor] = field(default_factory=dict)
    present: dict[str, Tensor] = field(default_factory=dict)


def _rows(batch: Mapping[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The batch with only `rows` (B,) bool supervised: the others' `has_pose` / `has_parts` set False."""
    out = dict(batch)
    for key in ("has_pose", "has_parts"):
        flags = batch.get(key)
        out[key] = rows if flags is None else flags.bool() & rows
    return out


def output_stages(output: Any, name: str) -> list[Tensor]:
    """The per-stage list `name` of a ModelOutput-like object or a mapping; [] when absent."""
    stages = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
    return list(stages or [])


class PosePartLoss(nn.Module):
    """The multi-task loss: L = the sum of weighting.terms({"seg": L_seg, "heatmap": L_heat, "paf": L_paf}).

    Each L_task is the sum over the model's stages (intermediate supervision) of that stage's loss; tasks whose output
    list is empty are skipped (no term, no weighting parameter used). Segmentation: `SegLoss` (cross-entropy,
    logits upsampled bilinearly to the label size, set-valued labels via `allowed_sets`). Pose: `PoseLoss` (masked
    MSE, or the focal loss on the joint heatmaps; mask mode "openpose" or "seed"). Default weighting:
    `FixedWeighting()`, the seed paper's unweighted sum. With a learnable weighting (e.g. `UncertaintyWeighting`) pass
    this module's `parameters()` to the optimizer.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        mask_mode: MaskMode = "openpose",
        weighting: TaskWeighting | None = None,
        allowed_sets: Tensor | None = None,
        seed_threshold: float = SEED_THRESHOLD,
        check_labels: bool = True,
        heatmap_loss: HeatmapLoss = "mse",
        focal_beta: float = FOCAL_BETA,
    ) -> None:
        super().__init__()
        if allowed_sets is not None and allowed_sets.shape[-1] != schema.num_parts:
            raise ValueError(f"allowed_sets has {allowed_sets.shape[-1]} columns, the schema {schema.num_parts} parts")
        self.schema = schema
        self.seg = SegLoss(allowed_sets=allowed_sets, check_labels=check_labels)
        self.pose = PoseLoss(schema, mask_mode=mask_mode, seed_threshold=seed_threshold, heatmap_loss=heatmap_loss,
                             focal_beta=focal_beta)
        self.weighting = weighting if weighting is not None else FixedWeighting()

    def _expected_channels(self, task: str) -> int:
        return {"seg": self.schema.num_parts, "heatmap": self.schema.heatmap_channels,
                "paf": self.schema.paf_channels}[task]

    def task_stage_losses(self, task: str, stages: Sequence[Tensor], batch: Mapping[str, Tensor]) -> list[Tensor]:
        """Per-stage losses of one task (stages non-empty)."""
        expected = self._expected_channels(task)
        for i, s in enumerate(stages):
            if s.dim() != 4 or s.shape[1] != expected:
                raise ValueError(f"{task} stage {i + 1} output has shape {tuple(s.shape)}; the schema expects "
                                 f"(B, {expected}, h, w)")
        target_key = TASK_OUTPUTS[task]
        if target_key not in batch:
            raise KeyError(f"the model predicts {task} but the batch has no {target_key!r} targets")
        pseudo = batch.get("unlabelled")
        if pseudo is None or "loss_weight" not in batch:
            return self._stage_losses(task, stages, batch)
        # Self-training (FixMatch's form): the labelled samples' mean plus the ramp's weight times the pseudo-labelled
        # samples' mean over all their entries, an entry the teacher leaves unlabelled counting as a zero loss
        # (FixMatch divides its unlabelled loss by every unlabelled sample, confident or not): their mean over the
        # labelled entries times the labelled share. The focal loss, per positive, is scaled so too, as if the
        # positives the teacher missed were spread as its labelled cells are: that weighs its people less than
        # keeping it per positive, and measured better (39.4 against 31.9 AP; docs/training.md, "Self-training").
        # Before, the mean was over the few entries a young teacher labels, so each weighed as much as all the
        # labelled samples' (11.9 AP). Row masks, not slices: the step takes no host sync.
        pseudo = pseudo.bool()
        weight = (batch["loss_weight"].float() * pseudo).sum() / pseudo.sum().clamp(min=1)  # the ramp's (no sync)
        own = self._stage_losses(task, stages, _rows(batch, ~pseudo))
        theirs_batch = _rows(batch, pseudo)
        theirs = self._stage_losses(task, stages, theirs_batch)
        weight = weight * self._coverage(task, theirs_batch, pseudo)
        return [a + weight * b for a, b in zip(own, theirs)]

    def _stage_losses(self, task: str, stages: Sequence[Tensor], batch: Mapping[str, Tensor]) -> list[Tensor]:
        if task == "seg":
            return self.seg.per_stage(stages, batch["parts"], batch.get("has_parts"))
        return self.pose(task, stages, batch)

    def _coverage(self, task: str, batch: Mapping[str, Tensor], rows: Tensor) -> Tensor:
        """0-dim: the share of the entries of `rows` (B,) bool that `batch`'s labels supervise for `task` (its other
        rows supervise nothing). The seed mask (`loss.mask: seed`) is the loss's own, for labelled samples too: not
        counted as unlabelled (a review: a first version weighed a fully pseudo-labelled sample 0.155x)."""
        if task == "seg":
            supervised = self.seg.prepare_labels(batch["parts"], batch.get("has_parts"))[1]  # (B, H, W)
        else:
            supervised = self.pose.labelled(task, batch)  # type: ignore[arg-type]  # (B, C, h, w)
        return supervised.float().sum() / (rows.sum() * supervised[0].numel()).clamp(min=1)

    def supervised(self, task: str, batch: Mapping[str, Tensor]) -> Tensor:
        """0-dim bool tensor (no host sync): whether any entry of this batch supervises `task` (a pseudo-labelled
        sample at loss weight 0 does not: under uncertainty weighting a present task's regulariser moves its weight
        even where its loss is 0)."""
        if "unlabelled" in batch and "loss_weight" in batch:
            batch = _rows(batch, ~batch["unlabelled"].bool() | (batch["loss_weight"] > 0))
        if task == "seg":
            return self.seg.prepare_labels(batch["parts"], batch.get("has_parts"))[1].any()
        return self.pose.weight(task, batch).any()  # type: ignore[arg-type]

    def forward(self, output: Any, batch: Mapping[str, Tensor], *, keep_tasks: bool = False) -> LossResult:
        """output: ModelOutput (or mapping) with per-stage lists `parts`, `heatmaps`, `pafs`; batch: see conventions.
        keep_tasks: also return each task's weighted term and presence (for gradient aggregation; off by default:
        a compiled training step must not return them)."""
        task_losses: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        terms: dict[str, Tensor] = {}
        for task, attribute in TASK_OUTPUTS.items():
            stages = output_stages(output, attribute)
            if not stages:
                continue
            per_stage = self.task_stage_losses(task, stages, batch)
            task_losses[task] = torch.stack(per_stage).sum()
            present[task] = self.supervised(task, batch)
            terms[task] = task_losses[task].detach()
            terms.update({f"{task}/stage{i + 1}": loss.detach() for i, loss in enumerate(per_stage)})
        if not task_losses:
            raise ValueError("the model output has no parts, heatmaps or pafs stages to supervise")
        weighted = self.weighting.terms(task_losses, present)
        total = weighted_total(weighted)
        terms["total"] = total.detach()
        terms.update(self.weighting.log_terms())
        if not keep_tasks:
            return LossResult(total=total, terms=terms)
        return LossResult(total=total, terms=terms, tasks=weighted, present=present)
