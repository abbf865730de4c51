"""The fuzz suite of broken datasets (tests/fuzz_datasets.py): `inspect`, `evaluate --oracle` and a short `train` must
each refuse a broken dataset with one `error:` line (exit 2) or report / skip-and-count what is broken; never a
traceback, never a silent result. docs/reliability.md lists the figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import refused, run_cli
from fuzz_datasets import VARIANTS

from posepart.data.synth import write_synth

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_cpu_joint.yaml"
TINY = ["model.width=0.125", "model.fc_width=32", "data.input_size=64", "data.batch_size=3", "data.workers=0",
        "train.max_epochs=1", "train.log_every_steps=1", "train.precision=32-true"]
TRAIN = ["--config", str(CONFIG), *(arg for value in TINY for arg in ("--set", value))]
LEAVES_THE_DATASET = {"image: file_name absolute", "image: file_name climbs out",
                      "image file: symlink out of the dataset", "part map: symlink out of the dataset"}
# what `inspect` says of variants that a looser check once caught for another reason (a file whose top level was the
# value popped; RLE counts cut inside a run where the variant means valid runs that cover too few pixels)
NAMED = {"annotation: no image_id": "annotations[0] image_id", "image: no file_name": "needs a string file_name",
         "json: no images key": "non-list 'images'",
         "segmentation: RLE counts one run short": "RLE runs cover 4095 pixels",  # the fixture's 64 x 64 image
         "segmentation: RLE counts end mid-run": "RLE counts end inside a run"}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_synth(tmp_path_factory.mktemp("fuzz") / "good", n=3, seed=0, size=64)


def broken(good: Path, tmp_path: Path, name: str) -> Path:
    root = tmp_path / "data"
    shutil.copytree(good, root)
    VARIANTS[name](root)
    return root


def test_the_suite_is_large_and_the_good_dataset_is_clean(good, tmp_path, capsys):
    assert len(VARIANTS) >= 80
    code, out, err = run_cli(["inspect", str(good)], capsys)
    assert code == 0 and "problems      0" in out, out + err
    code, out, err = run_cli(["evaluate", "--oracle", "--data", str(good), "--input-size", "64",
                              "--out", str(tmp_path / "m.json")], capsys)
    assert code == 0 and "skipped" not in json.loads((tmp_path / "m.json").read_text()), err
    code, out, err = run_cli(["train", "--train", str(good), "--out", str(tmp_path / "run"), *TRAIN], capsys)
    trained = (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # what a broken dataset's refusal is not
    assert code == 0 and trained, err[-3000:]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_inspect_and_oracle_refuse_or_report(good, tmp_path, capsys, name):
    root = broken(good, tmp_path, name)
    code, out, err = run_cli(["inspect", str(root)], capsys)
    if name in LEAVES_THE_DATASET:  # refused before anything is read, not read and then reported
        assert refused(code, err) and "file name" in err, f"inspect: exit {code}\n{err}"
    reported = code == 1 and "problems      0" not in out
    assert refused(code, err) or reported, f"inspect: exit {code}\n{out}\n{err}"
    assert NAMED.get(name, "") in out + err, f"inspect does not say {NAMED[name]!r}\n{out}\n{err}"
    metrics_file = tmp_path / "oracle.json"
    code, out, err = run_cli(["evaluate", "--oracle", "--data", str(root), "--input-size", "64",
                              "--out", str(metrics_file)], capsys)
    if not refused(code, err):
        assert code == 0, f"evaluate --oracle: exit {code}\n{err}"
        metrics = json.loads(metrics_file.read_text())
        assert metrics.get("skipped", 0) > 0, f"evaluate --oracle scored a broken dataset silently: {metrics}"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_short_train_refuses_or_counts(good, tmp_path, capsys, caplog, name):
    root = broken(good, tmp_path, name)
    code, out, err = run_cli(["train", "--train", str(root), "--out", str(tmp_path / "run"), *TRAIN], capsys)
    if refused(code, err):
        assert str(root) in err, err  # names the broken dataset's files (a refusal for another reason would not)
        return
    assert code == 0, f"train: exit {code}\n{err[-3000:]}"
    rows = (tmp_path / "run" / "csv").glob("version_*/metrics.csv")
    text = "".join(path.read_text() for path in rows)
    header, *values = text.splitlines()
    column = header.split(",").index("train/skipped")
    skipped = sum(float(row.split(",")[column]) for row in values if row.split(",")[column])
    assert skipped > 0, f"train used a broken dataset silently\n{err[-2000:]}"
    logged = err + caplog.text  # the console's log (pytest captures the logging records)
    assert "skipped a broken sample" in logged and str(root) in logged, "the first broken file is named in the log"
