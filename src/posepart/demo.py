"""The main job on the embedded synthetic data: `posepart demo` (what `make demo` runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from posepart.data.format import ANNOTATIONS_FILE, PosePartDataset
from posepart.data.writer import write_json_atomic
from posepart.data.inspect import inspect_dataset
from posepart.data.synth import write_synth
from posepart.evaluate import evaluate_oracle
from posepart.report import iou_table, metrics_table
from posepart.viz import grid, overlay, save_rgb


def synth_cached(root: Path, *, n: int, seed: int, size: int) -> PosePartDataset:
    """Generate a synthetic split once; reuse it when the same (n, seed, size) is already on disk."""
    stamp = root / "synth.json"
    wanted = {"n": n, "seed": seed, "size": size}
    if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted and (root / ANNOTATIONS_FILE).is_file()):
        write_synth(root, n=n, seed=seed, size=size)
        write_json_atomic(stamp, wanted)
    return PosePartDataset.open(root)


def run_demo(out: Path, *, n_val: int = 300, size: int = 368, seed: int = 0) -> Path:
    """synth -> inspect -> oracle evaluation -> report.md; returns the report path."""
    out = Path(out)
    start = time.perf_counter()
    val = synth_cached(out / "data" / "val", n=n_val, seed=seed + 1, size=size)
    counts = inspect_dataset(val).counts
    tiles = [overlay(val.load_image(r), val.schema, parts=val.load_parts(r), keypoints=r.keypoints)
             for r in val.records[:8]]
    save_rgb(out / "samples.png", grid(tiles, columns=4))
    oracle = evaluate_oracle(val, input_size=size)
    write_json_atomic(out / "oracle_metrics.json", oracle)
    lines = [
        "# posepart demo",
        "",
        f"Validation set: {counts['images']} synthetic images ({size}x{size}, seed {seed + 1}), "
        f"{counts['people']} labelled people, {counts['ignore_regions']} ignore regions.",
        "",
        "## Oracle (decoded ground-truth targets: the upper bound of targets + decoder)",
        "",
        metrics_table({"oracle": oracle}),
        "",
        iou_table(oracle, val.schema.part_classes),
        "",
        "![samples](samples.png)",
        "",
        f"Finished in {time.perf_counter() - start:.0f} s.",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
