"""Part masks as annotation tools export them: a folder of mask PNGs and a class table, matched to the images by name,
optionally joined to a COCO keypoints file of the same images (pose and parts for the joint model).

```
CVAT "Segmentation mask 1.1"   labelmap.txt (`name:r,g,b:parts:actions`), SegmentationClass/<stem>.png: RGB, each
                               label's colour; JPEGImages/<stem>.jpg when exported with the images
Roboflow "Semantic Segmentation Masks"
                               <stem>_jpg.rf.<hash>_mask.png beside the images: grey, value = class index;
                               _classes.csv (`Pixel Value, Class`)
any other                      grey or palette index PNGs and a text file of class names, line i naming value i
```
The part classes are the table's in its order, `background` first (added where the table has none: unlabelled
pixels, black in colour masks, value 0 in index masks). A pixel of a colour or value the table lacks is ignored (255)
and counted. Why a reader and not the pascal-person-part one: that one knows the VOC palette of PASCAL's six parts,
and a tool's labels have their own names and colours.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from posepart.data.format import IMAGE_SUFFIXES, DatasetError, person_category
from posepart.data.readers.common import ConvertResult, Person, Sample, SampleError, Skips, source_paths, write_samples
from posepart.schema import IGNORE_LABEL, Schema

BACKGROUND = "background"
MASK_SUFFIX = "_mask"  # Roboflow's, stripped from a mask's name where no image has the name with it
UNKNOWN = "mask pixels of a colour or value the class table lacks (ignored)"


@dataclass(frozen=True)
class ClassTable:
    """The part classes (background first) and how mask pixels map to them: by colour (RGB masks) or by value."""

    classes: tuple[str, ...]
    colours: dict[tuple[int, int, int], int]  # (r, g, b) -> class index; empty for index masks
    values: dict[int, int]  # mask value -> class index; empty for colour masks


def read_class_table(path: Path) -> ClassTable:
    """CVAT's labelmap.txt (colours), Roboflow's _classes.csv (values) or a plain list of names (line i = value i)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the class table: {err.strerror or err}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise DatasetError(f"{path}: the class table names no class")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(lines))
        header = [cell.strip().lower() for cell in rows[0]]
        if header[:2] != ["pixel value", "class"]:
            raise DatasetError(f"{path}: expected Roboflow's header 'Pixel Value, Class', got {rows[0]}")
        try:
            named = [(int(row[0]), row[1].strip()) for row in rows[1:]]
        except (ValueError, IndexError):
            raise DatasetError(f"{path}: every row must be 'VALUE, NAME'") from None
        return _table(path, named, by_colour=False)
    if all(line.count(":") >= 1 and "," in line.split(":")[1] for line in lines):  # CVAT's labelmap.txt
        named = []
        for line in lines:
            name, colour = line.split(":")[:2]
            try:
                rgb = tuple(int(c) for c in colour.split(","))
            except ValueError:
                raise DatasetError(f"{path}: {line!r}: the colour must be r,g,b") from None
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise DatasetError(f"{path}: {line!r}: the colour must be three values 0..255")
            named.append((rgb, name.strip()))
        return _table(path, named, by_colour=True)
    return _table(path, list(enumerate(lines)), by_colour=False)


def _table(path: Path, named: list, *, by_colour: bool) -> ClassTable:
    """ClassTable from (colour or value, name) pairs: background first, the others in the table's order."""
    names = [name for _, name in named]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated or any(not name for name in names):
        raise DatasetError(f"{path}: class names must be given and differ (repeated: {repeated})")
    keys = [key for key, _ in named]
    if len(set(keys)) != len(keys):
        raise DatasetError(f"{path}: two classes share a {'colour' if by_colour else 'value'}")
    classes = [BACKGROUND] + [name for name in names if name.lower() != BACKGROUND]
    index = {key: classes.index(BACKGROUND if name.lower() == BACKGROUND else name) for key, name in named}
    unlabelled = (0, 0, 0) if by_colour else 0
    index.setdefault(unlabelled, 0)  # no background in the table: unlabelled pixels are
    if len(classes) > IGNORE_LABEL:
        raise DatasetError(f"{path}: {len(classes)} classes; a part map holds at most {IGNORE_LABEL}")
    return ClassTable(tuple(classes), index if by_colour else {}, {} if by_colour else index)


def mask_labels(path: Path, table: ClassTable, skips: Skips) -> np.ndarray:
    """A mask PNG as (H, W) uint8 class indices; pixels the table lacks are 255, counted."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            colour = image.mode in ("RGB", "RGBA") or (image.mode == "P" and bool(table.colours))
            pixels = np.asarray(image.convert("RGB") if colour else image)
    except OSError as err:
        raise SampleError(f"{path}: cannot read the mask: {err}", "unreadable mask") from None
    if colour != bool(table.colours):
        raise SampleError(f"{path}: a {'colour' if colour else 'single-channel'} mask, but the class table gives "
                          f"{'colours' if table.colours else 'values'}", "mask of the wrong kind")
    if colour:
        keys = (pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2]
        lookup = {(r << 16) | (g << 8) | b: i for (r, g, b), i in table.colours.items()}
    else:
        keys, lookup = pixels.astype(np.int64), table.values
    found, inverse = np.unique(keys, return_inverse=True)
    mapped = np.array([lookup.get(int(key), IGNORE_LABEL) for key in found], np.uint8)
    labels = mapped[inverse].reshape(keys.shape)
    if (mapped == IGNORE_LABEL).any():
        skips.add(UNKNOWN, f"{path}: {', '.join(map(str, found[mapped == IGNORE_LABEL][:3].tolist()))}",
                  int((labels == IGNORE_LABEL).sum()))
    return labels


def _people(keypoints: Path | None) -> tuple[dict, dict[str, list[Person]]]:
    """The people's category of a COCO keypoints file and its people by image stem."""
    if keypoints is None:
        return {}, {}
    try:
        data = json.loads(keypoints.read_text(encoding="utf-8"))
        person = data["categories"][person_category(data["categories"]) or 0]
        stems = {image["id"]: Path(image["file_name"]).stem for image in data["images"]}
        by_stem: dict[str, list[Person]] = {stem: [] for stem in stems.values()}
        k = len(person.get("keypoints") or [])
        for ann in data["annotations"]:
            if ann.get("category_id", person.get("id")) != person.get("id") or ann["image_id"] not in stems:
                continue
            kp = np.zeros((k, 3), np.float32) if ann.get("iscrowd") else \
                np.asarray(ann.get("keypoints") or [0.0] * 3 * k, np.float32).reshape(k, 3)
            polygons = ann.get("segmentation") if isinstance(ann.get("segmentation"), list) else None
            by_stem[stems[ann["image_id"]]].append(Person(kp, ann.get("bbox"), ann.get("area"), polygons or None))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise DatasetError(f"{keypoints}: not a COCO keypoints file ({type(err).__name__}: {err})") from None
    if not person.get("keypoints"):
        raise DatasetError(f"{keypoints}: no category lists keypoints")
    return person, by_stem


def convert_masks(
    images: str | Path,
    masks: str | Path,
    classes: str | Path,
    out: str | Path,
    *,
    keypoints: str | Path | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert a folder of part masks (and optionally a COCO keypoints file of the same images) at `out`. An image
    is matched to `<its stem>.png` or `<its stem>_mask.png` among the masks; an image without one is written
    without part labels where the keypoints file has it, else skipped and counted."""
    images, masks, classes = Path(images), Path(masks), Path(classes)
    for folder, what in ((images, "image"), (masks, "mask")):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: the {what} folder is not a directory")
    table = read_class_table(classes)
    person, people = _people(Path(keypoints) if keypoints else None)
    category = {**person, "part_classes": list(table.classes)} if person else {"part_classes": list(table.classes)}
    try:
        schema = Schema.from_category({"name": person.get("name", "person"), "keypoints": [], "skeleton": [],
                                       **category})
    except ValueError as err:
        raise DatasetError(f"{keypoints or classes}: {err}") from None
    skips = Skips()
    source = {"reader": "masks", **source_paths(images=images, masks=masks, classes=classes, keypoints=keypoints)}
    samples = _samples(images, masks, table, people, skips, pose=bool(person))
    return write_samples(out, schema, samples, skips, strict=strict, overwrite=overwrite, source=source,
                         progress=progress)


def _samples(images: Path, masks: Path, table: ClassTable, people: dict[str, list[Person]], skips: Skips, *,
             pose: bool) -> Iterator[Sample]:
    """One sample per image (its mask, its people); a mask beside the images (Roboflow's) is not an image."""
    pngs = {path.stem: path for path in sorted(masks.glob("*.png"))}

    def mask_of(image: Path) -> Path | None:
        found = (pngs.get(stem) for stem in (image.stem + MASK_SUFFIX, image.stem))
        return next((m for m in found if m is not None and m.resolve() != image.resolve()), None)

    candidates = [p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    matched = {mask_of(image) for image in candidates}
    for image in candidates:
        if image in matched:
            continue
        mask = mask_of(image)
        if mask is None and image.stem not in people:
            skips.add("image without a mask (skipped)", str(image))
            continue
        yield Sample(image, image.name, people.get(image.stem, []),
                     None if mask is None else (lambda m=mask: mask_labels(m, table, skips)),
                     pose_labeled=pose and image.stem in people, parts_file=mask)
