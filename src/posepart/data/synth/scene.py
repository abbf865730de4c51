"""Synthetic people, part 5: compose a scene (people in depth order over a background) and annotate it as COCO."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from posepart.data.synth.background import background
from posepart.data.synth.body import JOINT_TAGS, MATERIALS, Prim, person_prims, sample_outfit
from posepart.data.synth.pose import (CHIN, HEAD_TOP, HIP, POSE_KINDS, SHOULDER, VIEWS, project, sample_body,
                                      sample_pose, skeleton_3d, view_of)
from posepart.data.synth.texture import degrade, fixed, grain, paint_at
from posepart.errors import UsageError, refuse_while_a_child_imports_main
from posepart.processes import ignore_stop_signals, stop_signals_blocked
from posepart.heads import INPUT_SIZE
from posepart.schema import PASCAL_KEYPOINTS, Schema

K = len(PASCAL_KEYPOINTS)
MAX_PEOPLE = 5
# Each person's annotation says how it was made under this key: {"pose": kind, "view": name, "yaw": degrees}. Results
# are sliced by the fields of SLICES, whose values are listed in the order reports show them.
MADE_KEY = "synth"
SLICES = {"view": tuple(name for _, name in VIEWS), "pose": POSE_KINDS}
_TORSO_JOINTS = {SHOULDER: "shoulder", SHOULDER + 1: "shoulder", HIP: "hip", HIP + 1: "hip"}


@dataclass
class SynthScene:
    """One rendered image: RGB uint8 (S, S, 3), part labels uint8 (S, S) and COCO person annotations (each with
    `synth`: the person's pose kind, view and yaw)."""

    image: np.ndarray
    parts: np.ndarray
    annotations: list[dict[str, Any]]
    jpeg_quality: int = 90  # the quality the writer should save this image at (part of the degradation)
    joints: list[np.ndarray] = field(default_factory=list)  # (K, 2) drawn joint positions per annotation, v=0 too


@dataclass(frozen=True)
class SceneConfig:
    """How hard a synthetic scene is. The defaults are the benchmark; `easy()` is the CPU demo's setting.

    max_people: labelled people per image, drawn uniformly from 1..max_people.
    min_height: smallest adult's height as a fraction of the image side (the tallest is 0.95); children (18 % of
        the people) are drawn at 0.65-0.85 of the height drawn for them, so they can be smaller.
    crowd_prob: chance that an image also holds 1-3 tiny unlabelled people marked as crowd regions.
    clutter: background shapes and limb-like distractors, as a fraction of the benchmark's (0 = none).
    """

    max_people: int = MAX_PEOPLE
    min_height: float = 0.25
    crowd_prob: float = 0.2
    clutter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_people < 1 or not 0 < self.min_height <= 0.95 or not 0 <= self.crowd_prob <= 1 \
                or not 0 <= self.clutter <= 1:
            raise UsageError("synth: need max_people >= 1, 0 < min_height <= 0.95, 0 <= crowd_prob <= 1 and "
                             f"0 <= clutter <= 1: {self}")

    @classmethod
    def easy(cls) -> SceneConfig:
        """1-2 people of at least half the image height on plain backgrounds, no crowds: the CPU demo's setting,
        learnable from scratch in minutes (README, "The main job")."""
        return cls(max_people=2, min_height=0.5, crowd_prob=0.0, clutter=0.0)


# The demo's data, drawn with `SceneConfig.easy()` by `posepart demo`, by `posepart study` without --data and by the
# pose ablation (benchmarks/ablate_pose.py), each split under its folder: `posepart.demo.synth_split`.
DEMO_SIZE = 128  # image and network input side: small enough to train on enough images on a CPU
DEMO_TRAIN_SCENES = 2000  # distinct training scenes (the demo's budget: posepart.demo.default_train_images)
DEMO_VAL_SCENES = 300  # the scenes every model of the demo is scored on


@dataclass
class _Drawn:
    """A person as drawn: its primitive-index map over its clipped box (ids in draw order) and what the ids mean."""

    xy: np.ndarray  # (14, 2) joints, px
    depth: np.ndarray  # (14,) joint depths
    idx: np.ndarray  # (bh, bw) uint8, 0 = not this person
    origin: tuple[int, int]  # (x0, y0) of idx in the image
    tags: list[str]  # tags[k - 1] = tag of primitive id k
    head_box: list[float]
    crowd: bool
    torso_half: tuple[float, float]  # shoulder / hip half-widths in body units (for the near-side test)
    chin: np.ndarray  # (2,) px, to probe the head top from inside the head
    pose_kind: str  # sample_pose's kind ("walk", "sit", ...)
    yaw: float  # degrees, 0 = facing the camera


def _rasterise(prims: list[Prim], size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Primitive-index map (ids 1.. in draw order) over the people's box clipped to the image."""
    allpts = np.concatenate([p.poly for p in prims])
    x0, y0 = np.maximum(np.floor(allpts.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(allpts.max(0)).astype(int) + 2, size)
    idx = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
    if idx.size:
        for k, p in enumerate(prims, 1):
            cv2.fillPoly(idx, [fixed(p.poly, (x0, y0))], k, cv2.LINE_8, 4)
    return idx, (int(x0), int(y0))


def _colour(idx: np.ndarray, prims: list[Prim], outfit_mats: dict, rng: np.random.Generator) -> np.ndarray:
    """(bh, bw, 3) float32 colours of a person: garment textures by material, lighting, dark seams between shapes."""
    bh, bw = idx.shape
    mat_of = np.array([-1] + [MATERIALS.index(p.material) for p in prims], np.int16)[idx]
    col = np.zeros((bh, bw, 3), np.float32)
    for j in np.unique(mat_of):
        if j >= 0:
            ys, xs = np.nonzero(mat_of == j)
            col[ys, xs] = paint_at(outfit_mats[MATERIALS[j]], ys, xs, bh, bw, rng)
    col += grain(rng, bh, bw, rng.uniform(1.5, 6))
    ang = rng.uniform(0, 2 * np.pi)
    xx, yy = np.arange(bw, dtype=np.float32) - bw / 2, np.arange(bh, dtype=np.float32)[:, None] - bh / 2
    slope = np.float32(rng.uniform(0, 0.5) / max(bh, bw))
    light = 1 + slope * (xx * np.float32(np.cos(ang)) + yy * np.float32(np.sin(ang)))
    seam = np.zeros((bh, bw), np.float32)
    seam[:, 1:] += idx[:, 1:] != idx[:, :-1]
    seam[1:, :] += idx[1:, :] != idx[:-1, :]
    seam = cv2.blur(np.minimum(seam, 1), (3, 3))
    return col * (light * (1 - rng.uniform(0.1, 0.4) * seam))[..., None]


def _visibility(d: _Drawn, owner: np.ndarray, me: int, size: int) -> np.ndarray:
    """COCO v per joint: 0 outside the image, 2 if its own segment is front-most there, else 1 (occluded)."""
    v = np.zeros(K, np.int32)
    x0, y0 = d.origin
    for j in range(K):
        px, py = (int(np.floor(c + 0.5)) for c in d.xy[j])
        if not (0 <= px < size and 0 <= py < size):
            continue
        probe = d.xy[j]
        if j == HEAD_TOP:  # the top of the head lies on the head's outline: look just inside it
            probe = d.xy[j] + 0.12 * (d.chin - d.xy[j])
        qx, qy = (int(np.floor(c + 0.5)) for c in probe)
        qx, qy = min(max(qx, 0), size - 1), min(max(qy, 0), size - 1)
        lx, ly = qx - x0, qy - y0
        own = int(d.idx[ly, lx]) if 0 <= ly < d.idx.shape[0] and 0 <= lx < d.idx.shape[1] else 0
        tag = d.tags[own - 1] if own else ""
        front = owner[qy, qx] == me
        if tag in JOINT_TAGS[j]:
            v[j] = 2 if front else 1
        elif tag == "torso" and j in _TORSO_JOINTS:  # on the torso: visible on the near side only
            pair = d.depth[j - (j - SHOULDER) % 2 : j - (j - SHOULDER) % 2 + 2]
            half = d.torso_half[0 if _TORSO_JOINTS[j] == "shoulder" else 1]
            v[j] = 2 if front and d.depth[j] - pair.mean() > -0.6 * half else 1
        elif not own:
            v[j] = 2 if owner[qy, qx] in (0, me) else 1
        else:
            v[j] = 1
    return v


def _annotation(d: _Drawn, owner: np.ndarray, me: int, size: int) -> dict[str, Any] | None:
    visible = owner == me
    area = int(visible.sum())
    if area == 0:
        return None
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    bbox = [float(b) for b in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    v = _visibility(d, owner, me, size)
    crowd = d.crowd or area < 0.003 * size * size or (v > 0).sum() < 4 or (v == 2).sum() < 2
    kp = np.zeros((K, 3), np.float64)
    if not crowd:
        kp[:, :2] = np.where(v[:, None] > 0, d.xy, 0.0)
        kp[:, 2] = v
    ann = {"keypoints": [float(x) for x in kp.ravel()], "num_keypoints": int((kp[:, 2] > 0).sum()),
           "segmentation": rle, "area": float(area), "bbox": bbox, "iscrowd": int(crowd)}
    if not crowd:
        ann["head_box"] = d.head_box
    ann[MADE_KEY] = {"pose": d.pose_kind, "view": view_of(d.yaw), "yaw": round(d.yaw, 1)}  # readers ignore it
    return ann


def render_scene(rng: np.random.Generator, size: int, config: SceneConfig = SceneConfig()) -> SynthScene:
    """Render one image of 1-5 labelled people (plus, sometimes, tiny unlabelled iscrowd people far away)."""
    for _ in range(20):  # a scene whose every person ended up hidden or cut is drawn again (rare)
        scene = _render(rng, size, config)
        if any(a["iscrowd"] == 0 for a in scene.annotations):
            break
    return scene


def _render(rng: np.random.Generator, size: int, config: SceneConfig) -> SynthScene:
    image = background(rng, size, config.clutter)
    parts = np.zeros((size, size), np.uint8)
    owner = np.zeros((size, size), np.int16)
    n = int(rng.integers(1, config.max_people + 1))
    heights = config.min_height + (0.95 - config.min_height) * rng.random(n) ** (1 + 0.35 * (n - 1))
    order = np.argsort(heights * rng.uniform(0.8, 1.2, n))  # roughly: taller = nearer = drawn later
    crowd = int(rng.integers(1, 4)) * (rng.random() < config.crowd_prob)
    specs = [(float(rng.uniform(0.07, 0.18)), True) for _ in range(crowd)]
    specs += [(float(heights[i]), False) for i in order]
    drawn: list[_Drawn] = []
    for rank, (height, tiny) in enumerate(specs):
        child = bool(rng.random() < 0.18)
        body = sample_body(rng, child)
        pose, kind = sample_pose(rng)
        outfit = sample_outfit(rng)
        pts = skeleton_3d(body, pose)
        scale = height * size * (rng.uniform(0.65, 0.85) if child else 1.0)
        roll = float(rng.normal(0, 0.05))
        pr = project(body, pose, pts, scale, np.zeros(2), roll)
        lo, hi = pr.xy.min(0), pr.xy.max(0)
        ext = hi - lo
        main = rank == len(specs) - 1
        cx = rng.uniform(0.2, 0.8) * size if main else rng.uniform(-0.05, 1.05) * size
        top = rng.uniform(-0.12 * ext[1], max(size - 0.88 * ext[1], -0.12 * ext[1] + 1))
        pr = project(body, pose, pts, scale, np.array([cx - (lo[0] + hi[0]) / 2, top - lo[1]]), roll)
        prims = person_prims(pr, body, outfit)
        idx, origin = _rasterise(prims, size)
        if idx.size == 0 or not idx.any():
            continue
        me = len(drawn) + 1
        m = idx > 0
        x0, y0 = origin
        win = (slice(y0, y0 + idx.shape[0]), slice(x0, x0 + idx.shape[1]))
        image[win][m] = _colour(idx, prims, outfit.materials, rng)[m]
        parts[win][m] = np.array([0] + [p.part for p in prims], np.uint8)[idx][m]
        owner[win][m] = me
        head = np.concatenate([p.poly for p in prims if p.tag == "head"])
        drawn.append(_Drawn(
            xy=pr.xy[:K], depth=pr.depth[:K], idx=idx, origin=origin, tags=[p.tag for p in prims],
            head_box=[float(c) for c in (*head.min(0), *head.max(0))], crowd=tiny,
            torso_half=(body.shoulder, body.hip), chin=pr.xy[CHIN], pose_kind=kind, yaw=float(np.degrees(pose.yaw)),
        ))
    annotations, joints = [], []
    for me, d in enumerate(drawn, 1):
        ann = _annotation(d, owner, me, size)
        if ann is not None:
            annotations.append(ann)
            joints.append(d.xy.astype(np.float32))
    out = degrade(image, rng)
    quality = int(rng.integers(35, 96))
    return SynthScene(out, parts, annotations, quality, joints)


def scene_at(seed: int, index: int, size: int = INPUT_SIZE, config: SceneConfig = SceneConfig()) -> SynthScene:
    """Image `index` of the synthetic dataset `seed`: the same whatever the dataset's length."""
    return render_scene(np.random.default_rng(np.random.SeedSequence([seed, index])), size, config)


def iter_scenes(
    n: int, seed: int, size: int = INPUT_SIZE, workers: int = 1, config: SceneConfig = SceneConfig()
) -> Iterator[SynthScene]:
    """Scenes 0..n-1 in order (rendered in `workers` processes when > 1; identical results)."""
    if workers <= 1:
        for i in range(n):
            yield scene_at(seed, i, size, config)
        return
    # the workers leave a Ctrl-C to this process (before, each printed a KeyboardInterrupt traceback), whose
    # generator, closed by it, cancels the scenes not yet rendered
    with ProcessPoolExecutor(workers, initializer=ignore_stop_signals) as pool:
        with stop_signals_blocked():  # the workers start at the first submit, and inherit the mask
            scenes = pool.map(partial(scene_at, seed, size=size, config=config), range(n), chunksize=4)
        yield from scenes


def write_synth(
    out: Path, n: int, seed: int, size: int = INPUT_SIZE, workers: int = 1, config: SceneConfig = SceneConfig(),
    progress: bool = False, overwrite: bool = False,
) -> Path:
    """Write n synthetic images (Schema.pascal_person_part) as a posepart dataset at `out`; returns `out`.
    `progress`: a progress bar on stderr. A dataset already at `out` is refused unless `overwrite` (which replaces
    it), as `posepart convert` does."""
    from tqdm import tqdm

    from posepart.data.writer import DatasetWriter

    refuse_while_a_child_imports_main("write_synth()")
    if n < 1 or size < 1 or seed < 0:
        raise UsageError(f"synth: need n >= 1, size >= 1 and seed >= 0; got n={n}, size={size}, seed={seed}")
    out = Path(out)
    # the bar opens after the writer (a folder that cannot be written fails first) and closes before any error shows
    made_by = {"posepart synth": {"n": n, "seed": seed, "size": size, "scene": asdict(config)}}  # to make it again
    with DatasetWriter(out, Schema.pascal_person_part(), overwrite=overwrite, info=made_by) as writer, \
            tqdm(total=n, desc=f"synth {out.name}", unit="image", disable=not progress) as bar:
        for i, scene in enumerate(iter_scenes(n, seed, size, workers, config)):
            bar.update()
            writer.add(scene.image, scene.annotations, scene.parts, file_name=f"{i:06d}.jpg",
                       jpeg_quality=scene.jpeg_quality)
    return out
