"""`posepart demo`: oracle only (--train-images 0), and the training comparison on a tiny budget."""

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from posepart.cli import main


def test_demo_oracle_only(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("runs") / "demo"  # relative, as `make demo` passes it: figure links must be relative to the report
    assert main(["demo", "--out", str(out), "--n-val", "12", "--size", "128", "--train-images", "0"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| oracle (decoded ground truth) |" in report and "![samples](samples.png)" in report
    oracle = json.loads((out / "oracle_metrics.json").read_text())
    assert oracle["pose"]["ap"] > 0.5
    # the oracle is the ceiling of the demo's models: the ground truth decoded on the joint config's grid
    from posepart.data.format import PosePartDataset
    from posepart.engine.config import load_config, shipped_config
    from posepart.evaluate import evaluate_oracle

    joint = load_config(shipped_config("demo_cpu_joint.yaml"))
    expected = evaluate_oracle(PosePartDataset.open(out / "data" / "val"), input_size=128, progress=False,
                               stride=joint.model.pose_stride, sigma=joint.data.sigma, paf_width=joint.data.paf_width)
    for nested in ("pckh_per_joint", "pck_dist_px_per_joint", "slices"):  # approx compares flat dicts only
        assert json.dumps(oracle["pose"].pop(nested)) == json.dumps(expected["pose"].pop(nested))
    assert oracle["pose"] == pytest.approx(expected["pose"])
    assert f"the oracle at the joint model's pose stride {joint.model.pose_stride}" in report


@pytest.mark.parametrize("native", [True, False])
def test_demo_budget_follows_native_bf16(monkeypatch, native):
    """The demo's default budget is smaller on a CPU that trains in float32 (no native bfloat16: `precision: auto`),
    whose steps are ~2.5x slower, so `make demo` keeps to its 15 minutes on either kind of machine."""
    import torch

    from posepart.demo import DEFAULT_TRAIN_IMAGES, FLOAT32_TRAIN_IMAGES, default_train_images

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert default_train_images() == (DEFAULT_TRAIN_IMAGES if native else FLOAT32_TRAIN_IMAGES)
    assert FLOAT32_TRAIN_IMAGES < DEFAULT_TRAIN_IMAGES


@pytest.mark.parametrize("verb, option", [("demo", "--jobs"), ("demo", "--size"), ("demo", "--n-train"),
                                          ("study", "--jobs"), ("study", "--seeds"), ("study", "--train-images"),
                                          ("study", "--size")])
def test_counts_below_one_are_refused_before_any_work(verb, option, tmp_path, capsys):
    """Before: `study --seeds 0` (or --train-images 0, --size 0) quietly became the default, a run of hours."""
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--out", str(tmp_path / verb), option, "0"])
    assert exit_.value.code == 2 and f"{option}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / verb).exists()


@pytest.mark.parametrize("verb", ["demo", "study"])
def test_a_size_the_network_cannot_take_is_refused_before_any_work(verb, tmp_path, capsys):
    """Before: `--size 60` generated the data, ran the oracle, then every model failed with a ValueError traceback
    (input sizes are multiples of the trunk's stride)."""
    assert main([verb, "--out", str(tmp_path / verb), "--size", "60"]) == 2
    assert "--size 60: must be a multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / verb).exists()


@pytest.mark.parametrize("setting, words", [("data.input_size=60", "input_size: must be a positive multiple of 8"),
                                            ("model.seg_head=fcn32", "other than 8 only with seg_head='stage'")])
def test_a_config_the_network_cannot_take_is_a_config_error(setting, words):
    """Before: a ValueError traceback from the Mapper or the model builder once training started."""
    from posepart.engine.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config("demo_cpu_joint", [setting])


FOLDERS = ("demo_cpu_fcn32", "demo_cpu_paf", "demo_cpu_joint_pose_only", "demo_cpu_joint_parts_only", "demo_cpu_joint")


def test_the_demo_gives_the_same_numbers_whatever_its_jobs(tmp_path, capsys):
    """Three models at once in worker processes, and one after another in this process (twice into one folder, as
    `make demo` twice does: the second run replaces the first's runs), give the same metrics to the last digit:
    every model trains on one thread. Before, the threads were the cores divided by the jobs (here 2 with --jobs 1,
    1 with --jobs 3), and the numbers differed (the README's table was not what an 8-core machine gave)."""
    outs = {jobs: tmp_path / f"demo{jobs}" for jobs in (3, 1)}
    for jobs, out in outs.items():
        args = ["demo", "--out", str(out), "--n-val", "8", "--size", "64", "--n-train", "16", "--train-images", "40",
                "--jobs", str(jobs)]
        for _ in range(1 if jobs > 1 else 2):
            assert main(args) == 0
        if jobs > 1:  # one combined progress line over the workers' 5 x 5 steps (40 images / batch 8 each)
            assert "25/25" in capsys.readouterr().out
        check_demo_folder(out, jobs, tmp_path)
    for name in FOLDERS:
        assert json.loads((outs[3] / name / "metrics.json").read_text()) == \
            json.loads((outs[1] / name / "metrics.json").read_text()), name
    assert (outs[3] / "report.md").read_text().split("Finished in")[0] == \
        (outs[1] / "report.md").read_text().split("Finished in")[0]


def check_demo_folder(out: Path, jobs: int, tmp_path: Path) -> None:
    """What a demo run of the test above leaves: five models' runs, the report, the oracle."""
    folders = FOLDERS
    logs = [(out / name / "train.log").is_file() for name in folders]
    assert logs == [jobs > 1] * 5  # a worker's output goes to its model's log, not into the others'
    report = (out / "report.md").read_text()
    for row in ("| FCN32 (parts only) |", "| PAF (pose only) |", "| joint net, parts masked |",
                "| joint net, pose masked |", "| joint |"):
        assert row in report
    assert (out / "curves.png").is_file() and (out / "predictions.png").is_file()
    assert "training on 40 images per model" in report and "1 thread each, " in report
    assert f"on a CPU with {torch.backends.cpu.get_cpu_capability()}" in report  # what the numbers depend on
    steps = [line for line in (out / "demo_cpu_joint" / "config.yaml").read_text().splitlines() if "max_steps" in line]
    assert steps == ["  max_steps: 5"]  # 40 images / batch 8: the schedule is planned over the budget
    config = (out / "demo_cpu_joint" / "config.yaml").read_text()
    assert "  sigma: 3.0" in config.splitlines()  # 6 px at the configs' 128 px, scaled to the 64 px run
    scene = json.loads((out / "data" / "train" / "synth.json").read_text())["scene"]
    assert scene == {"max_people": 2, "min_height": 0.5, "crowd_prob": 0.0, "clutter": 0.0}  # the easy preset
    joint = json.loads((out / "demo_cpu_joint" / "metrics.json").read_text())
    assert {"segmentation", "pose", "per_stage"} <= set(joint) and len(joint["per_stage"]) == 1  # stages: 1
    fcn = json.loads((out / "demo_cpu_fcn32" / "metrics.json").read_text())
    assert "pose" not in fcn  # a parts-only model reports no pose metrics
    # the joint network with one task masked: trained on the other alone, and scored only on it
    pose_arm = json.loads((out / "demo_cpu_joint_pose_only" / "metrics.json").read_text())
    parts_arm = json.loads((out / "demo_cpu_joint_parts_only" / "metrics.json").read_text())
    assert "pose" in pose_arm and "segmentation" not in pose_arm and "segmentation" not in pose_arm["per_stage"][0]
    assert "segmentation" in parts_arm and "pose" not in parts_arm
    # each also scored with test-time flipping, on the tasks it trained: the report tables one pass against it
    assert set(joint["flip"]) == {"segmentation", "pose"} and set(pose_arm["flip"]) == {"pose"}
    assert set(parts_arm["flip"]) == {"segmentation"} and set(fcn["flip"]) == {"segmentation"}
    assert "## With test-time flipping (%)" in report and "| joint net, parts masked |" in report.split("flipping")[1]
    flipped = tmp_path / f"flipped{jobs}.json"  # the flip scores: what `posepart evaluate --flip` gives its checkpoint
    assert main(["evaluate", "--checkpoint", str(out / "demo_cpu_joint" / "checkpoints" / "last.ckpt"), "--data",
                 str(out / "data" / "val"), "--flip", "--out", str(flipped)]) == 0
    cli = json.loads(flipped.read_text())
    assert cli["input_size"] == 64  # recorded: the checkpoint's own unless --input-size says otherwise
    assert cli["pose"]["ap"] == joint["flip"]["pose"]["ap"] and cli["pose"]["pckh"] == joint["flip"]["pose"]["pckh"]
    assert cli["segmentation"]["mean_iou"] == joint["flip"]["segmentation"]["mean_iou"]
    masked = (out / "demo_cpu_joint_pose_only" / "config.yaml").read_text()
    assert "tasks:" in masked and "- pose" in masked and "- parts" not in masked
    # the oracle row is `posepart evaluate --oracle` with the targets it records (before: the CLI could not take the
    # demo's scaled sigma and PAF width, so the row could not be reproduced)
    oracle = json.loads((out / "oracle_metrics.json").read_text())
    drew = oracle["targets"]
    assert drew == {"input_size": 64, "pose_stride": 4, "sigma": 3.0, "paf_width": 2.0}
    again = tmp_path / f"oracle{jobs}.json"
    assert main(["evaluate", "--oracle", "--data", str(out / "data" / "val"), "--input-size", "64", "--stride", "4",
                 "--sigma", "3", "--paf-width", "2", "--out", str(again)]) == 0
    assert json.loads(again.read_text()) == oracle
    # the demo's models' metrics are evaluate's, schema included: `posepart compare` puts them side by side
    assert main(["compare", *(str(out / name) for name in FOLDERS), "--out", str(tmp_path / f"compared{jobs}")]) == 0
    report = (tmp_path / f"compared{jobs}" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in FOLDERS)


def test_a_runs_csv_logs_come_in_launch_order(tmp_path):
    """The demo's and the study's curves read a run's newest log. Sorted by name, as they were, a run resumed ten
    times has version_9 after version_10."""
    from posepart.engine.run_folder import csv_logs

    for version in (0, 1, 2, 9, 10, 11):
        log = tmp_path / "csv" / f"version_{version}" / "metrics.csv"
        log.parent.mkdir(parents=True)
        log.write_text("epoch,step\n")
    assert [log.parent.name for log in csv_logs(tmp_path)] == [f"version_{v}" for v in (0, 1, 2, 9, 10, 11)]
    assert sorted((tmp_path / "csv").glob("version_*/metrics.csv"))[-1].parent.name == "version_9"  # by name


def test_progress_of_a_worker_is_read_from_its_log(tmp_path):
    """The parent's progress line counts the last step a worker's CSV log holds, ignoring a previous run's log."""
    from posepart.jobs import _steps_logged

    log = tmp_path / "run" / "csv" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,train/loss\n0,9,1.5\n0,19,1.2\n")
    assert _steps_logged(tmp_path / "run", since=0.0) == 20  # steps are 0-based: step 19 is the 20th
    assert _steps_logged(tmp_path / "run", since=time.time() + 60) == 0  # older than this demo: not its progress
    os.utime(log, (0, 0))  # a log last written at the epoch: any `since` after it leaves it out
    assert _steps_logged(tmp_path / "run", since=1.0) == 0 and _steps_logged(tmp_path / "run", since=0.0) == 20
    assert _steps_logged(tmp_path / "nothing", since=0.0) == 0
    from posepart.jobs import TrainJob

    # the progress line's total: each job's steps at the batch size its --set gives (before: the shipped config's,
    # so `study --set data.batch_size=4` showed half the steps it trained)
    assert TrainJob(tmp_path, "demo_cpu_joint", extra=("data.batch_size=4",)).steps(40) == 10
    assert TrainJob(tmp_path, "demo_cpu_joint", images=16).steps(40) == 2  # its own budget, at the config's 8


@pytest.mark.parametrize("workers", ["data", "jobs"])
def test_a_ctrl_c_while_the_demos_workers_start_stops_it_without_tracebacks(tmp_path, workers):
    """Ctrl-C to `posepart demo --jobs 2` while its worker processes start (those that write the synthetic data,
    forked, or the training jobs, spawned: they import posepart for a second or two) stops it as a later one does:
    exit 130, "interrupted", nothing trained. Before: each worker died of it, printing a KeyboardInterrupt
    traceback; they now start with SIGINT and SIGTERM blocked until they ignore them."""
    import signal
    import subprocess
    import sys

    from cli_helpers import child_processes

    command = [sys.executable, "-m", "posepart.cli", "demo", "--out", str(tmp_path / "demo"), "--jobs", "2",
               "--size", "64", "--n-val", "4", "--n-train", "8", "--train-images", "800"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)

    def started() -> int:  # the demo's children of that kind (forked ones run the demo's own command line)
        return sum((b"spawn_main" in line) == (workers == "jobs") for line in child_processes(process.pid).values())

    try:
        deadline = time.monotonic() + 120
        while started() < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal sends it: to every process of the group
        err = process.communicate(timeout=120)[1]
    finally:
        for pid in subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and err.strip().endswith("interrupted"), err[-3000:]
    assert not list((tmp_path / "demo").glob("*/checkpoints/last.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM"])
def test_a_signal_to_a_parallel_demo_stops_every_model_it_trains(tmp_path, sent):
    """Ctrl-C or SIGTERM to `posepart demo --jobs 2` and its workers (a terminal, Slurm: the process group) stops the
    models in training at a step's end, saved, starts none of the others, and exits 128 + the signal with no process
    left. Before: the stopped models' workers each took the next model and trained it in full (Ctrl-C), or the
    demo died at once leaving its workers training as orphans (SIGTERM)."""
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "posepart.cli", "demo", "--out", str(tmp_path / "demo"), "--jobs", "2",
               "--size", "64", "--n-val", "8", "--n-train", "32", "--train-images", "1600"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline and not list(
            (tmp_path / "demo").glob("*/checkpoints/last.ckpt")):
        time.sleep(0.05)
    os.killpg(process.pid, getattr(signal, sent))
    signalled = time.time()
    try:
        err = process.communicate(timeout=120)[1]
        for _ in range(50):  # multiprocessing's resource tracker ends when it sees the demo gone
            left = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(process.pid)], capture_output=True,
                                  text=True).stdout.splitlines()
            if not left:
                break
            time.sleep(0.1)
    finally:
        for pid in subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
    assert process.returncode == 128 + getattr(signal, sent), err[-2000:]
    assert not left and err.strip().endswith("interrupted")
    started = [score.parent for score in (tmp_path / "demo").glob("*/score.json")]
    assert 1 <= len(started) <= 2  # the two in training; none started after the signal
    for run in started:  # (a rare failure in a full suite, not reproduced since: the message says what happened)
        assert "metrics" not in json.loads((run / "score.json").read_text()), (  # stopped, to be continued
            f"{run.name} was scored {(run / 'score.json').stat().st_mtime - signalled:+.1f} s after the signal; "
            f"its log: {(run / 'train.log').read_text(errors='replace')[-1500:]}")
        from posepart.engine.checkpoint import load_checkpoint

        assert 0 < load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] < 200
