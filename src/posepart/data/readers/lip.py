"""LIP (Look Into Person): single-person images with 20-class parsing PNGs and 16-joint pose CSVs.

```
ROOT/TrainVal_images/{train,val}_images/<id>.jpg                     (or pass --images DIR)
ROOT/TrainVal_parsing_annotations/{train,val}_segmentations/<id>.png  0..19 index PNGs (or --parsing DIR)
ROOT/TrainVal_pose_annotations/lip_{train,val}_set.csv                (or --pose CSV)
```
A pose row is `<id>.jpg` then 16 x (x, y, occluded) in MPII joint order, `nan` for unlabelled joints; occluded 0
-> v 2 (visible), 1 -> v 1. Coordinates are taken as given (0-based pixels). Written in the native `Schema.lip()`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from posepart.data.format import DatasetError
from posepart.data.readers.common import (
    ConvertResult,
    Person,
    Sample,
    Skips,
    read_id_list,
    read_label_png,
    source_paths,
    write_samples,
)
from posepart.schema import Schema

NUM_JOINTS = 16


def read_pose_csv(path: Path, skips: Skips | None = None) -> dict[str, np.ndarray]:
    """{image file name: (16, 3) float32 [x, y, v]} of a LIP pose CSV; malformed rows raise naming file and line."""
    out: dict[str, np.ndarray] = {}
    try:
        handle = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: pose CSV not found") from None
    with handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) != 1 + 3 * NUM_JOINTS:
                raise DatasetError(f"{path}: line {line} has {len(row) - 1} values, expected 3 x {NUM_JOINTS}")
            try:
                values = np.array([float(v) if v.strip() else np.nan for v in row[1:]], np.float64).reshape(-1, 3)
            except ValueError:
                raise DatasetError(f"{path}: line {line}: non-numeric value in {row[1:]}") from None
            labelled = np.isfinite(values[:, :2]).all(1)
            kp = np.zeros((NUM_JOINTS, 3), np.float32)
            kp[labelled, :2] = values[labelled, :2]
            kp[labelled, 2] = np.where(values[labelled, 2] > 0, 1, 2)  # the CSV flags occlusion
            if not labelled.any() and skips is not None:
                skips.add("pose row without labelled joints (image kept, no person)", f"{path}: line {line}")
            out[row[0].strip()] = kp
    return out


def lip_samples(
    images: Path,
    ids: Sequence[str],
    poses: dict[str, np.ndarray] | None,
    parsing: Path | None,
    skips: Skips,
) -> Iterator[Sample]:
    """One sample per id: the image, its person (when the CSV has a labelled row) and its parsing PNG (if any)."""
    num_classes = Schema.lip().num_parts
    for image_id in ids:
        name = f"{image_id}.jpg"
        png = parsing / f"{image_id}.png" if parsing is not None else None
        loader = (lambda p=png: read_label_png(p, num_classes)) if png is not None and png.is_file() else None
        kp = poses.get(name) if poses is not None else None
        if loader is None and kp is None:
            skips.add("neither a pose row nor a parsing PNG (image skipped)", name)
            continue
        if png is not None and loader is None and (images / name).is_file():
            skips.add("no parsing PNG (image kept without parts)", str(png))
        if poses is not None and kp is None and (images / name).is_file():
            skips.add("no pose row (image kept as parts-only)", name)
        people = [Person(kp)] if kp is not None and (kp[:, 2] > 0).any() else []
        yield Sample(images / name, name, people, loader, pose_labeled=kp is not None, parts_file=png)


def _resolve(root: Path | None, given: Path | None, candidates: Sequence[str], what: str,
             required: bool) -> Path | None:
    if given is not None:
        return given
    if root is not None:
        for c in candidates:
            if (root / c).exists():
                return root / c
    if required:
        looked = ", ".join(str(root / c) for c in candidates) if root is not None else "nothing (no --src)"
        raise DatasetError(f"LIP: no {what} found; pass it explicitly (looked at {looked})")
    return None


def convert_lip(
    out: str | Path,
    *,
    src: str | Path | None = None,
    split: str = "val",
    images: str | Path | None = None,
    pose: str | Path | None = None,
    parsing: str | Path | None = None,
    id_list: str | Path | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert LIP to a posepart dataset: the release layout under `src` for `split`, or explicit folders/files.

    Ids come from `id_list`, else the pose CSV's rows, else the parsing PNGs. Images missing on disk are skipped and
    counted; an image without a parsing PNG is kept without parts, one without a pose row as parts-only.
    """
    root = Path(src) if src is not None else None
    image_dir = _resolve(root, Path(images) if images else None,
                         [f"TrainVal_images/{split}_images", f"{split}_images", "images"], "image folder", True)
    pose_file = _resolve(root, Path(pose) if pose else None,
                         [f"TrainVal_pose_annotations/lip_{split}_set.csv", f"pose/lip_{split}_set.csv"],
                         "pose CSV", False)
    parsing_dir = _resolve(root, Path(parsing) if parsing else None,
                           [f"TrainVal_parsing_annotations/{split}_segmentations", f"{split}_segmentations"],
                           "parsing folder", False)
    if pose_file is None and parsing_dir is None:
        raise DatasetError("LIP: neither a pose CSV nor a parsing folder found; pass --pose CSV and/or --parsing DIR")
    if not image_dir.is_dir():  # type: ignore[union-attr]
        raise DatasetError(f"{image_dir}: image folder not found")
    if parsing_dir is not None and not parsing_dir.is_dir():
        raise DatasetError(f"{parsing_dir}: parsing folder not found")
    skips = Skips()
    poses = read_pose_csv(pose_file, skips) if pose_file is not None else None
    if id_list is not None:
        ids = read_id_list(Path(id_list))
    elif poses is not None:
        ids = [Path(name).stem for name in poses]
    else:
        ids = sorted(p.stem for p in parsing_dir.glob("*.png"))  # type: ignore[union-attr]
    samples = lip_samples(image_dir, ids, poses, parsing_dir, skips)  # type: ignore[arg-type]
    source = {"reader": "lip", "split": split, **source_paths(src=root, images=image_dir, pose=pose_file,
                                                               parsing=parsing_dir, list=id_list)}
    return write_samples(out, Schema.lip(), samples, skips, strict=strict, overwrite=overwrite, source=source,
                         progress=progress)
