"""`posepart study`: the part-label subsets (seeded, recorded, disjoint, nested), the arms' task masks (a masked task
gets exactly zero gradient), the multi-task gain, and the verb end to end on the synthetic default and on a dataset
given by path."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from torch.utils.data import default_collate

from posepart.cli import main
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
from posepart.engine.config import load_config
from posepart.engine.data import PosePartDataModule
from posepart.engine.module import PosePartModule
from posepart.study import arm_sources, make_splits
from posepart.report import mean_sd
from posepart.study_report import delta_m

SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_synth(root / "train", n=8, seed=0, size=SIZE)
    write_synth(root / "val", n=3, seed=1, size=SIZE)
    return root


def test_splits_are_seeded_recorded_disjoint_and_nested(data, tmp_path):
    train = PosePartDataset.open(data / "train")
    ids = {r.image_id for r in train.records}
    fractions = [0.25, 0.5, 1.0]
    first = make_splits(train, fractions, [0, 1], tmp_path / "a")
    again = make_splits(train, fractions, [0, 1], tmp_path / "b")
    recorded = json.loads((tmp_path / "a" / "splits.json").read_text())
    for seed in (0, 1):
        order = recorded["seeds"][str(seed)]["order"]
        assert sorted(order) == sorted(ids)
        for f in fractions:
            split = first[(seed, f)]
            assert split.labelled == again[(seed, f)].labelled  # seeded
            assert len(split.labelled) == math.ceil(f * len(ids)) and list(split.labelled) == order[:len(split.labelled)]
            assert not set(split.labelled) & set(split.rest) and set(split.labelled) | set(split.rest) == ids
            subset = PosePartDataset.open(data / "train", annotations=split.labelled_file)
            assert sorted(r.image_id for r in subset.records) == sorted(split.labelled)
            people = sum(len(r.annotations) for r in train.records if r.image_id in split.labelled)
            assert sum(len(r.annotations) for r in subset.records) == people
        assert set(first[(seed, 0.25)].labelled) <= set(first[(seed, 0.5)].labelled)  # nested
        assert first[(seed, 1.0)].rest_file is None
    assert first[(0, 0.5)].labelled != first[(1, 0.5)].labelled  # the seed chooses the subset


def _gradients(arm: str, data, splits) -> tuple[dict[str, torch.Tensor], dict[str, float], torch.Tensor]:
    """One training batch of the arm: the gradient reaching each output, the loss terms, and each sample's source."""
    sources, _ = arm_sources(arm, splits[(0, 0.5)], data / "train", data / "val")
    config = load_config("demo_cpu_joint", [f"data.sources={json.dumps(sources)}", f"data.input_size={SIZE}",
                                            "data.epoch_size=8", "data.workers=0", "train.precision=32-true"])
    datamodule = PosePartDataModule(config)
    datamodule.setup("fit")
    torch.manual_seed(0)
    module = PosePartModule(config, datamodule.schema, allowed_sets=datamodule.allowed_sets)
    datamodule.bind(module.model.meta)  # targets on the model's grid, as `train` does
    batch = default_collate([datamodule.train_mapped[(0, i)] for i in range(8)])
    output = module.model(batch["image"])
    maps = {"heatmaps": output.heatmaps[0], "pafs": output.pafs[0], "parts": output.parts[0]}
    for tensor in maps.values():
        tensor.retain_grad()
    result = module.loss_fn(output, batch)
    result.total.backward()
    return {k: v.grad for k, v in maps.items()}, {k: float(v) for k, v in result.terms.items()}, batch["source"]


def test_the_arms_mask_the_other_task_exactly(data, tmp_path):
    splits = make_splits(PosePartDataset.open(data / "train"), [0.5], [0], tmp_path)
    grads, terms, _ = _gradients("parts", data, splits)
    assert terms["heatmap"] == 0.0 and terms["paf"] == 0.0 and terms["seg"] > 0
    assert not grads["heatmaps"].any() and not grads["pafs"].any() and grads["parts"].abs().sum() > 0
    grads, terms, _ = _gradients("pose", data, splits)
    assert terms["seg"] == 0.0 and terms["heatmap"] > 0
    assert not grads["parts"].any() and grads["heatmaps"].abs().sum() > 0
    grads, _, source = _gradients("joint", data, splits)  # parts on the labelled half, pose on both
    labelled, rest = source == 0, source == 1
    assert labelled.any() and rest.any()
    assert not grads["parts"][rest].any() and grads["parts"][labelled].abs().sum() > 0
    assert grads["heatmaps"][rest].abs().sum() > 0 and grads["heatmaps"][labelled].abs().sum() > 0


def test_multi_task_gain_by_hand():
    joint = {"segmentation": {"mean_iou": 0.6}, "pose": {"ap": 0.3}}
    singles = {"parts": {"segmentation": {"mean_iou": 0.5}}, "pose": {"pose": {"ap": 0.4}}}
    assert delta_m(joint, singles) == pytest.approx((0.2 - 0.25) / 2)  # +20 % on parts, -25 % on pose
    assert delta_m(joint, {**singles, "pose": {"pose": {"ap": 0.0}}}) is None
    assert mean_sd([0.1, 0.3, None]) == pytest.approx((0.2, math.sqrt(0.02)))
    assert mean_sd([None]) is None and mean_sd([0.5]) == (0.5, None)  # one seed: no spread measured (before: 0)


def test_study_end_to_end_on_a_dataset_given_by_path(data, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--data", str(data), "--size", str(SIZE), "--seeds", "1",
                 "--label-fractions", "0.25,1", "--train-images", "8", "--jobs", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["runs"]) == {"pose", "parts@0.25", "joint@0.25", "parts@1", "joint"}
    assert "pose" not in record["runs"]["parts@0.25"]["0"] and "segmentation" not in record["runs"]["pose"]["0"]
    assert {"segmentation", "pose"} <= set(record["runs"]["joint@0.25"]["0"])
    report = (out / "report.md").read_text()
    assert "| joint@0.25 | 25% |" in report and "| pose | none |" in report and (out / "study.png").is_file()
    assert "±" not in report.split("| arm |")[1]  # one seed: means alone (before: "± 0.0", a spread never measured)
    assert (out / "splits" / "splits.json").is_file() and "report:" in capsys.readouterr().out
    assert main(["study", "--out", str(tmp_path / "bad"), "--data", str(tmp_path / "nowhere")]) == 2


def test_study_scores_data_of_another_schema_in_the_models(fixtures, tmp_path):
    """`--set data.schema=...` trains in that schema from data in another (CIHP's 20 classes read as PASCAL's 6 parts).
    Before: the arms were scored against the raw validation labels (an IoU per CIHP class for a 7-class model, or a
    reshape traceback for pose); now the validation data is read in the model's schema, as `posepart evaluate` does."""
    for split in ("train", "val"):
        assert main(["convert", "cihp", "--src", str(fixtures / "cihp_pgn/CIHP"), "--out",
                     str(tmp_path / "data" / split)]) == 0
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--data", str(tmp_path / "data"), "--size", str(SIZE), "--seeds", "1",
                 "--label-fractions", "1", "--train-images", "4", "--jobs", "1", "--arms", "parts",
                 "--set", "data.schema=pascal_person_part"]) == 0
    scored = json.loads((out / "metrics.json").read_text())["runs"]["parts@1"]["0"]["segmentation"]
    assert len(scored["iou_per_class"]) == 7
    checkpoint = next((out / "runs").glob("parts*/checkpoints/last.ckpt"))
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "data" / "val"),
                 "--input-size", str(SIZE), "--out", str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())["segmentation"]
    assert scored["mean_iou"] == pytest.approx(evaluated["mean_iou"], abs=1e-9)


def test_arms_failing_on_a_users_mistake_in_worker_processes_are_one_error_line(data, tmp_path, capsys):
    """Before: with --jobs > 1 (the default) a config that no arm can train (here a schema without part classes for
    arms that train parts) ended in a RuntimeError traceback; with --jobs 1 it was already one error line."""
    code = main(["study", "--out", str(tmp_path / "study"), "--data", str(data), "--size", str(SIZE), "--seeds", "1",
                 "--label-fractions", "1", "--train-images", "4", "--jobs", "2", "--arms", "parts,joint",
                 "--set", "data.schema=mpii"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: training failed: ")
    assert "parts@1 seed 0: ConfigError" in errors[0] and "joint seed 0: ConfigError" in errors[0]


def test_study_end_to_end_on_the_synthetic_default_with_two_seeds(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--n-train", "8", "--n-val", "3", "--size", str(SIZE), "--seeds", "2",
                 "--label-fractions", "1", "--train-images", "8", "--jobs", "2"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["runs"]) == {"pose", "parts@1", "joint"}
    assert all(set(seeds) == {"0", "1"} for seeds in record["runs"].values())
    per_seed = [record["runs"]["joint"][seed]["segmentation"]["mean_iou"] for seed in ("0", "1")]
    mean, sd = record["summary"]["joint"]["mean_iou"]  # the mean and the sample standard deviation over the seeds
    assert mean == pytest.approx((per_seed[0] + per_seed[1]) / 2)
    assert sd == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)  # two values: |a - b| / sqrt(2)
    assert (out / "data" / "train" / "annotations.json").is_file()  # generated under OUT/data


def test_labelled_share_sets_the_draws_of_the_subset(data, tmp_path):
    splits = make_splits(PosePartDataset.open(data / "train"), [0.25], [0], tmp_path)
    uniform, _ = arm_sources("joint", splits[(0, 0.25)], data / "train", data / "val")
    assert [s["weight"] for s in uniform] == [2, 6]  # every image equally often
    half, tasks = arm_sources("joint", splits[(0, 0.25)], data / "train", data / "val", labelled_share=0.5)
    assert [s["weight"] for s in half] == [4.0, 4.0] and tasks == ("parts", "pose")
    assert [s["tasks"] for s in half] == [["parts", "pose"], ["pose"]]


def test_unlabelled_images_are_held_out_of_every_arm_and_fed_to_self_training(data, tmp_path):
    train = PosePartDataset.open(data / "train")
    splits = make_splits(train, [0.25, 1.0], [0], tmp_path, unlabelled_share=0.5)
    recorded = json.loads((tmp_path / "splits.json").read_text())["seeds"]["0"]
    quarter, full = splits[(0, 0.25)], splits[(0, 1.0)]
    assert len(quarter.unlabelled) == recorded["unlabelled"] == 4
    assert list(quarter.unlabelled) == recorded["order"][4:]  # the end of the seed's order
    pool = set(full.labelled)
    assert len(pool) == 4 and not pool & set(quarter.unlabelled)
    assert len(quarter.labelled) == 1 and set(quarter.labelled) | set(quarter.rest) == pool
    pose, _ = arm_sources("pose", quarter, data / "train", data / "val")
    opened = PosePartDataset.open(data / "train", annotations=pose[0]["train"]["annotations"])
    assert {r.image_id for r in opened.records} == pool  # pose learns from the labelled pool only
    st, tasks = arm_sources("joint+st", quarter, data / "train", data / "val")
    assert [s["name"] for s in st] == ["labelled", "rest", "unlabelled"] and tasks == ("parts", "pose")
    assert st[2]["unlabelled"] and "tasks" not in st[2] and st[2]["weight"] == 4
    opened = PosePartDataset.open(data / "train", annotations=st[2]["train"]["annotations"])
    assert {r.image_id for r in opened.records} == set(quarter.unlabelled)


def test_study_with_self_training_end_to_end(data, tmp_path):
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--data", str(data), "--size", str(SIZE), "--seeds", "1",
                 "--label-fractions", "1", "--train-images", "8", "--jobs", "1", "--self-train",
                 "--set", "loss.weighting=dwa"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["overrides"] == ["loss.weighting=dwa"]
    for run in ("joint_st_seed0", "pose_seed0"):  # every arm trained with the override
        assert yaml.safe_load((out / "runs" / run / "config.yaml").read_text())["loss"]["weighting"] == "dwa"
    assert set(record["runs"]) == {"pose", "parts@1", "joint", "joint+st"} and record["unlabelled"] == 0.5
    assert set(record["summary"]["joint+st"]) == {"mean_iou", "ap", "pckh", "delta_m", "delta_m_seeds",
                                                  "delta_m_compared"}
    assert {"segmentation", "pose"} <= set(record["runs"]["joint+st"]["0"])
    assert "| joint+st | 100% |" in (out / "report.md").read_text()
    assert main(["study", "--out", str(tmp_path / "bad"), "--data", str(data), "--self-train",
                 "--unlabelled", "0"]) == 2
    assert main(["study", "--out", str(tmp_path / "bad"), "--data", str(data), "--set", "loss.weighting=nope"]) == 2
    assert main(["study", "--out", str(tmp_path / "bad"), "--data", str(data), "--arms", "joint+st"]) == 2
    # one arm alone (to compare with an earlier study's): no single-task arm, so no Δm
    only = tmp_path / "only"
    assert main(["study", "--out", str(only), "--data", str(data), "--size", str(SIZE), "--seeds", "1",
                 "--label-fractions", "1", "--train-images", "8", "--jobs", "1", "--self-train",
                 "--arms", "joint+st"]) == 0
    record = json.loads((only / "metrics.json").read_text())
    assert set(record["runs"]) == {"joint+st"} and record["summary"]["joint+st"]["delta_m"] is None
    assert "| joint+st |" in (only / "report.md").read_text()


def test_a_study_run_again_reuses_its_finished_arms_and_refuses_to_replace_others(data, tmp_path, capsys,
                                                                                  monkeypatch):
    """Before: the same command run again (after an interruption or a failed arm) trained every arm from scratch,
    and a run with other settings in the same --out replaced the earlier arms and metrics.json without a word."""
    import posepart.jobs

    out = tmp_path / "study"
    argv = ["study", "--out", str(out), "--data", str(data), "--size", str(SIZE), "--seeds", "1", "--label-fractions",
            "1", "--train-images", "4", "--jobs", "1", "--arms", "pose,parts"]
    assert main(argv) == 0
    first = json.loads((out / "metrics.json").read_text())["runs"]

    def trained(*args, **kwargs):
        raise AssertionError("an arm finished with the same settings was trained again")

    real = posepart.jobs.train_and_score
    monkeypatch.setattr(posepart.jobs, "train_and_score", trained)
    capsys.readouterr()
    assert main(argv) == 0
    assert "reusing 2 arm(s)" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["runs"] == first
    # one arm asked for again: the other finished arm stays in the report (before: the pose row alone)
    assert main([*argv[:-1], "pose"]) == 0
    assert json.loads((out / "metrics.json").read_text())["runs"] == first
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert main([*argv, "--set", "optim.lr=0.001"]) == 2
    err = capsys.readouterr().err
    assert "it holds a study with another --set" in err and "--overwrite" in err
    assert f"with --data {data} for the same scenes" in err  # the data it was given (before: OUT/data, none there)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing written
    # nor one trained with other threads (--jobs 2: one per model here, against this process's own with --jobs 1)
    if torch.get_num_threads() != 1:
        assert main([*argv[:argv.index("--jobs")], "--jobs", "2", *argv[argv.index("--jobs") + 2:]]) == 2
        assert "trained with another thread count per model" in capsys.readouterr().err
    # an arm whose data changed since it was scored is not reused either (a review: it was, the data's path alone
    # was compared)
    annotations = data / "val" / "annotations.json"
    original = annotations.read_text()
    try:
        annotations.write_text(original.replace('"iscrowd": 0', '"iscrowd": 0 '))
        assert main(argv) == 2
        assert "trained with another annotation file (the data changed)" in capsys.readouterr().err
    finally:
        annotations.write_text(original)
    monkeypatch.setattr(posepart.jobs, "train_and_score", real)
    assert main([*argv[:-1], "pose", "--set", "optim.lr=0.001", "--overwrite"]) == 0
    assert json.loads((out / "runs" / "pose_seed0" / "score.json").read_text())["inputs"]["extra"][-1] == \
        "optim.lr=0.001"


def test_an_arm_whose_training_was_stopped_is_continued_not_restarted(data, tmp_path, capsys):
    """An arm stopped by Ctrl-C or SIGTERM keeps its last.ckpt where it stopped and a record of its inputs without
    metrics; the same command run again continues it (`--resume`, exact) instead of training it from step 0 (a docs
    walkthrough: its csv/ held a single version, trained again). Here the arm had trained to its end when stopped,
    so it continues with nothing left to train and scores the same checkpoint."""
    out = tmp_path / "study"
    argv = ["study", "--out", str(out), "--data", str(data), "--size", str(SIZE), "--seeds", "1", "--label-fractions",
            "1", "--train-images", "4", "--jobs", "1", "--arms", "pose"]
    assert main(argv) == 0
    run = out / "runs" / "pose_seed0"
    first = json.loads((run / "score.json").read_text())
    (run / "score.json").write_text(json.dumps({"inputs": first["inputs"]}))  # as a stopped arm leaves it
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    capsys.readouterr()
    assert main(argv) == 0
    assert f"{run}: continuing its interrupted training from {run / 'checkpoints' / 'last.ckpt'}" in \
        capsys.readouterr().err
    again = json.loads((run / "score.json").read_text())
    continued = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[key], continued[key]) for key in weights)
    for task, scores in first["metrics"].items():
        assert json.dumps(again["metrics"][task], sort_keys=True) == json.dumps(scores, sort_keys=True), task
    assert len(list((run / "csv").glob("version_*"))) == 2  # the first launch's log kept, the resume's beside it


def test_a_stop_asked_for_as_training_ends_leaves_the_model_unscored_and_continued_later(data, tmp_path):
    """A `posepart demo` / `study` job stops when its parent asks (`stop_requested`, polled after every step), also
    one asked for once the last step had passed: the model is not scored then (its record has no metrics) and the
    same job run again continues it, with nothing left to train, and scores it. Before, a worker that missed the
    forwarded SIGTERM trained to its end and was scored, 25 s after a Ctrl-C (the demo signal test's rare failure)."""
    from posepart.errors import Interrupted
    from posepart.jobs import SCORE_FILE, train_and_score

    out = tmp_path / "arm"
    common = dict(train_size=8, size=SIZE, images=16, quiet=True)  # 2 steps at the config's batch size 8
    polled: list[int] = []
    with pytest.raises(Interrupted):  # polled after steps 1 and 2, then once more before the scoring
        train_and_score(out, "demo_cpu_paf", data / "train", data / "val",
                        stop_requested=lambda: polled.append(1) or len(polled) > 2, **common)
    assert len(polled) == 3 and "metrics" not in json.loads((out / SCORE_FILE).read_text())
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    metrics = train_and_score(out, "demo_cpu_paf", data / "train", data / "val", **common)[0]
    assert "pose" in metrics and "metrics" in json.loads((out / SCORE_FILE).read_text())
    continued = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert continued["global_step"] == last["global_step"] == 2
    assert all(torch.equal(last["state_dict"][key], continued["state_dict"][key]) for key in last["state_dict"])
    import threading

    stop = threading.Event()  # an Event as train() takes it (a review: a TypeError once trained)
    stop.set()
    with pytest.raises(Interrupted):
        train_and_score(tmp_path / "event", "demo_cpu_paf", data / "train", data / "val", stop_requested=stop,
                        **common)
    assert torch.load(tmp_path / "event" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


def test_study_options_that_cannot_work_are_refused_before_training(data, tmp_path, capsys, monkeypatch):
    """Before: --unlabelled too small for a single image ended in an AssertionError traceback; a self-training
    --set reached every arm (and failed the others: "no source is unlabelled"); a --config without a part head
    trained its arms, then could not score them."""
    import posepart.jobs

    def trained(*args, **kwargs):
        raise AssertionError("trained before the options were checked")

    monkeypatch.setattr(posepart.jobs, "train_and_score", trained)
    base = ["study", "--out", str(tmp_path / "s"), "--data", str(data), "--size", str(SIZE), "--seeds", "1",
            "--label-fractions", "1", "--train-images", "4", "--jobs", "1"]
    for extra, words in ((["--self-train", "--unlabelled", "0.01"], "none of the 8 training images would be without "
                                                                    "labels, and self-training learns from those "
                                                                    "(give at least 0.125)"),
                         (["--self-train", "--set", "train.self_training.min_joints=15"], "a person has 14 joints"),
                         (["--set", "train.self_training.weight=0.5"], "apply to the +st arms, which --self-train"),
                         (["--config", "demo_cpu_paf"], "every arm is the joint network")):
        assert main([*base, *extra]) == 2, extra
        assert words in capsys.readouterr().err, extra


def test_self_training_settings_reach_the_st_arms_alone(data, tmp_path, monkeypatch):
    """`--set train.self_training.*` goes to the +st arms, the only ones with an unlabelled source."""
    import posepart.jobs

    seen = {}

    def run_jobs(jobs, *args, **kwargs):
        seen.update(jobs)
        return {label: ({"segmentation": {"mean_iou": 0.5}, "pose": {"ap": 0.5, "pckh": 0.5}}, [], None)
                for label in jobs}

    monkeypatch.setattr(posepart.jobs, "run_jobs", run_jobs)
    assert main(["study", "--out", str(tmp_path / "s"), "--data", str(data), "--size", str(SIZE), "--seeds", "1",
                 "--label-fractions", "0.5", "--train-images", "4", "--self-train", "--set",
                 "train.self_training.weight=0.5", "--set", "optim.lr=0.001"]) == 0
    for label, job in seen.items():
        assert "optim.lr=0.001" in job.extra
        assert ("train.self_training.weight=0.5" in job.extra) == label.startswith("joint@0.5+st"), label
    record = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert record["overrides"] == ["optim.lr=0.001"]
    assert record["self_training_overrides"] == ["train.self_training.weight=0.5"]


def test_a_gain_over_fewer_seeds_than_the_study_says_so(tmp_path):
    """Before: a seed whose pose arm scored AP 0 (no relative gain) was left out of Δm without a word, while the
    report's header said 3 seeds."""
    from posepart.study_report import summarise, write_study_report

    runs = {"pose": {"0": {"pose": {"ap": 0.0}}, "1": {"pose": {"ap": 0.1}}, "2": {"pose": {"ap": 0.12}}},
            "parts@0.1": {s: {"segmentation": {"mean_iou": 0.3}} for s in "012"},
            "joint@0.1": {s: {"segmentation": {"mean_iou": 0.3}, "pose": {"ap": 0.05}} for s in "012"}}
    summary = summarise(runs, [0.1], 3)
    # by hand: seed 1 (0 + (0.05 - 0.1) / 0.1) / 2 = -0.25, seed 2 (0 + (0.05 - 0.12) / 0.12) / 2 = -0.2917
    mean, sd = summary["joint@0.1"]["delta_m"]
    assert mean == pytest.approx((-0.25 - 0.07 / 0.24) / 2) and summary["joint@0.1"]["delta_m_seeds"] == 2
    record = {"seeds": 3, "train_images": 10, "train": "t", "val": "v", "config": "c", "size": 64,
              "splits": "s", "labelled_share": None, "unlabelled": 0.3, "arms": ["parts", "joint"], "fractions": [0.1],
              "summary": summary, "seconds": 1.0}
    text = write_study_report(tmp_path, record, None).read_text()
    line = next(line for line in text.splitlines() if line.startswith("| joint@0.1 "))
    assert line.endswith("(2 of 3 seeds) |")
    assert "no arm learns from them" in text and "`+st` arms" not in text  # no --self-train: no +st arm
    # no seed with a gain (a walkthrough: the pose arm scored AP 0 on every seed): a bare "–" said nothing
    runs["pose"] = {s: {"pose": {"ap": 0.0}} for s in "012"}
    record["summary"] = summarise(runs, [0.1], 3)
    assert record["summary"]["joint@0.1"]["delta_m"] is None
    text = write_study_report(tmp_path, record, None).read_text()
    line = next(line for line in text.splitlines() if line.startswith("| joint@0.1 "))
    assert line.endswith("| – (0 of 3 seeds: Δm is undefined where a single-task arm scores 0) |")
    del runs["pose"]  # a joint arm studied without its single-task arms (`--arms joint`): another reason
    record["summary"] = summarise(runs, [0.1], 3)
    text = write_study_report(tmp_path, record, None).read_text()
    line = next(line for line in text.splitlines() if line.startswith("| joint@0.1 "))
    assert line.endswith("| – (0 of 3 seeds: its single-task arms were not trained) |")
