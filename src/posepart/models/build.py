"""Model builders (torchvision style: schema first, keyword-only options) and the name -> builder registry.

Every builder returns a `PosePartNet` sized from the schema (`heatmap_channels`, `paf_channels`, `num_parts`):
    fcn32_vgg16 / fcn16_vgg16 / fcn8_vgg16   part segmentation only (FCN head on conv4_3)
    paf_vgg16                                pose only (OpenPose PAF stages on conv4_4_CPM)
    joint_vgg16                              both, sharing the trunk; seg_head "stage" = per-stage parts branch
`width` scales every channel count of trunk and heads (0.25 for CPU demos); `fc_width` sets the FCN's fc6/fc7 width
explicitly (4096 = VGG16's, needed to reuse its classifier weights). `batch_norm` adds BatchNorm after every hidden
conv (torchvision's vgg16_bn layout in the trunk): off in the paper's models, on for training from scratch.
`activation` follows every hidden conv: "relu" (VGG16's, the paper's) or "silu" (`use_activation`: the CPU demo's).
`pool` is the trunk's downsampling: "max" (VGG16's max-pools) or "blur" (`MaxBlurPool`: the CPU demo's joint network).
`pretrained` is a torchvision vgg16 state-dict file, or "imagenet" (`pretrained.resolve_weights`: torch's hub cache);
only valid at width 1.0 without BN.
Pose models take `pose_stride` (8, or 4 / 2: every stage's maps refined with skips from the trunk's finer maps;
`refine` picks their form, `posepart.models.refine`) and
the target geometry they are trained for (`sigma`, `paf_width`), and `heatmap_smoothing` (cells: DARK's blur of the
joint heatmaps at inference, `HeatmapSmoothing`); all of it ends up in `model.meta` (`HeadMeta`).
`heatmap_sigmoid` puts a sigmoid on the heatmaps (for the focal loss, `loss.heatmap: focal`).
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Literal, get_args

import numpy as np
from torch import nn

from ..errors import UsageError
from ..heads import OUTPUT_STRIDES, HeadMeta
from ..schema import Schema
from .fcn import FCNHead, FCNVariant
from .joint import PosePartNet
from .pose import PAFStages
from .pretrained import check_fits, load_vgg16_weights, resolve_weights
from .refine import RefineKind, ResidualRefine, SkipRefine, refinement_skips
from .trunk import Activation, Pool, VGGTrunk, scaled, use_activation

SegHead = Literal["fcn32", "fcn16", "fcn8", "stage"]


class SchemaMismatchError(UsageError):
    """A model that predicts something the schema does not have (joints, skeleton edges or part classes); `lacks`
    says which task's labels: "pose" or "parts"."""

    def __init__(self, message: str, *, lacks: str = "pose") -> None:
        super().__init__(message)
        self.lacks = lacks


class MissingLimbsError(SchemaMismatchError):
    """A pose model on a schema whose joints no limb joins: what is missing is the schema's own skeleton."""


def _require(schema: Schema, model: str, *, pose: bool = False, parts: bool = False) -> None:
    if pose and schema.num_joints > 0 and schema.num_limbs == 0:
        raise MissingLimbsError(f"{model} needs skeleton edges: its PAF heads predict a field for each limb, and "
                                f"{schema.name!r} has {schema.num_joints} joints and no limb between them; list the "
                                f"limbs in the people's category's \"skeleton\" (1-based pairs of joints)")
    if pose and not (schema.num_joints > 0 and schema.num_limbs > 0):
        raise SchemaMismatchError(f"{model} needs a schema with joints and skeleton edges; {schema.name!r} has "
                                  f"{schema.num_joints} joints and {schema.num_limbs} edges")
    if parts and not schema.has_parts:
        raise SchemaMismatchError(f"{model} needs a schema with part classes besides background; "
                                  f"{schema.name!r} has {schema.part_classes or 'none'}", lacks="parts")


def _fcn_head(trunk: VGGTrunk, schema: Schema, variant: FCNVariant, width: float, fc_width: int) -> FCNHead:
    shapes = trunk.output_shapes()
    return FCNHead(shapes["conv4_3"].channels, schema.num_parts, variant=variant, width=width, fc_width=fc_width,
                   pool3_channels=shapes["pool3"].channels, batch_norm=trunk.batch_norm)


def _pose_head(trunk: VGGTrunk, schema: Schema, stages: int, width: float, stage_seg: bool,
               heatmap_sigmoid: bool) -> PAFStages:
    return PAFStages(trunk.output_shapes()["features"].channels, heatmap_channels=schema.heatmap_channels,
                     paf_channels=schema.paf_channels, stages=stages, width=width, stage_seg=stage_seg,
                     part_channels=schema.num_parts if stage_seg else 0, batch_norm=trunk.batch_norm,
                     heatmap_sigmoid=heatmap_sigmoid)


def _pose_refine(trunk: VGGTrunk, schema: Schema, pose_stride: int, width: float,
                 refine: RefineKind) -> nn.ModuleDict | None:
    """`ResidualRefine` of heatmaps and PAFs to `pose_stride` (None at the trunk's stride 8)."""
    if pose_stride not in OUTPUT_STRIDES:
        raise ValueError(f"pose_stride must be one of {list(OUTPUT_STRIDES)}, got {pose_stride!r}")
    skips = refinement_skips(trunk.output_shapes(), pose_stride, refine)
    if not skips:
        return None
    return nn.ModuleDict({
        name: ResidualRefine(channels, trunk.stride, skips, hidden=scaled(128, width), batch_norm=trunk.batch_norm)
        for name, channels in (("heatmaps", schema.heatmap_channels), ("pafs", schema.paf_channels))
    })


def _check_options(**options: Any) -> None:
    """A builder's numbers and switches, checked before anything is built. Before, a NaN or string width failed in
    torch's words, fc_width 0 at the first forward, and `batch_norm="no"` built a network with BatchNorm."""
    for name, value in options.items():
        if name in ("batch_norm", "heatmap_sigmoid"):
            ok, wanted = isinstance(value, (bool, np.bool_)), "True or False"
        elif name in ("fc_width", "stages", "pose_stride", "seg_stride"):
            ok, wanted = isinstance(value, Integral) and not isinstance(value, bool) and value >= 1, "an integer >= 1"
        else:  # width (> 0), heatmap_smoothing (>= 0 cells)
            lowest = 0.0 if name == "heatmap_smoothing" else None
            ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and (
                value >= lowest if lowest is not None else value > 0)
            wanted = "a finite number " + (">= 0" if lowest is not None else "> 0")
        if not ok:
            raise ValueError(f"{name} must be {wanted}, got {value!r}")


def _parts_refine(trunk: VGGTrunk, schema: Schema, seg_stride: int, width: float,
                  refine: RefineKind) -> nn.Module | None:
    """The per-stage part logits' refinement to `seg_stride` (None at stride 8): `ResidualRefine` ("deep"), FCN's
    `SkipRefine` ("fcn")."""
    skips = refinement_skips(trunk.output_shapes(), seg_stride, refine)
    if not skips:
        return None
    if refine == "fcn":
        return SkipRefine(schema.num_parts, trunk.stride, skips)
    return ResidualRefine(schema.num_parts, trunk.stride, skips, hidden=scaled(128, width), batch_norm=trunk.batch_norm)


def _finish(model: PosePartNet, pretrained: Path | str | None, activation: Activation) -> PosePartNet:
    if pretrained is not None:
        load_vgg16_weights(model, resolve_weights(pretrained))
    return use_activation(model, activation)


def _fcn(variant: FCNVariant, schema: Schema, width: float, fc_width: int, pretrained: Path | str | None,
         batch_norm: bool, activation: Activation, pool: Pool) -> PosePartNet:
    _check_options(width=width, fc_width=fc_width, batch_norm=batch_norm)
    check_fits(pretrained, width=width, batch_norm=batch_norm)  # before building and reading
    _require(schema, f"{variant}_vgg16", parts=True)
    trunk = VGGTrunk(width=width, cpm=False, batch_norm=batch_norm, pool=pool)  # no pose head reads the CPM adapter
    model = PosePartNet(trunk, _fcn_head(trunk, schema, variant, width, fc_width), None, schema=schema)
    return _finish(model, pretrained, activation)


def fcn32_vgg16(schema: Schema, *, width: float = 1.0, fc_width: int = 4096, batch_norm: bool = False,
                activation: Activation = "relu", pool: Pool = "max", pretrained: Path | str | None = None
                ) -> PosePartNet:
    """FCN-32s: one x32 upsampling of the stride-32 scores.
    Options as `joint_vgg16`'s (width, fc_width, batch_norm, activation, pool, pretrained)."""
    return _fcn("fcn32", schema, width, fc_width, pretrained, batch_norm, activation, pool)


def fcn16_vgg16(schema: Schema, *, width: float = 1.0, fc_width: int = 4096, batch_norm: bool = False,
                activation: Activation = "relu", pool: Pool = "max", pretrained: Path | str | None = None
                ) -> PosePartNet:
    """FCN-16s: FCN-32s scores x2 + a pool4 skip, then x16.
    Options as `joint_vgg16`'s (width, fc_width, batch_norm, activation, pool, pretrained)."""
    return _fcn("fcn16", schema, width, fc_width, pretrained, batch_norm, activation, pool)


def fcn8_vgg16(schema: Schema, *, width: float = 1.0, fc_width: int = 4096, batch_norm: bool = False,
               activation: Activation = "relu", pool: Pool = "max", pretrained: Path | str | None = None
               ) -> PosePartNet:
    """FCN-8s: FCN-16s scores x2 + a pool3 skip, then x8.
    Options as `joint_vgg16`'s (width, fc_width, batch_norm, activation, pool, pretrained)."""
    return _fcn("fcn8", schema, width, fc_width, pretrained, batch_norm, activation, pool)


def paf_vgg16(schema: Schema, *, stages: int = 6, pose_stride: int = 8, width: float = 1.0, batch_norm: bool = False,
              activation: Activation = "relu", pool: Pool = "max",
              pretrained: Path | str | None = None, sigma: float = HeadMeta.sigma,
              paf_width: float = HeadMeta.paf_width, heatmap_sigmoid: bool = False,
              heatmap_smoothing: float = HeadMeta.heatmap_smoothing,
              refine: RefineKind = "deep") -> PosePartNet:
    """OpenPose (Cao et al. 2017): VGG16 to conv4_3, CPM adapter, `stages` two-branch stages (heatmaps, PAFs).

    stages: 1-6 stages, each refining the previous one's maps; pose_stride: 8, or 4 / 2 with every stage's maps
    refined by `refine` ("deep" or "fcn") from the trunk's finer maps; width: every channel count's multiple;
    batch_norm, activation ("relu" / "silu"), pool ("max" / "blur"): the trunk's and heads' layers; pretrained: a
    torchvision vgg16 file or "imagenet" (width 1, no BatchNorm); sigma (input px) and paf_width (output cells): the
    targets it is trained on, which its decoder reads; heatmap_sigmoid: heatmaps as probabilities (for
    `loss.heatmap: focal`); heatmap_smoothing: a blur of the joint heatmaps at inference (cells). All of the maps'
    geometry ends up in `model.meta`.
    """
    _check_options(stages=stages, pose_stride=pose_stride, width=width, batch_norm=batch_norm,
                   heatmap_sigmoid=heatmap_sigmoid, heatmap_smoothing=heatmap_smoothing)
    check_fits(pretrained, width=width, batch_norm=batch_norm)  # before building and reading
    _require(schema, "paf_vgg16", pose=True)
    trunk = VGGTrunk(width=width, batch_norm=batch_norm, pool=pool)
    model = PosePartNet(trunk, None, _pose_head(trunk, schema, stages, width, False, heatmap_sigmoid),
                        pose_refine=_pose_refine(trunk, schema, pose_stride, width, refine), schema=schema,
                        sigma=sigma,
                        paf_width=paf_width, heatmap_smoothing=heatmap_smoothing)
    return _finish(model, pretrained, activation)


def check_seg_head(seg_head: str, seg_stride: int) -> None:
    """`joint_vgg16`'s part head: a ValueError for a kind or stride it cannot build (configs check it up front)."""
    if seg_head not in get_args(SegHead):
        raise ValueError(f"seg_head must be one of {', '.join(map(repr, get_args(SegHead)))}, got {seg_head!r}")
    if seg_stride not in OUTPUT_STRIDES or (seg_stride != 8 and seg_head != "stage"):
        raise ValueError(f"seg_stride must be one of {sorted(OUTPUT_STRIDES)} and other than 8 only with "
                         f"seg_head='stage', got {seg_stride} with {seg_head!r}")


def joint_vgg16(schema: Schema, *, stages: int = 2, seg_head: SegHead = "fcn32", seg_stride: int = 8,
                pose_stride: int = 8, width: float = 1.0, fc_width: int = 4096, batch_norm: bool = False,
                activation: Activation = "relu", pool: Pool = "max",
                pretrained: Path | str | None = None, sigma: float = HeadMeta.sigma,
                paf_width: float = HeadMeta.paf_width, heatmap_sigmoid: bool = False,
                heatmap_smoothing: float = HeadMeta.heatmap_smoothing,
                refine: RefineKind = "deep") -> PosePartNet:
    """Pose stages and part segmentation on one shared trunk (hard parameter sharing).

    seg_head "fcn32"/"fcn16"/"fcn8": an FCN head split off at conv4_3 (full-resolution logits);
    "stage": a third branch in every pose stage (stride-8 logits per stage, fed forward); fc_width is then unused.
    seg_stride (seg_head "stage" only): 8, or 4 / 2 to refine each stage's output logits with skips from the trunk's
    finer maps (`refine`: "deep" or "fcn", `posepart.models.refine`, as for the pose maps). fc_width: the FCN head's
    fc6/fc7 channels (4096: VGG16's, to load its classifier). The other options are `paf_vgg16`'s.
    """
    _check_options(stages=stages, seg_stride=seg_stride, pose_stride=pose_stride, width=width, fc_width=fc_width,
                   batch_norm=batch_norm, heatmap_sigmoid=heatmap_sigmoid, heatmap_smoothing=heatmap_smoothing)
    check_seg_head(seg_head, seg_stride)
    check_fits(pretrained, width=width, batch_norm=batch_norm)  # before building and reading
    _require(schema, "joint_vgg16", pose=True, parts=True)
    trunk = VGGTrunk(width=width, batch_norm=batch_norm, pool=pool)
    pose = dict(pose_refine=_pose_refine(trunk, schema, pose_stride, width, refine), schema=schema, sigma=sigma,
                paf_width=paf_width, heatmap_smoothing=heatmap_smoothing)
    if seg_head == "stage":
        parts_refine = _parts_refine(trunk, schema, seg_stride, width, refine)  # built first: the seeded init order
        model = PosePartNet(trunk, None, _pose_head(trunk, schema, stages, width, True, heatmap_sigmoid),
                            parts_refine=parts_refine, **pose)
    else:
        fcn = _fcn_head(trunk, schema, seg_head, width, fc_width)
        model = PosePartNet(trunk, fcn, _pose_head(trunk, schema, stages, width, False, heatmap_sigmoid), **pose)
    return _finish(model, pretrained, activation)


MODELS: dict[str, Callable[..., PosePartNet]] = {
    "fcn32_vgg16": fcn32_vgg16,
    "fcn16_vgg16": fcn16_vgg16,
    "fcn8_vgg16": fcn8_vgg16,
    "paf_vgg16": paf_vgg16,
    "joint_vgg16": joint_vgg16,
}
ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]  # what a config's model.name may say


def builder_options(name: str) -> dict[str, Any]:
    """The keyword options the builder of model `name` takes, with their defaults: what a config may set for that
    model, and what it builds where the config leaves an option out (one place states each default)."""
    return {key: option.default for key, option in inspect.signature(MODELS[name]).parameters.items()
            if option.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, schema: Schema, **kwargs: Any) -> PosePartNet:
    """`MODELS[name](schema, **kwargs)`; an unknown name raises KeyError listing the known ones."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
    return builder(schema, **kwargs)
