"""`model.init`: a new run starts from the weights of a trained posepart model (fine-tuning).

Written here because neither Lightning nor torch loads one model's weights into another of a different head or
schema: `load_state_dict(strict=False)` takes any tensor of a matching name and shape, which in another schema
gives a heatmap channel another joint's detector (same count, other order) and, where a Sequential's indices shift
(BatchNorm off), a conv the bias of a BatchNorm. So a tensor is taken only where the two models agree on what it
means: the same name, shape and kind of layer, and, for the heads, the same schema (their channels are its joints
and part classes).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from posepart.data.mixing import TASKS
from posepart.engine.config import ConfigError
from posepart.engine.settings import ModelConfig, to_plain
from posepart.errors import PosepartError, PosepartWarning
from posepart.schema import Schema

INIT_SOURCE = "model.init"  # the name of the entry a run's recorded sources gain for the weights it started from
# model settings that change no tensor (where the weights come from; inference's smoothing) or are named by a
# warning of their own (the weightless layers): left out of the list of settings that differ
_NOT_LAYERS = ("init", "pretrained", "heatmap_smoothing", "activation", "pool")


def _owners(model: nn.Module) -> dict[str, type]:
    """Each state_dict key -> the class of the layer holding it."""
    return {f"{prefix}.{name}" if prefix else name: type(module)
            for prefix, module in model.named_modules()
            for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]}


def initialise_from(model: nn.Module, path: Path, schema: Schema, settings: ModelConfig | None = None
                    ) -> dict[str, Any]:
    """Copy into `model` (of `schema`) the tensors of the posepart model saved at `path` (a training .ckpt or an
    `export-weights` .safetensors, read weights-only) that mean the same there: the same name, shape and layer kind,
    and outside the trunk only when both models have the same schema. The whole trunk must fit (else another width
    or layout: a ConfigError); what is left at its initialisation, and what of the file is not used, is named in one
    warning. Returns the entry for the run's recorded sources: the tasks whose heads came from the file (they count
    as trained, `data.mixing.trained_tasks`). `settings`: the run's `model` section, whose keys that differ from the
    file's the warning names (a run's config.yaml of an older posepart builds today's default where a key is missing).
    """
    from posepart.engine.checkpoint import load_model  # checkpoint rebuilds models with the module's builder

    try:
        loaded = load_model(path)
    except PosepartError as err:
        raise ConfigError(f"model.init: {err}") from None
    theirs, own = loaded.model.state_dict(), model.state_dict()
    their_owner, own_owner = _owners(loaded.model), _owners(model)
    same_schema = _layout(loaded.schema) == _layout(schema)
    taken = {key: value for key, value in theirs.items()
             if key in own and own[key].shape == value.shape and their_owner.get(key) is own_owner.get(key)
             and (same_schema or key.startswith("trunk."))}
    trunk = [key for key in own if key.startswith("trunk.")]
    misfit = [key for key in trunk if key not in taken]
    if misfit:
        raise ConfigError(f"model.init {path}: its trunk does not fit this model's ({len(misfit)} of {len(trunk)} "
                          f"trunk tensors differ, e.g. {misfit[0]}): another width, batch_norm or activation layout")
    model.load_state_dict(taken, strict=False)
    theirs_kinds, own_kinds = _weightless_layers(loaded.model.trunk), _weightless_layers(model.trunk)
    if theirs_kinds != own_kinds:  # before: taken without a word (SiLU-trained weights under ReLU)
        rank_zero_warn(f"model.init {path}: its trunk computes with {', '.join(sorted(theirs_kinds - own_kinds))} "
                       f"where this model's has {', '.join(sorted(own_kinds - theirs_kinds))} (model.activation or "
                       f"model.pool?): its weights are taken, but their features are not what they were trained to be",
                       category=PosepartWarning)
    left, unused = sorted(set(own) - set(taken)), sorted(set(theirs) - set(taken))
    if left or unused:
        why = "" if same_schema else (f" (its schema {loaded.schema.describe()} is not the run's "
                                      f"{schema.describe()}: the trunk alone is taken)")
        if settings is not None:  # what makes the layers differ, where the settings do
            ours, file = to_plain(asdict(settings)), to_plain(asdict(loaded.config.model))
            differ = [f"model.{key}={file[key]!r} (this run: {ours[key]!r})" for key in ours
                      if key not in _NOT_LAYERS and file.get(key) != ours[key]]
            why += f"; its model differs in {', '.join(differ)}" if differ else ""
        rank_zero_warn(
            f"model.init {path}: {len(left)} of this model's {len(own)} tensors keep their initialisation"
            f"{_first(left)} and {len(unused)} of the file's {len(theirs)} are not used{_first(unused)}{why}",
            category=PosepartWarning)
    learnt = loaded.tasks if loaded.tasks is not None else _heads(loaded.model)
    # a head counts as trained when every tensor of it came from the file (another stage or stride: it does not)
    tasks = [task for task in learnt if task in _heads(model) and not any(_TASK_OF[task](key) for key in left)]
    return {"name": INIT_SOURCE, "init": str(path), "tasks": tasks, "unlabelled": False, "weight": 0.0,
            "train_images": 0, "draws_per_epoch": 0, "val_images": 0, "missing_joints": []}


def _weightless_layers(module: nn.Module) -> set[str]:
    """The kinds of layer without weights a module computes with (activations, pooling): what a state dict does not
    record, and two models whose tensors all fit may still differ in."""
    return {type(m).__name__ for m in module.modules()
            if not any(True for _ in m.children()) and not any(True for _ in m.parameters(recurse=False))}


# Which tensors make each task's head (the joint model's stage branches and refinements, FCN's seg_head).
_TASK_OF = {"pose": lambda key: ".heatmaps." in key or ".pafs." in key,
            "parts": lambda key: ".parts." in key or key.startswith(("seg_head.", "parts_refine."))}


def _layout(schema: Schema) -> tuple[Any, ...]:
    """What the heads' channels are: the joints, the skeleton's limbs and the part classes, in order (not the
    schema's name or its OKS sigmas, which change no tensor)."""
    return schema.keypoints, schema.skeleton, schema.part_classes


def _first(keys: list[str]) -> str:
    return f" (first: {keys[0]})" if keys else ""


def _heads(model: nn.Module) -> tuple[str, ...]:
    """The tasks of a model's heads, in `data.mixing.TASKS` order."""
    return tuple(task for task in TASKS if getattr(model, f"has_{task}", False))


def check_init_file(path: Path | None) -> None:
    """Before the data is read: a `model.init` that names no file is a ConfigError naming the key."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"model.init {path}: no such file (a posepart .ckpt or export-weights .safetensors)")
