"""`HeadMeta`: what a model's output maps are, in one object (openpifpaf's `headmeta` is the model).

The model builds it, checkpoints / .safetensors / ONNX exports carry it, and everything that makes or reads the maps
takes its geometry from it: the target builder (grid, Gaussian sigma, PAF width), the decoder (stride, sigma
prior), flip / multi-scale TTA, the Predictor and evaluation (the loss compares maps with targets of the same grid, and
takes its channel counts from the schema that sized the heads). So a stride or sigma is written once, where the model
is configured, and a value that contradicts it is an error, not a silent AP of 0.

Geometry (docs/conventions.md): output cell g of a stride-s map is centred at input pixel s*g + (s-1)/2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from posepart.errors import PosepartError
from posepart.schema import Schema

OutputStride = Literal[8, 4, 2]  # what the heads can output (8: the trunk's; 4, 2: refined by skips from the trunk)
OUTPUT_STRIDES: tuple[int, ...] = get_args(OutputStride)  # pose maps' and part maps' alike
INPUT_SIZE = 368  # the network input side (OpenPose's) wherever none is given: configs, synthetic scenes, FLOP counts


def cell_centre(stride: int) -> float:
    """The input pixel at the centre of output cell 0 of a stride-`stride` map: cell g is centred at
    stride * g + cell_centre(stride) (OpenPose's start = s/2 - 0.5)."""
    return (stride - 1) / 2.0


class HeadMetaError(PosepartError, ValueError):
    """A head description is malformed, or something contradicts the model's own."""


@dataclass(frozen=True)
class HeadMeta:
    """One model's outputs: the schema they are sized from and the geometry of each map.

    pose_stride: input pixels per heatmap / PAF cell (None: no pose head).
    parts_stride: input pixels per part-logit cell (None: no part head; 1: input resolution).
    sigma: the heatmap Gaussian's sigma in input pixels, as the targets draw it (the decoder's sub-cell prior).
    paf_width: the PAF's half-width in output cells, as the targets draw it.
    input_multiple: the network input's height and width must be multiples of this (the trunk's stride).
    heatmap_smoothing: the Gaussian (sigma in output cells) the model blurs its joint heatmaps with at inference
        (DARK's modulation, `models.pose.HeatmapSmoothing`); 0: the maps are output as trained.
    """

    schema: Schema
    pose_stride: int | None = 8
    parts_stride: int | None = None
    sigma: float = 7.0
    paf_width: float = 1.0
    input_multiple: int = 8
    heatmap_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.pose_stride is None and self.parts_stride is None:
            raise HeadMetaError("a model needs a pose head, a part head, or both (both strides are None)")
        for name in ("pose_stride", "parts_stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1
                                      or self.input_multiple % value):
                raise HeadMetaError(f"{name} must be a positive divisor of the input multiple "
                                    f"{self.input_multiple}, got {value!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise HeadMetaError(f"sigma must be a positive number of input pixels, got {self.sigma!r}")
        if not (math.isfinite(self.paf_width) and self.paf_width > 0):
            raise HeadMetaError(f"paf_width must be a positive number of output cells, got {self.paf_width!r}")
        if not (math.isfinite(self.heatmap_smoothing) and self.heatmap_smoothing >= 0):
            raise HeadMetaError(f"heatmap_smoothing must be >= 0 output cells, got {self.heatmap_smoothing!r}")

    @classmethod
    def of(cls, model: Any) -> HeadMeta:
        """The `HeadMeta` a model carries (`model.meta`); a clear error for a model built without one (its strides
        are not guessed: a wrong guess decodes every map on the wrong grid)."""
        head = getattr(model, "meta", None)
        if not isinstance(head, cls):
            raise HeadMetaError(f"the model ({type(model).__name__}) carries no HeadMeta (`model.meta`): build it with "
                                f"posepart.models.build_model, or give it one")
        return head

    @property
    def has_pose(self) -> bool:
        return self.pose_stride is not None

    @property
    def has_parts(self) -> bool:
        return self.parts_stride is not None

    @property
    def heatmap_channels(self) -> int:
        return self.schema.heatmap_channels

    @property
    def paf_channels(self) -> int:
        return self.schema.paf_channels

    @property
    def num_parts(self) -> int:
        return self.schema.num_parts

    @property
    def stride(self) -> int:
        """The pose maps' stride; a parts-only model's grid is the input multiple (for drawing and instances)."""
        return self.pose_stride if self.pose_stride is not None else self.input_multiple

    @property
    def heatmap_sigma_cells(self) -> float:
        """The Gaussian width of the output heatmaps in cells: the targets' sigma, widened by the inference blur (two
        Gaussians convolve to one of sigma sqrt(a^2 + b^2)). The decoder's sub-cell prior."""
        return math.hypot(self.sigma / self.stride, self.heatmap_smoothing)

    @property
    def peak_radius(self) -> int:
        """The decoder's peak suppression radius in cells: one trunk cell (1 at stride 8, 2 at stride 4, 4 at stride
        2). Maps refined above the trunk's stride resolve where a joint lies inside a trunk cell, not two joints of
        one type inside it; a smaller window turns their side maxima into duplicate people (docs/training.md)."""
        return max(1, self.input_multiple // self.stride)

    def pose_grid(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the pose maps for an (H, W) network input."""
        return input_hw[0] // self.stride, input_hw[1] // self.stride

    def check_stride(self, stride: int | None, where: str) -> None:
        """Refuse a stride given elsewhere (a flag, a config) that contradicts this model's pose stride."""
        if stride is not None and stride != self.stride:
            raise HeadMetaError(f"{where}: stride {stride} contradicts the model's pose stride {self.stride} "
                                f"(it is part of the model; drop the option)")

    # -- serialisation (checkpoints, .safetensors and ONNX metadata) -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = self.schema.to_category()
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> HeadMeta:
        """Parse `to_dict()` output; HeadMetaError naming `where` when it is malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("schema"), dict):
            raise HeadMetaError(f"{where}: head description is not a mapping with a schema")
        known = {f.name for f in fields(cls)} - {"schema"}
        unknown = set(data) - known - {"schema"}
        if unknown:
            raise HeadMetaError(f"{where}: unknown head description keys {sorted(unknown)}")
        try:
            schema = Schema.from_category(data["schema"])
            values = {k: data[k] for k in known if k in data}
            for k in ("sigma", "paf_width", "heatmap_smoothing"):  # JSON may hold them as integers
                if k in values:
                    values[k] = float(values[k])
            return cls(schema, **values)
        except (TypeError, ValueError, KeyError) as err:
            raise HeadMetaError(f"{where}: bad head description: {err}") from None
