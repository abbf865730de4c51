"""Training and scoring models as jobs, shared by `posepart demo`, `posepart study` and the benchmarks.

One model: `train_and_score` trains a shipped config on a budget of images (its schedule planned over them) and
scores its last checkpoint as `posepart evaluate` would, leaving SCORE_FILE in its run folder (what the score depends
on, by digest, so a study run again reuses it: `finished_score`). Many: `run_jobs` trains them `parallel` at once,
each in its own process with the cores split between them (or the threads asked for: the demo's one per model),
under one combined progress line.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from posepart.arguments import available_cores
from posepart.data.format import ANNOTATIONS_FILE, PosePartDataset
from posepart.engine.run_folder import checkpoint_path, csv_logs
from posepart.errors import Interrupted, PosepartError, refuse_while_a_child_imports_main
from posepart.files import code_digest, file_sha1, read_earlier_json, write_json_atomic
from posepart.processes import ignore_stop_signals, stop_signals_blocked

VALIDATIONS = 4  # at most this many validation passes per model in training (the curves); each costs n_val images
SCORE_FILE = "score.json"  # a scored model's inputs and metrics, in its run folder (`train_and_score`)


def planned_steps(images: int, batch_size: int) -> int:
    """The optimizer steps of a model trained on `images` images (at least one)."""
    return max(images // batch_size, 1)


def scaled_sigma(cfg: Any, size: int) -> float:
    """A config's heatmap sigma at input side `size`: the configs are written for their own input size and the
    sigma is in input pixels, so it scales with the input."""
    return cfg.data.sigma * size / cfg.data.input_size


def train_and_score(out: Path, config_name: str, train_root: Path, val_root: Path, *, train_size: int, size: int,
                    images: int, minutes: float | None = None, quiet: bool = False,
                    extra: list[str] | tuple[str, ...] = (), tasks: tuple[str, ...] | None = None,
                    sources: list[dict[str, Any]] | None = None, flip: bool = False,
                    stop_requested: Callable[[], bool] | None = None,
                    ) -> tuple[dict[str, Any], list[Any], Path | None]:
    """Train one model on `images` training images (its schedule planned over them; `minutes` caps the wall
    time) from the `train_size` images under train_root, score its last checkpoint; -> (metrics, overlays,
    metrics.csv). `quiet`: no progress bar. `extra`: more `--set` strings, applied last (ablations). `tasks`: train
    only these (the data as one `data.sources` entry with `tasks`); the masked head's scores are left out.
    `sources`: `data.sources` entries to train on instead (subsets of train_root: `posepart study`), with epochs of
    `train_size` samples; validation and scoring stay on val_root. `flip`: score it with test-time flipping too
    (`posepart evaluate --flip`: one more forward pass per image), under metrics["flip"]. `stop_requested`: `train`'s
    stop (polled after every step); one asked for by the end of training also skips the scoring (`Interrupted`)."""
    from posepart.data.mixing import map_dataset
    from posepart.engine.checkpoint import load_model
    from posepart.engine.config import load_config, shipped_config
    from posepart.engine.train import stop_check, train
    from posepart.evaluate_model import evaluate_model

    import torch

    stop_requested = stop_check(stop_requested)  # an Event, as train takes it

    inputs = score_inputs(config_name, train_root, val_root, train_size=train_size, size=size, images=images,
                          minutes=minutes, extra=extra, tasks=tasks, sources=sources, flip=flip,
                          threads=torch.get_num_threads())
    # An earlier run of these very inputs that was stopped (Ctrl-C, SIGTERM: its last.ckpt is where it stopped, its
    # record has no metrics) is continued, exactly, not trained again (before: from step 0)
    started, last = read_earlier_json(out / SCORE_FILE), checkpoint_path(out)
    resume = last if (isinstance(started, dict) and started.get("inputs") == inputs and "metrics" not in started
                      and last.is_file()) else None
    if resume is not None:
        print(f"{out}: continuing its interrupted training from {last}", file=sys.stderr)
    else:  # an earlier run's, of other inputs: never to be continued as this one's (`--overwrite` removes the rest)
        last.unlink(missing_ok=True)
    # replaces an earlier score: a run that fails now leaves none to be taken for it
    write_json_atomic(out / SCORE_FILE, {"inputs": inputs})
    cfg = load_config(shipped_config(config_name), extra)  # the batch size the run will have
    steps = planned_steps(images, cfg.data.batch_size)
    every = max(1, math.ceil(steps * cfg.data.batch_size / max(train_size, 1) / VALIDATIONS))  # in epochs
    if sources is not None:  # JSON is YAML: the override's value is parsed safely, whatever the paths contain
        data = [f"data.sources={json.dumps(sources)}", f"data.epoch_size={train_size}"]
    elif tasks is None:
        data = [f"data.train={train_root}", f"data.val={val_root}"]
    else:  # JSON is YAML: the override's value is parsed safely, whatever the paths contain
        source = {"name": "synth", "train": str(train_root), "val": str(val_root), "tasks": list(tasks)}
        data = [f"data.sources={json.dumps([source])}"]
    # scored on last.ckpt: an arm that trains one task must not have best.ckpt follow the other's metric
    follow = [] if tasks is None and sources is None else ["train.best_metric=val/total"]
    overrides = [*data, f"data.input_size={size}",
                 f"data.sigma={scaled_sigma(cfg, size):g}", f"train.max_steps={steps}",
                 "train.max_epochs=-1", f"train.val_every_epochs={every}", *follow, *extra]
    cfg = load_config(shipped_config(config_name), overrides)
    # overwrite: a demo (or an ablation row) run again replaces its previous run of that model
    result = train(cfg, out, resume=resume, max_minutes=minutes, overwrite=resume is None,
                   stop_requested=stop_requested, **({"enable_progress_bar": False} if quiet else {}))
    stopped_by = result.interrupted or result.signal_received
    if stopped_by is None and stop_requested is not None and stop_requested():
        stopped_by = "SIGTERM"  # asked for in the run's last step or after it: scored when run again, not now
    if stopped_by:  # Ctrl-C or SIGTERM stops the demo or study, not only this model's training; run again, it
        raise Interrupted(getattr(signal, stopped_by))  # continues this model (score.json records no metrics)
    if result.last is None:
        raise RuntimeError(f"{config_name}: training wrote no checkpoint under {out}")
    loaded = load_model(result.last)
    val = PosePartDataset.open(val_root)
    if val.schema != loaded.schema:  # `posepart study --set data.schema=...`: scored as `posepart evaluate` does
        val = map_dataset(val, loaded.schema)
    # a head trained with its task masked is neither scored nor drawn: its output is of random weights; an arm is
    # scored on its own tasks (one started from a joint model's weights, `model.init`, has both heads trained)
    scored = loaded.tasks if tasks is None or loaded.tasks is None else tuple(t for t in loaded.tasks if t in tasks)
    metrics, overlays = evaluate_model(loaded.model, val, input_size=loaded.input_size, overlays=4, progress=False,
                                       tasks=scored)
    if flip:  # what the Predictor's flip merge adds: the same model, one more (mirrored) forward pass per image
        flipped, _ = evaluate_model(loaded.model, val, input_size=loaded.input_size, progress=False,
                                    tasks=scored, flip=True)
        metrics["flip"] = {task: flipped[task] for task in ("segmentation", "pose") if task in flipped}
    write_json_atomic(out / SCORE_FILE, {"inputs": inputs, "metrics": metrics,
                                         "checkpoint": {"file": str(result.last.relative_to(out)),
                                                        "sha1": file_sha1(result.last)}})
    logs = csv_logs(out)
    return metrics, overlays, logs[-1] if logs else None


def score_inputs(config_name: str, train_root: Path, val_root: Path, *, train_size: int, size: int, images: int,
                 minutes: float | None = None, extra: list[str] | tuple[str, ...] = (),
                 tasks: tuple[str, ...] | None = None, sources: list[dict[str, Any]] | None = None,
                 flip: bool = False, threads: int | None = None) -> dict[str, Any]:
    """What a `train_and_score` result depends on, as JSON values: the arguments (and the intra-op threads it trains
    with, which change the floating-point sums and so the weights), and the contents of what they name
    (the config file, the annotation files of the data and of each source's subset) and posepart's own code, by
    digest. Its run folder's SCORE_FILE records them beside the metrics, so that a study run again reuses a model
    trained and scored with the same, and with nothing else (`finished_score`)."""
    from posepart.engine.config import load_config, shipped_config

    cfg = load_config(shipped_config(config_name), extra)
    named = {"model.init": cfg.model.init, "model.pretrained": cfg.model.pretrained, "data.schema": cfg.data.schema}
    annotations = [Path(train_root) / ANNOTATIONS_FILE, Path(val_root) / ANNOTATIONS_FILE]
    for source in sources or []:
        for split in ("train", "val"):
            where = source.get(split)
            if isinstance(where, dict) and where.get("annotations"):
                annotations.append(Path(where["annotations"]))
            elif isinstance(where, str):  # a dataset root
                annotations.append(Path(where) / ANNOTATIONS_FILE)
    return json.loads(json.dumps({
        "config": config_name, "train": str(Path(train_root).resolve()), "val": str(Path(val_root).resolve()),
        "train_size": train_size, "size": size, "images": images, "minutes": minutes, "extra": list(extra),
        "tasks": None if tasks is None else list(tasks), "sources": sources, "flip": flip, "threads": threads,
        "digests": {"config file": file_sha1(shipped_config(config_name)),
                    "annotations": [file_sha1(path) for path in annotations], "posepart code": code_digest(),
                    # the files a setting names (a --set model.init=FILE replaced by another model)
                    "files set": {key: file_sha1(Path(value)) for key, value in named.items()
                                  if value is not None and Path(value).is_file()}}}))


def job_threads(parallel: int) -> int:
    """The intra-op threads each model of `run_jobs` trains with: the cores shared by the `parallel` worker
    processes (at least one), or this process's own when it trains them one after another itself."""
    if parallel <= 1:
        import torch

        return torch.get_num_threads()
    return max(1, available_cores() // parallel)


def finished_score(out: Path) -> dict[str, Any] | None:
    """The {"inputs", "metrics", "checkpoint"} a finished `train_and_score` left in `out`, or None (none, or not
    such a record); `scored_checkpoint` says whether the checkpoint it scored is still there."""
    saved = read_earlier_json(out / SCORE_FILE)
    return saved if isinstance(saved, dict) and {"inputs", "metrics"} <= set(saved) else None


def scored_checkpoint(out: Path, saved: dict[str, Any]) -> bool:
    """Whether the checkpoint a SCORE_FILE record scored is still the one in `out` (not trained again or resumed
    there since; a record of an older version names none)."""
    scored = saved.get("checkpoint")
    return isinstance(scored, dict) and file_sha1(out / str(scored.get("file"))) == scored.get("sha1")


_STOP: Any = None  # in a worker process of `run_jobs`: the event its parent sets when the jobs are to stop


def _init_worker(stop: Any) -> None:
    """A `run_jobs` worker: it leaves Ctrl-C and SIGTERM to its parent, which sets `stop`; a training polls it after
    every step (`train`'s `stop_requested`: a stop at the step's end, saved). Why: an idle worker killed by the
    terminal's Ctrl-C breaks the pool, which kills the others mid-step. The stop does not depend on a signal reaching
    the worker while its training handles one: when it was forwarded as SIGTERM, the demo's signal test saw a model
    train to its end and be scored after a Ctrl-C (twice in many suites; the lost signal's cause not found)."""
    global _STOP
    _STOP = stop
    ignore_stop_signals()  # started with both blocked (`run_jobs`): a Ctrl-C while it imported printed tracebacks


def _train_job(log: Path, threads: int, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], list[Any], Path | None]:
    """`train_and_score` in a worker process: `threads` intra-op threads, all output into `log`."""
    import torch

    if _STOP is not None and _STOP.is_set():  # queued before the stop
        raise Interrupted(signal.SIGTERM)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:  # fd level: Lightning's and C++ messages land there too
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    torch.set_num_threads(threads)
    return train_and_score(*args, quiet=True, stop_requested=_STOP.is_set if _STOP is not None else None, **kwargs)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's worker processes (its private table: the executor has no public one)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError):  # ended meanwhile
            os.kill(process.pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # (Windows has no SIGKILL)


@contextmanager
def _stopping_workers(pool: ProcessPoolExecutor, stop: Any) -> Iterator[list[int]]:
    """While `run_jobs` waits (main thread only): a first Ctrl-C or SIGTERM to this process, or to its whole process
    group from a terminal or Slurm, stops the jobs: none not yet started starts, and the training ones stop at a
    step's end, saved (`stop`, which they poll); `run_jobs` then raises `Interrupted`. A second Ctrl-C kills the
    workers at once. Before: a stopped model's worker took the next queued model and trained it in full, and SIGTERM
    killed this process alone, leaving its workers training."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        if received and signum == signal.SIGINT:
            _kill_workers(pool)
            raise KeyboardInterrupt
        if not received:
            received.append(signum)
            stop.set()  # the jobs in training stop at a step's end, one not yet started as it starts

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def _steps_logged(run: Path, since: float) -> int:
    """The last training step in a run's CSV log written after `since` (Lightning flushes it every 100 steps): a job's
    progress as the parent process can see it; 0 before the first flush."""
    step = 0
    for log in csv_logs(run):
        try:
            if log.stat().st_mtime < since:  # a previous demo's log, about to be replaced
                continue
            with open(log, newline="", encoding="utf-8") as f:
                step = max([step, *(int(row["step"]) + 1 for row in csv.DictReader(f) if row.get("step"))])
        except (OSError, ValueError, KeyError):  # being written or replaced right now: read it at the next poll
            continue
    return step


@dataclass(frozen=True)
class TrainJob:
    """One model to train and score with `train_and_score`: its run folder, shipped config, the tasks it trains and
    scores (None: all its heads), its `data.sources` entries (None: the whole training set), more `--set`s and its
    budget in images (None: the one `run_jobs` is given)."""

    out: Path
    config: str
    tasks: tuple[str, ...] | None = None
    sources: tuple[dict[str, Any], ...] | None = None
    extra: tuple[str, ...] = ()
    images: int | None = None

    def steps(self, images: int) -> int:
        """The optimizer steps it will train (its budget, or `images`, at its config's batch size after `extra`)."""
        from posepart.engine.config import load_config, shipped_config

        batch_size = load_config(shipped_config(self.config), self.extra).data.batch_size
        return planned_steps(self.images or images, batch_size)


class TrainingFailed(PosepartError, RuntimeError):
    """Models of `run_jobs` trained in worker processes failed on a user's mistake (their data or config)."""


def run_jobs(jobs: dict[str, TrainJob], train_root: Path, val_root: Path, *, train_size: int, size: int, images: int,
             minutes: float | None, parallel: int, flip: bool = False, threads: int | None = None,
             ) -> dict[str, tuple[dict[str, Any], list[Any], Path | None]]:
    """Train and score every job (label -> job), `parallel` at once, each in its own process with `threads` intra-op
    threads (None: `job_threads(parallel)`) and its log in job.out/train.log, under one combined progress line; 1 =
    one after another in this process, with progress bars. `flip`: score each with test-time flipping too
    (`train_and_score`). Returns {label: (metrics, overlays, metrics.csv)} in the order of `jobs`."""
    refuse_while_a_child_imports_main("run_jobs()")
    common: dict[str, Any] = dict(train_size=train_size, size=size, minutes=minutes, flip=flip)

    def arguments(job: TrainJob) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ((job.out, job.config, train_root, val_root),
                dict(tasks=job.tasks, sources=None if job.sources is None else list(job.sources),
                     extra=job.extra, images=job.images or images, **common))

    if parallel <= 1:
        from posepart.engine.train import intra_op_threads

        results = {}
        with intra_op_threads(threads):
            for label, job in jobs.items():
                args, kwargs = arguments(job)
                results[label] = train_and_score(*args, **kwargs)
        return results
    # of the parallelism asked for, not of the jobs left: the same numbers either way
    threads = threads or job_threads(parallel)
    parallel = min(parallel, len(jobs))
    budgets = " or ".join(str(n) for n in sorted({job.images or images for job in jobs.values()}))
    print(f"training {len(jobs)} models, {parallel} at once with {threads} thread(s) each, on {budgets} images "
          f"each; logs: <model folder>/train.log under {Path(os.path.commonpath([str(j.out) for j in jobs.values()]))}",
          flush=True)
    results = {}
    failed: list[tuple[str, Exception]] = []
    start = time.perf_counter()
    planned = {label: job.steps(images) for label, job in jobs.items()}
    since = time.time()
    # spawn: fresh interpreters, so no OpenMP thread pool is inherited in a state fork cannot copy.
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    with ProcessPoolExecutor(max_workers=parallel, mp_context=context, initializer=_init_worker,
                             initargs=(stop,)) as pool, _stopping_workers(pool, stop) as received:
        futures = {}
        with stop_signals_blocked():  # the workers are started by the submits, and inherit the mask
            for label, job in jobs.items():
                args, kwargs = arguments(job)
                futures[pool.submit(_train_job, job.out / "train.log", threads, *args, **kwargs)] = label
        pending = set(futures)
        # One combined progress line over all models' steps, read from their logs (the workers print nothing here).
        with tqdm(total=sum(planned.values()), desc="training", unit="step", file=sys.stdout, mininterval=5) as bar:
            while pending:
                done, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                # a stopped model is not finished: its bar stays at the steps it logged
                finished = {futures[f] for f in futures if f not in pending} if not received else set()
                bar.n = sum(planned[label] if label in finished else
                            min(_steps_logged(jobs[label].out, since), planned[label]) for label in planned)
                bar.refresh()
                for future in done:
                    label = futures[future]
                    try:
                        results[label] = future.result()
                    except Interrupted:  # stopped and saved: the stop is reported below
                        continue
                    except Exception as err:  # noqa: BLE001 - reported with its log below; the others carry on
                        failed.append((label, err))
                        continue
                    seg, pose = results[label][0].get("segmentation") or {}, results[label][0].get("pose") or {}
                    scores = ", ".join(f"{k} {v:.3f}" for k, v in (("mean IU", seg.get("mean_iou")),
                                                                      ("OKS AP", pose.get("ap"))) if v is not None)
                    bar.write(f"  {label}: {scores} ({time.perf_counter() - start:.0f} s)", file=sys.stdout)
    if received:
        raise Interrupted(received[0])
    if failed:  # a user's mistake (bad data, config) in every failed job: one error line; else a bug, a traceback
        lines = [f"{label}: {type(err).__name__}: {err} (log: {jobs[label].out / 'train.log'})"
                 for label, err in failed]
        mistakes = all(isinstance(err, PosepartError) for _, err in failed)
        raise (TrainingFailed if mistakes else RuntimeError)("training failed: " + "; ".join(lines))
    return {label: results[label] for label in jobs}
