"""`posepart convert DATASET --src ... --out DIR`: the command-line side of the readers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output dataset root (posepart format)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad sample instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def add_convert_parser(verbs: Any) -> None:
    """Add the `convert` verb and its per-dataset sub-verbs to the `posepart` sub-parsers."""
    convert = verbs.add_parser("convert", help="convert a public dataset release or a tool's export into the "
                                "posepart format")
    kinds = convert.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    p = kinds.add_parser("pascal-person-part", help="PASCAL-Person-Part parts (+ Xia .mat or Berkeley XML pose)")
    p.add_argument("--src", type=Path, required=True, help="root with JPEGImages/ and SegmentationPart/")
    p.add_argument("--split", help="use ROOT/list/<SPLIT>_id.txt (default: every SegmentationPart PNG)")
    p.add_argument("--list", dest="id_list", type=Path, help="explicit id list file (overrides --split)")
    p.add_argument("--part-order", default="observed",
                   help="part names of label ids 1..6: 'observed' (head,torso,lower_arm,upper_arm,lower_leg,"
                        "upper_leg; checked on the VOC-colour PNGs), 'common' (upper before lower) or a comma list")
    p.add_argument("--pose", dest="pose_dir", type=Path, help="Xia et al. pose .mat folder (default "
                   "ROOT/pose_annotations if present)")
    p.add_argument("--berkeley", dest="berkeley_dir", type=Path, help="Berkeley PASCAL keypoint XML folder (person/)")
    p.add_argument("--first-side", choices=("right", "left"), default="right",
                   help="side of Xia's joints 2-7 (the other side is 8-13)")
    _common(p)

    p = kinds.add_parser("mpii", help="MPII Human Pose: release .mat, HRNet/mmpose .json or valid.h5")
    p.add_argument("--src", type=Path, required=True, help="annotation file: .mat, .json or .h5")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--split", choices=("train", "test", "all"), help=".mat only: by img_train (default train when "
                   "the file has img_train, else all)")
    p.add_argument("--head-sizes", type=Path, help="valid.h5 whose `normalize` gives the PCKh head size of each "
                   "matched person (for the JSON)")
    p.add_argument("--image-names", help="file name pattern for an annolist without names, e.g. '{index:05d}.jpg'")
    _common(p)

    p = kinds.add_parser("lip", help="LIP: parsing PNGs and/or the 16-joint pose CSV")
    p.add_argument("--src", type=Path, help="LIP root (TrainVal_images/, TrainVal_parsing_annotations/, "
                   "TrainVal_pose_annotations/)")
    p.add_argument("--split", default="val", help="train or val (release layout under --src)")
    p.add_argument("--images", type=Path, help="image folder (overrides --src)")
    p.add_argument("--pose", type=Path, help="pose CSV (overrides --src)")
    p.add_argument("--parsing", type=Path, help="parsing PNG folder (overrides --src)")
    p.add_argument("--list", dest="id_list", type=Path, help="id list file (default: the CSV rows, else the PNGs)")
    _common(p)

    p = kinds.add_parser("masks", help="part masks from an annotation tool (CVAT's segmentation masks, Roboflow's "
                         "semantic masks) and a class table, optionally with a COCO keypoints file")
    p.add_argument("--images", type=Path, required=True, help="image folder (CVAT: JPEGImages/)")
    p.add_argument("--masks", type=Path, required=True, help="mask PNG folder, <image stem>.png or <image "
                   "stem>_mask.png (CVAT: SegmentationClass/; Roboflow: the images' folder)")
    p.add_argument("--classes", type=Path, required=True, help="class table: CVAT's labelmap.txt (colours), "
                   "Roboflow's _classes.csv (values), or a list of names, line i naming mask value i")
    p.add_argument("--keypoints", type=Path, help="a COCO keypoints file of the same images (matched by name), for "
                   "pose and parts together")
    p.add_argument("--nearest-colour", action="store_true", help="colour masks: a colour the table lacks takes the "
                   "class of its nearest table colour (masks drawn with antialiased edges; default: ignored, counted)")
    _common(p)

    p = kinds.add_parser("cihp", help="CIHP multi-person parsing (parts only)")
    p.add_argument("--src", type=Path, required=True, help="root with Images/ + Category_ids/ or images/ + labels/")
    p.add_argument("--split", help="use ROOT/lists|list/<SPLIT>_id.txt (default: every label PNG)")
    p.add_argument("--list", dest="id_list", type=Path, help="explicit id list file (overrides --split)")
    _common(p)
    convert.set_defaults(run=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Run the chosen reader; print what was written and what was skipped."""
    try:
        result = _convert(args)
    except ValueError as err:  # DatasetError (a ValueError) and bad options alike: one line naming the problem
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def _convert(args: argparse.Namespace) -> Any:
    common = {"strict": args.strict, "overwrite": args.overwrite, "progress": sys.stderr.isatty()}
    if args.dataset == "pascal-person-part":
        from posepart.data.readers.pascal import convert_pascal

        return convert_pascal(args.src, args.out, split=args.split, id_list=args.id_list,
                                part_order=args.part_order, pose_dir=args.pose_dir, berkeley_dir=args.berkeley_dir,
                                first_side=args.first_side, **common)
    elif args.dataset == "mpii":
        from posepart.data.readers.mpii import convert_mpii

        return convert_mpii(args.src, args.images, args.out, split=args.split, head_sizes=args.head_sizes,
                              image_names=args.image_names, **common)
    elif args.dataset == "lip":
        from posepart.data.readers.lip import convert_lip

        return convert_lip(args.out, src=args.src, split=args.split, images=args.images, pose=args.pose,
                             parsing=args.parsing, id_list=args.id_list, **common)
    elif args.dataset == "masks":
        from posepart.data.readers.masks import convert_masks

        return convert_masks(args.images, args.masks, args.classes, args.out, keypoints=args.keypoints,
                             nearest_colour=args.nearest_colour, **common)
    else:
        from posepart.data.readers.cihp import convert_cihp

        return convert_cihp(args.src, args.out, split=args.split, id_list=args.id_list, **common)
