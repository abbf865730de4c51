"""One row of the pose-learning ablation (docs/training.md, "What limits the pose branch"): a learning figure.

Trains a shipped demo config on the demo's own data (`posepart demo`'s synthetic train/val sets and size, `easy`
scenes, generated once under --data) with extra `--set` overrides, scores the last checkpoint on the validation
images, prints `change | images seen | AP | AP50 | PCKh | mean IU | training s` and appends the row to
<results>/ablate_pose.jsonl (with PCKh per joint, the AP of small and medium people and the AP per view and pose kind
of the synthetic people). One change per row, against a baseline run with the same --images.

Run (one at a time: the training seconds are only comparable on an otherwise idle machine):
    .venv/bin/python benchmarks/ablate_pose.py --label baseline --images 8000
    .venv/bin/python benchmarks/ablate_pose.py --label "sigma 8" --images 8000 --set data.sigma=8
    .venv/bin/python benchmarks/ablate_pose.py --label "pose alone" --images 8000 --tasks pose   (a single-task arm)
    (GPU) python benchmarks/ablate_pose.py --label "s0 64k" --images 64000 --set train.accelerator=gpu \
              --set data.workers=4    (the demo config names the CPU and no loader processes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from posepart.data.synth import DEMO_SIZE, DEMO_TRAIN_SCENES, DEMO_VAL_SCENES, SceneConfig
from posepart.demo import synth_split
from posepart.jobs import train_and_score
from posepart.engine.config import load_config
from posepart.engine.trainer import trains_on_cpu


def training_device(run: Path) -> str:
    """What trained the row, for its seconds: read from the run's resolved config by the engine's own rule."""
    accelerator = load_config(run / "config.yaml").train.accelerator
    if trains_on_cpu(accelerator):
        return platform.processor() or platform.machine()
    return torch.cuda.get_device_name() if torch.cuda.is_available() else accelerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="what this row changes against the baseline (required unless --data-only)")
    parser.add_argument("--config", default="demo_cpu_joint.yaml", help="shipped config (default: %(default)s)")
    parser.add_argument("--images", type=int, default=8000, help="training images seen (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", type=Path, default=Path("runs/ablate/data"), help="cached synthetic data")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/ablate/<label>)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--n-train", type=int, default=DEMO_TRAIN_SCENES,
                        help=f"synthetic training scenes (default: the demo's {DEMO_TRAIN_SCENES})")
    parser.add_argument("--n-val", type=int, default=DEMO_VAL_SCENES,
                        help=f"synthetic validation scenes (default: the demo's {DEMO_VAL_SCENES})")
    parser.add_argument("--scene", choices=("easy", "benchmark"), default="easy",
                        help="the demo's easy scenes or the full synthetic benchmark (crowds, clutter, up to 5 people)")
    parser.add_argument("--size", type=int, default=DEMO_SIZE, help="input pixels, data and training (default: "
                        "%(default)s, the demo's); the heatmap sigma scales with it")
    parser.add_argument("--tasks", nargs="+", choices=("pose", "parts"), default=None,
                        help="train only these tasks, the others masked (the demo's single-task arms of the joint "
                             "network); default: every task the model has")
    parser.add_argument("--data-only", action="store_true",
                        help="write (or reuse) the cached data under --data and stop: rows run in parallel then share "
                             "one folder without racing to write it")
    args = parser.parse_args()
    if args.label is None and not args.data_only:
        parser.error("--label is required")
    if args.threads:
        torch.set_num_threads(args.threads)

    scene = SceneConfig.easy() if args.scene == "easy" else SceneConfig()
    train_set = synth_split(args.data, "train", n=args.n_train, seed=0, size=args.size, scene=scene)
    val_set = synth_split(args.data, "val", n=args.n_val, seed=0, size=args.size, scene=scene)
    if args.data_only:
        return
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.label)
    out = args.out or Path("runs/ablate") / slug
    start = time.perf_counter()
    # No validation during training (val_every_epochs past the run): the row scores the last checkpoint once.
    metrics, _, _ = train_and_score(out, args.config, train_set.annotation_file.parent,
                                    val_set.annotation_file.parent, train_size=len(train_set), size=args.size,
                                    images=args.images, quiet=True, tasks=tuple(args.tasks) if args.tasks else None,
                                    extra=["train.val_every_epochs=100000", *args.overrides])
    seconds = time.perf_counter() - start
    pose, seg = metrics.get("pose") or {}, metrics.get("segmentation") or {}
    row = {"label": args.label, "scene": args.scene, "size": args.size, "config": args.config,
           "overrides": args.overrides,
           **({"tasks": args.tasks} if args.tasks else {}),
           "images": args.images,
           "ap": pose.get("ap"), "ap50": pose.get("ap50"), "pckh": pose.get("pckh"), "mean_iou": seg.get("mean_iou"),
           # COCOeval's AP over people under and over 32^2 px^2: a change of scale can trade one for the other
           "ap_small": pose.get("ap_small"), "ap_medium": pose.get("ap_medium"),
           "pckh_per_joint": pose.get("pckh_per_joint"),  # which joints a budget or a change moves
           "ap_by_slice": {field: {value: score["ap"] for value, score in groups.items()}  # which people (synthetic)
                           for field, groups in (pose.get("slices") or {}).items()} or None,
           "seconds": round(seconds, 1), "threads": torch.get_num_threads(), "device": training_device(out)}

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    print(f"| {args.label} | {args.images} | {fmt(row['ap'])} | {fmt(row['ap50'])} | {fmt(row['pckh'])} | "
          f"{fmt(row['mean_iou'])} | {seconds:.0f} |")
    results = Path(os.environ.get("POSEPART_BENCH_RESULTS") or Path(__file__).parent / "results")
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "ablate_pose.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(f"wrote {results / 'ablate_pose.jsonl'}")


if __name__ == "__main__":
    main()
