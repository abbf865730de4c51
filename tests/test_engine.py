"""The training engine: loss goes down, exact resume, safe checkpoint loading, NaN stop, DDP, config errors, export."""

from __future__ import annotations

import copy
import csv
import gc
import datetime
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from posepart import cli
from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.synth import write_synth
from posepart.engine.builders import build_from_config
from posepart.engine.checkpoint import CheckpointError, load_checkpoint, load_model
from posepart.engine.config import (ConfigError, check_trainable, config_from_dict, load_config,
                                    warn_unused_model_options)
from posepart.engine.data import PosePartDataModule
from posepart.engine.sampling import EpochSampler
from posepart.engine.module import PosePartModule
from posepart.engine.train import TrainResult, train
from posepart.engine.trainer import AtomicCheckpointIO, RunCheckpoint
from posepart.files import code_digest
from posepart.errors import PosepartWarning, UsageError
from posepart.evaluate import metric_names
from posepart.losses import PosePartLoss
from posepart.models import build_model
from posepart.schema import Schema

REPO = Path(__file__).resolve().parents[1]
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine_data")
    return {"train": write_synth(root / "train", n=8, seed=0, size=64),
            "val": write_synth(root / "val", n=4, seed=1, size=64)}


def tiny(data: dict[str, Path], *extra: str, val: bool = True):
    """Tiny joint model (width 0.125, fc_width 32, one stage) at input 64 on the synthetic data."""
    overrides = [
        "model.name=joint_vgg16", "model.stages=1", "model.width=0.125", "model.fc_width=32",
        f"data.train={data['train']}", "data.input_size=64", "data.batch_size=4", "data.workers=0",
        "optim.lr=0.01", "optim.schedule=cosine", "optim.warmup_steps=1",
        "train.max_epochs=2", "train.accelerator=cpu", "train.devices=1", "train.log_every_steps=1",
    ]
    if val:
        overrides.append(f"data.val={data['val']}")
    return load_config(None, overrides + list(extra))


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    """Two epochs uninterrupted (with validation after each)."""
    out = tmp_path_factory.mktemp("straight")
    return train(tiny(data), out, **QUIET)


class BatchSizes(pl.Callback):
    """The batch sizes a run trained on."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.add(int(batch["image"].shape[0]))


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class _AtStep(pl.Callback):
    """Calls `act()` at the end of training step `step`."""

    def __init__(self, step: int, act: Any) -> None:
        self.step, self.act = step, act

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.act()


def test_a_run_folder_gone_or_full_in_training_is_one_error_naming_what_is_left(data, tmp_path, capfd):
    """The run folder deleted (or moved) while training, or its disk full where Lightning's loggers write: one
    OutputError (the CLI's error line, exit 2) saying so and what is left. Before (a walkthrough): the loggers'
    FileNotFoundError tracebacks, TensorBoard's writer thread's own, and for a full disk "cannot write the output"."""
    import errno
    import threading

    from posepart.engine.train import _quiet_writer_threads
    from posepart.errors import OutputError

    out = tmp_path / "gone"
    cfg = tiny(data, "train.max_epochs=30")
    with pytest.raises(OutputError, match=f"{out}: the run folder was moved or deleted while training"):
        train(cfg, out, callbacks=[_AtStep(5, lambda: shutil.rmtree(out))], **QUIET)

    def full() -> None:  # as Lightning's CSV logger meets it (its f.write names no file)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "full"
    with pytest.raises(OutputError, match=f"cannot write into the run folder {out}: No space left on device; its last "
                                          f"checkpoint, {out / 'checkpoints' / 'last.ckpt'}, is kept"):
        train(cfg, out, callbacks=[_AtStep(5, full)], **QUIET)

    class _AsyncWriterThread(threading.Thread):  # TensorBoard's writer thread, by its name
        def run(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    capfd.readouterr()
    with _quiet_writer_threads():
        writer = _AsyncWriterThread()
        writer.start()
        writer.join()
    assert "Traceback" not in capfd.readouterr().err


def test_the_progress_bar_redraws_rarely_into_a_file(data, tmp_path, monkeypatch):
    """Lightning's bar redraws at every step; into a file (nohup, Slurm, a CI log) each redraw is a line's worth of
    bytes: 1.7 MB for 6,000 steps (a walkthrough). On a terminal it still redraws at every step."""
    import io
    import sys

    from posepart.engine.trainer import LOGGED_BAR_EVERY, build_trainer

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def bar_steps() -> int:
        return build_trainer(tiny(data), tmp_path, has_val=False, monitor=None).progress_bar_callback.refresh_rate

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert bar_steps() == LOGGED_BAR_EVERY == 100
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert bar_steps() == 1
    assert build_trainer(tiny(data), tmp_path, has_val=False, monitor=None,
                         enable_progress_bar=False).progress_bar_callback is None


def test_broken_validation_images_are_counted_in_val_skipped(data, tmp_path, caplog):
    """A validation image that cannot be read is replaced by the next (as a training one is) and counted in
    val/skipped, which the log names. Before (a walkthrough): the log said "counted in train/skipped", nothing
    counted it, and best.ckpt compared validations over other sets of images without a word."""
    import logging

    val = tmp_path / "val"
    shutil.copytree(data["val"], val)
    broken = sorted((val / "images").iterdir())[1]
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated JPEG
    cfg = tiny(data, f"data.val={val}", "train.max_epochs=1")
    with caplog.at_level(logging.WARNING):
        result = train(cfg, tmp_path / "run", **QUIET)
    assert result.metrics["val/skipped"] == 1 and result.metrics["train/skipped"] == 0
    assert f"counted in val/skipped): {broken}" in caplog.text


def test_training_reduces_loss_on_a_repeated_batch(data, tmp_path):
    # No augmentation and one batch of all 8 images per epoch: every step sees the same batch.
    cfg = tiny(data, "data.augment.scale_min=1.0", "data.augment.scale_max=1.0", "data.augment.rotate_deg=0",
               "data.augment.flip_prob=0", "data.augment.center_jitter=0", "data.augment.photometric=false",
               "data.batch_size=8", "optim.name=adamw", "optim.lr=0.001", "optim.schedule=constant",
               "optim.warmup_steps=0", "train.max_epochs=8", val=False)
    recorder = LossRecorder()
    result = train(cfg, tmp_path, callbacks=[recorder], **QUIET)
    assert len(recorder.losses) == 8 and result.global_step == 8
    assert recorder.losses[-1] < 0.8 * recorder.losses[0], recorder.losses
    assert result.last is not None and result.last.name == "last.ckpt" and result.best is None
    logged = result.metrics
    for key in ("train/total", "train/seg", "train/heatmap/stage1", "train/paf/stage1", "train/lr",
                "train/images_per_sec", "train/skipped"):
        assert key in logged, key
    assert logged["train/skipped"] == 0
    assert (tmp_path / "config.yaml").is_file()
    assert load_config(tmp_path / "config.yaml").to_dict() == cfg.to_dict()  # the resolved config round-trips


def test_compiled_training_saves_plain_weights(data, tmp_path):
    """train.compile: the step runs through torch.compile (inductor), validation still scores the model (its decoding
    is not traced: dynamo failed on it), and the checkpoint holds the model's own keys, loadable into an uncompiled
    model."""
    from torch._dynamo.utils import counters

    cfg = tiny(data, "train.compile=true", "train.max_epochs=1", "data.augment.photometric=false")
    counters.clear()
    result = train(cfg, tmp_path, **QUIET)
    assert counters["stats"]["unique_graphs"] > 0  # the forward really went through the compiler
    assert result.global_step == 2 and math.isfinite(result.metrics["train/total"])
    assert 0 <= result.metrics["val/pose/ap"] <= 1 and math.isfinite(result.metrics["val/total"])
    state = torch.load(result.last, map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    loaded = load_model(result.last)
    assert set(loaded.model.state_dict()) == {k.removeprefix("model.") for k in state if k.startswith("model.")}


def test_learnable_task_weights_have_their_own_learning_rate(data):
    """loss.weighting_lr: the uncertainty weights are a second parameter group at that LR without weight decay. With
    AdamW the first step moves every parameter by lr * sign(gradient), so each log variance moves by exactly 0.5."""
    cfg = tiny(data, "loss.weighting=uncertainty", "loss.weighting_lr=0.5", "optim.name=adamw", "optim.lr=0.001",
               "optim.weight_decay=0.1", "optim.schedule=constant", "optim.warmup_steps=0")
    module = PosePartModule(cfg, PosePartDataset.open(data["train"]).schema)
    optimizer = module.configure_optimizers()["optimizer"]
    model_group, weight_group = optimizer.param_groups
    log_vars = module.loss_fn.weighting.log_vars
    assert [id(p) for p in weight_group["params"]] == [id(log_vars)]
    assert weight_group["lr"] == 0.5 and weight_group["weight_decay"] == 0.0
    assert model_group["lr"] == 0.001 and model_group["weight_decay"] == 0.1
    assert sum(p.numel() for p in model_group["params"]) == sum(p.numel() for p in module.model.parameters())
    before = log_vars.detach().clone()
    log_vars.grad = torch.tensor([2.0, -3.0, 0.5])
    optimizer.step()
    torch.testing.assert_close(log_vars.detach() - before, torch.tensor([-0.5, 0.5, -0.5]), atol=1e-6, rtol=0)


def test_model_init_starts_a_run_from_a_posepart_models_weights(data, straight_run, tmp_path):
    """Fine-tuning: before, no setting started a run from a trained posepart model (`model.pretrained` takes VGG16's
    ImageNet weights alone). Every tensor that means the same is taken, from a .ckpt or an exported .safetensors;
    the rest keep their initialisation, named in a warning; a resume does not read the file again."""
    trained = {k.removeprefix("model."): v for k, v in load_checkpoint(straight_run.last)["state_dict"].items()
               if k.startswith("model.")}
    exported = tmp_path / "m.safetensors"
    assert cli.main(["export-weights", "--checkpoint", str(straight_run.last), "--out", str(exported)]) == 0
    for source in (straight_run.last, exported):
        module = PosePartModule(tiny(data, f"model.init={source}"), Schema.pascal_person_part())
        state = module.model.state_dict()
        assert state.keys() == trained.keys()
        for key, value in state.items():
            torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
        # the heads it gave count as trained (a run on pose-only data still scores and draws the parts it has)
        assert module.sources[-1]["name"] == "model.init" and module.sources[-1]["tasks"] == ["pose", "parts"]
    with pytest.warns(PosepartWarning, match="tensors keep their initialisation .* and .* of the file's .* are not "
                                             r"used.*; its model differs in model.stages=1 \(this run: 2\)"):
        two = PosePartModule(tiny(data, f"model.init={exported}", "model.stages=2"), Schema.pascal_person_part())
    state = two.model.state_dict()
    torch.testing.assert_close(state["trunk.features.0.weight"], trained["trunk.features.0.weight"], rtol=0, atol=0)
    assert not any(torch.equal(value, trained.get(key, torch.empty(0))) for key, value in state.items()
                   if ".stages.1." in key and value.is_floating_point() and value.numel() > 1)
    for other, words in ((("model.width=0.25", "model.fc_width=64"), "its trunk does not fit this model's"),
                         (("model.batch_norm=true",), "its trunk does not fit this model's")):
        with pytest.raises(ConfigError, match=words):  # another width; BatchNorm (its layers shifted)
            PosePartModule(tiny(data, f"model.init={exported}", *other), Schema.pascal_person_part())
    run = train(tiny(data, f"model.init={exported}"), tmp_path / "tuned", max_epochs=1, **QUIET)
    exported.unlink()  # a resume restores its own state: the file is not read again, its record is kept
    with pytest.warns(PosepartWarning, match="model.init=.* is not used: the run continues with the checkpoint's"):
        resumed = train(tiny(data, f"model.init={tmp_path / 'other.ckpt'}"), tmp_path / "tuned", resume=run.last,
                        **QUIET)
    assert resumed.global_step == 4
    recorded = load_checkpoint(resumed.last)["posepart"]
    assert recorded["config"]["model"]["init"] == str(exported)
    assert [s["tasks"] for s in recorded["sources"] if s.get("init")] == [["pose", "parts"]]
    from posepart.report import training_data_lines

    lines = training_data_lines(recorded["sources"])  # the report names the file that taught the heads
    assert any(line.startswith("- part segmentation:") and f"model.init ({exported})" in line for line in lines), lines
    assert f"| model.init ({exported}) | pose, parts | – | – | – | – | – |" in lines
    with pytest.raises(ConfigError, match="model.init .*nope.ckpt: no such file"):
        train(tiny(data, f"model.init={tmp_path / 'nope.ckpt'}"), tmp_path / "none", **QUIET)
    # in place: one process reads the file before --overwrite removes the run; DDP workers would read it after
    again = train(tiny(data, f"model.init={run.last}"), tmp_path / "tuned", max_epochs=1, overwrite=True, **QUIET)
    assert again.global_step == 2
    with pytest.raises(ConfigError, match="lies in the run that --overwrite replaces"):
        train(tiny(data, f"model.init={again.last}", "train.devices=2"), tmp_path / "tuned", overwrite=True, **QUIET)


def test_model_init_from_another_schema_takes_the_trunk_alone(data, straight_run, tmp_path):
    """Joints of another order (the same count) gave the heads another joint's channels without a word (a
    walkthrough): in another schema the trunk alone is taken, and no head counts as trained by the file."""
    schema = Schema.pascal_person_part()
    shuffled = Schema(keypoints=tuple(reversed(schema.keypoints)), skeleton=tuple(
        (len(schema.keypoints) - 1 - a, len(schema.keypoints) - 1 - b) for a, b in schema.skeleton),
        part_classes=schema.part_classes, name="reversed")
    trained = {k.removeprefix("model."): v for k, v in load_checkpoint(straight_run.last)["state_dict"].items()
               if k.startswith("model.")}
    with pytest.warns(PosepartWarning, match="is not the run's .*: the trunk alone is taken"):
        module = PosePartModule(tiny(data, f"model.init={straight_run.last}"), shuffled)
    state = module.model.state_dict()
    for key, value in state.items():
        if key.startswith("trunk."):
            torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
        elif value.is_floating_point() and value.numel() > 1 and key in trained and value.shape == trained[key].shape:
            assert not torch.equal(value, trained[key]), key
    assert module.sources[-1]["tasks"] == []


def test_model_init_under_another_activation_or_pool_is_warned_of(data, straight_run):
    """Every tensor fits whatever the activation or the pools (a walkthrough: SiLU-trained weights fine-tuned under
    ReLU began at 0.70 mean IU instead of 0.90, without a word); the layers without weights are compared too."""
    trained = load_config(straight_run.out / "config.yaml").model
    layer = {"relu": "ReLU", "silu": "SiLU", "max": "MaxPool2d", "blur": "MaxBlurPool"}
    for key, kinds in (("activation", ("relu", "silu")), ("pool", ("max", "blur"))):
        own = getattr(trained, key)
        other = kinds[1] if own == kinds[0] else kinds[0]
        with pytest.warns(PosepartWarning, match=f"its trunk computes with {layer[own]} where this model's has "
                                                 f"{layer[other]} \\(model.activation or model.pool\\?\\)"):
            PosePartModule(tiny(data, f"model.init={straight_run.last}", f"model.{key}={other}"),
                           Schema.pascal_person_part())
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosepartWarning)
        PosePartModule(tiny(data, f"model.init={straight_run.last}"), Schema.pascal_person_part())


def test_a_checkpoint_records_what_made_it(straight_run, tmp_path, capsys):
    """Before: only the config; the weights also depend on the code's and libraries' versions, the threads and
    the precision actually run (`auto` resolved), none of them recorded (a walkthrough)."""
    import lightning
    import numpy


    entry = load_checkpoint(straight_run.last)["posepart"]
    assert entry["format"] == "posepart-checkpoint-v1"  # its layout's version: a later one is refused as such
    made = entry["provenance"]
    assert made["torch"] == torch.__version__ and made["lightning"] == lightning.__version__
    assert made["numpy"] == numpy.__version__ and made["code"] == code_digest() and len(made["code"]) == 40
    assert made["precision"] in ("32-true", "bf16-mixed") and made["threads"] == torch.get_num_threads()
    assert isinstance(made["command"], list) and made["cwd"] == os.getcwd()
    import albumentations
    import cv2  # and what the reproducibility review found missing: the image warps' libraries, the instruction set

    assert made["opencv"] == cv2.__version__ and made["albumentations"] == albumentations.__version__
    assert made["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability() and made["cpu"]["capability"]
    assert made["cpu"]["bf16"] in (True, False)
    assert made["cpu"]["onednn_max_isa"] == os.environ.get("ONEDNN_MAX_CPU_ISA")
    code = ("import sys; from posepart.engine.checkpoint import provenance; made = provenance(None); "  # a review:
            "print('albumentations' in sys.modules, made['albumentations'])")  # importing it asks PyPI (offline: a
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # warning)
    assert probe.stdout.split() == ["False", albumentations.__version__], probe.stderr
    from posepart.engine.checkpoint import provenance

    with pytest.MonkeyPatch.context() as patch:  # a launcher's own argv (a Path, a number): stored as strings, so
        patch.setattr(sys, "argv", ["launch.py", Path("/data"), 3])  # the checkpoint stays weights-only loadable
        assert provenance(None)["command"] == ["launch.py", "/data", "3"]
    # a verb run from Python (a notebook walkthrough: the kernel's launcher was recorded, not the verb)
    out = tmp_path / "from_python"
    argv = ["train", "--config", str(straight_run.out / "config.yaml"), "--out", str(out), "--set", "train.max_steps=1"]
    assert cli.main(argv) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["posepart"]["provenance"]["command"] == ["posepart", *argv]
    assert provenance(None)["command"] == [str(arg) for arg in sys.argv]  # the process's own again
    exported = tmp_path / "m.safetensors"
    assert cli.main(["export-weights", "--checkpoint", str(straight_run.last), "--out", str(exported)]) == 0
    from safetensors import safe_open

    with safe_open(str(exported), "pt") as f:
        assert json.loads(f.metadata()["provenance"]) == made
    assert cli.main(["train", "--config", "demo_cpu_joint", "--set", "train.seed=-1", "--print-config"]) == 2
    assert "seed: must be in 0..4294967295, got -1" in capsys.readouterr().err  # before: Lightning's traceback


def test_a_runs_cpu_threads_are_set_recorded_and_restored(data, tmp_path, capsys):
    """Before, `posepart train` had no way to set its CPU threads but OMP_NUM_THREADS, though a CPU run's numbers
    depend on the count: `--threads N` sets train.threads, the run trains on N (the checkpoint records it) and a
    process that trains from Python keeps its own setting afterwards."""
    assert cli.main(["train", "--config", "demo_cpu_joint", "--threads", "3", "--print-config"]) == 0
    assert "  threads: 3\n" in capsys.readouterr().out
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = train(tiny(data, "train.threads=1", "train.max_epochs=1"), tmp_path, **QUIET)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert load_checkpoint(result.last)["posepart"]["provenance"]["threads"] == 1
    assert load_config(tmp_path / "config.yaml").train.threads == 1


@pytest.mark.parametrize("given", [None, "3"])
def test_a_runs_threads_are_omp_num_threads_too_and_restored(monkeypatch, given):
    """Lightning's DDP launch sets torch's threads to cores / processes where OMP_NUM_THREADS is unset: a DDP run
    trained on 2 threads and recorded them, where train.threads said 1 (a review)."""
    from posepart.engine.train import intra_op_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if given is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", given)
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == before and os.environ.get("OMP_NUM_THREADS") == given
    with intra_op_threads(None):  # torch's default: nothing set
        assert os.environ.get("OMP_NUM_THREADS") == given


def test_evaluate_takes_its_cpu_threads_as_predict_does(data, straight_run, tmp_path):
    """Before, `posepart evaluate` had no --threads (predict had): the same metrics on the threads asked for."""
    before = torch.get_num_threads()
    try:
        for threads, out in (([], "all.json"), (["--threads", "1"], "one.json")):
            assert cli.main(["evaluate", "--checkpoint", str(straight_run.last), "--data", str(data["val"]),
                             "--out", str(tmp_path / out), *threads]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    scores = [json.loads((tmp_path / out).read_text()) for out in ("all.json", "one.json")]
    assert scores[0]["pose"] == scores[1]["pose"] and scores[0]["segmentation"] == scores[1]["segmentation"]


def test_data_that_names_some_of_the_models_joints_otherwise_is_said_to_score_the_others_only(data, straight_run,
                                                                                                  tmp_path, capsys):
    """A validation or evaluation dataset whose joints are named otherwise than the model's (another tool's
    spelling) is read in the model's schema by name; the joints no name matches were left unscored without a word,
    and its OKS AP looked better than the model is (a custom-data walkthrough: 0.86 against 0.51)."""
    renamed = tmp_path / "renamed"
    shutil.copytree(data["val"], renamed)
    coco = json.loads((renamed / "annotations.json").read_text())
    coco["categories"][0]["keypoints"] = [{"head": "crown", "neck": "throat"}.get(name, name)
                                          for name in coco["categories"][0]["keypoints"]]
    (renamed / "annotations.json").write_text(json.dumps(coco))
    # (its neck is read as the shoulders' midpoint, as a COCO-style dataset's is; its throat is then not read)
    words = ("no joint of it is named as the model's head (1 of its 14 joints), so OKS and PCKh score the other 13 "
             "only; its own crown, throat are not read (if they are the same joints, named otherwise, name them as "
             "the model's in categories[0].keypoints)")
    assert cli.main(["evaluate", "--checkpoint", str(straight_run.last), "--data", str(renamed)]) == 0
    assert f"note: {renamed}: {words}" in capsys.readouterr().err
    assert cli.main(["evaluate", "--checkpoint", str(straight_run.last), "--source", f"r={renamed}"]) == 0
    assert f"note: --source r: {words}" in capsys.readouterr().err  # a review: --data alone said it
    with pytest.warns(PosepartWarning, match=re.escape(f"data.val ({renamed / 'annotations.json'}): {words}")):
        train(tiny(data, f"data.val={renamed}", "train.max_epochs=1"), tmp_path / "run", **QUIET)
    mixed = f"data.sources=[{{name: s, train: {data['train']}, val: {renamed}}}]"  # a mixing plan: a line of its
    with warnings.catch_warnings():  # summary, not a warning (the built-in COCO-into-PASCAL plan lacks a head on
        warnings.simplefilter("error", PosepartWarning)  # purpose)
        train(tiny(data, "data.train=null", mixed, "train.max_epochs=1", val=False), tmp_path / "mixed", **QUIET)


def test_overlays_are_drawn_where_they_are_written(data, straight_run, tmp_path, capsys):
    """Before, every evaluate without an --out folder drew 8 overlays and then noted that it had not written them."""
    args = ["evaluate", "--checkpoint", str(straight_run.last), "--data", str(data["val"])]
    assert cli.main([*args, "--out", str(tmp_path / "m.json")]) == 0
    assert "note: overlays" not in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "m.json"), "--overlays", "2"]) == 0  # asked for: said why not
    assert "note: overlays are written only when --out is a folder" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "folder")]) == 0  # a folder: the default 8, or all 4 there are
    assert "and 4 overlays" in capsys.readouterr().err and (tmp_path / "folder" / "overlays" / "003.png").is_file()


def test_a_dataset_whose_part_classes_do_not_map_is_scored_on_its_pose(data, straight_run, tmp_path, capsys,
                                                                       monkeypatch):
    """A pose dataset whose part maps are in classes of its own: before, evaluate refused it ("has no target
    class"), so the model's pose could not be scored on it at all (a part-segmentation walkthrough). Each source is
    read in the model's schema once (before: twice for --source, once for its notes and once to score it)."""
    import posepart.data.mixing as mixing

    mapped, read = [], mixing.map_dataset
    monkeypatch.setattr(mixing, "map_dataset", lambda *a, **k: mapped.append(k.get("name")) or read(*a, **k))
    other = tmp_path / "other"
    shutil.copytree(data["val"], other)
    coco = json.loads((other / "annotations.json").read_text())
    coco["categories"][0]["part_classes"] = ["background", *(f"blob{i}" for i in range(6))]
    (other / "annotations.json").write_text(json.dumps(coco))
    for where in (["--data", str(other)], ["--source", f"o={other}"]):
        assert cli.main(["evaluate", "--checkpoint", str(straight_run.last), *where, "--out",
                         str(tmp_path / "m.json")]) == 0
        assert capsys.readouterr().err.count("part class 'blob0' has no target class") == 1  # once, --source too
        assert len(mapped) == 1
        mapped.clear()
        scored = json.loads((tmp_path / "m.json").read_text())
        scored = scored["sources"]["o"] if "sources" in scored else scored
        assert "pose" in scored and "segmentation" not in scored


def test_a_coco_file_given_as_a_runs_dataset_root_is_answered_with_trains_own_keys(data, tmp_path, capsys):
    """`--train x.json`, or a Roboflow folder (images beside `_annotations.coco.json`): the error named evaluate's
    `--annotations FILE --images DIR`, which train refuses as unrecognised arguments (a custom-data walkthrough)."""
    roboflow = tmp_path / "train"
    shutil.copytree(data["train"] / "images", roboflow)
    shutil.copy(data["train"] / "annotations.json", roboflow / "_annotations.coco.json")
    file = data["train"] / "annotations.json"
    for given, words in ((file, f"a COCO file, not a dataset root: give the file and its image folder as --set "
                                f"data.train.annotations={file} --set data.train.images=IMAGES"),
                         (roboflow, f"images beside a COCO file (_annotations.coco.json), not a dataset root: give "
                                    f"the file and its image folder as --set data.train.annotations="
                                    f"{roboflow / '_annotations.coco.json'} --set data.train.images={roboflow}")):
        assert cli.main(["train", "--config", "demo_cpu_paf", "--train", str(given), "--out", str(tmp_path / "r")]) == 2
        assert f"error: data.train ({given}): {words}" in capsys.readouterr().err
    assert cli.main(["train", "--config", "demo_cpu_paf", "--set", f"data.train.annotations={roboflow}/_annotations."
                     f"coco.json", "--set", f"data.train.images={roboflow}", "--set", "data.input_size=64", "--set",
                     "train.max_steps=1", "--out", str(tmp_path / "r")]) == 0  # as it said
    # a file with part classes, given with its images but not its part folder (a walkthrough: the form this error
    # advised; before, trained on its pose alone, unsaid, where evaluate and inspect said so)
    given = ["--set", f"data.train.annotations={file}", "--set", f"data.train.images={data['train'] / 'images'}",
             "--set", "data.input_size=64", "--set", "train.max_steps=1", "--set", "train.best_metric=val/total"]
    assert cli.main(["train", "--config", "demo_cpu_joint", *given, "--out", str(tmp_path / "p")]) == 0
    assert (f"data.train: {file} lists part classes, but no part maps are read without data.train.parts=DIR "
            f"({data['train'] / 'parts'}?)") in capsys.readouterr().err
    parts = ["--set", f"data.train.parts={data['train'] / 'parts'}"]
    assert cli.main(["train", "--config", "demo_cpu_joint", *given, *parts, "--out", str(tmp_path / "q")]) == 0
    assert "no part maps are read" not in capsys.readouterr().err
    # not where parts are not wanted: a source that trains pose alone (a review)
    source = {"name": "p", "train": {"annotations": str(file), "images": str(data["train"] / "images")},
              "tasks": ["pose"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PosePartDataModule(load_config(None, [f"data.sources={json.dumps([source])}", "data.input_size=64"]))
    assert not [w for w in caught if "no part maps are read" in str(w.message)]


def test_resume_continues_exactly(data, straight_run, tmp_path):
    cfg = tiny(data)
    first = train(cfg, tmp_path, max_epochs=1, **QUIET)  # the same run, cut after epoch 1
    assert first.global_step == 2
    resumed = train(cfg, tmp_path, resume=first.last, **QUIET)
    a, b = load_checkpoint(straight_run.last), load_checkpoint(resumed.last)
    assert a["global_step"] == b["global_step"] == 4 and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)
    momentum_a = a["optimizer_states"][0]["state"]
    momentum_b = b["optimizer_states"][0]["state"]
    for i in momentum_a:
        torch.testing.assert_close(momentum_a[i]["momentum_buffer"], momentum_b[i]["momentum_buffer"], rtol=0,
                                   atol=0)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    # validation metrics were computed and the best checkpoint follows val/seg/mean_iou
    assert "val/seg/mean_iou" in straight_run.metrics and "val/pose/ap" in straight_run.metrics
    assert straight_run.best is not None and straight_run.best.name == "best.ckpt"


def test_best_metric_is_one_validation_logs_and_a_typo_is_refused_before_training(data, straight_run, tmp_path):
    """`metric_names` holds every seg / pose metric the straight run logged. Before, a mistyped best_metric trained
    a whole epoch and then failed in Lightning's ModelCheckpoint with a traceback."""
    logged = {key.removeprefix("val/") for key in straight_run.metrics
              if key.startswith(("val/seg/", "val/pose/")) and "/stage" not in key}  # stage: a loss term
    assert "seg/mean_iou" in logged and "pose/pckh/neck" in logged
    assert logged <= metric_names(Schema.pascal_person_part())
    assert "pose/pckh/neck" in metric_names(Schema.pascal_person_part()) and not any(  # a table, not a metric
        "per_joint" in name for name in metric_names(Schema.pascal_person_part()))
    for typo in ("val/seg/mean_iuo", "val/seg/iou/torsoo", "val/pose/apx"):
        with pytest.raises(ConfigError, match=f"'{typo}': validation logs no such metric"):
            train(tiny(data, f"train.best_metric={typo}"), tmp_path / "run", **QUIET)
        assert not (tmp_path / "run" / "checkpoints").exists()
    # DWA's and GradNorm's val/weight/TASK: followed (before: refused as naming a source "weight")
    run = train(tiny(data, "loss.weighting=dwa", "loss.weights=null", "train.best_metric=val/weight/seg",
                     "train.best_mode=min", "train.max_epochs=1"), tmp_path / "dwa", **QUIET)
    assert run.best is not None


def test_a_run_copied_elsewhere_reports_its_own_best_checkpoint(straight_run, tmp_path):
    """Before: resumed in its new folder (here: with nothing left to train), a copied run reported the original
    folder's best.ckpt (Lightning restores the absolute path it saved)."""
    copy = tmp_path / "copy"
    shutil.copytree(straight_run.out, copy)
    resumed = train(load_config(copy / "config.yaml"), copy, resume=copy / "checkpoints" / "last.ckpt", **QUIET)
    assert resumed.best == copy / "checkpoints" / "best.ckpt" and straight_run.best.parent.parent == straight_run.out
    assert resumed.already_complete and resumed.global_step == straight_run.global_step  # nothing left to train


def test_a_copied_run_keeps_its_best_score_and_another_folder_starts_afresh(straight_run, data, tmp_path, capsys):
    """Lightning forgets the best score when the folder's path changed. Before: a run copied to another folder (or
    machine) and resumed there replaced the copy's best.ckpt at its next validation even with a worse model; resumed
    into another --out it printed Lightning's raw warning; a resume of a finished run printed "trained 2 epochs"."""
    copy = tmp_path / "copy"
    shutil.copytree(straight_run.out, copy)
    last = copy / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint{'monitor': 'val/")]
    state = checkpoint["callbacks"][key]
    unbeatable = torch.tensor(2.0)  # mean IU is at most 1: no later validation may replace this best
    state["best_model_score"] = state["kth_value"] = unbeatable
    state["best_k_models"] = {path: unbeatable for path in state["best_k_models"]}
    torch.save(checkpoint, last)
    best = (copy / "checkpoints" / "best.ckpt").read_bytes()
    with pytest.warns(PosepartWarning, match="max_epochs=3"):  # the schedule keeps its plan (warned, as before)
        resumed = train(tiny(data, "train.max_epochs=3"), copy, resume=last, **QUIET)
    assert resumed.global_step > straight_run.global_step and not resumed.already_complete
    assert (copy / "checkpoints" / "best.ckpt").read_bytes() == best  # before: replaced by the third epoch's
    other = tmp_path / "other"
    with pytest.warns(PosepartWarning) as caught:
        train(load_config(straight_run.out / "config.yaml"), other, resume=straight_run.last, **QUIET)
    said = [str(w.message) for w in caught]
    assert any(f"resumed into {other / 'checkpoints'}, another folder than the one its run saved to" in m
               for m in said)
    assert any("its run had already reached its planned end" in m for m in said)
    assert cli.main(["train", "--config", str(straight_run.out / "config.yaml"), "--resume", str(straight_run.last),
                     "--out", str(tmp_path / "third")]) == 0
    out, err = capsys.readouterr()
    assert "trained nothing: the run was complete at 2 epochs" in out and "best: none in this folder" in out
    assert "The dirpath has changed" not in err  # Lightning's, naming its private fields: replaced by the above
    # a run copied before its first validation has no best to lose: resumed in its copy, nothing to say (a review)
    early = train(tiny(data, "train.val_every_epochs=2"), tmp_path / "early", max_epochs=1, **QUIET)
    shutil.copytree(early.out, tmp_path / "early_copy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny(data, "train.val_every_epochs=2"), tmp_path / "early_copy",
              resume=tmp_path / "early_copy" / "checkpoints" / "last.ckpt", **QUIET)
    assert not [w for w in caught if "another folder" in str(w.message)]


@pytest.mark.parametrize("saved_in", [r"C:\Users\me\runs\joint\checkpoints", r"\\server\share\joint\checkpoints",
                                      "/home/me/runs/joint/checkpoints"])
def test_a_run_saved_on_another_system_is_recognised_as_a_copy(saved_in, tmp_path):
    """Before: a run saved on Windows and copied to Linux named its checkpoints `C:\\...\\best.ckpt`, one odd file
    name to a POSIX path, so its copy lost its best score (and was warned of as resumed into another folder)."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "best.ckpt").touch()
    sep = "/" if saved_in.startswith("/") else "\\"
    best = f"{saved_in}{sep}best.ckpt"
    state = {**RunCheckpoint(dirpath=folder, monitor="val/pose/ap", mode="max").state_dict(), "dirpath": saved_in,
             "best_model_path": best, "best_model_score": torch.tensor(0.5), "kth_best_model_path": best,
             "kth_value": torch.tensor(0.5), "best_k_models": {best: torch.tensor(0.5)},
             "last_model_path": f"{saved_in}{sep}last.ckpt"}
    callback = RunCheckpoint(dirpath=folder, monitor="val/pose/ap", mode="max")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.load_state_dict(state)
    assert callback.best_model_path == str(folder / "best.ckpt") and callback.best_model_score == 0.5
    assert callback.best_k_models == {str(folder / "best.ckpt"): 0.5}
    assert callback.last_model_path == str(folder / "last.ckpt")


def _resume_checkpoint_state_on_rank(rank: int, root: str, saved_in: str, folders: list[str]) -> None:
    """One rank of the test below (a forked process): its own folder (`folders[rank]`), the same state."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2,
                                         timeout=datetime.timedelta(seconds=30))  # a rank left alone fails, not hangs
    folder = Path(folders[rank])
    state = {**RunCheckpoint(dirpath=folder, monitor="val/pose/ap", mode="max").state_dict(), "dirpath": saved_in,
             "best_model_path": f"{saved_in}/best.ckpt", "best_model_score": torch.tensor(0.5),
             "kth_best_model_path": f"{saved_in}/best.ckpt", "kth_value": torch.tensor(0.5),
             "best_k_models": {f"{saved_in}/best.ckpt": torch.tensor(0.5)}}
    callback = RunCheckpoint(dirpath=folder, monitor="val/pose/ap", mode="max")
    callback.load_state_dict(state)
    torch.distributed.barrier()  # every rank ran the same collectives
    torch.distributed.destroy_process_group()
    Path(root, f"rank{rank}.json").write_text(json.dumps(
        [callback.best_model_path, None if callback.best_model_score is None else float(callback.best_model_score),
         {path: float(score) for path, score in callback.best_k_models.items()}]))


@pytest.mark.parametrize("rank1", ["copy", "its own"])
def test_every_rank_takes_rank_zeros_view_of_a_copied_run(tmp_path, rank1):
    """Multi-node DDP without a shared file system: only rank 0's disk holds the copied run's best.ckpt. Before, the
    other ranks took the folder for another run's and dropped the best score, so Lightning's top-k check skipped on
    them the all-reduce that rank 0 ran (a hang at the first validation); and a rank whose folder was the saving one
    (a relative --out read from another working folder) skipped the decision's broadcast (a review). Two gloo
    processes, one folder each."""
    saved_in = str(tmp_path / "elsewhere" / "checkpoints")
    folders = [str(tmp_path / "node0" / "checkpoints"),
               str(tmp_path / "node1" / "checkpoints") if rank1 == "copy" else saved_in]
    Path(folders[0]).mkdir(parents=True)
    Path(folders[0], "best.ckpt").touch()
    Path(folders[1]).mkdir(parents=True, exist_ok=True)  # the same run's folder on a disk without best.ckpt
    torch.multiprocessing.start_processes(_resume_checkpoint_state_on_rank, nprocs=2, start_method="fork",
                                          args=(str(tmp_path), saved_in, folders))
    for rank in (0, 1):
        best = str(Path(folders[rank], "best.ckpt"))
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [best, 0.5, {best: 0.5}], rank


def test_a_resumed_runs_checkpoints_keep_how_it_began(data, tmp_path):
    """A walkthrough: every save wrote its own launch's record alone, so a run resumed (here with other threads, as
    on another machine) forgot the command, threads and code that trained its first epochs, and said nothing of the
    change; a Python caller's Trainer options (`max_epochs=1`) were recorded nowhere."""
    first = train(tiny(data), tmp_path / "run", max_epochs=1, **QUIET)
    began = load_checkpoint(first.last)["posepart"]["provenance"]
    assert began["trainer_options"] == {"max_epochs": 1, **QUIET} and "earlier" not in began
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(PosepartWarning, match=rf"another setup than the run's last launch \(threads {threads} -> "
                                                 rf"{threads + 1}\): the run goes on, but not bit for bit"):
            resumed = train(tiny(data), tmp_path / "run", resume=first.last, **QUIET)
    finally:
        torch.set_num_threads(threads)
    record = load_checkpoint(resumed.last)["posepart"]["provenance"]
    assert record["threads"] == threads + 1 and record["trainer_options"] == QUIET
    assert record["earlier"] == [began]  # the first launch's whole record, oldest first
    fresh = load_checkpoint(train(tiny(data), tmp_path / "fresh", max_epochs=1).last)["posepart"]["provenance"]
    assert "earlier" not in fresh and fresh["trainer_options"] == {"max_epochs": 1}  # nothing of the runs before
    assert fresh["threads"] == threads and fresh["code"] == code_digest()


def test_a_joint_the_data_names_otherwise_is_warned_of_when_training(data, tmp_path):
    """A walkthrough: a typo in a data.schema file (`lft_wrist`) dropped the data's labelled left wrists and left the
    typo'd joint's output untrained, with no word from train (evaluate said so for the same data)."""
    category = Schema.pascal_person_part().to_category()
    category["keypoints"] = ["lft_wrist" if name == "left_wrist" else name for name in category["keypoints"]]
    schema = tmp_path / "typo.json"
    schema.write_text(json.dumps(category))
    expected = (r"data.train \(.*annotations.json\): no joint of it is named as the run's lft_wrist, so they are "
                r"not trained on it; its own left_wrist are not read \(the same joints, named otherwise\?")
    with pytest.warns(PosepartWarning, match=expected):
        PosePartDataModule(tiny(data, f"data.schema={schema}"))
    with warnings.catch_warnings():  # the data's own schema, named as the data names its joints: nothing to say
        warnings.simplefilter("error", PosepartWarning)
        PosePartDataModule(tiny(data, "data.schema=pascal_person_part"))

def test_a_run_given_relative_data_paths_resumes_from_another_folder(data, tmp_path, monkeypatch, capsys):
    """config.yaml and the checkpoints name the data the run read, absolute. Before, they kept the paths as given
    (relative to the folder train ran in): resumed from another folder, the run's own config.yaml named no data."""
    monkeypatch.chdir(data["train"].parent)
    out = tmp_path / "run"
    train(tiny(data, "data.train=train", "data.val=val"), out, max_epochs=1, **QUIET)  # cut after epoch 1
    saved = load_config(out / "config.yaml")
    assert saved.data.train == data["train"] and saved.data.val == data["val"]
    capsys.readouterr()
    assert cli.main(["train", "--config", str(out / "config.yaml"), "--train", "train", "--print-config"]) == 0
    assert f"train: {data['train']}\n" in capsys.readouterr().out  # what a run would write, as its help says
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["posepart"]["config"]["data"]["train"] == str(
        data["train"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = train(load_config(out / "config.yaml"), out, resume=out / "checkpoints" / "last.ckpt", **QUIET)
    assert resumed.global_step == 4


def test_train_prints_the_metric_its_best_checkpoint_follows(data, tmp_path, monkeypatch, capsys):
    """Before: the summary printed the pooled val/<task>/<metric> figures only, so a run whose best.ckpt follows a
    source's metric (val/pascal/seg/mean_iou) never showed the figure that chose it."""
    import posepart.engine.train as engine_train

    metrics = {"val/seg/mean_iou": 0.5, "val/pascal/seg/mean_iou": 0.6, "val/pascal/pose/ap": 0.1}
    result = engine_train.TrainResult(out=tmp_path, last=tmp_path / "last.ckpt", best=tmp_path / "best.ckpt",
                                      metrics=metrics, global_step=4, epochs=2)
    monkeypatch.setattr(engine_train, "train", lambda *args, **kwargs: result)
    assert cli.main(["train", "--config", "demo_cpu_joint", "--train", str(data["train"]), "--out",
                     str(tmp_path / "run"), "--set", "train.best_metric=val/pascal/seg/mean_iou"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown == {"val/pascal/seg/mean_iou": 0.6, "val/seg/mean_iou": 0.5}


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("budget, cut", [("train.max_steps=200", {"max_epochs": 1}), ("train.max_steps=-1",
                                                                                      {"max_steps": 3})])
def test_a_run_cut_at_or_inside_an_epoch_resumes_exactly(data, tmp_path, budget, cut, workers):
    """`settle_epoch`. With `train.max_steps` set, Lightning took an end-of-epoch `last.ckpt` for an epoch in progress
    with every batch done: the resumed run trained nothing (before: 3 steps of 4). A checkpoint written inside an
    epoch (--max-minutes, here max_steps=3 of 2 x 2) was taken as a finished epoch: the rest of it was never trained
    (before: the resumed run stopped at 3 steps of 4). Now both end where the straight run does, bit for bit, also
    with loader workers (before: a resumed run's workers drew epoch 0's order, which they fetch ahead of set_epoch)."""
    cfg = tiny(data, budget, f"data.workers={workers}", val=False)  # the plan: 2 epochs x 2 steps
    straight = train(cfg, tmp_path / "straight", **QUIET)
    first = train(cfg, tmp_path / "cut", **cut, **QUIET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(cfg, tmp_path / "cut", resume=first.last, **QUIET)
    assert (resumed.global_step, straight.global_step) == (4, 4)
    # Lightning's "your dataloader is not resumable ... unreliable results" on every mid-epoch resume: the resume is
    # exact (below), so the warning only misled (before: printed after --max-minutes, a signal or max_steps)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    # epochs completed, the cut one not among them (before: 2 epochs reported for 3 steps of 2 x 2)
    inside = "max_steps" in cut
    assert (first.epochs, first.inside_epoch) == (1, inside) and (resumed.epochs, resumed.inside_epoch) == (2, False)
    again = train(cfg, tmp_path / "again", **cut, **QUIET)
    again = train(cfg, tmp_path / "again", resume=again.last, **cut, **QUIET)  # nothing left to train
    assert (again.global_step, again.epochs, again.inside_epoch) == (first.global_step, 1, inside)
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


def test_a_checkpoint_of_ones_own_written_inside_an_epoch_is_said_to_resume_inexactly(data, tmp_path):
    """Lightning's own warning of a resume inside an epoch is dropped (posepart's saves resume exactly, above); one of a
    `ModelCheckpoint(every_n_train_steps=...)` of the user's does not (its epoch's draws start again from the first),
    and posepart says so (a review: before, such a resume was silent once Lightning's warning was dropped)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = tiny(data, val=False)  # 2 epochs x 2 steps
    steps = ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=1, save_top_k=-1, filename="s{step}")
    run = train(cfg, tmp_path / "cut", callbacks=[steps], **QUIET)
    for step, inexact in ((3, True), (4, False)):  # inside the second epoch; at its end
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(cfg, tmp_path / f"resumed{step}", resume=tmp_path / f"steps/s{step=}.ckpt", **QUIET)
        said = [str(w.message) for w in caught if "not by posepart's own saves" in str(w.message)]
        assert bool(said) == inexact, (step, said)
    with warnings.catch_warnings(record=True) as caught:  # its own last.ckpt: nothing to say
        warnings.simplefilter("always")
        train(cfg, tmp_path / "cut", resume=run.last, **QUIET)
    assert not [w for w in caught if "own saves" in str(w.message)]


def _logged(run: Path) -> list[tuple[int, str, float]]:
    """(step, metric, value) of every value a run's CSV logs hold, over its versions (a resume writes another),
    leaving out the wall-clock ones."""
    rows = []
    for log in sorted((run / "csv").glob("version_*/metrics.csv")):
        with open(log, newline="") as f:
            for row in csv.DictReader(f):
                rows += [(int(row["step"]), key, round(float(value), 6)) for key, value in row.items()
                         if value and key not in ("step", "epoch") and "per_sec" not in key]
    return sorted(rows)


def _validation_rows(run: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV logs that hold a validation, as written (over its versions, in launch order)."""
    from posepart.engine.run_folder import csv_logs

    rows = []
    for log in csv_logs(run):
        with open(log, newline="") as f:
            rows += [row for row in csv.DictReader(f) if row.get("val/total")]
    return rows


def test_a_resumed_run_logs_the_rows_of_the_straight_one(data, tmp_path):
    """Resumed from an end-of-epoch last.ckpt of a run that validates, Lightning counted one step too many: every
    later row was written a step late and some were lost (a walkthrough: rows at 11 and 17 held steps 8 and 14)."""
    settings = ("train.log_every_steps=1", "optim.schedule=constant", "train.max_epochs=-1")
    straight = train(tiny(data, *settings, "train.max_steps=4"), tmp_path / "straight", **QUIET)
    first = train(tiny(data, *settings, "train.max_steps=2"), tmp_path / "cut", **QUIET)  # one epoch of two
    train(tiny(data, *settings, "train.max_steps=4"), tmp_path / "cut", resume=first.last, **QUIET)
    logged = _logged(tmp_path / "straight")
    assert {step for step, _, _ in logged} == {0, 1, 2, 3} and any(key == "val/total" for _, key, _ in logged)
    assert _logged(tmp_path / "cut") == logged
    assert straight.global_step == 4


def test_muon_run_resumes_exactly(data, tmp_path):
    """`optim.name: muon` with the linear schedule (the demo's joint recipe) through the engine: the kernels'
    momentum, AdamW's moments of the other parameters and the schedule are saved and restored, so a run cut after
    epoch 1 and resumed ends where the straight run does."""
    cfg = tiny(data, "optim.name=muon", "optim.lr=0.005", "optim.schedule=linear", "loss.weighting=uncertainty",
               val=False)
    straight = train(cfg, tmp_path / "straight", **QUIET)
    first = train(cfg, tmp_path / "cut", max_epochs=1, **QUIET)
    resumed = train(cfg, tmp_path / "cut", resume=first.last, **QUIET)
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert a["global_step"] == b["global_step"] == 4
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)
    states_a, states_b = a["optimizer_states"][0], b["optimizer_states"][0]
    assert [g["muon"] for g in states_a["param_groups"]] == [True, False, False]  # kernels, biases and norms, task weights
    assert [g["lr"] for g in states_a["param_groups"]] == [g["lr"] for g in states_b["param_groups"]]
    kinds = {name for state in states_a["state"].values() for name in state}
    assert {"momentum_buffer", "exp_avg", "exp_avg_sq", "step"} <= kinds
    for i, state in states_a["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(value, states_b["state"][i][name], rtol=0, atol=0, msg=f"{i} {name}")


class WeightRecorder(pl.Callback):
    """The raw model weights after every optimizer step (registered before the averaging callback runs)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})


def test_ema_weights_are_the_hand_computed_average_and_resume_exactly(data, tmp_path):
    """train.ema_decay: the saved state_dict (what evaluate, predict and export load) is the exponential average of the
    raw weights after each step, e_1 = w_1, e_k = d e_(k-1) + (1 - d) w_k; the checkpoint keeps the raw weights, and
    a run cut after epoch 1 and resumed ends with the same average and raw weights as the straight run."""
    decay = 0.6
    cfg = tiny(data, f"train.ema_decay={decay}", val=False)
    recorder = WeightRecorder()
    straight = train(cfg, tmp_path / "straight", callbacks=[recorder], **QUIET)
    assert straight.global_step == len(recorder.steps) == 4
    checkpoint = load_checkpoint(straight.last)
    for name in recorder.steps[0]:
        expected = recorder.steps[0][name]
        for raw in recorder.steps[1:]:
            expected = decay * expected + (1 - decay) * raw[name]
        torch.testing.assert_close(checkpoint["state_dict"][f"model.{name}"], expected, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(checkpoint["current_model_state"][f"model.{name}"], recorder.steps[-1][name],
                                   rtol=0, atol=0, msg=name)
    loaded = load_model(straight.last).model.state_dict()
    for name in recorder.steps[0]:
        assert torch.equal(loaded[name], checkpoint["state_dict"][f"model.{name}"]), name
    first = train(cfg, tmp_path / "cut", max_epochs=1, **QUIET)
    resumed = load_checkpoint(train(cfg, tmp_path / "cut", resume=first.last, **QUIET).last)
    for key in ("state_dict", "current_model_state"):
        for name, value in checkpoint[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=0, atol=1e-6, msg=f"{key} {name}")


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch():
    def order(seed: int, epoch: int, world: int = 1, rank: int = 0) -> list[tuple[int, int]]:
        sampler = EpochSampler(10, seed=seed, num_replicas=world, rank=rank)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
    assert sorted(i for _, i in order(0, 3)) == list(range(10)) and {e for e, _ in order(0, 3)} == {3}
    shards = [order(0, 2, world=3, rank=r) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to equal length, like DistributedSampler
    assert {i for s in shards for _, i in s} == set(range(10))


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_without_running_code(data, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt.*refusing"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        load_model(evil)
    with pytest.raises(CheckpointError, match="evil.ckpt"):  # weights_only=False cannot be asked for
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    with pytest.raises(CheckpointError, match="evil.ckpt"):  # nor through Lightning's resume path
        train(tiny(data, val=False), tmp_path / "run", resume=evil, **QUIET)
    assert not marker.exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_lightning_tips_and_its_deprecation_noise_only_when_verbose(data, tmp_path, verbose):
    """Lightning's advertising tip and device chatter are dropped unless verbose=True (`posepart train --verbose`);
    the records are read where Lightning emits them, so the test does not depend on how pytest captures logs."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                               "lightning.fabric.utilities.rank_zero")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        train(tiny(data, "train.max_steps=1", val=False), tmp_path, verbose=verbose, **QUIET)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    noise = [m for m in seen if m.startswith(("💡 Tip:", "GPU available:"))]
    assert bool(noise) == verbose, seen
    assert all(logger.filters == [] for logger in loggers)  # nothing left installed after the run


def test_the_distributed_logging_advice_is_noise_where_every_rank_has_the_metrics():
    """A DDP walkthrough saw 45-95 of Lightning's "use sync_dist=True" warnings per run; every rank scores the
    whole validation set (gathered first), so they advise nothing. Other warnings stay."""
    import warnings

    from posepart.engine.trainer import quiet_lightning

    advice = ("It is recommended to use `self.log('val/seg/mean_iou', ..., sync_dist=True)` when logging on epoch "
              "level in distributed setting to accumulate the metric across devices.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn(advice, UserWarning)
            warnings.warn("a real warning", UserWarning)
    assert [str(w.message) for w in caught] == ["a real warning"]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_logging_interval_advice_is_noise_on_a_small_dataset(data, tmp_path, verbose):
    """A small dataset's run (2 batches an epoch, a log every 3 steps) got Lightning's "smaller than the logging
    interval" warning without --verbose (a custom-data walkthrough), though its steps are counted over the run: the
    training curve has its points."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny(data, "train.log_every_steps=3", "train.max_epochs=3", val=False), tmp_path, verbose=verbose,
              **QUIET)
    advised = [w for w in caught if "smaller than the logging interval" in str(w.message)]
    assert bool(advised) == verbose
    logged = [step for step, name, _ in _logged(tmp_path) if name == "train/total"]
    assert logged == [2, 5], logged  # every 3rd of the run's 6 steps (0-based), across its 3 epochs


def test_a_folder_holding_a_run_is_refused_resumed_or_overwritten(data, tmp_path, capsys):
    """Before: a second `train --out DIR` mixed its checkpoints and TensorBoard events into the first run's."""
    from cli_helpers import refused, run_cli

    out = tmp_path / "run"
    train(tiny(data, "train.max_epochs=1", val=False), out, **QUIET)
    last = out / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    (out / "notes.txt").write_text("mine")
    argv = ["train", "--set", "model.name=joint_vgg16", "--set", "model.stages=1", "--set", "model.width=0.125",
            "--set", "model.fc_width=32", "--set", f"data.train={data['train']}", "--set", "data.input_size=64",
            "--set", "data.batch_size=4", "--set", "train.max_epochs=1", "--out", str(out)]
    code, _, err = run_cli(["train", "--config", "demo_cpu_joint", *argv[1:]], capsys)
    assert refused(code, err) and "--resume" in err and "--overwrite" in err
    assert last.read_bytes() == before and sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]
    stale = out / "checkpoints" / "epoch=7.ckpt"  # a file of the old run that the new one would not replace
    stale.write_bytes(b"old")
    with pytest.raises(DatasetError, match="data.val"):  # before: the old run was deleted, then the launch failed
        train(tiny(data, "train.max_epochs=1", f"data.val={tmp_path / 'mistyped'}"), out, overwrite=True, **QUIET)
    assert stale.exists() and last.read_bytes() == before and (out / "config.yaml").exists()
    train(tiny(data, "train.max_epochs=1", val=False), out, overwrite=True, **QUIET)
    assert not stale.exists() and last.read_bytes() == before  # replaced (training is deterministic: same bytes)
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]
    train(tiny(data, "train.max_epochs=2", val=False), out, resume=last, **QUIET)  # a resume is a new launch
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0", "version_1"]
    assert sorted(p.name for p in (out / "csv").iterdir()) == ["version_0", "version_1"]
    failed = tmp_path / "failed"  # a launch that stopped before its first checkpoint: nothing to --resume
    failed.mkdir()
    (failed / "config.yaml").write_text("{}")
    code, _, err = run_cli(["train", "--config", "demo_cpu_joint", *argv[1:-1], str(failed)], capsys)
    assert refused(code, err) and "it saved no checkpoint to resume" in err and "--resume" not in err
    assert "--overwrite (which deletes config.yaml)" in err
    (failed / "checkpoints").mkdir()  # checkpoints, but not a last.ckpt: before, "it saved no checkpoint to resume"
    (failed / "checkpoints" / "keep.ckpt").write_bytes(b"weights")  # and --overwrite deleted them
    code, _, err = run_cli(["train", "--config", "demo_cpu_joint", *argv[1:-1], str(failed)], capsys)
    assert refused(code, err) and "it holds keep.ckpt but no last.ckpt: resume one with --resume FILE" in err
    assert "--overwrite (which deletes config.yaml, checkpoints/)" in err


def test_a_failed_resume_keeps_the_config_and_unhonoured_keys_are_named(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny(data, "train.max_epochs=1", val=False), out, **QUIET)
    written = (out / "config.yaml").read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(pl.Trainer, "fit", crash)
    changed = tiny(data, "train.max_epochs=2", "optim.lr=0.5", "loss.weighting_lr=0.2", val=False)
    with pytest.warns(UserWarning, match=r"optim\.lr=0\.5 is not used: the run continues with the checkpoint's 0\.01"):
        with pytest.raises(RuntimeError, match="went away"):
            train(changed, out, resume=out / "checkpoints" / "last.ckpt", **QUIET)
    assert (out / "config.yaml").read_text() == written  # before: the failed launch's config replaced the run's
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"loss\.weighting_lr=0\.2 is not used"):  # before: refused as another model
        with pytest.warns(UserWarning, match=r"train\.max_epochs=2 \(the checkpoint's: 1\): the run stops there, "
                                             r"but its learning-rate schedule keeps the length planned"):
            train(changed, out, resume=out / "checkpoints" / "last.ckpt", **QUIET)  # before: no word of it
    resumed = load_config(out / "config.yaml")
    assert resumed.optim.lr == 0.01 and resumed.loss.weighting_lr is None and resumed.train.max_epochs == 2
    # a walkthrough: another batch size skipped the rest of the epoch's samples, another sigma changed the targets
    # and the checkpoint's HeadMeta, without a word
    sizes = BatchSizes()
    with pytest.warns(UserWarning, match=r"data\.batch_size=8 is not used: the run continues with the checkpoint's 4"):
        train(tiny(data, "train.max_epochs=3", "data.batch_size=8", val=False), out,
              resume=out / "checkpoints" / "last.ckpt", callbacks=[sizes], **QUIET)
    assert load_config(out / "config.yaml").data.batch_size == 4 and sizes.seen == {4}  # what it trained with
    with pytest.raises(CheckpointError, match=r"another model: data\.sigma=7\.0 \(this run: 3\.0\)"):
        train(tiny(data, "train.max_epochs=4", "data.sigma=3", val=False), out,
              resume=out / "checkpoints" / "last.ckpt", **QUIET)


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_bf16_on_a_cpu_without_native_bf16_warns(data, tmp_path, monkeypatch, accelerator):
    """bf16 autocast is emulated (slower than float32) on a CPU without AVX512-BF16/AMX; before, "auto" on such a
    machine trained silently slower."""
    from posepart.engine.trainer import build_trainer

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tiny(data, "train.precision=bf16-mixed", f"train.accelerator={accelerator}", val=False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        build_trainer(cfg, tmp_path, has_val=False, monitor=None, **QUIET)


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_precision_auto_is_bf16_only_where_native(data, tmp_path, monkeypatch, native, expected):
    """`train.precision: auto` (the demo configs) trains in bf16 where the CPU runs it natively and in float32
    elsewhere, without the emulation warning; before, the demo's fixed bf16-mixed made every step ~15x slower than
    float32 on an AVX2-only CPU (AMD Zen 3: 3.1 s against 0.21 s for the joint model's batch of 8)."""
    import warnings

    from posepart.engine.trainer import build_trainer, resolve_precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", on_cpu=True) == expected
    assert resolve_precision("16-mixed", on_cpu=True) == "16-mixed"  # an explicit value passes through
    cfg = tiny(data, "train.precision=auto", "train.accelerator=cpu", val=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*bfloat16.*")
        trainer = build_trainer(cfg, tmp_path, has_val=False, monitor=None, **QUIET)
    assert trainer.precision == expected


def test_checkpoint_writes_are_atomic(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError), match="[Cc]an't pickle"):  # a local lambda
        io.save_checkpoint({"step": torch.tensor(2), "bad": lambda: None}, path)  # pickling fails mid-write
    assert int(io.load_checkpoint(path)["step"]) == 1  # the previous file is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def poison_loss(monkeypatch, steps: dict[int, list[str]]) -> None:
    """Make the named loss terms of the n-th training call (1-based) NaN; a poisoned "total" is the loss itself."""
    original = PosePartLoss.forward
    calls = {"train": 0}

    def poisoned(self, output, batch, **options):
        result = original(self, output, batch, **options)
        if self.training:
            calls["train"] += 1
            for name in steps.get(calls["train"], []):
                if name == "total":
                    result.total = result.total * float("nan")
                result.terms[name] = result.total.detach() if name == "total" else result.terms[name] * float("nan")
        return result

    monkeypatch.setattr(PosePartLoss, "forward", poisoned)


@pytest.mark.parametrize("check_every", [1, 4])  # checked at once; found 1 step late (log_every_steps 4: at step 3)
def test_nan_loss_stops_before_any_nan_checkpoint(data, tmp_path, monkeypatch, check_every):
    poison_loss(monkeypatch, {3: ["total"]})  # the first step of the second epoch
    cfg = tiny(data, "train.max_epochs=3", f"train.log_every_steps={check_every}")
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 2 \(epoch 1\); non-finite terms "
                                                 r"\['total'\].*last finite terms \{'seg'"):
        train(cfg, tmp_path, **QUIET)
    checkpoints = list((tmp_path / "checkpoints").glob("*.ckpt"))
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2  # epoch 1 was saved ...
    for path in checkpoints:  # ... and nothing on disk holds NaN weights or a step past the NaN
        checkpoint = load_checkpoint(path)
        assert checkpoint["global_step"] <= 2
        assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())

    # belt and braces: a module whose weights went non-finite refuses to be checkpointed at all
    schema = PosePartDataset.open(data["train"]).schema
    module = PosePartModule(tiny(data), schema)
    with torch.no_grad():
        next(module.model.parameters()).fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="not finite"):
        module.on_save_checkpoint({"state_dict": module.state_dict()})


def test_a_nan_stop_says_which_checkpoint_is_left_and_how_to_train_on_with_another_lr(data, tmp_path, monkeypatch,
                                                                                        capsys):
    """`posepart train` stopped by a NaN loss names the last checkpoint it left (finite) and the way on: a --resume
    keeps the checkpoint's optim.lr, a new run from its weights takes another. Before (a walkthrough): "Lower
    optim.lr" alone, and a resume with a lower one went on with the old and met the NaN at the same step."""
    from posepart.engine.config import dump_config

    poison_loss(monkeypatch, {3: ["total"]})  # the first step of the second epoch
    config = dump_config(tiny(data, "train.max_epochs=3"), tmp_path / "tiny.yaml")
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert (f"Its last checkpoint, {last} (step 2), holds finite weights: a --resume keeps its optim.lr; to train on "
            f"with another, start a new run from them: --set model.init={last} --set optim.lr=...") in \
        capsys.readouterr().err


def test_a_run_cut_by_its_time_budget_says_so_and_how_to_go_on(data, tmp_path, capsys):
    """`--max-minutes` ending a run before its planned end: exit 0 (a budget is a plan), with the run's state and the
    command that continues it; Lightning's "`max_epochs=20` reached" is not printed (a walkthrough: it was, for a
    run cut at step 5 of 40). Figures of a validation older than last.ckpt say so."""
    from posepart.engine.config import dump_config

    config = dump_config(tiny(data, "train.max_epochs=20"), tmp_path / "tiny.yaml")
    out = tmp_path / "cut"
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--max-minutes", "0.0001"]) == 0
    printed = capsys.readouterr()
    last = load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < last < 40 and "reached" not in printed.err
    assert (f"stopped by --max-minutes before its planned end, at step {last}: continue with: posepart train --config "
            f"{out / 'config.yaml'} --resume {out / 'checkpoints' / 'last.ckpt'} --out {out} --max-minutes 0.0001"
            ) in printed.err
    # cut inside its only epoch (a review: Lightning counts the epoch the timer cut as completed, and the run as ended)
    once = train(tiny(data, "train.max_epochs=1", val=False), tmp_path / "once", max_minutes=1e-6, **QUIET)
    assert (once.global_step, once.out_of_time) == (1, True)
    every = dump_config(tiny(data, "train.max_epochs=3", "train.val_every_epochs=2"), tmp_path / "every.yaml")
    assert cli.main(["train", "--config", str(every), "--out", str(tmp_path / "every")]) == 0
    printed = capsys.readouterr()
    assert "(the figures of the validation at step 4; last.ckpt, at step 6, scores with: posepart evaluate " \
           "--checkpoint" in printed.out and "stopped by" not in printed.err


def test_nan_stop_message_lists_only_finite_terms_as_finite(data, tmp_path, monkeypatch):
    """A step whose total is finite can hold a non-finite term (here `paf`: NaN); when the next step's total goes NaN,
    the message names the non-finite terms and its "last finite terms" hold only finite values."""
    poison_loss(monkeypatch, {1: ["paf"], 2: ["total", "heatmap"]})
    with pytest.raises(FloatingPointError) as caught:
        train(tiny(data, "train.log_every_steps=5"), tmp_path, **QUIET)
    message = str(caught.value)
    assert "loss became nan at step 1 (epoch 0); non-finite terms ['heatmap', 'total']" in message, message
    last = message.split("last finite terms ")[1]
    assert "'seg'" in last and "'paf'" not in last and "nan" not in last and "inf" not in last, message


@pytest.mark.parametrize("setting, words", [
    ("optim.lr=-1", "optim.lr: must be a finite number > 0"),  # before: torch's ValueError traceback
    ("optim.weight_decay=-1", "optim.weight_decay: must be a finite number >= 0"),
    ("optim.schedule=step;optim.step_size=0", "optim.step_size: must be at least 1"),  # ZeroDivisionError
    ("optim.warmup_steps=-5", "optim.warmup_steps: must be at least 0"),  # silently 0
    ("data.batch_size=0", "data.batch_size: must be at least 1"),  # ZeroDivisionError
    ("data.input_size=8000000", "data.input_size: must be at most 8192"),  # 192 TB asked of OpenCV
    ("data.sigma=-1", "data.sigma: must be a finite number > 0"),  # named no key
    ("train.log_every_steps=0", "train.log_every_steps: must be at least 1"),  # ZeroDivisionError
    ("train.val_every_epochs=0", "train.val_every_epochs: must be at least 1"),  # ZeroDivisionError
    ("train.threads=0", "train.threads: must be at least 1 or null"),  # torch's default, silently
    ("train.max_steps=0", "train.max_steps: must be -1 (no limit) or at least 1"),  # trained nothing, exit 0
    ("train.max_epochs=-1", "decays over the planned steps, and train.max_epochs and train.max_steps are both -1"),
    ("loss.weighting=gradnorm;loss.weights=null;train.compile=true", "is not supported with train.compile"),
    ("data.sources=[{name: a, train: x, weight: .inf}]", "weight: must be a finite number >= 0"),
])
def test_settings_that_cannot_train_are_refused_with_the_config(data, tmp_path, capsys, setting, words):
    """Each passed validation (`--print-config` exited 0) and then failed after the run had started, with a
    traceback, or (GradNorm with train.compile) after an --overwrite had removed the previous run."""
    sets = [arg for item in setting.split(";") for arg in ("--set", item)]
    assert cli.main(["train", "--config", "demo_cpu_joint", *sets, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.startswith("error: "), err


def test_a_stored_config_loads_whatever_its_unused_settings_say():
    """The checks of `check_trainable` apply to configs a run is launched with, not to the ones checkpoints store: a
    model an earlier version trained (Adam's unused SGD momentum 1, a warm-up of -1 taken as 0) still loads."""
    stored = load_config("demo_cpu_joint").to_dict()
    stored["optim"].update(momentum=1.0, warmup_steps=-1, gamma=0.0)
    assert config_from_dict(stored).optim.warmup_steps == -1
    with pytest.raises(ConfigError, match="optim.warmup_steps: must be at least 0"):
        check_trainable(config_from_dict(stored))


def test_a_model_option_the_model_does_not_take_is_named(capsys):
    """Before: build_from_config dropped what the builder does not take without a word, so `model.seg_head: fcn8` on
    fcn32_vgg16 trained FCN-32s (and config.yaml said fcn8), and `model.stages: 6` on an FCN trained no pose head."""
    for name, setting, words in (("demo_cpu_fcn32", "model.seg_head=fcn8", "fcn32_vgg16 has no such options, so these "
                                  "settings change nothing: model.seg_head: 'fcn8' \\(FCN-16s and FCN-8s are"),
                                 ("demo_cpu_fcn32", "model.stages=6", "model.stages: 6"),
                                 ("demo_cpu_paf", "model.fc_width=512",
                                  "paf_vgg16 has no such .* model.fc_width: 512")):
        with pytest.warns(PosepartWarning, match=words):
            warn_unused_model_options(load_config(name, [setting]).model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unused_model_options(load_config("demo_cpu_fcn32").model)  # left out: nothing to say
    # a review: said only once training had started, not by --print-config
    assert cli.main(["train", "--config", "demo_cpu_fcn32", "--set", "model.pose_stride=4", "--print-config"]) == 0
    assert "fcn32_vgg16 has no such options, so these settings change nothing: model.pose_stride: 4" in (
        capsys.readouterr().err)


def test_loss_and_optimiser_settings_nothing_reads_are_named():
    """A walkthrough: `loss.weights.heatmap: 2`, `loss.heatmap: focal` on an FCN, `loss.focal_beta` under the MSE
    loss, `loss.weighting_lr` under fixed weights and `optim.momentum` under Muon changed nothing, without a word."""
    from types import SimpleNamespace

    from posepart.engine.builders import build_from_config
    from posepart.engine.train import _warn_unused_settings

    def warned(name: str, *settings: str) -> list[str]:
        config = load_config(name, [*settings, "model.width=0.125", "model.fc_width=16"])
        model = build_from_config(config, Schema.pascal_person_part(), pretrained=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _warn_unused_settings(config, SimpleNamespace(model=model))
        return [str(w.message) for w in caught if issubclass(w.category, PosepartWarning)]

    (fcn,) = warned("demo_cpu_fcn32", "loss.weights.heatmap=2", "loss.heatmap=focal", "loss.focal_beta=3",
                    "optim.momentum=0.5")
    assert fcn.startswith("these settings change nothing in this run (model fcn32_vgg16, which predicts seg;")
    assert fcn.endswith(": loss.weights.heatmap, loss.heatmap, loss.focal_beta, optim.momentum")
    (joint,) = warned("demo_cpu_joint", "loss.heatmap=mse", "loss.weighting=fixed", "loss.weighting_lr=0.1")
    assert joint.endswith(": loss.focal_beta, loss.weighting_lr")  # the config's beta 2, read by the focal loss only
    assert warned("demo_cpu_joint") == warned("demo_cpu_paf") == warned("demo_cpu_fcn32") == []


def test_a_metric_the_validation_data_cannot_score_is_refused_before_training(data, tmp_path):
    """Before: validation data with no labelled person (or no part map) trained a whole epoch, then Lightning's
    ModelCheckpoint failed ("could not find the monitored key") with a traceback and no checkpoint saved."""
    from posepart.data.writer import DatasetWriter

    source = PosePartDataset.open(data["val"])
    with DatasetWriter(tmp_path / "unlabelled", source.schema) as writer:  # the same images, no people, no parts
        for record in source.records:
            writer.add(source.load_image(record), [], file_name=record.file_name)
    for metric, words in (("val/pose/ap", "scores pose, and the validation data .* labels none \\(no labelled "
                           "person\\)"), ("val/seg/mean_iou", "scores parts, .* \\(no part map\\)")):
        with pytest.raises(ConfigError, match=words):
            train(tiny(data, f"data.val={tmp_path / 'unlabelled'}", f"train.best_metric={metric}"),
                  tmp_path / "run", **QUIET)
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_validation_data_in_another_schema_is_read_in_the_runs(data, straight_run, tmp_path):
    """Before: data.val was refused ("has a different schema than data.train") when anything differed, its category's
    name included, though `posepart evaluate` reads such data in the checkpoint's schema. Its joints are read by
    name: the same people under another category name, with "Left Knee" for left_knee, score as the original."""
    shutil.copytree(data["val"], tmp_path / "val")
    listing = json.loads((tmp_path / "val" / "annotations.json").read_text())
    category = listing["categories"][0]
    category["name"] = "walker"
    category["keypoints"] = [name.replace("_", " ").title() for name in category["keypoints"]]  # Left Knee
    (tmp_path / "val" / "annotations.json").write_text(json.dumps(listing))
    # the truth: every joint lands in the channel of the joint it names (the untrained model's AP is 0, so the AP
    # alone would not tell a wrong mapping from a right one)
    original, renamed = (PosePartDataModule(tiny(data, f"data.val={where}")).val_set for where in (data["val"],
                                                                                                   tmp_path / "val"))
    assert sum(len(r.keypoints) for r in original.records) > 0
    for a, b in zip(original.records, renamed.records, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    run = train(tiny(data, f"data.val={tmp_path / 'val'}", "train.max_epochs=2"), tmp_path / "run", **QUIET)
    keys = [k for k in straight_run.metrics if k.startswith(("val/pose/", "val/seg/"))]
    assert "val/pose/pckh/left_knee" in keys and "val/seg/mean_iou" in keys
    for key in keys:  # the per-joint PCKh too: a joint read into its twin's channel would move two of them
        assert run.metrics[key] == pytest.approx(straight_run.metrics[key], nan_ok=True), key
    # joints of which none maps (a review: its pose went unvalidated without a word), part classes that do not map
    category["keypoints"] = [f"point{j}" for j in range(len(category["keypoints"]))]
    (tmp_path / "val" / "annotations.json").write_text(json.dumps(listing))
    with pytest.raises(ConfigError, match="data.val .*: none of its joints \\['point0', .* maps to the run's"):
        PosePartDataModule(tiny(data, f"data.val={tmp_path / 'val'}"))
    category["keypoints"] = list(Schema.pascal_person_part().keypoints)
    category["part_classes"] = ["background", "cape", *category["part_classes"][2:]]
    (tmp_path / "val" / "annotations.json").write_text(json.dumps(listing))
    with pytest.raises(ConfigError, match="data: data.val .*: part class 'cape' has no target class"):
        PosePartDataModule(tiny(data, f"data.val={tmp_path / 'val'}"))


def test_a_broken_validation_image_is_skipped_not_scored_twice(data, tmp_path):
    """A broken validation sample's place holds the record that replaced it; before, that record was scored twice
    (its ground truth and prediction added again: a review). Truth: the same run validated without the image."""
    for name in ("broken", "without"):
        shutil.copytree(data["val"], tmp_path / name)
    listing = json.loads((data["val"] / "annotations.json").read_text())
    dropped = listing["images"][1]
    image = tmp_path / "broken" / "images" / dropped["file_name"]
    image.write_bytes(image.read_bytes()[:100])  # truncated
    listing["images"] = [i for i in listing["images"] if i["id"] != dropped["id"]]
    listing["annotations"] = [a for a in listing["annotations"] if a["image_id"] != dropped["id"]]
    (tmp_path / "without" / "annotations.json").write_text(json.dumps(listing))
    runs = {name: train(tiny(data, f"data.val={tmp_path / name}", "train.max_epochs=1"), tmp_path / f"run_{name}",
                        **QUIET).metrics for name in ("broken", "without")}
    for key in ("val/seg/mean_iou", "val/pose/ap"):
        assert runs["broken"][key] == pytest.approx(runs["without"][key]), key


def test_validation_images_and_part_maps_are_decoded_once_in_the_loader_workers(data, tmp_path, monkeypatch):
    """Validation scores each image with the Predictor; before, the main process decoded it a second time (the
    Mapper's worker had already decoded it for the validation loss), and its part map a second time at the epoch's
    end, having held every image's predicted part map until then (each rank all of them, under DDP): on a GPU run
    over thousands of validation images, a decode per image serialised in the process that drives the GPU, and
    gigabytes of maps. Now each image's parts are scored where it is predicted (`scored_parts`)."""
    calls = tmp_path / "decoded"
    for name in ("load_image", "load_parts"):
        def recorded(self, record, load=getattr(PosePartDataset, name), name=name):
            with open(calls, "a") as f:  # forked workers inherit it; a file collects every process's calls
                f.write(f"{os.getpid()} {name} {record.image_path.parent.parent.name}\n")
            return load(self, record)

        monkeypatch.setattr(PosePartDataset, name, recorded)
    kept = []
    epoch_end = PosePartModule.on_validation_epoch_end
    monkeypatch.setattr(PosePartModule, "on_validation_epoch_end",
                        lambda self: kept.extend(p for _, p in self._val_items) or epoch_end(self))
    run = train(tiny(data, "data.workers=1", "train.max_epochs=1"), tmp_path / "run", **QUIET)
    decoded = [line.split() for line in calls.read_text().splitlines()]
    for name in ("load_image", "load_parts"):
        validation = [pid for pid, what, split in decoded if split == "val" and what == name]
        assert len(validation) == 2 * 4, name  # the sanity check's and the epoch's validation: each image once
        assert str(os.getpid()) not in validation, name
    classes = PosePartDataset.open(data["val"]).schema.num_parts
    assert len(kept) == 2 * 4 and all(p.parts is None and p.part_counts.shape == (classes,) * 2 for p in kept)
    assert 0 < run.metrics["val/seg/mean_iou"] <= 1


def test_validation_overlays_are_logged_at_screen_size(data, tmp_path, monkeypatch):
    """The overlays TensorBoard gets are shrunk to `OVERLAY_SIDE` (before: at the image's size, so a validation set
    of 12-megapixel photos held and logged 36 MB per overlay); smaller images stay as they are."""
    from posepart.engine.module import OVERLAY_SIDE

    large = write_synth(tmp_path / "large", n=1, seed=2, size=2 * OVERLAY_SIDE)
    logged: list[tuple[int, ...]] = []
    log_overlays = PosePartModule._log_overlays

    def recorded(self):
        logged.extend(image.shape for image in self._overlays if not self.trainer.sanity_checking)
        log_overlays(self)

    monkeypatch.setattr(PosePartModule, "_log_overlays", recorded)
    for val in (large, data["val"]):
        train(tiny(data, f"data.val={val}", "train.max_epochs=1", "train.val_images=1"), tmp_path / val.name, **QUIET)
    assert logged == [(OVERLAY_SIDE, OVERLAY_SIDE, 3), (64, 64, 3)]


def test_validation_overlays_sit_at_the_step_of_their_validation_metrics(straight_run):
    """TensorBoard shows a validation's overlays beside its metrics; before, the overlays were logged one step later
    (the global step, where Lightning writes the metrics at the step just taken), beside the next epoch's loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (straight_run.out / "tb").rglob("events.out.tfevents.*")
    logged = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    logged.Reload()
    metric_steps = [event.step for event in logged.Scalars("val/pose/ap")]
    assert len(metric_steps) == 2  # two epochs, validated after each
    for tag in logged.Tags()["images"]:
        assert [event.step for event in logged.Images(tag)] == metric_steps, tag


def test_a_config_made_in_python_is_checked_as_a_yaml_one(tmp_path):
    """Before: train() trusted a Config built from the dataclasses, so a mistyped model name failed as a bare KeyError
    inside training and a string learning rate as a TypeError."""
    from dataclasses import replace

    from posepart.engine.settings import ModelConfig

    config = load_config("demo_cpu_joint")
    for bad, words in ((replace(config, model=replace(config.model, name="jont_vgg16")), "model.name: Input should be"),
                       (replace(config, model=ModelConfig(name="jont_vgg16")), "model.name: Input should be"),
                       (replace(config, optim=replace(config.optim, lr="0.1")), "optim.lr"),
                       (config.to_dict(), "train\\(\\) takes a Config")):
        with pytest.raises(ConfigError, match=words):
            train(bad, tmp_path / "run", **QUIET)
        assert not (tmp_path / "run").exists()


def test_config_errors_name_the_key(data, tmp_path, capsys):
    with pytest.raises(ConfigError, match="optim.lrr: unknown key"):
        tiny(data, "optim.lrr=0.1")
    with pytest.raises(ConfigError, match=r"not found \(the shipped config of that name: --config demo_cpu_joint\)"):
        load_config(tmp_path / "configs" / "demo_cpu_joint.yaml")  # the docs' path, outside the repository
    with pytest.raises(ConfigError, match="train.max_epochs: Input should be a valid integer, got 'many'"):
        tiny(data, "train.max_epochs=many")
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  stagse: 2\n")
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "model.stagse: unknown key" in capsys.readouterr().err
    good = REPO / "configs" / "demo_cpu_paf.yaml"
    assert cli.main(["train", "--config", str(good), "--train", str(data["train"]), "--set", "data.batch_sise=2",
                     "--out", str(tmp_path / "run")]) == 2
    assert "data.batch_sise: unknown key" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.best_metric"):  # a seg metric for a pose-only model
        train(tiny(data, "model.name=paf_vgg16", "train.best_metric=val/seg/mean_iou"),
              tmp_path / "r2", **QUIET)


def test_config_validation_is_strict_and_names_nested_keys():
    """pydantic validates the settings: no silent conversions, and each error names the key as users write it."""
    def error(*overrides: str) -> str:
        with pytest.raises(ConfigError) as caught:
            load_config(None, list(overrides))
        return str(caught.value)

    assert error("model.stages=true") == "model.stages: Input should be a valid integer, got True"
    assert error("loss.focal_beta=0") == "loss.focal_beta: must be a finite number > 0, got 0.0"  # not "loss: ..."
    # before: these passed validation and --print-config, then failed with a traceback where the model was built or
    # the first sample drawn (stages, width, fc_width, inf), or trained (a negative weighting_lr), or stopped as a
    # NaN loss with advice to lower optim.lr (an infinite task weight)
    assert error("model.stages=0") == "model.stages: must be in 1..6, got 0"
    assert error("model.width=.nan") == "model.width: must be a finite number > 0, got nan"
    assert error("model.fc_width=0") == "model.fc_width: must be at least 1, got 0"
    assert error("data.augment.scale_max=.inf") == "data.augment.scale_max: must be a finite number, got inf"
    assert error("data.augment.rotate_deg=.nan") == "data.augment.rotate_deg: must be a finite number, got nan"
    assert error("loss.weighting_lr=-1") == "loss.weighting_lr: must be a finite number >= 0 or null, got -1.0"
    assert load_config(None, ["model.name=fcn32_vgg16", "model.stages=8", "model.fc_width=1"]).model.stages == 8  # a
    # review: an option the model does not take only warns (the configs of stored runs load)
    assert load_config(None, ["model.name=paf_vgg16", "model.fc_width=0"]).model.fc_width == 0
    assert error("loss.weights.seg=.inf").startswith("loss.weights: must be finite numbers >= 0, got {'seg': inf}")
    assert error("loss.gradnorm_alpha=.inf") == "loss.gradnorm_alpha: must be a finite number >= 0, got inf"
    assert error("model.batch_norm=maybe").startswith("model.batch_norm: Input should be a valid boolean")
    assert error("data.augment.scale_mi=1").startswith("data.augment.scale_mi: unknown key; known: scale_min,")
    assert error("data.sources=[{name: a, train: {root: x, bogus: 1}}]").startswith(
        "data.sources[0].train.bogus: unknown key; known: root, annotations, images, parts")
    assert error("data.sources=[{name: a, train: 5}]") == "data.sources[0].train: Input should be a valid string, got 5"
    assert error("data.sources=[{name: a, train: {annotations: x}}]") == (  # the settings class's own check
        "data.sources[0].train: give root, both annotations and images, or images alone (an unlabelled source)")
    assert error("data.sources=[{name: a, train: {images: x}}]") == (
        "data.sources[0].train: a folder of images alone (x) has no labels: only the train data of an unlabelled "
        "source (unlabelled: true) may be one")
    assert error("loss.weights={heatmap: x}") == "loss.weights.heatmap: Input should be a valid number, got 'x'"
    assert error("data.augment.scale_min=2").startswith("data.augment: need 0 < scale_min <= scale_max")
    config = load_config(None, ["optim.lr=1e-3", "train.devices=2", "train.precision=32", "data.train=a/b"])
    assert config.optim.lr == 0.001  # YAML 1.2's reading of 1e-3 (YAML 1.1 would give a string)
    assert (config.train.devices, config.train.precision) == ("2", "32")  # text settings YAML read as numbers
    assert config.data.train == Path("a/b")


def test_python_overrides_may_be_one_string_or_a_mapping(tmp_path):
    """A walkthrough: load_config(name, "model.stages=2") read the string character by character ("--set 'm':
    expected key=value"), and a {key: value} mapping by its keys."""
    one = load_config("demo_cpu_joint", "model.stages=2")
    mapped = load_config("demo_cpu_joint", {"model.stages": 2, "data.augment.flip_prob": 0.25, "data.train": tmp_path,
                                            "optim.warmup_steps": None, "data.augment.photometric": True})
    assert one.model.stages == mapped.model.stages == 2 and mapped.data.augment.flip_prob == 0.25
    assert mapped.data.train == tmp_path and mapped.data.augment.photometric is True
    assert mapped.optim.warmup_steps == load_config(None).optim.warmup_steps  # None: the default, as null
    # a review: strings were read back as YAML ('null' became None), and a nested Path failed in json.dumps
    quoted = load_config(None, {"data.train": "null", "data.sources": [{"name": "a", "train": tmp_path}]})
    assert quoted.data.train == Path("null") and quoted.data.sources[0].train == tmp_path


def test_set_reaches_list_items_and_blames_itself():
    """`--set data.sources[0].train=...` (or `.0.`) sets one item of a config's list. Before, it was an unknown key
    `data` whose message listed `data` among the known ones, and `.0.` replaced the list with a mapping."""
    config = load_config("pascal_joint_sources", ["data.sources[0].train=/data/a", "data.sources.0.weight=2"])
    (source,) = config.data.sources
    assert (str(source.train), source.weight, source.name) == ("/data/a", 2.0, "pascal")  # the rest as in the file
    for overrides, message in [(["data.sources[1].train=x"], "--set data.sources[1]: data.sources has 1 item(s)"),
                               (["optim.lr[0]=1"], "--set optim.lr[0]: optim.lr is not a list in the config"),
                               (["data.sources[x].train=1"], "'data.sources[x].train' is not a key")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config("pascal_joint_sources", overrides)
    with pytest.raises(ConfigError) as caught:  # a bad key from --set is blamed on --set, not on the config file
        load_config("pascal_joint_sources", ["data.sources[0].trian=x"])
    assert str(caught.value).startswith("--set: data.sources[0].trian: unknown key"), caught.value
    # an item of a list an earlier --set gave whole (before: AttributeError), and a key inside a plain value
    given = load_config(None, ["data.sources=[{name: a, train: x}]", "data.sources[0].weight=2"])
    assert given.data.sources[0].weight == 2.0
    for later, words in (("data.sources[3].weight=2", "gave 1 item"), ("data.sources[0].name.x=1", "not a section")):
        with pytest.raises(ConfigError, match=words):
            load_config(None, ["data.sources=[{name: a, train: x}]", later])
    # a config without sources (a walkthrough: before, "data.sources is not a list in the config", of its empty list)
    with pytest.raises(ConfigError, match=re.escape("--set data.sources[0]: the config has no item of data.sources "
                                                    "to set (an empty list, or a mistyped key): set the whole list, "
                                                    "--set 'data.sources=[{...}, ...]'")):
        load_config("demo_cpu_joint", ["data.sources[0].name=c"])


def test_a_set_value_holding_a_hash_is_the_value_not_a_comment():
    """A shell argument holds no YAML comment: before, `--set "data.train=my ds #1"` trained on `my ds` without a
    word (the rest read as a comment), and `model.init=runs/best #3.ckpt` loaded `runs/best`. A quoted value, a hash
    inside a word and a number keep their YAML reading."""
    config = load_config(None, ["data.train=my ds #1", "model.init=runs/best #3.ckpt", "data.val='v #2'",
                                "train.max_steps=5"])
    assert str(config.data.train) == "my ds #1" and str(config.model.init) == "runs/best #3.ckpt"
    assert str(config.data.val) == "v #2" and config.train.max_steps == 5


def test_set_null_resets_a_key_and_a_mapping_merges(tmp_path):
    """A mapping given to --set merges into the config's (as OmegaConf merges); before, nothing could clear one
    (`part_map={}` merged nothing in, `part_map=null` was refused): null now resets the key to its default."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sources:\n    - {name: cihp, train: cihp, part_map: {scarf: [torso]}}\n"
                    "optim: {lr: 0.5}\n")
    source = lambda *overrides: load_config(path, list(overrides)).data.sources[0]  # noqa: E731
    assert source().part_map == {"scarf": ["torso"]}
    assert source("data.sources[0].part_map={hat: [head]}").part_map == {"scarf": ["torso"], "hat": ["head"]}
    assert source("data.sources[0].part_map=null").part_map == {}
    assert load_config(path, ["optim.lr=null"]).optim.lr == load_config(None).optim.lr  # the default, not None
    for typo in ("optim.lrr=null", "data.sources[0].part_mapp=null", "nothing=null"):  # still refused
        with pytest.raises(ConfigError, match=re.escape(f"--set {typo}: unknown key")):
            load_config(path, [typo])
    assert source("data.sources[0].part_map.scarf=null").part_map == {}  # a mapping's own key


def test_every_setting_that_takes_none_defaults_to_none():
    """What `--set KEY=null` relies on to mean "the default": no setting takes None with another default."""
    import dataclasses
    import typing

    from posepart.engine import settings

    classes = [c for c in vars(settings).values() if dataclasses.is_dataclass(c) and c.__module__ == settings.__name__]
    checked = 0
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if type(None) in typing.get_args(hints[f.name]):
                assert f.default is None, f"{cls.__name__}.{f.name} takes None but defaults to {f.default!r}"
                checked += 1
    assert checked >= 5 and settings.DataConfig in classes


class _CollectingDataset(torch.utils.data.Dataset):
    """Each sample: the private memory (MB) a full garbage collection in the loader worker costs."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict[str, float]:
        def private_dirty_mb() -> float:
            with open("/proc/self/smaps_rollup") as f:
                return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:")) / 1024

        before = private_dirty_mb()
        gc.collect()
        return {"copied": private_dirty_mb() - before}


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux's page accounting")
def test_a_garbage_collection_in_a_loader_worker_leaves_the_inherited_objects_shared(data):
    """A full collection in a forked loader worker wrote to every object it inherited, so copied their pages: 127 MB
    per worker in this process (the million objects below and the test run's own; a training process holds about as
    many), before the workers froze them at their start."""
    inherited = [(i, str(i)) for i in range(1_000_000)]
    module = PosePartDataModule(tiny(data, "data.workers=1", "data.batch_size=1"))
    loader = module._loader(_CollectingDataset(), torch.utils.data.SequentialSampler(range(2)))
    copied = [float(batch["copied"][0]) for batch in loader]
    # unfrozen: 126 MB; frozen: under 1 MB in a fresh process, 10 MB once in a test worker that had run many
    # trainings (its worker's first collection frees what the fork left unreachable, e.g. other threads' frames)
    assert max(copied) < 32, f"a collection in the worker copied {max(copied):.0f} MB of the parent's pages"
    assert len(inherited) == 1_000_000


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"])
def test_a_large_annotation_file_is_announced_by_the_first_ddp_rank_alone(data, capsys, monkeypatch, variable):
    """Every DDP process opens the datasets; before, each printed "reading FILE" and its progress bar. The first
    process of each later node (Lightning's launcher sets NODE_RANK alone there) is not the launch's first."""
    import posepart.data.format
    from posepart.engine.launch import RANK_VARIABLES

    monkeypatch.setattr(posepart.data.format, "LARGE_ANNOTATIONS", 0)
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    announced = []
    for rank in ("0", "1"):
        monkeypatch.setenv(variable, rank)
        PosePartDataModule(tiny(data))
        announced.append(capsys.readouterr().err.count("reading "))
    assert announced == [2, 0]  # the first process: the training and the validation file


def test_data_train_in_the_coco_release_layout(fixtures, caplog):
    """The README reads the COCO layout "wherever a command takes a dataset"; before, `data.train` took a ROOT only
    (`data.train.annotations=...`: "Input should be a valid string") and only data.sources took the layout. The
    images it skips are said, as `inspect` says them (before: training dropped them without a word)."""
    coco = fixtures / "coco_mini"
    config = load_config("demo_cpu_paf", [f"data.train.annotations={coco}/annotations/person_keypoints_train2017.json",
                                          f"data.train.images={coco}/train2017"])
    with caplog.at_level(logging.INFO):
        data = PosePartDataModule(config)
    (source,) = data.sources
    assert data.schema.num_joints == 17 and len(source.train) == 36  # the 36 of 80 listed images present
    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert line.startswith(f"data.train (annotations {coco}/annotations/") and "skipped 44 x missing image" in line
    with pytest.raises(ConfigError, match="a folder of images alone .* has no labels"):
        load_config("demo_cpu_paf", [f"data.train.images={coco}/train2017"])


@pytest.mark.parametrize("name", ["paf_vgg16", "joint_vgg16"])
def test_a_config_without_stages_builds_the_models_own_and_says_so(name):
    """Before, `model.stages` defaulted to 2 whatever the model, while `build_model("paf_vgg16")` and `posepart
    models` build OpenPose's 6: a paf_vgg16 config that left it out trained a third of the network named."""
    schema = Schema.pascal_person_part()
    config = load_config(None, [f"model.name={name}", "model.width=0.125", "model.fc_width=32"])
    built = build_from_config(config, schema, pretrained=False)
    expected = build_model(name, schema, width=0.125, fc_width=32) if name == "joint_vgg16" else \
        build_model(name, schema, width=0.125)
    assert config.model.stages == built.pose_head.num_stages == expected.pose_head.num_stages
    assert load_config(None, [f"model.name={name}", "model.stages=1"]).model.stages == 1


def test_every_shipped_config_loads():
    files = sorted((REPO / "configs").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"demo_cpu_joint", "demo_cpu_fcn32", "demo_cpu_paf", "pascal_fcn32", "pascal_paf_1stage",
            "pascal_paf_2stage", "pascal_paf_6stage", "pascal_joint_1stage", "pascal_joint_2stage"} <= names
    for path in files:
        cfg = load_config(path)
        if cfg.model.pretrained is not None:
            assert cfg.model.width == 1.0, path  # torchvision VGG16 weights only fit width 1
        if path.stem.startswith("pascal_paf"):
            assert cfg.train.best_metric.startswith("val/pose/"), path


def test_export_weights_round_trip(straight_run, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert cli.main(["export-weights", "--checkpoint", str(straight_run.last), "--out", str(out)]) == 0
    from_ckpt, from_st = load_model(straight_run.last), load_model(out)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["head"]) == from_ckpt.head.to_dict()  # the model's HeadMeta rides along
    assert not from_st.model.training and from_st.input_size == 64 and from_st.head.pose_stride == 8
    assert from_st.schema == from_ckpt.schema and from_st.config.to_dict() == from_ckpt.config.to_dict()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = from_ckpt.model(x), from_st.model(x)
    for name in ("heatmaps", "pafs", "parts"):
        assert len(getattr(a, name)) == 1
        torch.testing.assert_close(getattr(a, name)[-1], getattr(b, name)[-1], rtol=0, atol=0)
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}}, bogus)
    assert cli.main(["export-weights", "--checkpoint", str(bogus), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not a posepart checkpoint" in capsys.readouterr().err
    # before: any --out was written, the checkpoint itself included (its training state lost), and exported weights
    # given back were "not a posepart checkpoint"
    victim = tmp_path / "victim.ckpt"
    victim.write_bytes(straight_run.last.read_bytes())
    for argv, words in ((["--checkpoint", str(victim), "--out", str(victim)], "must end in .safetensors"),
                        (["--checkpoint", str(victim), "--out", str(tmp_path / "w.bin")], "must end in .safetensors"),
                        (["--checkpoint", str(out), "--out", str(tmp_path / "again.safetensors")], "exported weights "
                                                                                                    "already")):
        assert cli.main(["export-weights", *argv]) == 2
        assert words in capsys.readouterr().err
    assert victim.read_bytes() == straight_run.last.read_bytes() and not (tmp_path / "w.bin").exists()


def test_a_model_of_ones_own_loop_saves_as_weights_every_verb_reads(straight_run, tmp_path):
    """A walkthrough: a model trained outside `posepart train` could be saved only as a bare state dict, which
    evaluate, predict and export refused. `save_weights` writes it as export-weights writes a run's; a config that
    builds another model is refused when saving, not when the file is read."""
    from posepart.engine.checkpoint import save_weights

    trained = load_model(straight_run.last)  # stands for a model of one's own loop: built from a Config
    out = save_weights(trained.model, tmp_path / "own.safetensors", config=trained.config)
    again = load_model(out)
    assert again.head == trained.head and again.config.to_dict() == trained.config.to_dict()
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
    for section, key, value, words in (("model", "width", 0.25, "save_weights: model: its weights do not fit"),
                                       ("data", "sigma", 3.0, "config builds a model whose maps are"),
                                       # layers without weights (an API walkthrough: saved, and reloaded as another
                                       # network without a word)
                                       ("model", "activation", "silu", r"trunk.features.1 is ReLU\(inplace=True\) "
                                                                        r"in the model, SiLU\(inplace=True\) in"),
                                       ("model", "pool", "blur", "is MaxPool2d.* in the model, MaxBlurPool"),
                                       ("loss", "heatmap", "focal", "heatmap_sigmoid=False.* in the model, .*=True")):
        other = copy.deepcopy(trained.config)
        setattr(getattr(other, section), key, value)
        with pytest.raises(UsageError, match=words):
            save_weights(trained.model, tmp_path / "other.safetensors", config=other)
    with pytest.raises(UsageError, match="must end in .safetensors"):
        save_weights(trained.model, tmp_path / "own.pt", config=trained.config)
    extra = copy.deepcopy(trained.model)
    extra.add_module("smooth", torch.nn.AvgPool2d(3))  # a weight-free module the config does not build
    with pytest.raises(UsageError, match=r"smooth is AvgPool2d\(.*\) in the model, absent in config's"):
        save_weights(extra, tmp_path / "other.safetensors", config=trained.config)
    normed = copy.deepcopy(trained.config)
    normed.model.batch_norm = True
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_from_config(normed, trained.schema))  # a DDP
    assert load_model(save_weights(synced, tmp_path / "sync.safetensors", config=normed)).head  # recipe's (refused)
    compiled = save_weights(torch.compile(trained.model), tmp_path / "compiled.safetensors", config=trained.config)
    assert load_model(compiled).head == trained.head  # a review: '_orig_mod.' names were "unexpected in the model"
    assert not (tmp_path / "other.safetensors").exists() and not (tmp_path / "own.pt").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_the_demo_config_at_its_defaults(tmp_path):
    """The shipped demo config as it is (log_every_steps 10, validation on, best checkpoint by val mean IU), 2 gloo
    processes, 2 epochs, 9 training images (not divisible by the ranks): it used to abort at the first epoch's end
    with a gloo "collective mismatch" (an all-reduce of the NaN check between Lightning's epoch-end metric syncs).
    Every rank scores the whole validation set with the final weights, so the logged validation metrics equal
    `posepart evaluate` of last.ckpt in one process."""
    root = tmp_path / "data"
    train, val = write_synth(root / "train", n=9, seed=0, size=64), write_synth(root / "val", n=3, seed=1, size=64)
    config = Path(__file__).resolve().parents[1] / "configs" / "demo_cpu_joint.yaml"
    entry = Path(sys.executable).with_name("posepart")
    command = [str(entry) if entry.exists() else sys.executable, *([] if entry.exists() else ["-m", "posepart.cli"]),
               "train", "--config", str(config), "--train", str(train), "--val", str(val),
               "--set", "data.input_size=64", "--set", "train.devices=2", "--set", "train.strategy=ddp",
               "--set", "train.max_epochs=2", "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 epochs") == 1, done.stdout  # one summary, not one per rank
    assert "Grad strides do not match" not in done.stderr  # channels_last weights with the strides of their grads
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2  # 9 images over 2 ranks, padded to 5 each: one batch of 8
    logged = [row for row in csv.DictReader(open(next((tmp_path / "run" / "csv").glob("version_*/metrics.csv"))))
              if row.get("val/seg/mean_iou")]
    assert cli.main(["evaluate", "--checkpoint", str(last), "--data", str(val), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert float(logged[-1]["val/seg/mean_iou"]) == pytest.approx(metrics["segmentation"]["mean_iou"], abs=1e-6)
    assert float(logged[-1]["val/pose/ap"]) == pytest.approx(metrics["pose"]["ap"], abs=1e-6)


@pytest.mark.slow
def test_ddp_two_cpu_processes(data, tmp_path):
    config = tmp_path / "ddp.yaml"
    config.write_text(
        "model: {name: joint_vgg16, stages: 1, width: 0.125, fc_width: 32}\n"
        "data: {input_size: 64, batch_size: 2, workers: 0}\n"
        "train: {max_epochs: 1, accelerator: cpu, log_every_steps: 1}\n"
    )
    entry = Path(sys.executable).with_name("posepart")
    command = [str(entry) if entry.exists() else sys.executable, *([] if entry.exists() else ["-m", "posepart.cli"]),
               "train", "--config", str(config), "--train", str(data["train"]), "--val", str(data["val"]),
               "--set", "train.devices=2", "--set", "train.strategy=ddp", "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2  # 8 images / 2 ranks / batch 2
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def _straight_cli_run(data: dict[str, Path], tmp_path: Path) -> tuple[list[str], dict[str, str], dict]:
    """`posepart train` of a tiny 20-epoch config run whole in a subprocess: (the command without its --out folder,
    its environment, the run's last.ckpt). Every run of the command is the same kind of process (one thread): the
    same float sums, so an interrupted and resumed run can be compared with it bit for bit. The tests stop it once
    the first epoch's last.ckpt is written: 38 steps later it would end (with 10, a test process starved of the CPU
    by a parallel test once sent its signal too late)."""
    from posepart.engine.config import dump_config

    config = dump_config(tiny(data, "train.max_epochs=20", val=False), tmp_path / "tiny.yaml")
    command = [sys.executable, "-m", "posepart.cli", "train", "--config", str(config), "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command + [str(tmp_path / "straight")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return command, env, load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")


def test_a_stop_requested_by_the_caller_saves_the_step_and_resumes_exactly(data, tmp_path):
    """`train(stop_requested=...)` is polled after every step: True stops the run as SIGTERM does, at that step's
    end inside an epoch with last.ckpt saved there (`interrupted` "SIGTERM"), and a resume ends with the weights
    of the same run uninterrupted. What `posepart demo --jobs` workers stop on: before, they depended on a
    forwarded SIGTERM arriving while the training handled it."""
    cfg = tiny(data, "train.max_epochs=3", val=False)  # 8 images at batch 4: 2 steps an epoch
    straight = train(cfg, tmp_path / "straight", **QUIET)
    polled: list[int] = []
    cut = train(cfg, tmp_path / "cut", stop_requested=lambda: polled.append(1) or len(polled) >= 3, **QUIET)
    assert (cut.interrupted, cut.global_step, len(polled)) == ("SIGTERM", 3, 3)
    assert load_checkpoint(cut.last)["global_step"] == 3
    resumed = train(cfg, tmp_path / "cut", resume=cut.last, **QUIET)
    assert resumed.interrupted is None and resumed.global_step == straight.global_step == 6
    ended, whole = load_checkpoint(resumed.last)["state_dict"], load_checkpoint(straight.last)["state_dict"]
    assert all(torch.equal(whole[key], ended[key]) for key in whole)
    import threading

    event = threading.Event()  # an Event itself stands for its is_set
    event.set()
    assert train(cfg, tmp_path / "event", stop_requested=event, **QUIET).global_step == 1
    with pytest.raises(UsageError, match="stop_requested: expected a function that returns True to stop, or an "
                                         "Event, got bool"):
        train(cfg, tmp_path / "bool", stop_requested=True, **QUIET)


def test_a_model_file_whose_weights_changed_on_disk_is_refused(straight_run, tmp_path, capsys):
    """A .ckpt and a .safetensors record a digest of their weights, checked where they are read (load_model, a
    resume, export-weights, `model.init`): a bit flipped by a disk or a copy is an error naming the file. Before:
    torch.load does not check its zip's CRCs and safetensors checks nothing, so such a file ran as another model."""
    import zipfile

    from posepart.engine.checkpoint import DIGEST_KEY, export_weights

    ckpt = tmp_path / "damaged.ckpt"
    shutil.copy(straight_run.last, ckpt)
    biggest = max((i for i in zipfile.ZipFile(ckpt).infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(ckpt.read_bytes())  # stored, not compressed: the entry's bytes are the tensor's
    data[biggest.header_offset + 30 + len(biggest.filename) + len(biggest.extra) + biggest.file_size // 2] ^= 0x10
    ckpt.write_bytes(bytes(data))
    assert torch.load(ckpt, weights_only=True)  # torch itself reads it without a word
    damaged = "damaged.ckpt: its weights are not those it was written with"
    with pytest.raises(CheckpointError, match=damaged):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match=damaged):
        export_weights(ckpt, tmp_path / "w.safetensors")
    assert cli.main(["train", "--config", str(straight_run.out / "config.yaml"), "--resume", str(ckpt),
                     "--out", str(tmp_path / "resumed")]) == 2
    assert damaged in capsys.readouterr().err
    # the advice holds: a file edited on purpose loads once its record is removed
    edited = load_checkpoint(straight_run.last)
    edited["state_dict"][next(iter(edited["state_dict"]))].mul_(2)
    del edited["posepart"][DIGEST_KEY]
    torch.save(edited, tmp_path / "edited.ckpt")
    load_model(tmp_path / "edited.ckpt")

    weights = export_weights(straight_run.last, tmp_path / "w.safetensors")
    load_model(weights)
    data = bytearray(weights.read_bytes())  # safetensors: the header's length, the header, the tensors' bytes
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + (len(data) - header) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="w.safetensors: its weights are not those it was written with"):
        load_model(weights)


def test_kill_9_then_resume_is_bit_identical(data, tmp_path):
    """`posepart train` killed with SIGKILL once it has saved an epoch, then `--resume`d from its last.ckpt, ends
    with exactly the weights and optimizer state of the same run uninterrupted (checkpoints are written atomically
    at epoch ends; data order and RNGs are functions of seed, epoch and step)."""
    import time

    command, env, straight = _straight_cli_run(data, tmp_path)
    command.append(str(tmp_path / "cut"))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed mid-run, not finished
    killed_at = load_checkpoint(last)["global_step"]
    assert 0 < killed_at < straight["global_step"]
    resumed = subprocess.run(command + ["--resume", str(last)], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = straight, load_checkpoint(last)
    assert a["global_step"] == b["global_step"] == 40
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for i, state in a["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer_states"][0]["state"][i][name]), (i, name)


def test_sigterm_and_ctrl_c_save_the_step_and_resume_exactly(data, tmp_path):
    """SIGTERM (a preemption, `timeout`, `docker stop`) and a first Ctrl-C stop `posepart train` at the end of the
    step in progress with last.ckpt saved there, exit 128 + the signal and say how to continue; `--resume` then ends
    with exactly the uninterrupted run's weights. Before: SIGTERM exited 0 and Ctrl-C 1, both without saving the
    epoch in progress and without a word."""
    command, env, straight = _straight_cli_run(data, tmp_path)
    # SIGTERM to the whole process group, as Slurm and systemd send it, with loader workers (before, they died first
    # and the run with them, of a DataLoader error); Ctrl-C to the process alone
    for sent, workers in ((signal.SIGTERM, 2), (signal.SIGINT, 0)):
        _stop_and_resume(command + [str(tmp_path / sent.name), "--set", f"data.workers={workers}"], env, sent,
                         to_group=bool(workers), straight=straight)


def test_a_signal_while_spawned_loader_workers_start_stops_the_run_as_it_should(data, tmp_path):
    """A walkthrough under the "spawn" start method (macOS, Windows): a spawned loader worker runs with the default
    signal handlers while it imports torch and posepart (seconds, at every loader start), so SIGTERM to the process
    group killed it then: a DataLoader traceback (exit 1) with the epoch lost, or a run that never ended. Workers now
    start with both signals blocked until they ignore them."""
    import time

    from cli_helpers import child_processes
    from posepart.engine.config import dump_config

    config = dump_config(tiny(data, "train.max_epochs=50", "data.workers=2", val=False), tmp_path / "tiny.yaml")
    driver = ("import multiprocessing, sys; multiprocessing.set_start_method('spawn', force=True); "
              "from posepart.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", driver, "train", "--config", str(config), "--out", str(out)],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)

    def loader_workers() -> list[str]:  # the run's children but multiprocessing's resource tracker
        return [pid for pid, line in child_processes(process.pid).items() if b"resource_tracker" not in line]

    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:  # an epoch done, then
        time.sleep(0.05)
    seen = set(loader_workers())
    while not set(loader_workers()) - seen and time.monotonic() < deadline:  # the next epoch's workers starting
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        err = process.communicate(timeout=90)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"SIGTERM did not stop the run: {process.communicate()[1][-2000:]}") from None
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert f"interrupted by SIGTERM at step {load_checkpoint(out / 'checkpoints' / 'last.ckpt')['global_step']}" in err


def _stop_and_resume(command: list[str], env: dict[str, str], sent: signal.Signals, *, to_group: bool,
                     straight: dict | None) -> None:
    """Run `posepart train` (`command` ends with its --out folder and settings), send `sent` once its first
    last.ckpt is written (to its process group, or to the launched process alone), check that it stopped at a
    step's end with last.ckpt saved there and said so; then, given the uninterrupted run's last.ckpt, `--resume` and
    check that it ends with the same weights, bit for bit."""
    import time

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    last = Path(command[command.index("--out") + 1]) / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, sent) if to_group else process.send_signal(sent)
    try:
        err = process.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:  # before: DDP ranks hung in a collective
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"{sent.name} did not stop the run: {process.communicate()[1][-2000:]}") from None
    assert process.returncode == 128 + sent, err[-2000:]
    stopped_at = load_checkpoint(last)["global_step"]
    out = last.parent.parent
    assert (f"interrupted by {sent.name} at step {stopped_at}: continue with: posepart train --config "
            f"{out / 'config.yaml'} --resume {last} --out {out}") in err
    if straight is None:
        return
    assert 0 < stopped_at < straight["global_step"]
    resumed = subprocess.run(command + ["--resume", str(last)], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ended = load_checkpoint(last)
    assert ended["global_step"] == straight["global_step"]
    for key in straight["state_dict"]:
        assert torch.equal(straight["state_dict"][key], ended["state_dict"][key]), (sent.name, key)


@pytest.mark.slow
def test_signals_stop_ddp_ranks_at_one_step_and_resume_exactly(data, tmp_path):
    """Two DDP processes (gloo): SIGTERM to the process group (Slurm signals every task) stops both ranks at the same
    step's end with last.ckpt saved there, and the resumed run ends as the uninterrupted one; a signal to the
    launching process alone (`kill PID`, a Ctrl-C there) stops them too. Before: Lightning's SIGTERM handler
    broadcast from inside the handler and each rank stopped where its own signal landed: the ranks hung in a
    collective in 2 runs of 3 (and in 3 of 4 with the signal to the launching process alone)."""
    from posepart.engine.config import dump_config

    cfg = tiny(data, "train.max_epochs=20", "data.batch_size=2", "train.devices=2", "train.strategy=ddp", val=False)
    command = [sys.executable, "-m", "posepart.cli", "train", "--config", str(dump_config(cfg, tmp_path / "ddp.yaml")),
               "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    done = subprocess.run(command + [str(tmp_path / "straight")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert straight["global_step"] == 40  # 8 images / 2 ranks / batch 2, 20 epochs
    _stop_and_resume(command + [str(tmp_path / "group")], env, signal.SIGTERM, to_group=True, straight=straight)
    _stop_and_resume(command + [str(tmp_path / "launcher")], env, signal.SIGINT, to_group=False, straight=None)


@pytest.fixture(scope="module")
def six_epochs(data, tmp_path_factory) -> tuple[Any, TrainResult]:
    """A tiny run of 6 epochs of 2 steps, trained whole in this process: (its config, its result)."""
    cfg = tiny(data, "train.max_epochs=6", val=False)
    return cfg, train(cfg, tmp_path_factory.mktemp("six_epochs"), **QUIET)


@pytest.mark.parametrize("when, stopped_at", [("inside an epoch", 5), ("at an epoch's last step", 6),
                                              ("at an epoch's end", 7), ("during validation", 7)])
def test_a_stop_by_signal_wherever_it_lands_resumes_exactly(six_epochs, data, tmp_path, when, stopped_at):
    """A real SIGTERM sent to this process during a step (inside an epoch, or an epoch's last step, before its end
    hooks), after an epoch's end hooks (its last.ckpt written already), or during validation stops the run at the
    end of that step, or of the next step when none is in progress, with last.ckpt saved there: the resumed run ends
    as the uninterrupted one. Before: a first version saved an epoch's end again with its counters bumped (the
    resumed run skipped an epoch), and a signal during validation lost the epoch it validated."""
    from lightning.pytorch.callbacks import Callback

    class Signal(Callback):  # sends SIGTERM to this process at a chosen moment
        def on_train_batch_start(self, trainer, *args) -> None:
            if (when, trainer.global_step) in (("inside an epoch", 4), ("at an epoch's last step", 5)):
                os.kill(os.getpid(), signal.SIGTERM)

        def on_train_epoch_end(self, trainer, *args) -> None:
            if when == "at an epoch's end" and trainer.global_step == 6:
                os.kill(os.getpid(), signal.SIGTERM)

        def on_validation_batch_start(self, trainer, *args) -> None:
            if when == "during validation" and trainer.global_step == 6:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg, straight = six_epochs
    if when == "during validation":  # validation leaves the training as it is: the same straight run
        cfg = tiny(data, "train.max_epochs=6")
    cut = train(cfg, tmp_path / "cut", callbacks=[Signal()], **QUIET)
    assert cut.interrupted == "SIGTERM" and load_checkpoint(cut.last)["global_step"] == stopped_at
    resumed = train(cfg, tmp_path / "cut", resume=cut.last, **QUIET)
    assert resumed.global_step == straight.global_step == 12 and resumed.interrupted is None
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_a_stopped_run_leaves_no_progress_bar_open_and_no_seed_behind(data, tmp_path):
    """A notebook walkthrough: a run stopped by a Ctrl-C left Lightning's bar open (Lightning closes it at an epoch's
    end), so the kernel's next bars drew a row lower and the stale one printed itself again when collected; and any
    run left the process's random generators seeded by its own seed."""
    from tqdm import tqdm

    import random

    random.seed(5)
    open_before, draw, seed_before = len(tqdm._instances), random.getstate(), os.environ.get("PL_GLOBAL_SEED")
    cut = train(tiny(data, "train.max_epochs=6", val=False), tmp_path / "cut", callbacks=[_sigterm_at(3)],
                enable_model_summary=False)  # with its progress bar
    assert cut.interrupted == "SIGTERM" and len(tqdm._instances) == open_before
    # nor its seeding: the caller's random state and Lightning's seed variables as they were
    assert random.getstate() == draw and os.environ.get("PL_GLOBAL_SEED") == seed_before


def _sigterm_at(step: int | None = None, *, sanity_check: bool = False) -> pl.Callback:
    """A callback that sends SIGTERM to this process as step `step + 1` starts, or in the sanity check."""
    class Sigterm(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)

        def on_sanity_check_start(self, trainer, *args) -> None:
            if sanity_check:
                os.kill(os.getpid(), signal.SIGTERM)

    return Sigterm()


def test_a_stop_at_an_epochs_last_step_keeps_its_validation(data, tmp_path):
    """SIGTERM in an epoch's last step stops the run after that epoch's validation and checkpoint, with the metrics
    of an uninterrupted epoch. Before: Lightning validated with the stop already set, so validation ended after its
    first batch, and the resumed run never validated that epoch."""
    cfg = tiny(data, "data.batch_size=2")  # 4 steps per epoch, 2 validation batches
    straight = train(cfg, tmp_path / "straight", **QUIET)
    cut = train(cfg, tmp_path / "cut", callbacks=[_sigterm_at(3)], **QUIET)
    assert cut.interrupted == "SIGTERM" and load_checkpoint(cut.last)["global_step"] == 4
    assert _validation_rows(cut.out) == _validation_rows(straight.out)[:1]  # the first epoch's, whole
    resumed = train(cfg, tmp_path / "cut", resume=cut.last, **QUIET)
    assert _validation_rows(resumed.out) == _validation_rows(straight.out)


def test_a_sigterm_before_the_first_step_and_one_at_the_last(six_epochs, data, tmp_path):
    """A SIGTERM in the sanity check (Lightning's handler was installed then, ours only at the first step) stops the
    run at the end of its first step, saved; one in the run's last step lets it finish whole, and says it came.
    Before: the first trained a step and exited 0 with nothing saved, the second reported a finished run as
    interrupted (exit 143), which --resume then continued for 0 steps."""
    early = train(tiny(data), tmp_path / "early", callbacks=[_sigterm_at(sanity_check=True)], **QUIET)
    assert early.interrupted == "SIGTERM" and load_checkpoint(early.last)["global_step"] == 1
    cfg, straight = six_epochs
    late = train(cfg, tmp_path / "late", callbacks=[_sigterm_at(11)], **QUIET)
    assert late.interrupted is None and late.signal_received == "SIGTERM" and late.global_step == 12
    a, b = load_checkpoint(straight.last), load_checkpoint(late.last)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_a_signal_at_the_step_the_time_budget_ends_lets_it_end_so(data, tmp_path, monkeypatch):
    """--max-minutes ending a run at the step in which a SIGTERM is decided: the run ends as the budget ends it
    (its validation whole, last.ckpt at that step), and says the signal came. Before: Lightning's validation at the
    budget's end ran with the stop set and ended after its first batch."""
    from posepart.engine.trainer import LaunchTimer

    def budget_ends_at_step_3(self, trainer):  # the timer's check, at the end of step 3
        trainer.should_stop = trainer.should_stop or trainer.global_step >= 3

    monkeypatch.setattr(LaunchTimer, "_check_time_remaining", budget_ends_at_step_3)
    cfg = tiny(data, "data.batch_size=2")  # 2 validation batches
    runs = [train(cfg, tmp_path / name, max_minutes=60, callbacks=callbacks, **QUIET)
            for name, callbacks in (("budget", []), ("both", [_sigterm_at(2)]))]
    assert runs[1].interrupted is None and runs[1].signal_received == "SIGTERM"
    assert [load_checkpoint(run.last)["global_step"] for run in runs] == [3, 3]
    validated = [_validation_rows(run.out) for run in runs]
    assert validated[0] and validated[1] == validated[0]


@pytest.mark.parametrize("when", ["before training", "a second Ctrl-C"])
def test_a_ctrl_c_that_stops_at_once_is_an_interruption(data, tmp_path, when):
    """A Ctrl-C before the first step (data setup, the sanity check) or a second one during a step stops at once:
    `train` raises KeyboardInterrupt (the CLI: "interrupted", exit 130) and Ctrl-C works again afterwards. Before:
    Lightning's shutdown exited 1 (SystemExit), as for a failure, and left Ctrl-C ignored for the rest of the
    process."""
    from lightning.pytorch.callbacks import Callback

    class CtrlC(Callback):
        def on_fit_start(self, trainer, *args) -> None:
            if when == "before training":
                os.kill(os.getpid(), signal.SIGINT)

        def on_train_batch_start(self, trainer, *args) -> None:
            if when == "a second Ctrl-C" and trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(data), tmp_path / "run", callbacks=[CtrlC()], **QUIET)
    assert signal.getsignal(signal.SIGINT) is before


def test_settings_of_one_process_are_refused_before_the_processes_start(data, tmp_path):
    """torchjd's aggregators and GradNorm take gradients that DDP's hooks do not see. Before, the refusal came from
    every process once Lightning had started them (one error line each), after config.yaml was written."""
    cfg = tiny(data, "loss.aggregator=upgrad", "train.devices=2", "train.strategy=ddp", val=False)
    with pytest.raises(ConfigError, match="loss.aggregator: 'upgrad' runs in one process only; this run has 2"):
        train(cfg, tmp_path / "run", **QUIET)
    assert not (tmp_path / "run" / "config.yaml").exists()
    earlier = train(tiny(data, "train.max_steps=1", val=False), tmp_path / "earlier", **QUIET)
    with pytest.raises(ConfigError, match="runs in one process only"):  # --overwrite: the earlier run stays
        train(cfg, tmp_path / "earlier", overwrite=True, **QUIET)
    assert earlier.last.is_file() and (tmp_path / "earlier" / "config.yaml").is_file()


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_strategies_whose_processes_lightning_starts_itself_are_refused(data, tmp_path, strategy):
    """ddp_spawn and its kin train in child processes that keep the loop's counters and the stop on a signal to
    themselves (a walkthrough: "trained 0 epochs (0 steps)" for a whole run; SIGTERM to the process group killed it,
    exit -15, the epoch in progress lost). Refused before any work, with the way that works."""
    cfg = tiny(data, "train.devices=2", f"train.strategy={strategy}", "train.max_steps=3", val=False)
    with pytest.raises(ConfigError, match=f"train.strategy='{strategy}': Lightning would train in 2 child processes "
                                          f"it starts .* Set train.strategy=ddp .* or train.devices=1$"):
        train(cfg, tmp_path / "run", **QUIET)
    assert not (tmp_path / "run" / "config.yaml").exists()
    one = tiny(data, "train.devices=1", f"train.strategy={strategy}", "train.max_steps=3", val=False)
    with pytest.raises(ConfigError, match=r"in 1 child process it starts .* keeps .* to itself. Set "
                                          r"train.strategy=auto \(one device: one process\)$"):
        train(one, tmp_path / "run", **QUIET)


def test_a_resume_in_another_number_of_processes_says_it_is_another_run(data, tmp_path):
    """The data is sharded and batched per process: a run resumed with other `train.devices` goes on but is not the
    run it was, and its epochs are counted in the new steps per epoch (a docs walkthrough: "trained 2 epochs" for 3).
    Before: no word. Checkpoints record the processes they trained in (`provenance`)."""
    cfg = tiny(data, "train.max_epochs=1", val=False)
    first = train(cfg, tmp_path / "run", **QUIET)
    checkpoint = load_checkpoint(first.last)
    assert checkpoint["posepart"]["provenance"]["world_size"] == 1
    checkpoint["posepart"]["provenance"]["world_size"] = 2  # as a 2-process run writes it
    torch.save(checkpoint, first.last)
    with pytest.warns(PosepartWarning, match="resumed in 1 process\\(es\\) where the run trained in 2"):
        train(replace(cfg, train=replace(cfg.train, max_epochs=2)), tmp_path / "run", resume=first.last, **QUIET)


def test_a_resume_that_trains_otherwise_says_so_and_one_from_non_finite_state_is_refused(data, tmp_path):
    """A resume that changes what the run learns (its seed, augmentation, loss weights, precision, or the number of
    images of its data) goes on with the new values and says that it is no longer the run it continues; settings that
    change nothing learnt (where the data lies, logging) pass without a word. A checkpoint holding NaN or inf in its
    weights or optimizer state is refused before training. Before (a walkthrough): all silent, and such a checkpoint
    trained a step, then failed with "loss became nan ... (first step): lower optim.lr"."""
    cfg = tiny(data, "train.max_epochs=2", val=False)
    for run in ("same", "other"):  # stopped after its first step
        train(cfg, tmp_path / run, stop_requested=lambda: True, **QUIET)
    moved = tmp_path / "moved"
    shutil.copytree(data["train"], moved)  # the same data elsewhere, logged otherwise: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosepartWarning)
        train(tiny(data, f"data.train={moved}", "train.log_every_steps=5", "train.max_epochs=2", val=False),
              tmp_path / "same", resume=tmp_path / "same" / "checkpoints" / "last.ckpt", **QUIET)
    smaller = write_synth(tmp_path / "smaller", n=4, seed=3, size=64)
    other = tiny(data, "train.seed=1", "data.augment.rotate_deg=0", f"data.train={smaller}", "train.max_epochs=2",
                 val=False)
    last = tmp_path / "other" / "checkpoints" / "last.ckpt"
    with pytest.warns(PosepartWarning, match=r"trains otherwise than the checkpoint's run: data.augment.rotate_deg "
                                             r"30.0 -> 0.0; train.seed 0 -> 1; source smaller: 8 training images -> 4"):
        train(other, tmp_path / "other", resume=last, **QUIET)
    checkpoint = load_checkpoint(last)
    momentum = next(iter(checkpoint["optimizer_states"][0]["state"].values()))
    next(value for value in momentum.values() if isinstance(value, torch.Tensor) and value.ndim)[0] = float("inf")
    torch.save(checkpoint, tmp_path / "inf.ckpt")
    with pytest.raises(CheckpointError, match=r"inf.ckpt: its optimizer state 0.state.\d+.\w+ holds NaN or inf"):
        train(cfg, tmp_path / "inf", resume=tmp_path / "inf.ckpt", **QUIET)
    checkpoint = load_checkpoint(last)  # an EMA run trains on from these, its state_dict holding the average
    checkpoint["current_model_state"] = {"w": torch.tensor([float("nan")])}  # (a review)
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"nan.ckpt: its training weights w holds NaN"):
        train(cfg, tmp_path / "nan", resume=tmp_path / "nan.ckpt", **QUIET)
    # a mixed run's sources: their settings, not where their data lies (a review: all of data.sources was ignored)
    mixed = tiny(data, f"data.sources=[{{name: s, train: {data['train']}}}]", "data.train=null", "train.max_epochs=2",
                 val=False)
    train(mixed, tmp_path / "mixed", stop_requested=lambda: True, **QUIET)
    heavier = tiny(data, f"data.sources=[{{name: s, train: {moved}, weight: 2}}]", "data.train=null",
                   "train.max_epochs=2", val=False)
    with pytest.warns(PosepartWarning, match=r"trains otherwise than the checkpoint's run: source s: weight 1.0 -> "
                                             r"2.0; the run"):
        train(heavier, tmp_path / "mixed", resume=tmp_path / "mixed" / "checkpoints" / "last.ckpt", **QUIET)


def test_flatten_metrics_logs_per_class_iou_and_per_joint_pckh() -> None:
    """The validation scalars logged to TensorBoard/CSV: headline figures, IoU per part class, PCKh per joint and
    the AP of the synthetic slices (as the report's tables), None and non-numbers left out."""
    from posepart.engine.module import flatten_metrics
    from posepart.schema import Schema

    schema = Schema.pascal_person_part()
    metrics = {"pose": {"ap": 0.25, "pck_dist": None, "pckh_per_joint": {"head": 0.75, "left_elbow": None},
                        "pck_dist_px_per_joint": {"head": 2.5, "neck": None},
                        "slices": {"view": {"back": {"people": 2, "ap": 0.125, "ap50": 0.5}},
                                   "pose": {"sit": {"people": 1, "ap": None, "ap50": None}}}},
               "segmentation": {"mean_iou": 0.5, "iou_per_class": [0.9, None] + [0.4] * 5}, "images": 3}
    flat = flatten_metrics(metrics, schema)
    assert flat == {"val/pose/ap": 0.25, "val/pose/pckh/head": 0.75, "val/pose/ap/view/back": 0.125,
                    "val/seg/mean_iou": 0.5,
                    "val/seg/iou/background": 0.9, **{f"val/seg/iou/{c}": 0.4 for c in schema.part_classes[2:]}}
