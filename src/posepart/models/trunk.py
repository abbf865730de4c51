"""The shared VGG16 trunk (conv1_1..conv4_3, stride 8) plus OpenPose's CPM adapter convs.

Hard parameter sharing: every head (FCN segmentation, PAF pose stages) reads the feature maps this module returns.
`features` keeps torchvision's `vgg16().features` indices so ImageNet weights load by name (see `pretrained.py`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "silu"]  # the nonlinearity after every hidden conv: VGG16's ReLU, or SiLU (x sigmoid(x))
Pool = Literal["max", "blur"]  # the trunk's three 2x2 downsamplings: VGG16's max-pools, or `MaxBlurPool`


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (input pixels per output cell) of a named feature map, as detectron2's ShapeSpec."""

    channels: int
    stride: int


def scaled(channels: int, width: float) -> int:
    """`channels * width`, rounded, at least 1: how every module applies the `width` multiplier."""
    return max(1, int(round(channels * width)))


def init_conv_kaiming(module: nn.Module) -> None:
    """He-normal (fan_out, ReLU) weights and zero bias for every conv, as torchvision initialises VGG from scratch."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def use_activation(model: nn.Module, activation: Activation) -> nn.Module:
    """Every ReLU of `model` (the one after each hidden conv, `conv_block`) replaced by `activation`, in place; returns
    `model`. A swap after building rather than an argument threaded through every head: the layouts (and so the
    weights' names) stay those of VGG16 and OpenPose. From scratch, SiLU learns more per image than ReLU
    (docs/training.md, sixteenth round); ImageNet VGG16 weights were learnt with ReLU."""
    if activation not in get_args(Activation):
        raise ValueError(f"activation must be one of {get_args(Activation)}, got {activation!r}")
    if activation == "silu":
        for module in list(model.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(module, name, nn.SiLU(inplace=True))
    return model


# VGG16 configuration up to conv4_3: channel counts, "M" = 2x2 max-pool. Its layer indices in torchvision's
# `features` Sequential (conv, ReLU, ..., pool) are reproduced exactly by `_vgg_layers`.
VGG16_TO_CONV4_3: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
# torchvision `features` index of each conv above (conv1_1 .. conv4_3).
VGG16_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)


def conv_block(in_channels: int, out_channels: int, kernel: int, *, batch_norm: bool) -> list[nn.Module]:
    """conv (padding keeps the size) [+ BatchNorm] + ReLU: every hidden conv of trunk and heads.

    BatchNorm is off for the paper's models (and ImageNet VGG16 weights); on, it makes training from scratch (the
    CPU demo, no pretrained weights available) converge in minutes instead of hours.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, padding=kernel // 2, bias=not batch_norm)
    if batch_norm:
        return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return [conv, nn.ReLU(inplace=True)]


class MaxBlurPool(nn.Module):
    """A 2x2 max-pool made shift-invariant (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): the
    max over every 2x2 window at stride 1, then a [1, 2, 1] x [1, 2, 1] / 16 blur at stride 2, so that a feature
    moved by one pixel moves the pooled map smoothly instead of flipping between cells. Same output size as
    MaxPool2d(2, 2) (floor mode) and the same cell centres; no weights, so VGG16's still load. From scratch, on the
    CPU demo, it lifts the pose branch's AP by 0.019 and the mean IU by 0.006 on three seeds, for 6-12 % more
    training time (docs/training.md, twenty-sixth round); 2x2 average pools, at no cost, gain as much mean IU and
    tie on AP.

    Written as three pooling ops, not a depthwise blur convolution: the blur is two 2x2 averages (a [1, 1] average
    twice is [1, 2, 1] / 4), and the stride-1 max's padding of -inf repeats the edge row: on the CPU the three
    pools cost 60 % of the extra time of a depthwise convolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]  # floor mode: an odd last row or column is dropped
        peaks = F.max_pool2d(x, 2, stride=1, padding=1)  # (B, C, H + 1, W + 1): cell i = max(x[i - 1], x[i])
        return F.avg_pool2d(F.avg_pool2d(peaks, 2, stride=1), 2, stride=2)  # (B, C, H / 2, W / 2)


def _vgg_layers(cfg: tuple[int | str, ...], in_channels: int, width: float, batch_norm: bool, pool: Pool
                ) -> list[nn.Module]:
    """conv3x3 [+ BN] + ReLU per int, a 2x2 downsampling per "M" (MaxPool2d, floor mode, or `MaxBlurPool`):
    torchvision's vgg16 / vgg16_bn layout."""
    if pool not in get_args(Pool):
        raise ValueError(f"pool must be one of {get_args(Pool)}, got {pool!r}")
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2) if pool == "max" else MaxBlurPool())
        else:
            out = scaled(int(v), width)
            layers += conv_block(in_channels, out, 3, batch_norm=batch_norm)
            in_channels = out
    return layers


POOLS = (nn.MaxPool2d, MaxBlurPool)  # the layers of `_vgg_layers` that halve the resolution


class VGGTrunk(nn.Module):
    """VGG16 conv1_1..conv4_3 (three pools, stride 8) followed by conv4_3_CPM (512->256) and conv4_4_CPM (256->128).

    forward(x (B, 3, H, W)) -> {"pool1": (B, 64w, H/2, W/2), "conv2_2": (B, 128w, H/2, W/2),
                                "pool2": (B, 128w, H/4, W/4), "conv3_3": (B, 256w, H/4, W/4),
                                "pool3": (B, 256w, H/8, W/8), "conv4_3": (B, 512w, H/8, W/8),
                                "features": (B, 128w, H/8, W/8)}   (w = width; "features" only when cpm=True)
    conv4_3 is the split point for the FCN head (it continues with pool4, conv5 as in VGG16); "features" is the
    128-channel map OpenPose's stages read. The skips of the refinements above stride 8 (`posepart.models.refine`)
    are, per stride, the last conv block's output (conv3_3 at 4, conv2_2 at 2: FPN's choice) or the pooled map
    entering that block (pool2, pool1: FCN's form).
    `cpm=False` drops the adapter for segmentation-only models, which would otherwise pay for two convs nobody reads.
    """

    stride = 8

    def __init__(self, width: float = 1.0, *, cpm: bool = True, batch_norm: bool = False, pool: Pool = "max") -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = width
        self.batch_norm = batch_norm
        self.features = nn.Sequential(*_vgg_layers(VGG16_TO_CONV4_3, 3, width, batch_norm, pool))
        pools = [i for i, m in enumerate(self.features) if isinstance(m, POOLS)]
        # features index -> output name: every pool's output, and the (ReLU) output of the last conv before pools
        # 2 and 3, the deepest map at strides 2 and 4
        self._out_names = {i: f"pool{n}" for n, i in enumerate(pools, start=1)}
        self._out_names.update({pools[1] - 1: "conv2_2", pools[2] - 1: "conv3_3"})
        self._shapes: dict[str, ShapeSpec] = {}  # output name -> channels and stride, read off the layers as built
        channels, stride = 3, 1
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                channels = layer.out_channels
            elif isinstance(layer, POOLS):
                stride *= 2
            if i in self._out_names:
                self._shapes[self._out_names[i]] = ShapeSpec(channels, stride)
        assert stride == self.stride
        self._shapes["conv4_3"] = ShapeSpec(channels, stride)
        c4 = channels
        self.cpm: nn.Sequential | None = None
        if cpm:
            # OpenPose's adapter: reduce VGG's 512 channels to the 128 the pose stages expect (3x3 convs + ReLU).
            c_mid, c_out = scaled(256, width), scaled(128, width)
            kinds = ("conv", "bn", "relu") if batch_norm else ("conv", "relu")  # OpenPose's names: conv4_3_CPM, ...
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for name, c_in, c in (("4_3_CPM", c4, c_mid), ("4_4_CPM", c_mid, c_out)):
                layers.update((f"{kind}{name}", layer)
                              for kind, layer in zip(kinds, conv_block(c_in, c, 3, batch_norm=batch_norm), strict=True))
            self.cpm = nn.Sequential(layers)
            self._shapes["features"] = ShapeSpec(c_out, stride)
        init_conv_kaiming(self)

    def output_shapes(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every map `forward` returns (without running it)."""
        return dict(self._shapes)

    def vgg16_keys(self) -> dict[str, str]:
        """Own parameter-name prefix -> torchvision vgg16 state-dict prefix, for `load_vgg16_weights`."""
        return {f"features.{i}": f"features.{i}" for i in VGG16_CONV_INDICES}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        h = x  # (B, 3, H, W)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._out_names:
                # The next layer that acts in place (a ReLU) acts on a later conv's *output*, so this tensor stays
                # intact: a pool reads a conv block's output without changing it.
                out[self._out_names[i]] = h  # pool1, conv2_2 (B, 64w | 128w, H/2, W/2) .. pool3 (B, 256w, H/8, W/8)
        out["conv4_3"] = h  # (B, 512w, H/8, W/8), after ReLU
        if self.cpm is not None:
            out["features"] = self.cpm(h)  # (B, 128w, H/8, W/8)
        return out
