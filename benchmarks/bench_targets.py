"""Target-building speed on one core: ms per image of `build_targets` for 1 / 10 / 20 people (PASCAL schema,
368x368 input, stride 8), with a breakdown into heatmaps, PAFs and the pose mask.

People are random stick figures grown along the skeleton, each filling a random box whose side scales as
1/sqrt(people) (one large person, or a crowd of smaller ones). Every image has an ignore region (a crowd box plus a
letterbox band), so the mask is really downsampled, and a part map. Goal: <= 0.5 ms per image for 10 people.

Run: .venv/bin/python benchmarks/bench_targets.py   (writes benchmarks/results/targets.json)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy is imported

import functools  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from posepart.heads import HeadMeta  # noqa: E402
from posepart.schema import Schema  # noqa: E402
from posepart.targets import build_targets, downsample_mask, heatmaps, pafs  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode import best_of  # noqa: E402
from common import write_json  # noqa: E402

cv2.setNumThreads(1)

SIZE, STRIDE, SIGMA, PAF_WIDTH = 368, 8, 7.0, 1.0
PEOPLE = (1, 10, 20)
IMAGES = 30  # distinct images per setting
REPEATS = 20  # timed calls per image (the minimum is kept, then averaged over images)
GOAL_MS = 0.5  # for 10 people


def stick_figure(rng: np.random.Generator, schema: Schema, box: np.ndarray) -> np.ndarray:
    """(K, 3) joints grown along the skeleton from joint 0 in random directions, scaled to fill box (x0, y0, x1, y1)."""
    k = schema.num_joints
    xy = np.full((k, 2), np.nan)
    xy[0] = 0.0
    while np.isnan(xy[:, 0]).any():
        for a, b in schema.skeleton:
            if np.isnan(xy[a, 0]) != np.isnan(xy[b, 0]):
                src, dst = (a, b) if np.isnan(xy[b, 0]) else (b, a)
                angle = rng.uniform(0, 2 * np.pi)
                xy[dst] = xy[src] + rng.uniform(0.6, 1.0) * np.array([np.cos(angle), np.sin(angle)])
    lo, hi = xy.min(0), xy.max(0)
    scale = np.min((box[2:] - box[:2]) / np.maximum(hi - lo, 1e-6))
    out = np.zeros((k, 3), np.float32)
    out[:, :2] = (xy - lo) * scale + box[:2]
    out[:, 2] = rng.choice([1, 2], k, p=[0.3, 0.7])
    return out


def random_sample(rng: np.random.Generator, schema: Schema, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keypoints (n, K, 3), ignore (H, W) bool, parts (H, W) uint8) for one synthetic training sample."""
    people = []
    for _ in range(n):
        side = rng.uniform(0.5, 0.9) * SIZE / np.sqrt(n)
        x0, y0 = rng.uniform(0, SIZE - side, 2)
        people.append(stick_figure(rng, schema, np.array([x0, y0, x0 + side, y0 + side])))
    ignore = np.zeros((SIZE, SIZE), bool)
    band = int(rng.integers(0, 60))
    ignore[:band] = True  # letterbox padding
    x0, y0 = rng.integers(0, SIZE - 60, 2)
    ignore[y0 : y0 + 50, x0 : x0 + 40] = True  # a crowd region
    parts = rng.integers(0, schema.num_parts, (SIZE, SIZE)).astype(np.uint8)
    return np.stack(people), ignore, parts


def main() -> None:
    schema = Schema.pascal_person_part()
    rng = np.random.default_rng(0)
    out_hw = (SIZE // STRIDE, SIZE // STRIDE)
    rows = []
    for n in PEOPLE:
        times: dict[str, list[float]] = {"total": [], "heatmaps": [], "pafs": [], "mask": []}
        for _ in range(IMAGES):
            kp, ignore, parts = random_sample(rng, schema, n)
            head = HeadMeta(schema, pose_stride=STRIDE, sigma=SIGMA, paf_width=PAF_WIDTH)
            full = functools.partial(build_targets, kp, ignore, parts, head)
            times["total"].append(best_of(full, REPEATS))
            times["heatmaps"].append(best_of(lambda: heatmaps(kp, out_hw, STRIDE, SIGMA), REPEATS))
            times["pafs"].append(best_of(lambda: pafs(kp, schema.skeleton, out_hw, STRIDE, PAF_WIDTH), REPEATS))
            supervise = ~ignore
            times["mask"].append(best_of(lambda: downsample_mask(supervise, STRIDE), REPEATS))
        row: dict[str, float | int] = {"people": n}
        for key, values in times.items():
            row[f"{key}_ms"] = 1e3 * float(np.mean(values))
        row["total_ms_p90"] = 1e3 * float(np.quantile(times["total"], 0.9))
        rows.append(row)
    print(f"build_targets, PASCAL schema ({schema.num_joints} joints, {schema.num_limbs} limbs), {SIZE}x{SIZE} input, "
          f"stride {STRIDE}, sigma {SIGMA}, 1 thread, {IMAGES} images x best of {REPEATS}")
    print(f"{'people':>6} {'ms/image':>9} {'p90 ms':>7} {'heatmaps':>9} {'pafs':>7} {'mask':>7}")
    for r in rows:
        print(f"{r['people']:>6} {r['total_ms']:>9.3f} {r['total_ms_p90']:>7.3f} {r['heatmaps_ms']:>9.3f} "
              f"{r['pafs_ms']:>7.3f} {r['mask_ms']:>7.3f}")
    ten = next(r for r in rows if r["people"] == 10)["total_ms"]
    print(f"goal <= {GOAL_MS} ms for 10 people: {'met' if ten <= GOAL_MS else 'NOT met'} ({ten:.3f} ms)")
    meta = {"schema": "pascal_person_part", "input": SIZE, "stride": STRIDE, "sigma": SIGMA, "paf_width": PAF_WIDTH,
            "threads": 1, "images": IMAGES, "repeats": REPEATS, "goal_ms_10_people": GOAL_MS,
            "numpy": np.__version__, "opencv": cv2.__version__, "machine": platform.processor() or platform.machine()}
    write_json("targets.json", {"meta": meta, "rows": rows})


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
