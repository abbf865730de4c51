"""Markdown reports: metric tables in the seed paper's Table 1 layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

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
        lines.append(f"| {name} | " + " | ".join(_cell(metrics, t, k) for t, k, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def iou_table(metrics: Mapping[str, Any], part_classes: tuple[str, ...]) -> str:
    """Per-class IoU as a one-row markdown table."""
    ious = metrics.get("segmentation", {}).get("iou_per_class") or []
    cells = [("–" if v is None else f"{100 * v:.1f}") for v in ious]
    return "| " + " | ".join(part_classes) + " |\n|" + "---:|" * len(part_classes) + "\n| " + " | ".join(cells) + " |"


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
            lines.append(f"| {name} | {t} | " + " | ".join(_cell(stage, task, k) for task, k, _ in STAGE_COLUMNS)
                         + " |")
    return "\n".join(lines)


def _iou_sections(rows: Mapping[str, Mapping[str, Any]], part_classes: tuple[str, ...]) -> list[str]:
    """A per-class IoU table under a heading for every model that has segmentation scores."""
    lines: list[str] = []
    for name, metrics in rows.items():
        if metrics.get("segmentation") and part_classes:
            lines += [f"### {name}", "", iou_table(metrics, part_classes), ""]
    return lines


def _figure_lines(out_dir: Path, figures: Sequence[str | Path]) -> list[str]:
    """Markdown image links, relative to the report's folder where possible."""
    lines = []
    for figure in figures:
        path = Path(figure)
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
) -> Path:
    """Write out_dir/report.md: Table 1 (`metrics_table`), per-class IoU, per-stage table, figures; returns its path.

    `figures` are image paths, relative to out_dir or absolute (absolute ones inside out_dir are made relative).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", "## Results", "", metrics_table(metrics_by_model), "",
             "Fractions in %; predictions scored in original image coordinates.", ""]
    iou = _iou_sections(metrics_by_model, schema.part_classes)
    if iou:
        lines += ["## Per-class IoU (%)", "", *iou]
    if any(m.get("per_stage") for m in metrics_by_model.values()):
        lines += ["## Per stage", "", stage_table(metrics_by_model), "",
                  "Stage t uses heatmaps[t], pafs[t] and parts[min(t, last)] (an FCN's single segmentation repeats on "
                  "every row).", ""]
    if figures:
        lines += ["## Figures", "", *_figure_lines(out_dir, figures)]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report


def plot_training_curves(csv_by_model: Mapping[str, Path], out: Path) -> Path:
    """Training loss (and validation mean IU / AP where logged) against step, one line per model, from Lightning's
    metrics.csv files."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("train/total", "training loss"), ("val/seg/mean_iou", "val mean IU"), ("val/pose/ap", "val OKS AP"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, path) in enumerate(csv_by_model.items()):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for ax, (key, _) in zip(axes, panels):  # one colour per model in every panel, even where it has no line
            points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
            if points:
                ax.plot(*zip(*points), label=label, color=colours[i % len(colours)],
                        marker="." if key.startswith("val") else None)
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
