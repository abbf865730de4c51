"""`posepart compare`: the evaluations of several models side by side, as a paper's table (report.md), from the
metrics.json files `posepart evaluate` wrote. Why a verb: each evaluation writes its own report, and putting them in
one table meant hand-writing `posepart.report.write_report` calls (a walkthrough)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from posepart.errors import MissingFileError, UsageError
from posepart.inference.outputs import METRICS_FILE
from posepart.schema import Schema


def read_evaluation(path: Path, label: str | None = None) -> tuple[dict[str, dict[str, Any]], Schema]:
    """An evaluation's rows ({label: metrics}: one, or one per `--source`) and the schema it was scored in, from its
    --out folder or metrics file. `label` (default: the folder's name, or the file's stem for a .json --out, with
    the test-time views it records, as evaluate's report names them), with `/NAME` per source."""
    from posepart.evaluate_cli import tta_label

    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        raise MissingFileError(f"{path}: no {METRICS_FILE} (give the --out folder or file of `posepart evaluate`)")
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
        schema = Schema.from_category(metrics["schema"])
    except (ValueError, KeyError, TypeError) as err:  # JSON, or a file of another tool or an older posepart
        raise UsageError(f"{file}: not a metrics file of `posepart evaluate` or `evaluate_model` that names its "
                         f"schema ({type(err).__name__}: {err}); one of a posepart before 2026-12-07 names none: "
                         f"score the model again") from None
    rows = metrics.get("sources")
    rows = rows if isinstance(rows, dict) else {"": metrics}
    if label is None:  # (`metrics.json` itself named: its folder's name)
        named = file.parent if file.name == METRICS_FILE else file.with_suffix("")
        label = named.resolve().name
    return {f"{label}{'/' if name else ''}{name}{tta_label(row)}": row for name, row in rows.items()}, schema


def _joints_and_parts(schema: Schema) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What rows must share to share tables: the joints and the part classes (not the OKS sigmas or the name: an
    oracle on data whose file gives sigmas compares with a model scored on it)."""
    return tuple(schema.keypoints), tuple(schema.part_classes)


def cmd_compare(args: argparse.Namespace) -> int:
    from posepart.evaluate import format_metrics
    from posepart.report import metrics_table, spread_table, write_report

    if args.label and len(args.label) != len(args.evaluations):
        raise UsageError(f"compare: {len(args.label)} --label for {len(args.evaluations)} evaluations: one each")
    if args.label and not all(label.strip() for label in args.label):
        raise UsageError("compare: an empty --label")
    if args.out is not None:  # refused before anything is read: a file, or an evaluation whose report it would replace
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"compare --out {args.out}: a file of that name exists (--out is a folder)")
        if any(path.resolve() == args.out.resolve() for path in args.evaluations):
            raise UsageError(f"compare --out {args.out}: an evaluation's own folder (its report.md would be replaced)")
    rows: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = {}  # a label given to several evaluations (seeds): mean ± sd
    schema = None
    for i, path in enumerate(args.evaluations):
        label = args.label[i] if args.label else None
        found, theirs = read_evaluation(path, label)
        if label is not None and args.label.count(label) > 1:  # seeds of one model: numbered rows, and a group each
            for name, row in found.items():  # (one per source of a --source evaluation)
                groups.setdefault(name, []).append(row)
            k = args.label[:i].count(label) + 1
            found = {f"{label} #{k}{name[len(label):]}": row for name, row in found.items()}
        if schema is not None and _joints_and_parts(theirs) != _joints_and_parts(schema):
            differ = "joints" if theirs.keypoints != schema.keypoints else "part classes"
            raise UsageError(f"compare: {path} was scored in other {differ} than {args.evaluations[0]} "
                             f"({theirs.describe()} against {schema.describe()}): compare evaluations in one schema")
        schema = schema or theirs
        twice = sorted(set(found) & set(rows))
        if twice:
            raise UsageError(f"compare: two evaluations are labelled {twice[0]!r}: name them with --label")
        rows.update(found)
    assert schema is not None
    print(metrics_table(rows))
    if groups:
        print(f"\nmean ± sd over the evaluations of one --label:\n{spread_table(groups)}")
    if args.verbose:
        for name, metrics in rows.items():
            print(f"\n{name}:\n{format_metrics(metrics)}")
    if args.out is not None:
        print(f"wrote {write_report(args.out, args.title, rows, schema, groups=groups)}", file=sys.stderr)
    return 0


def add_compare_parser(verbs: Any) -> None:
    """Add the `compare` verb to the `posepart` sub-parsers."""
    p = verbs.add_parser("compare", help="put several evaluations (`posepart evaluate --out`) side by side in one "
                         "report")
    p.add_argument("evaluations", nargs="+", type=Path, metavar="EVAL",
                   help="an --out folder (or metrics file) of `posepart evaluate`; one row each (one per --source)")
    p.add_argument("--label", action="append", help="the row's name, once per EVAL in order (default: the folder's "
                   "name); a label given to several EVALs (seeds of one model) adds their mean ± sd")
    p.add_argument("--out", type=Path, help="folder for report.md (the tables of `evaluate`'s report, a row per model)")
    p.add_argument("--title", default="posepart comparison", help="report.md's title")
    p.add_argument("--verbose", action="store_true", help="also print every evaluation's metrics")
    p.set_defaults(run=cmd_compare)
