"""`posepart evaluate`: score a checkpoint (per stage, optionally per --source dataset) or the --oracle on a dataset,
with metrics.json, report.md, overlays and (for a checkpoint) keypoints.json."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Collection

from posepart.arguments import add_test_time_args, at_least, multiple_of, positive
from posepart.data.dataset_args import add_dataset_args, noted, open_dataset, open_source, with_images
from posepart.data.format import DatasetError, PosePartDataset
from posepart.errors import OutputError, PosepartWarning, UsageError, output_folder
from posepart.files import read_earlier_json
from posepart.heads import INPUT_SIZE, OUTPUT_STRIDES, HeadMeta
from posepart.inference.outputs import METRICS_FILE, RESULTS_FILE
from posepart.evaluate_record import note_training_data, note_unscored, part_table_hint, what_was_scored
from posepart.inference.predictor import BATCH_SIZE


DEFAULT_OVERLAYS = 8  # predictions drawn into an --out folder unless --overlays says otherwise


def _metrics_path(out: Path | None) -> tuple[Path | None, Path | None]:
    """--out of `evaluate`: a path ending in .json is the metrics file alone (the original --oracle behaviour); any
    other path is a folder that receives metrics.json, report.md, overlays/ and, for a checkpoint, keypoints.json
    (keypoints/NAME.json per --source).
    Returns (metrics file, folder)."""
    if out is None:
        return None, None
    if out.suffix.lower() == ".json":
        return out, None
    return out / METRICS_FILE, out


def _prepare_out(out: Path | None) -> bool:
    """Create evaluate's --out folder (or the metrics file's) now: one that cannot be written is refused before
    any scoring, not after it. Returns whether the folder holds an earlier evaluation (its metrics.json), whose
    files `_drop_stale` may replace; a folder's files of those names are otherwise the user's."""
    metrics_file, folder = _metrics_path(out)
    if folder is not None:
        output_folder(folder)
        linked = [name for name in ("overlays", "keypoints") if (folder / name).is_symlink()]
        if linked:  # evaluate writes, and replaces, files there
            raise OutputError(f"--out {folder}: {linked[0]}/ is a link; remove it or choose another --out")
        earlier = read_earlier_json(folder / METRICS_FILE)
        return isinstance(earlier, dict) and bool({"images", "sources"} & set(earlier))
    elif metrics_file is not None:
        output_folder(metrics_file.parent, "--out's folder")
        if metrics_file.is_dir():  # before: refused only when writing it, after all the scoring
            raise UsageError(f"evaluate --out {metrics_file}: a folder of that name exists (a .json --out is the "
                             f"metrics file)")
    return False


def _evaluate_checkpoint(args: argparse.Namespace, dataset: PosePartDataset
                         ) -> tuple[dict, list, str, PosePartDataset, list]:
    """Load --checkpoint and score it -> (metrics, overlay images, model name for the report, the dataset as scored:
    read in the checkpoint's schema when its own differs, the COCO keypoint results scored). An ONNX or TorchScript
    export is scored as it is deployed: through its runtime's Predictor, with evaluation's decoding (the final stage
    only; a walkthrough scored one in Python with the Predictor's default decoding and got other numbers)."""
    from posepart.decode import DecodeConfig
    from posepart.engine.checkpoint import load_model
    from posepart.evaluate_model import evaluate_model, evaluate_predictor
    from posepart.inference import Predictor
    from posepart.inference.backends import export_kind, torch_device

    loaded, predictor = None, None
    export = export_kind(args.checkpoint)
    if export is None:
        torch_device(args.device)  # a device this machine lacks: refused before the model is loaded
        loaded = load_model(args.checkpoint, map_location=args.device)
        schema, tasks, head, config = loaded.schema, loaded.tasks, loaded.head, loaded.config
        model_name, own_size, sources = loaded.config.model.name, loaded.input_size, loaded.sources
    else:
        from posepart.engine.config import ConfigError, config_from_dict

        settings = dict(input_size=args.input_size, decode_config=DecodeConfig.for_evaluation(), part_instances=False,
                        scales=args.scales, flip=args.flip, batch_size=args.batch_size)
        predictor = (Predictor.from_onnx(args.checkpoint, args.device, threads=args.threads, **settings)
                     if export == "an ONNX export" else Predictor.from_checkpoint(args.checkpoint, args.device,
                                                                                  **settings))
        schema, tasks, head = predictor.schema, predictor.info.tasks, predictor.info.head
        model_name, own_size = predictor.info.name or "export", predictor.info.input_size
        record = predictor.backend.record or {}  # what made it, as the export records it (training sources, config)
        sources = record.get("sources") if isinstance(record.get("sources"), list) else []
        try:
            config = config_from_dict(record["config"]) if "config" in record else None
        except (ConfigError, TypeError, ValueError):  # a record of a version whose config no longer validates
            config = None
    tables = config.data.sources if config is not None else []
    trained_on = note_training_data(str(args.root or args.annotations), dataset, config)
    if (args.part_map or args.ignore_parts) and (schema == dataset.schema or not dataset.has_parts):
        why = "the dataset's schema is the checkpoint's" if schema == dataset.schema else "it has no part maps"
        print(f"note: --part-map / --ignore-parts change nothing: {why}", file=sys.stderr)  # not ignored silently
    if schema != dataset.schema:
        from posepart.data.mixing import SourceError, map_dataset

        ours, theirs = dataset.schema, schema
        fields = [("name", ours.name, theirs.name), ("joints", ours.keypoints, theirs.keypoints),
                  ("skeleton", ours.skeleton, theirs.skeleton), ("flip pairs", ours.flip_pairs, theirs.flip_pairs),
                  ("part classes", ours.part_classes, theirs.part_classes)]
        if ours.keypoints == theirs.keypoints:  # sigmas of other joints differ as the joints do
            fields.append(("OKS sigmas", ours.sigmas, theirs.sigmas))
        differ = [what for what, a, b in fields if a != b]
        scored = ("; OKS takes the dataset's sigmas for the joints it gives the checkpoint's" if ours.sigmas_given
                  else "; OKS takes the checkpoint's sigmas (the dataset's file gives none)" if "OKS sigmas" in differ
                  else "")
        print(f"note: the dataset's schema {ours.describe()} differs from the checkpoint's {theirs.describe()} in its "
              f"{', '.join(differ)}: it is read in the checkpoint's by joint name and part table{scored} "
              f"(docs/training.md)", file=sys.stderr)
        table = dict(part_map=dict(args.part_map or ()), ignore_parts=args.ignore_parts or [])
        hint = "" if args.part_map or args.ignore_parts else part_table_hint(tables)
        try:
            with warnings.catch_warnings(record=True) as caught:  # its parts unmapped: scored on pose, and said
                warnings.simplefilter("always", PosepartWarning)
                dataset = map_dataset(dataset, schema, **table)
        except SourceError as err:
            raise SourceError(f"{err}{hint}", source=err.source) from None
        for said in caught:  # with the advice the refusal gave (how a part table applies)
            print(f"warning: {said.message}{hint}", file=sys.stderr)
        note_unscored(str(args.root or args.annotations), dataset, tasks)
    head.check_stride(args.stride, "evaluate --stride")
    results: list[dict] = []
    size = args.input_size or own_size
    trained_at = config.data.input_size if config is not None else own_size
    if loaded is None and args.input_size is None and size != trained_at:  # (a walkthrough: an export scored 4.8
        # AP below its checkpoint without a word)
        print(f"note: {args.checkpoint.name} was exported for {size} px (`posepart export --input-size`) and is "
              f"scored at that size; its model trained at {trained_at} px (--input-size {trained_at} scores as its "
              f"checkpoint does)", file=sys.stderr)
    if loaded is not None:
        metrics, overlays = evaluate_model(
            loaded.model, dataset, input_size=size, batch_size=args.batch_size, device=args.device,
            overlays=args.overlays, workers=args.workers, results=results, scales=args.scales, flip=args.flip,
            tasks=tasks)  # a head its training never taught (pose alone, parts alone) is not scored
    else:
        metrics, overlays = evaluate_predictor(predictor, dataset, overlays=args.overlays, workers=args.workers,
                                               results=results, tasks=tasks)
    if sources:
        metrics["training_data"] = sources
    # what was scored, for whoever reads the numbers later (the batch size moves pck_dist_px in its last digits)
    metrics["evaluated"] = what_was_scored(args.checkpoint, dataset, args.batch_size, training_data=trained_on)
    other = "" if size == trained_at else f", {size} px"
    name = f"{model_name} ({args.checkpoint.name}{other}){tta_label(metrics)}"
    return metrics, overlays, name, dataset, results


def _part_map_item(text: str) -> list[tuple[str, list[str]]]:
    """argparse type of --part-map: "trunk=torso" -> [("trunk", ["torso"])]; "legs=upper_legs,lower_legs" a class
    that is one of several (set-valued, as a training source's part_map)."""
    name, sep, targets = text.partition("=")
    classes = [t.strip() for t in targets.split(",") if t.strip()]
    if not sep or not name.strip() or not classes:
        raise argparse.ArgumentTypeError(f"expected CLASS=TARGET[,TARGET], got {text!r}")
    return [(name.strip(), classes)]


def tta_label(metrics: dict) -> str:
    """What a report's model name adds for the test-time views `evaluate_predictor` recorded in the metrics
    (`test_time`): '' for a single plain pass."""
    views = metrics.get("test_time")
    if views is None:
        return ""
    scales = "" if views["scales"] == [1.0] else " scales " + ",".join(f"{s:g}" for s in views["scales"])
    return f", test-time{scales}{' flip' if views['flip'] else ''}"


def _evaluate_sources(args: argparse.Namespace, *, reused: bool) -> int:
    """--checkpoint scored on every --source NAME=ROOT (each read in the checkpoint's schema): a row per source."""
    from posepart.data.mixing import SourceError
    from posepart.files import write_json_atomic
    from posepart.engine.checkpoint import load_model
    from posepart.engine.settings import SOURCE_NAME
    from posepart.evaluate import format_metrics
    from posepart.evaluate_model import evaluate_sources
    from posepart.inference.backends import export_kind, torch_device
    from posepart.report import write_report
    from posepart.viz import grid, save_rgb

    torch_device(args.device)
    if (export := export_kind(args.checkpoint)) is not None:  # before: "not a training checkpoint", unexplained
        raise UsageError(f"evaluate --source: {args.checkpoint} is {export}; --source scores a "
                         f"training checkpoint or .safetensors (with its sources' part tables): score the export "
                         f"on each dataset with --data")

    datasets = {}
    for item in args.source:
        name, sep, root = item.partition("=")
        if not (sep and name and root):
            raise UsageError(f"evaluate --source: expected NAME=ROOT, got {item!r}")
        if not SOURCE_NAME.fullmatch(name):  # it names the source's keypoints file
            raise UsageError(f"evaluate --source {item}: NAME must be a word of letters, digits, '_', '.', '-'")
        if name in datasets:  # (before, told it must be a word)
            raise UsageError(f"evaluate --source {item}: the name {name!r} is given twice: one NAME per source")
        datasets[name] = with_images(noted(open_source(name, root), f"--source {name}"), f"--source {item}")
    loaded = load_model(args.checkpoint, map_location=args.device)
    trained_on = {name for name, dataset in datasets.items()
                  if note_training_data(f"--source {name}", dataset, loaded.config)}
    loaded.head.check_stride(args.stride, "evaluate --stride")
    tables = {s.name: {"part_map": s.part_map, "ignore_parts": s.ignore_parts} for s in loaded.config.data.sources}
    results: dict[str, list[dict]] = {}
    try:  # (a source that cannot be read in the checkpoint's schema is refused, named)
        rows, overlays = evaluate_sources(
            loaded.model, datasets, loaded.schema, part_tables=tables,
            on_mapped=lambda name, mapped: note_unscored(f"--source {name}", mapped, loaded.tasks),
            input_size=args.input_size or loaded.input_size,
            batch_size=args.batch_size, device=args.device, overlays=args.overlays,
            workers=args.workers, scales=args.scales, flip=args.flip, tasks=loaded.tasks, results=results)
    except SourceError as err:  # the source that could not be read in the checkpoint's schema: the error names it
        raise SourceError(f"{err}{part_table_hint(loaded.config.data.sources, err.source)}",
                          source=err.source) from None
    for name in [name for name, metrics in rows.items() if _unscored(metrics)]:  # the others still count
        print(f"note: --source {name}: {_unscored(rows[name])}; left out", file=sys.stderr)
        del rows[name]
    if not rows:
        raise DatasetError("evaluate --source: no source had an image that could be scored")
    for name, metrics in rows.items():
        metrics.update({"training_data": loaded.sources} if loaded.sources else {})
        metrics["evaluated"] = what_was_scored(args.checkpoint, datasets[name], args.batch_size,  # as --data's
                                               training_data=name in trained_on)
        print(f"{name}:\n{format_metrics(metrics)}")
    metrics_file, folder = _metrics_path(args.out)
    if metrics_file is not None:  # with the schema they were scored in (`posepart compare` reads it)
        write_json_atomic(metrics_file, {"sources": rows, "schema": loaded.schema.to_category()})
        print(f"wrote {metrics_file}", file=sys.stderr)
    if folder is not None:
        written = {name: f"keypoints/{name}.json" for name in results if "pose" in rows.get(name, {})}
        if reused:
            _drop_stale(folder, 0, written.values())
        for name, file in written.items():  # a file per source: each numbers its own images
            write_json_atomic(folder / file, in_category(results[name], datasets[name].category_id))
        sheet = grid(overlays, columns=4, schema=loaded.schema) if overlays else None
        figures = [save_rgb(folder / "overlays.png", sheet)] if sheet is not None else []
        tta = tta_label(next(iter(rows.values()))) if rows else ""  # every source ran the same views
        title = f"posepart evaluation: {loaded.config.model.name} ({args.checkpoint.name}){tta} per source"
        print(f"wrote {write_report(folder, title, rows, loaded.schema, figures)}", file=sys.stderr)
    return 0


def _drop_stale(folder: Path, overlays: int, keypoints: Collection[str]) -> None:
    """An --out folder that held an earlier evaluation (`_prepare_out`): its files that this one does not rewrite
    go, as they describe another model or dataset (only the names an evaluation writes). `keypoints`: the keypoint
    files it writes, relative to the folder (keypoints.json, or keypoints/NAME.json per --source)."""
    for path in (folder / "overlays").glob("[0-9][0-9][0-9].png"):
        if int(path.stem) >= overlays:
            path.unlink()
    if not overlays:
        (folder / "overlays.png").unlink(missing_ok=True)
    for path in [folder / RESULTS_FILE, *(folder / "keypoints").glob("*.json")]:
        if path.relative_to(folder).as_posix() not in keypoints:
            path.unlink(missing_ok=True)


def _write_evaluation(folder: Path, name: str, metrics: dict, overlays: list, dataset: PosePartDataset) -> Path:
    """folder/overlays/NNN.png, folder/overlays.png (grid) and folder/report.md."""
    from posepart.report import write_report
    from posepart.viz import grid, save_rgb

    figures = []
    for i, image in enumerate(overlays):
        save_rgb(folder / "overlays" / f"{i:03d}.png", image)
    if overlays:
        figures.append(save_rgb(folder / "overlays.png", grid(overlays, columns=min(4, len(overlays)),
                                                              schema=dataset.schema)))
    return write_report(folder, f"posepart evaluation: {name}", {name: metrics}, dataset.schema, figures)


def in_category(results: list[dict[str, Any]], category_id: int) -> list[dict[str, Any]]:
    """COCO results in the people's category of the file they were scored on (scoring runs in category 1; a Label
    Studio or CVAT file's people need not be: pycocotools scored perfect results there at AP 0)."""
    return results if category_id == 1 else [{**r, "category_id": category_id} for r in results]


def _unscored(metrics: dict[str, Any]) -> str | None:
    """Why metrics describe no image (every one skipped as unreadable), else None: such metrics are refused, not
    written (before, empty metrics and exit 0)."""
    if metrics.get("images"):
        return None
    return f"no image could be scored: all {metrics.get('skipped', 0)} were skipped as unreadable (named above)"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from posepart.files import write_json_atomic
    from posepart.evaluate import evaluate_oracle, format_metrics
    from posepart.report import stage_table

    if args.oracle == (args.checkpoint is not None):
        raise UsageError("evaluate: give exactly one of --checkpoint CKPT or --oracle")
    if args.overlays is None:  # drawn where they are written: before, a note that they were not, after every run
        args.overlays = DEFAULT_OVERLAYS if _metrics_path(args.out)[1] is not None else 0
    if args.oracle and (args.flip or args.scales != [1.0]):
        raise UsageError("evaluate: --flip and --scales are test-time augmentation of a --checkpoint, not of "
                         "the --oracle's ground truth")
    classes = [name for name, _ in args.part_map or ()]
    if len(set(classes)) < len(classes):  # before: the last kept, unsaid
        twice = sorted({c for c in classes if classes.count(c) > 1})
        raise UsageError(f"evaluate --part-map: {', '.join(twice)} given more than once: one CLASS=TARGET[,TARGET] "
                         f"per class (a class that is one of several targets lists them after one '=')")
    if args.oracle and (args.part_map or args.ignore_parts):
        raise UsageError("evaluate: --part-map and --ignore-parts read --data in a --checkpoint's part classes; the "
                         "--oracle scores the data in its own")
    if not args.oracle and (args.sigma is not None or args.paf_width is not None):  # the model's HeadMeta decides
        raise UsageError("evaluate: --sigma and --paf-width draw the --oracle's targets; a --checkpoint's are its own")
    if args.threads:  # as predict's: torch's, for the network (its default is every core)
        import torch

        torch.set_num_threads(args.threads)
    if args.source:
        if args.oracle or args.root is not None or args.annotations is not None:
            raise UsageError("evaluate: --source scores a --checkpoint and replaces --data")
        if args.part_map or args.ignore_parts:  # a source's table is its training source's (by NAME)
            raise UsageError("evaluate: --part-map and --ignore-parts read --data; a --source NAME takes the part "
                             "table of the checkpoint's training source of that NAME")
        if args.images is not None or args.parts is not None:  # before: ignored without a word
            raise UsageError(f"evaluate: --images and --parts describe --data; a --source is NAME=ROOT or "
                             f"NAME=FILE.json{os.pathsep}IMAGES[{os.pathsep}PARTS], its parts in ROOT/parts or PARTS")
        return _evaluate_sources(args, reused=_prepare_out(args.out))
    reused = _prepare_out(args.out)
    dataset = open_dataset(args)
    overlays: list = []
    results = None
    if args.oracle:
        drawn = {key: value for key, value in (("sigma", args.sigma), ("paf_width", args.paf_width))
                 if value is not None}
        metrics = evaluate_oracle(dataset, input_size=args.input_size or INPUT_SIZE,
                                  stride=args.stride or HeadMeta.pose_stride, **drawn)
        drew = metrics["targets"]
        name = (f"oracle ({drew['input_size']} px, stride {drew['pose_stride']}, sigma {drew['sigma']:g}, PAF width "
                f"{drew['paf_width']:g})")
    else:
        metrics, overlays, name, dataset, results = _evaluate_checkpoint(args, dataset)
    if (unscored := _unscored(metrics)) is not None:
        raise DatasetError(f"{args.root or args.annotations}: {unscored}")
    print(format_metrics(metrics))
    if metrics.get("per_stage"):
        print("per stage (%):")  # the fractions above, as percentages: the report's table
        print(stage_table({name: metrics}))
    metrics_file, folder = _metrics_path(args.out)
    if metrics_file is not None:  # with the schema it was scored in (`posepart compare` reads it; the oracle's too)
        write_json_atomic(metrics_file, {**metrics, "schema": dataset.schema.to_category()})
        print(f"wrote {metrics_file}", file=sys.stderr)
    if folder is not None:
        if reused:
            _drop_stale(folder, len(overlays), [RESULTS_FILE] if results is not None else [])
        if results is not None:  # as `posepart predict` writes them (COCO tools score them in the model's schema)
            write_json_atomic(folder / RESULTS_FILE, in_category(results, dataset.category_id))
        report = _write_evaluation(folder, name, metrics, overlays, dataset)
        print(f"wrote {report}" + (f" and {len(overlays)} overlays" if overlays else ""), file=sys.stderr)
    elif overlays:
        print("note: overlays are written only when --out is a folder", file=sys.stderr)
    return 0


def add_evaluate_parser(verbs: Any) -> None:
    """Add the `evaluate` verb to the `posepart` sub-parsers."""
    p = verbs.add_parser("evaluate", help="score predictions (or the --oracle upper bound) on a dataset")
    add_dataset_args(p, positional=False)
    p.add_argument("--checkpoint", type=Path, help="trained model: .ckpt of `posepart train`, exported "
                   ".safetensors, or an ONNX or TorchScript export (scored through its runtime, final stage only)")
    p.add_argument("--oracle", action="store_true", help="decode ground-truth targets instead of a model")
    p.add_argument("--input-size", type=multiple_of(HeadMeta.input_multiple),
                   help=f"network input side (letterboxed); default: the checkpoint's, or {INPUT_SIZE} for --oracle")
    p.add_argument("--stride", type=int, choices=OUTPUT_STRIDES,
                   help=f"--oracle: the pose stride to score (default {HeadMeta.pose_stride}); --checkpoint: the "
                        f"model's own, checked")
    p.add_argument("--sigma", type=positive, help=f"--oracle: the heatmaps' Gaussian sigma in input pixels (default "
                   f"{HeadMeta.sigma:g}; a model's own is its config's data.sigma)")
    p.add_argument("--paf-width", type=positive, help=f"--oracle: the PAFs' half-width in output cells (default "
                   f"{HeadMeta.paf_width:g}; a model's own is its config's data.paf_width)")
    p.add_argument("--out", type=Path, help="a folder (metrics.json, report.md, overlays/, and the people scored "
                   "as COCO results in keypoints.json, keypoints/NAME.json per --source) or a FILE.json (the metrics "
                   "alone)")
    add_test_time_args(p, flip_note="; metrics.json records the test-time views under `test_time`")
    p.add_argument("--batch-size", type=at_least(1), default=BATCH_SIZE, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--overlays", type=at_least(0), default=None, metavar="N",
                   help=f"draw the first N predictions into an --out folder (default: {DEFAULT_OVERLAYS})")
    p.add_argument("--workers", type=at_least(0), default=0, help="data loading processes")
    p.add_argument("--threads", type=at_least(1), help="CPU threads for the network (default: all cores)")
    p.add_argument("--part-map", type=_part_map_item, action="extend", metavar="CLASS=TARGET[,TARGET]",
                   help="the data's part class CLASS is the checkpoint's TARGET (or one of the TARGETs): where the "
                        "names differ (repeat; a training source's part_map)")
    p.add_argument("--ignore-parts", type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
                   action="extend", metavar="CLASS[,CLASS]", help="the data's part classes to leave unscored (repeat; "
                   "a training source's ignore_parts)")
    p.add_argument("--source", action="append", metavar="NAME=ROOT", help="score --checkpoint on several datasets "
                   "(repeat; each read in the checkpoint's schema, with the part_map / ignore_parts of the training "
                   f"source of that NAME), one report row per source; a COCO release: NAME=FILE.json{os.pathsep}"
                   f"IMAGES, with its part folder NAME=FILE.json{os.pathsep}IMAGES{os.pathsep}PARTS")
    p.set_defaults(run=cmd_evaluate)
