"""`posepart inspect`: validate every file of a dataset and count what it holds."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from posepart.data.format import DatasetError, ImageRecord, PosePartDataset, hidden
from posepart.data.images import READ_AS_STORED, looks_interpolated, tagged_as_stored
from posepart.schema import IGNORE_LABEL


IGNORE_NOTE_SHARE = 0.5  # more part-map pixels than this at 255 (ignore) is noted: likely a 0/255 mask


@dataclass
class InspectReport:
    """Counts and problems found in a dataset; `to_json()` is what `inspect --json` prints."""

    counts: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.counts, "problems": self.problems}

    def format(self) -> str:
        c = self.counts
        lines = [
            f"schema        {c['schema']['name']}: {c['schema']['joints']} joints, {c['schema']['limbs']} limbs, "
            f"{c['schema']['parts']} part classes",
            *(f"note: {concern}" for concern in c["schema"].get("concerns", ())),
            f"images        {c['images']}  (pose-labelled {c['images_pose_labeled']}, "
            f"part-labelled {c['images_part_labeled']})",
            f"people        {c['people']} labelled, {c['ignore_regions']} ignore regions (crowds / unlabelled)",
            *(f"note: {concern}" for concern in c.get("label_concerns", ())),
        ]
        for reason, n in c["skipped"].items():
            lines.append(f"skipped       {n} x {reason}")
        if c["keypoints_per_joint"]:
            lines.append("labelled keypoints per joint (visible + occluded):")
            for name, n in c["keypoints_per_joint"].items():
                lines.append(f"  {name:<18} {n['visible']:>7} + {n['occluded']:<7}")
        unchecked = not c.get("pixels_checked", True)
        if unchecked and c["images_part_labeled"]:
            lines.append("part pixel share: not measured (--no-pixels: no part map decoded)")
        if c["part_pixel_share"]:
            lines.append("part pixel share (of labelled pixels):")
            for name, share in c["part_pixel_share"].items():
                lines.append(f"  {name:<18} {100 * share:6.2f} %")
        ignored = c.get("part_ignore_share", 0.0)
        only_background = not any(list(c["part_pixel_share"].values())[1:])
        if ignored > IGNORE_NOTE_SHARE or (ignored and only_background):  # a 0/255 mask: background and ignore
            alone = " and no class but background has any" if only_background else ""
            lines.append(f"note: {100 * ignored:.1f} % of the part-map pixels are {IGNORE_LABEL} (ignore: neither "
                         f"trained nor scored){alone}: if these are 0/255 masks, save class indices instead (0 "
                         f"background, 1 the first class, ...)")
        rotated = c.get("exif_rotated") or {}
        if rotated.get("images"):  # annotations made on the photo as viewers show it would not fit the stored pixels
            lines.append(f"note: {rotated['images']} image(s) carry an EXIF orientation tag (first: "
                         f"{rotated['first']}): {READ_AS_STORED}")
        unread = c.get("part_maps_unread") or {}
        if unread.get("files"):  # before: a part map of the wrong name was left out without a word
            lines.append(f"note: {unread['files']} file(s) in the part-map folder are named for an image without "
                         f"its part map, but are not its name (first: {unread['first']}): an image's part map is "
                         f"parts/<its file_name, extension .png>, in the same case")
        interpolated = c.get("part_maps_interpolated") or {}
        if interpolated.get("maps"):  # before: trained on, each in-between pixel of another class, without a word
            lines.append(f"note: {interpolated['maps']} part map(s) have ramps of in-between labels along their edges "
                         f"(first: {interpolated['first']}, {100 * interpolated['ramps']:.0f} % of its edge pixels), "
                         f"as a label map resized with linear or cubic interpolation has: each in-between pixel is "
                         f"taken for another class (3 between 0 and 6). Resize label maps with nearest-neighbour "
                         f"interpolation (cv2.INTER_NEAREST, PIL's Image.NEAREST), from the originals")
        lines.append(f"problems      {len(self.problems)}" + ("  (the JSON's alone: --no-pixels decoded no image "
                                                               "or part map)" if unchecked else ""))
        lines.extend(f"  {p}" for p in self.problems[:20])
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more (see --json)")
        return "\n".join(lines)


def _unread_part_maps(dataset: PosePartDataset, without_parts: set[str]) -> dict[str, Any]:
    """The files in the dataset's part-map folder named for an image that has no part map, in another case or with
    the image's extension kept (`parts/IMG1.PNG`, `parts/img1.jpg.png` for `img1.jpg`): their count and the first.
    Only those: a part-map folder may be shared by the splits of a dataset, whose other images' maps are not ours."""
    folder = dataset.parts_dir
    if folder is None or not without_parts:
        return {"files": 0, "first": None}
    unread = sorted(p for p in folder.rglob("*") if p.is_file() and not hidden(p, folder)
                    and str(p.relative_to(folder).with_suffix("")).lower() in without_parts)
    return {"files": len(unread), "first": str(unread[0]) if unread else None}


class PixelCheck(NamedTuple):
    """What decoding one record's files found."""

    problem: str | None
    pixels: np.ndarray | None  # part-map pixels per class
    ignored: int  # part-map pixels at IGNORE_LABEL
    # the image's path where it is annotated and tagged with an EXIF orientation: read as stored, which is right for
    # annotations made on the stored pixels, as COCO's are
    tagged: str | None = None
    interpolated: tuple[str, float] | None = None  # its part map and the share of its edges on ramps, where it
    # looks resized with interpolation (`label_ramps`)


def _check_pixels(dataset: PosePartDataset, record: ImageRecord, classes: int) -> PixelCheck:
    """Decode one record's image and part map: the problem found, or its part-map pixel counts."""
    tagged = str(record.image_path) if tagged_as_stored(record.image_path, record.orientation) else None
    try:
        dataset.load_image(record)
        parts = dataset.load_parts(record)
    except DatasetError as err:
        return PixelCheck(str(err), None, 0, tagged)
    if parts is None:
        return PixelCheck(None, None, 0, tagged)
    labelled = parts[parts != IGNORE_LABEL].ravel()
    ramps = looks_interpolated(parts)
    return PixelCheck(None, np.bincount(labelled, minlength=classes)[:classes], int(parts.size - labelled.size),
                      tagged, None if ramps is None else (str(record.parts_path), ramps))


def inspect_dataset(dataset: PosePartDataset, *, check_pixels: bool = True, progress: bool = False,
                    threads: int = 1) -> InspectReport:
    """Count images, people, keypoints per joint and part pixel shares; decode every file when `check_pixels` (with
    a progress bar on stderr when `progress`: COCO's train set takes minutes), `threads` files at once (OpenCV
    decodes without Python's lock, so threads share the cores; the report is the same for any count)."""
    schema = dataset.schema
    visible = np.zeros(schema.num_joints, np.int64)
    occluded = np.zeros(schema.num_joints, np.int64)
    part_pixels = np.zeros(max(schema.num_parts, 1), np.int64)
    ignored_pixels = pose_labeled = part_labeled = people = ignore_regions = 0
    problems: list[str] = list(dataset.broken)  # records left out when opened (`list_broken`), then the files
    bar = None if progress and check_pixels else True  # None: a bar only where stderr is a terminal (`| head`)
    pending: deque[Future[PixelCheck]] = deque()  # checks in flight, in record order: the problems keep it

    tagged: list[str] = []  # annotated images with an EXIF orientation (read as stored)
    ramped: list[tuple[str, float]] = []  # part maps that look resized with interpolation, and their ramps' share
    without_parts: set[str] = set()  # the names (lower case, with and without the extension) of images with no map

    def finish(check: PixelCheck) -> None:
        nonlocal ignored_pixels
        if check.tagged is not None:
            tagged.append(check.tagged)
        if check.problem is not None:
            problems.append(check.problem)
        elif check.pixels is not None:
            part_pixels[:] += check.pixels
            ignored_pixels += check.ignored
            if check.interpolated is not None:
                ramped.append(check.interpolated)

    pool = ThreadPoolExecutor(threads)  # its threads start with the first file submitted (none with --no-pixels)
    try:
        for record in tqdm(dataset, desc="inspect", unit="img", leave=False, disable=bar):
            v = record.keypoints[..., 2] if record.pose_labeled else np.zeros((0, schema.num_joints))
            visible += (v == 2).sum(0).astype(np.int64)
            occluded += (v == 1).sum(0).astype(np.int64)
            pose_labeled += record.pose_labeled  # counted in this one pass: records are unpacked on each access
            part_labeled += record.parts_path is not None
            if record.parts_path is None:
                without_parts |= {record.file_name.lower(), str(Path(record.file_name).with_suffix("")).lower()}
            people += record.num_people if record.pose_labeled else 0
            ignore_regions += len(record.ignore_regions)
            if check_pixels:
                pending.append(pool.submit(_check_pixels, dataset, record, len(part_pixels)))
            while len(pending) > 4 * threads:  # a bounded window: the records are not all held at once
                finish(pending.popleft().result())
        while pending:
            finish(pending.popleft().result())
    finally:  # Ctrl-C: the files queued are not decoded
        pool.shutdown(cancel_futures=True)
    labelled_pixels = part_pixels.sum()
    counts = {
        "schema": {"name": schema.name, "joints": schema.num_joints, "limbs": schema.num_limbs,
                   "parts": schema.num_parts, "concerns": list(schema.concerns())},
        "label_concerns": dataset.label_concerns(),
        "images": len(dataset),
        "images_pose_labeled": pose_labeled,
        "images_part_labeled": part_labeled,
        "people": people,
        "ignore_regions": ignore_regions,
        "pixels_checked": check_pixels,
        "skipped": dict(dataset.skipped),
        "keypoints_per_joint": {
            name: {"visible": int(visible[j]), "occluded": int(occluded[j])}
            for j, name in enumerate(schema.keypoints)
        },
        "part_pixel_share": {
            name: float(part_pixels[i] / labelled_pixels)
            for i, name in enumerate(schema.part_classes)
        } if labelled_pixels else {},
        "part_ignore_share": float(ignored_pixels / (ignored_pixels + labelled_pixels)) if ignored_pixels else 0.0,
        "exif_rotated": {"images": len(tagged), "first": tagged[0] if tagged else None},
        "part_maps_unread": _unread_part_maps(dataset, without_parts),
        "part_maps_interpolated": {"maps": len(ramped), "first": ramped[0][0] if ramped else None,
                                   "ramps": ramped[0][1] if ramped else None},
    }
    return InspectReport(counts, problems)
