"""The reader tests' end-to-end check: `posepart convert` -> `posepart inspect --json` -> `evaluate --oracle`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from posepart.cli import main


def convert(capsys: Any, argv: Sequence[str]) -> str:
    """Run `posepart convert ...`; returns its printed summary (asserting success)."""
    assert main(["convert", *map(str, argv)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def inspect_json(capsys: Any, root: Path) -> dict[str, Any]:
    """`posepart inspect ROOT --json`, asserting no problem was found."""
    code = main(["inspect", str(root), "--json"])
    counts = json.loads(capsys.readouterr().out)
    assert code == 0 and counts["problems"] == [], counts["problems"]
    return counts


def oracle(root: Path, tmp_path: Path) -> dict[str, Any]:
    """`posepart evaluate --oracle --data ROOT --out metrics.json`; the metrics."""
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--oracle", "--data", str(root), "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text())
