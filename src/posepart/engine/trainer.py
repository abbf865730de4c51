"""The Lightning Trainer of a run, configured from `config.train`: precision (bfloat16 where the hardware runs it
natively), callbacks (checkpoints, the launch's time budget, a stop on SIGTERM or Ctrl-C at a step's end, a moving
average of the weights), loggers (CSV and TensorBoard), atomic checkpoint writes, and the hush on Lightning's own
chatter (`quiet_lightning`). `posepart.engine.train` runs it; this module knows of the run folder only where its
files go (`engine.run_folder`), nothing of the data or of resuming.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any, Callable, Iterator

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer, TQDMProgressBar, WeightAveraging
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.optim.swa_utils import get_ema_avg_fn

from posepart.engine.checkpoint import load_checkpoint
from posepart.engine.config import ConfigError
from posepart.engine.run_folder import BEST, CHECKPOINTS, CSV_LOGS, LAST, TENSORBOARD_LOGS, checkpoint_path
from posepart.engine.settings import Config
from posepart.errors import PosepartWarning
from posepart.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO: tmp file + fsync + os.replace on save; weights-only on load (`load_checkpoint`).
    Lightning's own saves through an fsspec transaction whose temporary file lives in the system temp folder and is
    then moved: across filesystems a copy, so a crash can leave a truncated checkpoint. (Here, not beside
    `load_checkpoint`: loading a model for inference imports no Lightning, 3 s and 265 MB.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_write(path, lambda f: _torch_save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")


def _torch_save(checkpoint: dict[str, Any], f: Any) -> None:
    """torch.save, raising what stopped it. Why: torch's zip writer, closed after a write failed, raises its own
    RuntimeError ("unexpected pos ...") over the error it died of, so a full disk or a file-size limit was a
    traceback (not `atomic_write`'s error naming the file), and a second Ctrl-C during a save a traceback, not
    "interrupted"."""
    handled = sys.exc_info()[1]  # a save made while an exception is handled: that one did not stop it
    try:
        torch.save(checkpoint, f)
    except RuntimeError as err:
        if isinstance(err.__context__, (OSError, KeyboardInterrupt)) and err.__context__ is not handled:
            raise err.__context__ from None
        raise


def devices_value(value: str) -> Any:
    """'auto' | '2' | '0,1' (Lightning's own parsing) -> int when it is a count."""
    value = str(value).strip()
    return int(value) if value.lstrip("-").isdigit() else value


class LaunchTimer(Timer):
    """Lightning's `max_time` Timer, as a budget for this launch: a resumed run gets its full `--max-minutes` again.
    Lightning's own restores the elapsed time from the checkpoint, so a run resumed with the budget it was cut by
    stops at once, trains 0 steps and exits 0 (a SLURM requeue loop would never move on)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = 0


class StopOnSignal(Callback):
    """SIGTERM (a preemption, `timeout`, `docker stop`, Slurm) and a first Ctrl-C end training at the end of a
    training step, with `last.ckpt` saved there (`--resume` continues it exactly, tested); a second Ctrl-C, or one
    before the first step, stops at once. `signal` says which signal cut the run; `received`, one that came at all.

    Why not Lightning's own handling: it turns SIGTERM into a SIGTERMException at a step's end but then exits 0
    having saved nothing since the last epoch, and takes Ctrl-C wherever it lands, exiting 1: the epoch in progress
    was lost either way, and a requeue loop saw success. Under DDP its SIGTERM handler broadcasts from inside the
    handler, a collective the other ranks never match, and each rank then raises at the end of the step in which its
    own signal landed: a job whose ranks were signalled (Slurm signals every task) hung in 2 runs of 3. Here a signal
    only records itself (for SIGTERM, in the slot of Lightning's handler, which Lightning installs and removes);
    after every training step the ranks agree (one all-reduce of the signal number, the larger winning) and all stop
    at the same step. A stop at an epoch's last step waits for the epoch's validation and checkpoint; a signal
    between steps stops at the end of the next one; one at the run's last step lets it finish.

    `stop_requested`, called after every step: True stops the run as SIGTERM does (a stop asked for by another
    thread or by a parent process, which needs no signal to arrive in a window where it is handled)."""

    def __init__(self, last: Path, stop_requested: Callable[[], bool] | None = None) -> None:
        self.last = last
        self.stop_requested = stop_requested
        self.signal: signal.Signals | None = None  # what cut the run
        self.received: signal.Signals | None = None  # a signal this process received, whether or not it cut the run
        self.saved_step: int | None = None  # the step `last` was saved at, when it was saved here
        self._decided = False  # the ranks have agreed on a signal
        self._ctrl_c = False  # one came (a second stops at once)
        self._previous_sigint: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning registers its SIGTERM handler after this hook, from the connector's notifier (with any handler
        # the caller had, which it also calls and later restores): this one's instead
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None:
            connector._sigterm_notifier_fn = self._on_sigterm

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.received = signal.SIGTERM

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._ctrl_c:
            raise KeyboardInterrupt  # a second Ctrl-C: at once
        self._ctrl_c = True
        self.received = self.received or signal.SIGINT

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # signal handlers live in the main thread only; a Ctrl-C the launch ignores (`posepart train ... &` from a
        # script) stays ignored. Until now a Ctrl-C stops at once (data setup, the sanity check).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._decided:
            return
        if self.received is None and self.stop_requested is not None and self.stop_requested():
            self.received = signal.SIGTERM
        received = int(self.received or 0)
        if trainer.world_size > 1:  # every rank takes the same decision at the same step
            flag = torch.tensor([received], device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max").item())
        if not received:
            return
        self._decided = True
        epoch_loop = trainer.fit_loop.epoch_loop
        epoch_ends = epoch_loop.batch_progress.is_last_batch
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        if trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step or epoch_ends and last_epoch:
            return  # the run ends at this step anyway (its planned end, --max-minutes): it finishes, whole
        self.signal = signal.Signals(received)
        if not epoch_ends:  # else `on_train_epoch_end`, once the epoch is validated and saved
            trainer._signal_connector.received_sigterm = True  # Lightning's stop at this step's end (no setter)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signal is not None:
            trainer._signal_connector.received_sigterm = True  # Lightning stops after the epoch's end hooks

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        try:
            if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C, or one before training started
                self.signal = signal.SIGINT
            elif isinstance(exception, SIGTERMException) and self.signal is not None:
                self._save_stop(trainer)
        finally:  # after the save, so that a Ctrl-C during it is a second one
            self._restore()

    def _save_stop(self, trainer: pl.Trainer) -> None:
        # raised after a completed step; after an epoch's end hooks the epoch's own last.ckpt is this step's
        if trainer.checkpoint_callbacks[-1]._last_global_step_saved == trainer.global_step:
            self.saved_step = trainer.global_step
            return
        # the epoch counted as Lightning counts one that max_steps or --max-minutes ended (processed, not
        # completed), which `resume.settle_epoch` continues where it stopped, the sampler skipping what was drawn
        trainer.fit_loop.epoch_progress.increment_processed()
        trainer.save_checkpoint(self.last, weights_only=False)  # all of it: a resume point
        self.saved_step = trainer.global_step


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except where a run is resumed in another folder than the one it saved to.
    Lightning then forgets the best score whenever the folder's path changed, so a run moved or copied (another
    machine, a renamed folder) and resumed in its copy replaced the copy's best.ckpt at its next validation, even with
    a worse model. Here a folder that holds the files the saved state names (the copy) keeps the score, its paths
    re-rooted; a folder that does not (`--resume` into another `--out`) starts its best afresh, said in one warning
    (Lightning's names its private fields)."""

    def _generate_state_key(self, **key: Any) -> str:
        return f"{ModelCheckpoint.__qualname__}{key!r}"  # Lightning's: the checkpoints of either class resume alike

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_in = state_dict.get("dirpath")
        if saved_in is None or self.dirpath is None:  # (the same on every rank: the state and the config are)
            return super().load_state_dict(state_dict)
        named = state_dict.get("best_model_path") or ""
        below = _below(named, str(saved_in))
        # its own folder; a copy of it (no best saved yet, stopped before a validation: nothing to lose); or another
        ours = str(saved_in) == str(self.dirpath) or not named or below is not None and Path(
            self.dirpath, *below).is_file()
        if _rank_zero_decides(ours):  # (re-rooted onto the folder it is in: nothing moves where that is its own)
            return super().load_state_dict(_rerooted(state_dict, str(saved_in), Path(self.dirpath)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            super().load_state_dict(state_dict)
        if self.monitor is not None:  # once per run: the last.ckpt callback has no score to lose
            rank_zero_warn(f"resumed into {self.dirpath}, another folder than the one its run saved to ({saved_in}): "
                           f"{BEST}.ckpt here will be the best of the validations from now on (the run's earlier "
                           f"best stays in its own folder)", category=PosepartWarning)


def _rank_zero_decides(value: bool) -> bool:
    """Rank 0's `value` on every rank of a distributed run (as it is). Why: each rank looks at its own disk, and
    without a shared file system only rank 0's holds the checkpoints it saved; ranks that disagreed on a copied run
    held different best scores, and Lightning's top-k check then runs its all-reduce on some ranks only (a hang).
    Every rank calls it (a collective) whatever its own answer."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return bool(box[0])


def _below(path: str, folder: str) -> tuple[str, ...] | None:
    """The parts of `path` below `folder` (None if it is not below it), both read as the machine that saved them
    wrote them. Why: a run saved on Windows and copied to Linux names `C:\\runs\\x\\checkpoints`, which a POSIX
    Path takes as one odd file name, so the copy was not recognised (a Windows Path reads POSIX paths already)."""
    windows = PureWindowsPath(folder)
    flavour = PureWindowsPath if windows.drive or ("\\" in folder and "/" not in folder) else PurePath
    inner, outer = flavour(path), flavour(folder)
    return inner.relative_to(outer).parts if inner.is_relative_to(outer) else None


def _rerooted(state: dict[str, Any], old: str, new: Path) -> dict[str, Any]:
    """A ModelCheckpoint state with every path under `old` moved under `new`."""
    def move(path: Any) -> Any:
        below = _below(path, old) if path else None
        return path if below is None else str(new.joinpath(*below))

    paths = {key: move(state.get(key)) for key in ("best_model_path", "kth_best_model_path", "last_model_path")}
    best_k = {move(path): score for path, score in (state.get("best_k_models") or {}).items()}
    return {**state, **paths, "best_k_models": best_k, "dirpath": str(new)}


def checkpoint_callbacks(dirpath: Path, monitor: str | None, mode: str) -> list[ModelCheckpoint]:
    """[best, last]: `best.ckpt` by `monitor` (when there is one) and `last.ckpt` after every training epoch.

    Two callbacks because Lightning 2.6's `save_last` only writes last.ckpt in a step where a top-k checkpoint was
    also written (i.e. when the monitored metric improved). The last one saves at train-epoch end, which Lightning runs
    after that epoch's validation, so last.ckpt also holds the best callback's updated state.
    """
    callbacks: list[ModelCheckpoint] = []
    if monitor:
        callbacks.append(RunCheckpoint(dirpath=dirpath, filename=BEST, monitor=monitor, mode=mode, save_top_k=1,
                                       auto_insert_metric_name=False, enable_version_counter=False))
    callbacks.append(RunCheckpoint(dirpath=dirpath, filename=LAST, monitor=None, save_top_k=1,
                                   save_on_train_epoch_end=True, enable_version_counter=False))
    return callbacks


class EMAWeights(WeightAveraging):
    """An exponential moving average of the weights (and BatchNorm statistics), updated after every optimizer step
    (Lightning's `WeightAveraging`): validation, the saved `state_dict` and the final model use the average; a
    checkpoint also keeps the raw weights, so --resume continues the raw run and its average (tested). A run stopped
    inside an epoch (--max-minutes, max_steps) saves after training ends, when only the average is left: resuming
    it restarts the raw weights from the average."""

    def __init__(self, decay: float) -> None:
        super().__init__(avg_fn=get_ema_avg_fn(decay))


def native_bf16(*, on_cpu: bool) -> bool:
    """Whether bfloat16 matmuls and convolutions run natively: on a CPU with AVX512-BF16 or AMX (oneDNN), on a CUDA
    GPU of compute capability 8.0 or more. Elsewhere torch emulates them, slower than float32."""
    if on_cpu:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, *, on_cpu: bool) -> str:
    """`train.precision` as Lightning takes it: "auto" is bf16-mixed where bfloat16 is native (`native_bf16`), else
    32-true. Why: on a 2-core CPU without AVX512-BF16 (AMD Zen 3, most laptops) the demo's bf16 autocast made each
    step 15x slower than float32, where AVX512-BF16 makes it 1.7x faster; the AP per image is the same (training.md).
    Other values pass through."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(on_cpu=on_cpu) else "32-true"


def trains_on_cpu(accelerator: str) -> bool:
    """Whether `train.accelerator` puts the run on the CPU ("auto" does where torch finds no CUDA device)."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def build_trainer(cfg: Config, out: Path, *, has_val: bool, monitor: str | None,
                  max_minutes: float | None = None, stop_requested: Callable[[], bool] | None = None,
                  **overrides: Any) -> pl.Trainer:
    """The Trainer of a run (callbacks, loggers, checkpoint IO); `stop_requested` goes to `StopOnSignal`,
    `overrides` straight to `pl.Trainer`."""
    t = cfg.train
    minutes = max_minutes if max_minutes is not None else t.max_minutes
    on_cpu = trains_on_cpu(t.accelerator)
    precision = resolve_precision(t.precision, on_cpu=on_cpu)
    if precision != t.precision:
        rank_zero_info(f"train.precision: {t.precision} -> {precision} on this {'CPU' if on_cpu else 'accelerator'}")
    kwargs: dict[str, Any] = dict(
        accelerator=t.accelerator,
        devices=devices_value(t.devices),
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,
        deterministic=t.deterministic,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        default_root_dir=out,
        # the timer before the stop on signals, which leaves a step the timer ends to it (`StopOnSignal`)
        callbacks=[*checkpoint_callbacks(out / CHECKPOINTS, monitor, t.best_mode),
                   *([LaunchTimer(timedelta(minutes=minutes))] if minutes is not None else []),
                   StopOnSignal(checkpoint_path(out), stop_requested),
                   *([EMAWeights(t.ema_decay)] if t.ema_decay is not None else []),
                   *([progress_bar()] if overrides.get("enable_progress_bar", True) else []),
                   *overrides.pop("callbacks", [])],
        logger=[CSVLogger(out, name=CSV_LOGS), TensorBoardLogger(out, name=TENSORBOARD_LOGS)],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=t.log_every_steps,
        check_val_every_n_epoch=t.val_every_epochs,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=None if has_val else 0,
        use_distributed_sampler=False,  # PosePartDataModule shards itself (EpochSampler / ShardSampler)
        enable_progress_bar=True,
    )
    kwargs.update(overrides)
    if "bf16" in precision and on_cpu and not native_bf16(on_cpu=True):
        rank_zero_warn(f"train.precision={t.precision}: this CPU has no native bfloat16 (AVX512-BF16/AMX), so bf16 "
                       f"autocast is emulated and about 15x slower than float32; set train.precision=auto or 32-true",
                       category=PosepartWarning)
    try:
        trainer = pl.Trainer(**{k: v for k, v in kwargs.items() if v is not None})
    except (MisconfigurationException, ValueError) as err:  # e.g. more devices than the machine has
        raise ConfigError(f"train: Lightning refuses accelerator={t.accelerator!r}, devices={t.devices!r}, "
                          f"strategy={t.strategy!r}, precision={t.precision!r}: {err}") from None
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        # (a walkthrough: ddp_spawn printed "trained 0 epochs (0 steps)" for a whole run, and SIGTERM to the
        # process group killed it, exit -15, with the epoch in progress lost)
        method = getattr(trainer.strategy, "_start_method", "spawn")
        n = trainer.world_size
        way = ("train.strategy=ddp (the command run once per process; from a notebook, run `posepart train` in a "
               "terminal) or train.devices=1" if n > 1 else "train.strategy=auto (one device: one process)")
        raise ConfigError(f"train.strategy={t.strategy!r}: Lightning would train in {n} child process{'es' * (n > 1)} "
                          f"it starts by {method} (ddp_spawn, ddp_fork, ddp_notebook, or auto in a notebook), which "
                          f"keep{'s' * (n == 1)} the training's step counts and its stop on Ctrl-C or SIGTERM (saved "
                          f"at the step) to {'themselves' if n > 1 else 'itself'}. Set {way}")
    return trainer


# Steps between redraws of the progress bar where the console is no terminal (nohup, Slurm, a CI log): every
# redraw is a line's worth of bytes in the file (a walkthrough: 1.7 MB for 6,000 steps, 20-30 MB for a long run)
LOGGED_BAR_EVERY = 100


def progress_bar() -> TQDMProgressBar:
    """Lightning's progress bar (on stdout), redrawn at every step on a terminal, every `LOGGED_BAR_EVERY` steps into
    a file."""
    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by an object without one, or closed
        terminal = False
    return TQDMProgressBar(refresh_rate=1 if terminal else LOGGED_BAR_EVERY)


def check_accelerator(accelerator: str) -> None:
    """train.accelerator naming hardware this machine lacks: a ConfigError naming the key, before any work."""
    from posepart.inference.backends import unavailable_hardware

    missing = unavailable_hardware(accelerator)
    if missing:
        raise ConfigError(f"train.accelerator: {accelerator!r}, but this machine has no {missing} device "
                          f"(torch finds none available); use cpu or auto")


# Lightning's advertising, its environment chatter and the deprecation warnings its own code triggers in torch:
# nothing a posepart user can act on, so hidden unless `train(verbose=True)` (`posepart train --verbose`). Real
# warnings stay.
_NOISE_MESSAGES = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:", "IPU available:",
                   # which limit ended a run: `posepart train`'s summary says it, and this said "max_epochs reached"
                   # where --max-minutes had cut the run (a walkthrough)
                   "`Trainer.fit` stopped: `max_")
_NOISE_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                   r"Precision .* is not supported by the model summary",
                   # DDP: every rank scores the whole validation set (gathered first), so its metrics are the same on
                   # every rank already; Lightning advises averaging them, once per metric and epoch
                   r"It is recommended to use `self\.log\('val/",
                   # a resume inside an epoch from posepart's saves is exact (the sampler is a function of seed and
                   # epoch and skips the draws trained, `resume.settle_epoch`; tested bit for bit): Lightning cannot
                   # see that, and warns; of the others posepart warns itself (`resume.resumes_inexactly`)
                   r"You're resuming from a checkpoint that ended before the epoch ended",
                   # a small dataset (fewer batches an epoch than train.log_every_steps): Lightning counts the steps
                   # to log over the whole run, not within an epoch, so the curves have their points anyway
                   r"The number of training batches \(\d+\) is smaller than the logging interval",
                   # a resume continues in its own folder (documented); any other run into a folder holding a run is
                   # refused unless --overwrite, which clears it (a notebook walkthrough: printed at every resume)
                   r"Checkpoint directory .* exists and is not empty")
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_NOISE_MESSAGES)


@contextmanager
def quiet_lightning(verbose: bool = False) -> Iterator[None]:
    """Within the block, drop Lightning's noise (above) from its loggers and warnings; `verbose` keeps everything."""
    if verbose:
        yield
        return
    drop = _DropNoise()
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    with warnings.catch_warnings():
        for pattern in _NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)
