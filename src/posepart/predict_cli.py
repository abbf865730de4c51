"""`posepart predict` and `posepart export`: the command-line side of `posepart.inference` and `posepart.engine.export`.

Exit status of `predict`: 0 when at least one input was processed (failed inputs are listed on stderr and in
OUT/summary.json), 1 when none was (or, with --strict, when any input failed), 2 when the model cannot be loaded or
an option or --out cannot work (an `error:` line), 130 when interrupted (Ctrl-C) and 143 when terminated
(SIGTERM): OUT/keypoints.json and summary.json then hold the inputs done so far.
Importing this module (and running `predict --onnx`) imports no torch.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from posepart.arguments import add_test_time_args, at_least, multiple_of
from posepart.decode import DecodeConfig
from posepart.heads import HeadMeta
from posepart.inference.backends import DEFAULT_OPSET, MIN_OPSET
from posepart.inference.predictor import BATCH_SIZE


def _predictor(args: argparse.Namespace) -> Any:
    """The Predictor for --onnx FILE or --checkpoint CKPT (.ckpt/.safetensors/.onnx/.pt); a file that cannot be
    loaded raises a PosepartError naming it."""
    from posepart.inference.predictor import Predictor

    from posepart.errors import UsageError

    given = {"min_joints": args.min_joints, "min_person_score": args.min_person_score}
    try:  # checked as DecodeConfig checks its fields (before, set after it was made: --min-person-score nan passed)
        decode = DecodeConfig(**{key: value for key, value in given.items() if value is not None})
    except ValueError as err:
        raise UsageError(f"predict: {err}") from None
    options = dict(input_size=args.input_size, scales=args.scales, flip=args.flip, batch_size=args.batch_size,
                   keep_maps=args.maps, part_instances=not args.no_instances, decode_config=decode)
    if args.onnx is not None or args.checkpoint.suffix.lower() == ".onnx":
        predictor = Predictor.from_onnx(args.onnx or args.checkpoint, device=args.device, threads=args.threads,
                                        **options)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, **options)
    joints = predictor.schema.num_joints
    if args.min_joints is not None and args.min_joints > joints:  # the decoder caps its default, not a choice
        raise UsageError(f"--min-joints {args.min_joints}: the model's people have {joints} joints")
    return predictor


@contextmanager
def _sigterm_interrupts() -> Iterator[list[int]]:
    """SIGTERM (sent by `timeout`, `docker stop`, Slurm and systemd) stops the run as Ctrl-C does, so the results of
    the inputs done are written and an open video is closed; Python's default ended the process there and then,
    without keypoints.json or summary.json and with an mp4 no player opens. Yields the signals received."""
    from posepart.inference.media import Terminated

    received: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise Terminated

    if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's
        yield received
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_predict(args: argparse.Namespace) -> int:
    from posepart.errors import UsageError
    from posepart.inference.inputs import annotation_index, expand_inputs
    from posepart.inference.media import PredictOptions, check_out, run_predict

    if (args.checkpoint is None) == (args.onnx is None):
        raise UsageError("predict: give exactly one of --checkpoint CKPT or --onnx FILE")
    sources, failures = expand_inputs([str(i) for i in args.inputs], recursive=args.recursive, skip=args.out)
    annotations = annotation_index(args.annotations) if args.annotations else None
    options = PredictOptions(out=args.out, overlays=not args.no_overlays, parts=not args.no_parts,
                             instances=not args.no_instances, maps=args.maps, max_frames=args.max_frames,
                             annotations=annotations, progress=not args.quiet,
                             model=str(args.checkpoint if args.checkpoint is not None else args.onnx))
    check_out(sources, options)  # all of the above before the model loads
    from posepart.files import lock_output, refuse_output_in_use

    refuse_output_in_use(args.out)  # before, the model loaded first (19 s on a CPU) and the lock then refused
    predictor = _predictor(args)
    for task in predictor.info.untrained:
        print(f"note: the model's {task} head was never trained (no training source fed it {task} labels): its "
              f"output is not used", file=sys.stderr)
    if annotations is not None:
        annotations.check(predictor.schema.keypoints)
    with lock_output(args.out), _sigterm_interrupts() as terminated:  # an --out that cannot be written: OutputError
        summary = run_predict(predictor, sources, options, failures)
    if summary.get("interrupted"):
        print(f"interrupted: stopped after {summary['succeeded']} input(s); their results are in {args.out}",
              file=sys.stderr)
        return 143 if terminated else 130  # 128 + SIGTERM or SIGINT, the shell's convention
    print(f"processed {summary['succeeded']} input(s), {summary['people']} people found; "
          f"{summary['failed']} failed; results in {args.out}", file=sys.stderr)
    if summary["succeeded"] == 0 or (args.strict and summary["failed"]):
        return 1
    return 0


# what `export --out FILE` writes, by FILE's extension (the ones `Predictor.from_checkpoint` reads back)
EXPORT_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


def export_format(out: Path, given: str | None) -> str:
    """The export format: the one `--out`'s extension names; `--format`, when given, must agree with it."""
    from posepart.errors import UsageError

    named = EXPORT_SUFFIXES.get(out.suffix.lower())
    if named is None:
        weights = "; the weights alone as .safetensors: `posepart export-weights`" * (out.suffix.lower() ==
                                                                                   ".safetensors")
        raise UsageError(f"export --out {out}: the file must end in .onnx (ONNX) or .pt / .ts (TorchScript)"
                         f"{weights}")
    if given is not None and given != named:
        raise UsageError(f"export: --format {given} contradicts --out {out} (a {out.suffix} file is {named})")
    return named


def cmd_export(args: argparse.Namespace) -> int:
    from posepart.engine.export import export_model

    result = export_model(args.checkpoint, export_format(args.out, args.format), args.out,
                          input_size=args.input_size, opset=args.opset, verify=not args.no_verify)
    check = ("" if result["max_diff"] is None else f" (checked against PyTorch at two batch and image sizes: "
                                                 f"max |diff| {result['max_diff']:.1e} of the outputs' scale)")
    for task in result["left_out"]:
        print(f"note: the model's {task} head was never trained (no training source fed it {task} labels): the "
              f"export leaves it out", file=sys.stderr)
    print(f"wrote {result['path']}{check}")
    return 0


def add_predict_parsers(verbs: Any) -> None:
    """Add the `predict` and `export` verbs to the `posepart` sub-parsers."""
    p = verbs.add_parser("predict", help="run a model on images, folders, videos or a webcam",
                         description="Writes OUT/keypoints.json (COCO results), parts/, instances/, overlays/, "
                         "videos/ and summary.json; see docs/inference.md.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (images and videos in them), video files, or a webcam index (0); files "
                   "may also follow options, webcams and files not there go before them")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, help="model: .ckpt, .safetensors, or an export (.onnx, .pt, .ts)")
    model.add_argument("--onnx", type=Path, help="exported .onnx model, run by onnxruntime alone (no torch needed)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--input-size", type=multiple_of(HeadMeta.input_multiple),
                   help="network canvas long side (default: the model's training size)")
    add_test_time_args(p)
    p.add_argument("--batch-size", type=at_least(1), default=BATCH_SIZE, help="canvases per network call")
    p.add_argument("--threads", type=at_least(1), help="CPU threads for the network (default: all cores)")
    p.add_argument("--min-joints", type=at_least(1),
                   help=f"drop people with fewer joints (default {DecodeConfig.min_joints}, DecodeConfig's)")
    p.add_argument("--min-person-score", type=float,
                   help=f"drop people scoring below this (default {DecodeConfig.min_person_score:g})")
    p.add_argument("--maps", action="store_true", help="also draw heatmap and PAF pictures (OUT/maps/)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay images")
    p.add_argument("--no-parts", action="store_true", help="do not write part label PNGs")
    p.add_argument("--no-instances", action="store_true", help="do not compute or write part instances")
    p.add_argument("--max-frames", type=at_least(1), help="stop each video / webcam after this many frames")
    p.add_argument("--recursive", action="store_true", help="also look in sub-folders of folder inputs")
    p.add_argument("--annotations", type=Path, help="COCO JSON whose image ids the results should use (an input "
                   "takes the id of the file_name its path ends in, else of the one file_name with its base name), "
                   "so keypoints.json can be scored against it")
    p.add_argument("--strict", action="store_true", help="exit 1 if any input failed (default: only if all did)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_predict)

    p = verbs.add_parser("export", help="export a checkpoint to ONNX (dynamic batch and size) or TorchScript")
    p.add_argument("--checkpoint", type=Path, required=True, help=".ckpt or .safetensors")
    p.add_argument("--format", choices=("onnx", "torchscript"),
                   help="optional: must agree with --out's extension, which decides")
    p.add_argument("--out", type=Path, required=True, help="FILE.onnx (ONNX) or FILE.pt / FILE.ts (TorchScript); "
                   "the weights alone as .safetensors: `posepart export-weights`")
    p.add_argument("--input-size", type=multiple_of(HeadMeta.input_multiple),
                   help="tracing input side and the default predict size (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET} or above "
                   f"(default: %(default)s)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime / TorchScript parity check")
    p.set_defaults(run=cmd_export)
