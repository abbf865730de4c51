"""Broken variants of a small valid dataset, generated on the fly (no committed data): the fuzz suite of
tests/test_fuzz.py. Each variant breaks ONE thing, so a reader that accepts it silently has a named blind spot.

`VARIANTS` maps a name to a function that breaks a copy of a good dataset root in place. Annotation breakages edit
the JSON's first image (id 1, which has people) or its first person; file breakages corrupt that image's files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

Mutation = Callable[[Path], None]


def _load(root: Path) -> dict[str, Any]:
    return json.loads((root / "annotations.json").read_text())


def _save(root: Path, data: Any) -> None:
    (root / "annotations.json").write_text(json.dumps(data))


def _json(edit: Callable[[dict[str, Any]], Any], *, replace: bool = False) -> Mutation:
    """A mutation of the parsed annotations: edited in place (what `edit` returns is ignored: `dict.pop` returns
    the value it removed), or replaced by what it returns when `replace`."""
    def mutate(root: Path) -> None:
        data = _load(root)
        replaced = edit(data)
        _save(root, replaced if replace else data)
    return mutate


def _person(edit: Callable[[dict[str, Any]], Any]) -> Mutation:
    """Edit the first labelled (non-crowd) person of image 1."""
    def change(data: dict[str, Any]) -> None:
        ann = next(a for a in data["annotations"] if a["image_id"] == 1 and not a.get("iscrowd"))
        edit(ann)
    return _json(change)


def _set(key: str, value: Any) -> Mutation:
    return _person(lambda a: a.__setitem__(key, value))


def _image(key: str, value: Any) -> Mutation:
    return _json(lambda d: d["images"][0].__setitem__(key, value))


def _keypoint(index: int, value: Any) -> Mutation:
    return _person(lambda a: a["keypoints"].__setitem__(index, value))


def _category(edit: Callable[[dict[str, Any]], Any]) -> Mutation:
    return _json(lambda d: edit(d["categories"][0]))


def _raw(text: bytes | str) -> Mutation:
    def mutate(root: Path) -> None:
        path = root / "annotations.json"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return mutate


def _first_image(root: Path) -> Path:
    return root / "images" / _load(root)["images"][0]["file_name"]


def _first_parts(root: Path) -> Path:
    return (root / "parts" / _load(root)["images"][0]["file_name"]).with_suffix(".png")


def _replace_file(which: Callable[[Path], Path], content: Callable[[bytes], bytes]) -> Mutation:
    def mutate(root: Path) -> None:
        path = which(root)
        path.write_bytes(content(path.read_bytes()))
    return mutate


def _to_folder(which: Callable[[Path], Path]) -> Mutation:
    def mutate(root: Path) -> None:
        path = which(root)
        path.unlink()
        path.mkdir()
    return mutate


def _symlink(which: Callable[[Path], Path], target: Callable[[Path, Path], str]) -> Mutation:
    def mutate(root: Path) -> None:
        path = which(root)
        path.unlink()
        os.symlink(target(root, path), path)
    return mutate


def _copy_outside(which: Callable[[Path], Path]) -> Mutation:
    """Replace a file by a symlink to a copy of it outside the dataset."""
    def mutate(root: Path) -> None:
        path = which(root)
        outside = root.parent / f"{root.name}_outside{path.suffix}"
        outside.write_bytes(path.read_bytes())
        path.unlink()
        os.symlink(outside, path)
    return mutate


def _parts_array(edit: Callable[[Any], Any]) -> Mutation:
    def mutate(root: Path) -> None:
        import cv2

        path = _first_parts(root)
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), edit(labels))
    return mutate


def _deep(depth: int) -> bytes:
    return ('{"images": ' + "[" * depth + "]" * depth + ', "annotations": [], "categories": []}').encode()


def _duplicate_image_id(data: dict[str, Any]) -> None:
    data["images"][1]["id"] = data["images"][0]["id"]


def _crowd(segmentation: Callable[[Any], Any]) -> Mutation:
    """Make the first person a crowd (an ignore region, rasterised from its segmentation) with a broken one."""
    def edit(ann: dict[str, Any]) -> None:
        ann["iscrowd"] = 1
        ann["segmentation"] = segmentation(ann["segmentation"])
    return _person(edit)


VARIANTS: dict[str, Mutation] = {
    # the annotation file itself
    "json: not UTF-8": _raw(b'{"images": [], "annotations": [], "categories": [{"name": "p\xff\xfe"}]}'),
    "json: nested 100000 deep": _raw(_deep(100_000)),
    "json: empty file": _raw(b""),
    "json: truncated": _replace_file(lambda r: r / "annotations.json", lambda b: b[: len(b) // 2]),
    "json: top level is a list": _json(lambda d: [d], replace=True),
    "json: annotations file is a folder": _to_folder(lambda r: r / "annotations.json"),
    "json: no images key": _json(lambda d: d.pop("images")),
    "json: images is an object": _json(lambda d: d.__setitem__("images", {"0": d["images"][0]})),
    "json: annotations is a string": _json(lambda d: d.__setitem__("annotations", "none")),
    "json: categories empty": _json(lambda d: d.__setitem__("categories", [])),
    "category: not an object": _json(lambda d: d.__setitem__("categories", ["person"])),
    "category: keypoints not a list": _category(lambda c: c.__setitem__("keypoints", "head,neck")),
    "category: skeleton joint out of range": _category(lambda c: c["skeleton"].append([1, 99])),
    "category: skeleton edge of three": _category(lambda c: c["skeleton"].append([1, 2, 3])),
    "category: skeleton strings": _category(lambda c: c["skeleton"].append(["1", "2"])),
    "category: duplicate joint names": _category(lambda c: c["keypoints"].__setitem__(1, c["keypoints"][0])),
    "category: part_classes not a list": _category(lambda c: c.__setitem__("part_classes", "head")),
    # image entries
    "image: entry is a string": _json(lambda d: d["images"].__setitem__(0, "000000.jpg")),
    "image: entry is null": _json(lambda d: d["images"].__setitem__(0, None)),
    "image: id null": _image("id", None),
    "image: id a string": _image("id", "1"),
    "image: id a float": _image("id", 1.5),
    "image: id a bool": _image("id", True),
    "image: id an object": _image("id", {"id": 1}),
    "image: duplicate id": _json(_duplicate_image_id),
    "image: no file_name": _json(lambda d: d["images"][0].pop("file_name")),
    "image: file_name empty": _image("file_name", ""),
    "image: file_name a number": _image("file_name", 7),
    "image: file_name absolute": _image("file_name", "/etc/passwd"),
    "image: file_name climbs out": _image("file_name", "../../outside/x.jpg"),
    "image: width a string": _image("width", "64"),
    "image: width zero": _image("width", 0),
    "image: height negative": _image("height", -64),
    "image: height fractional": _image("height", 64.5),
    "image: width disagrees with the file": _json(lambda d: d["images"][0].__setitem__("width",
                                                                                      d["images"][0]["width"] + 8)),
    "image: pose_labeled a string": _image("pose_labeled", "no"),
    # annotation entries
    "annotation: entry is a list": _json(lambda d: d["annotations"].__setitem__(0, [1, 2, 3])),
    "annotation: no image_id": _json(lambda d: d["annotations"][0].pop("image_id")),
    "annotation: image_id null": _set("image_id", None),
    "annotation: image_id a string": _set("image_id", "1"),
    "annotation: image_id unknown": _set("image_id", 999),
    "annotation: category unknown": _set("category_id", 77),
    "annotation: iscrowd a string": _set("iscrowd", "yes"),
    "annotation: iscrowd 2": _set("iscrowd", 2),
    # keypoints
    "keypoints: a string": _set("keypoints", "1 2 2"),
    "keypoints: too few values": _person(lambda a: a["keypoints"].pop()),
    "keypoints: string number": _keypoint(0, "12.5"),
    "keypoints: null value": _keypoint(0, None),
    "keypoints: bool value": _keypoint(0, True),
    "keypoints: nested list": _keypoint(0, [1, 2]),
    "keypoints: NaN": _keypoint(0, float("nan")),
    "keypoints: infinite": _keypoint(1, float("inf")),
    "keypoints: visibility 3": _keypoint(2, 3),
    "keypoints: visibility -1": _keypoint(2, -1),
    "keypoints: visibility 1.5": _keypoint(2, 1.5),
    "keypoints: far outside the image": _keypoint(0, 10_000.0),
    # boxes, areas, head sizes
    "bbox: three numbers": _set("bbox", [1.0, 2.0, 3.0]),
    "bbox: string numbers": _set("bbox", ["1", "2", "3", "4"]),
    "bbox: negative width": _person(lambda a: a["bbox"].__setitem__(2, -5.0)),
    "bbox: NaN": _person(lambda a: a["bbox"].__setitem__(0, float("nan"))),
    "bbox: a number": _set("bbox", 4),
    "area: negative": _set("area", -100.0),
    "area: NaN": _set("area", float("nan")),
    "area: a string": _set("area", "1692"),
    "head_size: zero": _set("head_size", 0),
    "head_size: negative": _set("head_size", -3.0),
    "head_size: a string": _set("head_size", "big"),
    "head_box: three numbers": _set("head_box", [1.0, 2.0, 3.0]),
    "head_box: upside down": _set("head_box", [20.0, 20.0, 10.0, 10.0]),
    "head_box: strings": _set("head_box", ["a", "b", "c", "d"]),
    # segmentations (ignore regions: a crowd or a person without keypoints)
    "segmentation: garbage RLE counts": _crowd(lambda s: {**s, "counts": "\x00garbage!!"}),
    "segmentation: RLE counts end mid-run": _crowd(lambda s: {**s, "counts": s["counts"] + "o"}),
    "segmentation: RLE counts one run short": _crowd(lambda s: {"size": s["size"],  # valid runs, one pixel short
                                                                "counts": [s["size"][0] * s["size"][1] - 1]}),
    "segmentation: RLE size disagrees": _crowd(lambda s: {**s, "size": [7, 9]}),
    "segmentation: RLE without size": _crowd(lambda s: {"counts": s["counts"]}),
    "segmentation: RLE counts list of strings": _crowd(lambda s: {**s, "counts": ["a", "b"]}),
    "segmentation: RLE counts overrun": _crowd(lambda s: {**s, "counts": [10, 100000]}),
    "segmentation: polygon odd length": _crowd(lambda s: [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]),
    "segmentation: polygon of strings": _crowd(lambda s: [["a", "b", "c", "d", "e", "f"]]),
    "segmentation: a number": _crowd(lambda s: 5),
    # files
    "image file: missing": lambda root: _first_image(root).unlink(),
    "image file: truncated JPEG": _replace_file(_first_image, lambda b: b[: len(b) // 2]),
    "image file: garbage": _replace_file(_first_image, lambda b: b"\x00garbage" * 50),
    "image file: empty": _replace_file(_first_image, lambda b: b""),
    "image file: a folder": _to_folder(_first_image),
    "image file: symlink out of the dataset": _copy_outside(_first_image),
    "image file: symlink loop": _symlink(_first_image, lambda root, path: str(path)),
    "part map: a folder": _to_folder(_first_parts),
    "part map: symlink loop": _symlink(_first_parts, lambda root, path: str(path)),
    "part map: symlink out of the dataset": _copy_outside(_first_parts),
    "part map: garbage": _replace_file(_first_parts, lambda b: b"\x89PNG garbage" * 20),
    "part map: empty": _replace_file(_first_parts, lambda b: b""),
    "part map: wrong size": _parts_array(lambda labels: labels[:-4]),
    "part map: colour": _parts_array(lambda labels: labels[:, :, None].repeat(3, axis=2)),
    "part map: label above the classes": _parts_array(lambda labels: labels * 0 + 9),
    "part map: 16-bit": _parts_array(lambda labels: labels.astype("uint16")),
}
