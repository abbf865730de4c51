"""Decoder speed on one core: ms per image for 1 / 10 / 20 people (PASCAL schema, 368x368 input, stride 8 or the
--stride given), plus the fraction of people recovered with every joint within 1 px, from maps rendered here from
random synthetic skeletons. Also where the time goes: the decoder's phases timed one by one (peaks, pair scoring,
matching + assembly, the rest).

Then the worst case: the maps of an untrained model (smooth noise: a peak in every few cells of every joint's map),
which training's first validations decode, for the PASCAL schema and a 133-joint one (COCO-WholeBody's count).

Run: taskset -c 0 .venv/bin/python benchmarks/bench_decode.py [--stride 4]
     (writes benchmarks/results/decode.json, or decode_stride4.json)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from common import write_json  # noqa: E402

from posepart.decode import DecodeConfig, decode, find_peaks_flat, score_limbs  # noqa: E402
from posepart.decode.assembly import assemble  # noqa: E402
from posepart.decode.peaks import Peaks  # noqa: E402
from posepart.decode.compiled import numba  # noqa: E402
from posepart.heads import HeadMeta  # noqa: E402
from posepart.schema import Schema  # noqa: E402

SIZE, STRIDE, SIGMA = 368, 8, 7.0  # STRIDE: --stride sets it
PEOPLE = (1, 10, 20)
IMAGES = 30  # distinct images per setting
REPEATS = 20  # timed decodes per image and round (the minimum over repeats and rounds is kept, then averaged)
ROUNDS = 3


def synth_skeleton(rng: np.random.Generator, schema: Schema, box: np.ndarray) -> np.ndarray:
    """(K, 3) joints of a random stick figure grown along the skeleton from joint 0 (random directions, lengths),
    then scaled and shifted to fill `box` = (x0, y0, x1, y1)."""
    k = schema.num_joints
    xy = np.full((k, 2), np.nan)
    xy[0] = 0.0
    edges = list(schema.skeleton)
    while np.isnan(xy[:, 0]).any():
        for a, b in edges:
            if np.isnan(xy[a, 0]) != np.isnan(xy[b, 0]):
                src, dst = (a, b) if np.isnan(xy[b, 0]) else (b, a)
                ang = rng.uniform(0, 2 * np.pi)
                xy[dst] = xy[src] + rng.uniform(0.6, 1.0) * np.array([np.cos(ang), np.sin(ang)])
        xy[np.isnan(xy[:, 0]) & ~np.isin(np.arange(k), np.array(edges).ravel())] = 0.0
    lo, hi = xy.min(0), xy.max(0)
    scale = np.min((box[2:] - box[:2]) / np.maximum(hi - lo, 1e-6))
    out = np.zeros((k, 3))
    out[:, :2] = (xy - lo) * scale + box[:2]
    out[:, 2] = 2
    return out


def random_people(rng: np.random.Generator, schema: Schema, n: int) -> np.ndarray:
    """n non-overlapping people (n, K, 3): one per slot of a 5x4 grid, inset by 14 px so the same joint of two people
    is >= 28 px apart."""
    gx, gy = 5, 4
    sw, sh = SIZE / gx, SIZE / gy
    slots = rng.choice(gx * gy, size=n, replace=False)
    boxes = [np.array([(s % gx) * sw + 14, (s // gx) * sh + 14, (s % gx + 1) * sw - 14, (s // gx + 1) * sh - 14])
             for s in slots]
    return np.stack([synth_skeleton(rng, schema, b) for b in boxes])


def render(people: np.ndarray, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth maps, vectorised over people: max-merged Gaussians (+ background) and averaged unit-vector PAFs on
    cells within 1 cell of each limb."""
    h = w = SIZE // STRIDE
    half = (STRIDE - 1) / 2
    cx = np.arange(w) * STRIDE + half
    x, y = people[..., 0], people[..., 1]  # (N, K)
    g = np.exp(-((cx[None, None, None, :] - x[..., None, None]) ** 2
                 + (cx[None, None, :, None] - y[..., None, None]) ** 2) / (2 * SIGMA**2))  # (N, K, h, w)
    hm = np.zeros((schema.heatmap_channels, h, w))
    hm[:-1] = g.max(0)
    hm[-1] = 1 - hm[:-1].max(0)
    sk = np.array(schema.skeleton)
    pa = (people[:, sk[:, 0], :2] - half) / STRIDE  # (N, L, 2)
    d = (people[:, sk[:, 1], :2] - half) / STRIDE - pa
    u = d / np.linalg.norm(d, axis=-1, keepdims=True)
    gy, gx = np.mgrid[0:h, 0:w].astype(float)
    rel = np.stack([gx - pa[..., 0, None, None], gy - pa[..., 1, None, None]], -1)  # (N, L, h, w, 2)
    t = np.clip((rel * d[:, :, None, None]).sum(-1) / (d * d).sum(-1)[..., None, None], 0, 1)
    on = np.linalg.norm(rel - t[..., None] * d[:, :, None, None], axis=-1) <= 1.0  # (N, L, h, w)
    paf = (on[..., None] * u[:, :, None, None]).sum(0) / np.maximum(on.sum(0), 1)[..., None]  # (L, h, w, 2)
    return hm.astype(np.float32), paf.transpose(0, 3, 1, 2).reshape(-1, h, w).astype(np.float32)


def recovered(decoded: list, truth: np.ndarray, tol: float = 1.0) -> int:
    """True people matched by a decoded person with every joint found and within tol px."""
    hits = 0
    for t in truth:
        hits += any(
            np.all(p.keypoints[:, 2] > 0) and np.abs(p.keypoints[:, :2] - t[:, :2]).max() <= tol for p in decoded
        )
    return hits


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` calls after one warm-up call, in seconds."""
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def phases(hm: np.ndarray, paf: np.ndarray, schema: Schema) -> dict[str, float]:
    """Seconds per phase of `decode` (each the best of REPEATS calls on its own): peaks, pair scoring, matching +
    assembly; "rest" is the whole decode minus these (validation, one-joint people, fragments, person scores)."""
    cfg = DecodeConfig()
    skeleton = np.asarray(schema.skeleton, np.int64)
    head = HeadMeta(schema, pose_stride=STRIDE, sigma=SIGMA)

    def peak_search() -> Peaks:  # the call `decode` makes
        return find_peaks_flat(hm, cfg.peak_threshold, num_joints=schema.num_joints,
                               sigma_cells=head.heatmap_sigma_cells, radius=cfg.window(head))

    peaks = peak_search()
    connections = score_limbs(peaks, paf, skeleton, cfg)
    n_peaks = len(peaks.score)

    out = {"peaks": best_of(peak_search, REPEATS),
           "pair_scoring": best_of(lambda: score_limbs(peaks, paf, skeleton, cfg), REPEATS),
           "match_assemble": best_of(lambda: assemble(connections, skeleton, schema.num_joints, n_peaks), REPEATS)}
    out["rest"] = max(best_of(lambda: decode(hm, paf, head), REPEATS) - sum(out.values()), 0.0)
    return out


def tree_schema(joints: int, seed: int = 0) -> Schema:
    """A schema of `joints` joints joined into a random tree (each joint's limb to an earlier one)."""
    rng = np.random.default_rng(seed)
    return Schema(keypoints=tuple(f"j{i}" for i in range(joints)), part_classes=(), name=f"tree{joints}",
                  skeleton=tuple((int(rng.integers(0, i)), i) for i in range(1, joints)))


def noise_maps(rng: np.random.Generator, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Maps like an untrained network's: uniform noise blurred by a Gaussian of one cell, heatmaps in [0, 0.5]."""
    h = w = SIZE // STRIDE

    def smooth(n: int, shift: float) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(rng.random((h, w)).astype(np.float32) - shift, (0, 0), 1.0)
                         for _ in range(n)])

    hm = smooth(schema.heatmap_channels, 0.0)
    return 0.5 * (hm - hm.min()) / (hm.max() - hm.min()), smooth(schema.paf_channels, 0.5)


def untrained_rows() -> list[dict[str, float | int | str]]:
    """Seconds to decode one untrained model's maps (the best of 3), for the PASCAL schema and 133 joints."""
    rows: list[dict[str, float | int | str]] = []
    for schema in (Schema.pascal_person_part(), tree_schema(133)):
        hm, paf = noise_maps(np.random.default_rng(1), schema)
        head = HeadMeta(schema, pose_stride=STRIDE, sigma=SIGMA)
        seconds = best_of(lambda: decode(hm, paf, head), 3)
        rows.append({"joints": schema.num_joints, "seconds": seconds, "people": len(decode(hm, paf, head))})
    return rows


def main() -> None:
    global STRIDE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=8, choices=(8, 4, 2), help="pose map stride (default 8)")
    STRIDE = parser.parse_args().stride
    schema = Schema.pascal_person_part()
    head = HeadMeta(schema, pose_stride=STRIDE, sigma=SIGMA)
    rng = np.random.default_rng(0)
    scenes = {n: [random_people(rng, schema, n) for _ in range(IMAGES)] for n in PEOPLE}
    maps = {n: [render(truth, schema) for truth in scenes[n]] for n in PEOPLE}
    times = {n: np.full(IMAGES, np.inf) for n in PEOPLE}
    split: dict[int, list[dict[str, float]]] = {n: [] for n in PEOPLE}
    for round_ in range(ROUNDS):  # all settings once per round: a slow spell of the machine hits every setting alike
        for n in PEOPLE:
            for i, (hm, paf) in enumerate(maps[n]):
                t = best_of(lambda: decode(hm, paf, head), REPEATS)
                times[n][i] = min(times[n][i], t)
                p = phases(hm, paf, schema)
                if round_ == 0:
                    split[n].append(p)
                else:
                    split[n][i] = {k: min(v, p[k]) for k, v in split[n][i].items()}
    rows = []
    for n in PEOPLE:
        decoded = [decode(hm, paf, head) for hm, paf in maps[n]]
        rows.append({"people": n, "ms_per_image": 1e3 * float(np.mean(times[n])),
                     "ms_p90": 1e3 * float(np.quantile(times[n], 0.9)),
                     "recovered": sum(recovered(d, t) for d, t in zip(decoded, scenes[n])) / (n * IMAGES),
                     "spurious_people": sum(max(len(d) - n, 0) for d in decoded),
                     "phases_ms": {k: 1e3 * float(np.mean([s[k] for s in split[n]])) for k in split[n][0]}})
    base = rows[0]["ms_per_image"]
    print(f"decode, PASCAL schema ({schema.num_joints} joints, {schema.num_limbs} limbs), {SIZE}x{SIZE} input, "
          f"{SIZE // STRIDE}x{SIZE // STRIDE} maps, 1 thread, {IMAGES} images x best of {REPEATS} x {ROUNDS} rounds")
    print(f"{'people':>6} {'ms/image':>9} {'p90 ms':>7} {'x 1-person':>10} {'recovered<=1px':>15} {'spurious':>8}")
    for r in rows:
        r["ratio_to_1_person"] = r["ms_per_image"] / base
        print(f"{r['people']:>6} {r['ms_per_image']:>9.3f} {r['ms_p90']:>7.3f} {r['ratio_to_1_person']:>10.2f} "
              f"{r['recovered']:>15.3f} {r['spurious_people']:>8}")
    names = list(rows[0]["phases_ms"])
    print("\nphases, ms (each timed on its own; rest = decode minus the others)")
    print(f"{'people':>6} " + " ".join(f"{k:>14}" for k in names))
    for r in rows:
        print(f"{r['people']:>6} " + " ".join(f"{r['phases_ms'][k]:>14.3f}" for k in names))
    untrained = untrained_rows()
    print("\nan untrained model's maps (smooth noise), one image")
    for r in untrained:
        print(f"{r['joints']:>4} joints: {r['seconds']:.3f} s, {r['people']} people")
    meta = {"schema": "pascal_person_part", "input": SIZE, "stride": STRIDE, "threads": 1, "images": IMAGES,
            "repeats": REPEATS, "rounds": ROUNDS, "numpy": np.__version__, "numba": getattr(numba, "__version__", None),
            "machine": platform.processor() or platform.machine()}
    write_json("decode.json" if STRIDE == 8 else f"decode_stride{STRIDE}.json",
               {"meta": meta, "rows": rows, "untrained": untrained})


if __name__ == "__main__":
    main()
