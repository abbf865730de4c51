"""Every benchmark runs from its documented command and writes its figures (smoke runs on small settings).

The timings themselves are not checked (they belong in BENCHMARKS.md, not in tests); what is checked is that each
script still runs end to end, writes its JSON where $POSEPART_BENCH_RESULTS says, and that the correctness figures
the benchmarks report alongside their timings hold: decoding recovers every person, part pixels go to their painter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(tmp_path: Path, script: str, *args: str) -> str:
    env = {**os.environ, "POSEPART_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {tmp_path}" in done.stdout  # into the folder asked for, not over the committed results
    return done.stdout


def result(tmp_path: Path, name: str) -> dict[str, Any]:
    return json.loads((tmp_path / name).read_text())


def test_targets_benchmark(tmp_path: Path) -> None:
    run_benchmark(tmp_path, "bench_targets.py")
    rows = result(tmp_path, "targets.json")["rows"]
    assert [r["people"] for r in rows] == [1, 10, 20]
    # Timed separately, the phases need not add up to the total (that would be a timing); each is a positive time.
    assert all(r[f"{phase}_ms"] > 0 for r in rows for phase in ("total", "heatmaps", "pafs", "mask"))
    assert all(r["total_ms_p90"] > 0 for r in rows)


@pytest.mark.parametrize("stride", [8, 4])
def test_decode_benchmark_recovers_everyone(tmp_path: Path, stride: int) -> None:
    run_benchmark(tmp_path, "bench_decode.py", "--stride", str(stride))
    data = result(tmp_path, "decode.json" if stride == 8 else f"decode_stride{stride}.json")
    assert data["meta"]["stride"] == stride
    rows = data["rows"]
    assert [r["people"] for r in rows] == [1, 10, 20]
    assert all(r["recovered"] == 1.0 and r["spurious_people"] == 0 for r in rows)
    assert all(set(r["phases_ms"]) == {"peaks", "pair_scoring", "match_assemble", "rest"} for r in rows)
    assert [r["joints"] for r in data["untrained"]] == [14, 133]  # the worst case: an untrained model's maps
    assert all(r["seconds"] > 0 and r["people"] > 0 for r in data["untrained"])


def test_data_benchmark(tmp_path: Path) -> None:
    run_benchmark(tmp_path, "bench_data.py", "--n", "4", "--workers", "0", "1", "--batch", "2")
    data = result(tmp_path, f"data_{os.cpu_count()}cores.json")
    assert set(data["stage_ms"]) == {"read", "augment", "photometric", "normalize", "targets"}
    assert set(data["loader_samples_per_s"]) == {"0", "1"} and min(data["loader_samples_per_s"].values()) > 0


def test_training_benchmark_counts_flops(tmp_path: Path) -> None:
    run_benchmark(tmp_path, "bench_train.py", "--batch", "2", "--size", "64", "--steps", "1", "--threads", "1",
                  "--profile", str(tmp_path / "trace.json"))
    data = result(tmp_path, "train_cpu_w0.25_64_1t.json")
    ops = data["profile_top_ops"]  # operators, each counted once: their shares of the profiled time add up to <= 1
    assert sum(op["share"] for op in ops) <= 1 + 1e-9
    # Which operator takes the most time is a timing (CI saw the forward convolution first, this machine the
    # backward): the test checks that the convolutions of both passes are among the operators listed.
    names = {op["op"] for op in ops}
    assert "aten::convolution_backward" in names and names & {"aten::mkldnn_convolution", "aten::convolution",
                                                              "aten::_convolution", "aten::conv2d"}
    by_shape = data["profile_top_shapes"]  # the same time split by input shapes: no row above its operator's total
    total = {op["op"]: op["self_ms_per_step"] for op in ops}
    assert all(r["self_ms_per_step"] <= total.get(r["op"], float("inf")) + 1e-9 for r in by_shape)
    assert any("conv" in r["op"] and len(r["input_shapes"]) > 2 for r in by_shape)
    assert (tmp_path / "trace.json").stat().st_size > 0
    assert data["batch"] == 2 and data["gflop_per_step"] > 0 and 0 < data["mfu"]
    assert data["achieved_tflops"] == pytest.approx(data["gflop_per_step"] / data["step_ms"])  # GFLOP/ms = TFLOP/s
    assert data["mfu"] == pytest.approx(data["achieved_tflops"] / data["peak_tflops"])


def test_training_benchmark_times_a_shipped_recipe(tmp_path: Path) -> None:
    """--config times the model, loss and optimiser `posepart train` builds from a config: the demo's stride-4 pose
    maps, focal loss and Muon, with targets mapped on the model's own grid (the flags' model has stride-8 maps, an MSE
    loss and AdamW)."""
    from posepart.engine.config import load_config

    run_benchmark(tmp_path, "bench_train.py", "--config", "demo_cpu_joint.yaml", "--batch", "2", "--size", "64",
                  "--steps", "1", "--threads", "1")
    data = result(tmp_path, "train_cpu_demo_cpu_joint_64_1t.json")
    shipped = load_config("demo_cpu_joint.yaml").model
    assert data["config"] == "demo_cpu_joint.yaml" and data["pose_stride"] == shipped.pose_stride == 4
    assert data["optimizer"] == load_config("demo_cpu_joint.yaml").optim.name == "muon"
    assert (data["width"], data["stages"], data["seg_stride"]) == (shipped.width, shipped.stages, shipped.seg_stride)
    assert data["gflop_per_step"] > 0 and data["step_ms"] > 0
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_train.py"), "--config", "demo_cpu_joint.yaml",
                           "--width", "1"], env={**os.environ, "POSEPART_BENCH_RESULTS": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--config sets the model" in done.stderr


def test_network_benchmark(tmp_path: Path) -> None:
    run_benchmark(tmp_path, "bench_network.py", "--batches", "1", "--calls", "1", "--threads", "1", "--size", "128")
    row, = result(tmp_path, "network_cpu_w0.25_1t.json")["rows"]
    assert row["batch"] == 1 and row["x_floor"] == pytest.approx(row["ms_per_image"] / row["floor_ms_per_image"])


@pytest.mark.slow
def test_predict_benchmark_quick(tmp_path: Path) -> None:
    """The end-to-end benchmark (~50 s): post-processing, Predictor with PyTorch and ONNX Runtime, batch 1 and 32."""
    run_benchmark(tmp_path, "bench_predict.py", "--quick")
    data = result(tmp_path, "predict.json")
    assert [r["people"] for r in data["post"]] == [1, 5, 10, 20]
    assert all(r["instance_pixel_accuracy"] == 1.0 for r in data["post"])
    assert {r["model"].split(", ")[-1] for r in data["end_to_end"]} == {"PyTorch", "ONNX Runtime"}
    assert {r["batch"] for r in data["batches"]} == {1, 32}


def test_pose_ablation_row_trains_scores_and_records_its_change(tmp_path: Path) -> None:
    """One ablation row on a tiny budget, with the change it names (a stride-4 pose head, trained end to end)."""
    out = run_benchmark(tmp_path, "ablate_pose.py", "--label", "smoke", "--images", "16", "--n-train", "8",
                        "--n-val", "4", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                        "--set", "model.pose_stride=4")
    (line,) = (tmp_path / "ablate_pose.jsonl").read_text().splitlines()
    row = json.loads(line)
    assert row["label"] == "smoke" and row["images"] == 16 and row["overrides"] == ["model.pose_stride=4"]
    assert all(0.0 <= row[k] <= 1.0 for k in ("ap", "ap50", "pckh", "mean_iou"))
    from posepart.schema import Schema

    assert list(row["pckh_per_joint"]) == list(Schema.pascal_person_part().keypoints)  # the figure per joint too
    assert set(row["ap_by_slice"]) == {"view", "pose"}  # and per kind of synthetic person
    assert all(0.0 <= ap <= 1.0 for groups in row["ap_by_slice"].values() for ap in groups.values())
    scored = json.loads((tmp_path / "run" / "score.json").read_text())["metrics"]["pose"]
    assert (row["ap_small"], row["ap_medium"]) == (scored["ap_small"], scored["ap_medium"])  # and by people's size
    assert "| smoke | 16 |" in out
    assert "pose_stride: 4" in (tmp_path / "run" / "config.yaml").read_text()

    # the diagnosis of that model: its oracle row is `evaluate --oracle` on the model's grid
    from posepart.data.format import PosePartDataset
    from posepart.evaluate import evaluate_oracle

    done = subprocess.run([sys.executable, str(BENCHMARKS / "diagnose_pose.py"),
                           str(tmp_path / "run" / "checkpoints" / "last.ckpt"), str(tmp_path / "data" / "val")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(" AP ")[0].strip(): line for line in done.stdout.splitlines() if " AP50 " in line}
    assert len(lines) == 9 and "predicted maps" in lines and "predicted maps, joints <= 4 px exact" in lines
    assert any(line.startswith("    view ") for line in done.stdout.splitlines())  # the synthetic data's slices
    assert "by the labelled people's area" in done.stdout  # and by the people's size
    assert "predicted maps, left/right swaps undone" in lines
    oracle = evaluate_oracle(PosePartDataset.open(tmp_path / "data" / "val"), input_size=128, stride=4, sigma=6.0,
                             progress=False)["pose"]
    assert f"AP {oracle['ap']:.3f}  AP50 {oracle['ap50']:.3f}" in lines["true heatmaps + true PAFs (oracle)"]
    # decoding choices: another peak window, and heatmaps smoothed before decoding (one more row per width)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "diagnose_pose.py"),
                           str(tmp_path / "run" / "checkpoints" / "last.ckpt"), str(tmp_path / "data" / "val"),
                           "--radius", "1", "--blur", "0.75"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(" AP ")[0].strip(): line for line in done.stdout.splitlines() if " AP50 " in line}
    assert len(lines) == 10 and "predicted maps, heatmaps blurred 0.75 cells" in lines
    assert "peak radius 1" in done.stdout


def test_diagnose_unswaps_left_right_pairs_by_hand() -> None:
    """diagnose_pose's `unswapped` on a hand-made schema (head, left hand, right hand; the hands mirror each other):
    a pair is exchanged only when crossing it brings both nearer the labelled person the prediction lies closest to,
    and never when a joint of the pair is missing on either side."""
    diagnose = _diagnose_pose()
    flip_perm = (0, 2, 1)
    labelled = {1: np.array([[[0, 0, 2], [10, 0, 2], [-10, 0, 2]],  # person A at the origin
                             [[100, 0, 2], [110, 0, 2], [90, 0, 1]]], float)}  # person B, right hand occluded
    results = [{"image_id": 1, "keypoints": [0, 1, 1, -9, 0, 1, 10, 2, 1], "score": 0.5},  # A with its hands swapped
               {"image_id": 1, "keypoints": [100, 0, 1, 91, 0, 1, 111, 0, 1], "score": 0.4},  # B, swapped
               {"image_id": 1, "keypoints": [0, 0, 1, 4, 0, 1, -4, 0, 1], "score": 0.3},  # A, right sides, 6 px off
               {"image_id": 1, "keypoints": [0, 0, 1, -10, 0, 1, 0, 0, 0], "score": 0.2},  # one hand missing
               {"image_id": 2, "keypoints": [0, 0, 1, -10, 0, 1, 10, 0, 1], "score": 0.1}]  # no labelled person
    out = diagnose.unswapped(results, labelled, flip_perm)
    assert out[0]["keypoints"] == [0, 1, 1, 10, 2, 1, -9, 0, 1]  # crossed: 1 + 2 px against 19 + 20.1
    assert out[1]["keypoints"] == [100, 0, 1, 111, 0, 1, 91, 0, 1]  # nearest to B (not A), v = 1 counts as labelled
    assert [r["keypoints"] for r in out[2:]] == [r["keypoints"] for r in results[2:]]
    assert [r["score"] for r in out] == [r["score"] for r in results] and results[0]["keypoints"][3] == -9
    none_labelled = diagnose.unswapped(results[:1], {1: np.array([[[0, 0, 2], [10, 0, 0], [-10, 0, 2]]], float)},
                                       flip_perm)
    assert none_labelled[0]["keypoints"] == results[0]["keypoints"]  # the left hand is not labelled: no exchange


def test_pose_ablation_row_of_a_single_task_arm(tmp_path: Path) -> None:
    """`--tasks pose`: the joint network trained with its part task masked; the masked head is not scored. At
    `--size 96`: the data are written and trained at that size."""
    run_benchmark(tmp_path, "ablate_pose.py", "--label", "pose alone", "--images", "16", "--n-train", "8",
                  "--n-val", "4", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--tasks", "pose",
                  "--size", "96")
    row = json.loads((tmp_path / "ablate_pose.jsonl").read_text())
    assert row["tasks"] == ["pose"] and row["mean_iou"] is None and 0.0 <= row["ap"] <= 1.0
    assert row["size"] == 96 and row["device"]  # the CPU's name: no train.accelerator=gpu override
    assert "input_size: 96" in (tmp_path / "run" / "config.yaml").read_text()
    assert json.loads((tmp_path / "data" / "train" / "synth.json").read_text())["size"] == 96


def test_pose_ablation_data_only_writes_the_splits_and_no_row(tmp_path: Path) -> None:
    """`--data-only` (the GPU script, before its parallel rows): the cached splits are written, nothing is trained;
    without it a row needs its --label."""
    data = tmp_path / "data"
    env = {**os.environ, "POSEPART_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "ablate_pose.py"), "--data-only", "--n-train", "3",
                           "--n-val", "2", "--data", str(data), "--size", "64"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stamps = {split: json.loads((data / split / "synth.json").read_text()) for split in ("train", "val")}
    assert (stamps["train"]["n"], stamps["train"]["seed"], stamps["val"]["n"], stamps["val"]["seed"]) == (3, 0, 2, 1)
    assert not (tmp_path / "ablate_pose.jsonl").exists()
    done = subprocess.run([sys.executable, str(BENCHMARKS / "ablate_pose.py"), "--data", str(data)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--label is required" in done.stderr


def test_benchmark_result_names_carry_precision_and_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bf16 or compiled run writes its own file: the GPU script's eager and compiled runs once shared one name."""
    import argparse

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("POSEPART_BENCH_RESULTS", str(tmp_path))
    from bench_train import write_result

    for bf16, compile_, threads in [(False, False, None), (True, False, None), (True, True, 2)]:
        write_result("train_cuda_w1_368", argparse.Namespace(bf16=bf16, compile=compile_, threads=threads),
                     {"bf16": bf16})
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "train_cuda_w1_368.json", "train_cuda_w1_368_bf16.json", "train_cuda_w1_368_bf16_compiled_2t.json"]


def _diagnose_pose() -> Any:
    """benchmarks/diagnose_pose.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diagnose_pose", BENCHMARKS / "diagnose_pose.py")
    assert spec is not None and spec.loader is not None
    diagnose = importlib.util.module_from_spec(spec)
    sys.modules["diagnose_pose"] = diagnose  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(diagnose)
    return diagnose


def test_peak_census_sorts_hand_placed_peaks() -> None:
    """diagnose_pose's census on hand-placed peaks: each peak and each labelled joint lands in the category built."""
    from posepart.heads import HeadMeta
    from posepart.schema import Schema

    diagnose = _diagnose_pose()
    schema = Schema.pascal_person_part()
    head = HeadMeta(schema, pose_stride=4, sigma=6.0, paf_width=2.0)
    joint = {name: j for j, name in enumerate(schema.keypoints)}
    heatmaps = np.zeros((schema.heatmap_channels, 32, 32), np.float32)

    def peak(name: str, cell: tuple[int, int], score: float) -> None:  # a symmetric blob: no sub-cell offset
        x, y = cell
        heatmaps[joint[name], y - 1:y + 2, x - 1:x + 2] = score * np.array([[.5, .7, .5], [.7, 1, .7], [.5, .7, .5]])

    def pixel(cell: tuple[int, int]) -> list[float]:  # the centre of a stride-4 cell in input pixels
        return [cell[0] * 4 + 1.5, cell[1] * 4 + 1.5]

    keypoints = np.zeros((1, schema.num_joints, 3))
    labelled = {"left_elbow": (10, 10), "right_elbow": (20, 10), "left_wrist": (10, 20), "head": (15, 3)}
    for name, cell in labelled.items():
        keypoints[0, joint[name]] = [*pixel(cell), 2]
    peak("left_elbow", (10, 10), 0.9)  # on its joint, confident
    peak("right_elbow", (20, 12), 0.4)  # 8 px off its joint: "4-8 px", and a peak at its own joint
    peak("right_wrist", (10, 20), 0.3)  # on the left wrist: the left wrist is found only by its twin's channel
    peak("neck", (10, 10), 0.2)  # the neck is not labelled there: another joint's place
    peak("head", (28, 28), 0.6)  # far from everyone: background; the head itself has no peak
    census = diagnose.PeakCensus()
    census.add(heatmaps, keypoints, head, radius=2)
    assert census.peaks == {(">= 0.5", "own joint"): 1, ("< 0.5", "own joint"): 1, ("< 0.5", "mirror joint"): 1,
                            ("< 0.5", "other joint"): 1, (">= 0.5", "background"): 1}
    recall = {name: dict(counts) for name, counts in census.recall.items() if counts}
    assert recall == {"left_elbow": {"within 4 px": 1}, "right_elbow": {"4-8 px": 1},
                      "left_wrist": {"only the mirror joint's peak": 1}, "head": {"no peak": 1}}
    assert sorted(census.distances) == pytest.approx([0.0, 8.0, 4 * np.hypot(28 - 15, 28 - 3), np.inf])
    assert "left_elbow" in census.report()


def test_diagnose_rescorings_by_hand() -> None:
    """diagnose_pose's counterfactuals on hand-made people (two joints, sigmas 0.1, area 100: OKS terms
    exp(-d^2 / 8)): `ranked_by_oks` scores each detection by its best OKS in its own image; `snapped` moves a joint
    onto the nearest labelled joint of its type only within the radius, and leaves missing joints alone."""
    from posepart.metrics.oks import coco_keypoint_ap

    diagnose = _diagnose_pose()
    sigmas = (0.1, 0.1)
    gt = [{"id": 1, "image_id": 1, "keypoints": [10, 10, 2, 20, 10, 2], "area": 100.0, "bbox": [10, 10, 10, 1],
           "iscrowd": 0, "num_keypoints": 2},
          {"id": 2, "image_id": 1, "keypoints": [0, 0, 0, 0, 0, 0], "area": 100.0, "bbox": [0, 0, 5, 5],
           "iscrowd": 1, "num_keypoints": 0},  # a crowd: no OKS against it
          {"id": 3, "image_id": 2, "keypoints": [50, 50, 2, 60, 50, 2], "area": 100.0, "bbox": [50, 50, 10, 1],
           "iscrowd": 0, "num_keypoints": 2}]
    results = [{"image_id": 1, "keypoints": [10, 10, 1, 23, 10, 1], "score": 0.1},  # 3 px off on the 2nd joint
               {"image_id": 1, "keypoints": [50, 50, 1, 60, 50, 1], "score": 0.9},  # image 2's person, in image 1
               {"image_id": 2, "keypoints": [51, 50, 1, 0, 0, 0], "score": 0.5}]  # 1 px off, 2nd joint missing
    ranked = diagnose.ranked_by_oks(results, gt, sigmas)
    assert [r["score"] for r in ranked] == pytest.approx([(1 + np.exp(-9 / 8)) / 2, 0.0, np.exp(-1 / 8) / 2])
    assert [r["keypoints"] for r in ranked] == [r["keypoints"] for r in results] and results[0]["score"] == 0.1
    labelled = {1: np.array([[[10, 10, 2], [20, 10, 2]]], float), 2: np.array([[[50, 50, 2], [60, 50, 2]]], float)}
    assert [r["keypoints"] for r in diagnose.snapped(results, labelled, 2)] == [
        [10, 10, 1, 23, 10, 1], [50, 50, 1, 60, 50, 1], [50, 50, 1, 0, 0, 0]]  # 3 px stays, 1 px moves
    exact = diagnose.snapped(results, labelled, 4)
    assert exact[0]["keypoints"] == [10, 10, 1, 20, 10, 1] and exact[1]["keypoints"] == results[1]["keypoints"]
    images = [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}]
    # the perfect ranking puts image 1's true person above the stray one: AP can only rise
    assert coco_keypoint_ap(images, gt, ranked, sigmas)["ap"] >= coco_keypoint_ap(images, gt, results, sigmas)["ap"]


def test_diagnosis_bins_people_by_the_area_cocoeval_reads() -> None:
    """`by_area`: a person's own area, else its box's (as COCOeval reads it), in bins split at 24^2, 32^2, 48^2 and
    96^2 px^2 (each lower edge inside its bin); crowds and people without a labelled joint are in none."""
    diagnose = _diagnose_pose()
    joints = [1, 1, 2, 0, 0, 0]
    gt = [{"id": 1, "keypoints": joints, "area": 100.0, "iscrowd": 0},
          {"id": 2, "keypoints": joints, "area": 24.0 ** 2, "iscrowd": 0},  # the edge: the upper bin
          {"id": 3, "keypoints": joints, "bbox": [0, 0, 40, 40], "iscrowd": 0},  # no area: the box's, 1,600
          {"id": 4, "keypoints": joints, "area": 200.0 ** 2, "iscrowd": 0},
          {"id": 5, "keypoints": joints, "area": 100.0, "iscrowd": 1},  # a crowd
          {"id": 6, "keypoints": [0, 0, 0, 0, 0, 0], "area": 100.0, "iscrowd": 0}]  # nothing labelled
    assert diagnose.by_area(gt, 2) == {"0^2-24^2": {1}, "24^2-32^2": {2}, "32^2-48^2": {3}, "48^2-96^2": set(),
                                       ">= 96^2": {4}}


def test_diagnosis_prints_an_undefined_score_as_a_dash() -> None:
    """Before: diagnose_pose formatted every AP with :.3f, so data with no person to find (AP None, as COCOeval's
    -1) ended in a TypeError."""
    diagnose = _diagnose_pose()
    assert diagnose._figure(None) == "-" and diagnose._figure(0.5) == "0.500"
