"""The one output type of every posepart model (see docs/conventions.md, "Model outputs")."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ModelOutput:
    """Per-stage predictions of a `PosePartNet`; a list is empty when the model has no such head.

    heatmaps: one (B, K+1, H/stride, W/stride) tensor per pose stage, last = final prediction.
    pafs:     one (B, 2L, H/stride, W/stride) tensor per pose stage.
    parts:    part-segmentation *logits* (B, P, H/parts_stride, W/parts_stride): a single full-resolution tensor for an
              FCN head (parts_stride 1), or one tensor per stage for the per-stage branch.
    The strides are the model's `meta` (`posepart.heads.HeadMeta`), not repeated here.
    Losses should iterate over the lists (every stage is supervised) and take `[-1]` for the final prediction.
    """

    heatmaps: list[Tensor] = field(default_factory=list)
    pafs: list[Tensor] = field(default_factory=list)
    parts: list[Tensor] = field(default_factory=list)

    @property
    def num_stages(self) -> int:
        """Rows of a per-stage table: the pose stages, or the part outputs of a segmentation-only model."""
        return max(len(self.heatmaps), len(self.parts))

    def stage(self, t: int) -> dict[str, Tensor | None]:
        """{"heatmaps", "pafs", "parts"} of stage t (0-based; -1 the final prediction); a task without a head is None.
        A list shorter than `num_stages` (an FCN's single part output) gives its last entry to every later stage."""
        t = t % self.num_stages
        return {name: maps[min(t, len(maps) - 1)] if maps else None
                for name, maps in (("heatmaps", self.heatmaps), ("pafs", self.pafs), ("parts", self.parts))}


# Let torch.export / dynamo treat the dataclass as a pytree (its tensors are outputs), so a
# whole PosePartNet can be exported without a wrapper.
try:  # pragma: no cover - depends on the torch version
    torch.export.register_dataclass(ModelOutput, serialized_type_name="posepart.models.ModelOutput")
except Exception:  # noqa: BLE001 - registration is a convenience, never a reason to fail an import
    pass
