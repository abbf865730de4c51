"""Model evaluation: per-stage metrics, the prediction -> original-coordinates path (a model that outputs the ground
truth must score exactly what the oracle scores), overlays, the report and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from posepart.cli import main
from posepart.data.augment import canvas_size, normalize
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
from posepart.files import code_digest
from posepart.evaluate import evaluate_oracle, ground_truth_targets
from posepart.evaluate_model import evaluate_model, evaluation_predictor
from posepart.heads import HeadMeta
from posepart.inference.preprocess import letterbox
from posepart.models import ModelOutput, build_model
from posepart.report import metrics_table, plot_training_curves, write_report
from posepart.schema import Schema

SIZE = 64


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> PosePartDataset:
    return PosePartDataset.open(write_synth(tmp_path_factory.mktemp("evalmodel") / "val", n=4, seed=0, size=SIZE))


def _key(image: np.ndarray | Tensor) -> str:
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else image
    return hashlib.sha1(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


class GroundTruthModel(nn.Module):
    """Returns each input image's ground-truth targets (found by a hash of the Predictor's canvas of it) as a
    `stages`-stage output: heatmaps and PAFs as the oracle builds them, part logits 10 x one-hot of the label map
    (ignore -> background). The first `blank_stages` stages find no joint (zero heatmaps): a stage of its own."""

    def __init__(self, dataset: PosePartDataset, stages: int, parts_stride: int, input_size: int = SIZE,
                 blank_stages: int = 0) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives .to(device) something to move
        self.stages, self.parts_stride, self.blank_stages = stages, parts_stride, blank_stages
        self.meta = HeadMeta(dataset.schema, pose_stride=8, parts_stride=parts_stride)
        self.targets = {}
        for record in dataset.records:
            image = dataset.load_image(record)
            canvas, _ = letterbox(image, canvas_size(image.shape[:2], input_size, 8))
            targets, _ = ground_truth_targets(dataset, record, dataset.load_parts(record), input_size=input_size,
                                              head=self.meta)
            self.targets[_key(normalize(canvas))] = {"heatmaps": targets.heatmaps, "pafs": targets.pafs,
                                                     "parts": targets.parts}
        self.num_parts = dataset.schema.num_parts

    def _logits(self, parts: np.ndarray) -> Tensor:
        labels = torch.from_numpy(np.where(parts == 255, 0, parts)).long()  # (H, W)
        if self.parts_stride > 1:  # the stride-8 branch: labels at the centre of each 8 x 8 cell
            labels = labels[self.parts_stride // 2 :: self.parts_stride, self.parts_stride // 2 :: self.parts_stride]
        return 10.0 * nn.functional.one_hot(labels, self.num_parts).permute(2, 0, 1).float()

    def forward(self, images: Tensor) -> ModelOutput:
        samples = [self.targets[_key(image)] for image in images]
        hm = torch.stack([torch.from_numpy(s["heatmaps"]) for s in samples])
        paf = torch.stack([torch.from_numpy(s["pafs"]) for s in samples])
        parts = torch.stack([self._logits(s["parts"]) for s in samples])
        n_parts = self.stages if self.parts_stride > 1 else 1
        heatmaps = [torch.zeros_like(hm)] * self.blank_stages + [hm] * (self.stages - self.blank_stages)
        return ModelOutput(heatmaps=heatmaps, pafs=[paf] * self.stages, parts=[parts] * n_parts)


def test_metrics_keys_and_per_stage(synth):
    # FCN (parts_stride 1), per-stage seg branch (8) and the branch refined by a pool2 skip (4)
    for kwargs in ({"seg_head": "fcn32"}, {"seg_head": "stage"}, {"seg_head": "stage", "seg_stride": 4}):
        torch.manual_seed(0)
        model = build_model("joint_vgg16", synth.schema, width=0.125, fc_width=32, stages=2, **kwargs)
        model.train()
        metrics, overlays = evaluate_model(model, synth, input_size=SIZE, batch_size=3, progress=False, overlays=3)
        assert model.training  # the caller's mode is restored
        assert {"segmentation", "pose", "images", "per_stage"} <= set(metrics) and "skipped" not in metrics
        assert metrics["images"] == 4 and len(metrics["per_stage"]) == 2
        assert metrics["per_stage"][-1]["pose"] == metrics["pose"]
        assert metrics["per_stage"][-1]["segmentation"] == metrics["segmentation"]
        assert 0.0 <= metrics["segmentation"]["mean_iou"] <= 1.0 and 0.0 <= metrics["pose"]["ap"] <= 1.0
        assert len(metrics["segmentation"]["iou_per_class"]) == synth.schema.num_parts
        assert metrics["segmentation"]["classes"] == list(synth.schema.part_classes)  # the list's names
        json.dumps(metrics)  # metrics.json-serialisable
        assert len(overlays) == 3
        for image, record in zip(overlays, synth.records):
            assert image.dtype == np.uint8 and image.shape == (record.height, record.width, 3)


def test_ground_truth_model_reproduces_the_oracle(synth):
    size = 96  # 64 px images scaled by 1.5: predictions only match if mapped back through the inverse affine
    oracle = evaluate_oracle(synth, input_size=size, progress=False)
    model = GroundTruthModel(synth, stages=3, parts_stride=1, input_size=size, blank_stages=1)
    metrics, _ = evaluate_model(model, synth, input_size=size, batch_size=3, progress=False)
    assert len(metrics["per_stage"]) == 3
    assert metrics["per_stage"][0]["pose"]["ap"] == 0.0  # each stage scored from its own maps
    assert 0.2 < oracle["pose"]["ap"] < 1.0  # non-trivial at 64 px: some people found, some missed
    for key in ("ap", "ap50", "ap75", "ar", "pckh", "pck_dist", "pck_dist_px"):
        assert metrics["pose"][key] == pytest.approx(oracle["pose"][key], abs=1e-6), key
    for stage in metrics["per_stage"][1:]:
        assert stage["pose"]["ap"] == pytest.approx(oracle["pose"]["ap"], abs=1e-6)
    for key in ("pixel_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert metrics["segmentation"][key] == pytest.approx(oracle["segmentation"][key], abs=1e-6), key
    assert metrics["images"] == oracle["images"] == 4


def test_ground_truth_model_on_a_non_square_image(tmp_path):
    """A 60x40 image letterboxed into a 64x48 canvas: people must come back through the inverse affine."""
    from test_format import write_custom

    ds = PosePartDataset.open(write_custom(tmp_path / "ds"))
    oracle = evaluate_oracle(ds, input_size=SIZE, progress=False)
    metrics, _ = evaluate_model(GroundTruthModel(ds, 1, 1), ds, input_size=SIZE, progress=False)
    assert metrics["pose"]["ap"] == pytest.approx(oracle["pose"]["ap"], abs=1e-6)
    assert metrics["segmentation"]["pixel_accuracy"] == pytest.approx(oracle["segmentation"]["pixel_accuracy"])


def test_stage_seg_logits_are_upsampled_to_the_input(synth):
    model = GroundTruthModel(synth, stages=2, parts_stride=8)
    metrics, _ = evaluate_model(model, synth, input_size=SIZE, progress=False)
    assert len(metrics["per_stage"]) == 2
    assert metrics["segmentation"]["pixel_accuracy"] > 0.8  # stride-8 labels upsampled: only edges are lost
    record = synth.records[0]
    result = evaluation_predictor(model, input_size=SIZE)(synth.load_image(record))
    assert len(result.stages) == 1  # the first stage's result beside the final one
    for staged in (*result.stages, result):
        assert staged.parts.shape == (record.height, record.width) and staged.parts.dtype == np.uint8


def test_broken_sample_is_skipped_and_counted(synth, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(synth.annotation_file.parent, root)
    image = root / "images" / synth.records[1].file_name
    image.write_bytes(image.read_bytes()[:100])  # truncated JPEG
    ds = PosePartDataset.open(root)
    metrics, _ = evaluate_model(GroundTruthModel(synth, 1, 1), ds, input_size=SIZE, batch_size=2, progress=False)
    assert metrics["images"] == 3 and metrics["skipped"] == 1
    # a part map with a label beyond the classes, as the oracle and training's validation do (before: the error
    # ended the evaluation)
    parts = root / "parts" / Path(synth.records[2].file_name).with_suffix(".png")
    cv2.imwrite(str(parts), np.full(cv2.imread(str(parts), cv2.IMREAD_UNCHANGED).shape, 200, np.uint8))
    metrics, _ = evaluate_model(GroundTruthModel(synth, 1, 1), ds, input_size=SIZE, batch_size=2, progress=False)
    assert metrics["images"] == 2 and metrics["skipped"] == 2
    assert evaluate_oracle(ds, input_size=SIZE)["skipped"] == 2


def test_write_report(synth, tmp_path):
    metrics = {"segmentation": {"mean_iou": 0.5, "iou_per_class": [0.9] + [0.4] * 6}, "pose": {"ap": 0.25},
               "per_stage": [{"pose": {"ap": 0.125}, "segmentation": {"mean_iou": 0.5}},
                             {"pose": {"ap": 0.25}, "segmentation": {"mean_iou": 0.5}}]}
    report = write_report(tmp_path, "Test", {"m": metrics}, synth.schema, [tmp_path / "overlays.png"])
    text = report.read_text()
    assert report == tmp_path / "report.md" and text.startswith("# Test")
    assert "| m | 1 | 12.5 |" in text and "| m | 2 | 25.0 |" in text  # per-stage rows
    assert "| background | head | torso |" in text and "| 90.0 | 40.0 |" in text  # per-class IoU, schema's names
    assert "](overlays.png)" in text  # absolute figure inside out_dir made relative
    assert "PCKh@0.5 by joint" not in text  # no model with per-joint scores: no table


def test_report_rows_keep_their_columns_whatever_the_model_is_called(synth, tmp_path):
    """A `|` in a model's name (a checkpoint file "a|b.ckpt", a compare --label) split its row of every table into one
    more column than the header (a session's leftover: only compare escaped it)."""
    per_joint = dict.fromkeys(synth.schema.keypoints, 0.5)
    metrics = {"segmentation": {"mean_iou": 0.5, "iou_per_class": [0.9] + [0.4] * 6},
               "pose": {"ap": 0.25, "ap_small": 0.1, "pckh_per_joint": per_joint,
                        "slices": {"view": {"front": {"ap": 0.5, "people": 3}}}},
               "per_stage": [{"pose": {"ap": 0.25}, "segmentation": {"mean_iou": 0.5}}]}
    text = write_report(tmp_path, "Test", {"a|b": metrics}, synth.schema, groups={"a|b": [metrics, metrics]}
                        ).read_text()
    blocks = [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]  # one per table
    rows = [line for block in blocks for line in block if line.startswith("| a")]
    assert len(rows) == 6 and all(line.startswith("| a\\|b |") for line in rows)  # IoU's table has no name column
    for block in blocks:  # every row has its header's number of cells
        assert len({line.replace("\\|", "").count("|") for line in block}) == 1, block


def test_report_pckh_by_joint_averages_left_and_right(synth, tmp_path):
    """MPII's per-joint table: one column per joint type in schema order, left and right averaged; a side without
    labelled joints (None) left out of its average."""
    per_joint = {name: 0.5 for name in synth.schema.keypoints}
    per_joint.update(left_elbow=0.25, right_elbow=0.75, left_knee=None, right_knee=0.4)
    metrics = {"pose": {"ap": 0.25, "pckh_per_joint": per_joint}}
    text = write_report(tmp_path, "Test", {"m": metrics, "parts only": {"segmentation": {"mean_iou": 0.5}}},
                        synth.schema).read_text()
    assert "| model | head | neck | shoulder | elbow | wrist | hip | knee | ankle |" in text
    assert "| m | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 40.0 | 50.0 |" in text
    assert "| parts only |" not in text.split("PCKh@0.5 by joint")[1].split("##")[0]  # no pose scores, no row


def test_report_gives_distances_by_joint_where_pckh_has_no_head(tmp_path):
    """A schema without a head and a neck (an animal's) has no PCKh: its per-joint table was a row of dashes (a
    custom-data walkthrough); the mean distance of each joint type stands in."""
    animal = Schema(keypoints=("nose", "tail", "left_paw", "right_paw"), skeleton=((0, 1), (0, 2), (0, 3)))
    metrics = {"pose": {"ap": 0.5, "pckh_per_joint": dict.fromkeys(animal.keypoints),
                        "pck_dist_px_per_joint": {"nose": 2.0, "tail": 6.5, "left_paw": 3.0, "right_paw": None}}}
    text = write_report(tmp_path, "Test", {"m": metrics}, animal).read_text()
    assert "PCKh@0.5 by joint" not in text and "## Distance to the labelled joint by joint (px)" in text
    assert "| model | nose | tail | paw |" in text and "| m | 2.0 | 6.5 | 3.0 |" in text
    metrics["pose"]["pckh_per_joint"]["nose"] = 1.0  # PCKh where there is one
    assert "Distance to the labelled joint" not in write_report(tmp_path, "Test", {"m": metrics}, animal).read_text()


def test_report_ap_by_person_size(synth, tmp_path):
    """COCOeval's three area ranges, small (which its keypoint summary leaves out) to large, a row per model with any
    of them scored; an undefined size (no such person) is a dash."""
    rows = {"crowds": {"pose": {"ap": 0.2, "ap_small": 0.158, "ap_medium": 0.326, "ap_large": None}},
            "parts only": {"segmentation": {"mean_iou": 0.5}}}
    text = write_report(tmp_path, "Test", rows, synth.schema).read_text()
    assert "## OKS AP by person size (%)" in text
    assert "| model | small (< 32² px²) | medium (32²-96² px²) | large (> 96² px²) |" in text
    section = text.split("by person size")[1].split("##")[0]
    assert "| crowds | 15.8 | 32.6 | – |" in section and "| parts only |" not in section
    assert "by person size" not in write_report(tmp_path, "Test", {"m": {"pose": {"ap": 0.2}}}, synth.schema
                                                ).read_text()  # no figure by size: no table


def test_report_ap_by_synthetic_slice(synth, tmp_path):
    """One table per slicing (view, pose kind), columns headed by their people, one row per model that has them; a
    value a model lacks is a dash."""
    joint = {"pose": {"ap": 0.5, "slices": {
        "view": {"front": {"people": 12, "ap": 0.625, "ap50": 0.75}, "back": {"people": 3, "ap": 0.0, "ap50": 0.0}},
        "pose": {"sit": {"people": 4, "ap": 0.5, "ap50": 0.5}}}}}
    pose_alone = {"pose": {"ap": 0.25, "slices": {"view": {"front": {"people": 12, "ap": 0.25, "ap50": 0.5}}}}}
    text = write_report(tmp_path, "Test", {"joint": joint, "pose alone": pose_alone,
                                           "parts": {"segmentation": {"mean_iou": 0.5}}}, synth.schema).read_text()
    section = text.split("## OKS AP by view and by pose kind (%)")[1].split("##")[0]
    assert "| model | front (12) | back (3) |" in section and "| joint | 62.5 | 0.0 |" in section
    assert "| pose alone | 25.0 | – |" in section and "| model | sit (4) |" in section and "| joint | 50.0 |" in section
    assert "| parts |" not in section
    plain = write_report(tmp_path, "Test", {"m": {"pose": {"ap": 0.25}}}, synth.schema).read_text()
    assert "by view" not in plain  # no slices: no section


def test_report_one_pass_against_test_time_flipping(synth, tmp_path):
    """A row per model scored with --flip too (`metrics["flip"]`), each score one pass then flipped; a task a model
    does not have is a dash; no model with flip scores: no section."""
    joint = {"pose": {"ap": 0.5, "pckh": 0.75}, "segmentation": {"mean_iou": 0.625},
             "flip": {"pose": {"ap": 0.5625, "pckh": 0.8}, "segmentation": {"mean_iou": 0.65}}}
    parts = {"segmentation": {"mean_iou": 0.5}, "flip": {"segmentation": {"mean_iou": 0.5125}}}
    text = write_report(tmp_path, "Test", {"joint": joint, "parts": parts, "oracle": {"pose": {"ap": 1.0}}},
                        synth.schema).read_text()
    section = text.split("## With test-time flipping (%)")[1].split("##")[0]
    assert ("| model | OKS AP | OKS AP, flipped | PCKh@0.5 | PCKh@0.5, flipped | mean IU | mean IU, flipped |"
            in section)
    assert "| joint | 50.0 | 56.2 | 75.0 | 80.0 | 62.5 | 65.0 |" in section
    assert "| parts | – | – | – | – | 50.0 | 51.2 |" in section and "| oracle |" not in section
    plain = write_report(tmp_path, "Test", {"m": {"pose": {"ap": 0.25}}}, synth.schema).read_text()
    assert "test-time flipping" not in plain


def test_cli_models_json(capsys):
    assert main(["models", "--input-size", "64", "--width", "0.125", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = [row["model"] for row in listed["models"]]
    assert names == ["fcn32_vgg16", "fcn16_vgg16", "fcn8_vgg16", "paf_vgg16", "joint_vgg16"]
    for row in listed["models"]:
        assert row["parameters"] > 0 and row["gflops"] > 0
    # the model a config trains (before: only the builders' defaults, fc6/fc7 at 4096 whatever the width, so the
    # demo's 0.77 M-parameter joint model read as 44 M): counted against torch's own count of its parameters
    from posepart.engine.config import load_config
    from posepart.engine.builders import build_from_config

    assert main(["models", "--config", "demo_cpu_joint", "--input-size", "128", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    built = build_from_config(load_config("demo_cpu_joint"), Schema.pascal_person_part(), pretrained=False)
    assert row["model"] == "demo_cpu_joint" and row["parameters"] == sum(p.numel() for p in built.parameters())
    assert main(["models", "--config", "demo_cpu_joint", "--width", "0.5"]) == 2
    from posepart.engine.config import shipped_config

    path = shipped_config("demo_cpu_paf")  # given as a file, not a shipped name
    assert main(["models", "--config", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["width"] == 0.25 and listed["input_size"] == 128  # the config's, not the defaults


def test_cli_oracle_out_file_and_folder(synth, tmp_path):
    root = str(synth.annotation_file.parent)
    file = tmp_path / "metrics.json"
    assert main(["evaluate", "--oracle", "--data", root, "--input-size", "64", "--out", str(file)]) == 0
    assert "pose" in json.loads(file.read_text()) and not (tmp_path / "report.md").exists()
    folder = tmp_path / "oracle"
    assert main(["evaluate", "--oracle", "--data", root, "--input-size", "64", "--out", str(folder)]) == 0
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(file.read_text())
    assert "## Results" in (folder / "report.md").read_text()
    assert main(["evaluate", "--data", root]) == 2  # neither --checkpoint nor --oracle: an `error:` line


def test_cli_evaluate_checkpoint(synth, tmp_path, capsys):
    from posepart.engine.config import load_config
    from posepart.engine.train import train

    root = synth.annotation_file.parent
    config = load_config(None, [
        "model.name=joint_vgg16", "model.stages=2", "model.width=0.125", "model.fc_width=32",
        f"data.train={root}", "data.input_size=64", "data.batch_size=4", "data.workers=0",
        "train.max_epochs=1", "train.accelerator=cpu", "train.devices=1", "train.log_every_steps=1",
    ])
    ckpt = train(config, tmp_path / "run", enable_progress_bar=False, enable_model_summary=False).last
    from posepart.engine.checkpoint import load_checkpoint

    head = load_checkpoint(ckpt)["posepart"]["head"]  # training stores the model's HeadMeta
    assert (head["pose_stride"], head["parts_stride"], head["sigma"]) == (8, 1, 7.0)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--out", str(out), "--batch-size", "3",
                 "--overlays", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 4 and len(metrics["per_stage"]) == 2 and {"pose", "segmentation"} <= set(metrics)
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == ["000.png", "001.png"]
    report = (out / "report.md").read_text()
    assert "## Per stage" in report and "](overlays.png)" in report and (out / "overlays.png").is_file()
    printed, said = capsys.readouterr()
    assert "ap" in printed and "| joint_vgg16 (last.ckpt) | 2 |" in printed  # headline numbers and the per-stage table
    # scored on its own training data: said (a walkthrough scored a training set as held out, unwarned)
    assert f"{root / 'annotations.json'} is the model's training data" in said
    shutil.copytree(root, tmp_path / "held_out")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(tmp_path / "held_out")]) == 0
    assert "training data" not in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--source", f"seen={root}", "--source",
                 f"new={tmp_path / 'held_out'}", "--out", str(tmp_path / "rows.json")]) == 0
    assert f"note: --source seen: {root / 'annotations.json'} is the model's training data" in capsys.readouterr().err
    rows = json.loads((tmp_path / "rows.json").read_text())["sources"]
    assert rows["seen"]["evaluated"]["training_data"] and "training_data" not in rows["new"]["evaluated"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.ckpt"), "--data", str(root)]) == 2
    assert main(["evaluate", "--oracle", "--data", str(root), "--flip"]) == 2  # TTA of the ground truth: refused
    # the folder reused: before, the checkpoint's overlays and keypoints.json stayed beside the new metrics
    (out / "overlays" / "notes.txt").write_text("mine")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--out", str(out), "--overlays", "1"]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["000.png", "notes.txt"]
    assert main(["evaluate", "--oracle", "--data", str(root), "--input-size", "64", "--out", str(out)]) == 0
    assert not (out / "keypoints.json").exists() and not (out / "overlays.png").exists()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["notes.txt"]  # only what evaluate writes goes
    # a folder no evaluation wrote keeps its files of those names (before: deleted); links are refused, not followed
    mine = tmp_path / "mine"
    (mine / "overlays").mkdir(parents=True)
    (mine / "overlays" / "007.png").write_bytes(b"mine")
    (mine / "keypoints.json").write_text("[]")
    assert main(["evaluate", "--oracle", "--data", str(root), "--input-size", "64", "--out", str(mine)]) == 0
    assert (mine / "overlays" / "007.png").read_bytes() == b"mine" and (mine / "keypoints.json").read_text() == "[]"
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "overlays").symlink_to(mine / "overlays")
    assert main(["evaluate", "--oracle", "--data", str(root), "--out", str(tmp_path / "linked")]) == 2
    assert "overlays/ is a link" in capsys.readouterr().err


@pytest.mark.parametrize("tta", [[], ["--flip", "--scales", "1,1.5"]], ids=["plain", "flip-and-scales"])
def test_predict_and_pycocotools_give_the_metrics_of_evaluate(synth, tmp_path, tta):
    """One prediction path: `posepart predict` with evaluation's decoding writes exactly the people `evaluate` scored,
    pycocotools scores its keypoints.json as `evaluate` reports, and its part PNGs score evaluate's mean IU; with
    test-time augmentation too (`--flip`, `--scales` of both verbs), which metrics.json records."""
    from PIL import Image
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from inference_helpers import write_checkpoint
    from posepart.data.label_maps import scoring_labels
    from posepart.metrics import ConfusionMatrix

    root = synth.annotation_file.parent
    ckpt = str(write_checkpoint(tmp_path / "tiny.ckpt", synth.schema, input_size=SIZE, gain=40.0))
    assert main(["evaluate", "--checkpoint", ckpt, "--data", str(root), "--out", str(tmp_path / "eval"),
                 "--overlays", "0", *tta]) == 0
    reported = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert reported.get("test_time") == ({"scales": [1.0, 1.5], "flip": True} if tta else None)
    out = tmp_path / "pred"
    assert main(["predict", str(root / "images"), "--checkpoint", ckpt, "--out", str(out), "--annotations",
                 str(synth.annotation_file), "--min-joints", "1", "--min-person-score", "0", "--no-overlays",
                 "--no-instances", "--quiet", *tta]) == 0
    results = json.loads((out / "keypoints.json").read_text())
    scored = json.loads((tmp_path / "eval" / "keypoints.json").read_text())
    key = lambda r: (r["image_id"], -r["score"])  # noqa: E731 - predict lists images in file order
    assert len(results) > len(synth.records) and sorted(results, key=key) == sorted(scored, key=key)

    truth = COCO(str(synth.annotation_file))
    coco_eval = COCOeval(truth, truth.loadRes(results), "keypoints")
    coco_eval.params.kpt_oks_sigmas = np.asarray(synth.schema.sigmas)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    for name, index in (("ap", 0), ("ap50", 1), ("ap75", 2), ("ar", 5)):
        assert reported["pose"][name] == pytest.approx(max(coco_eval.stats[index], 0.0), abs=1e-12), name

    confusion = ConfusionMatrix(synth.schema.num_parts)
    for record in synth.records:
        labels = np.asarray(Image.open(out / "parts" / f"{record.file_name.rsplit('.', 1)[0]}.png"))
        confusion.update(labels, scoring_labels(synth.load_parts(record), synth.schema.num_parts))
    assert confusion.compute()["mean_iou"] == reported["segmentation"]["mean_iou"]


def test_tasks_limit_what_is_scored_and_drawn(synth):
    """A head trained with its task masked (the demo's single-task arms) is neither scored nor drawn."""
    from posepart.viz import overlay

    model = GroundTruthModel(synth, 1, 1)
    full, _ = evaluate_model(model, synth, input_size=SIZE, progress=False)
    parts_only, (drawn,) = evaluate_model(model, synth, input_size=SIZE, progress=False, overlays=1, tasks=("parts",))
    assert "pose" not in parts_only and all("pose" not in stage for stage in parts_only["per_stage"])
    assert parts_only["segmentation"] == full["segmentation"]
    image = synth.load_image(synth.records[0])
    result = evaluation_predictor(model, input_size=SIZE)(image)
    assert result.people  # there were people to leave out
    np.testing.assert_array_equal(drawn, overlay(image, synth.schema, parts=result.parts))
    pose_only, _ = evaluate_model(model, synth, input_size=SIZE, progress=False, tasks=("pose",))
    assert "segmentation" not in pose_only and pose_only["pose"] == full["pose"]


def test_evaluate_sources_reads_a_source_with_its_training_part_tables(tmp_path):
    """`evaluate --source NAME=ROOT` read every source with the default part tables: a source trained with
    `part_map: {cape: [torso]}` could not be scored at all ("part class 'cape' has no target class"), and one whose
    map changed a default scored differently from training validation."""
    from posepart.data.mixing import SourceError
    from posepart.data.writer import DatasetWriter
    from posepart.evaluate_model import evaluate_sources

    schema = Schema.pascal_person_part()
    own = Schema(keypoints=(), skeleton=(), part_classes=("background", "head", "cape"))
    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 8:20], labels[14:30, 6:26] = 1, 2
    with DatasetWriter(tmp_path / "capes", own) as writer:
        writer.add(np.full((32, 32, 3), 90, np.uint8), [], labels, file_name="a.png")
    dataset = PosePartDataset.open(tmp_path / "capes")
    torch.manual_seed(0)
    model = build_model("joint_vgg16", schema, width=0.125, fc_width=32, stages=1, seg_head="stage")
    with pytest.raises(SourceError, match="'cape'"):
        evaluate_sources(model, {"capes": dataset}, schema, input_size=32)
    scored = {}  # the part labels each source is scored against, as read in the model's schema

    def read_labels(name: str, mapped: PosePartDataset) -> None:
        scored[name] = mapped.load_parts(mapped.records[0])

    rows, _ = evaluate_sources(model, {"capes": dataset}, schema, input_size=32, on_mapped=read_labels,
                               part_tables={"capes": {"part_map": {"cape": ["torso"]}, "ignore_parts": []}})
    expected = np.zeros((32, 32), np.uint8)
    expected[4:12, 8:20], expected[14:30, 6:26] = schema.part_classes.index("head"), schema.part_classes.index("torso")
    np.testing.assert_array_equal(scored["capes"], expected)  # the cape scored as the torso it was trained as
    assert 0.0 <= rows["capes"]["segmentation"]["mean_iou"] <= 1.0


def test_training_curves_name_every_model_when_no_training_loss_was_logged(tmp_path, recwarn, monkeypatch):
    """Before: a run shorter than log_every_steps logs no training loss, the first panel stayed empty and so did the
    legend drawn there (matplotlib warned); the validation lines could not be told apart."""
    import matplotlib.axes
    import matplotlib.image

    legends = []  # the labels of every legend drawn
    draw_legend = matplotlib.axes.Axes.legend
    monkeypatch.setattr(matplotlib.axes.Axes, "legend", lambda ax, *args, **kwargs: legends.append(
        [text.get_text() for text in draw_legend(ax, *args, **kwargs).get_texts()]))

    logs = {}
    for name, ap in (("joint", 0.5), ("pose alone", 0.4)):
        path = tmp_path / f"{name}.csv"
        path.write_text(f"step,val/pose/ap,val/seg/mean_iou\n4,{ap},0.3\n8,{ap + 0.1},0.4\n")
        logs[name] = path
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's own, as a notebook's inline backend
    try:
        out = plot_training_curves(logs, tmp_path / "curves.png")
        assert matplotlib.get_backend() == "svg"  # a notebook walkthrough: switched to Agg for the session
    finally:
        matplotlib.use(backend)
    assert matplotlib.image.imread(out).shape[0] > 0
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]
    assert legends == [["joint", "pose alone"]]


def test_a_model_scored_on_data_that_labels_nothing_it_predicts_is_refused(synth, tmp_path, capsys, monkeypatch):
    """Before: a pose model on a parts-only dataset printed a table of "–", wrote metrics.json with no score and
    exited 0. Among several sources, every one is checked before any is scored."""
    from inference_helpers import write_checkpoint

    from posepart.data.writer import DatasetWriter

    schema = Schema.pascal_person_part()
    with DatasetWriter(tmp_path / "parts_only", schema) as writer:
        for record in synth.records:
            writer.add(synth.load_image(record), [], synth.load_parts(record), pose_labeled=False)
    pose_model = write_checkpoint(tmp_path / "pose.ckpt", schema, input_size=SIZE, tasks=("pose",))
    assert main(["evaluate", "--checkpoint", str(pose_model), "--data", str(tmp_path / "parts_only"), "--out",
                 str(tmp_path / "eval")]) == 2
    assert "nothing to score: the model predicts pose, the dataset labels parts" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "metrics.json").exists()
    both = write_checkpoint(tmp_path / "both.ckpt", schema, input_size=SIZE)  # its part head has labels to meet
    assert main(["evaluate", "--checkpoint", str(both), "--data", str(tmp_path / "parts_only"), "--out",
                 str(tmp_path / "eval")]) == 0
    assert "pose" not in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    with DatasetWriter(tmp_path / "no_people", schema) as writer:  # pose-labelled images, but nobody in them
        for record in synth.records[:2]:
            writer.add(synth.load_image(record), [])
    assert main(["evaluate", "--checkpoint", str(pose_model), "--data", str(tmp_path / "no_people")]) == 2
    # before: a table of "–"
    assert "the dataset labels nothing in the model's schema (no labelled person" in capsys.readouterr().err
    import posepart.evaluate_model

    def scored(*args, **kwargs):
        raise AssertionError("a source was scored before every source was checked")

    monkeypatch.setattr(posepart.evaluate_model, "evaluate_model", scored)
    assert main(["evaluate", "--checkpoint", str(pose_model), "--source", f"people={synth.annotation_file.parent}",
                 "--source", f"parts={tmp_path / 'parts_only'}"]) == 2
    assert "parts_only/annotations.json: nothing to score" in capsys.readouterr().err


def test_evaluate_source_reads_a_coco_release(fixtures, tmp_path, capsys):
    """Before: --source took a posepart ROOT only, so a COCO source that training validated on (`{annotations, images}`)
    could not be among the rows; its JSON alone was refused pointing at --annotations/--images, which --source
    replaces. Now NAME=FILE.json:IMAGES, scored as --annotations FILE --images IMAGES is."""
    import os

    from inference_helpers import write_checkpoint

    # gain 40: the random maps have peaks, so the model finds people to compare (at gain 1 it found none, and the
    # two "nothing found" scores were equal whatever was read)
    model = write_checkpoint(tmp_path / "pose.ckpt", Schema.pascal_person_part(), input_size=SIZE, tasks=("pose",),
                             gain=40.0)
    coco = fixtures / "coco_mini"
    release = f"{coco / 'annotations/person_keypoints_train2017.json'}{os.pathsep}{coco / 'train2017'}"
    assert main(["evaluate", "--checkpoint", str(model), "--source", f"coco={release}", "--out",
                 str(tmp_path / "rows")]) == 0
    assert main(["evaluate", "--checkpoint", str(model), "--annotations", release.split(os.pathsep)[0], "--images",
                 str(coco / "train2017"), "--out", str(tmp_path / "one")]) == 0
    err = capsys.readouterr().err  # a walkthrough: --source said nothing of the images it skipped, nor what it wrote
    assert err.count("skipped 44 x missing image") == 2 and "note: --source coco: skipped 44" in err
    assert f"wrote {tmp_path / 'rows' / 'metrics.json'}" in err
    rows = json.loads((tmp_path / "rows" / "metrics.json").read_text())["sources"]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    # what was scored is recorded (before: neither the checkpoint, the data nor the batch size)
    annotations = coco / "annotations/person_keypoints_train2017.json"
    assert one["evaluated"] == {"checkpoint": str(model.resolve()), "batch_size": 8,
                                "checkpoint_sha1": hashlib.sha1(model.read_bytes()).hexdigest(),
                                "data": str(annotations.resolve()),
                                "data_sha1": hashlib.sha1(annotations.read_bytes()).hexdigest(),
                                # the image folder (before: left out where the annotations are given apart)
                                "images": str((coco / "train2017").resolve()), "code": code_digest()}
    assert rows["coco"]["images"] == one["images"] == 36  # every image of the fixture's JSON
    assert rows["coco"]["pose"]["pck_dist_pairs"] > 0 and rows["coco"]["pose"] == one["pose"]
    predicted = [json.loads(path.read_text()) for path in (tmp_path / "rows" / "keypoints" / "coco.json",
                                                           tmp_path / "one" / "keypoints.json")]
    assert predicted[0] and predicted[0] == predicted[1]  # the same people, found on the same images
    assert main(["evaluate", "--checkpoint", str(model), "--source", f"coco={release.split(os.pathsep)[0]}"]) == 2
    assert f"give its image folder after it, joined by '{os.pathsep}'" in capsys.readouterr().err
    # a source none of whose images can be read is left out, with a note, and the others still count (before: a row
    # of no image); with no source left, refused
    unreadable = tmp_path / "unreadable"
    shutil.copytree(coco / "train2017", unreadable)
    for image in unreadable.iterdir():
        image.write_bytes(b"")
    broken = f"{coco / 'annotations/person_keypoints_train2017.json'}{os.pathsep}{unreadable}"
    assert main(["evaluate", "--checkpoint", str(model), "--source", f"coco={release}", "--source",
                 f"gone={broken}", "--out", str(tmp_path / "two.json")]) == 0
    assert "note: --source gone: no image could be scored: all 36 were skipped" in capsys.readouterr().err
    assert list(json.loads((tmp_path / "two.json").read_text())["sources"]) == ["coco"]
    assert main(["evaluate", "--checkpoint", str(model), "--source", f"gone={broken}"]) == 2
    assert "no source had an image that could be scored" in capsys.readouterr().err
    for flag in ("--images", "--parts"):  # before: ignored without a word
        assert main(["evaluate", "--checkpoint", str(model), "--source", f"coco={release}", flag, str(tmp_path)]) == 2
        assert "--images and --parts describe --data" in capsys.readouterr().err


def test_a_joint_model_on_data_of_other_joints_and_parts_has_nothing_to_score(synth, tmp_path, capsys):
    """A walkthrough: a joint model of one's own schema (3 joints, 3 part classes) on data of another (PASCAL's):
    before, "source 'data' declares task 'pose' but none of its joints maps ...; train with it as a data.sources
    entry whose part_map maps its classes" (nothing was declared, and no part table maps joints); a pose model
    on the same data was told "nothing to score", as the joint one is now."""
    from inference_helpers import write_checkpoint

    critter = Schema.from_names(["snout", "withers", "tail_base"], [("snout", "withers"), ("withers", "tail_base")],
                                ["background", "body", "limb"], name="critter")
    model = write_checkpoint(tmp_path / "critter.ckpt", critter, input_size=SIZE)
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(synth.annotation_file.parent)]) == 2
    err = capsys.readouterr().err
    assert ("nothing to score: the model predicts pose and parts, the dataset labels nothing in the model's schema"
            in err) and "declares task" not in err and "part_map" not in err

def test_evaluate_part_map_reads_a_datasets_part_classes_named_otherwise(synth, tmp_path, capsys):
    """A walkthrough: a held-out set whose part classes are named otherwise could be scored only as a training
    source (its part_map), and the warning advised training with it. `--part-map CLASS=TARGET` reads it here: the
    same labels, with a class renamed and mapped back, score exactly as the original."""
    from inference_helpers import write_checkpoint

    model = write_checkpoint(tmp_path / "joint.ckpt", synth.schema, input_size=SIZE)
    renamed = tmp_path / "renamed"
    shutil.copytree(synth.annotation_file.parent, renamed)
    coco = json.loads((renamed / "annotations.json").read_text())
    coco["categories"][0]["part_classes"] = ["trunk" if c == "torso" else c
                                             for c in coco["categories"][0]["part_classes"]]
    (renamed / "annotations.json").write_text(json.dumps(coco))
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(synth.annotation_file.parent), "--out",
                 str(tmp_path / "original.json")]) == 0
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(renamed), "--out",
                 str(tmp_path / "unmapped.json")]) == 0
    err = capsys.readouterr().err
    assert "'trunk'" in err and "its parts are not scored, its pose is; give its part table: --part-map " \
        "CLASS=TARGET[,TARGET] for each class" in err
    assert "segmentation" not in json.loads((tmp_path / "unmapped.json").read_text())
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(renamed), "--part-map", "trunk=torso", "--out",
                 str(tmp_path / "mapped.json")]) == 0
    original, mapped = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("original", "mapped"))
    assert mapped["segmentation"] == original["segmentation"] and mapped["pose"] == original["pose"]
    with pytest.raises(SystemExit, match="2"):  # argparse's refusal
        main(["evaluate", "--checkpoint", str(model), "--data", str(renamed), "--part-map", "trunk"])
    assert "expected CLASS=TARGET[,TARGET], got 'trunk'" in capsys.readouterr().err
    assert "change nothing" not in capsys.readouterr().err  # it did change what was read
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(synth.annotation_file.parent), "--part-map",
                 "trunk=torso"]) == 0  # the model's own schema: nothing to map, said (a review: ignored silently)
    assert "note: --part-map / --ignore-parts change nothing: the dataset's schema is the checkpoint's" in \
        capsys.readouterr().err
    for bad, words in ((["--part-map", "trunk=body"], "body"),
                       (["--part-map", "trunk=torso", "--part-map", "trunk=head"], "trunk given more than once"),
                       (["--oracle", "--part-map", "trunk=torso"], "the --oracle scores the data in its own")):
        argv = ["evaluate", *([] if "--oracle" in bad else ["--checkpoint", str(model)]), "--data", str(renamed), *bad]
        assert main(argv) == 2
        assert words in capsys.readouterr().err

def test_evaluate_source_reads_a_coco_releases_part_folder(synth, tmp_path, capsys):
    """Before: NAME=FILE.json:IMAGES had no way to give part maps, so a COCO file listing part classes was scored
    without its parts, unsaid (the twin of --annotations without --parts). Now a third field names the part folder,
    scored as --annotations/--images/--parts are; without it, a note says the parts go unread."""
    import os

    from inference_helpers import write_checkpoint

    model = write_checkpoint(tmp_path / "joint.ckpt", synth.schema, input_size=SIZE)
    root = synth.annotation_file.parent
    release = f"{synth.annotation_file}{os.pathsep}{root / 'images'}"
    assert main(["evaluate", "--checkpoint", str(model), "--source", f"s={release}", "--out",
                 str(tmp_path / "without.json")]) == 0
    assert (f"note: --source s: {synth.annotation_file} lists part classes, but no part maps are read without its "
            f"part folder as a third field (NAME=FILE.json{os.pathsep}IMAGES{os.pathsep}PARTS) ({root / 'parts'}?)"
            ) in capsys.readouterr().err
    assert "segmentation" not in json.loads((tmp_path / "without.json").read_text())["sources"]["s"]
    assert main(["evaluate", "--checkpoint", str(model), "--source", f"s={release}{os.pathsep}{root / 'parts'}",
                 "--out", str(tmp_path / "with.json")]) == 0
    assert "no part maps are read" not in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(model), "--annotations", str(synth.annotation_file), "--images",
                 str(root / "images"), "--parts", str(root / "parts"), "--out", str(tmp_path / "one.json")]) == 0
    scored = json.loads((tmp_path / "with.json").read_text())["sources"]["s"]
    one = json.loads((tmp_path / "one.json").read_text())
    assert scored["segmentation"]["mean_iou"] == one["segmentation"]["mean_iou"]  # the parts read, and the same
    assert scored["pose"] == one["pose"]
    for extra in (f"s={release}{os.pathsep}{root / 'parts'}{os.pathsep}{tmp_path}", f"s={release}{os.pathsep}"):
        assert main(["evaluate", "--checkpoint", str(model), "--source", extra]) == 2  # (an empty field: a review)
        assert f"expected FILE.json{os.pathsep}IMAGES or FILE.json{os.pathsep}IMAGES{os.pathsep}PARTS" in \
            capsys.readouterr().err

def test_evaluate_scores_oks_with_the_sigmas_the_evaluated_file_gives(tmp_path, capsys):
    """The same model and predictions on one dataset whose category gives tiny, then huge OKS sigmas: the score
    follows the file (0 with tiny ones, where no prediction is exact). Before, both were scored with the
    checkpoint's sigmas: the same AP twice."""
    import shutil

    from inference_helpers import write_checkpoint

    data = write_synth(tmp_path / "data", n=4, seed=3, size=64)
    ckpt = write_checkpoint(tmp_path / "peaky.ckpt", Schema.pascal_person_part(), gain=40.0)  # finds people
    ap = {}
    for sigma in (1e-6, 10.0):
        root = shutil.copytree(data, tmp_path / f"sigma_{sigma}")
        coco = json.loads((root / "annotations.json").read_text())
        coco["categories"][0]["sigmas"] = [sigma] * len(coco["categories"][0]["keypoints"])
        (root / "annotations.json").write_text(json.dumps(coco))
        assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--out", str(tmp_path / f"m{sigma}"),
                     "--input-size", "64"]) == 0
        ap[sigma] = json.loads((tmp_path / f"m{sigma}" / "metrics.json").read_text())["pose"]["ap"]
        assert "OKS takes the dataset's sigmas for the joints it gives the checkpoint's" in capsys.readouterr().err
    assert ap[1e-6] == 0.0 and ap[10.0] > 0.0, ap


def test_an_export_is_scored_as_the_checkpoint_it_came_from(synth, tmp_path, capsys, monkeypatch):
    """A walkthrough: `evaluate --checkpoint model.onnx` was refused, and the Python route to scoring the deployed file
    (`evaluate_predictor` with `Predictor.from_checkpoint`) decoded as predict does (people of 3 joints or more):
    other AP and PCKh than the checkpoint's, unsaid. Now the CLI scores an export through its runtime with
    evaluation's decoding, the Python route warns and records its own, and metrics.json names the files by digest."""
    from inference_helpers import write_checkpoint
    from posepart.decode import DecodeConfig
    from posepart.errors import PosepartWarning
    from posepart.evaluate_model import evaluate_predictor
    from posepart.inference import Predictor

    root = synth.annotation_file.parent
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", synth.schema, f"data.train={root}", input_size=SIZE, gain=40.0,
                            tasks=("pose", "parts"))
    onnx = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(onnx)]) == 0
    capsys.readouterr()
    scored = {}
    for model in (ckpt, onnx):
        assert main(["evaluate", "--checkpoint", str(model), "--data", str(root), "--out", str(tmp_path / model.suffix),
                     "--overlays", "0"]) == 0
        scored[model.suffix] = json.loads((tmp_path / model.suffix / "metrics.json").read_text())
        # what the export records of its training is read as the checkpoint's (a review: neither was, for an export)
        assert "is the model's training data" in capsys.readouterr().err
        assert scored[model.suffix]["training_data"] == [{"name": "train", "tasks": ["pose", "parts"]}]
    ours, theirs = scored[".onnx"], scored[".ckpt"]
    for task, name in (("pose", "ap"), ("pose", "pckh"), ("pose", "pck_dist_px"), ("segmentation", "mean_iou")):
        assert ours[task][name] == pytest.approx(theirs[task][name], abs=1e-5), name
    assert ours["pose"]["pckh"] > 0 and "decode" not in ours  # (a random model: it finds joints, not people)
    assert len(ours["per_stage"]) == 1  # an export runs its final stage alone
    assert ours["evaluated"]["checkpoint_sha1"] == hashlib.sha1(onnx.read_bytes()).hexdigest()
    assert ours["evaluated"]["data_sha1"] == hashlib.sha1(synth.annotation_file.read_bytes()).hexdigest()
    with pytest.warns(PosepartWarning, match=r"min_joints 3 \(evaluation's 1\)"):
        own, _ = evaluate_predictor(Predictor.from_checkpoint(onnx), synth, progress=False)
    assert own["decode"]["min_joints"] == 3 and own["pose"]["pckh"] != ours["pose"]["pckh"]
    evaluation = Predictor.from_checkpoint(onnx, decode_config=DecodeConfig.for_evaluation(), part_instances=False)
    assert evaluate_predictor(evaluation, synth, progress=False)[0]["pose"] == ours["pose"]
    # a review: ONNX Runtime ignored --threads; a TorchScript export named otherwise (.pth) went to the checkpoint
    # loader; --source refused an export as "not a training checkpoint", unexplained
    from posepart.inference.backends import OnnxBackend

    given, init = [], OnnxBackend.__init__

    def recording(self, *args, threads=None, **kwargs):
        given.append(threads)
        init(self, *args, threads=threads, **kwargs)

    monkeypatch.setattr(OnnxBackend, "__init__", recording)
    assert main(["evaluate", "--checkpoint", str(onnx), "--data", str(root), "--threads", "1", "--out",
                 str(tmp_path / "one.json")]) == 0
    assert given == [1]
    script = tmp_path / "tiny.pth"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "t.pt")]) == 0
    (tmp_path / "t.pt").rename(script)
    assert main(["evaluate", "--checkpoint", str(script), "--data", str(root), "--out", str(tmp_path / "ts.json")]) == 0
    assert json.loads((tmp_path / "ts.json").read_text())["pose"]["pckh"] == pytest.approx(theirs["pose"]["pckh"])
    assert main(["evaluate", "--checkpoint", str(onnx), "--source", f"a={root}"]) == 2
    assert "--source scores a training checkpoint or .safetensors" in capsys.readouterr().err


def test_compare_puts_evaluations_side_by_side(synth, tmp_path, capsys):
    """A walkthrough: each evaluation wrote its own report, and a table of several models meant hand-written
    `write_report` calls. `posepart compare` reads the metrics files `evaluate` wrote (with the schema they were
    scored in) into one report, a row per model (per --source); evaluations of other schemas are refused."""
    from inference_helpers import write_checkpoint

    root = str(synth.annotation_file.parent)
    for seed in (0, 1):
        ckpt = write_checkpoint(tmp_path / f"s{seed}.ckpt", synth.schema, input_size=SIZE, seed=seed, gain=40.0)
        assert main(["evaluate", "--checkpoint", str(ckpt), "--data", root, "--out", str(tmp_path / f"seed{seed}"),
                     "--overlays", "0"]) == 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--source", f"a={root}", "--source", f"b={root}", "--out",
                 str(tmp_path / "rows.json")]) == 0
    capsys.readouterr()
    evaluations = [str(tmp_path / "seed0"), str(tmp_path / "seed1"), str(tmp_path / "rows.json")]
    assert main(["compare", *evaluations, "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    scored = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("seed0", "seed1")}
    expected = metrics_table({**scored, **{f"rows/{s}": json.loads((tmp_path / "rows.json").read_text())["sources"][s]
                                           for s in "ab"}})
    assert table.strip() == expected  # the rows as evaluate scored them, in the order given
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| seed0 |" in report and "| rows/b |" in report and "## Per-class IoU" in report
    assert main(["compare", *evaluations[:2], "--label", "first", "--label", "second"]) == 0
    assert "| first |" in capsys.readouterr().out
    # an evaluation from Python, written as it is (an API walkthrough: refused, "one of an older posepart")
    from posepart.engine.checkpoint import load_model

    loaded = load_model(ckpt)
    mine, _ = evaluate_model(loaded.model, synth, input_size=SIZE, progress=False)
    assert mine["schema"] == synth.schema.to_category() and mine["input_size"] == SIZE
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    assert main(["compare", str(tmp_path / "seed1"), str(tmp_path / "mine.json")]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows[0].split("|")[2:] == rows[1].split("|")[2:]  # the CLI's numbers for the same model
    other = json.loads((tmp_path / "seed1" / "metrics.json").read_text())
    other["schema"] = Schema.coco().to_category()
    (tmp_path / "coco.json").write_text(json.dumps(other))
    assert main(["compare", evaluations[0], str(tmp_path / "coco.json")]) == 2
    assert "compare evaluations in one schema" in capsys.readouterr().err
    assert main(["compare", evaluations[0], evaluations[0]]) == 2  # two rows of one name
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    # a review: a --flip evaluation was a plain row, metrics.json given by name was labelled "metrics", a | split the
    # row, an --out that is a file was a traceback and one that is an evaluation's folder replaced its report
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", root, "--flip", "--out",
                 str(tmp_path / "flipped"), "--overlays", "0"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "seed0" / "metrics.json"), str(tmp_path / "flipped"), "--label", "a|b",
                 "--label", "flipped"]) == 0
    table = capsys.readouterr().out
    assert "| a\\|b |" in table and "| flipped, test-time flip |" in table
    assert main(["compare", str(tmp_path / "seed0" / "metrics.json"), str(tmp_path / "flipped")]) == 0
    assert "| seed0 |" in capsys.readouterr().out
    # one label for several evaluations (seeds of a model): numbered rows and their mean ± sample sd
    assert main(["compare", *evaluations[:2], "--label", "tiny", "--label", "tiny", "--out", str(tmp_path / "s")]) == 0
    table = capsys.readouterr().out
    assert "| tiny #1 |" in table and "| tiny #2 |" in table
    pckh = [scored[f"seed{seed}"]["pose"]["pckh"] * 100 for seed in (0, 1)]
    spread = f"| tiny | 2 | {statistics.fmean([m['pose']['pck_dist_px'] for m in scored.values()]):.1f} ± "
    assert spread in table and f"{statistics.fmean(pckh):.1f} ± {statistics.stdev(pckh):.1f} |" in table
    assert "## Mean ± sd over the evaluations of one label" in (tmp_path / "s" / "report.md").read_text()
    (tmp_path / "afile").write_text("")
    for out, words in ((tmp_path / "afile", "a file of that name exists"), (tmp_path / "seed1", "its report.md")):
        assert main(["compare", *evaluations[:2], "--out", str(out)]) == 2
        assert words in capsys.readouterr().err
