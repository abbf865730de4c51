"""`posepart predict`: folders, a video in -> video out, bad inputs, the files written and the exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from inference_helpers import write_checkpoint
from PIL import Image

from posepart.cli import main
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
from posepart.data.validate import DatasetError
from posepart.decode import DecodeConfig
from posepart.inference.predictor import Predictor
from posepart.schema import Schema, voc_palette

SIZE = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    data = write_synth(root / "data", n=3, seed=4, size=SIZE)
    ckpt = write_checkpoint(root / "tiny.ckpt", Schema.pascal_person_part(), input_size=SIZE, gain=40.0)
    clip = root / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (80, 48))
    assert writer.isOpened()
    frames = [cv2.imread(str(p)) for p in sorted((data / "images").iterdir())]
    for i in range(5):
        writer.write(cv2.resize(frames[i % len(frames)], (80, 48)))
    writer.release()
    (root / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    return {"root": root, "data": data, "ckpt": ckpt, "clip": clip, "broken": root / "broken.jpg"}


def test_predict_images_video_and_bad_inputs(setup, tmp_path, capsys):
    out = tmp_path / "out"
    # files on both sides of an option (before: argparse took the first run of inputs and refused the rest)
    rc = main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images"),
               str(tmp_path / "missing.png"), "--maps", str(setup["clip"]), "--out", str(out), str(setup["broken"]),
               "--quiet", "--annotations", str(setup["data"] / "annotations.json"), "--min-joints", "1"])
    assert rc == 0  # some inputs failed, the others were processed
    err = capsys.readouterr().err
    assert "broken.jpg: truncated JPEG" in err and "missing.png: no such file" in err
    assert "--maps draws the maps of still images only" in err  # the clip gets none (before: without a word)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["succeeded"] == 4 and summary["failed"] == 2
    # what made the results, as evaluate's metrics.json records it (before: nothing of the model or its settings)
    assert summary["model"] == str(setup["ckpt"]) and summary["settings"]["decode"]["min_joints"] == 1
    assert summary["settings"]["test_time"] == {"scales": [1.0], "flip": False}
    schema = PosePartDataset.open(setup["data"]).schema  # what parts/*.png's values name (before: unsaid)
    assert Schema.from_category(summary["schema"]) == schema and summary["schema"]["part_classes"] == list(
        schema.part_classes)
    assert {f["input"] for f in summary["failures"]} == {str(setup["broken"]), str(tmp_path / "missing.png")}

    dataset = PosePartDataset.open(setup["data"])
    ids = {r.file_name: r.image_id for r in dataset.records}
    assert {(i["name"] + ".jpg", i["id"]) for i in summary["images"]} == set(ids.items())
    results = json.loads((out / "keypoints.json").read_text())
    assert results and {r["image_id"] for r in results} <= set(ids.values())
    assert all(len(r["keypoints"]) == 3 * dataset.schema.num_joints for r in results)
    from pycocotools.coco import COCO

    gt = COCO(str(setup["data"] / "annotations.json"))
    assert len(gt.loadRes(results).getAnnIds()) == len(results)  # loadable as COCO results against the dataset

    predictor = Predictor.from_checkpoint(setup["ckpt"], decode_config=DecodeConfig(min_joints=1))
    for record in dataset.records:
        stem = Path(record.file_name).stem
        expected = predictor(record.image_path)
        parts = Image.open(out / "parts" / f"{stem}.png")
        assert parts.mode == "P" and np.array_equal(np.asarray(parts), expected.parts)
        assert np.array_equal(np.asarray(parts.getpalette()[:21], np.uint8).reshape(7, 3), voc_palette(7))
        instances = np.asarray(Image.open(out / "instances" / f"{stem}.png"))
        assert np.array_equal(instances, expected.instances)
        overlay = cv2.imread(str(out / "overlays" / f"{stem}.jpg"))
        assert overlay.shape == (record.height, record.width, 3)
        for kind in ("heatmaps", "pafs"):
            assert cv2.imread(str(out / "maps" / f"{stem}_{kind}.jpg")).shape == overlay.shape
    assert any(np.asarray(Image.open(p)).max() > 0 for p in (out / "instances").iterdir())

    video = cv2.VideoCapture(str(out / "videos" / "clip.mp4"))
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (80, 48)
    video.release()
    frames = json.loads((out / "videos" / "clip.json").read_text())
    assert frames and {r["image_id"] for r in frames} <= set(range(5))  # people found, numbered by frame
    (video_summary,) = summary["videos"]
    assert video_summary["frames"] == 5 and video_summary["fps"] == pytest.approx(12.0)


def test_video_frames_whose_maps_overflow_are_counted_and_said(setup, tmp_path, capsys):
    """A review: a frame whose maps held NaN or inf was written with nobody on it, without a word."""
    overflowing = write_checkpoint(tmp_path / "overflow.ckpt", Schema.pascal_person_part(), input_size=SIZE)
    checkpoint = torch.load(overflowing, weights_only=True)
    for name, tensor in checkpoint["state_dict"].items():  # finite weights whose maps pass float32's range
        if name.startswith("model.pose_head.") and name.endswith(".weight"):
            tensor.mul_(1e15)
    torch.save(checkpoint, overflowing)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(overflowing), str(setup["clip"]), "--out", str(out), "--quiet"]) == 0
    assert "note: " in (err := capsys.readouterr().err) and "5 of 5 frames not decoded: the model's" in err
    (video,) = json.loads((out / "summary.json").read_text())["videos"]
    assert video["frames"] == 5 and video["frames_not_decoded"] == 5


def test_exit_status_and_strict(setup, tmp_path, capsys):
    ckpt = str(setup["ckpt"])
    assert main(["predict", "--checkpoint", ckpt, str(setup["broken"]), "99", "--out", str(tmp_path / "a"),
                 "--quiet"]) == 1  # nothing succeeded (99 is a webcam index no machine here has)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["succeeded"] == 0 and any("webcam 99" in f["error"] for f in summary["failures"])
    image = str(setup["data"] / "images" / "000000.jpg")
    args = ["predict", "--checkpoint", ckpt, image, str(setup["broken"]), "--quiet", "--no-overlays"]
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert main(args + ["--out", str(tmp_path / "c"), "--strict"]) == 1
    assert not (tmp_path / "c" / "overlays").exists()
    assert main(["predict", "--checkpoint", str(tmp_path / "nope.ckpt"), image, "--out", str(tmp_path / "d")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["predict", image, "--out", str(tmp_path / "e")]) == 2  # no model given
    with pytest.raises(SystemExit):  # a word after an option that takes none is no input: `--quiet 0` is no webcam
        main(["predict", "--checkpoint", ckpt, image, "--quiet", "0", "--out", str(tmp_path / "e")])
    capsys.readouterr()
    # before: set after DecodeConfig was made, so a NaN score threshold was taken (and dropped every person)
    assert main(["predict", "--checkpoint", ckpt, image, "--min-person-score", "nan", "--out",
                 str(tmp_path / "f")]) == 2
    assert "min_person_score must be a finite number, got nan" in capsys.readouterr().err


def test_duplicate_names_and_flip_scales_options(setup, tmp_path):
    """Two inputs with the same file name get distinct outputs; TTA options reach the predictor."""
    other = tmp_path / "other"
    other.mkdir()
    source = setup["data"] / "images" / "000001.jpg"
    (other / "000001.jpg").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(source), str(other / "000001.jpg"),
                 "--out", str(out), "--quiet", "--flip", "--scales", "1,1.25"]) == 0
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["000001.png", "000001_2.png"]
    a, b = (np.asarray(Image.open(out / "parts" / n)) for n in ("000001.png", "000001_2.png"))
    assert np.array_equal(a, b)
    # the part map is the flip + two-scale Predictor's, which differs from the plain one's on this image
    image = np.asarray(Image.open(source).convert("RGB"))
    tta = Predictor.from_checkpoint(setup["ckpt"], flip=True, scales=(1.0, 1.25))(image).parts
    plain = Predictor.from_checkpoint(setup["ckpt"])(image).parts
    np.testing.assert_array_equal(a, tta)
    assert not np.array_equal(tta, plain)


def test_annotations_of_another_schema_are_refused(setup, tmp_path, capsys):
    """Before: `--annotations` of a COCO (17-joint) file with a PASCAL (14-joint) model wrote results that no
    scorer could read against it, and exited 0."""
    from cli_helpers import refused, run_cli

    coco = json.loads((setup["data"] / "annotations.json").read_text())
    coco["categories"][0]["keypoints"] = list(Schema.coco().keypoints)
    other = tmp_path / "coco.json"
    other.write_text(json.dumps(coco))
    image = str(setup["data"] / "images" / "000000.jpg")
    argv = ["predict", "--checkpoint", str(setup["ckpt"]), image, "--quiet", "--annotations"]
    code, _, err = run_cli(argv + [str(other), "--out", str(tmp_path / "a")], capsys)
    assert refused(code, err) and str(other) in err and "nose" in err
    assert not (tmp_path / "a").exists()  # refused before anything was written
    code, _, err = run_cli(argv + [str(setup["data"] / "annotations.json"), "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err  # the model's own joints


@pytest.mark.parametrize("image_id, words", [(1.9, "expected an integer, got 1.9"), (True, "expected an integer"),
                                             ("[" * 100000, "not a COCO JSON")])
def test_annotation_ids_that_are_not_integers_are_refused(setup, tmp_path, capsys, image_id, words):
    """Before: an id of 1.9 or true was taken as 1, and a deeply nested file was a RecursionError traceback."""
    bad = tmp_path / "bad.json"
    text = json.dumps({"images": [{"file_name": "000000.jpg", "id": image_id}]})
    bad.write_text(image_id if isinstance(image_id, str) else text)
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images"), "--annotations",
                 str(bad), "--out", str(tmp_path / "out")]) == 2
    assert words in capsys.readouterr().err


def test_annotation_ids_follow_the_path_not_just_the_file_name(setup, tmp_path, capsys):
    """Before: images matched --annotations by base name, first listed wins, so a/x.jpg and b/x.jpg both took a/x's
    id, and an image of id 0 took another's (`get(path) or get(name)`)."""
    from posepart.inference.inputs import annotation_index

    images = [{"file_name": "b/x.jpg", "id": 5}, {"file_name": "a/x.jpg", "id": 0}, {"file_name": "c/y.jpg", "id": 7}]
    listing = tmp_path / "ann.json"
    listing.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    index = annotation_index(listing)
    assert index.image_id("data/a/x.jpg") == (0, []) and index.image_id("b/x.jpg") == (5, [])
    assert index.image_id("elsewhere/y.jpg") == (7, [])  # a unique base name still matches
    assert index.image_id("elsewhere/x.jpg") == (None, ["b/x.jpg", "a/x.jpg"])  # which x.jpg? neither
    assert index.image_id("z.jpg") == (None, [])
    odd = [{"file_name": "/data/coco/x.jpg", "id": 1}, {"file_name": "./d/x.jpg", "id": 2},
           {"file_name": "e\\x.jpg", "id": 3}, {"file_name": "./d/x.jpg", "id": 2}]  # listed twice: one image
    (tmp_path / "odd.json").write_text(json.dumps({"images": odd, "annotations": [], "categories": []}))
    index = annotation_index(tmp_path / "odd.json")
    assert [index.image_id(p)[0] for p in ("/data/coco/x.jpg", "data/d/x.jpg", "./e/x.jpg")] == [1, 2, 3]
    assert index.image_id("x.jpg") == (None, ["/data/coco/x.jpg", "d/x.jpg", "e/x.jpg"])
    # before: one file_name listed with two ids took the last one without a word
    clash = [{"file_name": "d/x.jpg", "id": 2}, {"file_name": "./d/x.jpg", "id": 9}]
    (tmp_path / "clash.json").write_text(json.dumps({"images": clash, "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match="'d/x.jpg' is listed twice, with ids 2 and 9"):
        annotation_index(tmp_path / "clash.json")

    image = (setup["data"] / "images" / "000000.jpg").read_bytes()
    for folder, name in (("a", "x.jpg"), ("b", "x.jpg"), ("other", "x.jpg")):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / name).write_bytes(image)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(tmp_path / "in"), "--recursive", "--quiet",
                 "--annotations", str(listing), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {Path(i["file"]).parent.name: i["id"] for i in summary["images"]} == {"a": 0, "b": 5, "other": 8}
    assert "other/x.jpg: 2 images of --annotations are named x.jpg" in capsys.readouterr().err


def test_an_image_the_annotations_do_not_list_is_warned_about(setup, tmp_path, capsys):
    """Before (a walkthrough): an input that --annotations does not list got a new id without a word, so
    pycocotools refused keypoints.json ("Results do not correspond to current coco set")."""
    stranger = tmp_path / "stranger.jpg"
    shutil.copy(setup["data"] / "images" / "000000.jpg", stranger)
    annotations = setup["data"] / "annotations.json"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images" / "000001.jpg"),
                 str(stranger), "--quiet", "--annotations", str(annotations), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"{stranger} is not listed in --annotations {annotations}" in err and "000001.jpg" not in err
    assert "more images are not listed" not in err
    strangers = [tmp_path / f"stranger{i}.jpg" for i in range(3)]  # before: one warning each (29 in a walkthrough)
    for path in strangers:
        shutil.copy(stranger, path)
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), *map(str, strangers), "--quiet", "--annotations",
                 str(annotations), "--out", str(tmp_path / "out3")]) == 0
    err = capsys.readouterr().err
    assert err.count("is not listed in --annotations") == 1
    assert f"warning: 2 more images are not listed in --annotations {annotations}: their results get new ids" in err


def test_an_output_another_run_writes_is_refused_before_the_model_loads(setup, tmp_path, monkeypatch, capsys):
    """Before (a walkthrough): the second run loaded its model (19 s) before it found --out locked."""
    from posepart import predict_cli
    from posepart.files import lock_output

    monkeypatch.setattr(predict_cli, "_predictor", lambda args: pytest.fail("the model loaded before the lock"))
    out = tmp_path / "out"
    with lock_output(out):
        assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images" / "000000.jpg"),
                     "--quiet", "--out", str(out)]) == 2
    assert "is being written by another posepart process" in capsys.readouterr().err


def test_the_early_lock_check_never_fails_a_run_the_lock_itself_allows(setup, tmp_path, monkeypatch):
    """A review: the first version of the check took an exclusive flock on the lock file opened read-only, which
    NFS refuses (EBADF: a traceback on every run into an --out used before); the check is a shared lock now, and
    an error of its own leaves the verdict to `lock_output`."""
    import fcntl

    image = str(setup["data"] / "images" / "000000.jpg")
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(setup["ckpt"]), image, "--quiet", "--out", str(out)]
    assert main(argv) == 0  # the lock file stays, as it does after every run
    real = fcntl.flock

    def nfs(handle, operation):  # flock emulated as byte-range locks: a read-only file cannot be locked exclusively
        if operation & fcntl.LOCK_EX and "r" == getattr(handle, "mode", ""):
            raise OSError(9, "Bad file descriptor")
        return real(handle, operation)

    monkeypatch.setattr(fcntl, "flock", nfs)
    assert main(argv) == 0


def test_a_checkpoint_given_as_onnx_is_named_as_such(setup, tmp_path, capsys):
    """Before (a walkthrough): `--onnx best.ckpt` said only "[ONNXRuntimeError] ... Protobuf parsing failed"."""
    assert main(["predict", "--onnx", str(setup["ckpt"]), str(setup["data"] / "images" / "000000.jpg"), "--quiet",
                 "--out", str(tmp_path / "out")]) == 2
    assert ".ckpt is a PyTorch model file: pass it as --checkpoint" in capsys.readouterr().err


def test_a_quoted_pattern_takes_what_the_shell_would(setup, tmp_path, capsys):
    """A quoted pattern is the list of files the shell would expand it to: a JPEG named .jfif (read by content) is
    an input, and so is a notes.txt, which fails as it would given by name. (A first fix filtered a pattern's
    matches by suffix, as a folder's are read; a review found it dropping images posepart reads.)"""
    folder = tmp_path / "inp"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(setup["data"] / "images" / "000000.jpg", folder / "a.jfif")
    shutil.copy(setup["data"] / "images" / "000001.jpg", folder / "sub" / "b.jpg")  # a matched folder is an input
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.jpg").write_text("not matched by *, as the shell leaves it")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(folder / "*"), "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(i["file"]).name for i in summary["images"]] == ["a.jfif", "b.jpg"] and summary["failed"] == 1
    assert "notes.txt" in summary["failures"][0]["input"]
    for pattern in ("**", "**/*"):  # a file matched and inside a matched folder is one input (a review: b, b_2)
        assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(folder / pattern), "--quiet", "--out",
                     str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert sorted(Path(i["file"]).name for i in summary["images"]) == ["a.jfif", "b.jpg"], pattern
    inside = folder / "results"  # twice into an --out the pattern matches: it is no input, nor are its listings
    for _ in range(2):
        assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(folder / "*"), "--quiet", "--out",
                     str(inside)]) == 0
        summary = json.loads((inside / "summary.json").read_text())
        assert summary["failed"] == 1 and "notes.txt" in summary["failures"][0]["input"]  # only the notes


@pytest.mark.parametrize("where", ["inside", "same", "above", "glob"])
def test_a_rerun_into_an_output_near_the_input_folder_reads_the_photos_only(setup, tmp_path, where):
    """Before: a second run into an --out inside the input folder took the first one's overlays, part maps and
    instance maps for photos (15 inputs for 3), and its results for a label PNG replaced a photo's. --out equal to
    the input folder or above it must still read the photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((setup["data"] / "images").iterdir()):
        (photos / image.name).write_bytes(image.read_bytes())
    out = {"inside": photos / "results", "same": photos, "above": tmp_path, "glob": photos}[where]
    inputs = [str(photos / "**" / "*.jpg")] if where == "glob" else [str(photos), "--recursive"]
    argv = ["predict", "--checkpoint", str(setup["ckpt"]), *inputs, "--quiet", "--out", str(out)]
    assert main(argv) == 0 and main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(i["name"] for i in summary["images"]) == ["000000", "000001", "000002"]
    if where == "inside":  # an earlier run's --out in the tree, this run's elsewhere: its outputs are not photos
        for again, inputs in ((tmp_path / "folder", [str(photos), "--recursive"]),
                              (tmp_path / "glob", [str(photos / "**" / "*.jpg")])):  # before: 12 inputs for 3
            assert main(["predict", "--checkpoint", str(setup["ckpt"]), *inputs, "--quiet", "--out", str(again)]) == 0
            summary = json.loads((again / "summary.json").read_text())
            assert sorted(i["name"] for i in summary["images"]) == ["000000", "000001", "000002"]


def test_only_the_files_an_earlier_run_wrote_are_left_out(tmp_path):
    """An earlier run's outputs are left out by name, as listed in its summary.json: a user's own photo in a folder
    called videos/ beside it stays an input (a review caught a version that dropped it, and that read the summary
    once per file)."""
    from posepart.inference.inputs import expand_inputs

    shoot = tmp_path / "shoot"
    for path in ("a.jpg", "overlays/a.jpg", "parts/a.png", "videos/clip_frame.jpg"):
        (shoot / path).parent.mkdir(parents=True, exist_ok=True)
        (shoot / path).write_bytes(b"jpeg")
    (shoot / "summary.json").write_text(json.dumps({"succeeded": 1, "failed": 0, "images": [{"name": "a"}],
                                                    "videos": [], "failures": []}))
    for inputs, recursive in (([str(shoot)], True), ([str(shoot / "**" / "*.jpg")], False)):
        sources, failures = expand_inputs(inputs, recursive=recursive)
        assert sorted(Path(s.location).relative_to(shoot).as_posix() for s in sources) == [
            "a.jpg", "videos/clip_frame.jpg"] and not failures
    sources, _ = expand_inputs([str(shoot / "videos")])
    assert [Path(s.location).name for s in sources] == ["clip_frame.jpg"]


def test_a_folders_sub_folders_left_out_are_named(tmp_path, capsys):
    """Without --recursive a folder's sub-folders are not read: before, without a word, and a folder of dated
    sub-folders failed as "no images or videos in this folder". Hidden folders and a run's --out are not named."""
    from posepart.inference.inputs import expand_inputs

    photos = tmp_path / "photos"
    for path in ("a.jpg", "2024/b.jpg", "2025/c.jpg", ".thumbnails/a.jpg"):
        (photos / path).parent.mkdir(parents=True, exist_ok=True)
        (photos / path).write_bytes(b"jpeg")
    (photos / "out").mkdir()  # this run's --out
    sources, failures = expand_inputs([str(photos)], skip=photos / "out")
    assert [s.name for s in sources] == ["a"] and not failures
    assert f"note: {photos}: 2 sub-folder(s) not read (first: 2024); --recursive reads them" in capsys.readouterr().err
    sources, failures = expand_inputs([str(photos)], recursive=True, skip=photos / "out")
    assert sorted(s.name for s in sources) == ["a", "b", "c"] and "sub-folder" not in capsys.readouterr().err
    (photos / "a.jpg").unlink()
    sources, failures = expand_inputs([str(photos)])
    assert not sources and failures == [{"input": str(photos), "error": f"{photos}: no images or videos in this "
                                         f"folder (it has 3 sub-folder(s): --recursive reads them)"}]


def test_a_file_given_by_several_inputs_is_one_input(tmp_path, capsys):
    """A file and its folder, or a folder and a quoted pattern over it: before, each gave the file once more (outputs
    a_2, a_3), and with `--annotations` every copy carried the file's image id, so its people were scored twice, the
    copies as false positives. A review of file names users have found it."""
    from posepart.inference.inputs import expand_inputs

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"jpeg")
    sources, failures = expand_inputs([str(photos / "a.jpg"), str(photos), str(photos / "*.jpg"),
                                       str(tmp_path / "." / "photos" / "b.jpg")])
    assert sorted(s.name for s in sources) == ["a", "b"] and not failures
    assert "note: 4 file(s) given by more than one input are predicted once" in capsys.readouterr().err
    (photos / "latest.jpg").symlink_to(photos / "b.jpg")  # a link is an input of its own (a review: the first
    sources, _ = expand_inputs([str(photos)])  # version took it for b.jpg given twice, and left b.jpg out)
    assert sorted(s.name for s in sources) == ["a", "b", "latest"]
    (photos / "latest.jpg").unlink()
    (photos / "A.jpg").write_bytes(b"jpeg")  # where names ignore case (macOS, Windows), A's outputs would be a's
    sources, _ = expand_inputs([str(photos)])
    assert sorted(s.name for s in sources) == ["A", "a_2", "b"]


def test_an_input_whose_outputs_names_are_too_long_fails_alone(setup, tmp_path):
    """A legal 245-character name gets `_heatmaps.jpg` under --maps: past the file system's 255 bytes. Before, the
    whole run stopped there (exit 2) with no keypoints.json or summary.json for the images done; now that input is
    listed as failed, saying why, and the others are predicted."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = sorted((setup["data"] / "images").iterdir())[0]
    shutil.copy(image, inputs / f"0ok{image.suffix}")  # first: its outputs' folders are there when the next comes
    shutil.copy(image, inputs / ("L" * 245 + image.suffix))
    shutil.copy(setup["clip"], inputs / ("V" * 251 + ".mp4"))  # its results file, `.json`: 256 bytes
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(inputs), "--maps", "--quiet", "--out",
                 str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [i["name"] for i in summary["images"]] == ["0ok"] and summary["failed"] == 2 and not summary["videos"]
    assert all("longer than the file system takes" in f["error"] for f in summary["failures"])
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and "L" * 20 in p.name) == []  # it left no files


def test_video_containers_given_by_name_are_read_as_videos(setup, tmp_path):
    """Before: a phone's .3gp or a broadcast .ts (the same mp4 stream here; FFmpeg reads the container, not the
    name) given by name was skipped as "not a decodable image"."""
    clips = []
    for suffix in (".3gp", ".ts"):
        clips.append(tmp_path / f"clip{suffix}")
        clips[-1].write_bytes(setup["clip"].read_bytes())
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), *map(str, clips), "--no-overlays", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["failures"] and sorted(v["name"] for v in summary["videos"]) == ["clip", "clip_2"]


def test_videos_count_in_the_summary_and_no_overlays_writes_no_video(setup, tmp_path, capsys):
    """Before: summary.json's "people" and the last line counted still images only, and --no-overlays still drew and
    encoded every frame into OUT/videos/<name>.mp4."""
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["clip"]), "--no-overlays", "--quiet",
                 "--min-joints", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (video,) = summary["videos"]
    assert video["people"] > 0 and summary["people"] == video["people"] and video["video"] is None
    assert f"{video['people']} people found" in capsys.readouterr().err
    assert (out / "videos" / "clip.json").is_file() and not (out / "videos" / "clip.mp4").exists()


def test_a_rerun_replaces_the_earlier_runs_files_and_a_dataset_folder_is_refused(setup, tmp_path, capsys):
    """Before: a second run into an --out kept the first run's overlays, part maps and videos beside the new
    keypoints.json and summary.json, which no longer listed them; and predict into a dataset folder replaced its
    ground-truth part labels (parts/NAME.png) with predictions."""
    out = tmp_path / "out"
    images = sorted((setup["data"] / "images").iterdir())
    predict = ["predict", "--checkpoint", str(setup["ckpt"]), "--quiet", "--out", str(out)]
    assert main([*predict, *map(str, images), str(setup["clip"])]) == 0
    assert len(list((out / "overlays").iterdir())) == 3 and (out / "videos" / "clip.mp4").is_file()
    (out / "overlays" / "mine.txt").write_text("not a posepart file")
    assert main([*predict, str(images[0])]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{images[0].stem}.jpg", "mine.txt"]
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"{images[0].stem}.png"]
    assert not list((out / "videos").iterdir())
    assert main([*predict, str(setup["clip"])]) == 0  # videos alone: before, the last run's keypoints.json stayed
    assert not (out / "keypoints.json").exists() and not (out / "overlays" / f"{images[0].stem}.jpg").exists()
    kept = out / "overlays" / "clip.jpg"  # an input named explicitly is kept, even where an earlier run wrote
    shutil.copy(images[1], kept)
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "images": [{"name": "clip"}]}))
    assert main([*predict, str(kept)]) == 0 and kept.is_file()
    (out / "summary.json").unlink()  # a run that died before writing it: its part maps stay, and are replaced
    assert main([*predict, str(images[0])]) == 0
    assert main([*predict, "--no-parts", str(images[0])]) == 0
    (out / "summary.json").write_text("{}")  # not one of ours: refused (before: replaced without a word)
    assert main([*predict, str(images[1])]) == 2 and not (out / "parts" / f"{images[1].stem}.png").is_file()
    assert "holds summary.json, which no posepart predict run wrote" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"
    evaluation = tmp_path / "evaluation"  # an evaluate --out: its keypoints.json and overlays would be replaced
    assert main(["evaluate", "--checkpoint", str(setup["ckpt"]), "--data", str(setup["data"]), "--out",
                 str(evaluation)]) == 0
    results = (evaluation / "keypoints.json").read_bytes()
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(images[0]), "--out", str(evaluation)]) == 2
    assert "holds metrics.json, which no posepart predict run wrote" in capsys.readouterr().err
    assert (evaluation / "keypoints.json").read_bytes() == results
    (out / "summary.json").unlink()
    assert main([*predict, str(images[0])]) == 0  # a predict folder an evaluation was then written into: refused
    assert main(["evaluate", "--checkpoint", str(setup["ckpt"]), "--data", str(setup["data"]), "--out", str(out)]) == 0
    assert main([*predict, str(images[0])]) == 2 and "holds metrics.json" in capsys.readouterr().err
    layout = tmp_path / "layout"  # a dataset whose annotations live elsewhere: images/ and parts/
    shutil.copytree(setup["data"], layout, ignore=shutil.ignore_patterns("annotations.json"))
    label = (layout / "parts" / f"{images[0].stem}.png").read_bytes()
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(layout / "images"), "--out", str(layout)]) == 2
    assert f"predictions would replace parts/{images[0].stem}.png" in capsys.readouterr().err
    assert (layout / "parts" / f"{images[0].stem}.png").read_bytes() == label
    dataset = tmp_path / "dataset"
    shutil.copytree(setup["data"], dataset)
    labels = {p.name: p.read_bytes() for p in (dataset / "parts").iterdir()}
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(dataset / "images"), "--out", str(dataset)]) == 2
    assert "holds a dataset (annotations.json)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (dataset / "parts").iterdir()} == labels


def test_links_planted_in_the_output_folder_are_not_followed(setup, tmp_path, capsys):
    """Before: a `.posepart.lock` link had its target truncated, `overlays/` or `parts/` links had the run write, and
    an earlier summary's names remove, files wherever they led, and a link at an output's name was written through."""
    victim = tmp_path / "thesis.txt"
    victim.write_text("my thesis")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "IMG_1.jpg").write_bytes(b"mine")
    image = str(setup["data"] / "images" / "000000.jpg")
    predict = ["predict", "--checkpoint", str(setup["ckpt"]), image, "--quiet", "--out"]
    for out, plant in ((tmp_path / "a", ".posepart.lock"), (tmp_path / "b", "overlays")):
        out.mkdir()
        (out / plant).symlink_to(victim if plant.startswith(".") else photos)
        (out / "summary.json").write_text(json.dumps({"succeeded": 1, "failed": 0, "images": [{"name": "IMG_1"}],
                                                      "videos": [], "failures": []}))
        assert main([*predict, str(out)]) == 2
        assert "a link" in capsys.readouterr().err
    assert victim.read_text() == "my thesis" and (photos / "IMG_1.jpg").read_bytes() == b"mine"
    out = tmp_path / "c"
    (out / "overlays").mkdir(parents=True)
    (out / "overlays" / "000000.jpg").symlink_to(victim)
    assert main([*predict, str(out)]) == 0
    assert victim.read_text() == "my thesis" and not (out / "overlays" / "000000.jpg").is_symlink()
    (out / "videos").symlink_to(photos)  # a link to a folder this run does not write (no video): fine
    (photos / "000000.mp4").write_bytes(b"mine")  # named as the earlier run's video of this input would be
    assert main([*predict, str(out)]) == 0 and (photos / "000000.mp4").read_bytes() == b"mine"  # not removed
    assert main([*predict, str(out), "--no-overlays"]) == 0 and (tmp_path / "photos" / "IMG_1.jpg").is_file()


def test_files_a_folder_holds_that_are_not_images_are_named(setup, tmp_path, capsys):
    """Before: a folder's .gif or .heic files were left out without a word; its hidden files are left out as the
    shell's `*` leaves them (before, `._a.jpg` and `.thumbnails/a.jpg` each failed as not decodable)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(setup["data"] / "images" / "000000.jpg", photos / "a.jpg")
    for name in ("b.gif", "c.heic", "d.HEIC", ".DS_Store", "._a.jpg"):  # hidden: macOS's, on a FAT or exFAT drive
        (photos / name).write_bytes(b"x")
    (photos / ".thumbnails").mkdir()
    (photos / ".thumbnails" / "a.jpg").write_bytes(b"x")
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(photos), "--out", str(tmp_path / "out"),
                 "--quiet", "--recursive"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed"] == 0 and [i["name"] for i in summary["images"]] == ["a"]  # before: 2 failed, ._a.jpg too
    assert f"note: {photos}: left out 3 file(s) that are not images or videos posepart reads (.gif, .heic)" in \
        capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(photos), "--out", str(photos), "--quiet"]) == 0
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(photos), "--out", str(photos), "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "left out" in line]
    assert len(notes) == 2 and all("left out 3 file(s)" in line for line in notes)  # not the run's own listings


def test_a_tagged_photo_scored_against_annotations_is_warned_about(setup, tmp_path, capsys):
    """predict turns an EXIF-tagged photo upright; a dataset's annotations refer to its stored pixels, so results
    written with its ids would be scored in another frame: said, where before nothing was turned."""
    photos = tmp_path / "images"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(setup["data"] / "images" / "000001.jpg").save(photos / "000001.jpg", exif=exif, quality=95)
    shutil.copy(setup["data"] / "images" / "000000.jpg", photos / "000000.jpg")
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(photos), "--annotations",
                 str(setup["data"] / "annotations.json"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "000001.jpg is tagged with EXIF orientation 6" in warned[0]


@pytest.mark.parametrize("option", ["--max-frames", "--batch-size", "--input-size", "--threads"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_counts_below_one_are_refused(setup, tmp_path, option, value, capsys):
    """Before: --max-frames 0 reported a good video as "no readable frames", --input-size 0 used the default."""
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["clip"]), option, value, "--out",
              str(tmp_path / "o")])
    least = 8 if option == "--input-size" else 1  # a size: a multiple of the network's input multiple
    assert exit_.value.code == 2 and f"must be at least {least}, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("trained", ["pose", "parts"])
def test_a_head_its_training_never_taught_is_not_used(setup, tmp_path, trained, capsys):
    """The joint network trained on one task has the other head at its random initial weights. Before: predict
    wrote its part maps, instances and overlays (no pixel background) or its people, and evaluate scored it; now the
    checkpoint's training sources say which tasks it learnt, and the other head is not used. Its export leaves that
    head out: its outputs, its computation and its weights (before: computed in every call and output as maps)."""
    import onnx as onnx_lib

    ckpt = write_checkpoint(tmp_path / "one_task.ckpt", Schema.pascal_person_part(), input_size=SIZE, gain=40.0,
                            tasks=(trained,))
    onnx, both = tmp_path / "one_task.onnx", tmp_path / "both.onnx"
    other = "parts" if trained == "pose" else "pose"
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(onnx)]) == 0
    assert f"the model's {other} head was never trained (no training source fed it {other} labels): the export " \
           f"leaves it out" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(setup["ckpt"]), "--out", str(both)]) == 0  # the same network, both
    image = str(setup["data"] / "images" / "000000.jpg")
    for model in (["--checkpoint", str(ckpt)], ["--onnx", str(onnx)]):
        out = tmp_path / model[0].strip("-")
        capsys.readouterr()
        assert main(["predict", *model, image, "--quiet", "--min-joints", "1", "--out", str(out)]) == 0
        said = f"the model's {other} head was never trained" in capsys.readouterr().err
        assert said == (model[0] == "--checkpoint")  # the export has no such head to speak of
        people = json.loads((out / "keypoints.json").read_text())
        assert bool(people) == (trained == "pose")  # the random pose head finds people (gain 40); not used here
        assert (out / "parts").exists() == (trained == "parts") and not (out / "instances").exists()
    exported = Predictor.from_checkpoint(onnx).info
    assert exported.tasks == (trained,) and exported.untrained == ()
    assert exported.outputs == (("heatmaps", "pafs") if trained == "pose" else ("parts",))
    graphs = [onnx_lib.load(str(path)).graph for path in (onnx, both)]
    assert [[o.name for o in g.output] for g in graphs] == [list(exported.outputs), ["heatmaps", "pafs", "parts"]]
    weights = [sum(int(np.prod(t.dims)) for t in g.initializer) for g in graphs]
    assert weights[0] < weights[1]  # the untrained head's weights are not in the file
    scripted = []
    for source in (ckpt, setup["ckpt"]):  # TorchScript too: the copy it traces has no such head
        assert main(["export", "--checkpoint", str(source), "--out", str(tmp_path / f"{source.stem}.ts")]) == 0
        scripted.append(sum(p.numel() for p in torch.jit.load(str(tmp_path / f"{source.stem}.ts")).parameters()))
    assert scripted[0] < scripted[1]
    assert Predictor.from_checkpoint(tmp_path / "one_task.ts").info.outputs == exported.outputs
    # the checkpoint's own Predictor runs without that head too, and predicts what a Predictor using every head does
    from posepart.engine.checkpoint import load_model

    loaded = load_model(ckpt)
    decoding = DecodeConfig(min_joints=1)
    whole = Predictor.from_model(loaded.model, loaded.schema, input_size=SIZE, decode_config=decoding)
    lean = Predictor.from_checkpoint(ckpt, decode_config=decoding)
    sizes = [sum(p.numel() for p in predictor.backend.model.parameters()) for predictor in (lean, whole)]
    assert sizes[0] < sizes[1]
    images = sorted((setup["data"] / "images").iterdir())
    for got, want in zip(lean(images), whole(images)):
        if trained == "pose":
            assert got.people and np.allclose(got.keypoints, want.keypoints, atol=1e-4)
        else:
            assert np.array_equal(got.parts, want.parts)
    nothing = write_checkpoint(tmp_path / "nothing.ckpt", Schema.pascal_person_part(), input_size=SIZE, tasks=())
    assert main(["export", "--checkpoint", str(nothing), "--out", str(tmp_path / "nothing.onnx")]) == 0  # whole
    untouched = Predictor.from_checkpoint(setup["ckpt"])  # a file recording no sources: every head is used
    assert untouched.info.tasks is None and untouched.info.untrained == ()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(setup["data"]), "--out",
                 str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert ("segmentation" in metrics) == (trained == "parts") and ("pose" in metrics) == (trained == "pose")


def test_result_plot_draws_the_prediction_with_its_legend(setup):
    """`result.plot()` (as ultralytics' Results.plot()): the image re-read from its file, parts and skeletons, legend."""
    from posepart.errors import UsageError
    from posepart.inference.draw import draw_result
    from posepart.inference.preprocess import load_image
    from posepart.viz import with_legend

    predictor = Predictor.from_checkpoint(setup["ckpt"], decode_config=DecodeConfig(min_joints=1))
    path = setup["data"] / "images" / "000000.jpg"
    result = predictor(str(path))
    image = load_image(path)
    drawn = draw_result(image, result, predictor.schema)
    changed = (drawn != image).any(-1)  # the prediction is drawn: its parts tint the photo where it found them
    assert (result.parts > 0).any() and changed[result.parts > 0].mean() > 0.9
    assert np.array_equal(result.plot(legend=False), drawn)
    assert np.array_equal(result.plot(), with_legend(drawn, predictor.schema))  # 320 px wide for this 64 px image
    assert np.array_equal(predictor(image).plot(image, legend=False), drawn)  # an array input: pass it again
    with pytest.raises(UsageError, match="pass the image"):
        predictor(image).plot()
    with pytest.raises(UsageError, match="the image given is"):
        result.plot(image[:10])


def test_predicted_joints_are_never_drawn_as_occluded(tmp_path):
    """A joint's last value is a visibility v in ground truth (1: occluded, drawn hollow) and a score in predictions;
    before, a prediction scored exactly 1.0 (a saturated focal heatmap) was drawn hollow. And the save functions took
    no str path."""
    from posepart.inference.draw import save_parts
    from posepart.viz import draw_people

    schema = Schema.pascal_person_part()
    image = np.zeros((64, 64, 3), np.uint8)
    person = np.zeros((1, schema.num_joints, 3), np.float32)
    person[0, 0] = [32, 32, 1.0]
    solid, hollow = (draw_people(image, person, schema, scores=scores) for scores in (True, False))
    person[0, 0, 2] = 0.999
    assert np.array_equal(solid, draw_people(image, person, schema, scores=True))
    assert not np.array_equal(solid, hollow) and solid[32, 32].any() and not hollow[32, 32].any()
    assert save_parts(str(tmp_path / "p.png"), np.ones((4, 4), np.uint8), schema).is_file()


def test_results_files_are_replaced_whole_or_not_at_all(setup, tmp_path, capsys, monkeypatch):
    """keypoints.json and summary.json are written atomically: a disk that fails while they are written leaves no
    truncated file (before: truncated or overwritten ones) and one `error:` line, exit 2. The earlier run's listings
    went when the new run began, with its files, so none of them lists files that are gone."""
    import os

    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images"), "--out", str(out),
            "--quiet", "--no-overlays"]
    assert main(args) == 0
    before = {name: (out / name).read_text() for name in ("keypoints.json", "summary.json")}
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(tuple(f"{n}.tmp-{os.getpid()}" for n in before)):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    capsys.readouterr()
    assert main([*args, "--flip"]) == 2  # another run (flip TTA) whose results cannot be written
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "keypoints.json" in err[-1] and "No space left" in err[-1]
    assert not any((out / name).exists() for name in before)
    assert not list(out.glob(".*.tmp-*"))


_TERMINATED_AFTER_TWO = """
import os, signal, sys
from pathlib import Path
import cv2
from posepart.cli import main
from posepart.inference.predictor import Predictor

camera, clip = cv2.VideoCapture, os.environ.get("WEBCAM_CLIP")  # webcam 0 plays the clip
cv2.VideoCapture = lambda where, *a: camera(clip if isinstance(where, int) else where, *a)

out = Path(sys.argv[1])
stream = Predictor.stream

def terminated(self, inputs):
    for done, result in enumerate(stream(self, inputs)):
        if done == 2:  # what two results have streamed to disk already, then SIGTERM, as `timeout` sends it
            seen = sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp-*"))
            (out.parent / "seen").write_text("\\n".join(f"{p} {(out / p).read_text()}" for p in seen))
            os.kill(os.getpid(), signal.SIGTERM)
        yield result

Predictor.stream = terminated
sys.exit(main(["predict", *sys.argv[2:], "--out", str(out), "--batch-size", "1", "--quiet", "--min-joints", "1"]))
"""


@pytest.mark.parametrize("kind", ["images", "video", "webcam"])
def test_sigterm_stops_predict_as_ctrl_c_does_and_results_stream_to_disk(setup, tmp_path, kind):
    """SIGTERM (`timeout`, `docker stop`, Slurm) after two inputs: exit 143, summary.json "interrupted", the
    results of the inputs done in keypoints.json (images) or videos/clip.json, and a closed mp4 that OpenCV reads
    back with the frames done. Before: the process died at once, with no keypoints.json, no summary.json and an mp4
    without its index. The results were also held in memory to the end (an hour of video: 400 MB); now the two are
    on disk, in the temporary file that takes the name at the end, before the third input is run."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    inputs = {"images": [str(setup["data"] / "images")], "video": [str(setup["clip"])],
              "webcam": ["0", str(setup["clip"])]}[kind]  # SIGTERM ends the run, not only the webcam (a review)
    run = subprocess.run([sys.executable, "-c", _TERMINATED_AFTER_TWO, str(out), "--checkpoint", str(setup["ckpt"]),
                          *inputs], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WEBCAM_CLIP": str(setup["clip"])})
    assert run.returncode == 143, run.stderr
    assert "interrupted: stopped after" in run.stderr and "Traceback" not in run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and not list(out.rglob(".*.tmp-*"))
    (partial,) = (tmp_path / "seen").read_text().splitlines()
    name, streamed = partial.split(" ", 1)
    if kind == "images":
        assert summary["succeeded"] == 2 and name == ".keypoints.json.tmp-" + name.rsplit("-", 1)[1]
        results = json.loads((out / "keypoints.json").read_text())
        assert {r["image_id"] for r in results} == {image["id"] for image in summary["images"]}
    else:
        (video,) = summary["videos"]
        stem = "clip" if kind == "video" else "webcam0"
        assert video["frames"] == 2 and name.startswith(f"videos/.{stem}.json.tmp-")
        results = json.loads((out / "videos" / f"{stem}.json").read_text())
        assert {r["image_id"] for r in results} == {0, 1}
        capture = cv2.VideoCapture(str(out / "videos" / f"{stem}.mp4"))
        assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
        capture.release()
    assert results and json.loads(streamed + "]") == results  # streamed: on disk before the run ended


def test_part_overlays_blend_in_uint8(tmp_path):
    """`draw_parts` (every overlay predict writes) blends the labelled pixels as the float formula does, to within
    rounding, and leaves background, ignored and unknown labels alone, for uint8 and int64 label maps. Before, its
    float64 temporaries took 2.1 GB and 8 s on a 12000 x 9000 photo: now its peak is a few bytes per pixel."""
    import tracemalloc

    from posepart.viz import draw_parts

    schema = Schema.pascal_person_part()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    parts = rng.choice(np.array([0, 1, 3, 6, 7, 200, 255], np.uint8), (600, 800))  # 7, 200: no such class
    labelled = (parts > 0) & (parts < schema.num_parts)
    expected = image.astype(np.float64)
    expected[labelled] = 0.45 * image[labelled] + 0.55 * schema.part_colours[parts[labelled]]
    for labels in (parts, parts.astype(np.int64)):
        drawn = draw_parts(image, labels, schema)
        assert drawn.dtype == np.uint8 and np.abs(drawn - expected).max() <= 1
        assert np.array_equal(drawn[~labelled], image[~labelled])
    tracemalloc.start()
    draw_parts(image, parts, schema)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * parts.size, peak / parts.size  # before: ~100 bytes per pixel


def test_fit_within_keeps_the_aspect_and_the_channels():
    from posepart.viz import fit_within

    for shape, expected in (((1200, 1600, 3), (600, 800, 3)), ((1000, 500, 1), (800, 400, 1)), ((3, 1601), (1, 800)),
                            ((2000, 1, 4), (800, 1, 4))):
        assert fit_within(np.zeros(shape, np.uint8), 800).shape == expected
    small = np.zeros((80, 60, 3), np.uint8)
    assert fit_within(small, 800) is small


def test_json_arrays_stream_to_a_file_that_takes_its_name_when_closed(tmp_path):
    """`JsonArrayWriter`: the items are on disk as they come, the file takes its name only at close (a reader never
    sees a partial array), and a block left unclosed, by an exception or not, leaves nothing."""
    from posepart.files import JsonArrayWriter

    path = tmp_path / "sub" / "results.json"
    with JsonArrayWriter(path) as writer:
        writer.extend([{"a": 1}, {"b": [2, 3]}])
        writer.extend([])
        writer.extend(["c"])
        assert not path.exists() and json.loads(writer.tmp.read_text() + "]") == [{"a": 1}, {"b": [2, 3]}, "c"]
        assert writer.close() == path
    assert json.loads(path.read_text()) == [{"a": 1}, {"b": [2, 3]}, "c"] and not writer.tmp.exists()
    with JsonArrayWriter(tmp_path / "empty.json") as writer:
        writer.close()
    with JsonArrayWriter(tmp_path / "unclosed.json"):  # nothing to list: no file
        pass
    assert json.loads((tmp_path / "empty.json").read_text()) == []
    with pytest.raises(RuntimeError), JsonArrayWriter(tmp_path / "failed.json") as writer:
        writer.extend([1])
        raise RuntimeError
    assert sorted(tmp_path.iterdir()) == [tmp_path / "empty.json", tmp_path / "sub"]


def test_a_failed_stream_leaves_no_temporary_file_and_names_its_path(tmp_path):
    """A write that fails (a full disk: /dev/full) is an OutputError naming the file, and the temporary file goes;
    so it does when the name cannot be taken (a folder stands there). Before (a review): the second flush in
    `discard` raised a bare OSError over it and the temporary file stayed."""
    from posepart.files import JsonArrayWriter
    from posepart.errors import OutputError

    with pytest.raises(OutputError, match="results.json"), JsonArrayWriter(tmp_path / "results.json") as writer:
        writer.file.close()
        writer.file = open("/dev/full", "wb")  # noqa: SIM115 - the writer closes it
        writer.extend([{"a": 1}])
    (tmp_path / "taken.json").mkdir()
    with pytest.raises(OutputError, match="taken.json"), JsonArrayWriter(tmp_path / "taken.json") as writer:
        writer.extend([1])
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]


def test_signals_wait_while_a_listing_is_written(tmp_path):
    """`signals_held`: a SIGTERM sent inside the block acts when the block ends, so the files it writes are whole."""
    import os
    import signal

    from posepart.inference.media import signals_held

    done = []

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("written")
        assert done == ["written"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_killed_runs_streams_are_removed_by_the_next_run(setup, tmp_path, capsys):
    """The temporary files a killed run's streams leave (a dead process's) go when the next run starts there, as an
    earlier run's files do, and it says so (before, without a word: the docs point to them as the results so far)."""
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)
    orphans = [out / ".keypoints.json.tmp-999999999", out / "videos" / ".clip.json.tmp-999999998"]
    for orphan in orphans:
        orphan.write_text("[{")
    assert main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images"), "--quiet",
                 "--out", str(out)]) == 0
    assert not any(orphan.exists() for orphan in orphans)
    err = capsys.readouterr().err
    assert all(f"removed {orphan}: the results a killed run had streamed" in err for orphan in orphans)
