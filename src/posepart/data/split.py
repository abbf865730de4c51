"""Seeded subsets of a dataset's images as COCO annotation files beside it: `posepart split` (a tool's export arrives
as one file; a run wants training and validation images apart) and the thesis study's part-labelled fractions.

A subset is the dataset's own annotation file with only some images and their people, read with the dataset's
images and part maps (`posepart train --set data.train.root=ROOT --set data.train.annotations=FILE`): nothing is
copied, and the split is a function of the seed alone.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from posepart.data.format import PosePartDataset, read_json
from posepart.errors import UsageError
from posepart.files import write_json_atomic

SPLIT_FILES = ("train.json", "val.json")  # what `posepart split --out DIR` writes


def image_order(dataset: PosePartDataset, seed: int) -> list[int]:
    """The dataset's image ids in a seeded random order (sorted first: the same order whatever the file's)."""
    ids = sorted(r.image_id for r in dataset.records)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def write_subset(data: dict[str, Any], ids: Sequence[int], path: Path, made_by: dict[str, Any] | None = None
                 ) -> Path:
    """A dataset's annotation file (`data`, as `read_json` read it: read once for every subset) holding only the
    images `ids` and their people (every other key as it is) at `path`: opened with the dataset's root, or its
    images and part folders, for the pixels. `made_by`: added to its COCO `info` (how to make the subset again); a
    record of that name already there (a split of a split) is kept in the new one's "earlier"."""
    keep = set(ids)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    made_by = {key: {**value, "earlier": info[key]} if key in info else value
               for key, value in (made_by or {}).items()}
    write_json_atomic(path, {**data, "images": [image for image in data["images"] if image["id"] in keep],
                             "annotations": [ann for ann in data.get("annotations", []) if ann["image_id"] in keep],
                             **({"info": {**info, **made_by}} if made_by else {})})
    return path


def held_out_count(n: int, val: float) -> int:
    """Images held out for validation: `val` of the n when below 1 (rounded, at least one), else `val` images; at
    least one image is left to train on."""
    count = max(1, round(val * n)) if val < 1 else int(val)
    if n < 2 or count >= n:
        raise UsageError(f"split: --val {val:g} of {n} image(s) leaves nothing to train on")
    return count


class Split(NamedTuple):
    """What `split_dataset` wrote: the two annotation files, and the ids of the images held out."""

    train: Path
    val: Path
    held_out: frozenset[int]


def split_dataset(dataset: PosePartDataset, val: float, out: Path, *, seed: int = 0) -> Split:
    """Write out/train.json and out/val.json: the dataset's images in a seeded order, the first
    `held_out_count(n, val)` for validation and the rest for training. The subsets are written from the dataset's
    `annotations_json` where it was opened with `keep_json`, else from its file, read again."""
    order = image_order(dataset, seed)
    k = held_out_count(len(order), val)
    out.mkdir(parents=True, exist_ok=True)
    data = dataset.annotations_json if dataset.annotations_json is not None else read_json(dataset.annotation_file)
    train_file, val_file = (out / name for name in SPLIT_FILES)
    made_by = {"of": str(dataset.annotation_file.resolve()), "val": val, "seed": seed}  # to make it again
    return Split(write_subset(data, order[k:], train_file, {"posepart split": {**made_by, "subset": "train"}}),
                 write_subset(data, order[:k], val_file, {"posepart split": {**made_by, "subset": "val"}}),
                 frozenset(order[:k]))


def add_split_parser(verbs: Any) -> None:
    """Add the `split` verb to the `posepart` sub-parsers."""
    from posepart.data.dataset_args import add_dataset_args

    p = verbs.add_parser("split", help="hold out a seeded share of a dataset's images for validation (writes "
                         "train.json and val.json for the dataset's images)")
    add_dataset_args(p, positional=True)
    p.add_argument("--val", required=True, metavar="SHARE_OR_COUNT",
                   help="images held out: a share below 1 (0.1: a tenth) or a whole count (200)")
    p.add_argument("--seed", type=int, default=0, help="which images (the same seed, the same split)")
    p.add_argument("--out", type=Path, required=True, help="folder for train.json and val.json")
    p.add_argument("--overwrite", action="store_true", help="replace train.json and val.json already in --out")
    p.set_defaults(run=cmd_split)


def _share_or_count(text: str) -> float:
    """--val as a number: a share below 1, or a count written as a whole number. Before, "1.0" (all of them?) held
    out one image and "2.0" two: a value of 1 or more written otherwise is refused as ambiguous."""
    from posepart.arguments import positive

    try:
        value = positive(text)
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"split: --val: {err}") from None
    if value >= 1 and not text.strip().isdigit():
        raise UsageError(f"split: --val {text}: a share below 1 (0.1: a tenth) or a whole count of images (200)")
    return value


def cmd_split(args: argparse.Namespace) -> int:
    from posepart.data.dataset_args import open_dataset

    val = _share_or_count(args.val)
    if args.out.exists() and not args.out.is_dir():  # before: a FileExistsError traceback
        raise UsageError(f"split --out {args.out}: a file, not a folder")
    there = [args.out / name for name in SPLIT_FILES if (args.out / name).exists()]
    if there and not args.overwrite:
        raise UsageError(f"split: {there[0]} exists (--overwrite replaces it)")
    dataset = open_dataset(args, keep_json=True)  # parsed once (a COCO-sized file: 9 s a parse)
    split = split_dataset(dataset, val, args.out, seed=args.seed)
    held_out = np.array([record.image_id in split.held_out for record in dataset.records])
    labels = dataset.record_labels  # the counts from the records read (before: both files opened again)
    for path, rows in ((split.train, ~held_out), (split.val, held_out)):
        print(f"wrote {path}: {int(rows.sum())} images ({int(labels.pose[rows].sum())} pose-labelled, "
              f"{int(labels.parts[rows].sum())} with part maps)")
    print(f"train on them:\n  posepart train --config CONFIG {_paths_set(args, 'train', split.train)} "
          f"{_paths_set(args, 'val', split.val)} --out RUN", file=sys.stderr)
    print(f"score on the held-out images:\n  posepart evaluate --checkpoint CKPT {_paths_flags(args, split.val)}",
          file=sys.stderr)
    return 0


def _paths(args: argparse.Namespace, annotations: Path) -> dict[str, Path]:
    """Where a subset's files are: the dataset's root (or its images and part folders) and the subset's JSON."""
    given = {"root": args.root, "annotations": annotations, "images": args.images, "parts": args.parts}
    return {key: Path(value).resolve() for key, value in given.items() if value is not None}


def _paths_set(args: argparse.Namespace, split: str, annotations: Path) -> str:
    return " ".join(f"--set {shlex.quote(f'data.{split}.{key}={value}')}"
                    for key, value in _paths(args, annotations).items())


def _paths_flags(args: argparse.Namespace, annotations: Path) -> str:
    return " ".join(f"--{'data' if key == 'root' else key} {shlex.quote(str(value))}"
                    for key, value in _paths(args, annotations).items())
