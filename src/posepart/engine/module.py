"""`PosePartModule`: the LightningModule of a run: model + multi-task loss, optimiser/schedule, validation metrics.

Everything loop-shaped (device placement, AMP, DDP, checkpoints, logging) is Lightning's; this module only says what
one training / validation step is. Checkpoints carry `checkpoint["posepart"] = {"schema": ..., "config": ...}` as plain
JSON-able dicts, so `posepart.engine.checkpoint.load_model` can rebuild the model from the file alone.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from posepart.data.mixing import TASKS
from posepart.decode import DecodeConfig
from posepart.engine.builders import build_from_config, build_weighting, last_shared_layer, model_tasks
from posepart.engine.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY, DIGEST_KEY, provenance, weights_digest
from posepart.engine.config import ConfigError
from posepart.data.mixing import trained_tasks
from posepart.engine.finetune import initialise_from
from posepart.engine.optim import build_optimizer, build_schedule
from posepart.engine.resume import launches, resumes_inexactly, settle_epoch, setup_changes
from posepart.engine.settings import Config
from posepart.engine.self_training import SelfTraining
from posepart.evaluate import LOG_GROUP, Evaluator, Prediction, scored_parts
from posepart.errors import PosepartWarning
from posepart.evaluate_model import as_prediction, evaluation_predictor
from posepart.inference.draw import draw_result
from posepart.inference.predictor import Predictor
from posepart.losses import GradNormWeighting, LossResult, PosePartLoss
from posepart.models import ModelOutput, channels_last_
from posepart.schema import Schema
from posepart.viz import fit_within

# The longer side of the validation overlays logged to TensorBoard, which shows them at screen size. At full size a
# 12-megapixel photo's overlay was held (36 MB) until logged and went into the events file at that size, each
# validation (1.9 MB a validation for four 640 x 425 images: a walkthrough's measure).
OVERLAY_SIDE = 800


def flatten_metrics(metrics: dict[str, Any], schema: Schema, prefix: str = "val") -> dict[str, float]:
    """metrics.json dict -> {"val/seg/mean_iou": ..., "val/pose/ap": ..., "val/seg/iou/head": ...,
    "val/pose/pckh/left_elbow": ..., "val/pose/ap/view/back": ...}; None skipped."""
    flat: dict[str, float] = {}
    for task, values in metrics.items():
        if not isinstance(values, dict):
            continue
        name = LOG_GROUP.get(task, task)
        for key, value in values.items():
            if key == "iou_per_class" and isinstance(value, list):
                for cls, v in zip(schema.part_classes, value):
                    if v is not None:
                        flat[f"{prefix}/{name}/iou/{cls}"] = float(v)
            elif key == "pckh_per_joint" and isinstance(value, dict):  # (a joint's PCK_dist pixels are not
                # logged: None in an epoch where no pair counts, they would come and go as the CSV log's columns)
                flat.update({f"{prefix}/{name}/pckh/{joint}": float(v) for joint, v in value.items() if v is not None})
            elif key == "slices" and isinstance(value, dict):  # synthetic people by view / pose kind
                flat.update({f"{prefix}/{name}/ap/{field}/{kind}": float(score["ap"])
                             for field, groups in value.items() for kind, score in groups.items()
                             if score.get("ap") is not None})
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                flat[f"{prefix}/{name}/{key}"] = float(value)
    return flat


class PosePartModule(pl.LightningModule):
    """Training/validation of a `PosePartNet` on batches shaped as docs/conventions.md says."""

    def __init__(self, config: Config, schema: Schema, *, pretrained: bool = True, allowed_sets: Tensor | None = None,
                 sources: list[dict[str, Any]] | None = None) -> None:
        """`allowed_sets`: the set-valued part labels of the run's sources (`PosePartDataModule.allowed_sets`);
        `sources`: what each source feeds (`PosePartDataModule.describe()`), stored in checkpoints for reports."""
        super().__init__()
        self.config = config
        self.schema = schema
        self.sources = list(sources or [])
        self.model = build_from_config(config, schema, pretrained=pretrained)
        if pretrained and config.model.init is not None:  # fine-tuning: recorded as a source of its heads' tasks
            self.sources.append(initialise_from(self.model, config.model.init, schema, config.model))
        tasks = model_tasks(self.model)
        weighting = build_weighting(config, tasks)
        # GradNorm's W, found once (its Parameters stay the same objects when moved or re-strided)
        self._shared_layer = last_shared_layer(self.model) if isinstance(weighting, GradNormWeighting) else []
        # check_labels=False: part labels are validated where they are read (`PosePartDataset.load_parts`, then
        # mapped by tables), so the step needs no host sync to check them again.
        self.loss_fn = PosePartLoss(schema, mask_mode=config.loss.mask, weighting=weighting,
                                    heatmap_loss=config.loss.heatmap, focal_beta=config.loss.focal_beta,
                                    allowed_sets=allowed_sets if schema.has_parts else None, check_labels=False)
        self.decode_config = DecodeConfig.for_evaluation()
        self.self_training: SelfTraining | None = None  # the teacher of a run with unlabelled sources
        if config.train.self_training is not None:
            self.self_training = SelfTraining(self.model, config.train.self_training, schema,
                                              tasks=trained_tasks(self.sources))
        self._unchecked: list[tuple[int, int, dict[str, Tensor]]] = []  # (step, epoch, terms on the device)
        self._last_finite: dict[str, Tensor] = {}
        self._batch_clock: float | None = None
        self._step_start = 0.0
        self._val_items: list[tuple[int, Prediction]] = []
        self.validated_at: int | None = None  # the step of the last validation (its metrics: `train`'s result)
        self._predictor: Predictor | None = None  # during validation: the Predictor that scores it
        # What the checkpoints' provenance adds to this launch's: the Trainer options `train()` was given in Python
        # (its config.yaml does not hold them), and the records of the launches a resumed run went through before
        self.trainer_options: dict[str, Any] = {}
        self.earlier_launches: list[dict[str, Any]] = []
        self._step_result: LossResult | None = None  # the training step's losses, until `backward` takes them
        self._overlays: list[np.ndarray] = []

    def forward(self, image: Tensor) -> ModelOutput:
        if self.config.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def setup(self, stage: str) -> None:
        if self.config.train.channels_last:
            channels_last_(self.model)
            if self.self_training is not None:
                channels_last_(self.self_training.teacher)

    # -- training ------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._batch_clock = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Global RNGs (dropout) restart from (seed, step, rank) at every step: a resumed run needs no RNG state from
        # the checkpoint, and nothing that ran before (sanity validation, loader start-up) leaks into training.
        seed = (self.config.train.seed * 1_000_003 + self.global_step * 7_919 + self.global_rank * 104_729) % 2**31
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        self._step_start = time.perf_counter()
        # Lightning writes logs at its own count of optimizer steps (no gradient accumulation here: the global step).
        # Resumed from a last.ckpt saved at an epoch's end with validation, Lightning 2.6 counts the restart's
        # skipped validation as one more step, so every later row landed one step late and some were lost (a
        # walkthrough: the resumed curve's rows at 11 and 17 held steps 8 and 14): its count follows ours instead.
        loop = self.trainer.fit_loop.epoch_loop
        if loop._batches_that_stepped != self.global_step:
            loop._batches_that_stepped = self.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Throughput over the whole step (from the previous step's end, so data loading counts; the first step of an
        # epoch is timed from its own start so validation and loader start-up do not).
        now = time.perf_counter()
        since = self._batch_clock if self._batch_clock is not None else self._step_start
        size = batch["image"].shape[0] * self.trainer.world_size
        if self._logged_step(self.global_step - 1):  # the optimizer step just taken
            self.log("train/images_per_sec", size / max(now - since, 1e-9), on_step=True, on_epoch=False,
                     batch_size=batch["image"].shape[0])
        self._batch_clock = now
        if self.self_training is not None:  # the teacher follows the step just taken
            self.self_training.update(self.model)
        if isinstance(self.loss_fn.weighting, GradNormWeighting):
            self.loss_fn.weighting.renormalise()

    def _logged_step(self, step: int) -> bool:
        """Whether Lightning writes the step metrics of optimizer step `step` (0-based): every train.log_every_steps.

        Per-step values are handed to Lightning only then: its result collection costs ~0.7 ms per value, which for
        the 14 per-step values took the CPU demo's joint model from 66 to 53 images/s. The NaN check runs then too.
        """
        return (step + 1) % self.config.train.log_every_steps == 0

    def check_finite(self, *, all_ranks: bool = True) -> None:
        """Raise FloatingPointError naming the first step whose loss was NaN/inf, among the steps not yet checked.

        The step itself never waits for the device: its loss terms stay there and are checked here, in one host sync,
        every `train.log_every_steps` steps (when Lightning syncs to log anyway), at the end of every epoch and before
        every checkpoint. A NaN is therefore reported exactly, up to that many steps late; no checkpoint is written
        after it. `all_ranks`: agree across DDP ranks, so that every rank stops together instead of hanging in the
        next all-reduce (only where every rank calls this at the same point, with no other collective pending: the
        logged training steps).
        """
        # With all_ranks, every rank enters the all-reduce below whatever its list holds: an early return on an
        # empty list would let one rank skip a collective another entered.
        finite = (torch.isfinite(torch.stack([terms["total"] for *_, terms in self._unchecked])).cpu()  # the sync
                  if self._unchecked else torch.ones(0, dtype=torch.bool))
        here = bool(finite.all())
        everywhere = here
        if all_ranks and self._trainer is not None and self.trainer.world_size > 1:
            everywhere = bool(self.trainer.strategy.reduce_boolean_decision(here, all=True))
        if everywhere:
            if self._unchecked:
                self._last_finite = self._unchecked[-1][2]
                self._unchecked = []
            return
        if not self._unchecked:  # this rank had nothing left to check; another found the NaN
            raise FloatingPointError(f"loss became non-finite on another rank by step {self.global_step}. Lower "
                                     f"optim.lr or check the data.")
        bad = int((~finite).nonzero()[0]) if not here else len(finite) - 1
        step, epoch, terms = self._unchecked[bad]
        before = self._unchecked[bad - 1][2] if bad > 0 else self._last_finite
        now = {k: float(v) for k, v in terms.items()}
        broken = [k for k, v in now.items() if not math.isfinite(v)]
        # a step whose total was finite can still hold a non-finite term: "last finite terms" lists finite values only
        last = ({k: round(float(v), 6) for k, v in before.items() if math.isfinite(float(v))}
                or "none (the launch's first step)")
        kind = "nan" if math.isnan(now.get("total", math.nan)) else "non-finite"
        where = f"at step {step}" if not here else f"on another rank by step {step}"
        raise FloatingPointError(f"loss became {kind} {where} (epoch {epoch}); non-finite terms {broken}; terms then "
                                 f"{now}; last finite terms {last}. Lower optim.lr or check the data.")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        pseudo = self.self_training.label(batch, self.global_step) if self.self_training is not None else {}
        output = self(batch["image"])
        per_task = self.config.loss.aggregator != "sum" or self.config.loss.weighting == "gradnorm"
        result = self.loss_fn(output, batch, keep_tasks=per_task)
        if per_task:
            self._step_result = result  # for `backward`; a plain step keeps no state (torch.compile traces it)
        self._unchecked.append((self.global_step, self.current_epoch, result.terms))  # no host sync: check_finite
        size = batch["image"].shape[0]
        if self._logged_step(self.global_step):
            self.check_finite()
            logs: dict[str, Any] = {f"train/{k}": v for k, v in result.terms.items()}
            logs["train/lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
            logs.update({f"train/pseudo/{k}": v for k, v in pseudo.items()})  # the pseudo-label yield per image
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=size)
        self.log("train/loss", result.total.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=size,
                 sync_dist=True)
        if "skipped" in batch:
            self.log("train/skipped", batch["skipped"].sum().float(), on_step=False, on_epoch=True, reduce_fx="sum",
                     batch_size=size, sync_dist=True)
        return result.total

    def on_fit_start(self) -> None:
        check_processes(self.config, self.trainer.world_size)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """The gradient of the total (`loss.aggregator: sum`), or torchjd's aggregation of one gradient row per task
        this batch supervises (`aggregation.aggregate_task_gradients`). Under `loss.weighting: gradnorm` the task
        weights' own gradient is taken first (`GradNormWeighting.balance`)."""
        weighting = self.loss_fn.weighting
        if isinstance(weighting, GradNormWeighting) and self._step_result is not None:
            weighting.balance(self._step_result.tasks, self._step_result.present, self._shared_layer)
            self._step_result = None
        if self.config.loss.aggregator == "sum" or self._step_result is None:
            super().backward(loss, *args, **kwargs)
            return
        from posepart.engine.aggregation import aggregate_task_gradients

        aggregate_task_gradients(self._step_result, self.config.loss.aggregator,
                                 [p for p in self.model.parameters() if p.requires_grad],
                                 [p for p in self.loss_fn.parameters() if p.requires_grad])
        self._step_result = None

    def planned_steps(self) -> int:
        """Optimizer steps the config asks for (max_steps, else max_epochs x batches per epoch): a function of the
        config alone, so a run cut short (--max-minutes) and resumed follows the same schedule."""
        t = self.config.train
        world = self.trainer.world_size if self._trainer is not None else 1
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        n = len(datamodule.train_mapped) if datamodule is not None else 0
        per_epoch = -(-(-(-n // world)) // self.config.data.batch_size)
        by_epochs = t.max_epochs * per_epoch if t.max_epochs > 0 and per_epoch else 0
        if t.max_steps > 0:
            return min(t.max_steps, by_epochs) if by_epochs else t.max_steps
        return max(by_epochs, int(self.trainer.estimated_stepping_batches) if not by_epochs else by_epochs)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """`optim.name`'s optimiser over the model and the learnable task weights (what `benchmarks/bench_train.py
        --config` steps too)."""
        weighting = [p for p in self.loss_fn.parameters() if p.requires_grad]
        extra: list[dict[str, Any]] = []
        if weighting:  # task weights are not model capacity: no decay towards 0 (= weight 1)
            lr = self.config.loss.weighting_lr if self.config.loss.weighting_lr is not None else self.config.optim.lr
            extra.append({"params": weighting, "lr": lr, "weight_decay": 0.0})
        return build_optimizer(self.config.optim, self.model, extra)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.make_optimizer()
        schedule = build_schedule(self.config.optim, optimizer, self.planned_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}

    # -- validation ----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_items, self._overlays, self._predictor = [], [], None

    # Eager even under `train.compile` (Lightning compiles validation_step with the module): file reading, numpy
    # decoding and per-name logging leave dynamo nothing worth compiling, and it failed on them (numpy's setflags).
    @torch.compiler.disable
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self._predictor is None:
            # The metrics come from the Predictor users run (`posepart evaluate` scores the same way); the weights do
            # not change during validation, so one Predictor (a copy of the model, BatchNorms folded) serves every
            # batch. Made here, not at the epoch's start: under DDP the step's forward has just given every rank
            # rank 0's BatchNorm statistics (the checkpoint's), which each rank had updated on its own batches.
            self._predictor = evaluation_predictor(self.model, input_size=self.config.data.input_size,
                                                   batch_size=self.config.data.batch_size, device=self.device,
                                                   decode_config=self.decode_config, all_stages=False)
        data = self.trainer.datamodule
        items = [data.val_item(int(i)) for i in batch["index"].tolist()]  # (source, record with a unique image_id)
        images, gt_parts = zip(*batch["original"])  # decoded by the loader's workers (before: again, here)
        # In float32 even when training uses mixed precision: the logged metrics are those `posepart evaluate` gives.
        with torch.autocast(self.device.type, enabled=False):
            output = self(batch["image"])  # the validation loss, on the Mapper's batch and targets
            results = self._predictor(images)
        result = self.loss_fn(output, batch)
        size = batch["image"].shape[0]
        self.log_dict({f"val/{k}": v for k, v in result.terms.items()}, on_step=False, on_epoch=True,
                      batch_size=size, sync_dist=True)
        # broken validation images: their places scored the next image, so the epoch scored fewer (a walkthrough:
        # uncounted, and best.ckpt compared validations over other sets of images without a word)
        self.log("val/skipped", batch["skipped"].sum().float(), on_step=False, on_epoch=True, reduce_fx="sum",
                 sync_dist=True)
        for (_, record), index, image, parts, predicted in zip(items, batch["index"].tolist(), images, gt_parts,
                                                                results):
            # kept until the epoch ends: the image's part map scored into a (P, P) matrix, not the map itself
            prediction = scored_parts(as_prediction(predicted, record.image_id), parts, self.schema.num_parts)
            self._val_items.append((int(index), prediction))
            if len(self._overlays) < self.config.train.val_images and self.global_rank == 0:
                self._overlays.append(fit_within(draw_result(image, predicted, self.schema), OVERLAY_SIDE))

    def on_validation_epoch_end(self) -> None:
        items = self._val_items
        if self.trainer.world_size > 1:  # every rank scores the whole validation set: identical metrics everywhere
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, items)
            items = [item for part in gathered for item in part]
        data = self.trainer.datamodule
        learnt = trained_tasks(self.sources)  # a head no source trains is not scored (its random weights)
        heads = {task: bool(getattr(self.model, f"has_{task}", True)) and (learnt is None or task in learnt)
                 for task in TASKS}
        labelable = [source.val.labelable_parts for source in data.val_sources]
        # OKS with the sigmas each validation file gives (`scoring_schema`); pooled, those all its sources share
        scoring = [source.val.scoring_schema for source in data.val_sources]
        shared = scoring[0] if scoring and all(s.sigmas == scoring[0].sigmas for s in scoring) else self.schema
        pooled = Evaluator(shared, **heads, labelable_parts=np.any(labelable, 0) if labelable else None)
        # a run over data.sources also scores each validation source (val/<source>/seg/mean_iou, ...); val/... pools all
        per_source = [Evaluator(schema, **heads, labelable_parts=parts) for schema, parts in zip(scoring, labelable)
                      ] if self.config.data.sources else []
        # once per record: a broken sample's place holds the record that replaced it, which its own place scores too
        for index, prediction in sorted(dict(items).items()):
            source, record = data.val_item(index)
            pooled.add(record, prediction, None)  # its parts scored already (`scored_parts`)
            if per_source:
                per_source[source].add(record, prediction, None)
        metrics = flatten_metrics(pooled.compute(), self.schema)
        for source, evaluator in zip(data.val_sources, per_source):
            metrics.update(flatten_metrics(evaluator.compute(), self.schema, prefix=f"val/{source.name}"))
        for key, value in metrics.items():
            self.log(key, value, on_epoch=True, sync_dist=False, rank_zero_only=False)
        self._log_overlays()
        self._val_items, self._predictor = [], None
        if not self.trainer.sanity_checking:
            self.validated_at = self.global_step

    def _log_overlays(self) -> None:
        if not self._overlays or self.trainer.sanity_checking:
            return
        step = max(self.global_step - 1, 0)  # the optimizer step just taken: where Lightning puts the val metrics
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                for i, image in enumerate(self._overlays):
                    experiment.add_image(f"val/prediction_{i}", image, step, dataformats="HWC")
        self._overlays = []

    # -- checkpoints ---------------------------------------------------------------------------------------------
    # Rank-local checks here: no collective of ours may sit between Lightning's epoch-end metric syncs, which rank 0
    # starts alone in its progress bar (`train/loss` has prog_bar and sync_dist) and the other ranks in their logger
    # a moment later; an all-reduce of ours in between paired with the wrong one (gloo: "collective mismatch" at the
    # first epoch's end whenever steps were left unchecked). A rank that finds a NaN raises; the others then fail
    # on its closed connection instead of hanging.
    def on_train_epoch_end(self) -> None:
        self.check_finite(all_ranks=False)

    def on_train_end(self) -> None:
        self.check_finite(all_ranks=False)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = (checkpoint.get(CHECKPOINT_KEY) or {}).get("provenance") or {}
        then = record.get("world_size")
        if record:  # before: each save wrote this launch's record alone, so a resumed run forgot how it began
            self.earlier_launches = launches(record)
            if differ := setup_changes(record):  # the README's conditions for a bit-exact resume
                rank_zero_warn(f"resumed with another setup than the run's last launch ({', '.join(differ)}): the "
                               f"run goes on, but not bit for bit as it would have (README, \"Reproducibility\"); "
                               f"its checkpoints keep every launch's record (provenance[\"earlier\"])",
                               category=PosepartWarning)
        if self._trainer is not None and then is not None and then != self._trainer.world_size:  # before: silent
            rank_zero_warn(f"resumed in {self._trainer.world_size} process(es) where the run trained in {then}: the "
                           f"data is sharded and batched otherwise from here, so the run goes on but is not the one "
                           f"it would have been (nor exactly), and its epochs are counted in this launch's steps",
                           category=PosepartWarning)
        inside = settle_epoch(checkpoint)  # before Lightning restores its loops from it
        if inside is None and resumes_inexactly(checkpoint):
            rank_zero_warn("resuming from a checkpoint written inside an epoch but not by posepart's own saves (a "
                           "ModelCheckpoint every N steps of one's own?): the epoch's draws start again from its "
                           "first, so the run goes on but is not the one it would have been; posepart's last.ckpt "
                           "resumes exactly", category=PosepartWarning)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            datamodule.resume_inside = inside

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite(all_ranks=False)  # the clear message first; the parameter check below is the backstop
        for name, tensor in checkpoint["state_dict"].items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise FloatingPointError(f"refusing to write a checkpoint: parameter {name} is not finite")
        checkpoint[CHECKPOINT_KEY] = {"format": CHECKPOINT_FORMAT,
                                      DIGEST_KEY: weights_digest(checkpoint["state_dict"]),
                                      "schema": self.schema.to_category(),
                                      "config": self.config.to_dict(), "sources": self.sources,
                                      "head": self.model.meta.to_dict(), "provenance": self._provenance()}

    def _provenance(self) -> dict[str, Any]:
        """This launch's `provenance`, with the Trainer options given in Python and the earlier launches' records."""
        record = {**provenance(*(None, None) if self._trainer is None else
                               (str(self._trainer.precision), self._trainer.world_size))}
        if self.trainer_options:
            record["trainer_options"] = self.trainer_options
        if self.earlier_launches:
            record["earlier"] = self.earlier_launches
        return record


def check_processes(config: Config, world_size: int) -> None:
    """A ConfigError for settings that run in one process only, in a run of `world_size`: `train` checks before
    Lightning starts the processes (before, each printed the error), the module again for a Trainer of one's own."""
    aggregator = config.loss.aggregator
    # torchjd's rows and GradNorm's norms are taken with autograd.grad, which DDP's all-reduce hooks do not see
    key, value = (("loss.aggregator", aggregator) if aggregator != "sum" else
                  ("loss.weighting", "gradnorm") if config.loss.weighting == "gradnorm" else (None, None))
    if key is not None and world_size > 1:  # (with train.compile: refused with the config)
        raise ConfigError(f"{key}: {value!r} runs in one process only; this run has {world_size}")
