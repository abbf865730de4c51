"""The thesis study's numbers: each arm's mean +- sd over seeds, the multi-task gain Delta_m of a joint arm over the
single-task arms, the report (report.md) and the plot; `posepart.study` trains the arms and calls these."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from posepart.files import atomic_write


def arm_label(arm: str, fraction: float | None) -> str:
    """`parts@0.05`, `joint@0.2`, `joint` (all labels), `joint@0.2+st`, `joint+st`, `pose`."""
    if arm == "pose":
        return "pose"
    name, plus, suffix = arm.partition("+")
    return (name if name == "joint" and fraction == 1.0 else f"{name}@{fraction:g}") + plus + suffix


def delta_m(joint: dict[str, Any], singles: dict[str, dict[str, Any]]) -> float | None:
    """Multi-task gain: mean over tasks of (M_joint - M_single) / M_single, higher is better for both metrics
    (mean IU against the parts arm, OKS AP against the pose arm); None when a metric is missing or 0."""
    from posepart.evaluate import HEADLINE  # here: `posepart --help` (and predict --onnx) imports no torch

    changes = []
    for task, (section, key) in HEADLINE.items():
        ours, theirs = (joint.get(section) or {}).get(key), (singles[task].get(section) or {}).get(key)
        if ours is None or not theirs:
            return None
        changes.append((ours - theirs) / theirs)
    return sum(changes) / len(changes)


def summarise(runs: dict[str, dict[str, dict[str, Any]]], fractions: Sequence[float], seeds: int,
              arms: Sequence[str] = ("parts", "joint")) -> dict[str, dict[str, Any]]:
    """Per arm label: mean +- sd over seeds of mean IU, OKS AP and PCKh, and for joint arms Delta_m (per seed against
    that seed's single-task arms)."""
    from posepart.report import mean_sd  # (report imports torch: the command line's start does not)

    summary: dict[str, dict[str, Any]] = {}
    for label, by_seed in runs.items():
        row: dict[str, Any] = {}
        for name, (section, key) in (("mean_iou", ("segmentation", "mean_iou")), ("ap", ("pose", "ap")),
                                     ("pckh", ("pose", "pckh"))):
            row[name] = mean_sd([(m.get(section) or {}).get(key) for m in by_seed.values()])
        summary[label] = row
    for f in fractions:
        for joint in (arm_label(arm, f) for arm in arms if arm != "parts" and arm_label(arm, f) in runs):
            singles = (runs.get(arm_label("parts", f), {}), runs.get("pose", {}))
            gains = [delta_m(runs[joint][str(s)], {"parts": singles[0][str(s)], "pose": singles[1][str(s)]})
                     for s in range(seeds) if all(str(s) in r for r in (runs[joint], *singles))]
            summary[joint]["delta_m"] = mean_sd(gains)
            # a seed whose single-task arm scores 0 has no relative gain: the report says over how many seeds
            summary[joint]["delta_m_seeds"] = sum(gain is not None for gain in gains)
            summary[joint]["delta_m_compared"] = len(gains)  # seeds with both single-task arms trained
    return summary


def _share(share: float | None) -> str:
    return "f (uniform over the images)" if share is None else f"{share:.0%}"


def write_study_report(out: Path, record: dict[str, Any], figure: Path | None) -> Path:
    """out/report.md: the setting, the table (mean ± sd over seeds, in %), the plot and where the numbers are."""
    from posepart.report import spread_cell

    summary, fractions = record["summary"], record["fractions"]
    lines = [f"# posepart study: {record['seeds']} seed(s), {record['train_images']} training images per model",
             "", f"Training data `{record['train']}`, validation `{record['val']}`, config `{record['config']}`, "
             f"{record['size']} px. Part labels on a seeded fraction f of the training images (the subsets: "
             f"`{record['splits']}`); pose labels on all; in `joint@f` the part-labelled images are "
             f"{_share(record['labelled_share'])} of the draws. Every arm is the same joint network; a single-task arm "
             f"has the other task masked. {'Mean ± sd over seeds' if record['seeds'] > 1 else 'One seed'}, in %; "
             f"Δm: multi-task gain of a joint arm over "
             f"`parts@f` (mean IU) and `pose` (OKS AP)."
             + (f" Every arm with `{' '.join(record['overrides'])}`." if record.get("overrides") else "")
             + (f" The `+st` arms with `{' '.join(record['self_training_overrides'])}`."
                if record.get("self_training_overrides") else ""), "",
             "| arm | part labels | mean IU | OKS AP | PCKh@0.5 | Δm |", "|---|---:|---:|---:|---:|---:|"]
    if record.get("unlabelled"):
        use = ("`+st` arms self-train on them (`train.self_training`), drawn besides the same labelled draws"
               if "joint+st" in record.get("arms", ())
               else "no arm learns from them (`--self-train` adds arms that do)")
        lines[2:2] = [f"{record['unlabelled']:.0%} of the training images carry no label in any arm (the fractions "
                      f"are of the rest); {use}.", ""]
    order = ["pose"] + [arm_label(arm, f) for f in fractions for arm in record.get("arms", ("parts", "joint"))]
    for label in (label for label in order if label in summary):
        row = summary[label]
        share = "none" if label == "pose" else \
            f"{float(label.split('@')[1].split('+')[0]) if '@' in label else 1.0:.0%}"
        gain, over = spread_cell(row.get("delta_m")), row.get("delta_m_seeds", record["seeds"])
        if over < record["seeds"]:  # (before: a bare "–" where no seed had one, like an arm never trained)
            why = ("" if over else ": Δm is undefined where a single-task arm scores 0"
                   if row.get("delta_m_compared", 1) else ": its single-task arms were not trained")
            gain += f" ({over} of {record['seeds']} seeds{why})"
        cells = " | ".join(spread_cell(row[key]) for key in ("mean_iou", "ap", "pckh"))
        lines.append(f"| {label} | {share} | {cells} | {gain} |")
    if figure is not None:
        lines += ["", f"![mean IU and OKS AP against the part-label fraction]({figure.name})"]
    lines += ["", f"Every run's metrics: `metrics.json` (`runs`); finished in {record['seconds']:.0f} s."]
    report = out / "report.md"
    atomic_write(report, lambda f: f.write(("\n".join(lines) + "\n").encode("utf-8")))
    return report


def plot_study(summary: dict[str, dict[str, Any]], fractions: Sequence[float], path: Path,
               arms: Sequence[str] = ("parts", "joint")) -> Path | None:
    """Mean IU and OKS AP against the part-label fraction (error bars: sd over seeds); pose-only as a line."""
    from matplotlib.figure import Figure  # not pyplot: see `report.plot_training_curves`

    fig = Figure(figsize=(9, 3.5))
    seg_ax, pose_ax = fig.subplots(1, 2)
    colours = {"parts": "tab:blue", "joint": "tab:red", "joint+st": "tab:purple"}
    for arm, colour in ((arm, colours[arm]) for arm in arms):
        for ax, metric in ((seg_ax, "mean_iou"), (pose_ax, "ap")):
            points = [(f, summary.get(arm_label(arm, f), {}).get(metric)) for f in fractions]
            points = [(f, v) for f, v in points if v is not None]
            if points:
                ax.errorbar([f for f, _ in points], [v[0] for _, v in points], yerr=[v[1] or 0.0 for _, v in points],
                            marker="o", capsize=3, color=colour, label=f"{arm}@f")
    pose = summary.get("pose", {}).get("ap")
    if pose is not None:
        pose_ax.axhline(pose[0], color="tab:green", label="pose only (all images)")
        if pose[1] is not None:
            pose_ax.axhspan(pose[0] - pose[1], pose[0] + pose[1], color="tab:green", alpha=0.15)
    for ax, name in ((seg_ax, "mean IU"), (pose_ax, "OKS AP")):
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training images with part labels")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a panel no arm scores (--arms parts: no AP) has nothing to name
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
