"""The training settings: plain dataclasses, one per config section (what the code reads).

`posepart.engine.config` reads YAML into them and validates it with pydantic (strict types, no unknown keys, errors
naming the key); the checks that span fields live in each class's `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict

from posepart.data.augment import AugmentConfig
from posepart.data.mixing import TASKS
from posepart.engine.aggregation import AGGREGATORS
from posepart.errors import PosepartError
from posepart.heads import INPUT_SIZE, HeadMeta, OutputStride
from posepart.losses.multitask import TASK_OUTPUTS
from posepart.losses.pose import FOCAL_BETA, HeatmapLoss, MaskMode
from posepart.models.build import MODELS, ModelName, SegHead, builder_options, check_seg_head
from posepart.models.pose import MAX_STAGES
from posepart.models.pretrained import check_fits
from posepart.models.refine import RefineKind
from posepart.models.trunk import Activation, Pool
from posepart.schema import BUILTIN_SCHEMAS


class ConfigError(PosepartError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


def _number_as_text(value: Any) -> Any:
    """YAML reads `precision: 32` or `devices: 2` as a number; these settings are text (Lightning takes both)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# A text setting that YAML may have read as a number.
Text = Annotated[str, BeforeValidator(_number_as_text)]


@dataclass
class ModelConfig:
    name: ModelName = "joint_vgg16"
    stages: int | None = None  # pose stages; left out: the model's own (paf_vgg16 6, as OpenPose; joint_vgg16 2)
    seg_head: SegHead = "fcn32"
    seg_stride: OutputStride = 8  # seg_head "stage": 4 / 2 refine its logits with skips from the trunk
    pose_stride: OutputStride = 8  # heatmaps and PAFs: 4 / 2 refine every stage's maps with skips from the trunk
    # the refinements' form (`posepart.models.refine`): "deep" from conv3_3 / conv2_2, a 3x3 conv for parts as for
    # pose; "fcn" from pool2 / pool1, FCN's 1x1 scorers for parts (checkpoints before this key, `config_from_dict`)
    refine: RefineKind = "deep"
    heatmap_smoothing: float = HeadMeta.heatmap_smoothing  # cells: joint heatmaps blurred at inference (DARK)
    width: float = 1.0
    fc_width: int = 4096
    batch_norm: bool = False  # BatchNorm after every hidden conv: for training from scratch (no pretrained weights)
    activation: Activation = "relu"  # after every hidden conv: VGG16's relu, or silu (more learnt per image from scratch)
    pool: Pool = "max"  # the trunk's downsampling: VGG16's max-pools, or blur (shift-invariant: `MaxBlurPool`)
    pretrained: Path | None = None  # torchvision vgg16 state dict (.pth) or .safetensors, or imagenet (hub cache)
    # fine-tuning: start from a posepart model's weights (a .ckpt or an export-weights .safetensors), after
    # `pretrained`; every tensor of the same name and shape is taken (`module.initialise_from`), with a fresh
    # optimizer and schedule (a --resume continues a run instead)
    init: Path | None = None

    def __post_init__(self) -> None:
        if self.stages is None and self.name in MODELS:  # recorded as built: a run's config.yaml states the number
            self.stages = builder_options(self.name).get("stages")  # (an unknown name: pydantic's error names it)
        check_fits(self.pretrained, width=self.width, batch_norm=self.batch_norm)
        if self.name == "joint_vgg16":
            check_seg_head(self.seg_head, self.seg_stride)
        # before: these passed validation and --print-config, and failed when the model was built, with a traceback
        # (a model that does not take one only warns of it, `warn_unused_model_options`: a stored run of it loads)
        takes = builder_options(self.name) if self.name in MODELS else {}
        if "stages" in takes and self.stages is not None and not 1 <= self.stages <= MAX_STAGES:
            raise ValueError(f"stages: must be in 1..{MAX_STAGES}, got {self.stages}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"width: must be a finite number > 0, got {self.width}")
        if "fc_width" in takes and self.fc_width < 1:
            raise ValueError(f"fc_width: must be at least 1, got {self.fc_width}")
        if not (math.isfinite(self.heatmap_smoothing) and self.heatmap_smoothing >= 0):
            raise ValueError(f"heatmap_smoothing must be >= 0 output cells, got {self.heatmap_smoothing}")


SchemaName = Literal[tuple(BUILTIN_SCHEMAS)]  # type: ignore[valid-type]  # `posepart.schema.BUILTIN_SCHEMAS`
TaskName = Literal[TASKS]  # type: ignore[valid-type]  # what a source may supervise
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a source's name prefixes its metrics and names its files
# Names a source may not take: its name prefixes its metrics, and these are the run's own metric names
RESERVED_SOURCE_NAMES = {"seg", "pose", "heatmap", "paf", "total", "lr", "loss", "skipped", "images_per_sec", "log_var",
                         "pseudo", "weight"}


@dataclass
class DatasetPaths:
    """A dataset as a posepart ROOT, in the COCO release layout (annotations + images; parts optional), or, for an
    unlabelled source, a folder of images alone (`images`)."""

    root: Path | None = None
    annotations: Path | None = None
    images: Path | None = None
    parts: Path | None = None

    def __post_init__(self) -> None:
        if self.root is None and self.images is None:
            raise ValueError("give root, both annotations and images, or images alone (an unlabelled source)")

    @property
    def images_only(self) -> bool:
        """A folder of images without annotations (what an unlabelled source may be)."""
        return self.root is None and self.annotations is None

    def __str__(self) -> str:
        """As written in a config: the ROOT, and any part given on its own (for messages)."""
        given = [f"{name} {path}" for name, path in (("annotations", self.annotations), ("images", self.images),
                                                       ("parts", self.parts)) if path is not None]
        return ", ".join(([str(self.root)] if self.root is not None else []) + given)


def _refuse_images_only(settings: Any, allowed: tuple[str, ...] = ()) -> None:
    """A ValueError when `settings.train` or `.val` (not in `allowed`) is a folder of images alone: it has no labels,
    and only the train data of an unlabelled source of data.sources may be one."""
    for key in ("train", "val"):
        paths = getattr(settings, key)
        if isinstance(paths, DatasetPaths) and paths.images_only and key not in allowed:
            raise ValueError(f"{key}: a folder of images alone ({paths.images}) has no labels: only the train data "
                             f"of an unlabelled source (unlabelled: true) may be one")


@dataclass
class SourceConfig:
    """One dataset of a mixed run (docs/training.md, "Mixing datasets").

    `weight`: its share of each training epoch (relative to the other sources). `tasks`: what it supervises in
    training (default: whatever it labels); validation scores whatever its `val` data labels (what maps into the
    run's schema: a source declared without parts is scored on its other tasks where its val's part classes do
    not). `part_map` (source class
    -> target classes) and `ignore_parts` extend the built-in part tables. `unlabelled`: its training labels are
    ignored (or it is a folder of images, `train: {images: DIR}`); `train.self_training` supervises it with the
    teacher's pseudo-labels.
    """

    name: Text = ""
    train: DatasetPaths | Path | None = None
    val: DatasetPaths | Path | None = None
    weight: float = 1.0
    tasks: list[TaskName] | None = None
    part_map: dict[str, list[str]] = field(default_factory=dict)
    ignore_parts: list[str] = field(default_factory=list)
    unlabelled: bool = False

    def __post_init__(self) -> None:
        if self.unlabelled and (self.tasks is not None or self.part_map or self.ignore_parts):
            raise ValueError(f"source {self.name!r} is unlabelled: tasks, part_map and ignore_parts do not apply")
        _refuse_images_only(self, allowed=("train",) if self.unlabelled else ())
        if not SOURCE_NAME.fullmatch(self.name) or self.name in RESERVED_SOURCE_NAMES:
            raise ValueError(f"name: {self.name!r} must be a word of letters, digits, '_', '.', '-' and not one of "
                             f"{sorted(RESERVED_SOURCE_NAMES)} (it prefixes metric names)")
        if self.train is None and self.val is None:
            raise ValueError(f"source {self.name!r} has neither train nor val data")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight: must be a finite number >= 0, got {self.weight}")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            raise ValueError(f"tasks: must be a non-empty list without repeats, got {self.tasks}")


@dataclass
class DataConfig:
    train: DatasetPaths | Path | None = None  # a ROOT, or the COCO release layout {annotations: ..., images: ...}
    val: DatasetPaths | Path | None = None
    # target schema of the run: a built-in's name, or a dataset root / JSON file whose categories[0] (or the file
    # itself, a COCO category) gives it; default: data.train's, or the first source's
    schema: SchemaName | Path | None = None
    sources: list[SourceConfig] = field(default_factory=list)  # a mixed run (instead of data.train)
    epoch_size: int | None = None  # samples drawn per epoch over all sources; default: their total size
    input_size: int = INPUT_SIZE
    sigma: float = HeadMeta.sigma  # heatmap Gaussian sigma, input pixels (carried in the model's HeadMeta)
    paf_width: float = HeadMeta.paf_width  # PAF half-width, output cells (carried in the model's HeadMeta)
    batch_size: int = 8
    workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the augmentation's own settings object

    def __post_init__(self) -> None:
        _refuse_images_only(self)
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: names must be unique, got {names}")
        if self.epoch_size is not None and self.epoch_size <= 0:
            raise ValueError(f"epoch_size: must be positive, got {self.epoch_size}")
        multiple = HeadMeta.input_multiple  # the trunk's stride: every model's input multiple
        if self.input_size < multiple or self.input_size % multiple:
            raise ValueError(f"input_size: must be a positive multiple of {multiple}, got {self.input_size}")


@dataclass
class LossConfig:
    mask: MaskMode = "openpose"
    # "focal": CenterNet's penalty-reduced focal loss on the joint heatmaps (the model then ends them in a sigmoid)
    heatmap: HeatmapLoss = "mse"
    # focal: the exponent beta of the penalty reduction (1 - y)^beta near a joint (CenterNet: 4). A smaller beta
    # penalises values next to a joint's peak more, so fewer side maxima (the demo: 2, docs/training.md)
    focal_beta: float = FOCAL_BETA
    # fixed: sum_i w_i L_i; uncertainty: Kendall et al.'s learned weights; dwa: Dynamic Weight Average over periods of
    # dwa_period steps; gradnorm: learned weights that balance the tasks' gradient norms at the trunk's last layer
    weighting: Literal["fixed", "uncertainty", "dwa", "gradnorm"] = "fixed"
    # fixed: the weights w_i; uncertainty: each task's priority r_i (its gradient weighs r_i / L_i); dwa: fixed scales
    # under DWA's weights; gradnorm: not used (its weights are learned from 1)
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TASK_OUTPUTS, 1.0))
    dwa_period: int = 100  # DWA's "epoch": the loss means it compares are over this many training steps
    gradnorm_alpha: float = 1.5  # GradNorm's asymmetry: how hard slower-training tasks are pushed
    # Learning rate of a learnable weighting's parameters (default: optim.lr), without weight decay. Uncertainty
    # weights settle near s = log L; at a small LR that takes most of a short run, under-weighting the MSE tasks.
    weighting_lr: float | None = None
    # How the tasks' gradients combine into the step: "sum" (the gradient of the total, as usual) or a Jacobian-
    # descent aggregator of torchjd over one gradient row per task the batch supervises (a task no sample of the
    # batch labels gives no row): "upgrad" (projections onto the dual cone), "pcgrad", "mgda" (min-norm).
    aggregator: Literal[("sum", *AGGREGATORS)] = "sum"  # type: ignore[valid-type]  # `aggregation.AGGREGATORS`

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(TASK_OUTPUTS))
        if unknown:
            raise ValueError(f"weights: unknown tasks {unknown}; the tasks are {', '.join(TASK_OUTPUTS)}")
        if self.weighting == "gradnorm" and any(w != 1.0 for w in self.weights.values()):
            raise ValueError(f"weights: gradnorm learns the task weights (from 1): reset them (--set "
                             f"loss.weights=null), got {self.weights}")
        if self.weighting == "gradnorm" and self.aggregator != "sum":
            raise ValueError(f"weighting: gradnorm sets the task weights from the gradients itself; it does not "
                             f"combine with aggregator {self.aggregator!r}")
        if not (math.isfinite(self.focal_beta) and self.focal_beta > 0):
            raise ValueError(f"focal_beta: must be a finite number > 0, got {self.focal_beta}")
        if self.dwa_period < 1:
            raise ValueError(f"dwa_period: must be at least 1, got {self.dwa_period}")
        if not (math.isfinite(self.gradnorm_alpha) and self.gradnorm_alpha >= 0):
            raise ValueError(f"gradnorm_alpha: must be a finite number >= 0, got {self.gradnorm_alpha}")
        if self.weighting_lr is not None and not (math.isfinite(self.weighting_lr) and self.weighting_lr >= 0):
            raise ValueError(f"weighting_lr: must be a finite number >= 0 or null, got {self.weighting_lr}")  # 0: fixed
        floor = 1e-12 if self.weighting == "uncertainty" else 0.0  # a priority of 0 would drop the regulariser
        bad = {task: w for task, w in self.weights.items()
               if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= floor)}
        if bad:
            kind = "> 0 (priorities under uncertainty weighting)" if self.weighting == "uncertainty" else ">= 0"
            raise ValueError(f"weights: must be finite numbers {kind}, got {bad}")


@dataclass
class OptimConfig:
    # muon: Muon on the conv kernels, AdamW on biases and norms, one lr for both (`posepart.engine.optim.MuonAdamW`)
    name: Literal["sgd", "adamw", "muon"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd's
    muon_momentum: float = 0.95  # muon's (Nesterov), as torch.optim.Muon's default
    weight_decay: float = 5e-4
    schedule: Literal["constant", "cosine", "linear", "step"] = "cosine"  # after the warm-up
    warmup_steps: int = 0
    step_size: int = 10_000  # for "step": decay every this many optimizer steps
    gamma: float = 0.333

    def __post_init__(self) -> None:
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ValueError(f"muon_momentum: must be in [0, 1), got {self.muon_momentum}")


@dataclass
class SelfTrainingConfig:
    """Self-training on unlabelled sources (docs/training.md, "Self-training"): a teacher, the exponential moving
    average of the student, labels each unlabelled image's weak view (the geometric augmentation only); the student
    learns those pseudo-labels on the strong view (the same geometry plus photometric jitter)."""

    teacher_decay: float = 0.99  # the teacher averages the student's weights over ~1 / (1 - decay) steps
    weight: float = 1.0  # the pseudo-labelled samples' loss weight once ramped up (labelled samples weigh 1)
    ramp_steps: int = 500  # sigmoid ramp-up of that weight over the first steps (Laine & Aila 2017)
    flip_oks: float = 0.7  # a person is kept when its joints agree (OKS) with the person decoded from the mirror
    min_joints: int = 4  # ... and at least this many of its joints are found in both views
    part_threshold: float = 0.7  # a pixel's part pseudo-label is kept when the teacher's probability reaches this

    def __post_init__(self) -> None:
        if not 0.0 <= self.teacher_decay < 1.0:
            raise ValueError(f"teacher_decay: must be in [0, 1), got {self.teacher_decay}")
        for name, low in (("weight", 0), ("ramp_steps", 0), ("min_joints", 1)):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= low):  # nan and inf too
                raise ValueError(f"{name}: must be a finite number >= {low}, got {getattr(self, name)}")
        for name in ("flip_oks", "part_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in (0, 1], got {getattr(self, name)}")


@dataclass
class TrainConfig:
    max_epochs: int = 100
    max_steps: int = -1
    max_minutes: float | None = None
    threads: int | None = None  # torch's CPU threads for the run (null: torch's default, every core); a CPU run's
    # numbers depend on the count (README, "Reproducibility"), so config.yaml records it
    precision: Text = "32-true"  # Lightning's values, or "auto": bf16-mixed where native, else 32-true (train.py)
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and on GPU tensor cores
    compile: bool = False  # torch.compile the model (inductor): a one-off compile (~20-40 s) for faster steps
    ema_decay: float | None = None  # average the weights over ~1/(1 - decay) steps (validation and saved models)
    self_training: SelfTrainingConfig | None = None  # pseudo-labels for the unlabelled sources (needed by them)
    seed: int = 0
    deterministic: bool = False  # Lightning's: torch's deterministic algorithms (GPU kernels). A CPU run is
    # repeatable without it, for the same threads and instruction set (README, "Reproducibility")
    accelerator: Text = "auto"
    devices: Text = "auto"
    strategy: Text = "auto"
    num_nodes: int = 1
    val_every_epochs: int = 1
    best_metric: Text = "val/seg/mean_iou"
    best_mode: Literal["max", "min"] = "max"
    log_every_steps: int = 10
    val_images: int = 4  # prediction overlays logged per validation

    def __post_init__(self) -> None:
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in (0, 1) or null, got {self.ema_decay}")
        if not 0 <= self.seed < 2**32:  # numpy's and Lightning's seeding range (before: a traceback from Lightning)
            raise ValueError(f"seed: must be in 0..{2**32 - 1}, got {self.seed}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # read by pydantic (`config._adapter`), for every nested settings class too: strict types, no unknown keys
    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))


def to_plain(value: Any) -> Any:
    """Settings as YAML/JSON-ready values: nested dicts and lists, paths as text."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value
