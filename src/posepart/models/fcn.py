"""FCN-32s / 16s / 8s part-segmentation head (Long et al. 2015) on top of the VGG16 trunk's conv4_3.

The trunk stops at conv4_3 (stride 8), so this head owns the rest of VGG16: pool4, conv5_1..conv5_3, pool5, and the
fully-connected fc6/fc7 recast as convolutions (fc6 = 7x7 conv, fc7 = 1x1 conv), then a 1x1 class scorer.

Sizes. pool4/pool5 use `ceil_mode=True`, so for an input H (a multiple of 8) the maps have ceil(H/16) and ceil(H/32)
rows: 368 -> 46 (stride 8) -> 23 -> 12. Every cell keeps its window starting at a multiple of its stride, so cell i of
a stride-s map is centred at input row s*i + (s-1)/2, the conventions' grid. Each upsampling (`BilinearUpsample`) is a
transposed conv with kernel 2f, stride f, padding f/2 -- exactly aligned with that grid -- run on a replicate-padded
input and then cropped to the target size. That replaces FCN's "pad conv1 by 100 and crop with an offset" trick and
yields logits of exactly (B, P, H, W) for every H, W that is a multiple of 8 (not only of 32).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .trunk import conv_block, init_conv_kaiming, scaled

FCNVariant = Literal["fcn32", "fcn16", "fcn8"]
FCN_INPUT_STRIDE = 8  # the stride of the trunk's conv4_3 the head reads (pool4 and pool5 take it to 16 and 32)


def bilinear_kernel(size: int) -> Tensor:
    """(size, size) 2-D tent filter of FCN's `upsample_filt`: bilinear interpolation for kernel 2f, stride f."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = 1 - (og - centre).abs() / factor  # (size,)
    return filt[:, None] * filt[None, :]


class BilinearUpsample(nn.Module):
    """x`factor` bilinear upsampling (learnable: a transposed conv initialised to it), cropped to a target size.

    forward(x (B, C, h, w), out_hw) -> (B, C, out_h, out_w), out_h <= factor * h.
    learnable=True: a C x C transposed conv whose kernel starts diagonal (channel c only feeds channel c), as FCN's
    "surgery" initialisation of its intermediate x2 layers. learnable=False: the FCN reference nets' fixed final
    upsampling, computed as `F.interpolate` (what that kernel computes; no parameters): as a depthwise transposed
    conv with a 64x64 kernel it took 250 ms of the CPU demo FCN32's 500 ms step, and more under bf16 autocast.
    Replicate-padding the input by one cell makes the borders exact too: at initialisation the result equals
    `F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)` cropped to out_hw.
    """

    def __init__(self, channels: int, factor: int, *, learnable: bool = True) -> None:
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"factor must be an even integer >= 2, got {factor}")
        self.factor = factor
        self.up: nn.ConvTranspose2d | None = None
        if learnable:
            kernel = bilinear_kernel(2 * factor)  # (2f, 2f)
            self.up = nn.ConvTranspose2d(
                channels, channels, kernel_size=2 * factor, stride=factor, padding=factor // 2, bias=False
            )
            with torch.no_grad():
                self.up.weight.zero_()
                self.up.weight[torch.arange(channels), torch.arange(channels)] = kernel

    def forward(self, x: Tensor, out_hw: tuple[int, int]) -> Tensor:
        f = self.factor
        out_h, out_w = out_hw[0], out_hw[1]  # no int(): a traced export (ONNX, TorchScript) keeps them dynamic
        if out_h > f * x.shape[-2] or out_w > f * x.shape[-1]:
            raise ValueError(f"cannot upsample {tuple(x.shape[-2:])} by {f} to {(out_h, out_w)}")
        if self.up is None:
            y = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)  # (B, C, f*h, f*w)
            return y[:, :, :out_h, :out_w]
        y = self.up(pad_edges(x))  # (B, C, f*(h+2), f*(w+2)); drop the pad cells' f pixels, then crop to the target
        return y[:, :, f : f + out_h, f : f + out_w]


def pad_edges(x: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, h + 2, w + 2) with a 1-cell border copied from the edges, as F.pad(mode="replicate"),
    built from slices and cat: inductor (torch.compile) cannot differentiate replication_pad2d here (torch 2.14: the
    compiled backward fails one of inductor's stride assertions)."""
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)


def zero_scorer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 class scorer starting at zero: FCN's skip scorers, so a finer net starts as its coarser parent."""
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCNHead(nn.Module):
    """pool4 -> conv5 block -> pool5 -> fc6 (7x7) -> fc7 (1x1) -> score, with 0/1/2 skips and upsampling to (H, W).

    forward(feats, image_hw) reads feats["conv4_3"] (B, C4, H/8, W/8) and, for fcn8, feats["pool3"] (B, C3, H/8, W/8);
    returns part logits (B, num_classes, H, W).
    Init: conv5/fc6/fc7 He-normal (overwritten by `load_vgg16_weights`); score_fr normal(0, 0.01) so the trunk gets a
    segmentation gradient from the first step; the skip scorers score_pool4/score_pool3 start at zero (FCN paper: the
    finer net starts out computing exactly its coarser parent's output); upsamplings start bilinear.
    """

    output_stride = 1  # logits come back at input resolution

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        variant: FCNVariant = "fcn32",
        width: float = 1.0,
        fc_width: int = 4096,
        pool3_channels: int | None = None,
        dropout: float = 0.5,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if variant not in ("fcn32", "fcn16", "fcn8"):
            raise ValueError(f"variant must be 'fcn32', 'fcn16' or 'fcn8', got {variant!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.variant = variant
        self.width = width
        self.batch_norm = batch_norm  # (the weight loader's `check_fits` asks it)
        self.fc_width = fc_width
        c5 = scaled(512, width)

        # ceil_mode: keep the partial last window so non-multiples of 32 lose no rows (see the module docstring).
        self.pool4 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        # Without BatchNorm, indices 0, 2, 4 = torchvision vgg16 features.24, .26, .28 (conv5_1..conv5_3).
        self.conv5 = nn.Sequential(
            *conv_block(in_channels, c5, 3, batch_norm=batch_norm),
            *conv_block(c5, c5, 3, batch_norm=batch_norm),
            *conv_block(c5, c5, 3, batch_norm=batch_norm),
        )
        self.pool5 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        # VGG's classifier as convolutions: fc6 sees a 7x7 window of pool5 (padding 3 keeps the map size), fc7 is 1x1.
        fc6, fc7 = conv_block(c5, fc_width, 7, batch_norm=batch_norm), conv_block(fc_width, fc_width, 1,
                                                                                  batch_norm=batch_norm)
        self.fc = nn.Sequential(OrderedDict(
            fc6=fc6[0], **({"bn6": fc6[1]} if batch_norm else {}), relu6=fc6[-1], drop6=nn.Dropout(dropout),
            fc7=fc7[0], **({"bn7": fc7[1]} if batch_norm else {}), relu7=fc7[-1], drop7=nn.Dropout(dropout),
        ))
        init_conv_kaiming(self)
        self.score_fr = nn.Conv2d(fc_width, num_classes, kernel_size=1)
        nn.init.normal_(self.score_fr.weight, std=0.01)
        nn.init.zeros_(self.score_fr.bias)

        final_factor = {"fcn32": 32, "fcn16": 16, "fcn8": 8}[variant]
        if variant in ("fcn16", "fcn8"):
            self.score_pool4 = zero_scorer(in_channels, num_classes)  # scores pool4: the trunk's conv4_3 pooled
            self.upscore2 = BilinearUpsample(num_classes, 2)  # stride 32 -> 16, learnable as in the paper
        if variant == "fcn8":
            self.score_pool3 = zero_scorer(pool3_channels or scaled(256, width), num_classes)
            self.upscore_pool4 = BilinearUpsample(num_classes, 2)  # stride 16 -> 8
        self.upscore = BilinearUpsample(num_classes, final_factor, learnable=False)  # -> input resolution

    def vgg16_keys(self) -> dict[str, str]:
        """Own parameter-name prefix -> torchvision vgg16 prefix (fc6/fc7 are reshaped by the loader)."""
        return {
            "conv5.0": "features.24", "conv5.2": "features.26", "conv5.4": "features.28",
            "fc.fc6": "classifier.0", "fc.fc7": "classifier.3",
        }

    def forward(self, feats: dict[str, Tensor], image_hw: tuple[int, int]) -> Tensor:
        pool4 = self.pool4(feats["conv4_3"])  # (B, 512w, ceil(H/16), ceil(W/16))
        pool5 = self.pool5(self.conv5(pool4))  # (B, 512w, ceil(H/32), ceil(W/32))
        # float32 even under bf16 autocast: oneDNN's bf16 convolution backward returns non-finite gradients when the
        # map is 1-2 cells wide for this 7x7 kernel (torch 2.14; a 64 px input), and at stride 32 the block is cheap
        with torch.autocast(pool5.device.type, enabled=False):
            score = self.score_fr(self.fc(pool5.float()))  # (B, P, ceil(H/32), ceil(W/32))
        if self.variant in ("fcn16", "fcn8"):
            # Fuse with the stride-16 prediction: upsample x2, crop to pool4's size, add.
            score = self.upscore2(score, pool4.shape[-2:]) + self.score_pool4(pool4)  # (B, P, H/16, W/16)
        if self.variant == "fcn8":
            pool3 = feats["pool3"]
            score = self.upscore_pool4(score, pool3.shape[-2:]) + self.score_pool3(pool3)  # (B, P, H/8, W/8)
        return self.upscore(score, image_hw)  # (B, P, H, W)
