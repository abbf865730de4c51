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
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from posepart.data import validate
from posepart.data.format import IMAGE_SUFFIXES, DatasetError, hidden, people_categories, person_category
from posepart.data.images import looks_interpolated
from posepart.data.readers.common import (ConvertResult, Person, Sample, SampleError, Skips, nearest_colours,
                                         source_paths, write_samples)
from posepart.schema import IGNORE_LABEL, Schema

BACKGROUND = "background"
MASK_SUFFIX = "_mask"  # Roboflow's, stripped from a mask's name where no image has the name with it
UNKNOWN = "mask pixels of a colour or value the class table lacks (ignored)"
INTERPOLATED = ("masks with ramps of in-between values along their edges, as a mask resized with linear or cubic "
                "interpolation has: each in-between pixel is taken for the class of its value (3 between 0 and 6). "
                "Resize masks with nearest-neighbour interpolation (cv2.INTER_NEAREST, PIL's Image.NEAREST), from "
                "the originals")


@dataclass(frozen=True)
class ClassTable:
    """The part classes (background first) and how mask pixels map to them: by colour (RGB masks) or by value."""

    classes: tuple[str, ...]
    colours: dict[tuple[int, int, int], int]  # (r, g, b) -> class index; empty for index masks
    values: dict[int, int]  # mask value -> class index; empty for colour masks


# CVAT's `name:r,g,b:parts:actions` (a name may hold a colon)
_LABELMAP_LINE = re.compile(r"(?P<name>.*):(?P<rgb>\s*\d+\s*,\s*\d+\s*,\s*\d+\s*):[^:]*:[^:]*")
_VALUE_LINE = re.compile(r"(?P<value>\d+)\s*[:,\s]\s*(?P<name>\S.*)")  # "0 background", "1: face", "2, arm"
# a mask mostly of value 0 (or black) where the table names that value a class: a list without a `background` line
ZERO_NAMED = "masks mostly of the value 0 (or black), which the class table names {!r} (no 'background' in it: is 0 "\
             "unlabelled? then add 'background' as its first line)"


def read_class_table(path: Path) -> ClassTable:
    """CVAT's labelmap.txt (colours), Roboflow's _classes.csv (values), or a plain list of names, line i naming value
    i (labelme's labels.txt, whose `__ignore__` line names no value, too)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the class table: {err.strerror or err}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise DatasetError(f"{path}: the class table names no class")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(entries))
        header = [cell.strip().lower() for cell in rows[0]]
        if header[:2] != ["pixel value", "class"]:
            raise DatasetError(f"{path}: expected Roboflow's header 'Pixel Value, Class', got {rows[0]}")
        try:
            named = [(int(row[0]), row[1].strip()) for row in rows[1:]]
        except (ValueError, IndexError):
            raise DatasetError(f"{path}: every row must be 'VALUE, NAME'") from None
        if any(not 0 <= value < IGNORE_LABEL for value, _ in named):
            raise DatasetError(f"{path}: mask values must be 0..{IGNORE_LABEL - 1} ({IGNORE_LABEL}: ignore)")
        return _table(path, named, by_colour=False)
    if any(_LABELMAP_LINE.fullmatch(entry) for entry in entries):  # CVAT's labelmap.txt
        named = []
        for entry in entries:
            if not (match := _LABELMAP_LINE.fullmatch(entry)):
                raise DatasetError(f"{path}: {entry!r} is not a labelmap line 'name:r,g,b:parts:actions'")
            rgb = tuple(int(c) for c in match["rgb"].split(","))
            if not all(0 <= c <= 255 for c in rgb):
                raise DatasetError(f"{path}: {entry!r}: the colour must be three values 0..255")
            named.append((rgb, match["name"].strip()))
        return _table(path, named, by_colour=True)
    if all(_VALUE_LINE.fullmatch(entry) for entry in entries):  # before: "0 background" read as a name
        named = [(int(match["value"]), _named(match["name"].strip())) for match in map(_VALUE_LINE.fullmatch, entries)]
        if any(not 0 <= value < IGNORE_LABEL for value, _ in named):
            raise DatasetError(f"{path}: mask values must be 0..{IGNORE_LABEL - 1} ({IGNORE_LABEL}: ignore)")
        return _table(path, named, by_colour=False)
    names = [line.strip() for line in lines]
    if names[0] == "__ignore__":  # labelme: `__ignore__` is -1, `_background_` 0
        names = names[1:]
    if "" in names:  # before: blank lines were dropped, and every later class took its neighbour's value
        raise DatasetError(f"{path}: line {names.index('') + 1} is empty: line i names mask value i")
    return _table(path, [(value, _named(name)) for value, name in enumerate(names)], by_colour=False)


def _named(name: str) -> str:
    """labelme's `_background_` is the background."""
    return "background" if name == "_background_" else name


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


def mask_labels(path: Path, table: ClassTable, skips: Skips, *, nearest: bool = False) -> np.ndarray:
    """A mask PNG as (H, W) uint8 class indices; pixels the table lacks are 255, counted, or with `nearest` (colour
    masks) the class of the nearest table colour (antialiased edges blend two labels' colours). A transparent pixel
    (alpha 0) is unlabelled, as black or 0 is; an RGB mask whose channels are equal is read as the grey one it is
    where the table gives values."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            colour = image.mode in ("RGB", "RGBA") or (image.mode == "P" and bool(table.colours))
            grey = image.mode in ("LA", "PA") and not table.colours  # the alpha channel is no label
            pixels = np.asarray(image.convert("RGB") if colour else image.getchannel(0) if grey else image)
            alpha = np.asarray(image.convert("RGBA").getchannel("A")) if "A" in image.getbands() or \
                (image.mode == "P" and "transparency" in image.info) else None
    except OSError as err:
        raise SampleError(f"{path}: cannot read the mask: {err}", "unreadable mask") from None
    if pixels.ndim != (3 if colour else 2):
        raise SampleError(f"{path}: a mask of mode {image.mode}: expected a colour (RGB) or single-channel PNG",
                          "mask of the wrong kind")
    if alpha is not None and (alpha == 0).any():  # before: a transparent background was its colour, unknown
        pixels = pixels.copy()
        pixels[alpha == 0] = 0
    if colour and not table.colours and (pixels == pixels[..., :1]).all():  # grey saved as RGB (before: refused)
        colour, pixels = False, pixels[..., 0]
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
    if nearest and colour and (unknown := mapped == IGNORE_LABEL).any():
        palette = np.array(list(table.colours), np.int32)  # (C, 3), in the order of `table.colours`' values
        rgb = np.stack([(found[unknown] >> 16) & 255, (found[unknown] >> 8) & 255, found[unknown] & 255], 1)
        mapped[unknown] = np.array(list(table.colours.values()), np.uint8)[nearest_colours(rgb, palette)[0]]
        skips.add("mask pixels of a colour the table lacks, given its nearest colour's class (--nearest-colour)",
                  str(path), int(unknown[inverse].sum()))
    labels = mapped[inverse].reshape(keys.shape)
    if not colour and looks_interpolated(pixels) is not None:  # before: converted, the ramps as classes, silently
        skips.add(INTERPOLATED, str(path))
    if (zero := lookup.get(0, 0)) and (keys == 0).mean() > 0.5:  # before: every class shifted by one, silently
        skips.add(ZERO_NAMED.format(table.classes[zero]), str(path))
    if not colour and set(found.tolist()) == {0, IGNORE_LABEL} and IGNORE_LABEL not in lookup:  # 0/255: said so
        skips.add(f"masks of the values 0 and {IGNORE_LABEL} alone ({IGNORE_LABEL}: ignore): binary masks? save class "
                  f"indices (1 for the table's first class after background)", str(path))
        return labels
    if (mapped == IGNORE_LABEL).any():
        unknown = found[mapped == IGNORE_LABEL][:3].tolist()
        shown = [f"({k >> 16}, {(k >> 8) & 255}, {k & 255})" for k in unknown] if colour else map(str, unknown)
        skips.add(UNKNOWN, f"{path}: {', '.join(shown)}", int((labels == IGNORE_LABEL).sum()))
    return labels


def _people(keypoints: Path | None, skips: Skips) -> tuple[dict, dict[str, list[Person]]]:
    """The people's category of a COCO keypoints file and its people by image file name (as the file writes it, in
    POSIX form): those of every category of the people's joints and limbs, as `PosePartDataset` reads them (why not
    through it: a tool's file names need not lie under the image folder given, and are joined by name)."""
    if keypoints is None:
        return {}, {}
    try:
        data = json.loads(keypoints.read_text(encoding="utf-8"))
        categories = data["categories"]
        index = person_category(categories)
        person = categories[index]
        people, others = people_categories(categories, [c.get("id", 1) for c in categories], index)
        names = {image["id"]: PurePosixPath(str(image["file_name"]).replace("\\", "/")).as_posix()
                 for image in data["images"]}
        by_name: dict[str, list[Person]] = {name: [] for name in names.values()}
        k = len(person.get("keypoints") or [])
        for ann in data["annotations"]:
            category = ann.get("category_id", person.get("id", 1))
            if category in others:
                skips.add("annotation of another keypoint category (not read)", f"{keypoints}: annotation id "
                          f"{ann.get('id')}, category {others[category]!r}")
            if category not in people or ann["image_id"] not in names:
                continue
            label = f"{keypoints}: annotation id {ann.get('id')} (image {names[ann['image_id']]})"
            kp = np.zeros((k, 3), np.float32) if ann.get("iscrowd") or not ann.get("keypoints") else \
                validate.annotation_keypoints(ann["keypoints"], k, label, person["keypoints"])[0]  # as datasets read
            polygons = ann.get("segmentation") if isinstance(ann.get("segmentation"), list) else None
            by_name[names[ann["image_id"]]].append(Person(kp, ann.get("bbox"), ann.get("area"), polygons or None))
    except DatasetError:  # a record the dataset would refuse too, named
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise DatasetError(f"{keypoints}: not a COCO keypoints file ({type(err).__name__}: {err})") from None
    if not person.get("keypoints"):
        raise DatasetError(f"{keypoints}: no category lists keypoints")
    return person, by_name


def convert_masks(
    images: str | Path,
    masks: str | Path,
    classes: str | Path,
    out: str | Path,
    *,
    keypoints: str | Path | None = None,
    nearest_colour: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert a folder of part masks (and optionally a COCO keypoints file of the same images) at `out`. An image
    is matched to `<its stem>.png` or `<its stem>_mask.png` among the masks; an image without one is written
    without part labels where the keypoints file has it, else skipped and counted. `nearest_colour`: a colour the
    table lacks takes the class of its nearest table colour (masks drawn with antialiasing), else it is ignored."""
    images, masks, classes = Path(images), Path(masks), Path(classes)
    for folder, what in ((images, "image"), (masks, "mask")):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: the {what} folder is not a directory")
    table = read_class_table(classes)
    skips = Skips()
    person, people = _people(Path(keypoints) if keypoints else None, skips)
    category = {**person, "part_classes": list(table.classes)} if person else {"part_classes": list(table.classes)}
    try:
        schema = Schema.from_category({"name": person.get("name", "person"), "keypoints": [], "skeleton": [],
                                       **category})
    except ValueError as err:
        raise DatasetError(f"{keypoints or classes}: {err}") from None
    source = {"reader": "masks", "nearest_colour": nearest_colour,
              **source_paths(images=images, masks=masks, classes=classes, keypoints=keypoints)}
    samples = _samples(images, masks, table, people, skips, pose=bool(person), nearest=nearest_colour)
    return write_samples(out, schema, samples, skips, strict=strict, overwrite=overwrite, source=source,
                         progress=progress)


def _samples(images: Path, masks: Path, table: ClassTable, people: dict[str, list[Person]], skips: Skips, *,
             pose: bool, nearest: bool = False) -> Iterator[Sample]:
    """One sample per image under `images` (subfolders kept in its name), with its mask (`<name>.png` or
    `<name>_mask.png` at the same place under `masks`; Roboflow's lie beside the images, and are no images) and its
    people (the keypoints file's image of the same path, else of the same name where only one has it). What does not
    join is counted: an image with neither mask nor people, a mask without its image, a listed image not found."""
    pngs = {p.relative_to(masks).with_suffix("").as_posix(): p for p in sorted(masks.rglob("*"))
            if p.suffix.lower() == ".png" and p.is_file() and not hidden(p, masks)}

    def mask_of(image: Path) -> Path | None:
        stem = image.relative_to(images).with_suffix("").as_posix()
        found = (pngs.get(key) for key in (stem + MASK_SUFFIX, stem))
        return next((m for m in found if m is not None and m.resolve() != image.resolve()), None)

    def lossy_mask_of(image: Path) -> Path | None:
        """A mask saved as JPEG (or another format) where its PNG would be: not read, and said so (before: "image
        with neither a mask nor people"): lossy compression changes the labels at every edge."""
        stem = image.relative_to(images).with_suffix("").as_posix()
        found = (m for key in (stem + MASK_SUFFIX, stem) for m in sorted((masks / key).parent.glob(
            glob.escape(Path(key).name) + ".*")) if m.suffix.lower() in IMAGE_SUFFIXES - {".png"})
        return next((m for m in found if m.is_file() and m.resolve() != image.resolve()), None)

    candidates = [p for p in sorted(images.rglob("*"))
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not hidden(p, images)]
    mask_for = {image: mask_of(image) for image in candidates}  # each looked up once (the lossy one globs)
    matched = set(mask_for.values())
    masks_beside = {m for m in pngs.values() if m.stem.endswith(MASK_SUFFIX)}  # Roboflow's, its image or not
    lossy_for = {image: lossy for image, mask in mask_for.items()
                 if mask is None and image not in matched and (lossy := lossy_mask_of(image)) is not None
                 and mask_for.get(lossy) is None}  # a photo with a PNG mask of its own is no lossy mask
    not_images = matched | masks_beside | set(lossy_for.values())
    candidates = [image for image in candidates if image not in not_images]
    by_base: dict[str, list[str]] = {}
    for name in people:
        by_base.setdefault(PurePosixPath(name).name, []).append(name)
    stems: dict[str, Path] = {}
    joined: set[str] = set()
    for image in candidates:
        name = image.relative_to(images).as_posix()
        stem = str(PurePosixPath(name).with_suffix(""))
        if stem in stems:  # x.jpg and x.png: one part map, parts/x.png, would serve both
            skips.add("image of the same name as another but its extension (skipped: one part map per name)",
                      f"{image} (and {stems[stem]})")
            continue
        stems[stem] = image
        listed = name if name in people else (by_base[image.name][0] if len(by_base.get(image.name, ())) == 1
                                              else None)
        mask, lossy = mask_for[image], lossy_for.get(image)
        if lossy is not None:
            skips.add("mask not saved as PNG (not read: export the masks as PNG, lossless)", str(lossy))
        if mask is None and listed is None:
            if lossy is None:
                skips.add("image with neither a mask nor people (skipped)", str(image))
            continue
        if listed is not None:
            joined.add(listed)
        if mask is None:
            skips.add("image without a mask (kept without part labels)", str(image))
        elif people and listed is None:
            skips.add("image the keypoints file does not list (kept without pose)", str(image))
        yield Sample(image, name, people.get(listed, []) if listed else [],
                     None if mask is None else (lambda m=mask: mask_labels(m, table, skips, nearest=nearest)),
                     pose_labeled=pose and listed is not None, parts_file=mask)
    for path in sorted(set(pngs.values()) - matched - {None}):
        skips.add("mask without its image (not read)", str(path))
    for name in sorted(set(people) - joined):
        skips.add("image of the keypoints file not found among the images", name)
