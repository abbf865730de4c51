"""OpenPose's multi-stage, two-branch CNN (Cao et al. 2017, "Realtime Multi-Person 2D Pose Estimation using PAFs").

Stage 1 predicts joint heatmaps S^1 and part affinity fields L^1 from the trunk features F; every later stage t sees
concat(F, S^{t-1}, L^{t-1}) and refines both, with large 7x7 kernels to widen the receptive field. Every stage is
supervised (intermediate supervision), so the head returns all of them.

Optional per-stage part segmentation (`stage_seg=True`): a third branch per stage predicting part logits at stride 8,
fed back into the next stage like the other two, so pose and parts can refine each other stage by stage.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .trunk import conv_block, scaled

MAX_STAGES = 6  # refinement stages a pose branch may have (the PAF paper's six)

JOINT_PRIOR_LOGIT = -2.19  # sigmoid = 0.1: CenterNet's start for sparse peaks (Zhou et al. 2019)
BACKGROUND_PRIOR_LOGIT = 4.6  # sigmoid = 0.99


def _branch(in_channels: int, out_channels: int, *, kernel: int, convs: int, hidden: int, last_hidden: int,
            batch_norm: bool = False) -> nn.Sequential:
    """`convs` kxk conv(hidden)[+BN]+ReLU, a 1x1 conv(last_hidden)[+BN]+ReLU, then a 1x1 conv to `out_channels`."""
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(convs):
        layers += conv_block(c, hidden, kernel, batch_norm=batch_norm)
        c = hidden
    layers += conv_block(c, last_hidden, 1, batch_norm=batch_norm)
    layers += [nn.Conv2d(last_hidden, out_channels, kernel_size=1)]
    return nn.Sequential(*layers)


def _init_branch(branch: nn.Sequential) -> None:
    """He-normal hidden convs (keeps activations alive through 7 convs from scratch); normal(0, 0.01) output conv.

    The small output init (OpenPose's Caffe gaussian std 0.01) makes every stage start near 0, the value of most of
    a heatmap / PAF target, and keeps the maps fed to the next stage small. Biases start at 0.
    """
    convs = [m for m in branch if isinstance(m, nn.Conv2d)]
    for conv in convs[:-1]:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    nn.init.normal_(convs[-1].weight, std=0.01)
    nn.init.zeros_(convs[-1].bias)


class PAFStage(nn.Module):
    """One stage: parallel branches sharing an input, one per output kind (heatmaps, pafs[, parts])."""

    def __init__(self, in_channels: int, out_channels: dict[str, int], *, first: bool, width: float,
                 batch_norm: bool = False, heatmap_sigmoid: bool = False) -> None:
        super().__init__()
        if first:  # stage 1: 3x conv3x3(128) + conv1x1(512) + conv1x1(out)
            spec = dict(kernel=3, convs=3, hidden=scaled(128, width), last_hidden=scaled(512, width))
        else:  # stages >= 2: 5x conv7x7(128) + conv1x1(128) + conv1x1(out)
            spec = dict(kernel=7, convs=5, hidden=scaled(128, width), last_hidden=scaled(128, width))
        self.branches = nn.ModuleDict(
            {name: _branch(in_channels, c, **spec, batch_norm=batch_norm) for name, c in out_channels.items()}
        )
        for branch in self.branches.values():
            _init_branch(branch)
        if heatmap_sigmoid:  # logits of a sigmoid (focal loss): start at CenterNet's prior, not at 0.5 everywhere
            bias = self.branches["heatmaps"][-1].bias
            nn.init.constant_(bias[:-1], JOINT_PRIOR_LOGIT)  # joints
            nn.init.constant_(bias[-1:], BACKGROUND_PRIOR_LOGIT)  # the background channel, ~1 but at joints

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: branch(x) for name, branch in self.branches.items()}


class PAFStages(nn.Module):
    """T refinement stages on the trunk's stride-8 features.

    forward(features (B, C, h, w)) -> (heatmaps, pafs, parts): lists of T tensors each,
        heatmaps (B, heatmap_channels, h, w), pafs (B, paf_channels, h, w), parts (B, part_channels, h, w) logits
        (parts is [] without `stage_seg`).
    """

    output_stride = 8

    def __init__(
        self,
        in_channels: int,
        *,
        heatmap_channels: int,
        paf_channels: int,
        stages: int = 6,
        width: float = 1.0,
        stage_seg: bool = False,
        part_channels: int = 0,
        batch_norm: bool = False,
        heatmap_sigmoid: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= stages <= MAX_STAGES:
            raise ValueError(f"stages must be in 1..{MAX_STAGES} (the PAF paper uses 6), got {stages}")
        if heatmap_channels < 1 or paf_channels < 1:
            raise ValueError(f"need heatmap and PAF channels, got {heatmap_channels} and {paf_channels}")
        if stage_seg and part_channels < 1:
            raise ValueError(f"stage_seg=True needs part_channels >= 1, got {part_channels}")
        self.stage_seg = stage_seg
        self.heatmap_sigmoid = heatmap_sigmoid  # heatmaps come out as logits; the model applies the sigmoid
        outs = {"heatmaps": heatmap_channels, "pafs": paf_channels}
        if stage_seg:
            outs["parts"] = part_channels
        # Later stages read the features plus every previous prediction (in `outs` order).
        refine_in = in_channels + sum(outs.values())
        self.stages = nn.ModuleList(
            [PAFStage(in_channels, outs, first=True, width=width, batch_norm=batch_norm,
                      heatmap_sigmoid=heatmap_sigmoid)]
            + [PAFStage(refine_in, outs, first=False, width=width, batch_norm=batch_norm,
                        heatmap_sigmoid=heatmap_sigmoid) for _ in range(stages - 1)]
        )

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def extra_repr(self) -> str:  # in the model's description: the sigmoid changes its maps, not its weights
        return f"stage_seg={self.stage_seg}, heatmap_sigmoid={self.heatmap_sigmoid}"

    def forward(self, features: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        heatmaps: list[Tensor] = []
        pafs: list[Tensor] = []
        parts: list[Tensor] = []
        pred: dict[str, Tensor] = {}
        for stage in self.stages:
            # Stage 1 reads the features (B, C, h, w); later stages also the previous predictions,
            # concat -> (B, C + K+1 + 2L [+ P], h, w).
            x = torch.cat([features, *pred.values()], dim=1) if pred else features
            pred = stage(x)  # {"heatmaps": (B, K+1, h, w), "pafs": (B, 2L, h, w)[, "parts": (B, P, h, w)]}
            heatmaps.append(pred["heatmaps"])
            pafs.append(pred["pafs"])
            if self.stage_seg:
                parts.append(pred["parts"])
        return heatmaps, pafs, parts


class HeatmapSmoothing(nn.Module):
    """DARK's modulation (Zhang et al. 2020, "Distribution-Aware Coordinate Representation for Human Pose
    Estimation"): each joint heatmap, negative values cut to 0, blurred by a Gaussian of `sigma` output cells and
    rescaled to keep its maximum; the last (background) channel passes through. The model applies it at inference
    only (the loss sees the raw maps), so every consumer of its output -- decoding, TTA, the Predictor, ONNX exports --
    reads the same maps.

    Why: a heatmap trained at stride 4 is jagged where the network is unsure, and the peak search turns each bump into
    a joint; a blur of 0.75 cells merges them (demo joint model: AP 0.345 -> 0.363; three ablation seeds +0.014 to
    +0.018; nothing at stride 8; docs/training.md). Zero-padded separable convolutions, with the taps of scipy's
    `gaussian_filter(mode="constant")` (truncated at 4 sigma), so exports need nothing but standard ops. The zeros pull
    a joint within about two cells of the map's edge up to 0.9 cells inwards; edge-copying or mirrored padding bend it
    outwards by up to 0.3 cells and scored 0.009 AP lower (docs/training.md, `model.heatmap_smoothing`).
    forward(heatmaps (B, K+1, h, w)) -> (B, K+1, h, w).
    """

    def __init__(self, sigma: float, joint_channels: int) -> None:
        super().__init__()
        if not (math.isfinite(sigma) and sigma > 0) or joint_channels < 1:
            raise ValueError(f"need sigma > 0 cells and joint channels >= 1, got {sigma!r} and {joint_channels!r}")
        self.joint_channels = joint_channels
        self.radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
        x = torch.arange(-self.radius, self.radius + 1, dtype=torch.float64)
        taps = torch.exp(-0.5 * (x / sigma) ** 2)
        taps = (taps / taps.sum()).float()
        # Not persistent: a function of `sigma`, which the config rebuilds; checkpoints stay loadable either way.
        self.register_buffer("row", taps.view(1, 1, 1, -1).repeat(joint_channels, 1, 1, 1), persistent=False)
        self.register_buffer("column", taps.view(1, 1, -1, 1).repeat(joint_channels, 1, 1, 1), persistent=False)

    def forward(self, heatmaps: Tensor) -> Tensor:
        k, r = self.joint_channels, self.radius
        # Negative values (an MSE-trained map) are no evidence of a joint; without them the blurred maximum is at
        # least the centre tap squared times the maximum, so the rescale below stays bounded (<= 3.6 at 0.75 cells).
        joints = heatmaps[:, :k].clamp_min(0)  # (B, K, h, w)
        blurred = F.conv2d(joints, self.row.to(joints.dtype), padding=(0, r), groups=k)
        blurred = F.conv2d(blurred, self.column.to(joints.dtype), padding=(r, 0), groups=k)
        peak = joints.amax(dim=(-2, -1), keepdim=True)  # (B, K, 1, 1)
        blurred_peak = blurred.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(blurred.dtype).tiny)
        return torch.cat([blurred * (peak / blurred_peak), heatmaps[:, k:]], dim=1)
