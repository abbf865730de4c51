"""`PosePartNet`: one shared trunk, heads split right after it (hard parameter sharing).

Seg-only, pose-only and joint models are all this class; a head that is absent simply leaves its lists empty in the
`ModelOutput`. Gradients from every present head's loss meet in the trunk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..heads import HeadMeta
from ..schema import Schema
from .fcn import FCN_INPUT_STRIDE, FCNHead
from .output import ModelOutput
from .pose import HeatmapSmoothing


class PosePartNet(nn.Module):
    """trunk -> {seg_head, pose_head}.

    trunk: maps an image (B, 3, H, W) to a dict of named feature maps and has `stride` / `output_shapes()`
           (a `VGGTrunk`).
    seg_head: called as seg_head(feats, (H, W)) -> part logits (B, P, H/s, W/s) with s = seg_head.output_stride
              (an `FCNHead`: s = 1), or None.
    pose_head: called as pose_head(feats["features"]) -> (heatmaps, pafs, parts) per-stage lists (a `PAFStages`,
               whose `parts` is non-empty only with its per-stage segmentation branch), or None.
    parts_refine: optional refinement of the pose head's per-stage part logits with the trunk's finer maps,
                  called as parts_refine(logits, feats) and with an `output_stride` (`posepart.models.refine`).
    pose_refine: optional {"heatmaps": ..., "pafs": ...} refinement of every stage's pose maps above stride 8,
                 each called as refine(maps, feats) and with an `output_stride` (`ResidualRefine`).
    schema, sigma, paf_width: what the heads were sized and are trained for; with the strides they make `meta`, the
                 model's `HeadMeta` (None when built by hand without a schema).
    heatmap_smoothing: > 0 blurs the joint heatmaps by a Gaussian of that many cells at inference (`HeatmapSmoothing`,
                 DARK's modulation; not in training mode, where the loss reads the raw maps); recorded in `meta`.
    forward(image (B, 3, H, W), H and W multiples of trunk.stride) -> ModelOutput.
    """

    def __init__(
        self,
        trunk: nn.Module,
        seg_head: nn.Module | None,
        pose_head: nn.Module | None,
        *,
        parts_refine: nn.Module | None = None,
        pose_refine: nn.ModuleDict | None = None,
        schema: Schema | None = None,
        sigma: float = HeadMeta.sigma,
        paf_width: float = HeadMeta.paf_width,
        heatmap_smoothing: float = HeadMeta.heatmap_smoothing,
    ) -> None:
        super().__init__()
        if seg_head is None and pose_head is None:
            raise ValueError("PosePartNet needs a seg_head, a pose_head, or both")
        stage_seg = bool(getattr(pose_head, "stage_seg", False))
        if seg_head is not None and stage_seg:
            raise ValueError("give either a seg_head or a pose_head with stage_seg=True, not both: both predict parts")
        if parts_refine is not None and not stage_seg:
            raise ValueError("parts_refine refines the pose head's per-stage part logits: it needs stage_seg=True")
        if pose_refine is not None and (pose_head is None or set(pose_refine) != {"heatmaps", "pafs"}):
            raise ValueError("pose_refine needs a pose_head and refines exactly its 'heatmaps' and 'pafs'")
        if heatmap_smoothing and (pose_head is None or schema is None):
            raise ValueError("heatmap_smoothing needs a pose_head and a schema (it blurs the joint channels)")
        _check_input_strides(trunk, seg_head, pose_head)
        self.trunk = trunk
        self.seg_head = seg_head
        self.pose_head = pose_head
        self.parts_refine = parts_refine
        self.pose_refine = pose_refine
        self.smooth_heatmaps = HeatmapSmoothing(heatmap_smoothing, schema.num_joints) if heatmap_smoothing else None
        self.schema = schema  # the dataset schema the heads were sized for (None when built by hand)
        self.stride: int = int(trunk.stride)  # the input's height and width must be multiples of it
        pose_stride = parts_stride = None  # what `meta` holds: the strides the heads' outputs came out at
        if pose_head is not None:
            pose_stride = int((pose_refine["heatmaps"] if pose_refine is not None else pose_head).output_stride)
        if seg_head is not None:
            parts_stride = int(seg_head.output_stride)
        elif stage_seg:
            parts_stride = int((parts_refine or pose_head).output_stride)  # type: ignore[union-attr]
        self.meta: HeadMeta | None = None
        if schema is not None:
            self.meta = HeadMeta(schema, pose_stride=pose_stride, parts_stride=parts_stride,
                                 sigma=float(sigma), paf_width=float(paf_width), input_multiple=self.stride,
                                 heatmap_smoothing=float(heatmap_smoothing))

    def drop_heads(self, *, pose: bool = False, parts: bool = False) -> None:
        """Remove the modules whose maps serve only the tasks named, so that whatever runs this model for the other
        task (an export, a Predictor of a model trained on one task) neither computes nor stores them. A per-stage
        part branch stays: the next stage reads its maps. `meta` keeps describing the model as built."""
        if parts:
            self.seg_head = self.parts_refine = None
        if pose:
            self.pose_refine = self.smooth_heatmaps = None
            if not getattr(self.pose_head, "stage_seg", False):
                self.pose_head = None

    @property
    def has_pose(self) -> bool:
        return self.pose_head is not None

    @property
    def has_parts(self) -> bool:
        return self.seg_head is not None or bool(getattr(self.pose_head, "stage_seg", False))

    def forward(self, image: Tensor) -> ModelOutput:
        if image.dim() != 4 or image.shape[1] != 3:  # (B, H, W, 3) or (3, H, W): before, a misleading size error
            raise ValueError(f"expected an image batch (B, 3, H, W), got shape {tuple(image.shape)}")
        if not image.is_floating_point():  # uint8 pixels: before, torch's "expected scalar type Byte" from the trunk
            raise ValueError(f"expected normalised float pixels (posepart.data.augment.normalize), got {image.dtype}")
        h, w = image.shape[-2], image.shape[-1]  # no int(): traced exports keep the input size dynamic
        if h % self.stride or w % self.stride:
            raise ValueError(f"input height and width must be multiples of {self.stride}, got {h}x{w}")
        feats = self.trunk(image)  # {"pool1", "conv2_2", "pool2", "conv3_3", "pool3", "conv4_3"[, "features"]}
        out = ModelOutput()
        if self.pose_head is not None:
            # T stages of (B, K+1, H/8, W/8), (B, 2L, H/8, W/8)[, (B, P, H/8, W/8)]
            out.heatmaps, out.pafs, out.parts = self.pose_head(feats["features"])
            if self.pose_refine is not None:  # the next stage was fed the stride-8 maps; refine what is output
                out.heatmaps = [self.pose_refine["heatmaps"](m, feats) for m in out.heatmaps]  # (B, K+1, H/s, W/s)
                out.pafs = [self.pose_refine["pafs"](m, feats) for m in out.pafs]  # (B, 2L, H/s, W/s)
            if getattr(self.pose_head, "heatmap_sigmoid", False):  # logits -> the maps everything downstream reads
                # float32 (a no-op unless under bf16 autocast): bf16 would round probabilities above ~0.99 to 1
                out.heatmaps = [torch.sigmoid(m.float()) for m in out.heatmaps]
            if self.smooth_heatmaps is not None and not self.training:  # what is decoded; the loss reads raw maps
                out.heatmaps = [self.smooth_heatmaps(m) for m in out.heatmaps]
            if self.parts_refine is not None:  # the next stage was fed the stride-8 logits; refine what is output
                out.parts = [self.parts_refine(p, feats) for p in out.parts]  # (B, P, H/s, W/s) each
        if self.seg_head is not None:
            out.parts = [self.seg_head(feats, (h, w))]  # one (B, P, H, W) logits tensor
        return out


def _check_input_strides(trunk: nn.Module, seg_head: nn.Module | None, pose_head: nn.Module | None) -> None:
    """Refuse heads built for another stride than the trunk's maps they read (a trunk of one's own, e.g. a ResNet to
    stride 16: before, the model's `meta` said stride 8 and its maps were decoded on the wrong grid). The pose stages
    keep their input's resolution and report it as their `output_stride`; the FCN head's upsampling factors assume
    conv4_3 at stride 8."""
    shapes = trunk.output_shapes() if hasattr(trunk, "output_shapes") else {}
    reads = [("features", "pose head", pose_head, getattr(pose_head, "output_stride", None))]
    if isinstance(seg_head, FCNHead):
        reads.append(("conv4_3", "FCN head", seg_head, FCN_INPUT_STRIDE))
    for name, what, head, stride in reads:
        if head is not None and stride is not None and name in shapes and int(shapes[name].stride) != int(stride):
            raise ValueError(f"the trunk's {name!r} map is at stride {shapes[name].stride}, but the {what} "
                             f"({type(head).__name__}) reads it as stride {stride}")
