"""The files `posepart predict` writes into --out, and how an earlier run's files there are told from a user's.

A run's summary.json names its inputs (`earlier_names`); with `OUTPUTS` that says which files it wrote, so a rerun
replaces them (`replace_earlier_run`) and a folder of photos that holds a run's overlays does not take them for photos
(`without_earlier_outputs`). Names only, never paths, are read from a summary: a crafted one cannot point outside.
"""

from __future__ import annotations

from pathlib import Path

from posepart.files import read_earlier_json

# The files a run writes per input NAME (`posepart.inference.media`), relative to --out: written, skipped on input,
# and replaced by a rerun from this one table.
OUTPUTS = {"parts": "parts/{}.png", "instances": "instances/{}.png", "overlay": "overlays/{}.jpg",
           "heatmaps": "maps/{}_heatmaps.jpg", "pafs": "maps/{}_pafs.jpg", "video": "videos/{}.mp4",
           "frames": "videos/{}.json"}
OUTPUT_FOLDERS = tuple(dict.fromkeys(pattern.split("/")[0] for pattern in OUTPUTS.values()))
# The run's listings: the COCO results of its still images, and what it did (inputs, ids, failures).
RESULTS_FILE = "keypoints.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.json"  # what `posepart evaluate --out DIR` records (beside its own keypoints.json)
_SUMMARY_KEYS = {"succeeded", "failed", "images", "videos", "failures"}  # what makes a summary.json one of ours


def earlier_names(out: Path) -> set[str] | None:
    """The input names an earlier run into `out` wrote files for (its summary.json); None when there is no summary
    of ours. Names only, never paths: a crafted summary cannot point outside `out`."""
    earlier = read_earlier_json(out / SUMMARY_FILE)
    if not isinstance(earlier, dict) or not _SUMMARY_KEYS <= set(earlier):
        return None
    try:
        names = {str(entry["name"]) for entry in [*earlier["images"], *earlier["videos"]]}
    except (KeyError, TypeError):  # not one of ours: nothing to remove
        return None
    return {name for name in names if name and name not in (".", "..") and Path(name).name == name}


def without_earlier_outputs(files: list[Path]) -> tuple[list[Path], set[Path]]:
    """`files` less those an earlier predict run wrote (`OUTPUTS` under an --out whose summary.json is ours, for
    the input names it lists: its overlays, label maps and videos are not photos; a user's own file in a folder of
    that name stays), and the --out folders of those runs among them. Each run's summary is read once."""
    written: dict[Path, set[Path]] = {}  # --out -> the files its summary says it wrote

    def written_by(run: Path) -> set[Path]:
        if run not in written:
            names = earlier_names(run) or set()
            written[run] = {(run / pattern.format(name)).resolve() for name in names for pattern in OUTPUTS.values()}
        return written[run]

    kept = []
    for path in files:
        resolved = path.resolve()
        if not (resolved.parent.name in OUTPUT_FOLDERS and resolved in written_by(resolved.parent.parent)):
            kept.append(path)
    runs = {run for run, paths in written.items() if paths}
    runs |= {p.parent.resolve() for p in files if p.name == SUMMARY_FILE and earlier_names(p.parent) is not None}
    return kept, runs


def replace_earlier_run(out: Path, inputs: set[Path]) -> None:
    """Remove the files an earlier run into `out` wrote, so that the folder describes one run: its listings
    (keypoints.json, summary.json) and an overlay left from it would otherwise look like this run's. This run's
    `inputs` (resolved paths) are kept, wherever they lie."""
    names = earlier_names(out)
    if names is None:
        return
    patterns = [pattern for pattern in OUTPUTS.values() if not (out / pattern.split("/")[0]).is_symlink()]
    for name in names:  # never through a linked folder (one this run does not write is allowed to be a link)
        for pattern in patterns:
            stale = out / pattern.format(name)
            if stale.resolve() not in inputs:
                stale.unlink(missing_ok=True)
    for listing in (RESULTS_FILE, SUMMARY_FILE):  # this run writes its own (a run of videos alone: no
        (out / listing).unlink(missing_ok=True)  # keypoints.json); one that fails must not list gone files
