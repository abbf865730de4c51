"""argparse types and option groups the verbs share (`posepart predict`, `evaluate`, `demo`, `study`): one meaning
and one check for an option wherever it appears. Imports nothing heavy (the ONNX-only install runs `predict`)."""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable


def available_cores() -> int:
    """The cores this process may use (a container's or a Slurm job's, not its host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= low (a 0 or negative --max-frames, --batch-size, ... is refused, not run)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def multiple_of(step: int) -> Callable[[str], int]:
    """argparse type: a positive multiple of `step` (an --input-size the network takes as it is: before, 100 ran at
    96 and was recorded as 100)."""

    def parse(text: str) -> int:
        value = at_least(step)(text)
        if value % step:
            raise argparse.ArgumentTypeError(f"must be a multiple of {step} (the network's input multiple), got "
                                             f"{value}: e.g. {value // step * step} or {(value // step + 1) * step}")
        return value

    return parse


def positive(text: str) -> float:
    """argparse type: a finite number > 0 (a width multiplier, a scale)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _scales(text: str) -> list[float]:
    """argparse type of `--scales`: "0.75,1,1.25" -> [0.75, 1.0, 1.25], all positive."""
    items = [v.strip() for v in text.split(",")]
    try:  # an empty item ("1,,2") is a typo, not a separator; nan and inf are no scale
        values = [float(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be numbers separated by commas, got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive finite numbers, got {text!r}")
    if len(set(values)) < len(values):  # before: "1,1" ran the same network pass twice
        raise argparse.ArgumentTypeError(f"scales repeat a value, got {text!r}")
    return values


def add_test_time_args(parser: argparse.ArgumentParser, *, flip_note: str = "") -> None:
    """`--scales` and `--flip`, the Predictor's test-time views, with one meaning for every verb (predict, evaluate)."""
    parser.add_argument("--scales", type=_scales, default=[1.0], metavar="S[,S...]",
                        help="test-time scales, multiples of the input size, e.g. '0.75,1,1.25' (default 1)")
    parser.add_argument("--flip", action="store_true",
                        help="test-time horizontal flip (averaged with the original)" + flip_note)
