"""Markdown reports: metric tables in the seed paper's Table 1 layout."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from posepart.data.synth.pose import VIEWS
from posepart.errors import writing
from posepart.metrics.oks import ALL_AREAS, AREA_RANGES
from posepart.names import split_side
from posepart.schema import Schema

# Table 1 of the seed report: PCK-style distance, then the four FCN segmentation metrics; OKS AP and PCKh added.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pose", "pck_dist_px", "PCK_dist (px, lower better)"),
    ("segmentation", "pixel_accuracy", "pixel acc."),
    ("segmentation", "mean_accuracy", "mean acc."),
    ("segmentation", "mean_iou", "mean IU"),
    ("segmentation", "frequency_weighted_iou", "f.w. IU"),
    ("pose", "ap", "OKS AP"),
    ("pose", "pckh", "PCKh@0.5"),
)


def row_name(name: str) -> str:
    """A model's name as a markdown table cell: its `|` escaped, which would otherwise split the row."""
    return name.replace("|", "\\|")


def _cell(metrics: Mapping[str, Any], task: str, key: str) -> str:
    value = metrics.get(task, {}).get(key)
    if value is None:
        return "–"
    return f"{value:.1f}" if key.endswith("_px") else f"{100 * value:.1f}"


def metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table, one row per model (name -> metrics.json dict); fractions shown as percentages."""
    header = "| model | " + " | ".join(title for _, _, title in TABLE_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(TABLE_COLUMNS)
    lines = [header, rule]
    for name, metrics in rows.items():
        lines.append(f"| {row_name(name)} | " + " | ".join(_cell(metrics, t, k) for t, k, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def mean_sd(values: Sequence[float | None]) -> tuple[float, float | None] | None:
    """(mean, sample sd) of the values present, the sd None for one value (one seed measures no spread; 0 would
    claim none); None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def spread_cell(value: tuple[float, float | None] | None, scale: float = 100.0) -> str:
    """A `mean_sd` as a table cell: "52.1 ± 0.5" (percent for fractions; `scale` 1 for pixels), the mean alone where
    one value measures no spread, "–" where there is none."""
    if value is None:
        return "–"
    return f"{value[0] * scale:.1f}" + ("" if value[1] is None else f" ± {value[1] * scale:.1f}")


def spread_table(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """`metrics_table`'s columns as mean ± sample sd over each group's evaluations (several seeds of one model), with
    their number: one row per group."""
    header = "| model | n | " + " | ".join(title for _, _, title in TABLE_COLUMNS) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(TABLE_COLUMNS)]
    for name, runs in groups.items():
        cells = [spread_cell(mean_sd([(m.get(task) or {}).get(key) for m in runs]),
                             1.0 if key.endswith("_px") else 100.0) for task, key, _ in TABLE_COLUMNS]
        lines.append(f"| {row_name(name)} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def iou_table(metrics: Mapping[str, Any], part_classes: tuple[str, ...]) -> str:
    """Per-class IoU as a one-row markdown table."""
    ious = metrics.get("segmentation", {}).get("iou_per_class") or []
    cells = [("–" if v is None else f"{100 * v:.1f}") for v in ious]
    return "| " + " | ".join(part_classes) + " |\n|" + "---:|" * len(part_classes) + "\n| " + " | ".join(cells) + " |"


def side_free_joints(schema: Schema) -> dict[str, tuple[str, ...]]:
    """Joint names with left and right pooled, in schema order: {"elbow": ("left_elbow", "right_elbow"), "head":
    ("head",), ...} (sides read by the schema's one parser, `split_side`)."""
    groups: dict[str, tuple[str, ...]] = {}
    for name in schema.keypoints:
        rest = split_side(name)[1]
        groups[rest] = groups.get(rest, ()) + (name,)
    return groups


def joint_table(rows: Mapping[str, Mapping[str, Any]], schema: Schema, key: str = "pckh_per_joint",
                scale: float = 100.0) -> str:
    """A per-joint pose metric (`key`: PCKh@0.5, or PCK_dist's pixels) times `scale`, one row per model with a value:
    MPII's table, left and right averaged as its evaluation does (a side without labelled joints left out); "" when
    no model has one (PCKh in a schema without a head and a neck)."""
    groups = side_free_joints(schema)
    lines = ["| model | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for name, metrics in rows.items():
        per_joint = metrics.get("pose", {}).get(key)
        if not per_joint or all(v is None for v in per_joint.values()):  # before: a row of dashes
            continue
        cells = []
        for members in groups.values():
            values = [per_joint[m] for m in members if per_joint.get(m) is not None]
            cells.append(f"{scale * sum(values) / len(values):.1f}" if values else "–")
        lines.append(f"| {row_name(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def slice_tables(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """OKS AP per slice of the synthetic people (`metrics["pose"]["slices"]`: by view, by pose kind), one table per
    slicing, one row per model that has them, each column headed by its count of people; [] when none has any."""
    lines: list[str] = []
    scored = {name: m["pose"]["slices"] for name, m in rows.items() if (m.get("pose") or {}).get("slices")}
    fields = list(dict.fromkeys(field for slices in scored.values() for field in slices))
    for field in fields:
        values: dict[str, int] = {}  # value -> people (the same validation set for every model)
        for slices in scored.values():
            for value, score in slices.get(field, {}).items():
                values.setdefault(value, score["people"])
        lines += ["| model | " + " | ".join(f"{value} ({n})" for value, n in values.items()) + " |",
                  "|---|" + "---:|" * len(values)]
        for name, slices in scored.items():
            cells = [(slices.get(field, {}).get(value) or {}).get("ap") for value in values]
            aps = " | ".join("–" if v is None else f"{100 * v:.1f}" for v in cells)
            lines.append(f"| {row_name(name)} | {aps} |")
        lines.append("")
    return lines


# Per-stage table: how the prediction improves along the refinement stages (`metrics["per_stage"]`).
STAGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pose", "ap", "OKS AP"),
    ("pose", "pckh", "PCKh@0.5"),
    ("segmentation", "mean_iou", "mean IU"),
)


def stage_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table, one row per (model, stage) for every model whose metrics carry `per_stage`."""
    lines = ["| model | stage | " + " | ".join(title for _, _, title in STAGE_COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(STAGE_COLUMNS)]
    for name, metrics in rows.items():
        for t, stage in enumerate(metrics.get("per_stage") or [], start=1):
            cells = " | ".join(_cell(stage, task, k) for task, k, _ in STAGE_COLUMNS)
            lines.append(f"| {row_name(name)} | {t} | {cells} |")
    return "\n".join(lines)


def size_table(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
    """OKS AP by the people's area in COCOeval's ranges (metrics.json's ap_small, ap_medium, ap_large), a row per
    model that has any; None when none has (no people scored). COCO's keypoint summary prints no small range: crowds
    and wide shots are mostly small people, whom the overall AP mixes with the rest."""
    scored = {name: m for name, m in rows.items() if any((m.get("pose") or {}).get(key) is not None
                                                          for key in AREA_RANGES)}
    if not scored:
        return None
    titles = []
    for key, (low, high) in AREA_RANGES.items():
        bounds = f"< {high ** 0.5:.0f}²" if not low else f"> {low ** 0.5:.0f}²" if high >= ALL_AREAS[1] else \
            f"{low ** 0.5:.0f}²-{high ** 0.5:.0f}²"
        titles.append(f"{key.removeprefix('ap_')} ({bounds} px²)")
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    for name, m in scored.items():
        lines.append(f"| {row_name(name)} | " + " | ".join(_cell(m, "pose", key) for key in AREA_RANGES) + " |")
    return "\n".join(lines)


def flip_table(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
    """One pass against test-time flipping (`metrics["flip"]`: the same tasks scored with `--flip`), a row per model
    that has it, each of the `STAGE_COLUMNS` one pass then flipped; None when no model has it."""
    scored = {name: m for name, m in rows.items() if m.get("flip")}
    if not scored:
        return None
    lines = ["| model | " + " | ".join(f"{title} | {title}, flipped" for _, _, title in STAGE_COLUMNS) + " |",
             "|---|" + "---:|---:|" * len(STAGE_COLUMNS)]
    for name, m in scored.items():
        cells = [f"{_cell(m, task, key)} | {_cell(m['flip'], task, key)}" for task, key, _ in STAGE_COLUMNS]
        lines.append(f"| {row_name(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _iou_sections(rows: Mapping[str, Mapping[str, Any]], part_classes: tuple[str, ...]) -> list[str]:
    """A per-class IoU table under a heading for every model that has segmentation scores."""
    lines: list[str] = []
    for name, metrics in rows.items():
        if metrics.get("segmentation") and part_classes:
            lines += [f"### {name}", "", iou_table(metrics, part_classes), ""]
    return lines


TASK_TITLES = {"pose": "pose (heatmaps + PAFs)", "parts": "part segmentation"}


def training_data_lines(sources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which sources fed each task, then one table row per source (`PosePartDataModule.describe()` dicts)."""
    if not sources:
        return []
    drawn = sum(int(s.get("draws_per_epoch") or 0) for s in sources) or 1
    lines = []
    for task, title in TASK_TITLES.items():  # the weights a run started from (model.init) taught the heads they gave
        names = [f"{s['name']} ({s['init']})" if s.get("init") else str(s["name"]) for s in sources
                 if task in (s.get("tasks") or []) and (s.get("draws_per_epoch") or s.get("init"))]
        lines.append(f"- {title}: {', '.join(names) if names else 'no source'}")
    lines += ["", "| source | tasks | weight | share of an epoch | train images | val images | target joints it lacks |",
              "|---|---|---:|---:|---:|---:|---|"]
    for s in sources:
        if s.get("init"):  # no data: the weights the run started from
            tasks = ", ".join(s.get("tasks") or []) or "–"
            lines.append(f"| {s['name']} ({s['init']}) | {tasks} | – | – | – | – | – |")
            continue
        share = 100 * int(s.get("draws_per_epoch") or 0) / drawn
        lines.append(f"| {s['name']} | {', '.join(s.get('tasks') or []) or '–'} | {float(s.get('weight', 0)):g} | "
                     f"{share:.0f} % | {s.get('train_images', 0)} | {s.get('val_images', 0)} | "
                     f"{', '.join(s.get('missing_joints') or []) or '–'} |")
    return lines


def _training_sections(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A "Training data" block per model whose metrics carry `training_data` (the checkpoint's sources)."""
    lines: list[str] = []
    models = [(name, m["training_data"]) for name, m in rows.items() if m.get("training_data")]
    distinct = {json.dumps(sources, sort_keys=True) for _, sources in models}  # per-source rows of one model: once
    for name, sources in models[:1] if len(distinct) == 1 else models:
        lines += ([f"### {name}", ""] if len(distinct) > 1 else []) + training_data_lines(sources) + [""]
    return lines


def _figure_lines(out_dir: Path, figures: Sequence[str | Path]) -> list[str]:
    """Markdown image links, relative to the report's folder where possible."""
    lines = []
    for figure in figures:
        path = Path(figure)
        if not path.is_absolute() and not (out_dir / path).exists() and path.exists():
            path = path.resolve()  # relative to the working directory (as the demo's save_rgb returns them)
        try:
            shown = path.resolve().relative_to(out_dir.resolve()) if path.is_absolute() else path
        except ValueError:
            shown = path
        lines += [f"![{path.stem}]({shown.as_posix()})", ""]
    return lines


def write_report(
    out_dir: str | Path,
    title: str,
    metrics_by_model: Mapping[str, Mapping[str, Any]],
    schema: Schema,
    figures: Sequence[str | Path] = (),
    groups: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """Write out_dir/report.md: Table 1 (`metrics_table`), per-class IoU, PCKh by joint, AP by person size and by
    synthetic slice, test-time flipping, per-stage table, figures; returns its path.

    `figures` are image paths, relative to out_dir, to the working directory or absolute (those inside out_dir are
    written relative to it). `groups`: evaluations of one model (seeds) under one name, tabled as mean ± sd after
    Table 1 (`spread_table`).
    """
    out_dir = Path(out_dir)
    lines = [f"# {title}", "", "## Results", "", metrics_table(metrics_by_model), "",
             "Fractions in %; predictions scored in original image coordinates.", ""]
    if groups:
        lines += ["## Mean ± sd over the evaluations of one label (%)", "", spread_table(groups), ""]
    iou = _iou_sections(metrics_by_model, schema.part_classes)
    if iou:
        lines += ["## Per-class IoU (%)", "", *iou]
    joints = joint_table(metrics_by_model, schema)
    distances = joint_table(metrics_by_model, schema, "pck_dist_px_per_joint", 1.0)
    if joints:
        lines += ["## PCKh@0.5 by joint (%)", "", joints, "",
                  "Left and right averaged, as MPII's evaluation reports them.", ""]
    elif distances:  # a schema without PCKh's head and neck (an animal's)
        lines += ["## Distance to the labelled joint by joint (px)", "", distances, "",
                  "Mean distance of each matched joint within the seed paper's PCK_dist cutoff (5 times the person's "
                  "shortest labelled limb); left and right averaged.", ""]
    sizes = size_table(metrics_by_model)
    if sizes:
        lines += ["## OKS AP by person size (%)", "", sizes, "",
                  "COCOeval's area ranges (the people's area as their annotations give it, else their box's): "
                  "metrics.json's ap_small, ap_medium, ap_large; – where no person of that size is labelled.", ""]
    slices = slice_tables(metrics_by_model)
    if slices:
        views = ", ".join(f"{name} to {bound:g}°" for bound, name in VIEWS)
        lines += ["## OKS AP by view and by pose kind (%)", "",
                  "The synthetic people as their annotations say they were made (view: the body's turn away from the "
                  f"camera, {views}); each slice's people scored alone, the others on its images ignored. Headers "
                  "give the number of people.", "", *slices]
    flipped = flip_table(metrics_by_model)
    if flipped:
        lines += ["## With test-time flipping (%)", "", flipped, "",
                  "Each image also run mirrored and the maps merged (`posepart evaluate --flip`, `posepart predict "
                  "--flip`): one more forward pass per image.", ""]
    if any(m.get("per_stage") for m in metrics_by_model.values()):
        lines += ["## Per stage", "", stage_table(metrics_by_model), "",
                  "Stage t uses heatmaps[t], pafs[t] and parts[min(t, last)] (an FCN's single segmentation repeats on "
                  "every row).", ""]
    training = _training_sections(metrics_by_model)
    if training:
        lines += ["## Training data", "", "Which sources fed each task of the model (set-valued part labels of coarser "
                  "sources are trained but not scored).", "", *training]
    if figures:
        lines += ["## Figures", "", *_figure_lines(out_dir, figures)]
    report = out_dir / "report.md"
    with writing(report):
        out_dir.mkdir(parents=True, exist_ok=True)
        report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report


def plot_training_curves(csv_by_model: Mapping[str, Path], out: Path,
                         hide: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Training loss (and validation mean IU / AP where logged) against step, one line per model, from Lightning's
    metrics.csv files; `hide`: per model, logged keys not to draw (the metric of a head trained with its task
    masked)."""
    import csv

    # A Figure of its own, drawn by Agg, not pyplot's: `matplotlib.use("Agg")` switched a notebook's backend for the
    # rest of its session (inline plots showed nothing after a demo or a report)
    import matplotlib
    from matplotlib.figure import Figure

    panels = (("train/total", "training loss"), ("val/seg/mean_iou", "val mean IU"), ("val/pose/ap", "val OKS AP"))
    fig = Figure(figsize=(4 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, path) in enumerate(csv_by_model.items()):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        hidden = set((hide or {}).get(label, ()))
        for ax, (key, _) in zip(axes, panels):  # one colour per model in every panel, even where it has no line
            points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) and key not in hidden]
            if points:
                ax.plot(*zip(*points), label=label, color=colours[i % len(colours)],
                        marker="." if key.startswith("val") else None)
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    named = {}  # every model's line, from whichever panel has one (a short run logs no training loss)
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            named.setdefault(name, handle)
    if named:
        axes[0].legend(list(named.values()), list(named), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
