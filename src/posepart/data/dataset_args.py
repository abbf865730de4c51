"""The dataset arguments of the command line (`inspect`, `evaluate`): a ROOT in the posepart format, or a COCO release
layout given as --annotations FILE --images DIR, opened with the same checks for every verb."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from posepart.data.format import DatasetError, PosePartDataset
from posepart.errors import UsageError


def add_dataset_args(parser: argparse.ArgumentParser, *, positional: bool, flag: str = "--data") -> None:
    """A dataset is ROOT in the posepart format, or a COCO release layout: --annotations FILE --images DIR."""
    if positional:
        parser.add_argument("root", nargs="?", type=Path, help="dataset root (annotations.json, images/, parts/)")
    else:
        parser.add_argument(flag, dest="root", type=Path, help="dataset root (annotations.json, images/, parts/)")
    parser.add_argument("--annotations", type=Path, help="COCO person_keypoints_*.json (release layout, with "
                        "--images; given with ROOT: read instead of ROOT/annotations.json)")
    parser.add_argument("--images", type=Path, help="image folder for --annotations (given with ROOT: instead of "
                        "ROOT/images)")
    parser.add_argument("--parts", type=Path, help="part label PNG folder (default ROOT/parts)")


def open_dataset(args: argparse.Namespace, *, list_broken: bool = False, keep_json: bool = False
                 ) -> PosePartDataset:
    """The dataset `add_dataset_args` describes, with a note per kind of skipped image; refused without images
    (`list_broken`, `inspect`'s: unless it lists broken records, the problems it reports). `keep_json`: as
    `PosePartDataset.open`'s."""
    if args.root is None and args.annotations is None:
        raise DatasetError("no dataset given: pass a dataset ROOT or --annotations FILE --images DIR")
    if args.root is None and args.images is None:
        raise DatasetError("--annotations needs --images DIR")
    dataset = noted(PosePartDataset.open(args.root, annotations=args.annotations, images=args.images,
                                         parts=args.parts, list_broken=list_broken, keep_json=keep_json))
    if not dataset.schema.num_joints and not dataset.schema.has_parts:  # before: "problems 0", empty metrics, exit 0
        raise DatasetError(f"{dataset.annotation_file}: no category lists \"keypoints\" or \"part_classes\": nothing "
                           f"to inspect or score (an export of boxes, polygons or single points?); the people's "
                           f"category lists the joint names, \"skeleton\" (1-based pairs) and, for part maps, "
                           f"\"part_classes\" (README, \"The dataset format\")")
    if args.root is None and (unread := dataset.unread_parts("--parts DIR")):
        print(f"note: {unread}", file=sys.stderr)
    return dataset if dataset.broken else with_images(dataset, args.root if args.root is not None else args.annotations)


def noted(dataset: PosePartDataset, where: str = "") -> PosePartDataset:
    """The dataset, after a note on stderr per kind of image it skipped (`where`: which input, when several)."""
    for reason, n in dataset.skipped.items():
        print(f"note: {where}{': ' if where else ''}skipped {n} x {reason} (first: "
              f"{dataset.skipped_examples[reason]})", file=sys.stderr)
    return dataset


def with_images(dataset: PosePartDataset, where: object) -> PosePartDataset:
    """The dataset, refused when it has no images: scoring or inspecting nothing would print empty metrics, exit 0."""
    if not dataset.records:
        why = "all were skipped" if dataset.skipped else "its annotations list none"
        raise DatasetError(f"{where}: no images to read: {why}")
    return dataset


def open_source(name: str, root: str) -> PosePartDataset:
    """An `evaluate --source NAME=ROOT`'s dataset: a posepart ROOT, or a COCO release as ANNOTATIONS.json, its image
    folder and optionally its part folder, joined by the path-list separator (`coco=person_keypoints_val2017.json:
    val2017`; ';' on Windows), as PATH joins folders."""
    fields = root.split(os.pathsep)
    # the last field ending in .json before another: the annotation file (its own path may hold the separator)
    json_at = max((i for i, field in enumerate(fields[:-1]) if field.lower().endswith(".json")), default=None)
    if json_at is not None and not Path(root).exists():
        annotations, folders = os.pathsep.join(fields[:json_at + 1]), fields[json_at + 1:]
        if len(folders) > 2 or not all(folders):  # (an empty field read as the working folder)
            raise UsageError(f"--source {name}={root}: expected FILE.json{os.pathsep}IMAGES or "
                             f"FILE.json{os.pathsep}IMAGES{os.pathsep}PARTS")
        parts = Path(folders[1]) if len(folders) == 2 else None
        dataset = PosePartDataset.open(annotations=Path(annotations), images=Path(folders[0]), parts=parts)
        if unread := dataset.unread_parts(f"its part folder as a third field "
                                          f"(NAME=FILE.json{os.pathsep}IMAGES{os.pathsep}PARTS)"):
            print(f"note: --source {name}: {unread}", file=sys.stderr)
        return dataset
    if root.lower().endswith(".json") and Path(root).is_file():
        raise UsageError(f"--source {name}={root}: a COCO annotation file; give its image folder after it, joined by "
                         f"'{os.pathsep}': NAME=FILE.json{os.pathsep}IMAGES")
    return PosePartDataset.open(Path(root))
