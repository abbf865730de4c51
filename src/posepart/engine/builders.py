"""What a training config builds besides the data: the model (`build_from_config`, also what checkpoints rebuild)
and the weighting of its tasks' losses (`build_weighting`)."""

from __future__ import annotations

from typing import Any

import torch

from posepart.engine.settings import Config
from posepart.losses import DynamicWeightAverage, FixedWeighting, GradNormWeighting, TaskWeighting, UncertaintyWeighting
from posepart.models import build_model, builder_options
from posepart.schema import Schema


def build_from_config(config: Config, schema: Schema, *, pretrained: bool = True) -> torch.nn.Module:
    """The model named by `config.model`, passing each builder only the options it accepts."""
    m = config.model
    options: dict[str, Any] = {"stages": m.stages, "seg_head": m.seg_head, "seg_stride": m.seg_stride,
                               "pose_stride": m.pose_stride, "refine": m.refine,
                               "heatmap_smoothing": m.heatmap_smoothing,
                               "sigma": config.data.sigma,
                               "paf_width": config.data.paf_width, "heatmap_sigmoid": config.loss.heatmap == "focal",
                               "width": m.width, "fc_width": m.fc_width,
                               "batch_norm": m.batch_norm, "activation": m.activation, "pool": m.pool,
                               "pretrained": m.pretrained if pretrained else None}
    accepted = builder_options(m.name)
    return build_model(m.name, schema, **{k: v for k, v in options.items() if k in accepted})


LOSS_TERMS: dict[str, tuple[str, ...]] = {"parts": ("seg",), "pose": ("heatmap", "paf")}  # a task's loss terms


def model_tasks(model: torch.nn.Module) -> list[str]:
    """Loss tasks a model supervises ("seg", "heatmap", "paf")."""
    heads = {"parts": getattr(model, "has_parts", False), "pose": getattr(model, "has_pose", False)}
    return [term for task, terms in LOSS_TERMS.items() if heads[task] for term in terms]


def build_weighting(config: Config, tasks: list[str]) -> TaskWeighting:
    """The task weighting `config.loss.weighting` names, over the model's tasks."""
    loss = config.loss
    if loss.weighting == "uncertainty":
        return UncertaintyWeighting(tasks, priorities=loss.weights)
    if loss.weighting == "dwa":
        return DynamicWeightAverage(tasks, period=loss.dwa_period, scales=loss.weights)
    if loss.weighting == "gradnorm":
        return GradNormWeighting(tasks, alpha=loss.gradnorm_alpha)
    return FixedWeighting(loss.weights)


def last_shared_layer(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of the VGG body's last convolution (conv4_2 or conv4_3, before the pose-only CPM layers): where
    every task's gradient meets (GradNorm's W). A trunk without VGG's `features` gives its last convolution, which
    may serve one task alone (GradNorm's `balance` then names the task that sends it no gradient)."""
    convs = [m for m in getattr(model.trunk, "features", model.trunk).modules() if isinstance(m, torch.nn.Conv2d)]
    return list(convs[-1].parameters())
