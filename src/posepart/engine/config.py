"""Training configuration: YAML files validated into typed dataclasses by pydantic.

The settings are plain dataclasses (`posepart.engine.settings`: what the code reads); pydantic validates a YAML/JSON
mapping into them, strictly (no "3" for 3, no "yes" for true, no unknown keys), and every error is one ConfigError
naming the key (`model.stagse: unknown key; known: ...`, `train.max_epochs: Input should be a valid integer, got
'x'`).
`--set a.b=value` overrides parse their value with YAML's safe loader (never eval: `posepart.engine.overrides`) and
are validated the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Mapping, Sequence

import yaml
from pydantic import TypeAdapter, ValidationError

from posepart.engine.overrides import check_reset_key, merge_overrides, parse_overrides, read_yaml, reset_keys
from posepart.engine.settings import RESERVED_SOURCE_NAMES, Config, ConfigError, ModelConfig, to_plain
from posepart.inference.backends import MAX_INPUT_SIZE
from posepart.errors import PosepartWarning
from posepart.models import builder_options


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
    elif (named := _FIELD_FIRST.match(message)) and _is_field((*first["loc"], named[1])):
        # a section's own check that names one of its keys first: the key as users write it (`model.stages: ...`,
        # not `model: stages: ...`)
        key, message = f"{key}.{named[1]}" if key else named[1], message[named.end():]
    return ConfigError(f"{key or 'config'}: {message}")


_FIELD_FIRST = re.compile(r"([a-z][a-z0-9_]*)(?:: | (?=must ))")  # "stages: must be ...", "rotate_deg must be ..."


def _is_field(loc: tuple[Any, ...]) -> bool:
    """Whether a pydantic location's last part is a key of the settings class before it."""
    _, owner = _error_key(loc)
    return owner is not None and loc[-1] in {f.name for f in dataclasses.fields(owner)}


def _validate(data: dict[str, Any]) -> Config:
    """Plain YAML/JSON data -> Config, validated by pydantic in JSON mode (mappings for settings classes, strict
    types); a ConfigError names the first bad key."""
    try:
        return _adapter().validate_json(json.dumps(to_plain(data), default=str))
    except ValidationError as err:
        raise _config_error(err) from None


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


def load_config(path: str | Path | Sequence[str | Path] | None = None,
                overrides: Sequence[str] | Mapping[str, Any] | str = ()) -> Config:
    """Read a YAML config (a path, or a shipped config's name: `config_path`) or the defaults, apply `key=value`
    overrides, validate everything. Several configs are laid over each other in order (`train --config demo_cpu_joint
    --config mine.yaml`), as the overrides are: mappings merge key by key, a list or a value replaces, null resets a
    key to its default. Why: a short config of one's own can start from a shipped recipe (before: a second --config
    was refused, and a short config got the library's defaults, a full-width VGG16). From Python the overrides may
    also be one "key=value" string or a {key: value} mapping (before: a string was read character by character)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    elif isinstance(overrides, Mapping):  # JSON is YAML: each value (a string quoted) reads back as it was
        overrides = [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    paths = [] if path is None else [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if any(not isinstance(p, (str, os.PathLike)) for p in paths):
        raise ConfigError(f"config: a file path or a shipped config's name, got {paths!r}")
    files = [config_path(p) for p in paths]
    data: dict[str, Any] = _read_config_file(files[0]) if files else {}  # as written: its nulls are validated
    layered: list[tuple[str | int, ...]] = []  # the keys the later files reset (null), checked as --set's are
    for file in files[1:]:
        overlay = _without_empty_sections(_read_config_file(file), data)
        layered += reset_keys(overlay)
        data = merge_overrides(data, overlay)
    where = " + ".join(map(str, files))
    parsed = parse_overrides(overrides)
    merged = merge_overrides(data, parsed)
    try:
        config = _validate(_moved_stride(merged))
        check_trainable(config)
    except ConfigError as err:
        if files and overrides and _is_valid(data):  # the --set values are at fault, not the file
            raise ConfigError(f"--set: {err}") from None
        raise ConfigError(f"{where}: {err}" if files else str(err)) from None
    for reset in [*layered, *reset_keys(parsed)]:  # merged away, so validation never saw them: a mistyped one must
        check_reset_key(config, reset)  # not pass
    return config


def _without_empty_sections(overlay: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A layered config file's sections, an empty one (`model:` with its keys commented out, which YAML reads as
    null) taken as no change: merged as written it would reset the base's whole section to the defaults (a review:
    the recipe's 0.25-width model became the full-width VGG16, unsaid)."""
    out = {}
    for key, value in overlay.items():
        below = base.get(key) if isinstance(base, dict) else None
        if value is None and isinstance(below, dict):
            continue
        out[key] = _without_empty_sections(value, below) if isinstance(value, dict) and isinstance(below, dict) \
            else value
    return out


def _read_config_file(path: Path) -> dict[str, Any]:
    """A config file's sections, or a ConfigError naming the file and what is wrong with it."""
    try:
        loaded = read_yaml(path.read_text()) or {}
    except FileNotFoundError:
        stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
        shipped = f" (the shipped config of that name: --config {stem})" if stem in shipped_configs() else ""
        raise ConfigError(f"{path}: config file not found{shipped}") from None
    except OSError as err:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file: {err.reason} at byte {err.start}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded


def check_trainable(config: Config, *, trainer_limits: bool = False) -> None:
    """Refuse, naming the key, settings a run cannot train with: before, they passed validation and failed inside
    training with a traceback (a learning rate of -1, a batch of 0 images, a log every 0 steps), or trained nothing
    and exited 0. Not applied to the configs checkpoints store: a model loads whatever its unused settings say.
    `trainer_limits`: the Python API caps the run (`train(..., max_steps=N)`), which plans a decaying schedule."""
    o, d, t = config.optim, config.data, config.train
    finite = math.isfinite
    rules = [  # (holds, key, the rule, the value)
        (finite(o.lr) and o.lr > 0, "optim.lr", "a finite number > 0", o.lr),
        (finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", "a finite number >= 0",
         o.weight_decay),
        (o.warmup_steps >= 0, "optim.warmup_steps", "at least 0", o.warmup_steps),
        (o.name != "sgd" or 0 <= o.momentum < 1, "optim.momentum", "in [0, 1) (sgd's)", o.momentum),
        (o.schedule != "step" or o.step_size >= 1, "optim.step_size", "at least 1 (schedule step)", o.step_size),
        (o.schedule != "step" or finite(o.gamma) and o.gamma > 0, "optim.gamma", "a finite number > 0 (schedule "
         "step)", o.gamma),
        (d.input_size <= MAX_INPUT_SIZE, "data.input_size", f"at most {MAX_INPUT_SIZE} (what exports take)",
         d.input_size),
        (d.batch_size >= 1, "data.batch_size", "at least 1", d.batch_size),
        (d.workers >= 0, "data.workers", "at least 0", d.workers),
        (finite(d.sigma) and d.sigma > 0, "data.sigma", "a finite number > 0", d.sigma),
        (finite(d.paf_width) and d.paf_width > 0, "data.paf_width", "a finite number > 0", d.paf_width),
        (t.max_epochs == -1 or t.max_epochs >= 1, "train.max_epochs", "-1 (no limit) or at least 1", t.max_epochs),
        (t.max_steps == -1 or t.max_steps >= 1, "train.max_steps", "-1 (no limit) or at least 1", t.max_steps),
        (t.max_minutes is None or finite(t.max_minutes) and t.max_minutes > 0, "train.max_minutes",
         "a finite number > 0 or null", t.max_minutes),
        (t.threads is None or t.threads >= 1, "train.threads", "at least 1 or null", t.threads),
        (t.val_every_epochs >= 1, "train.val_every_epochs", "at least 1", t.val_every_epochs),
        (t.log_every_steps >= 1, "train.log_every_steps", "at least 1", t.log_every_steps),
        (t.val_images >= 0, "train.val_images", "at least 0", t.val_images),
        (t.num_nodes >= 1, "train.num_nodes", "at least 1", t.num_nodes),
    ]
    for holds, key, rule, value in rules:
        if not holds:
            raise ConfigError(f"{key}: must be {rule}, got {value!r}")
    if o.schedule in ("cosine", "linear") and t.max_epochs == -1 and t.max_steps == -1 and not trainer_limits:
        raise ConfigError(f"optim.schedule: {o.schedule!r} decays over the planned steps, and train.max_epochs and "
                          f"train.max_steps are both -1 (no limit): set one of them, or optim.schedule: constant")
    slow = ("loss.aggregator", config.loss.aggregator) if config.loss.aggregator != "sum" else (
        ("loss.weighting", "gradnorm") if config.loss.weighting == "gradnorm" else None)
    if slow is not None and t.compile:  # their gradients are taken with autograd.grad, outside the compiled step
        raise ConfigError(f"{slow[0]}: {slow[1]!r} is not supported with train.compile (its gradients are taken "
                          f"outside the compiled step); set one of them back")
    if config.loss.aggregator != "sum":  # before: an ImportError's traceback at the first step, after the sanity check
        from posepart.engine.aggregation import make_aggregator

        try:
            make_aggregator(config.loss.aggregator)
        except ImportError:  # (torchjd's own message spells the extra as pip before 23.3 did not take it)
            raise ConfigError(f"loss.aggregator: {config.loss.aggregator!r} needs the solvers torchjd's extra installs "
                              f"(qpsolvers, quadprog), not installed here: pip install 'torchjd[quadprog-projector]'"
                              ) from None


def warn_unused_model_options(model: ModelConfig) -> None:
    """Model settings the named model's builder does not take, set away from their defaults, are named in a warning:
    before, they were dropped without a word, so `model.seg_head: fcn8` with `model.name: fcn32_vgg16` trained FCN-32s
    while config.yaml said fcn8. A warning, not an error: switching `model.name` in a config made for another model
    (`--set model.name=fcn32_vgg16` on the joint one) leaves such settings behind, and they change nothing."""
    accepted = builder_options(model.name)
    unused = {option.name: getattr(model, option.name) for option in dataclasses.fields(ModelConfig)
              if option.name not in ("name", "pretrained", "init", *accepted)
              and getattr(model, option.name) != option.default}
    if unused:
        hint = " (FCN-16s and FCN-8s are model.name fcn16_vgg16 and fcn8_vgg16)" if "seg_head" in unused else ""
        listed = ", ".join(f"model.{key}: {value!r}" for key, value in unused.items())
        warnings.warn(f"{model.name} has no such options, so these settings change nothing: {listed}{hint}",
                      PosepartWarning, stacklevel=3)


def _is_valid(data: dict[str, Any]) -> bool:
    """Whether a config (before `--set`) validates: to blame an error on the file or on the overrides."""
    try:
        check_trainable(_validate(_moved_stride(data)))
    except ConfigError:
        return False
    return True


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a plain dict (`Config.to_dict()`, every key written: what checkpoints and exports store) into a
    Config, strictly. A stored config without `model.refine` predates it: its refinements are the "fcn" ones; a
    source named as a metric is renamed (`_renamed_sources`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of config sections, got {type(data).__name__}")
    model = data.get("model")
    if isinstance(model, dict) and "refine" not in model:
        data = {**data, "model": {**model, "refine": "fcn"}}
    return _validate(_moved_stride(_renamed_sources(data)))


def _renamed_sources(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config whose sources are named as the run's own metrics (`weight`, `pseudo`: allowed until
    2026-12-05) with `_data` appended to those names: a name only prefixes metrics, and before every model file of
    such a run (predict, evaluate, export, --resume) was refused as "not a posepart model"."""
    section = data.get("data")
    sources = section.get("sources") if isinstance(section, dict) else None
    if not isinstance(sources, list) or not any(isinstance(s, dict) and s.get("name") in RESERVED_SOURCE_NAMES
                                                for s in sources):
        return data
    taken = {s.get("name") for s in sources if isinstance(s, dict)}
    renamed = []
    for source in sources:
        if isinstance(source, dict) and source.get("name") in RESERVED_SOURCE_NAMES:
            name, n = f"{source['name']}_data", 2
            while name in taken:  # (a source of that name already: weight_data2, ...)
                name, n = f"{source['name']}_data{n}", n + 1
            taken.add(name)
            source = {**source, "name": name}
        renamed.append(source)
    return {**data, "data": {**section, "sources": renamed}}


def absolute_paths(config: Config) -> Config:
    """`config` with every file and folder it names (data, sources, pretrained weights) made absolute against the
    working folder, as the run reads them: the run folder's config.yaml and checkpoints then name the same data from
    any folder (`--resume` from elsewhere, a copied run). `model.pretrained: imagenet` is a name, not a path."""
    from posepart.models.pretrained import IMAGENET

    def walk(value: Any) -> Any:
        if isinstance(value, Path):
            return value if value.is_absolute() or str(value) == IMAGENET else value.absolute()
        if isinstance(value, list):
            return [walk(item) for item in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changed = {f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return dataclasses.replace(value, **changed)
        return value

    return walk(config)


def config_yaml(config: Config) -> str:
    """The config as the YAML a run writes to OUT/config.yaml (and `train --print-config` prints)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def dump_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (`posepart.files.atomic_write`)."""
    from posepart.files import atomic_write

    text = config_yaml(config)
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
