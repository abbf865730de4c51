"""Refining stride-8 outputs to stride 4 (or 2) with the trunk's finer maps: the part logits of `seg_stride` and the
heatmaps / PAFs of `pose_stride` alike.

Two forms, chosen by `model.refine` (`RefineKind`):
- "deep" (the default): every output refined by `ResidualRefine` from the deepest trunk map at each stride, the
  last conv of VGG's block there (conv3_3 at stride 4, conv2_2 at 2), as FPN builds on each stage's output.
- "fcn": the part logits refined by FCN's zero-initialised 1x1 scorers (`SkipRefine`) and the pose maps by
  `ResidualRefine`, both from the pooled map entering that block (pool2, pool1), FCN's skips. What checkpoints
  written before `model.refine` existed use; they load as "fcn".
Why "deep": conv3_3 is three convolutions deeper than pool2 and computed anyway, and a 3x3 conv that sees the
upsampled logits beside it refines the parts better than a linear score of the skip alone: +0.022 AP and +0.045
mean IU together on the demo's recipe, three seeds (docs/training.md, "A sixth round").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..heads import OUTPUT_STRIDES
from .fcn import BilinearUpsample, zero_scorer
from .trunk import ShapeSpec, conv_block

RefineKind = Literal["deep", "fcn"]
# refine kind -> output stride -> the trunk maps (`VGGTrunk` outputs) that refine stride-8 outputs to it, coarse to fine
SKIPS_TO_STRIDE: dict[str, dict[int, tuple[str, ...]]] = {
    "deep": {8: (), 4: ("conv3_3",), 2: ("conv3_3", "conv2_2")},
    "fcn": {8: (), 4: ("pool2",), 2: ("pool2", "pool1")},
}


def refinement_skips(shapes: dict[str, ShapeSpec], stride: int, kind: RefineKind) -> dict[str, ShapeSpec]:
    """The trunk maps (name -> shape, from `VGGTrunk.output_shapes()`) that refine stride-8 outputs to `stride`."""
    if kind not in SKIPS_TO_STRIDE:
        raise ValueError(f"refine must be one of {sorted(SKIPS_TO_STRIDE)}, got {kind!r}")
    if stride not in OUTPUT_STRIDES:
        raise ValueError(f"the refined stride must be one of {list(OUTPUT_STRIDES)}, got {stride!r}")
    return {name: shapes[name] for name in SKIPS_TO_STRIDE[kind][stride]}


def skip_output_stride(input_stride: int, skips: dict[str, ShapeSpec]) -> int:
    """The stride after refining a stride-`input_stride` map with `skips` (coarse to fine), each halving it; a skip
    at any other stride is a ValueError."""
    stride = input_stride
    for name, shape in skips.items():
        if shape.stride * 2 != stride:
            raise ValueError(f"skip {name!r} has stride {shape.stride}; the next skip after stride {stride} must "
                             f"have stride {stride // 2}")
        stride = shape.stride
    return stride


class ResidualRefine(nn.Module):
    """Stride-8 maps refined to stride 4 (or 2) with the trunk's finer maps (HigherHRNet's idea for bottom-up
    heatmaps, FCN's skip form): per skip, x = up2(x) + head(concat(up2(x), skip)).

    up2 is a learnable x2 `BilinearUpsample` (starts as bilinear interpolation); head is conv3x3 [+BN] + ReLU then a
    zero-initialised 1x1 conv, so at initialisation the output is the bilinear upsampling of the stride-8 maps and the
    finer detail is learned as a residual. Why: at stride 8 the joints of a small person are a cell or two apart and
    the joints of people who stand close merge (the decoded ground truth on 300 `benchmark` scenes at 368 px: AP 0.948
    at stride 8, 0.969 at 4; on the demo's 128 px scenes 0.922 and 0.974), and a lower arm is a cell or two wide.
    forward(maps (B, C, H/8, W/8), feats {name: (B, C', H/s', W/s')}) -> (B, C, H/s, W/s), s = output_stride.
    """

    def __init__(self, channels: int, input_stride: int, skips: dict[str, ShapeSpec], *, hidden: int,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.output_stride = skip_output_stride(input_stride, skips)
        self.upsample = nn.ModuleDict({name: BilinearUpsample(channels, 2) for name in skips})
        self.heads = nn.ModuleDict()
        for name, shape in skips.items():
            hidden_layers = conv_block(channels + shape.channels, hidden, 3, batch_norm=batch_norm)
            nn.init.kaiming_normal_(hidden_layers[0].weight, mode="fan_in", nonlinearity="relu")
            self.heads[name] = nn.Sequential(*hidden_layers, zero_scorer(hidden, channels))

    def forward(self, maps: Tensor, feats: dict[str, Tensor]) -> Tensor:
        for name, head in self.heads.items():
            skip = feats[name]  # (B, C', 2h, 2w)
            up = self.upsample[name](maps, skip.shape[-2:])  # (B, C, 2h, 2w)
            maps = up + head(torch.cat([up, skip], dim=1))
        return maps


class SkipRefine(nn.Module):
    """FCN-style refinement of coarse part logits with finer trunk maps (Long et al. 2015, sec. 4.2); `refine: fcn`.

    Every skip halves the stride: score = up2(score) + score_skip(skip), with up2 a learnable x2 `BilinearUpsample`
    and score_skip a zero-initialised 1x1 scorer, so at initialisation the result is the bilinear upsampling of the
    input. Why: at stride 8 a lower arm is a cell or two wide, which caps the reachable IoU of thin parts.
    forward(logits (B, P, H/s, W/s), feats {name: (B, C, H/s', W/s')}) -> (B, P, H/s_out, W/s_out),
    s_out = output_stride = s / 2^len(skips).
    """

    def __init__(self, num_classes: int, input_stride: int, skips: dict[str, ShapeSpec]) -> None:
        super().__init__()
        self.output_stride = skip_output_stride(input_stride, skips)
        self.scorers = nn.ModuleDict({name: zero_scorer(s.channels, num_classes) for name, s in skips.items()})
        self.upsample = nn.ModuleDict({name: BilinearUpsample(num_classes, 2) for name in skips})

    def forward(self, logits: Tensor, feats: dict[str, Tensor]) -> Tensor:
        for name, scorer in self.scorers.items():
            skip = feats[name]  # (B, C, 2h, 2w) for inputs that are multiples of 8
            logits = self.upsample[name](logits, skip.shape[-2:]) + scorer(skip)  # (B, P, h', w')
        return logits
