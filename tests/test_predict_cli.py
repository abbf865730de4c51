"""`posepart predict`: folders, a video in -> video out, bad inputs, the files written and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from inference_helpers import write_checkpoint
from PIL import Image

from posepart.cli import main
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
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
    rc = main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["data"] / "images"), str(setup["clip"]),
               str(setup["broken"]), str(tmp_path / "missing.png"), "--out", str(out), "--maps", "--quiet",
               "--annotations", str(setup["data"] / "annotations.json"), "--min-joints", "1"])
    assert rc == 0  # some inputs failed, the others were processed
    err = capsys.readouterr().err
    assert "broken.jpg: truncated JPEG" in err and "missing.png: no such file" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["succeeded"] == 4 and summary["failed"] == 2
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
    assert {r["image_id"] for r in frames} <= set(range(5))
    (video_summary,) = summary["videos"]
    assert video_summary["frames"] == 5 and video_summary["fps"] == pytest.approx(12.0)


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


def test_result_plot_draws_the_prediction_with_its_legend(setup):
    """`result.plot()` (as ultralytics' Results.plot()): the image re-read from its file, parts and skeletons, legend."""
    from posepart.errors import UsageError
    from posepart.inference.draw import draw_result
    from posepart.inference.preprocess import load_image
    from posepart.viz import legend

    predictor = Predictor.from_checkpoint(setup["ckpt"], decode_config=DecodeConfig(min_joints=1))
    path = setup["data"] / "images" / "000000.jpg"
    result = predictor(str(path))
    image = load_image(path)
    drawn = draw_result(image, result, predictor.schema)
    assert np.array_equal(result.plot(legend=False), drawn)
    assert np.array_equal(result.plot(), np.concatenate([drawn, legend(predictor.schema, drawn.shape[1])]))
    assert np.array_equal(predictor(image).plot(image, legend=False), drawn)  # an array input: pass it again
    with pytest.raises(UsageError, match="pass the image"):
        predictor(image).plot()
    with pytest.raises(UsageError, match="the image given is"):
        result.plot(image[:10])


def test_results_files_are_replaced_whole_or_not_at_all(setup, tmp_path, capsys, monkeypatch):
    """keypoints.json and summary.json are written atomically: a disk that fails while they are written leaves the
    previous run's complete files (before: truncated or overwritten ones) and one `error:` line, exit 2."""
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
    assert {name: (out / name).read_text() for name in before} == before
    assert not list(out.glob(".*.tmp-*"))
