"""`--resume`: which checkpoints a run can continue, and where inside its epoch Lightning resumes one.

A resume must train the same model with the same optimizer (`check_resumable` refuses another, naming what differs,
before Lightning fails deep inside `fit`); the settings the checkpoint's state carries keep its values. Lightning's
own loop counters are settled so that a `last.ckpt` resumes exactly where it was written (`settle_epoch`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from posepart.engine.checkpoint import (CHECKPOINT_KEY, CheckpointError, describe_checkpoint, load_checkpoint,
                                       provenance)
from posepart.engine.settings import Config, to_plain
from posepart.models import builder_options
from posepart.schema import Schema

# Settings a resumed run must share with its checkpoint: they decide the model's tensors and the optimizer's state.
# What makes another model, with every model.* key: data.sigma and data.paf_width are its HeadMeta's (the targets it
# learns; before, a resume that changed them trained towards others and stored them in the checkpoint's meta).
_RESUME_KEYS = ("loss.weighting", "loss.heatmap", "optim.name", "data.sigma", "data.paf_width")
# What the checkpoint's state carries (its optimizer and learning-rate schedule; the batch size, by which the epoch's
# draws done are counted: before, a resume with another skipped or repeated samples): a resume keeps its values.
# The weights a run started from are the checkpoint's too: a resume does not read model.init or model.pretrained.
_RESTORED_KEYS = ("loss.weighting_lr", "data.batch_size", "model.init", "model.pretrained")  # and every optim.* key
# The run's length: a resume trains to the new one, but its schedule stays planned over the checkpoint's (the
# schedule object is restored with it): `check_resumable` returns these too, and `train` says so.
SCHEDULE_LENGTH_KEYS = ("train.max_epochs", "train.max_steps")


def _another_model(key: str) -> bool:
    return (key.startswith("model.") and key not in ("model.pretrained", "model.init")) or key in _RESUME_KEYS


def _unused(key: str, model: str) -> bool:
    """A model setting the model's builder does not take (an FCN's `model.stages`): it changes nothing."""
    return key.startswith("model.") and key != "model.name" and key.split(".", 1)[1] not in builder_options(model)


def _restored(key: str) -> bool:
    return (key.startswith("optim.") or key in _RESTORED_KEYS) and not _another_model(key)
_TRAINING_ENTRIES = ("state_dict", "optimizer_states", "loops")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _set_option(key: str, value: Any) -> str:
    """`--set KEY=VALUE` that gives `key` this value back, quoted for a POSIX shell: a string as it is where YAML reads
    it so ('fcn'), else as JSON, which is YAML ('"true"', 1e-3, null, lists)."""
    import shlex

    import yaml

    text = value if isinstance(value, str) and yaml.safe_load(value) == value else json.dumps(to_plain(value))
    return f"--set {shlex.quote(f'{key}={text}')}"


def check_resumable(path: str | Path, config: Config, schema: Schema, state: dict[str, torch.Tensor],
                    sources: list[dict[str, Any]]) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """Refuse, with a CheckpointError naming the file and what differs, a `--resume` checkpoint this run cannot
    continue: one that is not a training checkpoint, or one of another model (schema, model, loss or optimizer
    settings, or weights of other names or shapes than `state`, the run's LightningModule state_dict). Without this
    Lightning fails deep inside `fit` with a state_dict traceback. Tensors are memory-mapped, not read.
    Returns (kept, changes). `kept`: the settings this config changes that a resume cannot honour, {"optim.lr": (this
    config's, the checkpoint's)}: the optimizer and its learning-rate schedule continue from the checkpoint's state,
    so the run must keep the checkpoint's values (`train` does, and says so), and the run's length
    (`SCHEDULE_LENGTH_KEYS`), which the run follows while its schedule keeps the checkpoint's plan (`train` says so).
    `changes`: what the run will train otherwise than the checkpoint's would have gone on (`_training_changes`;
    `sources`: the data module's `describe()`), which `train` warns of."""
    path = Path(path)
    checkpoint = load_checkpoint(path, mmap=True)
    lacking = [key for key in _TRAINING_ENTRIES if key not in checkpoint]
    if lacking:
        raise CheckpointError(f"{path}: not a training checkpoint that --resume can continue (it has no "
                              f"{', '.join(lacking)}); resume from a run's checkpoints/last.ckpt")
    differences, theirs_set = [], []
    if isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
        stored_schema, stored = describe_checkpoint(checkpoint, path)
        if (stored.train.self_training is None) != (config.train.self_training is None):  # before: "weights absent"
            was = "self-trained" if stored.train.self_training else "did not self-train"
            now = "does not" if stored.train.self_training else "does"
            raise CheckpointError(f"{path}: its run {was} (train.self_training) and this one {now}: a resume cannot "
                                  f"add or remove the teacher (its weights are part of the run); set "
                                  f"train.self_training as the checkpoint's run did, or start a new run")
        if stored_schema != schema:
            differences.append(f"schema {stored_schema.describe()} (this run: {schema.describe()})")
        old, new = _flat(stored.to_dict()), _flat(config.to_dict())
        changed = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        model_keys = [key for key in changed if _another_model(key) and not (_unused(key, config.model.name) and
                                                                             stored.model.name == config.model.name)]
        differences += [f"{key}={old.get(key)!r} (this run: {new.get(key)!r})" for key in model_keys]
        theirs_set = [_set_option(key, old.get(key)) for key in model_keys]
        ignored = {key: (new.get(key), old.get(key)) for key in changed
                   if _restored(key) or key in SCHEDULE_LENGTH_KEYS}
        changes = _training_changes(old, new, changed, checkpoint[CHECKPOINT_KEY].get("sources"), sources)
    else:
        ignored, changes = {}, []
    if differences:  # (a run of an older posepart: its config.yaml lacks a setting whose default changed since)
        give = f", or give the checkpoint's values: {' '.join(theirs_set)}" if theirs_set else ""
        raise CheckpointError(f"{path}: a checkpoint of another model: {'; '.join(differences)}; resume with the "
                              f"config it was trained with (its run folder's config.yaml){give}")
    theirs = checkpoint["state_dict"]
    wrong = [f"{key} absent" for key in state if key not in theirs]
    wrong += [f"{key} unexpected" for key in theirs if key not in state]
    wrong += [f"{key} {tuple(theirs[key].shape)}, the model's {tuple(value.shape)}" for key, value in state.items()
              if key in theirs and tuple(theirs[key].shape) != tuple(value.shape)]
    if wrong:
        raise CheckpointError(f"{path}: its weights do not fit this run's model ({len(wrong)} tensor(s)): "
                              f"{'; '.join(wrong[:3])}")
    bad = (_first_non_finite(theirs, "weights") or _first_non_finite(checkpoint["optimizer_states"], "optimizer state")
           or _first_non_finite(checkpoint.get("current_model_state", {}), "training weights"))  # an EMA run's
    if bad:  # (before: one step trained, then "loss became nan ... (first step): lower optim.lr")
        raise CheckpointError(f"{path}: its {bad} holds NaN or inf: a run cannot continue from it; resume from an "
                              f"earlier checkpoint, or start a new run")
    return ignored, changes


def _first_non_finite(state: Any, what: str, where: str = "") -> str | None:
    """'weights model.x.weight' for the first floating-point tensor in `state` (nested dicts and lists) holding NaN
    or inf, else None."""
    if isinstance(state, torch.Tensor):
        return f"{what} {where.strip('.')}" if state.is_floating_point() and not bool(state.isfinite().all()) else None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return next((bad for key, value in items if (bad := _first_non_finite(value, what, f"{where}{key}."))), None)


# Settings that change nothing a run learns: where its data lies (moved data resumes), how it is run and logged. A
# resume that changes any other setting outside those it refuses or keeps trains on with the new value, and says so
# (`_training_changes`).
_BOOKKEEPING_KEYS = ("data.train", "data.val", "data.sources", "data.workers", "train.max_minutes", "train.threads",
                     "train.accelerator", "train.devices", "train.strategy", "train.num_nodes",
                     "train.val_every_epochs", "train.best_metric", "train.best_mode", "train.log_every_steps",
                     "train.val_images")


def _training_changes(old: dict[str, Any], new: dict[str, Any], changed: list[str], recorded: Any,
                      sources: list[dict[str, Any]]) -> list[str]:
    """What a resume trains otherwise than the checkpoint's run would have gone on: the `changed` settings of the
    flattened configs `old` (the checkpoint's) and `new` that it neither refuses nor keeps ("train.seed 0 -> 1": the
    seed, augmentation, loss weights, precision...), its sources' settings, and sources with another number of
    training images than the run had (`recorded`: the checkpoint's sources; `sources`: the data module's). Each makes
    the resumed run another than the one it continues (and one resumed inside an epoch draws the rest of it from
    another order)."""
    changes = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in changed
               if not _another_model(key) and not _restored(key) and key not in SCHEDULE_LENGTH_KEYS
               and key not in _BOOKKEEPING_KEYS]
    earlier, later = old.get("data.sources") or [], new.get("data.sources") or []
    for before, now in zip(earlier, later):  # their settings; their data may move
        differ = [key for key in sorted((set(before) | set(now)) - {"train", "val"}) if before.get(key) != now.get(key)]
        changes += [f"source {now.get('name')}: {key} {before.get(key)!r} -> {now.get(key)!r}" for key in differ]
    if len(earlier) != len(later):
        changes.append(f"{len(earlier)} data.sources -> {len(later)}")
    earlier = [s for s in recorded or [] if isinstance(s, dict) and not s.get("init")]
    # by name; a single source is named by its folder (`data.train`), which a resume may move
    pairs = zip(earlier, sources) if len(earlier) == len(sources) == 1 else (
        (next((e for e in earlier if e.get("name") == s["name"]), {}), s) for s in sources)
    changes += [f"source {now['name']}: {then['train_images']} training images -> {now['train_images']}"
                for then, now in pairs if then.get("train_images") not in (None, now["train_images"])]
    return changes


_LOOP_LAYOUT = ("epoch_progress", "epoch_loop.batch_progress", "epoch_loop.scheduler_progress",
                "epoch_loop.automatic_optimization.optim_progress")  # Lightning 2.6's fit loop in a checkpoint


def saved_step(path: str | Path) -> int:
    """The optimizer steps a training checkpoint had taken (memory-mapped: its tensors are not read)."""
    return int(load_checkpoint(Path(path), mmap=True).get("global_step", 0))


def _known_fit_loop(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's fit-loop state where it has the layout known here (`_LOOP_LAYOUT`), else None."""
    loop = checkpoint.get("loops", {}).get("fit_loop")
    return loop if isinstance(loop, dict) and all(key in loop for key in _LOOP_LAYOUT) else None


def settle_epoch(checkpoint: dict[str, Any]) -> tuple[int, int] | None:
    """Make Lightning resume a `last.ckpt` where it was written, in place; -> (epoch, batches done) when that was
    inside an epoch (the data module then serves the rest of that epoch: `EpochSampler.resume_at`), else None.

    Our `last.ckpt` is written after Lightning has counted its epoch as processed, but before completed: in
    `on_train_epoch_end`, or when the run stopped inside an epoch (--max-minutes, max_steps) and `train` saved it.
    - At an epoch's end: resumed with `train.max_steps` set, Lightning 2.6 took it for an epoch in progress whose
      batches were all done and ended it at once, so the resumed run trained nothing (cf. its issue #19617). Marked
      completed here, with the next epoch's batch counters at 0: what Lightning does itself without max_steps.
    - Inside an epoch: Lightning took the epoch as finished and went on to the next, so the rest of it was never
      trained. Marked not processed here, so Lightning continues the epoch's batch count, and the sampler, a pure
      function of (seed, epoch), skips the draws already trained."""
    loop = _known_fit_loop(checkpoint)
    if loop is None:  # another layout: left as it is
        return None
    epochs, batches = loop["epoch_progress"], loop["epoch_loop.batch_progress"]
    if epochs["current"]["processed"] != epochs["current"]["completed"] + 1:
        return None
    if not batches.get("is_last_batch"):
        for counter in (epochs["total"], epochs["current"]):
            counter["processed"] = counter["completed"]
        return epochs["current"]["completed"], batches["current"]["completed"]
    for counter in (epochs["total"], epochs["current"]):
        counter["completed"] = counter["processed"]
    batches["is_last_batch"] = False
    progress = [batches, loop["epoch_loop.scheduler_progress"],
                *loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"].values()]
    for counter in progress:  # the next epoch starts at its first batch
        counter["current"] = {key: 0 for key in counter["current"]}
    return None


def resumes_inexactly(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint `settle_epoch` left as it was resumes inside an epoch where the data cannot follow: one
    written mid-epoch by something else than posepart's saves (a `ModelCheckpoint(every_n_train_steps=...)` of one's
    own: its epoch's draws start again from the first), or of a fit-loop layout not known here. Lightning warns of
    every resume inside an epoch, and `quiet_lightning` drops that warning, exact for posepart's own saves; `train`
    warns of these instead."""
    loop = _known_fit_loop(checkpoint)
    if loop is None:  # (no loops at all: weights only, nothing to resume inside)
        return isinstance(checkpoint.get("loops", {}).get("fit_loop"), dict)
    batches = loop["epoch_loop.batch_progress"]
    return bool(batches["current"]["processed"]) and not batches.get("is_last_batch")  # (saved at a batch's end:
    # processed, not yet completed)


# What a bit-exact resume needs the same as the launch that saved (README, "Reproducibility"): a change is warned of
_SETUP_KEYS = ("code", "torch", "lightning", "numpy", "opencv", "albumentations", "python", "cpu", "threads")


def launches(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A checkpoint's `provenance` as the list of the launches that trained it, oldest first: what a resumed run's
    checkpoints record under `earlier` beside their own launch's."""
    return [*record.get("earlier", []), {key: value for key, value in record.items() if key != "earlier"}]


def setup_changes(record: dict[str, Any]) -> list[str]:
    """What of the setup a bit-exact resume needs differs between a checkpoint's `provenance` and this process:
    "threads 2 -> 1", "code 7b65040 -> 1a2b3c4" (a digest by its first 7 characters, as git abbreviates)."""
    def short(value: Any) -> str:
        return value[:7] if isinstance(value, str) and len(value) == 40 else str(value)

    now = provenance(None)
    return [f"{key} {short(record[key])} -> {short(now[key])}" for key in _SETUP_KEYS
            if key in record and record[key] != now[key]]
