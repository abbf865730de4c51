"""What every dataset reader shares: samples to write, the skip counter, keypoint cleaning and the writing loop.

A reader turns a release layout into `Sample`s (image path, people with keypoints in the posepart pixel convention,
an optional part-map loader); `write_samples` validates each one and writes the posepart format through a
`DatasetWriter` that copies the original image files byte for byte (no JPEG re-encoding). A sample that cannot be
converted (missing or truncated image, bad part PNG) is skipped and counted by reason, as `PosePartDataset` counts
missing COCO images; `strict=True` raises instead.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from posepart.data.format import IMAGES_DIR, PARTS_DIR, DatasetError
from posepart.data.records import JOINT_OUTSIDE, keypoint_box, keypoints_outside
from posepart.data.images import read_image, turned_note
from posepart.data.images import read_label_png as decode_label_png
from posepart.data.writer import CONVERSION_FILE, DatasetWriter
from posepart.errors import writing
from posepart.files import write_image, write_json_atomic
from posepart.schema import Schema



class SampleError(DatasetError):
    """One sample cannot be converted; `reason` is its key in the skip counter."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Skips:
    """Counts of what was skipped or dropped, by reason, with the first offending file or message of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, example: str, n: int = 1) -> None:
        self.counts[reason] += n
        self.examples.setdefault(reason, example)

    def lines(self) -> list[str]:
        return [f"{n} x {reason} (first: {self.examples[reason]})" for reason, n in self.counts.items()]


@dataclass
class Person:
    """One annotated person: (K, 3) float32 [x, y, v] in posepart pixels (pixel centres at integers), v COCO."""

    keypoints: np.ndarray
    bbox: Sequence[float] | None = None  # [x, y, w, h]; default: the box of the labelled keypoints
    area: float | None = None  # default: the polygon area of `segmentation`, else the bbox area
    segmentation: list[list[float]] | None = None  # COCO polygons (used as the ignore region when unlabelled)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. head_box [x1, y1, x2, y2] or head_size


@dataclass
class Sample:
    """One image to write: its source file, the people in it and, for part-labelled datasets, a part-map loader."""

    image_path: Path
    file_name: str  # name under ROOT/images/ (unique within the dataset)
    people: list[Person] = field(default_factory=list)
    parts: Callable[[], np.ndarray] | None = None  # -> (H, W) uint8 in the schema's part indices, 255 ignore
    pose_labeled: bool = True
    parts_file: Path | None = None  # what `parts` reads, for messages


@dataclass
class ConvertResult:
    """What `write_samples` wrote, and what it skipped."""

    root: Path
    images: int
    people: int
    ignore_regions: int
    part_maps: int
    skips: Skips

    def summary(self) -> str:
        lines = [f"wrote {self.images} images ({self.people} people, {self.ignore_regions} ignore regions, "
                 f"{self.part_maps} part maps) to {self.root}"]
        lines += [f"skipped {line}" for line in self.skips.lines()]
        return "\n".join(lines)


class CopyWriter(DatasetWriter):
    """`DatasetWriter` that copies original image files instead of re-encoding decoded pixels."""

    def add_file(self, source: Path, annotations: Sequence[dict[str, Any]], parts: np.ndarray | None, *,
                 file_name: str, width: int, height: int, **image_fields: Any) -> int:
        image_id = len(self.images) + 1
        target = self._write_to(Path(IMAGES_DIR) / file_name)
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        if parts is not None:
            path = self._write_to(Path(PARTS_DIR) / Path(file_name).with_suffix(".png"))
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                write_image(path, parts)
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height,
                            **image_fields})
        for ann in annotations:
            self.annotations.append({**ann, "id": len(self.annotations) + 1, "image_id": image_id, "category_id": 1})
        return image_id


# -- small shared helpers ----------------------------------------------------------------------------------------
def read_id_list(path: Path) -> list[str]:
    """Ids of a split list (one per line; the first token of a line; '/images/x.jpg'-style paths give 'x')."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: split list not found") from None
    return [Path(line.split()[0]).stem for line in lines if line.strip()]


def find_split_list(root: Path, split: str) -> Path:
    """ROOT/list/<split>_id.txt or ROOT/lists/<split>_id.txt (the PASCAL/CIHP/LIP layouts)."""
    candidates = [root / d / f"{split}_id.txt" for d in ("list", "lists")]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(f"no split list for {split!r}: looked for {', '.join(map(str, candidates))}")


def first_dir(root: Path, names: Sequence[str], what: str) -> Path:
    """The first of ROOT/<name> that is a directory; an error naming all candidates otherwise."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{root}: no {what} folder (looked for {', '.join(names)})")


def nearest_colours(colours: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, 3) colours -> (the index of each one's nearest palette colour, its largest per-channel distance to it):
    the VOC palette's colours in PASCAL's PNGs (off by a level or two) and a tool's label colours at antialiased
    edges are found by it."""
    dist = np.abs(colours.astype(np.int32)[:, None, :] - palette.astype(np.int32)[None, :, :]).max(-1)  # (U, C)
    nearest = dist.argmin(1)
    return nearest, dist[np.arange(len(colours)), nearest]


def polygon_area(polygons: Sequence[Sequence[float]]) -> float:
    """Total shoelace area of flat [x1, y1, x2, y2, ...] polygons."""
    total = 0.0
    for poly in polygons:
        xy = np.asarray(poly, np.float64).reshape(-1, 2)
        total += 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], -1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], -1))))
    return total


def read_label_png(path: Path, num_classes: int) -> np.ndarray:
    """A dataset's own index PNG (`images.read_label_png`, 16-bit grey too) as (H, W) uint8; a file missing,
    unreadable or with a value above the classes is a sample skipped, by that reason."""
    if not path.is_file():
        raise SampleError(f"{path}: part label PNG not found", "missing part PNG")
    try:
        return decode_label_png(path, num_classes, wide=True)
    except DatasetError as err:
        raise SampleError(str(err), "bad part PNG") from None


# -- writing -----------------------------------------------------------------------------------------------------
def source_paths(**paths: str | Path | None) -> dict[str, Path | None]:
    """A conversion's inputs as Paths (None where not given) for its `write_samples` source: the ones it checks
    against what the dataset replaces and records absolute, however the caller typed them."""
    return {key: Path(value) if value else None for key, value in paths.items()}


def _annotation(person: Person, width: int, height: int, skips: Skips, where: str) -> dict[str, Any] | None:
    """The COCO annotation dict of one person, dropping keypoints outside the image (counted); None if nothing is
    left to write (no labelled joint and no region to ignore)."""
    kp = np.array(person.keypoints, np.float32, copy=True)
    labelled = kp[:, 2] > 0
    outside = keypoints_outside(kp, width, height)
    if outside.any():
        skips.add(JOINT_OUTSIDE, where, int(outside.sum()))
        kp[outside] = 0
        labelled &= ~outside
    kp[~labelled] = 0
    ann: dict[str, Any] = {"keypoints": [round(float(v), 3) for v in kp.reshape(-1)],
                           "num_keypoints": int(labelled.sum()), "iscrowd": 0, **person.extra}
    bbox = list(person.bbox) if person.bbox is not None else None
    if bbox is None and labelled.any():
        bbox = keypoint_box(kp)  # kp's unlabelled joints are zeroed above: v = 0
    if person.segmentation:
        ann["segmentation"] = person.segmentation
    if bbox is None and not person.segmentation:
        skips.add("person with no labelled joint and no region (dropped)", where)
        return None
    if bbox is not None:
        ann["bbox"] = [round(float(v), 3) for v in bbox]
    area = person.area
    if area is None:
        area = polygon_area(person.segmentation) if person.segmentation else bbox[2] * bbox[3]  # type: ignore[index]
    ann["area"] = round(max(float(area), 1.0), 3)
    return ann


def write_samples(
    out: str | Path,
    schema: Schema,
    samples: Iterable[Sample],
    skips: Skips | None = None,
    *,
    strict: bool = False,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    progress: bool = True,
) -> ConvertResult:
    """Validate and write samples as a posepart dataset at `out`; returns the counts.

    Each image is decoded once (a missing, empty or truncated file is skipped and counted, or raises with `strict`);
    its part map must have the image's size. `source` (reader name, options, and the inputs as Paths, which may not
    lie in what the dataset replaces) goes to ROOT/conversion.json, the paths absolute. A conversion that writes no
    image is an error and leaves nothing behind.
    """
    root = Path(out)
    source = source or {}
    inputs = [value for value in source.values() if isinstance(value, Path)]
    skips = skips if skips is not None else Skips()
    people = ignore = part_maps = 0
    with CopyWriter(root, schema, overwrite=overwrite, inputs=inputs) as writer:  # claims the folder first
        for sample in tqdm(samples, desc="convert", disable=not progress, leave=False, unit="img"):
            try:
                annotations, parts, (height, width) = _check_sample(sample, schema, skips)
            except SampleError as err:
                if strict:
                    raise
                skips.add(err.reason, str(err))
                continue
            fields = {} if sample.pose_labeled or not schema.has_pose else {"pose_labeled": False}
            writer.add_file(sample.image_path, annotations, parts, file_name=sample.file_name, width=width,
                            height=height, **fields)
            labelled = sum(a["num_keypoints"] > 0 for a in annotations)
            people += labelled
            ignore += len(annotations) - labelled
            part_maps += parts is not None
        if not writer.images:  # raised inside the writer: nothing is written, an earlier dataset is kept
            reasons = "; ".join(skips.lines()) or "the source lists no image"
            raise DatasetError(f"no image converted into {root}: {reasons}")
        result = ConvertResult(root, len(writer.images), people, ignore, part_maps, skips)
        write_json_atomic(writer.folder / CONVERSION_FILE, {  # the writer puts it in place with the dataset
            "source": {key: str(value.absolute()) if isinstance(value, Path) else value
                       for key, value in source.items()},
            "images": result.images, "people": people, "ignore_regions": ignore,
            "part_maps": part_maps, "skipped": dict(skips.counts), "skipped_examples": skips.examples,
        })
    return result


def _check_sample(sample: Sample, schema: Schema, skips: Skips) -> tuple[list[dict[str, Any]], np.ndarray | None,
                                                                         tuple[int, int]]:
    """Decode the image (for its size and to catch broken files), load the part map, build the annotations. A name
    from the source's annotations that would leave the dataset's images/ (absolute, `..`) is refused before anything
    is read or written (before: `../x.jpg` was read beside the images and written beside the dataset)."""
    name = PurePosixPath(sample.file_name.replace("\\", "/"))
    if not sample.file_name.strip() or name.is_absolute() or ".." in name.parts or "\0" in sample.file_name:
        raise SampleError(f"{sample.image_path}: file name {sample.file_name!r} would leave the dataset's images/",
                          "unsafe file name")
    if not sample.image_path.is_file():
        raise SampleError(f"{sample.image_path}: image missing", "missing image")
    try:
        height, width = read_image(sample.image_path).shape[:2]
    except DatasetError as err:
        raise SampleError(str(err), "unreadable image") from None
    parts = sample.parts() if sample.parts is not None else None
    if parts is not None and parts.shape != (height, width):
        turned = turned_note(sample.image_path, (height, width), parts.shape, "its part map")  # before: unsaid
        raise SampleError(f"{sample.parts_file or sample.image_path}: part map is {parts.shape[1]}x{parts.shape[0]} "
                          f"but the image {sample.image_path.name} is {width}x{height}{turned}",
                          "part map size mismatch")
    annotations = []
    if schema.has_pose and sample.pose_labeled:
        for person in sample.people:
            ann = _annotation(person, width, height, skips, str(sample.image_path))
            if ann is not None:
                annotations.append(ann)
    return annotations, parts, (height, width)
