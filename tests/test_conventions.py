"""The command line follows the conventions users know from torchvision, Lightning and pip (issue 17, section 3):
`--version`, shipped configs by name from any folder, `train --print-config`, defaults in every `--help`, and
`export` following the output's file extension."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import error_lines, refused, run_cli

import posepart
from posepart.cli import build_parser
from posepart.engine.config import absolute_paths, config_from_dict, load_config, shipped_config, shipped_configs
from posepart.errors import UsageError
from posepart.predict_cli import export_format


def test_version(capsys):
    """With the code's digest, what checkpoints and metrics record as `code` (a walkthrough: no command printed it,
    and the release number is the same on every commit)."""
    from posepart.files import code_digest

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"posepart {posepart.__version__} (code {code_digest()})"


def test_the_installed_package_reports_the_version_the_code_does():
    """pip's metadata reads `posepart.__version__` (pyproject's dynamic version): one place to bump. Before, the
    version was written in pyproject.toml and in posepart/__init__.py, and nothing kept them equal."""
    assert importlib.metadata.version("posepart") == posepart.__version__
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" not in project  # not written a second time


def test_every_extra_of_a_dependency_is_spelled_as_its_metadata_provides_it():
    """pip before 23.3 compares extras as written: `torchjd[quadprog_projector]` matched none of torchjd's
    (`quadprog-projector`), so pip 23.2 (Python 3.11's own) installed torchjd without the solvers and
    `loss.aggregator: upgrad` failed at its first step. (Newer pips normalise the names, so CI's would not notice.)"""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(line) for line in project["dependencies"]]
    wanted += [Requirement(line) for group in project["optional-dependencies"].values() for line in group]
    checked = 0
    for requirement in wanted:
        for extra in requirement.extras:
            provided = importlib.metadata.metadata(requirement.name).get_all("Provides-Extra") or []
            assert extra in provided, f"{requirement}: {requirement.name} provides {provided}"
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", ["demo_cpu_joint", "demo_cpu_joint.yaml"])
def test_shipped_config_by_name_from_any_folder(name, tmp_path, monkeypatch, capsys):
    """Before: `--config demo_cpu_joint` outside the repository was 'config file not found'."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["train", "--config", name, "--print-config", "--set", "optim.lr=0.01",
                              "--train", "data/train"], capsys)
    assert code == 0, err
    printed = config_from_dict(yaml.safe_load(out))
    expected = absolute_paths(load_config(shipped_config("demo_cpu_joint"), ["optim.lr=0.01", "data.train=data/train"]))
    assert printed.data.train == tmp_path / "data" / "train"  # as the run would write it: absolute
    assert printed == expected and printed.optim.lr == 0.01 and printed.model.name == "joint_vgg16"
    assert not (tmp_path / "config.yaml").exists() and list(tmp_path.iterdir()) == []  # printing trains nothing


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo_cpu_joint.yaml").write_text("model:\n  name: paf_vgg16\n")
    assert load_config("demo_cpu_joint.yaml").model.name == "paf_vgg16"  # the path, as written
    assert load_config("demo_cpu_joint").model.name == "joint_vgg16"  # no such file: the shipped config


def test_an_unknown_config_name_lists_the_shipped_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--config", "demo_cpu_jont", "--out", "run"], capsys)
    assert refused(code, err) and "demo_cpu_jont" in err
    assert all(name in err for name in shipped_configs()) and "demo_cpu_joint" in shipped_configs()
    assert not (tmp_path / "run").exists()


def test_train_needs_out_unless_printing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--config", "demo_cpu_joint"], capsys)
    assert refused(code, err) and "--out" in error_lines(err)[0]


def _parsers(parser: argparse.ArgumentParser, name: str = "posepart"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {verb}")


def test_every_option_is_explained_and_defaults_are_shown(capsys):
    """Before: `posepart demo --help` listed --out, --n-val and --seed without a word, and no default anywhere (and
    `synth`'s positional OUT had no word until a walkthrough found it)."""
    unexplained = [(name, a.option_strings or a.dest) for name, p in _parsers(build_parser()) for a in p._actions
                   if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert unexplained == []
    code, out, _ = run_cli(["synth", "--help"], capsys)
    assert code == 0 and "(default: 368)" in " ".join(out.split())  # --size
    assert "(default: 0)" in " ".join(out.split())  # --seed: a default of 0 is shown too
    assert "(default: None)" not in out and "(default: False)" not in out  # no noise for unset options
    from posepart.data.synth import DEMO_SIZE

    code, out, _ = run_cli(["demo", "--help"], capsys)  # before: "(default: posepart.demo.DEMO_SIZE)"
    assert code == 0 and f"(default: {DEMO_SIZE})" in " ".join(out.split())


def test_the_demos_data_is_one_fact():
    """`posepart demo`, `run_demo` and `posepart study` draw the same scenes by default, from the constants beside
    `SceneConfig.easy()` (the counts were literals in four places, the pose ablation's among them)."""
    import inspect

    from posepart.data.synth import DEMO_SIZE, DEMO_TRAIN_SCENES, DEMO_VAL_SCENES
    from posepart.demo import demo_size, run_demo

    parser = build_parser()
    for argv in (["demo"], ["study", "--out", "x"]):
        args = parser.parse_args(argv)
        assert (args.n_train, args.n_val, demo_size(args.size)) == (DEMO_TRAIN_SCENES, DEMO_VAL_SCENES, DEMO_SIZE)
    defaults = {name: p.default for name, p in inspect.signature(run_demo).parameters.items()}
    assert (defaults["n_train"], defaults["n_val"], defaults["size"]) == (DEMO_TRAIN_SCENES, DEMO_VAL_SCENES, DEMO_SIZE)


@pytest.mark.parametrize("out, given, expected", [("m.onnx", None, "onnx"), ("m.pt", None, "torchscript"),
                                                  ("M.ONNX", "onnx", "onnx"), ("m.pt", "torchscript", "torchscript")])
def test_export_format_follows_the_extension(out, given, expected):
    assert export_format(Path(out), given) == expected


@pytest.mark.parametrize("out, given, words", [("m.onnx", "torchscript", "contradicts"),
                                               ("m.pt", "onnx", "contradicts"),
                                               ("model.bin", None, ".onnx"), ("model", "onnx", ".onnx")])
def test_export_refuses_a_format_its_file_does_not_have(out, given, words, tmp_path, capsys):
    """Before: `export --format torchscript --out m.onnx` wrote TorchScript into a file named .onnx."""
    with pytest.raises(UsageError, match=words):
        export_format(Path(out), given)
    argv = ["export", "--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / out)]
    code, _, err = run_cli(argv + (["--format", given] if given else []), capsys)
    assert refused(code, err) and words in err and not (tmp_path / out).exists()


def test_long_jobs_show_progress(tmp_path, capsys):
    """Before: `posepart synth` and `posepart models` ran silently to the end (the demo's is in test_demo)."""
    import json

    code, out, err = run_cli(["synth", str(tmp_path / "s"), "--n", "6", "--size", "64"], capsys)
    assert code == 0 and "6/6" in err and "wrote 6 synthetic images" in out
    code, out, err = run_cli(["models", "--input-size", "64", "--width", "0.125", "--json"], capsys)
    assert code == 0 and "counting FLOPs" in err and json.loads(out)["input_size"] == 64  # stdout stays JSON


def test_legend_names_every_part_and_joint_colour():
    """Before: sheets and overlays showed colours with no key to them."""
    import numpy as np

    from posepart.schema import Schema
    from posepart.viz import LEGEND_MIN_WIDTH, grid, legend, with_legend

    schema = Schema.pascal_person_part()
    strip = legend(schema, 600)
    assert strip.shape[1] == 600 and strip.shape[0] > 0
    colours = {tuple(int(c) for c in schema.part_colours[i]) for i in range(1, schema.num_parts)}
    colours |= {tuple(c) for c in schema.joint_colours}
    present = {tuple(p) for p in strip.reshape(-1, 3)}
    assert colours <= present  # a swatch or dot of every colour (the names are drawn beside them)
    small = np.zeros((64, 64, 3), np.uint8)  # before (a walkthrough): a 64 px legend, 344 px tall, names cut
    shown = with_legend(small, schema)
    assert shown.shape[1] == LEGEND_MIN_WIDTH and np.array_equal(shown[:64, :64], small)
    assert (shown[:64, 64:] == 255).all() and shown.shape[0] - 64 == legend(schema, LEGEND_MIN_WIDTH).shape[0]
    assert 3 * legend(schema, LEGEND_MIN_WIDTH).shape[0] < legend(schema, 64).shape[0]  # a few lines, not one a name
    tiles = [np.zeros((32, 32, 3), np.uint8)] * 8
    plain, named = grid(tiles, columns=4, cell=32), grid(tiles, columns=4, cell=32, row_labels=["a model", "truth"])
    assert named.shape[1] > plain.shape[1] and (named[:, : named.shape[1] - plain.shape[1]] < 128).any()  # text
    assert grid(tiles, columns=4, cell=32, schema=schema).shape[0] > plain.shape[0]  # the legend below


@pytest.mark.parametrize("verb", [["inspect"], ["evaluate", "--oracle", "--data"],
                                  ["evaluate", "--checkpoint", "missing.ckpt", "--source"]])
def test_a_dataset_without_images_is_an_error(verb, tmp_path, capsys):
    """Before: `inspect` printed {"images": 0} and `evaluate --oracle` empty metrics, both with exit 0."""
    from posepart.data.writer import DatasetWriter
    from posepart.schema import Schema

    with DatasetWriter(tmp_path / "empty", Schema.pascal_person_part()):
        pass
    where = str(tmp_path / "empty")
    code, out, err = run_cli([*verb, f"empty={where}" if "--source" in verb else where], capsys)
    assert refused(code, err) and "no images" in err and where in err and out == ""


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path):
    """`posepart inspect DIR --json | head -2`: before, a BrokenPipeError traceback once head had read its lines."""
    from posepart.data.synth import write_synth

    root = write_synth(tmp_path / "data", n=2, seed=0, size=64)
    code = f"""
import os, sys
read, write = os.pipe()
os.close(read)  # the reader is gone before anything is written
os.dup2(write, 1)
from posepart.cli import main
rc = main(["inspect", {str(root)!r}, "--json"])
os.write(2, f"RC {{rc}}".encode())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip() == "RC 141" and done.returncode == 0, done.stderr
