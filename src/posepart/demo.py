"""The main job on the embedded synthetic data: `posepart demo` (what `make demo` runs).

synth -> inspect -> oracle evaluation -> the seed report's comparison: seg-only (FCN32), pose-only (PAF) and joint
models, plus the joint network trained with one task masked (so the report can say whether sharing helps, not only
whether the head does), trained under the same budget from the shipped `demo_cpu_*.yaml` configs, scored on the same
validation set, in one report with the seed's Table 1 layout, prediction overlays and curves.

The budget is a number of training images, not minutes: the learning-rate schedule is planned over it (a run cut by
the clock would stop mid-schedule, at a high learning rate) and the numbers are the same on every machine. The
default fits the 2-core CPU machine's 15 minutes for the whole job; `train_minutes` adds a wall-clock cap.

The models train several at once (`jobs`: 3, or one per core up to the five), in separate processes, each on one
thread (`DEMO_THREADS`) whatever the machine's cores. Why one: these small convolutions at batch 8 scale poorly
over threads (on 2 cores, two 1-thread trainings together get through 1.26x the images of one 2-thread training,
BENCHMARKS.md, "The demo's CPU throughput"), and the thread count changes the numbers (oneDNN's kernels sum in
another order): before, each model had the cores divided by the jobs, so an 8-core machine trained on 2 threads
and did not give the README's table.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posepart.arguments import available_cores
from posepart.data.format import ANNOTATIONS_FILE, PosePartDataset
from posepart.data.inspect import inspect_dataset
from posepart.data.synth import DEMO_SIZE, DEMO_TRAIN_SCENES, DEMO_VAL_SCENES, SceneConfig, write_synth
from posepart.errors import UsageError
from posepart.evaluate import HEADLINE, evaluate_oracle, logged_name
from posepart.files import read_earlier_json, write_json_atomic
from posepart.heads import HeadMeta
from posepart.inference.outputs import METRICS_FILE
from posepart.jobs import TrainJob, run_jobs, scaled_sigma
from posepart.report import plot_training_curves, write_report
from posepart.viz import grid, overlay, save_rgb

DEFAULT_TRAIN_IMAGES = 10000  # per model, bf16: the five fit the 2-core CPU machine's 15 minutes at DEMO_SIZE (README)
FLOAT32_TRAIN_IMAGES = 4000  # per model on a CPU without native bf16, whose float32 steps are ~2.5x slower (README)
DEMO_THREADS = 1  # intra-op threads per model, on every machine: the numbers depend on it (module docstring)


def demo_size(size: int | None) -> int:
    """The image and network input side of `demo` / `study --size`: DEMO_SIZE by default; a side the network cannot
    take (not a multiple of its input multiple) is refused before any data is generated."""
    if size is None:
        return DEMO_SIZE
    if size % HeadMeta.input_multiple:
        raise UsageError(f"--size {size}: must be a multiple of {HeadMeta.input_multiple} (the network's input "
                         f"multiple)")
    return size


@dataclass(frozen=True)
class DemoModel:
    """One arm of the comparison: a shipped config, its run folder, and the tasks it trains (None: whatever its heads
    predict; ("pose",) trains the joint network with the part task masked on every sample, and vice versa)."""

    config: str
    folder: str
    tasks: tuple[str, ...] | None = None


TASK_CURVES = {task: logged_name(*metric) for task, metric in HEADLINE.items()}  # the validation curve of each task


def masked_tasks(tasks: tuple[str, ...] | None) -> tuple[str, ...]:
    """The tasks a run trains with masked labels (None trains all): their heads' scores are of random weights."""
    return () if tasks is None else tuple(task for task in TASK_CURVES if task not in tasks)


# The seed's single-task models, the joint network with one task masked (same architecture: a difference to the joint
# row is the sharing, not the head), and the joint model.
DEMO_MODELS = {
    "FCN32 (parts only)": DemoModel("demo_cpu_fcn32.yaml", "demo_cpu_fcn32"),
    "PAF (pose only)": DemoModel("demo_cpu_paf.yaml", "demo_cpu_paf"),
    "joint net, parts masked": DemoModel("demo_cpu_joint.yaml", "demo_cpu_joint_pose_only", ("pose",)),
    "joint net, pose masked": DemoModel("demo_cpu_joint.yaml", "demo_cpu_joint_parts_only", ("parts",)),
    "joint": DemoModel("demo_cpu_joint.yaml", "demo_cpu_joint"),
}


def default_train_images() -> int:
    """The demo's budget per model on this machine: `DEFAULT_TRAIN_IMAGES` where the CPU runs bfloat16 natively (the
    demo configs' `train.precision: auto`), else `FLOAT32_TRAIN_IMAGES`, so that `make demo` keeps to its 15 minutes
    on either. Each budget gives the same numbers on every machine of its kind; the report states which it used."""
    from posepart.engine.trainer import native_bf16

    return DEFAULT_TRAIN_IMAGES if native_bf16(on_cpu=True) else FLOAT32_TRAIN_IMAGES


def machine_kind() -> str:
    """What the demo's numbers depend on beside the code, the libraries and the threads (README, "Reproducibility"):
    the CPU's kind (`cpu_kind`), first whether it runs the configs' bfloat16 natively (`train.precision: auto`)."""
    from posepart.engine.checkpoint import cpu_kind

    cpu = cpu_kind()
    cap = f", oneDNN capped at {cpu['onednn_max_isa']}" if cpu["onednn_max_isa"] else ""
    return f"{'bfloat16' if cpu['bf16'] else 'float32'} on a CPU with {cpu['capability']}{cap}"


def synth_split(data: Path, split: str, *, n: int, seed: int, size: int, scene: SceneConfig) -> PosePartDataset:
    """The demo's synthetic `split` ("train" or "val") as `data`/`split`: the training scenes drawn from `seed`, the
    validation scenes from `seed + 1` (what `posepart demo`, `posepart study` and the pose ablation score on).
    Generated once; reused when the same (n, seed, size, scene) is already on disk."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root, seed = data / split, seed + (split == "val")
    stamp = root / "synth.json"
    wanted = {"n": n, "seed": seed, "size": size, "scene": dataclasses.asdict(scene)}
    if not (read_earlier_json(stamp) == wanted and (root / ANNOTATIONS_FILE).is_file()):
        write_synth(root, n=n, seed=seed, size=size, workers=2, config=scene, progress=True, overwrite=True)
        write_json_atomic(stamp, wanted)
    return PosePartDataset.open(root)


def run_dir(out: Path, label: str) -> Path:
    """The folder of the `DEMO_MODELS` entry `label` (checkpoints, logs, metrics.json)."""
    return out / DEMO_MODELS[label].folder


def train_models(out: Path, train_root: Path, val_root: Path, *, train_size: int, size: int, images: int,
                 minutes: float | None, jobs: int) -> dict[str, tuple[dict[str, Any], list[Any], Path | None]]:
    """Train and score every `DEMO_MODELS` entry (`run_jobs`, `jobs` at once), each with and without test-time
    flipping."""
    demo_jobs = {label: TrainJob(run_dir(out, label), model.config, model.tasks) for label, model in DEMO_MODELS.items()}
    return run_jobs(demo_jobs, train_root, val_root, train_size=train_size, size=size, images=images, minutes=minutes,
                    parallel=jobs, flip=True, threads=DEMO_THREADS)


def default_jobs() -> int:
    """Models trained at once by default: 3 (on 2 cores, three 1-thread trainings beside each other get through the
    most images), or one per core up to every `DEMO_MODELS` entry. The numbers do not depend on it."""
    return min(len(DEMO_MODELS), max(3, available_cores()))


def run_demo(out: Path, *, n_val: int = DEMO_VAL_SCENES, size: int = DEMO_SIZE, seed: int = 0,
             train_images: int | None = None, n_train: int = DEMO_TRAIN_SCENES, train_minutes: float | None = None,
             scene: SceneConfig = SceneConfig.easy(), jobs: int | None = None) -> Path:
    """synth -> inspect -> oracle [-> train + evaluate the `DEMO_MODELS` when train_images > 0, `jobs` at once] ->
    report.md; returns the report path. train_images None: `default_train_images()`; jobs None: `default_jobs()`."""
    out = Path(out)
    jobs = default_jobs() if jobs is None else jobs
    train_images = default_train_images() if train_images is None else train_images
    start = time.perf_counter()
    val = synth_split(out / "data", "val", n=n_val, seed=seed, size=size, scene=scene)
    counts = inspect_dataset(val).counts
    tiles = [overlay(val.load_image(r), val.schema, parts=val.load_parts(r), keypoints=r.keypoints)
             for r in val.records[:8]]
    sheet = grid(tiles, columns=4, row_labels=["ground truth"] * 2, schema=val.schema)
    figures = [save_rgb(out / "samples.png", sheet)]
    from posepart.engine.config import load_config, shipped_config

    # The ceiling of the trained models: the ground truth decoded on the joint model's grid (stride, sigma, PAF width).
    joint = load_config(shipped_config(DEMO_MODELS["joint"].config))
    oracle = evaluate_oracle(val, input_size=size, stride=joint.model.pose_stride, sigma=scaled_sigma(joint, size),
                             paf_width=joint.data.paf_width)
    rows: dict[str, dict[str, Any]] = {"oracle (decoded ground truth)": oracle}
    # as `posepart evaluate --out` writes them, with the schema they were scored in (`posepart compare` reads it)
    scored_in = {"schema": val.schema.to_category()}
    write_json_atomic(out / "oracle_metrics.json", {**rows["oracle (decoded ground truth)"], **scored_in})
    if train_images > 0:
        train_set = synth_split(out / "data", "train", n=n_train, seed=seed, size=size, scene=scene)
        curves, predictions, labels = {}, [], []
        trained = train_models(out, train_set.annotation_file.parent, val.annotation_file.parent,
                               train_size=len(train_set), size=size, images=train_images, minutes=train_minutes,
                               jobs=jobs)
        for label, (metrics, overlays, curve) in trained.items():
            rows[label] = metrics
            write_json_atomic(run_dir(out, label) / METRICS_FILE, {**metrics, **scored_in})
            predictions += overlays
            labels += [label] if len(overlays) == 4 else []  # a row of four per model, labelled with its name
            if curve is not None:
                curves[label] = curve
        rows_named = labels if len(labels) == len(trained) else None
        sheet = grid(predictions, columns=4, schema=val.schema, row_labels=rows_named)
        figures.append(save_rgb(out / "predictions.png", sheet))
        hide = {label: [TASK_CURVES[task] for task in masked_tasks(DEMO_MODELS[label].tasks)] for label in curves}
        figures.append(plot_training_curves(curves, out / "curves.png", hide))
    title = (f"posepart demo: {counts['images']} synthetic validation images ({size}x{size}, seed {seed + 1}), "
             f"{counts['people']} labelled people; training on {train_images} images per model ({n_train} distinct, "
             f"seed {seed}, {DEMO_THREADS} thread each, {machine_kind()})"
             + (f", at most {train_minutes:g} min each" if train_minutes else "")
             + f"; the oracle at the joint model's pose stride {joint.model.pose_stride}"
             + f"; scenes: {scene}")
    report = write_report(out, title, rows, val.schema, figures)
    with open(report, "a", encoding="utf-8") as f:
        f.write(f"\nFinished in {time.perf_counter() - start:.0f} s.\n")
    return report
