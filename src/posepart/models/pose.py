"""OpenPose's multi-stage, two-branch CNN (Cao et al. 2017, "Realtime Multi-Person 2D Pose Estimation using PAFs").

Stage 1 predicts joint heatmaps S^1 and part affinity fields L^1 from the trunk features F; every later stage t sees
concat(F, S^{t-1}, L^{t-1}) and refines both, with large 7x7 kernels to widen the receptive field. Every stage is
supervised (intermediate supervision), so the head returns all of them.

Optional per-stage part segmentation (`stage_seg=True`): a third branch per stage predicting part logits at stride 8,
fed back into the next stage like the other two, so pose and parts can refine each other stage by stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .fcn import BilinearUpsample, skip_output_stride, zero_scorer
from .trunk import ShapeSpec, conv_block, scaled

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
        if not 1 <= stages <= 6:
            raise ValueError(f"stages must be in 1..6 (the PAF paper uses 6), got {stages}")
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


class PoseRefine(nn.Module):
    """Stride-8 pose maps refined to stride 4 (or 2) with the trunk's finer maps (HigherHRNet's idea for bottom-up
    heatmaps, FCN's skip form): per skip, x = up2(x) + head(concat(up2(x), skip)).

    up2 is a learnable x2 `BilinearUpsample` (starts as bilinear interpolation); head is conv3x3 [+BN] + ReLU then a
    zero-initialised 1x1 conv, so at initialisation the output is the bilinear upsampling of the stride-8 maps and the
    finer detail is learned as a residual. Why: at stride 8 the joints of a small person are a cell or two apart and
    the joints of people who stand close merge (the decoded ground truth on 300 `benchmark` scenes at 368 px: AP 0.948
    at stride 8, 0.969 at 4; on the demo's 128 px scenes 0.922 and 0.974).
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
