"""Training configuration: YAML files validated into typed dataclasses by pydantic.

The settings are plain dataclasses (what the code reads); pydantic validates a YAML/JSON mapping into them, strictly
(no "3" for 3, no "yes" for true, no unknown keys), and every error is one ConfigError naming the key
(`model.stagse: unknown key; known: ...`, `train.max_epochs: Input should be a valid integer, got 'x'`).
`--set a.b=value` overrides parse their value with YAML's safe loader (never eval) and are validated the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import yaml
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from posepart.data.augment import AugmentConfig
from posepart.errors import PosepartError
from posepart.heads import HeadMeta
from posepart.models.pretrained import check_fits


class _YamlLoader(yaml.SafeLoader):
    """YAML's safe loader (no tags, never code), reading 1e-3 as a number as YAML 1.2 does (YAML 1.1 wants a dot)."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                  list("-+.0123456789"))


def read_yaml(text: str) -> Any:
    """Parse config YAML (files and `--set` values) with `_YamlLoader`."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(PosepartError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


def _number_as_text(value: Any) -> Any:
    """YAML reads `precision: 32` or `devices: 2` as a number; these settings are text (Lightning takes both)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# A text setting that YAML may have read as a number.
Text = Annotated[str, BeforeValidator(_number_as_text)]


@dataclass
class ModelConfig:
    name: Literal["fcn32_vgg16", "fcn16_vgg16", "fcn8_vgg16", "paf_vgg16", "joint_vgg16"] = "joint_vgg16"
    stages: int = 2
    seg_head: Literal["fcn32", "fcn16", "fcn8", "stage"] = "fcn32"
    seg_stride: Literal[8, 4, 2] = 8  # seg_head "stage": 4 / 2 refine its logits with skips from pool2 / pool1
    pose_stride: Literal[8, 4, 2] = 8  # heatmaps and PAFs: 4 / 2 refine every stage's maps with pool2 / pool1 skips
    width: float = 1.0
    fc_width: int = 4096
    batch_norm: bool = False  # BatchNorm after every hidden conv: for training from scratch (no pretrained weights)
    pretrained: Path | None = None  # torchvision vgg16 state dict (.pth) or .safetensors, or imagenet (hub cache)

    def __post_init__(self) -> None:
        check_fits(self.pretrained, width=self.width, batch_norm=self.batch_norm)


SchemaName = Literal["pascal_person_part", "coco", "mpii", "lip", "cihp"]  # `posepart.schema.Schema` classmethods
TaskName = Literal["pose", "parts"]
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED_NAMES = {"seg", "pose", "heatmap", "paf", "total", "lr", "loss", "skipped", "images_per_sec", "log_var",
                   "pseudo"}


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


@dataclass
class SourceConfig:
    """One dataset of a mixed run (docs/training.md, "Mixing datasets").

    `weight`: its share of each training epoch (relative to the other sources). `tasks`: what it supervises in
    training (default: whatever it labels); validation scores whatever its `val` data labels. `part_map` (source class
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
        for key in ("train", "val"):
            paths = getattr(self, key)
            if isinstance(paths, DatasetPaths) and paths.images_only and not (key == "train" and self.unlabelled):
                raise ValueError(f"{key}: a folder of images alone ({paths.images}) has no labels: only the train "
                                 f"data of an unlabelled source (unlabelled: true) may be one")
        if not _SOURCE_NAME.fullmatch(self.name) or self.name in _RESERVED_NAMES:
            raise ValueError(f"name: {self.name!r} must be a word of letters, digits, '_', '.', '-' and not one of "
                             f"{sorted(_RESERVED_NAMES)} (it prefixes metric names)")
        if self.train is None and self.val is None:
            raise ValueError(f"source {self.name!r} has neither train nor val data")
        if not self.weight >= 0:
            raise ValueError(f"weight: must be >= 0, got {self.weight}")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            raise ValueError(f"tasks: must be a non-empty list without repeats, got {self.tasks}")


@dataclass
class DataConfig:
    train: Path | None = None
    val: Path | None = None
    schema: SchemaName | None = None  # target schema of the run; default: data.train's, or the first source's
    sources: list[SourceConfig] = field(default_factory=list)  # a mixed run (instead of data.train)
    epoch_size: int | None = None  # samples drawn per epoch over all sources; default: their total size
    input_size: int = 368
    sigma: float = HeadMeta.sigma  # heatmap Gaussian sigma, input pixels (carried in the model's HeadMeta)
    paf_width: float = HeadMeta.paf_width  # PAF half-width, output cells (carried in the model's HeadMeta)
    batch_size: int = 8
    workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the augmentation's own settings object

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: names must be unique, got {names}")
        if self.epoch_size is not None and self.epoch_size <= 0:
            raise ValueError(f"epoch_size: must be positive, got {self.epoch_size}")


@dataclass
class LossConfig:
    mask: Literal["openpose", "seed"] = "openpose"
    # "focal": CenterNet's penalty-reduced focal loss on the joint heatmaps (the model then ends them in a sigmoid)
    heatmap: Literal["mse", "focal"] = "mse"
    # focal: the exponent beta of the penalty reduction (1 - y)^beta near a joint (CenterNet: 4). A smaller beta
    # penalises values next to a joint's peak more, so fewer side maxima (the demo: 2, docs/training.md)
    focal_beta: float = 4.0
    # fixed: sum_i w_i L_i; uncertainty: Kendall et al.'s learned weights; dwa: Dynamic Weight Average over periods of
    # dwa_period steps; gradnorm: learned weights that balance the tasks' gradient norms at the trunk's last layer
    weighting: Literal["fixed", "uncertainty", "dwa", "gradnorm"] = "fixed"
    # fixed: the weights w_i; uncertainty: each task's priority r_i (its gradient weighs r_i / L_i); dwa: fixed scales
    # under DWA's weights; gradnorm: not used (its weights are learned from 1)
    weights: dict[str, float] = field(default_factory=lambda: {"seg": 1.0, "heatmap": 1.0, "paf": 1.0})
    dwa_period: int = 100  # DWA's "epoch": the loss means it compares are over this many training steps
    gradnorm_alpha: float = 1.5  # GradNorm's asymmetry: how hard slower-training tasks are pushed
    # Learning rate of a learnable weighting's parameters (default: optim.lr), without weight decay. Uncertainty
    # weights settle near s = log L; at a small LR that takes most of a short run, under-weighting the MSE tasks.
    weighting_lr: float | None = None
    # How the tasks' gradients combine into the step: "sum" (the gradient of the total, as usual) or a Jacobian-
    # descent aggregator of torchjd over one gradient row per task the batch supervises (a task no sample of the
    # batch labels gives no row): "upgrad" (projections onto the dual cone), "pcgrad", "mgda" (min-norm).
    aggregator: Literal["sum", "upgrad", "pcgrad", "mgda"] = "sum"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - {"seg", "heatmap", "paf"})
        if unknown:
            raise ValueError(f"weights: unknown tasks {unknown}; the tasks are seg, heatmap, paf")
        if self.weighting == "gradnorm" and any(w != 1.0 for w in self.weights.values()):
            raise ValueError(f"weights: gradnorm learns the task weights (from 1); remove {self.weights}")
        if self.weighting == "gradnorm" and self.aggregator != "sum":
            raise ValueError(f"weighting: gradnorm sets the task weights from the gradients itself; it does not "
                             f"combine with aggregator {self.aggregator!r}")
        if not self.focal_beta > 0:
            raise ValueError(f"focal_beta must be > 0, got {self.focal_beta}")
        if self.dwa_period < 1 or not self.gradnorm_alpha >= 0:
            raise ValueError("dwa_period must be >= 1 and gradnorm_alpha >= 0")
        floor = 1e-12 if self.weighting == "uncertainty" else 0.0  # a priority of 0 would drop the regulariser
        bad = {task: w for task, w in self.weights.items() if not (isinstance(w, (int, float)) and w >= floor)}
        if bad:
            kind = "> 0 (priorities under uncertainty weighting)" if self.weighting == "uncertainty" else ">= 0"
            raise ValueError(f"weights: must be numbers {kind}, got {bad}")


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = 0
    step_size: int = 10_000  # for "step": decay every this many optimizer steps
    gamma: float = 0.333


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
        if self.weight < 0 or self.ramp_steps < 0 or self.min_joints < 1:
            raise ValueError("weight and ramp_steps must be >= 0 and min_joints >= 1")
        if not (0.0 < self.flip_oks <= 1.0 and 0.0 < self.part_threshold <= 1.0):
            raise ValueError("flip_oks and part_threshold must be in (0, 1]")


@dataclass
class TrainConfig:
    max_epochs: int = 100
    max_steps: int = -1
    max_minutes: float | None = None
    precision: Text = "32-true"
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and on GPU tensor cores
    compile: bool = False  # torch.compile the model (inductor): a one-off compile (~20-40 s) for faster steps
    ema_decay: float | None = None  # average the weights over ~1/(1 - decay) steps (validation and saved models)
    self_training: SelfTrainingConfig | None = None  # pseudo-labels for the unlabelled sources (needed by them)
    seed: int = 0
    deterministic: bool = False
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


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # read by pydantic (`_adapter`), for every nested settings class too: strict types, no unknown keys
    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


@functools.cache
def _adapter() -> TypeAdapter:
    """pydantic's validator of `Config`: strict types (no "3" for 3, no "yes" for true) and no unknown keys."""
    return TypeAdapter(Config)


def _settings_fields(hints: list[Any]) -> tuple[list[Any], list[Any]]:
    """(settings classes, dict value types) reachable from type hints through Optional / Union / list / Annotated."""
    classes, dicts, stack = [], [], list(hints)
    while stack:
        t = stack.pop()
        if dataclasses.is_dataclass(t):
            classes.append(t)
        elif typing.get_origin(t) is dict:
            dicts.append(typing.get_args(t)[1])
        elif typing.get_origin(t) is Annotated:
            stack.append(typing.get_args(t)[0])
        else:
            stack.extend(typing.get_args(t))
    return classes, dicts


def _error_key(loc: tuple[Any, ...]) -> tuple[str, type | None]:
    """A pydantic error location as the key users write (`data.sources[1].train`), without pydantic's union-member
    tags, and the settings class whose field (or unknown key) it names last."""
    key, owner, candidates = "", None, [Config]
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            continue
        classes, dicts = _settings_fields(candidates)
        named = [c for c in classes if part in {f.name for f in dataclasses.fields(c)}]
        if named:
            owner = named[0]
            candidates = [typing.get_type_hints(owner, include_extras=True)[part]]
        elif any(c.__name__ == part for c in classes):  # the union member pydantic tried
            candidates = [c for c in classes if c.__name__ == part]
            continue
        elif dicts:
            candidates = dicts
        elif classes and part == loc[-1] and part.isidentifier():  # a key no settings class has
            owner = classes[0]
        else:
            continue  # another pydantic tag (`lax-or-strict[...]`, `str`)
        key = f"{key}.{part}" if key else str(part)
    return key, owner


def _config_error(err: ValidationError) -> ConfigError:
    """The first of pydantic's errors as one ConfigError naming the key (`model.stagse: unknown key; known: ...`)."""
    errors = err.errors(include_url=False)
    first = errors[0]
    key, owner = _error_key(tuple(first["loc"]))
    if first["type"] == "dataclass_type":  # not a mapping: the other member of the union (a path) says more
        first = next((e for e in errors if e["type"] != "dataclass_type" and _error_key(tuple(e["loc"]))[0] == key),
                     first)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden") and owner is not None:
        message = f"unknown key; known: {', '.join(f.name for f in dataclasses.fields(owner))}"
    elif first["type"] != "value_error":  # a settings class's own check names its values itself
        message += f", got {first['input']!r}"
    return ConfigError(f"{key or 'config'}: {message}")


def _validate(data: dict[str, Any]) -> Config:
    """Plain YAML/JSON data -> Config, validated by pydantic in JSON mode (mappings for settings classes, strict
    types); a ConfigError names the first bad key."""
    try:
        return _adapter().validate_json(json.dumps(_plain(data), default=str))
    except ValidationError as err:
        raise _config_error(err) from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """['optim.lr=0.01', 'model.stages=3'] -> nested dict; values parsed as YAML (`read_yaml`: safe, never code)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        try:
            value = read_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as err:  # a syntax error, or a tag (!!python/...) the safe loader will not construct
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {pair!r}: the value is not plain YAML: {problem}") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _moved_stride(data: dict[str, Any]) -> dict[str, Any]:
    """`data.stride` (before the output stride became the model's, `model.pose_stride`): dropped when it agrees
    with the model (every earlier checkpoint: 8), an error naming both keys when it does not."""
    section = data.get("data")
    if not isinstance(section, dict) or "stride" not in section:
        return data
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    pose_stride = model.get("pose_stride", ModelConfig.pose_stride)
    if section["stride"] != pose_stride:
        raise ConfigError(f"data.stride: {section['stride']!r} contradicts model.pose_stride {pose_stride!r}; the "
                          f"output stride is the model's: set model.pose_stride and drop data.stride")
    return {**data, "data": {k: v for k, v in section.items() if k != "stride"}}


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (`configs/` in the repository), without `.yaml`."""
    from importlib import resources

    return sorted(p.name[:-5] for p in resources.files("posepart").joinpath("configs").iterdir()
                  if p.name.endswith(".yaml"))


def shipped_config(name: str) -> Path:
    """The file of a shipped config, by name (`demo_cpu_joint` or `demo_cpu_joint.yaml`); ConfigError if unknown."""
    from importlib import resources

    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in shipped_configs():
        raise ConfigError(f"{name}: no such config file, and not a shipped config "
                          f"(shipped: {', '.join(shipped_configs())})")
    return Path(str(resources.files("posepart").joinpath("configs", f"{stem}.yaml")))


def config_path(name: str | Path) -> Path:
    """A config file by path, or a shipped config by name from any folder (`shipped_config`); a file of that name
    in the working folder wins, as any path would."""
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path
    return shipped_config(path.name)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (a path, or a shipped config's name: `config_path`) or the defaults, apply `key=value`
    overrides, validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            loaded = read_yaml(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except OSError as err:  # a folder, no permission
            raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a text (UTF-8) YAML file: {err.reason} at byte {err.start}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    data = _merge(data, parse_overrides(overrides))
    try:
        return _validate(_moved_stride(data))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a plain dict (e.g. `Config.to_dict()` stored in a checkpoint) into a Config, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of config sections, got {type(data).__name__}")
    return _validate(_moved_stride(data))


def config_yaml(config: Config) -> str:
    """The config as the YAML a run writes to OUT/config.yaml (and `train --print-config` prints)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def dump_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (`posepart.data.writer.atomic_write`)."""
    from posepart.data.writer import atomic_write

    text = config_yaml(config)
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
