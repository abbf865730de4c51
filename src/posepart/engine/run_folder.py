"""The files of a training run's folder (`posepart train --out RUN`), named in one place: what `train` writes and
claims, where Lightning's checkpoints and loggers write, and where the demo and the study read a run back.

RUN/config.yaml                  the resolved config
RUN/checkpoints/{last,best}.ckpt last: after every epoch (what --resume continues); best: by `train.best_metric`
RUN/csv/version_N/metrics.csv    Lightning's CSV log, one version per launch
RUN/tb/version_N/                TensorBoard events
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
CSV_LOGS = "csv"
TENSORBOARD_LOGS = "tb"
LAST, BEST = "last", "best"  # the checkpoints' names, without their .ckpt
# What a run writes into its folder (and `overwrite=True` removes); anything else there is left alone.
RUN_FILES = (CONFIG_FILE, CHECKPOINTS, CSV_LOGS, TENSORBOARD_LOGS)


def checkpoint_path(run: Path, name: str = LAST) -> Path:
    """RUN/checkpoints/NAME.ckpt (`LAST` or `BEST`)."""
    return Path(run) / CHECKPOINTS / f"{name}.ckpt"


def csv_logs(run: Path) -> list[Path]:
    """The run's CSV logs, one per launch, oldest first: by Lightning's version number (by name, a run resumed ten
    times would put version_10 before version_9)."""
    def version(log: Path) -> int:
        number = log.parent.name.removeprefix("version_")
        return int(number) if number.isdigit() else -1

    return sorted((Path(run) / CSV_LOGS).glob("version_*/metrics.csv"), key=version)
