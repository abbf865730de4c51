"""Data pipeline speed: training samples per second (JPEG decode, augmentation, targets, masks) in one process, by
stage, and through a DataLoader with N worker processes.

The images are synthetic 368x368 JPEGs (1-5 people) written once to a temporary folder; every sample goes through the
training `Mapper` (random affine, photometric jitter, normalisation, heatmaps/PAFs/mask). Issue 6 asks whether the
pipeline keeps up with the GPU: compare `samples/s with N workers` to the training step's images/s (bench_train.py).

Run: .venv/bin/python benchmarks/bench_data.py [--workers 1 2] [--n 64]
Writes benchmarks/results/data_<cores>cores.json, named by the machine's core count (the 2-core CPU's and a GPU
machine's 16 cores' figures are both committed).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # each worker is one core: set before numpy is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import write_json  # noqa: E402

from posepart.data.augment import AugmentConfig, apply_affine, normalize, photometric, sample_affine  # noqa: E402
from posepart.data.format import PosePartDataset  # noqa: E402
from posepart.data.synth import write_synth  # noqa: E402
from posepart.heads import HeadMeta
from posepart.targets import build_targets  # noqa: E402
from posepart.targets.mapper import MappedDataset, Mapper, TargetConfig  # noqa: E402

SIZE = 368
cv2.setNumThreads(1)
torch.set_num_threads(1)


def stage_times(dataset: PosePartDataset, config: AugmentConfig) -> dict[str, float]:
    """Mean ms per sample of each stage, in one process (the work one worker does). The records go through twice
    and only the second pass is timed: the first call of a stage pays one-time costs (albumentations is imported and
    the photometric pipeline built on first use, about 1.5 s), which a worker pays once, not per sample."""
    rng = np.random.default_rng(0)
    for _ in range(2):
        totals = _one_pass(dataset, config, rng)
    return {key: 1e3 * value / len(dataset) for key, value in totals.items()}


def _one_pass(dataset: PosePartDataset, config: AugmentConfig, rng: np.random.Generator) -> dict[str, float]:
    """Seconds spent in each stage over all records (the Mapper's stages, in its order)."""
    schema = dataset.schema
    totals = dict.fromkeys(("read", "augment", "photometric", "normalize", "targets"), 0.0)
    for record in dataset.records:
        stamps = [time.perf_counter()]
        image, parts, ignore = dataset.load_image(record), dataset.load_parts(record), record.ignore_mask()
        stamps.append(time.perf_counter())
        affine = sample_affine(rng, (record.height, record.width), (SIZE, SIZE), config)
        image, parts, ignore, keypoints = apply_affine(affine, image, parts, ignore, record.keypoints, (SIZE, SIZE),
                                                       schema.flip_perm, schema.part_flip_perm)
        stamps.append(time.perf_counter())
        image = photometric(image, rng)
        stamps.append(time.perf_counter())
        normalize(image)
        stamps.append(time.perf_counter())
        build_targets(keypoints, ignore, parts, HeadMeta(schema))
        stamps.append(time.perf_counter())
        for key, start, end in zip(totals, stamps, stamps[1:]):
            totals[key] += end - start
    return totals


def loader_rate(mapped: MappedDataset, workers: int, batch: int, epochs: int) -> float:
    """Samples per second through a DataLoader with `workers` processes (start-up excluded: first batch untimed)."""
    loader = torch.utils.data.DataLoader(mapped, batch_size=batch, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    count, start = 0, None
    for _ in range(epochs):
        for item in loader:
            if start is None:
                start = time.perf_counter()
                continue
            count += item["image"].shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="distinct images")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = PosePartDataset.open(write_synth(Path(tmp) / "data", n=args.n, seed=0, size=SIZE, workers=2))
        stages = stage_times(dataset, AugmentConfig())
        mapped = MappedDataset(Mapper(dataset, TargetConfig(input_size=SIZE), AugmentConfig()), seed=0)
        rates = {w: loader_rate(mapped, w, args.batch, epochs=2) for w in args.workers}
    total = sum(stages.values())
    print(f"data pipeline, {SIZE}x{SIZE} synthetic JPEGs, PASCAL schema, one process: {total:.1f} ms/sample "
          f"({1e3 / total:.0f} samples/s per core)")
    for key, ms in stages.items():
        print(f"  {key:<12} {ms:6.2f} ms  ({100 * ms / total:4.1f} %)")
    for workers, rate in rates.items():
        print(f"DataLoader, {workers} worker process(es){' (in the main process)' if workers == 0 else ''}: "
              f"{rate:.0f} samples/s")
    meta = {"input": SIZE, "images": args.n, "batch": args.batch, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "opencv": cv2.__version__}
    write_json(f"data_{os.cpu_count()}cores.json", {"meta": meta, "stage_ms": stages, "ms_per_sample": total,
                             "loader_samples_per_s": {str(k): v for k, v in rates.items()}})


if __name__ == "__main__":
    main()
