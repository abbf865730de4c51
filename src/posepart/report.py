"""Markdown reports: metric tables in the seed paper's Table 1 layout."""

from __future__ import annotations

from typing import Any, Mapping

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
