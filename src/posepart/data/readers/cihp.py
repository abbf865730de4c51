"""CIHP (Crowd Instance-level Human Parsing): multi-person images with 20-class parsing PNGs; no pose.

Two layouts are read, the instance-level release / Graphonomy one and the CIHP_PGN one:
```
ROOT/Images/<id>.jpg        ROOT/images/<id>.jpg
ROOT/Category_ids/<id>.png  ROOT/labels/<id>.png       0..19 index PNGs
ROOT/lists/<split>_id.txt   ROOT/list/<split>_id.txt   optional split lists
```
Written in the native `Schema.cihp()` (parts only: every image is `pose_labeled` false by the schema).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from posepart.data.format import DatasetError
from posepart.data.readers.common import (
    ConvertResult,
    Sample,
    Skips,
    find_split_list,
    first_dir,
    read_id_list,
    read_label_png,
    source_paths,
    write_samples,
)
from posepart.schema import Schema

IMAGE_DIRS = ("Images", "images")
LABEL_DIRS = ("Category_ids", "labels")


def cihp_samples(images: Path, labels: Path, ids: Sequence[str], skips: Skips) -> Iterator[Sample]:
    """One parts-only sample per id; an image without its label PNG is skipped and counted."""
    num_classes = Schema.cihp().num_parts
    for image_id in ids:
        png = labels / f"{image_id}.png"
        if not png.is_file() and (images / f"{image_id}.jpg").is_file():
            skips.add("missing label PNG (image skipped)", str(png))
            continue
        yield Sample(images / f"{image_id}.jpg", f"{image_id}.jpg", [], lambda p=png: read_label_png(p, num_classes),
                     parts_file=png)


def convert_cihp(
    src: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    id_list: str | Path | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert CIHP at `src` to a posepart dataset; ids from `id_list`, the `split` list, else every label PNG."""
    root = Path(src)
    if not root.is_dir():
        raise DatasetError(f"{root}: CIHP root is not a directory")
    images = first_dir(root, IMAGE_DIRS, "image")
    labels = first_dir(root, LABEL_DIRS, "label")
    if id_list is not None:
        ids = read_id_list(Path(id_list))
    elif split is not None:
        ids = read_id_list(find_split_list(root, split))
    else:
        ids = sorted(p.stem for p in labels.glob("*.png"))
    skips = Skips()
    source = {"reader": "cihp", "split": split, **source_paths(src=root, list=id_list, images=images, labels=labels)}
    return write_samples(out, Schema.cihp(), cihp_samples(images, labels, ids, skips), skips, strict=strict,
                         overwrite=overwrite, source=source, progress=progress)
