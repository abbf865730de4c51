"""What `posepart predict` runs on: its inputs (paths, folders, patterns, webcams) as sources with unique names,
and `--annotations`' image ids, which the results of still images take."""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Collection, NamedTuple, Sequence

from tqdm import tqdm

from posepart.data.format import IMAGE_SUFFIXES, DatasetError, hidden, person_category
from posepart.data.validate import integer
from posepart.inference.outputs import (OUTPUT_FOLDERS, RESULTS_FILE, SUMMARY_FILE, earlier_names,
                                        without_earlier_outputs)
from posepart.inference.preprocess import VIDEO_SUFFIXES


@dataclass
class Source:
    """One thing to run on: an image file, a video file or a webcam (location = device index)."""

    kind: str  # "image" | "video" | "webcam"
    location: str | int
    name: str  # output file stem, unique within a run


def expand_inputs(inputs: list[str], recursive: bool = False, skip: Path | None = None
                  ) -> tuple[list[Source], list[dict[str, str]]]:
    """Paths, folders (their images and videos, sorted), glob patterns and webcam indices -> (sources, failures).

    A bare integer that is not an existing path is a webcam index. Every output name is unique (a clash gets _2, _3).
    A file that several inputs give (itself and its folder, a folder and a pattern) is one input, with a note: before,
    it was predicted once per input, and `--annotations` gave each copy the file's id (duplicates scored as false
    positives).
    Files in the image folders a run writes under `skip` (the run's --out) are left out, wherever --out lies: a
    second run into an --out inside (or equal to) an input folder would otherwise take the first one's overlays and
    label maps for photos; so are the files any earlier run wrote there (`without_earlier_outputs`).
    """
    written = [(skip / folder).resolve() for folder in OUTPUT_FOLDERS] if skip is not None else []

    def ours(p: Path) -> bool:
        return any(p.resolve().is_relative_to(folder) for folder in written)

    sources: list[Source] = []
    failures: list[dict[str, str]] = []
    taken: set[str] = set()
    given: set[str] = set()  # the files added, as absolute paths (not resolved: a link is an input of its own)
    repeated: list[Path] = []

    def add(kind: str, location: str | int, stem: str) -> None:
        name, n = stem, 1
        while name.lower() in taken:  # A.jpg's and a.jpg's outputs are one file where names ignore case (macOS,
            n += 1  # Windows)
            name = f"{stem}_{n}"
        taken.add(name.lower())
        sources.append(Source(kind, location, name))

    def add_file(path: Path) -> None:
        absolute = os.path.abspath(path)
        if absolute in given:
            repeated.append(path)
            return
        given.add(absolute)
        add("video" if path.suffix.lower() in VIDEO_SUFFIXES else "image", str(path), path.stem)

    def run_folders(runs: set[Path]) -> set[Path]:
        """The --out folders of the earlier runs `without_earlier_outputs` found, and this run's."""
        return runs | ({skip.resolve()} if skip is not None else set())

    def listing(p: Path, folders: set[Path]) -> bool:
        """Whether `p` is a run's own listing (keypoints.json, summary.json) in one of `folders`: never an input."""
        return p.name in (RESULTS_FILE, SUMMARY_FILE) and p.parent.resolve() in folders

    def unread_subfolders(path: Path, runs: set[Path]) -> list[Path]:
        """The sub-folders of `path` that a run without --recursive leaves out: not hidden, not a run's --out
        (this one's or an earlier one's) nor an earlier run's output folders when `path` is its --out."""
        outputs = OUTPUT_FOLDERS if earlier_names(path) is not None else ()
        return [p for p in sorted(path.iterdir()) if p.is_dir() and not hidden(p, path) and not ours(p)
                and p.name not in outputs and p.resolve() not in runs and earlier_names(p) is None]

    def add_folder(item: str, path: Path, taken_files: Collection[Path] = ()) -> list[Path]:
        """Add a folder's images and videos (those not in `taken_files`, resolved); -> the ones added."""
        # (before hidden files were left out, macOS's `._IMG.jpg` companions each failed as "not a decodable image")
        found = (p for p in (path.rglob("*") if recursive else path.iterdir())
                 if p.is_file() and not ours(p) and not hidden(p, path))
        files, runs = without_earlier_outputs(sorted(found))  # before, `--recursive` ran on a previous run's outputs
        if taken_files:  # a pattern's: files it matched itself are in already (`'photos/**'`)
            kept = [p for p in files if p.resolve() not in taken_files]
            if files and not kept:
                return []
            files = kept
        media = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        folders = run_folders(runs)
        left = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES and not listing(p, folders)]
        if left:  # before: left out without a word (a .gif, a phone's .heic)
            kinds = sorted({p.suffix.lower() or p.name for p in left})
            tqdm.write(f"note: {item}: left out {len(left)} file(s) that are not images or videos posepart "
                       f"reads ({', '.join(kinds[:5])}{', ...' if len(kinds) > 5 else ''})", file=sys.stderr)
        unread = [] if recursive else unread_subfolders(path, folders)
        if not media:
            failures.append({"input": item, "error": f"{item}: no images or videos in this folder"
                             + (f" (it has {len(unread)} sub-folder(s): --recursive reads them)" if unread else "")})
        elif unread:  # before: left out without a word
            tqdm.write(f"note: {item}: {len(unread)} sub-folder(s) not read (first: {unread[0].name}); --recursive "
                       f"reads them", file=sys.stderr)
        for p in media:
            add_file(p)
        return media

    for item in inputs:
        path = Path(item)
        if re.fullmatch(r"\d+", item) and not path.exists():
            add("webcam", int(item), f"webcam{item}")
        elif not path.exists() and glob.has_magic(item):  # a pattern the shell did not expand (quoted)
            found = [Path(p) for p in glob.glob(item, recursive=True)]
            matches, runs = without_earlier_outputs(sorted(p for p in found if p.is_file() and not ours(p)))
            outs = run_folders(runs)
            matches = [p for p in matches if not listing(p, outs)]  # `'photos/*' --out photos`
            # a matched folder is read as a folder (before, left out without a word), but not a run's --out
            folders = sorted(p for p in found if p.is_dir() and not ours(p) and p.resolve() not in outs
                             and earlier_names(p) is None)
            if not matches and not folders:
                failures.append({"input": item, "error": f"{item}: no file matches this pattern"})
            for p in matches:  # every match is an input, as the shell would pass them (unquoted): a notes.txt fails
                add_file(p)
            taken_files = {p.resolve() for p in matches}
            for p in folders:
                taken_files |= {added.resolve() for added in add_folder(str(p), p, taken_files)}
        elif not path.exists():
            failures.append({"input": item, "error": f"{item}: no such file or folder"})
        elif path.is_dir():
            add_folder(item, path)
        else:
            add_file(path)
    if repeated:
        tqdm.write(f"note: {len(repeated)} file(s) given by more than one input are predicted once (first: "
                   f"{repeated[0]})", file=sys.stderr)
    return sources, failures


class AnnotationIndex(NamedTuple):
    """What `predict --annotations FILE` needs of a COCO JSON: image ids by file name, and its joint names."""

    path: Path
    ids: dict[str, int]  # file_name (as the JSON writes it) -> image id
    keypoints: list[str] | None  # the person category's "keypoints" (`person_category`), when the file has them
    by_basename: dict[str, list[str]]  # base name -> the file_names that end in it
    category_id: int = 1  # the people's category id in the file: the results written for it carry it

    def check(self, keypoints: Sequence[str]) -> None:
        """Refuse a file whose joints are not the model's (names and order): its ground truth could not score the
        results."""
        if self.keypoints is not None and self.keypoints != list(keypoints):
            raise DatasetError(f"--annotations {self.path}: its keypoints {self.keypoints} are not the model's "
                               f"{list(keypoints)}: the results could not be scored against it")

    def image_id(self, path: str | Path) -> tuple[int | None, list[str]]:
        """The id of the image at `path`: the file_name that is the longest tail of the path (`data/images/a/x.jpg`
        is `a/x.jpg`), else the one file_name with the path's base name. (None, those file_names) when several share
        the base name and none is a longer tail: the image cannot be told apart; (None, []) when none matches."""
        parts = PurePosixPath(_posix(str(path))).parts
        for start in range(len(parts)):
            found = self.ids.get(PurePosixPath(*parts[start:]).as_posix())
            if found is not None:
                return found, []
        same = self.by_basename.get(parts[-1] if parts else "", [])
        return (self.ids[same[0]], []) if len(same) == 1 else (None, same)


def _posix(name: str) -> str:
    """A file name as a POSIX path without `./` (a JSON may write `./a/x.jpg` or `a\\x.jpg`)."""
    return PurePosixPath(name.replace("\\", "/")).as_posix()


def annotation_index(path: Path) -> AnnotationIndex:
    """Read `predict --annotations FILE` (so results can be scored against it). A file that is not a COCO JSON of
    images with file_name and id is a DatasetError naming it."""
    ids: dict[str, int] = {}
    by_basename: dict[str, list[str]] = {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for image in data.get("images", []):
            name = _posix(str(image["file_name"]))
            image_id = integer(image["id"], f"--annotations {path}: image {name!r} id")  # not 1.9 or true
            if name in ids:
                if ids[name] != image_id:  # which id its results should take would be a guess
                    raise DatasetError(f"--annotations {path}: image {name!r} is listed twice, with ids "
                                       f"{ids[name]} and {image_id}")
                continue
            ids[name] = image_id
            by_basename.setdefault(PurePosixPath(name).name, []).append(name)
        categories = data.get("categories") or [{}]
        person = categories[person_category(categories)]
        theirs = person.get("keypoints")
        category_id = integer(person.get("id", 1), f"--annotations {path}: the people's category id")
        keypoints = None if theirs is None else [str(name) for name in theirs]
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:  # ValueError: JSON
        raise DatasetError(f"--annotations {path}: not a COCO JSON of images with file_name and id "
                           f"({type(err).__name__}: {err})") from None
    return AnnotationIndex(Path(path), ids, keypoints, by_basename, category_id)
