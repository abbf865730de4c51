"""Execution-only transforms of a built model: the same function, computed faster. Training uses `channels_last_`;
inference (`posepart.inference.TorchBackend`) uses both. Tests check each against the untransformed model."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def channels_last_(model: nn.Module) -> nn.Module:
    """Re-strides `model`'s 4-D weights to channels_last in place (oneDNN's and cuDNN's fast convolution layout; feed
    channels_last inputs too) and returns it. Weights only: `model.to(memory_format=...)` would also re-stride 4-D
    buffers (the FCN's fixed upsampling kernel), which DDP's per-step buffer broadcast refuses as overlapping.

    Each weight gets channels_last's canonical strides, those its convolution's gradient comes back with:
    `.contiguous(memory_format=...)` leaves a 1x1 kernel as it is (its strides over the size-1 dims differ but count
    as either layout), and DDP, whose gradient buckets copy every weight's strides, then warned "Grad strides do not
    match bucket view strides" for each 1x1 conv at every step."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = torch.empty_like(param.data, memory_format=torch.channels_last).copy_(param.data)
    return model


def _conv_norm_pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(Sequential, i) wherever item i is a Conv2d and item i + 1 the BatchNorm2d on its output."""
    return [(seq, i) for seq in model.modules() if isinstance(seq, nn.Sequential) for i in range(len(seq) - 1)
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d)]


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """For inference: every BatchNorm2d right after a Conv2d in a Sequential (all of ours: `conv_block`) folded into
    that conv with its running statistics (`torch.nn.utils.fusion.fuse_conv_bn_eval`), sparing a pass over each
    activation (8 % of the w0.25 joint model's CPU forward). Returns an eval-mode copy with Identity in place of the
    folded norms, or `model` itself when it has none: the caller's model (and its checkpoint keys) stays as it was."""
    if not _conv_norm_pairs(model):
        return model
    folded = copy.deepcopy(model).eval()
    for seq, i in _conv_norm_pairs(folded):
        seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
        seq[i + 1] = nn.Identity()
    return folded
