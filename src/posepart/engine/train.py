"""`train(config, out)`: one training run with a Lightning Trainer configured from `config.train`.

Output folder: `config.yaml` (the resolved config), `checkpoints/last.ckpt` + `checkpoints/best.ckpt`, `csv/version_N/
metrics.csv` and `tb/version_N/` (TensorBoard events), one version per launch, as Lightning numbers them. A folder that
holds a run already is refused unless the launch resumes it (`resume=`) or replaces it (`overwrite=True`).
Resuming (`resume=` a checkpoint) restores model, optimiser, scheduler, step/epoch counters and callbacks through
Lightning; data order and augmentation are functions of (seed, epoch) and the global RNGs are reseeded from
(seed, epoch, rank) at every epoch start, so a run resumed from an end-of-epoch checkpoint continues exactly.
A checkpoint written mid-epoch (by --max-minutes) resumes at the next epoch boundary's data order; Lightning warns.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import signal
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from posepart.engine.checkpoint import recorded_sources
from posepart.engine.config import (ConfigError, absolute_paths, check_trainable, config_from_dict, dump_config,
                                    warn_unused_model_options)
from posepart.engine.finetune import check_init_file
from posepart.engine.launch import first_process
from posepart.engine.settings import Config
from posepart.data.mixing import trained_tasks
from posepart.engine.data import PosePartDataModule
from posepart.engine.builders import LOSS_TERMS, model_tasks
from posepart.engine.module import PosePartModule, check_processes
from posepart.engine.resume import SCHEDULE_LENGTH_KEYS, check_resumable, saved_step
from posepart.engine.run_folder import BEST, CHECKPOINTS, CONFIG_FILE, RUN_FILES, checkpoint_path
from posepart.engine.trainer import (LaunchTimer, StopOnSignal, build_trainer, check_accelerator, devices_value,
                                     quiet_lightning, trains_on_cpu)
from posepart.errors import (FULL_OR_READ_ONLY, OutputError, PosepartWarning, UsageError,
                             refuse_while_a_child_imports_main)
from posepart.evaluate import HEADLINE, logged_name, metric_names
from posepart.files import lock_output, remove_orphans
from posepart.models import MissingLimbsError, SchemaMismatchError


@dataclass
class TrainResult:
    """Where a run's outputs are, and its last logged metrics (floats)."""

    out: Path
    last: Path | None
    best: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    epochs: int = 0  # completed
    inside_epoch: bool = False  # it stopped inside the next epoch (max_steps, --max-minutes, a signal)
    rank: int = 0  # this process's global rank: under DDP every rank returns a result, rank 0 reports it
    interrupted: str | None = None  # "SIGINT" / "SIGTERM": stopped by it at a step's end, last.ckpt saved there
    signal_received: str | None = None  # one came while it trained, whether or not it cut the run (one at the last
    # step lets it finish): what runs it (the demo, the study) stops too
    already_complete: bool = False  # a resumed run that had reached its planned end: this launch trained nothing
    out_of_time: bool = False  # --max-minutes (train.max_minutes) ended it before its planned end
    validated_at: int | None = None  # the step of the validation whose figures `metrics` holds (None: none ran)


# val/<group>/...; anything else names a source (the weightings' `log_terms`: log_var/TASK, weight/TASK)
_METRIC_GROUPS = {"seg", "pose", "heatmap", "paf", "log_var", "weight"}


def _check_every_source_teaches(cfg: Config, module: PosePartModule, data: PosePartDataModule) -> None:
    """Refuse a training source that teaches the model nothing: what it labels is no task of the model's, or only
    tasks whose loss weight is 0 (`loss.weights` under fixed or DWA weighting). Before, such a run trained with a
    loss of 0 at every step and exited 0 (a parts-only source on paf_vgg16; `loss.weights.seg: 0` on an FCN)."""
    predicted = model_tasks(module.model)
    live = [term for term in predicted if cfg.loss.weights.get(term, 1.0) > 0]
    for source in data.describe():
        if source["unlabelled"] or not source["draws_per_epoch"] or not source["tasks"]:
            continue  # pseudo-labelled, or drawn never: nothing of its own is taught
        if not any(term in live for task in source["tasks"] for term in LOSS_TERMS[task]):
            where = f"data.sources: source {source['name']!r}" if cfg.data.sources else "data.train"
            muted = [term for task in source["tasks"] for term in LOSS_TERMS[task]
                     if term in predicted]  # predicted, but at loss weight 0
            weights = f" (loss.weights gives {', '.join(muted)} 0)" if muted else ""
            advice = (f"give {', '.join(f'loss.weights.{term}' for term in muted)} a positive value" if muted else
                      "leave the data out, or train a model that predicts what it labels")
            raise ConfigError(f"{where} trains {', '.join(source['tasks'])}, which teaches model {cfg.model.name} "
                              f"nothing: it predicts {', '.join(predicted)}{weights}; {advice}")


def _warn_unused_settings(cfg: Config, module: PosePartModule) -> None:
    """Loss and optimiser settings, set away from their defaults, that nothing in this run reads, named in one
    warning (as `warn_unused_model_options` names model settings): before, `loss.weights.heatmap: 2` on an FCN, or
    `optim.momentum` under AdamW, changed nothing without a word."""
    loss, optim = cfg.loss, cfg.optim
    default_loss, default_optim = type(loss)(), type(optim)()
    terms = model_tasks(module.model)
    unused = [f"loss.weights.{term}" for term, w in loss.weights.items()
              if term not in terms and w != default_loss.weights[term]]
    reads = {"heatmap": "heatmap" in terms, "mask": "heatmap" in terms,
             "focal_beta": "heatmap" in terms and loss.heatmap == "focal",
             "weighting_lr": loss.weighting in ("uncertainty", "gradnorm"), "dwa_period": loss.weighting == "dwa",
             "gradnorm_alpha": loss.weighting == "gradnorm"}
    unused += [f"loss.{key}" for key, read in reads.items()
               if not read and getattr(loss, key) != getattr(default_loss, key)]
    unused += [f"optim.{key}" for key, name in (("momentum", "sgd"), ("muon_momentum", "muon"))
               if optim.name != name and getattr(optim, key) != getattr(default_optim, key)]
    if unused:
        rank_zero_warn(f"these settings change nothing in this run (model {cfg.model.name}, which predicts "
                       f"{', '.join(terms)}; loss.weighting {loss.weighting}, loss.heatmap {loss.heatmap}, "
                       f"optim.name {optim.name}): {', '.join(unused)}", category=PosepartWarning)


def _monitor(cfg: Config, module: PosePartModule, data: PosePartDataModule) -> str | None:
    """The metric `best.ckpt` follows, checked against what the model and the sources can produce (fail before
    training, not after the first validation)."""
    if not data.has_val:
        return None
    metric = cfg.train.best_metric
    parts = metric.split("/")
    if len(parts) > 2 and parts[0] == "val" and parts[1] not in _METRIC_GROUPS:
        names = [s.name for s in data.val_sources] if cfg.data.sources else []
        if parts[1] not in names:
            raise ConfigError(f"train.best_metric: {metric!r} names no validation source; per-source metrics exist "
                              f"for {names or 'none (a data.sources run only)'}")
        metric_of_task = "/".join([parts[0], *parts[2:]])
    else:
        metric_of_task = metric
    tasks = model_tasks(module.model)
    if metric_of_task.startswith("val/seg/") and "seg" not in tasks:
        raise ConfigError(f"train.best_metric: {metric!r} needs a segmentation head; model {cfg.model.name} has "
                          f"tasks {tasks} (try val/pose/ap or val/total)")
    if metric_of_task.startswith("val/pose/") and "heatmap" not in tasks:
        raise ConfigError(f"train.best_metric: {metric!r} needs a pose head; model {cfg.model.name} has tasks "
                          f"{tasks} (try val/seg/mean_iou or val/total)")
    if not metric.startswith("val/"):
        raise ConfigError(f"train.best_metric: {metric!r} must be a validation metric (val/...)")
    learnt = trained_tasks(module.sources) or ()  # the module holds the data module's `describe()`
    group = metric_of_task.split("/")[1] if metric_of_task.count("/") else ""
    task = {"seg": "parts", "pose": "pose", "heatmap": "pose", "paf": "pose"}.get(group)
    if task is not None and task not in learnt:  # best.ckpt would follow a head with its random initial weights
        other = logged_name(*HEADLINE["pose" if task == "parts" else "parts"])
        raise ConfigError(f"train.best_metric: {metric!r} follows the {task} head, which no training source trains "
                          f"(they train {list(learnt)}); try {other}")
    # a mistyped metric: before, Lightning refused it after the first epoch had trained, with a traceback
    name = metric_of_task.removeprefix("val/")
    loss_term = re.fullmatch(r"seg(/stage\d+)?", name)  # the part loss, or a stage's (`PosePartLoss` terms)
    if group in ("seg", "pose") and name.count("/") and not loss_term and name not in metric_names(data.schema):
        known = sorted(n for n in metric_names(data.schema) if n.startswith(f"{group}/") and n.count("/") == 1)
        raise ConfigError(f"train.best_metric: {metric!r}: validation logs no such metric (val/{group}/: "
                          f"{', '.join(n.split('/')[1] for n in known)}, and per class, joint or slice: "
                          f"val/seg/iou/CLASS, val/pose/pckh/JOINT, val/pose/ap/view/VIEW)")
    if group in ("seg", "pose") and not loss_term:  # before: Lightning's MisconfigurationException after epoch 1,
        # with no checkpoint saved, when the validation data labels nothing the metric scores
        named = parts[1] if metric_of_task != metric else None
        sets = [s.val for s in data.val_sources if named is None or s.name == named]
        if not any(dataset.has_people if task == "pose" else dataset.has_parts
                   for dataset in sets if dataset is not None):
            raise ConfigError(f"train.best_metric: {metric!r} scores {task}, and the validation data "
                              f"({', '.join(str(s.annotation_file) for s in sets)}) labels none (no "
                              f"{'labelled person' if task == 'pose' else 'part map'}): give validation data that "
                              f"does, or follow val/total")
    return metric


def _with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with dotted keys ("optim.lr") set to `values`, validated again."""
    data = cfg.to_dict()
    for key, value in values.items():
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[name] = value
    return config_from_dict(data)


def _claim_run_folder(out: Path, *, resume: str | Path | None, overwrite: bool) -> list[Path]:
    """Refuse to mix a new run's checkpoints and logs into a folder that holds a run, unless it is resumed; with
    `overwrite`, return the previous run's files, which `_train` removes once the new run's data and model are built
    (a launch refused before that, say for a mistyped --val, leaves the old run as it was)."""
    if resume is not None and overwrite:
        raise UsageError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
    # a folder counts when it holds more than the hidden temp files of an interrupted save (`remove_orphans`)
    existing = [name for name in RUN_FILES if (out / name).is_file()
                or (out / name).is_dir() and any(not p.name.startswith(".") for p in (out / name).iterdir())]
    if not existing or resume is not None:
        return []
    if not overwrite:
        last = checkpoint_path(out)
        saved = sorted(p.name for p in (out / CHECKPOINTS).glob("*.ckpt")) if CHECKPOINTS in existing else []
        if last.is_file():
            go_on = f"continue it with --resume {last}, "
        elif saved:  # before: "it saved no checkpoint", and --overwrite then deleted these
            go_on = (f"it holds {', '.join(saved[:3])}{', ...' if len(saved) > 3 else ''} but no last.ckpt: resume "
                     f"one with --resume FILE, ")
        else:
            go_on = "it saved no checkpoint to resume; "
        deleted = ", ".join(f"{name}/" if (out / name).is_dir() else name for name in existing)
        raise UsageError(f"--out {out} holds a run already: {go_on}replace it with --overwrite (which deletes "
                         f"{deleted}), or choose another --out")
    return [out / name for name in existing]


def train(cfg: Config, out: str | Path, *, resume: str | Path | None = None, max_minutes: float | None = None,
          overwrite: bool = False, verbose: bool = False, stop_requested: Callable[[], bool] | None = None,
          **trainer_overrides: Any) -> TrainResult:
    """Train `cfg` into `out`; `resume` continues from a checkpoint; `max_minutes` caps the wall time; `overwrite`
    replaces a run already in `out` (refused otherwise, unless resumed); `verbose` shows Lightning's tips and the
    deprecation warnings of its own code (`quiet_lightning`). `stop_requested` is called after every training step:
    True stops the run as SIGTERM does, at the step's end with last.ckpt saved (`interrupted` "SIGTERM"): a stop
    button's flag, or a `threading.Event` (its `is_set`) that another thread sets. `out` is locked for the launch:
    a second train into it while this one runs is refused (`OutputInUse`)."""
    refuse_while_a_child_imports_main("train()")
    out = Path(out)
    if not isinstance(cfg, Config):
        raise ConfigError(f"train() takes a Config (`load_config`), got {type(cfg).__name__}")
    cfg = config_from_dict(cfg.to_dict())  # one made in Python is checked as a YAML one is (a mistyped model name
    # failed as a KeyError inside training)
    check_trainable(cfg, trainer_limits=bool({"max_steps", "max_epochs"} & set(trainer_overrides)))
    if first_process():  # once per launch: not again in each DDP worker
        warn_unused_model_options(cfg.model)
    cfg = absolute_paths(cfg)  # what config.yaml and the checkpoints record: the same data from any folder
    if max_minutes is not None and not (max_minutes > 0 and math.isfinite(max_minutes)):
        raise ConfigError(f"--max-minutes: expected a positive number, got {max_minutes}")
    check_accelerator(cfg.train.accelerator)
    stop_requested = stop_check(stop_requested)
    first = first_process()  # DDP workers re-run the launch: only the first checks and claims the folder
    with lock_output(out) if first else nullcontext(), quiet_lightning(verbose):
        replaced = _claim_run_folder(out, resume=resume, overwrite=overwrite) if first else []
        init = cfg.model.init
        if (replaced and init is not None and _launches_workers(cfg)
                and any(Path(init).resolve().is_relative_to(p.resolve()) for p in replaced)):
            raise ConfigError(f"model.init {init} lies in the run that --overwrite replaces (DDP workers would read it "
                              f"after it is gone): copy it out of {out} first")
        with intra_op_threads(cfg.train.threads), callers_random_state():
            return _train(cfg, out, resume=resume, max_minutes=max_minutes, replaced=replaced,
                          stop_requested=stop_requested, **trainer_overrides)


def stop_check(stop_requested: Any) -> Callable[[], bool] | None:
    """`train`'s `stop_requested` as a function: an Event stands for its `is_set`; anything else not callable is
    refused."""
    stop_requested = getattr(stop_requested, "is_set", stop_requested)
    if stop_requested is not None and not callable(stop_requested):
        raise UsageError(f"stop_requested: expected a function that returns True to stop, or an Event, got "
                         f"{type(stop_requested).__name__}")
    return stop_requested


@contextmanager
def callers_random_state() -> Iterator[None]:
    """The random generators (Python's, numpy's, torch's) and Lightning's seed variables as they were before the run
    seeded them, restored after it. Why: a notebook's later draws were a function of the last run's `train.seed`,
    whatever the user had seeded, and PL_SEED_WORKERS changed the seeding of the user's own loaders."""
    import random

    import numpy as np

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
    environment = {key: os.environ.get(key) for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None: left as they are) while the block runs, then restored: a
    process that trains from Python keeps its own setting. OMP_NUM_THREADS says it too: Lightning's DDP launch sets
    cores / processes where that is unset (overriding the count), and the processes it starts read it."""
    before, environment = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if threads and environment is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        elif threads:
            os.environ["OMP_NUM_THREADS"] = environment  # type: ignore[assignment]


def _launches_workers(cfg: Config) -> bool:
    """Whether the launch starts more processes (DDP), which run `train` again later: after the first has removed
    the run that --overwrite replaces."""
    t = cfg.train
    devices = devices_value(t.devices)  # as Lightning is given it: a count, "auto", or a list of devices
    if t.num_nodes > 1:
        return True
    if devices in ("auto", -1):
        return not trains_on_cpu(t.accelerator) and torch.cuda.device_count() > 1
    if isinstance(devices, int):
        return devices > 1
    return len([d for d in devices.strip("[]").split(",") if d.strip()]) > 1


def _train(cfg: Config, out: Path, *, resume: str | Path | None, max_minutes: float | None,
           replaced: Sequence[Path] = (), stop_requested: Callable[[], bool] | None = None,
           **trainer_overrides: Any) -> TrainResult:
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    for folder in (out, out / CHECKPOINTS):  # temp files of a save that was killed (the run's own saves replace)
        for orphan in remove_orphans(folder):
            rank_zero_info(f"removed {orphan}: left by an interrupted save")
    if resume is None:
        check_init_file(cfg.model.init)  # before the data is read
    data = PosePartDataModule(cfg)
    # a resumed run keeps the record of the weights it started from (the entry `initialise_from` made)
    started = [s for s in recorded_sources(resume) if s.get("init")] if resume is not None else []
    try:
        module = PosePartModule(cfg, data.schema, pretrained=resume is None, allowed_sets=data.allowed_sets,
                                sources=[*data.describe(), *started])
    except MissingLimbsError as err:  # the data's own skeleton is what is missing, not another schema
        raise ConfigError(f"model.name: {err}") from None
    except SchemaMismatchError as err:  # e.g. the joint model on a parts-only dataset, read in its own schema
        # (before, a parts-only dataset of one's own classes was told data.schema=pascal_person_part alone: a pose
        # head no data trains, and its classes merged into PASCAL's six)
        mixed = "data.sources, data.schema a file whose category lists both: docs/training.md, \"Mixing datasets\""
        own = (f"; a parts-only dataset trains a part model (--set model.name=fcn32_vgg16), or the joint network with "
               f"a pose source mixed in ({mixed})" if err.lacks == "pose" else
               # (a walkthrough: a pose-only dataset on demo_cpu_joint was pointed at data.schema alone)
               f"; a pose-only dataset trains a pose model (--set model.name=paf_vgg16, or --config demo_cpu_paf), or "
               f"the joint network with a parts source mixed in ({mixed})" if cfg.model.name == "joint_vgg16" else "")
        raise ConfigError(f"model.name: {err}. The run reads its data in that schema: train on data that labels "
                          f"what the model predicts{own}, or set data.schema to a schema that has it, a built-in's "
                          f"name or a file (--set data.schema=pascal_person_part: the data is then read in it, its "
                          f"classes and joints mapped into PASCAL's by name)") from None
    data.bind(module.model.meta)  # targets on the model's own grid, with its sigma and PAF width
    restored, changes = (check_resumable(resume, cfg, data.schema, module.state_dict(), data.describe())
                         if resume is not None else ({}, []))
    if changes:  # (a walkthrough: a changed seed, augmentation or dataset resumed without a word)
        rank_zero_warn(f"--resume {resume}: this launch trains otherwise than the checkpoint's run: "
                       f"{'; '.join(changes)}; the run goes on with this launch's, so it is no longer the run it "
                       f"continues (with another seed or data, the rest of an epoch in progress is drawn in another "
                       f"order: some images twice, some not at all)", category=PosepartWarning)
    for key in SCHEDULE_LENGTH_KEYS:  # cosine and linear decay over the planned steps (their length is restored)
        ours, theirs = restored.pop(key, (None, None))
        if ours != theirs and cfg.optim.schedule in ("cosine", "linear"):
            rank_zero_warn(f"--resume {resume}: {key}={ours!r} (the checkpoint's: {theirs!r}): the run stops there, "
                           f"but its learning-rate schedule keeps the length planned when the run began (restored "
                           f"with its state): past it the rate stays at the schedule's end, 0 (after the rest of "
                           f"a warm-up longer than the plan), so the weights no longer learn (BatchNorm's statistics "
                           f"still move), and config.yaml, which records the new length, will not reproduce the run; "
                           f"train a new run to plan another length",
                           category=PosepartWarning)
    if restored:  # the optimizer and its schedule continue from the checkpoint: train (and record) its settings
        for key, (ours, theirs) in restored.items():
            rank_zero_warn(f"--resume {resume}: {key}={ours!r} is not used: the run continues with the checkpoint's "
                           f"{theirs!r} (what its state continues: the optimizer, the learning-rate schedule, the "
                           f"epoch's draws)", category=PosepartWarning)
        cfg = _with_values(cfg, {key: theirs for key, (_, theirs) in restored.items()})
        data.config = cfg  # its loaders read the batch size when built (a review: they kept the new one)
        module = PosePartModule(cfg, data.schema, pretrained=False, allowed_sets=data.allowed_sets,
                                sources=[*data.describe(), *started])
        data.bind(module.model.meta)
    # recorded in the checkpoints' provenance: config.yaml does not hold a Python caller's Trainer options
    module.trainer_options = {key: value if isinstance(value, (bool, int, float, str, type(None)))
                              else type(value).__name__ for key, value in trainer_overrides.items()}
    has_val = data.has_val
    _check_every_source_teaches(cfg, module, data)
    _warn_unused_settings(cfg, module)
    monitor = _monitor(cfg, module, data)
    trainer = build_trainer(cfg, out, has_val=has_val, monitor=monitor, max_minutes=max_minutes,
                            stop_requested=stop_requested, **trainer_overrides)
    check_processes(cfg, trainer.world_size)
    for path in replaced:  # --overwrite: the new run's data, model and Trainer are set up: the old run's files go now
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if trainer.is_global_zero and resume is None:  # a resume writes it once it has trained: a failed one keeps it
        dump_config(cfg, out / CONFIG_FILE)
        for concern in data.schema.concerns():  # unpaired sides, joints in no limb, a skeleton in pieces
            rank_zero_warn(concern, category=PosepartWarning)
        for source in data.describe() if cfg.data.sources else []:
            lacks = f"; lacks target joints {', '.join(source['missing_joints'])}" if source["missing_joints"] else ""
            tasks = "self-training's pseudo-labels" if source["unlabelled"] else ", ".join(source["tasks"])
            idle = source["images_without_labels"]
            idle_note = f", {idle} of them without its labels (drawn, and masked)" if idle else ""
            rank_zero_info(f"source {source['name']}: trains {tasks or 'nothing'} on "
                           f"{source['train_images']} images{idle_note} ({source['draws_per_epoch']} draws per epoch), "
                           f"validates on {source['val_images']}{lacks}")
    # A compiled LightningModule is Lightning's supported form: it trains the compiled forward and saves plain weights.
    fit_module = torch.compile(module) if cfg.train.compile else module
    stop = next(callback for callback in trainer.callbacks if isinstance(callback, StopOnSignal))
    interrupted: signal.Signals | None = None
    resumed_at = saved_step(resume) if resume is not None else None
    handlers = _signal_handlers()
    try:
        with _quiet_writer_threads():
            trainer.fit(fit_module, datamodule=data, ckpt_path=str(resume) if resume is not None else None,
                        weights_only=True)
    except OSError as err:  # where Lightning's loggers write (posepart's own writes name their file already)
        named = _run_folder_error(err, out)
        if named is err:
            raise
        raise named from None
    except SIGTERMException:  # SIGTERM or a first Ctrl-C, at a step's end: `stop` saved last.ckpt there
        if stop.signal is None:
            raise
        interrupted = stop.signal
    except SystemExit as exit_:  # Lightning's answer to a KeyboardInterrupt (a second Ctrl-C, or one before the
        # first step): exit(1) once it has shut down, Ctrl-C left ignored. The caller sees the interruption instead
        # (the CLI exits 130), and Ctrl-C works again (below).
        if stop.signal is not signal.SIGINT:
            raise
        raise KeyboardInterrupt from exit_
    finally:  # as they were, however training ended (a Ctrl-C inside Lightning's shutdown skips its own restore)
        _restore_signal_handlers(handlers)
        _close_progress_bars(trainer)
    if trainer.is_global_zero and resume is not None:
        dump_config(cfg, out / CONFIG_FILE)
    # before: such a resume printed "trained 2 epochs" like the run that trained them, the unchanged schedule unsaid
    complete = resumed_at is not None and interrupted is None and trainer.global_step == resumed_at
    if complete:
        rank_zero_warn(f"--resume {resume}: its run had already reached its planned end ({resumed_at} steps): "
                       f"nothing was trained. To train it for longer, start a new run from its weights (--set "
                       f"model.init={resume}): a resume keeps the learning-rate schedule it planned",
                       category=PosepartWarning)
    callbacks = trainer.checkpoint_callbacks  # [best, last] or [last]
    last = checkpoint_path(out)
    if trainer.global_step and callbacks[-1]._last_global_step_saved != trainer.global_step and interrupted is None:
        # stopped inside an epoch (max_time / max_steps): keep the newest state, all of it (a resume point)
        trainer.save_checkpoint(last, weights_only=False)
    # the file, named "best" in this run's folder: Lightning's own path is the one it was saved under (a run copied
    # elsewhere and resumed would report the original folder's until a better epoch)
    best = checkpoint_path(out, BEST) if monitor is not None else None
    best = best if best is not None and best.exists() else None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    # Epochs from the steps (one optimizer step per batch, a fixed number of batches per epoch): Lightning's own
    # epoch counter takes an epoch cut by max_steps / max_time for a completed one
    per_epoch = trainer.num_training_batches
    if 0 < per_epoch < math.inf:
        epochs, cut = divmod(trainer.global_step, int(per_epoch))
    else:  # no training batches were set up
        epochs, cut = trainer.current_epoch, 0
    inside = cut > 0
    return TrainResult(out=out, last=last if last.exists() else None, best=best, metrics=metrics,
                       global_step=trainer.global_step, epochs=epochs, inside_epoch=inside, rank=trainer.global_rank,
                       interrupted=interrupted.name if interrupted is not None else None,
                       signal_received=stop.received.name if stop.received is not None else None,
                       already_complete=complete, validated_at=module.validated_at,
                       out_of_time=interrupted is None and _out_of_time(trainer, epochs, inside))


def _out_of_time(trainer: pl.Trainer, epochs: int, inside: bool) -> bool:
    """Whether the launch's time budget (`LaunchTimer`) stopped the run before its planned end (`epochs` completed
    by the steps, `inside` the next: Lightning counts an epoch the timer cut as completed)."""
    timer = next((c for c in trainer.callbacks if isinstance(c, LaunchTimer)), None)
    planned = (trainer.global_step >= trainer.max_steps > 0
               or epochs >= (trainer.max_epochs or 0) > 0 and not inside)
    return timer is not None and not planned and (timer.time_remaining() or 0.0) <= 0


def _run_folder_error(err: OSError, out: Path) -> Exception:
    """An OutputError for a write into the run folder that failed in training: the folder moved or deleted meanwhile,
    or a full or read-only disk, named with what is left; `err` itself for anything else. Before (a walkthrough):
    Lightning's loggers' FileNotFoundError tracebacks, or "cannot write the output" naming no file."""
    last = checkpoint_path(out)
    name = os.fsdecode(err.filename) if err.filename is not None else f"into the run folder {out}"
    if err.errno == errno.ENOENT and not (out / CONFIG_FILE).exists():
        return OutputError(f"{out}: the run folder was moved or deleted while training ({err.strerror}: {name}); a "
                           f"moved folder resumes where it is now: posepart train --config NEW/config.yaml --resume "
                           f"NEW/checkpoints/last.ckpt --out NEW")
    if err.errno in FULL_OR_READ_ONLY:
        kept = f"; its last checkpoint, {last}, is kept: --resume it once there is room" if last.is_file() else ""
        return OutputError(f"cannot write {name}: {err.strerror}{kept}")
    return err


_TRAININGS = [0]  # `train()` calls in progress in this process (threads of a notebook may run several)
_TRAININGS_LOCK = threading.Lock()


@contextmanager
def _quiet_writer_threads() -> Iterator[None]:
    """TensorBoard's writer thread, failing to write (a full disk, a run folder deleted), printed its traceback:
    the same error reaches the training at its next write to the log (TensorBoard raises it there), where it is
    named once (`_run_folder_error`). The hook is installed once per process, and silent only while a training
    runs (concurrent `train()` calls each swapping it could leave another's in place)."""
    with _TRAININGS_LOCK:
        if not getattr(threading.excepthook, "posepart", False):
            before = threading.excepthook

            def hook(args: Any) -> None:
                if (_TRAININGS[0] and type(args.thread).__name__ == "_AsyncWriterThread"
                        and isinstance(args.exc_value, OSError)):
                    return
                before(args)

            hook.posepart = True  # type: ignore[attr-defined]
            threading.excepthook = hook
        _TRAININGS[0] += 1
    try:
        yield
    finally:
        with _TRAININGS_LOCK:
            _TRAININGS[0] -= 1


def _close_progress_bars(trainer: pl.Trainer) -> None:
    """Close the bars of Lightning's progress bar, which it closes at the end of an epoch's training or validation
    but not when a stop cuts one: an interrupted run's bar stayed open, so the next bars of the process (a notebook's)
    drew a row lower, and it printed itself again whenever the garbage collector reached it."""
    from tqdm import tqdm

    for bar in getattr(trainer.progress_bar_callback, "__dict__", {}).values():  # (None: no progress bar)
        if isinstance(bar, tqdm):
            bar.close()


def _signal_handlers() -> dict[signal.Signals, Any]:
    """The SIGINT and SIGTERM handlers of this thread's process, where it may set them (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[signal.Signals, Any]) -> None:
    for signum, handler in handlers.items():
        if handler is not None:  # None: set outside Python, cannot be put back
            signal.signal(signum, handler)
