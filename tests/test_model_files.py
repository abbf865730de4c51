"""Model files: non-finite weights are refused with an error naming the file and the tensor; a save killed midway
leaves no temp file behind once the next run starts."""

from __future__ import annotations

import json
import re

import pytest
import torch
from inference_helpers import write_checkpoint

from posepart.cli import main
from posepart.engine.checkpoint import load_model
from posepart.schema import Schema

PASCAL = Schema.pascal_person_part()


def test_non_finite_weights_are_refused_at_load(tmp_path, capsys):
    """A checkpoint or .safetensors whose weights hold a NaN is an error naming the file and the tensor, in the API
    and in `posepart evaluate` / `predict` (exit status 2), not a model that scores 0."""
    from safetensors.torch import save_file

    from posepart.data.synth import write_synth
    from posepart.engine.checkpoint import CheckpointError, load_checkpoint

    ckpt = write_checkpoint(tmp_path / "nan.ckpt", PASCAL)
    checkpoint = load_checkpoint(ckpt)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and "trunk" in k)
    checkpoint["state_dict"][key][0] = float("nan")
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError, match=rf"nan.ckpt: refusing non-finite weights .*{key[len('model.'):]}"):
        load_model(ckpt)
    st = tmp_path / "nan.safetensors"
    metadata = {"format": "posepart-weights-v1", "schema": json.dumps(PASCAL.to_category()),
                "config": json.dumps(checkpoint["posepart"]["config"])}
    save_file({k[len("model."):]: v.contiguous() for k, v in checkpoint["state_dict"].items()}, str(st), metadata)
    with pytest.raises(CheckpointError, match="nan.safetensors: refusing non-finite weights"):
        load_model(st)
    root = write_synth(tmp_path / "data", n=2, seed=1, size=64)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root)]) == 2
    assert main(["predict", "--checkpoint", str(st), str(root / "images"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("refusing non-finite weights") == 2


@pytest.mark.parametrize("edit, words", [
    (lambda c: c.update(state_dict=5), "state_dict is not a mapping of names to tensors"),  # AttributeError
    (lambda c: c["state_dict"].update(extra=3), "state_dict is not a mapping of names to tensors"),
    (lambda c: c.pop("state_dict"), "state_dict is not a mapping of names to tensors"),  # KeyError
    (lambda c: c["posepart"].update(sources=[5]), "recorded training sources are not a list"),  # AttributeError
    (lambda c: c["posepart"].update(sources=[{"tasks": 5}]), "recorded training sources are not a list"),
    # a config edited to width 200: before, 11.8 GB allocated before the shapes were compared
    (lambda c: c["posepart"]["config"]["model"].update(width=200.0), "weights do not fit the model its config"),
])
def test_an_edited_checkpoint_is_one_error(tmp_path, edit, words):
    """Each edit of a checkpoint's entries was a traceback (or a huge allocation) when the model was loaded."""
    from posepart.engine.checkpoint import CheckpointError, load_checkpoint

    ckpt = write_checkpoint(tmp_path / "m.ckpt", PASCAL)
    checkpoint = load_checkpoint(ckpt)
    edit(checkpoint)
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError, match=words):
        load_model(ckpt)


def test_interrupted_saves_leave_no_orphans_after_the_next_start(tmp_path):
    """A save killed between writing its temp file and the rename leaves `.last.ckpt.tmp-PID`; the next `train`
    removes it (its process is gone) and keeps a live process's temp file."""
    import os
    import subprocess
    import sys

    from posepart.data.synth import write_synth
    from posepart.files import remove_orphans
    from posepart.engine.config import load_config
    from posepart.engine.train import train

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    orphan, live = folder / f".last.ckpt.tmp-{dead_pid}", folder / f".best.ckpt.tmp-{os.getpid()}"
    orphan.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    assert remove_orphans(tmp_path / "nothing-here") == []
    root = write_synth(tmp_path / "data", n=4, seed=2, size=64)
    config = load_config(None, ["model.name=paf_vgg16", "model.stages=1", "model.width=0.125", f"data.train={root}",
                                "data.input_size=64", "data.batch_size=4", "data.workers=0", "train.max_steps=1",
                                "train.accelerator=cpu", "train.devices=1", "train.best_metric=val/total"])
    train(config, tmp_path / "run", enable_progress_bar=False, enable_model_summary=False)
    assert not orphan.exists() and live.exists()
    assert sorted(p.name for p in folder.iterdir()) == [live.name, "last.ckpt"]


def test_max_minutes_is_a_budget_for_each_launch(tmp_path, monkeypatch):
    """A run cut by --max-minutes and resumed with the same budget trains on (Lightning's own timer restored the
    elapsed time from the checkpoint: the resumed launch stopped at once with 0 steps and exit status 0). The timer's
    clock is a counter, 1 s per reading, so where each launch stops does not depend on this machine's speed."""
    import itertools
    from types import SimpleNamespace

    import lightning.pytorch.callbacks.timer

    from posepart.data.synth import write_synth
    from posepart.engine.config import load_config
    from posepart.engine.train import train

    ticks = itertools.count()
    monkeypatch.setattr(lightning.pytorch.callbacks.timer, "time", SimpleNamespace(monotonic=lambda: next(ticks)))

    root = write_synth(tmp_path / "data", n=4, seed=3, size=64)
    config = load_config(None, ["model.name=paf_vgg16", "model.stages=1", "model.width=0.125", f"data.train={root}",
                                "data.input_size=64", "data.batch_size=4", "data.workers=0", "train.max_steps=100000",
                                "train.max_epochs=-1", "train.accelerator=cpu", "train.devices=1",
                                "train.best_metric=val/total"])
    quiet = dict(enable_progress_bar=False, enable_model_summary=False)
    first = train(config, tmp_path / "run", max_minutes=0.04, **quiet)
    assert first.last is not None and 0 < first.global_step < 100000
    second = train(config, tmp_path / "run", resume=first.last, max_minutes=0.04, **quiet)
    assert second.global_step > first.global_step


def test_a_second_writer_into_a_busy_out_folder_is_refused(tmp_path, capsys):
    """`predict` or `train` into an --out another posepart process is writing is refused (exit 2), not mixed; the
    lock is the kernel's (flock), so it is gone once its holder ends, even after kill -9, and the folder is usable."""
    from posepart.data.synth import write_synth
    from posepart.files import OutputInUse, lock_output

    ckpt = write_checkpoint(tmp_path / "m.ckpt", PASCAL, gain=40.0)
    root = write_synth(tmp_path / "data", n=2, seed=4, size=64)
    out = tmp_path / "out"
    predict = ["predict", "--checkpoint", str(ckpt), str(root / "images"), "--out", str(out), "--quiet"]
    train = ["train", "--config", str(tmp_path / "c.yaml"), "--train", str(root), "--out", str(out)]
    (tmp_path / "c.yaml").write_text("model: {name: paf_vgg16, stages: 1, width: 0.125}\n"
                                     "data: {input_size: 64, batch_size: 2, workers: 0}\n"
                                     "train: {max_steps: 1, accelerator: cpu, devices: 1, best_metric: val/total}\n")
    with lock_output(out):  # another process's run in progress
        with pytest.raises(OutputInUse, match="being written by another posepart process"):
            with lock_output(out):
                pass
        capsys.readouterr()
        assert main(predict) == 2
        assert main(train) == 2
        err = capsys.readouterr().err
        assert err.count("is being written by another posepart process") == 2
        assert not (out / "keypoints.json").exists() and not (out / "checkpoints").exists()
    assert main(predict) == 0 and (out / "keypoints.json").is_file()
    (tmp_path / "file").write_text("")
    assert main([*predict[:-2], str(tmp_path / "file"), "--quiet"]) == 2  # --out names a file
    assert "not a folder" in capsys.readouterr().err


def test_files_written_follow_the_umask_as_open_does(tmp_path):
    """A group's shared folder (umask 002): the lock and atomically written files stay group-writable, so a colleague
    can take the lock after you (the first hardening of these writes created them 0o644)."""
    import os

    from posepart.files import lock_output, write_json_atomic

    old = os.umask(0o002)
    try:
        with lock_output(tmp_path / "shared") as lock:
            pass
        written = tmp_path / "shared" / "summary.json"
        write_json_atomic(written, {"x": 1})
    finally:
        os.umask(old)
    assert lock.stat().st_mode & 0o777 == 0o664 and written.stat().st_mode & 0o777 == 0o664


def test_an_uppercase_safetensors_extension_loads(tmp_path, capsys):
    """`export-weights --out W.SAFETENSORS` is accepted (the extension is read case-insensitively there and by the
    Predictor), but before, load_model compared the suffix with ".safetensors" as written, so the file went to
    torch.load: "Weights only load failed", in the API and in `posepart predict`."""
    from posepart.data.synth import write_synth
    from posepart.inference.predictor import Predictor

    ckpt = write_checkpoint(tmp_path / "m.ckpt", PASCAL, gain=40.0)
    weights = tmp_path / "W.SAFETENSORS"
    assert main(["export-weights", "--checkpoint", str(ckpt), "--out", str(weights)]) == 0
    assert load_model(weights).schema == PASCAL
    image = write_synth(tmp_path / "data", n=1, seed=1, size=64) / "images"
    assert Predictor.from_checkpoint(weights)(str(next(image.iterdir()))).ok
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(weights), str(image), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert "error" not in capsys.readouterr().err


def test_a_newer_versions_model_file_says_so(tmp_path):
    """A model file from a newer posepart (a later format tag, a setting this version does not know) was refused as a
    foreign file ("metadata format 'posepart-weights-v2', expected ...", "unknown key"), not said to need an update."""
    from safetensors.torch import save_file

    from posepart.engine.checkpoint import CheckpointError, load_checkpoint
    from posepart.files import code_digest
    from posepart.inference.backends import BackendError, ModelInfo

    ckpt = write_checkpoint(tmp_path / "m.ckpt", PASCAL)
    checkpoint = load_checkpoint(ckpt)
    checkpoint["posepart"]["config"]["model"]["new_setting"] = 1
    checkpoint["posepart"]["provenance"] = {"posepart": "0.2.0", "code": "f" * 40}
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError, match=r"new_setting: unknown key.*posepart 0.2.0 at code ffffffffffff, this "
                                              rf"is code {code_digest()[:12]}: if that code is newer, update posepart"):
        load_model(ckpt)
    checkpoint["posepart"]["provenance"]["code"] = code_digest()  # this code's own file: no such hint
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError) as caught:
        load_model(ckpt)
    assert "update posepart" not in str(caught.value)
    checkpoint["posepart"].update(format="posepart-checkpoint-v2")  # a later layout of the entry
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError, match=re.escape("written by a newer posepart (format "
                                                        "'posepart-checkpoint-v2'; this version reads")):
        load_model(ckpt)

    state = {k[len("model."):]: v.contiguous() for k, v in checkpoint["state_dict"].items()}
    for tag, words in (("posepart-weights-v2", "written by a newer posepart (format 'posepart-weights-v2'; this "
                                               "version reads 'posepart-weights-v1'): update posepart"),
                       ("posepart-weights-v0", "not posepart weights (metadata format 'posepart-weights-v0')"),
                       ("posepart-weights-v\u00b2", "not posepart weights"),  # a review: int("²"), a traceback
                       ("posepart-weights-v" + "9" * 5000, "not posepart weights"),
                       ("other-weights-v2", "not posepart weights (metadata format 'other-weights-v2')")):
        save_file(state, str(tmp_path / "w.safetensors"), {"format": tag})
        with pytest.raises(CheckpointError, match=re.escape(words)):
            load_model(tmp_path / "w.safetensors")
    with pytest.raises(BackendError, match=re.escape("m.onnx: written by a newer posepart (format "
                                                     "'posepart-export-v2'")):
        ModelInfo.from_json(json.dumps({"format": "posepart-export-v2"}), "m.onnx")
