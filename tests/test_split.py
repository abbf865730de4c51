"""`posepart split`: a seeded held-out share of one dataset's images, as two annotation files a run reads with the
dataset's own images and part maps."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from posepart.cli import main
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
from posepart.engine.config import load_config
from posepart.engine.data import PosePartDataModule


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synth(tmp_path_factory.mktemp("split") / "ds", n=10, seed=0, size=64)


def _ids(path: Path) -> set[int]:
    return {image["id"] for image in json.loads(path.read_text())["images"]}


def test_a_share_is_held_out_by_seed_and_read_with_the_datasets_files(synth, tmp_path, capsys):
    """A tool's export arrives as one file; before, nothing split it into training and validation images."""
    assert main(["split", str(synth), "--val", "0.2", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    train, val = tmp_path / "a" / "train.json", tmp_path / "a" / "val.json"
    everything = {r.image_id for r in PosePartDataset.open(synth).records}
    assert len(_ids(val)) == 2 and _ids(train) | _ids(val) == everything and not _ids(train) & _ids(val)
    assert f"wrote {train}: 8 images (8 pose-labelled, 8 with part maps)" in out
    original, held_out = (json.loads(path.read_text()) for path in (synth / "annotations.json", val))
    assert held_out["categories"] == original["categories"]
    assert {ann["image_id"] for ann in held_out["annotations"]} <= _ids(val)  # the people go with their image
    subset = PosePartDataset.open(synth, annotations=val)  # the dataset's images and part maps
    assert all(subset.load_parts(record) is not None for record in subset.records)

    assert main(["split", str(synth), "--val", "0.2", "--out", str(tmp_path / "b")]) == 0
    assert _ids(tmp_path / "b" / "val.json") == _ids(val)  # the same seed, the same split
    assert main(["split", str(synth), "--val", "3", "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    assert len(_ids(tmp_path / "c" / "val.json")) == 3  # a count
    assert main(["split", str(synth), "--val", "0.2", "--seed", "1", "--out", str(tmp_path / "d")]) == 0
    assert _ids(tmp_path / "d" / "val.json") != _ids(val)  # another seed, other images
    capsys.readouterr()

    # the command it prints trains on the two files
    line = next(line for line in err.splitlines() if line.strip().startswith("posepart train"))
    words = shlex.split(line)
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    data = PosePartDataModule(load_config("demo_cpu_joint.yaml", sets))
    assert len(data.sources[0].train) == 8 and len(data.sources[0].val) == 2


def test_a_coco_release_layout_splits_and_what_cannot_be_split_is_refused(synth, fixtures, tmp_path, capsys):
    coco = fixtures / "coco_mini"
    annotations, images = coco / "annotations" / "person_keypoints_train2017.json", coco / "train2017"
    assert main(["split", "--annotations", str(annotations), "--images", str(images), "--val", "0.25", "--out",
                 str(tmp_path / "coco")]) == 0
    err = capsys.readouterr().err
    assert f"--set data.train.images={images.resolve()}" in err and "data.train.root" not in err
    present = {r.image_id for r in PosePartDataset.open(annotations=annotations, images=images).records}
    assert _ids(tmp_path / "coco" / "train.json") | _ids(tmp_path / "coco" / "val.json") == present  # listed and
    # present: the images the release's file lists but the folder lacks are left out, as a run leaves them out

    for args, words in ((["--val", "0.2"], "train.json exists (--overwrite replaces it)"),
                        (["--val", "2.5", "--overwrite"], "--val 2.5: a share below 1 (0.1: a tenth) or a whole count"),
                        (["--val", "1.0", "--overwrite"], "--val 1.0: a share below 1 (0.1: a tenth) or a whole count"),
                        (["--val", "-1", "--overwrite"], "--val: must be a positive number, got -1"),
                        (["--val", "10", "--overwrite"], "--val 10 of 10 image(s) leaves nothing to train on")):
        assert main(["split", str(synth), "--out", str(tmp_path / "coco"), *args]) == 2
        assert words in capsys.readouterr().err
    assert main(["split", str(synth), "--val", "0.2", "--out", str(tmp_path / "coco"), "--overwrite"]) == 0
    (tmp_path / "a_file").write_text("")  # before: a FileExistsError traceback
    assert main(["split", str(synth), "--val", "0.2", "--out", str(tmp_path / "a_file")]) == 2
    assert "split --out " + str(tmp_path / "a_file") + ": a file, not a folder" in capsys.readouterr().err


def test_the_annotation_file_is_read_once(synth, tmp_path, monkeypatch):
    """A review counted five reads of the file (one per subset written, and both opened again for the counts): on
    COCO's train set, a minute of work; then two (the dataset opened, the subsets written from a second read)."""
    import posepart.data.format as dataset_format
    import posepart.data.split as split

    reads = []
    real = dataset_format.read_json
    monkeypatch.setattr(split, "read_json", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    monkeypatch.setattr(dataset_format, "read_json", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    assert main(["split", str(synth), "--val", "0.2", "--out", str(tmp_path / "once")]) == 0
    assert len(reads) == 1  # the dataset opened; the subsets are written from what that read parsed
    assert PosePartDataset.open(synth).annotations_json is None  # kept only when asked: training never holds it


def test_part_classes_without_part_maps_are_noted(synth, tmp_path, capsys):
    """A COCO file with its images (--annotations, --images) reads no part maps unless --parts names them: before,
    its parts were neither counted nor scored, and nothing said so (a new-user walkthrough of `evaluate`)."""
    given = ["--annotations", str(synth / "annotations.json"), "--images", str(synth / "images"), "--val", "0.2"]
    assert main(["split", *given, "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "0 with part maps" in out
    assert (f"note: {synth / 'annotations.json'} lists part classes, but no part maps are read without --parts DIR "
            f"({synth / 'parts'}?)") in err
    assert main(["split", *given, "--parts", str(synth / "parts"), "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "8 with part maps" in out and "no part maps are read" not in err
