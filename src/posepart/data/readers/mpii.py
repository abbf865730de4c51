"""MPII Human Pose: the original release .mat (`RELEASE.annolist`), the HRNet/mmpose JSON and the `valid.h5`
evaluation file.

```
mpii_human_pose_v1_u12_1.mat   RELEASE.annolist(i).image.name, .annorect(j).{x1,y1,x2,y2 (head box), objpos, scale,
                               annopoints.point(k).{id, x, y, is_visible}}; RELEASE.img_train(i) (1 train, 0 test)
annot/{train,valid}.json       HRNet/mmpose: [{image, center, scale, joints[16][2], joints_vis[16]}], one per person
annot/valid.h5                 imgname, part (16x2), visible, normalize (= PCKh head size), center, scale, ...
images/<name>.jpg
```
All three store MATLAB 1-based pixel coordinates; posepart puts pixel centres at integers from 0, so 1 is subtracted
(as HRNet does). The PCKh normaliser is MPII's: 0.6 x the head-box diagonal (`head_box` in the annotation, read back
by `posepart.data.format`) or valid.h5's `normalize` (`head_size`, the same quantity). People are written in the native
`Schema.mpii()` (16 joints in the release order).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from posepart.data.format import DatasetError, read_json
from posepart.data.readers.common import ConvertResult, Person, Sample, Skips, source_paths, write_samples
from posepart.errors import UsageError
from posepart.matching import match_people
from posepart.schema import Schema

NUM_JOINTS = 16
ONE_BASED = 1.0  # MATLAB pixel origin of every MPII file


def _list(value: Any) -> list[Any]:
    """A loadmat (squeeze_me) field as a list: empty array -> [], a single struct -> [it], an array -> its items."""
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1))
    return [] if value is None else [value]


def _float(value: Any) -> float:
    """A scalar .mat field (maybe an empty array) as float; NaN when absent."""
    if isinstance(value, (int, float, np.number)):
        return float(value)
    arr = np.asarray(value, np.float64).reshape(-1)
    return float(arr[0]) if arr.size else float("nan")


def _visible(value: Any) -> int:
    """MPII `is_visible` (int, '1'/'0' string, or empty when unset) -> COCO v: 2 visible, 1 occluded."""
    if isinstance(value, str):
        value = value.strip() or "1"
    arr = np.asarray(value).reshape(-1)
    return 2 if arr.size == 0 or int(float(arr[0])) else 1


def _annorect_person(rect: Any, where: str, skips: Skips) -> Person | None:
    """One `annorect` entry -> Person (keypoints 0-based, head box); an ignore box when it has no points."""
    fields = set(getattr(rect, "_fieldnames", ()) or ())
    head_box = [_float(getattr(rect, k, None)) - ONE_BASED for k in ("x1", "y1", "x2", "y2")] \
        if {"x1", "y1", "x2", "y2"} <= fields else None
    head_box = head_box if head_box is not None and np.isfinite(head_box).all() else None
    # MHP marks a missing head box with -1s: written as they were, every reader refused the dataset made of them
    empty_box = head_box is not None and not (head_box[2] > head_box[0] and head_box[3] > head_box[1])
    head_box = None if empty_box else head_box
    points = _list(getattr(getattr(rect, "annopoints", None), "point", None)) if "annopoints" in fields else []
    kp = np.zeros((NUM_JOINTS, 3), np.float32)
    for point in points:
        joint = int(_float(point.id))
        if not 0 <= joint < NUM_JOINTS:
            raise DatasetError(f"{where}: joint id {joint} outside 0..{NUM_JOINTS - 1}")
        kp[joint] = (_float(point.x) - ONE_BASED, _float(point.y) - ONE_BASED, _visible(getattr(point, "is_visible",
                                                                                               None)))
    kp[~np.isfinite(kp).all(1)] = 0
    extra = {"head_box": [round(v, 3) for v in head_box]} if head_box is not None else {}
    if (kp[:, 2] > 0).any():
        if empty_box:
            skips.add("head box missing or empty (x2 <= x1 or y2 <= y1: PCKh falls back to head-neck)", where)
        return Person(kp, extra=extra)
    # an unannotated person: ignore the square of side 200 x scale around objpos (MPII's scale is height / 200 px)
    skips.add("person without keypoints (ignore region when it has objpos and scale)", where)
    scale = _float(getattr(rect, "scale", None)) if "scale" in fields else float("nan")
    objpos = getattr(rect, "objpos", None) if "objpos" in fields else None
    if objpos is None or not np.isfinite(scale) or not hasattr(objpos, "x"):
        return None
    cx, cy, side = _float(objpos.x) - ONE_BASED, _float(objpos.y) - ONE_BASED, 200.0 * scale
    return Person(kp, bbox=[cx - side / 2, cy - side / 2, side, side])


def read_annolist_mat(path: Path, split: str | None = None, skips: Skips | None = None
                      ) -> list[tuple[str | None, list[Person]]]:
    """(image name or None, people) per annolist entry of an MPII-layout .mat, filtered by `split`.

    Reads `RELEASE` (the official file) or a bare `annolist*` variable (e.g. MHP's `annolist_test_multi`). `split` is
    'train' or 'test' (by `img_train`, only in RELEASE) or 'all'; None: 'train' when `img_train` exists, else 'all'.
    """
    from scipy.io import loadmat

    skips = skips if skips is not None else Skips()
    _require_file(path)
    try:
        mat = loadmat(path, struct_as_record=False, squeeze_me=True)
    except (OSError, ValueError, TypeError) as err:
        raise DatasetError(f"{path}: cannot read MATLAB file: {err}") from None
    train_flags = None
    if "RELEASE" in mat:
        release = mat["RELEASE"]
        annolist = _list(release.annolist)
        if hasattr(release, "img_train"):
            train_flags = np.asarray(release.img_train).reshape(-1)
    else:
        names = [k for k in mat if k.startswith("annolist")]
        if len(names) != 1:
            raise DatasetError(f"{path}: expected a RELEASE struct or one annolist* variable, found "
                               f"{sorted(k for k in mat if not k.startswith('__'))}")
        annolist = _list(mat[names[0]])
    split = split or ("train" if train_flags is not None else "all")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    if split != "all" and train_flags is None:
        raise DatasetError(f"{path}: no img_train flags to select the {split!r} split: convert all its images "
                           f"(--split all)")
    out = []
    for i, entry in enumerate(annolist):
        if train_flags is not None and split != "all" and int(train_flags[i]) != (split == "train"):
            continue
        image = getattr(entry, "image", None)
        name = str(image.name) if image is not None and hasattr(image, "name") else None
        people = []
        for j, rect in enumerate(_list(getattr(entry, "annorect", None))):
            person = _annorect_person(rect, f"{path}: annolist({i + 1}).annorect({j + 1})", skips)
            if person is not None:
                people.append(person)
        out.append((name, people))
    return out


def _joints_person(joints: Any, vis: Any, where: str) -> Person:
    """(16, 2) 1-based joints and (16,) labelled flags -> Person (v 2: these files carry no occlusion flag)."""
    xy = np.asarray(joints, np.float64).reshape(-1, 2)
    labelled = np.asarray(vis, np.float64).reshape(-1) > 0
    if xy.shape[0] != NUM_JOINTS or labelled.size != NUM_JOINTS:
        raise DatasetError(f"{where}: {xy.shape[0]} joints / {labelled.size} flags, expected {NUM_JOINTS}")
    kp = np.zeros((NUM_JOINTS, 3), np.float32)
    ok = labelled & np.isfinite(xy).all(1)
    kp[ok, :2] = xy[ok] - ONE_BASED
    kp[ok, 2] = 2
    return Person(kp)


def read_mmpose_json(path: Path) -> dict[str, list[Person]]:
    """People of an HRNet/mmpose MPII JSON by image name (file order)."""
    entries = read_json(Path(path), list, "a list of {image, joints, joints_vis} entries")
    people: dict[str, list[Person]] = defaultdict(list)
    for i, e in enumerate(entries):
        try:
            people[str(e["image"])].append(_joints_person(e["joints"], e["joints_vis"], f"{path}: entry {i}"))
        except (KeyError, TypeError) as err:
            raise DatasetError(f"{path}: entry {i} lacks image/joints/joints_vis ({err})") from None
    return dict(people)


def _require_file(path: Path) -> None:
    """A DatasetError naming a missing annotation file (before: the MATLAB or HDF5 library's own words, "Reader needs
    file name or open file-like object", "unable to open file")."""
    if not Path(path).is_file():
        raise DatasetError(f"{path}: annotation file not found" + (" (a folder)" if Path(path).is_dir() else ""))


def read_valid_h5(path: Path) -> dict[str, list[Person]]:
    """People of valid.h5 by image name, each with `head_size` = its `normalize` (row order within an image).

    A joint is labelled when its coordinates are not (0, 0); `visible` 0 marks it occluded (v 1)."""
    import h5py

    _require_file(path)
    try:
        with h5py.File(path, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["imgname"][:]]
            part, visible, normalize = f["part"][:], f["visible"][:], f["normalize"][:]
    except (OSError, KeyError) as err:
        raise DatasetError(f"{path}: cannot read valid.h5 (imgname, part, visible, normalize): {err}") from None
    people: dict[str, list[Person]] = defaultdict(list)
    for name, xy, vis, size in zip(names, part, visible, normalize):
        kp = np.zeros((NUM_JOINTS, 3), np.float32)
        labelled = (xy != 0).any(1)
        kp[labelled, :2] = xy[labelled] - ONE_BASED
        kp[labelled, 2] = np.where(vis[labelled] > 0, 2, 1)
        people[name].append(Person(kp, extra={"head_size": round(float(size), 4)}))
    return dict(people)


def attach_head_sizes(people: dict[str, list[Person]], reference: dict[str, list[Person]], skips: Skips) -> None:
    """Copy each reference person's `head_size` onto the person of the same image it matches: the Hungarian pairing
    with the most joints within half its head size (`posepart.matching.match_people`), accepted when their mean
    distance is within it too; people left unmatched are counted."""
    for name, persons in people.items():
        ref = reference.get(name, [])
        gt = np.stack([p.keypoints for p in persons])
        candidates = np.stack([r.keypoints for r in ref]) if ref else np.zeros((0, NUM_JOINTS, 3), np.float32)
        sizes = np.array([r.extra["head_size"] for r in ref], np.float64)
        matched = 0
        # the pairing that puts the most joints within the distance that makes them one person (half the reference's
        # head size); before, the pairing of the most people, which could give an exact pair's person to another
        for r, g in match_people(candidates, gt, 0.5 * sizes):
            both = (gt[g, :, 2] > 0) & (candidates[r, :, 2] > 0)
            if np.linalg.norm(gt[g, both, :2] - candidates[r, both, :2], axis=1).mean() <= 0.5 * sizes[r]:  # one person
                persons[g].extra["head_size"] = ref[r].extra["head_size"]
                matched += 1
        if matched < len(persons):
            skips.add("person without a head size in the valid.h5 (PCKh falls back to head-neck)", name,
                      len(persons) - matched)


def image_name(pattern: str, index: int) -> str:
    """The file name `--image-names PATTERN` gives annolist entry `index` (1-based): `pattern.format(index=index)`.
    A pattern with another field or a bad format spec is a UsageError naming it, not a traceback, and so is one that
    names every entry alike (no `{index}`: before, every entry's people were written onto one image)."""
    try:
        name, other = pattern.format(index=index), pattern.format(index=index + 1)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise UsageError(f"--image-names {pattern!r}: not a file name pattern over {{index}} ({type(err).__name__}: "
                         f"{err}); e.g. '{{index:05d}}.jpg'") from None
    if name == other:
        raise UsageError(f"--image-names {pattern!r}: gives every annolist entry the same file name ({name!r}); the "
                         f"pattern says where the 1-based {{index}} goes, e.g. '{{index:05d}}.jpg'")
    return name


def mpii_samples(groups: Sequence[tuple[str, list[Person]]], images: Path, skips: Skips) -> Iterator[Sample]:
    """One sample per image. Every MPII image shows people, so one without any labelled person (the test split,
    or only unannotated people) is written as pose-unlabelled rather than as an image of nobody."""
    for name, people in groups:
        labelled = any((p.keypoints[:, 2] > 0).any() for p in people)
        if not labelled and (images / name).is_file():  # a missing image is counted as such when it is written
            skips.add("image without an annotated person (written as pose-unlabelled)", name)
        yield Sample(images / name, name, people, pose_labeled=labelled)


def convert_mpii(
    src: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    head_sizes: str | Path | None = None,
    image_names: str | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert MPII annotations (`src`: the release .mat, an HRNet/mmpose .json or valid.h5) to a posepart dataset.

    `head_sizes`: a valid.h5 whose `normalize` becomes each matched person's PCKh head size (for the JSON, which has
    no head boxes). `image_names`: a str.format pattern over the annolist index (e.g. '{index:05d}.jpg') for an
    annolist without image names.
    """
    src, images = Path(src), Path(images)
    if not images.is_dir():
        raise DatasetError(f"{images}: image folder not found")
    skips = Skips()
    suffix = src.suffix.lower()
    if split is not None and suffix != ".mat":  # a .json or valid.h5 holds one split already: the file is the choice
        raise UsageError(f"convert mpii --split {split}: only the release .mat holds several splits; {src} is one "
                         f"split already")
    if suffix == ".mat":
        entries = read_annolist_mat(src, split, skips)
        if any(name is None for name, _ in entries) and image_names is None:
            raise DatasetError(f"{src}: the annolist has no image names (annolist(i).image.name); pass "
                               f"--image-names PATTERN, e.g. '{{index:05d}}.jpg' (index = 1-based annolist position), "
                               f"to say which file each entry is")
        groups = [(name if name is not None else image_name(str(image_names), i + 1), people)
                  for i, (name, people) in enumerate(entries)]
    elif suffix == ".json":
        groups = list(read_mmpose_json(src).items())
    elif suffix in (".h5", ".hdf5"):
        groups = list(read_valid_h5(src).items())
    else:
        raise DatasetError(f"{src}: unknown MPII annotation file (expected .mat, .json or .h5)")
    merged: dict[str, list[Person]] = {}
    for name, people in groups:  # one sample per image file, whatever the source's grouping
        merged.setdefault(name, []).extend(people)
    if head_sizes is not None:
        attach_head_sizes(merged, read_valid_h5(Path(head_sizes)), skips)
    source = {"reader": "mpii", "split": split, "image_names": image_names, "one_based": True,
              **source_paths(src=src, images=images, head_sizes=head_sizes)}
    samples = mpii_samples(list(merged.items()), images, skips)
    return write_samples(out, Schema.mpii(), samples, skips, strict=strict, overwrite=overwrite,
                         source=source, progress=progress)
