"""Broken model files (truncated, empty, garbage, a folder, metadata that lies) through every verb that loads one:
an `error:` line and exit 2, never a traceback and never a model run from a broken file. docs/reliability.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from cli_helpers import error_lines, run_cli
from inference_helpers import write_checkpoint

from posepart import cli
from posepart.data.synth import write_synth
from posepart.schema import Schema

Breakage = Callable[[Path], None]


def _bytes(edit: Callable[[bytes], bytes]) -> Breakage:
    return lambda path: path.write_bytes(edit(path.read_bytes()))


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _safetensors_metadata(edit: Callable[[dict], None]) -> Breakage:
    """Rewrite the JSON metadata of a .safetensors file (8-byte little-endian header length, then the header)."""
    def breakage(path: Path) -> None:
        raw = path.read_bytes()
        size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + size])
        edit(header["__metadata__"])
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])
    return breakage


BREAKAGES: dict[str, Breakage] = {
    "empty": _bytes(lambda b: b""),
    "truncated": _bytes(lambda b: b[: len(b) // 2]),
    "garbage": _bytes(lambda b: b"\x00garbage" * 64),
    "a folder": _folder,
}
SAFETENSORS_ONLY: dict[str, Breakage] = {
    "metadata without schema": _safetensors_metadata(lambda m: m.pop("schema")),
    "metadata schema not JSON": _safetensors_metadata(lambda m: m.__setitem__("schema", "{not json")),
    "metadata config not JSON": _safetensors_metadata(lambda m: m.__setitem__("config", "[1, 2")),
    "metadata config of another width": _safetensors_metadata(
        lambda m: m.__setitem__("config", m["config"].replace('"width": 0.125', '"width": 0.25'))),
    "metadata schema of another model": _safetensors_metadata(
        lambda m: m.__setitem__("schema", json.dumps(Schema.coco().to_category()))),
}
CASES = [(kind, name) for kind in ("ckpt", "safetensors", "onnx") for name in BREAKAGES] + [
    ("safetensors", name) for name in SAFETENSORS_ONLY]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    ckpt = write_checkpoint(root / "model.ckpt", Schema.pascal_person_part())
    assert cli.main(["export-weights", "--checkpoint", str(ckpt), "--out", str(root / "model.safetensors")]) == 0
    assert cli.main(["export", "--checkpoint", str(ckpt), "--out", str(root / "model.onnx")]) == 0
    data = write_synth(root / "data", n=2, seed=1, size=64)
    return {"ckpt": ckpt, "safetensors": root / "model.safetensors", "onnx": root / "model.onnx", "data": data}


@pytest.mark.parametrize("kind, name", CASES)
def test_every_loader_refuses_a_broken_model_file(files, tmp_path, capsys, kind, name):
    model = tmp_path / f"broken.{kind}"
    model.write_bytes(files[kind].read_bytes())
    (BREAKAGES | SAFETENSORS_ONLY)[name](model)
    images = str(files["data"] / "images")
    commands = [["predict", "--checkpoint", str(model), images, "--out", str(tmp_path / "p1")]]
    if kind == "onnx":
        commands.append(["predict", "--onnx", str(model), images, "--out", str(tmp_path / "p2")])
    else:
        commands += [["evaluate", "--checkpoint", str(model), "--data", str(files["data"])],
                     ["export", "--checkpoint", str(model), "--out", str(tmp_path / "m.onnx")]]
        if kind == "ckpt":
            commands.append(["export-weights", "--checkpoint", str(model), "--out", str(tmp_path / "m.safetensors")])
    for argv in commands:
        code, _, err = run_cli(argv, capsys)
        errors = error_lines(err)
        assert code == 2 and len(errors) == 1 and str(model) in errors[0], f"{argv[0]}: exit {code}\n{err[-2000:]}"
