"""The `posepart` command line: one verb per job."""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from posepart import files
from posepart.data.dataset_args import add_dataset_args, open_dataset
from posepart.data.format import DatasetError
from posepart.data.synth import DEMO_SIZE, DEMO_TRAIN_SCENES, DEMO_VAL_SCENES
from posepart.errors import (FULL_OR_READ_ONLY, PosepartError, PosepartWarning, UsageError,
                             refuse_while_a_child_imports_main)
from posepart.heads import INPUT_SIZE, HeadMeta


# -- verbs ---------------------------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from posepart.data.synth import SceneConfig, write_synth

    start = time.perf_counter()
    scene = SceneConfig(max_people=args.max_people, min_height=args.min_height, crowd_prob=args.crowd_prob,
                        clutter=args.clutter)
    root = write_synth(args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers, config=scene,
                       progress=True, overwrite=args.overwrite)
    print(f"wrote {args.n} synthetic images ({args.size}x{args.size}, seed {args.seed}) to {root} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


INSPECT_FIGURE = Path("inspect.png")  # where `inspect --show N` draws, unless --out says


def cmd_inspect(args: argparse.Namespace) -> int:
    from posepart.data.inspect import inspect_dataset

    if args.show and (args.out.is_dir() or not args.out.suffix):  # before: found after the whole dataset was read
        raise UsageError(f"inspect --out {args.out}: {'a folder' if args.out.is_dir() else 'no file type'}; --show "
                         f"draws one figure file (.png or .jpg)")
    if not args.show and args.out != INSPECT_FIGURE:  # before: nothing drawn, nothing said
        print(f"note: --out {args.out} is where --show N draws samples: without --show nothing is drawn",
              file=sys.stderr)
    dataset = open_dataset(args, list_broken=True)  # every broken record listed, not the first raised
    report = inspect_dataset(dataset, check_pixels=not args.no_pixels, progress=True, threads=args.threads)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.format())
    if args.show:
        from posepart.viz import grid, overlay, save_rgb

        tiles = []
        for record in dataset.records:  # the first N that can be drawn (a broken one is among the problems)
            if len(tiles) == args.show:
                break
            try:
                image = dataset.load_image(record)
                parts = dataset.load_parts(record)
            except DatasetError:
                continue
            tiles.append(overlay(image, dataset.schema, parts=parts, keypoints=record.keypoints))
        if not tiles:  # before: an image of the legend alone, "drew 0 samples"
            print(f"note: no sample could be drawn (none of the {len(dataset)} images can be read): {args.out} not "
                  f"written", file=sys.stderr)
            return 1
        out = save_rgb(args.out, grid(tiles, columns=min(4, max(len(tiles), 1)), schema=dataset.schema))
        print(f"drew {len(tiles)} samples to {out}", file=sys.stderr)
    return 1 if report.problems else 0


def cmd_models(args: argparse.Namespace) -> int:
    from posepart.models import MODELS, count_flops, count_parameters
    from posepart.schema import Schema

    if args.config is not None and args.width is not None:
        raise UsageError("models: --config sets the model's width (model.width): drop --width")
    schema, width, size = Schema.pascal_person_part(), args.width or 1.0, args.input_size or INPUT_SIZE
    if args.config is not None:  # the model a training config builds (the demo's: width 0.25, fc_width 256, ...)
        from posepart.engine.config import load_config
        from posepart.engine.data import target_schema
        from posepart.engine.builders import build_from_config

        config = load_config(args.config)  # a file, or a shipped config's name
        schema = target_schema(config.data.schema) if config.data.schema else schema
        width, size = config.model.width, args.input_size or config.data.input_size
        builders = {args.config: lambda: build_from_config(config, schema, pretrained=False)}
    else:
        builders = {name: (lambda b=builder: b(schema, width=width)) for name, builder in MODELS.items()}
    rows = []
    for name, build in tqdm(builders.items(), desc="counting FLOPs", unit="model", leave=False):  # stderr
        model = build()
        rows.append({"model": name, "parameters": count_parameters(model),
                     "gflops": count_flops(model, (size, size)) / 1e9})
        del model
    if args.json:
        print(json.dumps({"input_size": size, "width": width, "models": rows}, indent=2))
        return 0
    print(f"{'model':<14} {'params (M)':>11} {f'GFLOPs @ {size}':>15}")
    for row in rows:
        print(f"{row['model']:<14} {row['parameters'] / 1e6:>11.2f} {row['gflops']:>15.2f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from posepart.data.synth import SceneConfig
    from posepart.demo import demo_size, run_demo

    size = demo_size(args.size)
    scene = SceneConfig.easy() if args.scene == "easy" else SceneConfig()
    report = run_demo(args.out, n_val=args.n_val, size=size, seed=args.seed, train_images=args.train_images,
                      n_train=args.n_train, train_minutes=args.train_minutes, scene=scene, jobs=args.jobs)
    print(f"report: {report}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from posepart.engine.config import load_config

    config = load_config(args.config, args.set or [])
    if args.train is not None:  # set directly: a path is not YAML
        config.data.train = args.train
    if args.val is not None:
        config.data.val = args.val
    if args.threads is not None:
        config.train.threads = args.threads
    if args.print_config:  # the resolved config, as the run would write it to OUT/config.yaml (LightningCLI's flag)
        from posepart.engine.config import absolute_paths, config_yaml, warn_unused_model_options

        warn_unused_model_options(config.model)  # as the run would (a review: --print-config said nothing of them)
        print(config_yaml(absolute_paths(config)), end="")
        return 0
    if args.out is None:
        raise UsageError("train: --out DIR is required (the run folder), unless --print-config")
    from posepart.engine.train import train

    try:
        result = train(config, args.out, resume=args.resume, max_minutes=args.max_minutes, overwrite=args.overwrite,
                       verbose=args.verbose)
    except FloatingPointError as err:  # the loss became NaN/inf: the run failed (exit 1), the input was not refused
        from posepart.engine.checkpoint import CheckpointError
        from posepart.engine.resume import saved_step
        from posepart.engine.run_folder import checkpoint_path

        last = checkpoint_path(Path(args.out))  # (a walkthrough: the advice "lower optim.lr" could not be followed
        # with --resume, which keeps the checkpoint's, and the NaN came back at the same step)
        try:
            left = (f" Its last checkpoint, {last} (step {saved_step(last)}), holds finite weights: a --resume keeps "
                    f"its optim.lr; to train on with another, start a new run from them: "
                    f"--set {shlex.quote(f'model.init={last}')} --set optim.lr=..." if last.is_file() else "")
        except (CheckpointError, OSError):  # unreadable: the NaN is the message
            left = ""
        print(f"error: {err}{left}", file=sys.stderr)
        return 1
    if result.rank:  # DDP: every process returns here; one summary
        return 0
    if result.interrupted:  # 128 + the signal, as the shell counts it: a requeue loop sees that it did not finish
        go_on = (f"continue with: {_resume_command(result, args)}" if result.last is not None else
                 "no checkpoint was saved (it stopped before the end of its first epoch's validation)")
        print(f"interrupted by {result.interrupted} at step {result.global_step}: {go_on}", file=sys.stderr)
        return 128 + int(getattr(signal, result.interrupted))
    best = result.best if result.best is not None else (  # before, "it needs --val" also where --val was given
        "none (no validation ran: it needs validation data, and runs at the end of every train.val_every_epochs-th "
        "epoch" + (", which this run did not reach" if result.epochs < config.train.val_every_epochs else "") + ")")
    epochs = (f"{result.epochs} epoch{'s' * (result.epochs != 1)}" + (" and part of the next" * result.inside_epoch)
              if result.epochs or not result.inside_epoch else "part of the first epoch")  # not "0 epochs and ..."
    if result.already_complete:  # the warning above says why and what to do
        best = result.best if result.best is not None else "none in this folder"
        print(f"trained nothing: the run was complete at {epochs} ({result.global_step} steps); last checkpoint: "
              f"{result.last}; best: {best}")
    else:
        print(f"trained {epochs} ({result.global_step} steps); last checkpoint: {result.last}; best: {best}")
    shown = {k: round(v, 4) for k, v in sorted(result.metrics.items())  # the pooled headline figures, and the one
             if k.startswith("val/") and k.count("/") == 2 or k == config.train.best_metric}  # best.ckpt follows
    if shown:
        print(json.dumps(shown, indent=2))
        if result.validated_at is not None and result.validated_at != result.global_step:  # (a walkthrough: taken
            # for the scores of last.ckpt, printed just above)
            print(f"(the figures of the validation at step {result.validated_at}; last.ckpt, at step "
                  f"{result.global_step}, scores with: posepart evaluate --checkpoint {result.last} --data ...)")
    if result.out_of_time and result.last is not None:  # exit 0, as its budget is a plan; said, with the way on
        print(f"stopped by --max-minutes before its planned end, at step {result.global_step}: continue with: "
              f"{_resume_command(result, args)}", file=sys.stderr)
    return 0


def _resume_command(result: Any, args: argparse.Namespace) -> str:
    """The whole command that continues a stopped run, quoted for this system's shell (a walkthrough: `train --resume
    CKPT` alone was refused for its missing --config); a --max-minutes is kept (a Slurm job's cap)."""
    from posepart.engine.run_folder import CONFIG_FILE

    limit = ("--max-minutes", args.max_minutes) if args.max_minutes is not None else ()
    words = [str(a) for a in ("posepart", "train", "--config", result.out / CONFIG_FILE, "--resume", result.last,
                              "--out", result.out, *limit)]
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


def cmd_export_weights(args: argparse.Namespace) -> int:
    from posepart.engine.checkpoint import export_weights

    out = export_weights(args.checkpoint, args.out)
    print(f"wrote {out}")
    return 0


# -- parser --------------------------------------------------------------------------------------------------------
class _Version(argparse.Action):
    """`--version`: the release and the digest of the code (`posepart.files.code_digest`, what checkpoints and
    metrics record as `code`: the release number is the same on every commit), computed only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0,
                         help="print the release and the code's digest (what checkpoints record), and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from posepart import __version__
        from posepart.files import code_digest

        print(f"posepart {__version__} (code {code_digest()})")  # on stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from posepart.arguments import at_least, available_cores, multiple_of, positive
    from posepart.data.synth import SceneConfig

    parser = argparse.ArgumentParser(prog="posepart", description=__doc__)
    parser.add_argument("--version", action=_Version)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("synth", help="write a synthetic dataset of people (the embedded default data)")
    p.add_argument("out", type=Path, help="the dataset folder to write (annotations.json, images/, parts/)")
    p.add_argument("--n", type=int, default=300, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same dataset)")
    p.add_argument("--size", type=int, default=INPUT_SIZE, help="image side in pixels")
    p.add_argument("--workers", type=at_least(1), default=1, help="processes (output identical for any count)")
    p.add_argument("--max-people", type=int, default=SceneConfig.max_people, help="labelled people per image: 1..N")
    p.add_argument("--min-height", type=float, default=SceneConfig.min_height,
                   help="smallest adult, as a fraction of the image side (children: 0.65-0.85 of their drawn height)")
    p.add_argument("--crowd-prob", type=float, default=SceneConfig.crowd_prob,
                   help="chance of tiny unlabelled crowd people per image")
    p.add_argument("--clutter", type=float, default=SceneConfig.clutter,
                   help="background shapes and limb-like distractors, as a fraction of the default (0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already at OUT")
    p.set_defaults(run=cmd_synth)

    p = verbs.add_parser("inspect", help="validate a dataset and print its counts")
    add_dataset_args(p, positional=True)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--no-pixels", action="store_true",
                   help="count from the annotation file alone: do not decode every image and part map (COCO's "
                        "118k images: 9 minutes on one core)")
    p.add_argument("--threads", type=at_least(1), default=available_cores(),
                   help="files decoded at once (default: the cores this process may use, %(default)s)")
    p.add_argument("--show", type=at_least(0), default=0, metavar="N", help="draw N samples to --out")
    p.add_argument("--out", type=Path, default=INSPECT_FIGURE, help="figure path for --show (default: %(default)s)")
    p.set_defaults(run=cmd_inspect)

    from posepart.evaluate_cli import add_evaluate_parser

    add_evaluate_parser(verbs)  # posepart evaluate (checkpoints, --oracle, --source)

    from posepart.compare_cli import add_compare_parser

    add_compare_parser(verbs)  # posepart compare: evaluations side by side

    p = verbs.add_parser("models", help="list the named models with parameter and FLOP counts")
    p.add_argument("--input-size", type=multiple_of(HeadMeta.input_multiple), default=None,
                   help=f"square input side for the FLOP count (default {INPUT_SIZE}, or the config's)")
    p.add_argument("--width", type=positive, default=None,
                   help="conv channel width multiplier (default 1; the FCN's fc6/fc7 keep their 4096: see --config)")
    p.add_argument("--config", metavar="NAME_OR_PATH",
                   help="count the model a training config builds instead (e.g. demo_cpu_joint), at --input-size")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_models)

    p = verbs.add_parser("demo", help="the main job on the embedded synthetic data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder: data, runs, report.md, figures")
    p.add_argument("--n-val", type=at_least(1), default=DEMO_VAL_SCENES, help="synthetic validation images")
    p.add_argument("--size", type=at_least(1), default=None,
                   help=f"image and network input side (default: {DEMO_SIZE})")
    p.add_argument("--scene", choices=("easy", "benchmark"), default="easy",
                   help="synthetic scenes: easy = 1-2 large people on plain backgrounds (learnable on a CPU in "
                        "minutes); benchmark = `posepart synth`'s default (up to 5 people, clutter, crowds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data (validation: seed + 1) and of training")
    p.add_argument("--train-images", type=at_least(0), default=None, metavar="N",
                   help="training budget per model, in images (default: posepart.demo.default_train_images(), which "
                        "depends on whether the CPU runs bfloat16 natively): FCN32, "
                        "PAF, the joint network with either task masked and the joint model each train on N images "
                        "(the learning-rate schedule is planned over N) and are compared; 0: oracle evaluation only")
    p.add_argument("--train-minutes", type=float, default=None, help="optional wall-clock cap per model")
    p.add_argument("--n-train", type=at_least(1), default=DEMO_TRAIN_SCENES,
                   help="distinct synthetic training images")
    p.add_argument("--jobs", type=at_least(1), default=None,
                   help="models trained at once, in separate processes, each on one thread (default: 3, or one per "
                        "core up to 5; 1: one after another with progress bars; the numbers do not depend on it)")
    p.set_defaults(run=cmd_demo)

    from posepart.study import add_study_parser

    add_study_parser(verbs)  # posepart study (the report's thesis, docs/training.md)

    p = verbs.add_parser("train", help="train a model from a YAML config (PyTorch Lightning)")
    p.add_argument("--config", type=Path, required=True, action="append",
                   help="a YAML file, or a shipped config by name from any folder (e.g. demo_cpu_joint; an "
                        "unknown name lists them); repeat to lay one over another in order (--config demo_cpu_joint "
                        "--config mine.yaml: sections merge key by key, lists and values replace)")
    p.add_argument("--train", type=Path, help="training dataset root (overrides data.train)")
    p.add_argument("--val", type=Path, help="validation dataset root (overrides data.val)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. optim.lr=0.01")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time (a resumable last.ckpt is kept)")
    p.add_argument("--threads", type=at_least(1), help="CPU threads (overrides train.threads; default: every core)")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue exactly from a checkpoint (last.ckpt)")
    p.add_argument("--out", type=Path, help="run folder: config.yaml, checkpoints/, csv/version_N/, tb/version_N/ "
                   "(required to train; a folder holding a run is refused unless --resume or --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its config.yaml, "
                   "checkpoints/, csv/ and tb/; nothing else there is touched)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file + --set + --train/--val) as YAML and exit without training")
    p.add_argument("--verbose", action="store_true",
                   help="also show Lightning's tips and the deprecation warnings of its own code")
    p.set_defaults(run=cmd_train)

    p = verbs.add_parser("export-weights", help="write a checkpoint's model weights as .safetensors (+ schema/config)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a .ckpt of `posepart train`")
    p.add_argument("--out", type=Path, required=True, help="FILE.safetensors")
    p.set_defaults(run=cmd_export_weights)

    from posepart.data.readers.cli import add_convert_parser

    add_convert_parser(verbs)  # posepart convert {pascal-person-part,mpii,lip,cihp,masks}

    from posepart.data.split import add_split_parser

    add_split_parser(verbs)  # posepart split: a held-out share of one dataset's images

    from posepart.predict_cli import add_predict_parsers

    add_predict_parsers(verbs)  # posepart predict / export (docs/inference.md)
    _show_defaults(parser)
    return parser


class _DefaultsFormatter(argparse.HelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, minus the noise: no "(default: None)" or "(default: False)" on
    options whose absence is their default, and none where the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS  # not 0
        if unset or "(default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every parser and sub-parser lists the defaults in its --help."""
    parser.formatter_class = _DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)


# What the full install (pyproject.toml's dependencies, by import name) adds to the ONNX Runtime one
# (docs/inference.md), where `predict --onnx` alone runs; onnx is the `onnx` extra's.
_FULL_INSTALL = {"torch", "torchvision", "lightning", "albumentations", "h5py", "yaml", "pydantic", "torchjd",
                 "matplotlib", "tensorboard", "safetensors"}
_EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx"}


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fd (captured), no poll (Windows)
        return False


def _not_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a finder that refuses it
        return True


@contextlib.contextmanager
def _own_warnings_as_lines() -> Iterator[None]:
    """posepart's own warnings (`PosepartWarning`) as one `warning: ...` line, as its other notes are (Python's format
    adds the source file, line number and code line); every other warning keeps Python's format."""
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, PosepartWarning):  # tqdm.write: a line of its own, not the end of a progress bar's
            tqdm.write(f"warning: {message}", file=sys.stderr if file is None else file)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. A `PosepartError` (a user's mistake, an unusable input) is one `error:` line and exit 2; a full
    disk or read-only filesystem likewise; any other exception is a bug and keeps its traceback."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # a file name that is not UTF-8 (an archive's Latin-1)
    if reconfigure is not None:  # printed as escapes, as stderr does, not a UnicodeEncodeError after the work is done
        reconfigure(errors="backslashreplace")
    with _own_warnings_as_lines():  # from the start: building the parser imports modules that may warn (numba's)
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "inputs", None) is not None and all(
                os.path.exists(e) or glob.has_magic(e) for e in extra):
            # `predict a.jpg --flip b.jpg`: files (or quoted patterns) after an option (argparse takes the first run
            # of inputs only); another word stays an error (`--flip true` is no input, nor `--quiet 0` a webcam:
            # webcams and missing files go before the options)
            args.inputs += extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if argv is None:
            return _run(args)
        # called from Python (a notebook, a script): the run's provenance records this command, not the process's
        # own sys.argv (the kernel's launcher, the calling script)
        files.invoked_as = ["posepart", *map(str, argv)]
        try:
            return _run(args)
        finally:
            files.invoked_as = None


def _run(args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        refuse_while_a_child_imports_main(f"posepart {args.verb}")
        code = run(args)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return code
    except PosepartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C where a verb does not handle it itself (loading a model, importing
        # torch), or a job stopped by a signal (`errors.Interrupted`: the demo's, the study's)
        print("interrupted", file=sys.stderr)
        return 128 + getattr(err, "signal", signal.SIGINT)  # 128 + the signal, the shell's convention
    except BrokenPipeError:
        if not _stdout_closed():  # another pipe (a worker's): a bug, with its traceback
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141  # the reader of stdout went away (`| head`): stop as shell tools do, 128 + SIGPIPE
    except OSError as err:
        if err.errno not in FULL_OR_READ_ONLY:  # the machine's (Lightning's loggers too), not posepart's code
            raise
        print(f"error: cannot write {err.filename or 'the output'}: {err.strerror}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in _FULL_INSTALL | set(_EXTRAS) or not _not_installed(missing):  # else a bug: its traceback
            raise
        fix = (f"in the posepart checkout: pip install '.[{_EXTRAS[missing]}]'" if missing in _EXTRAS else
               "the ONNX Runtime install runs `posepart predict --onnx MODEL.onnx` alone; in the posepart checkout, "
               "`pip install .` installs the rest")
        print(f"error: posepart {args.verb} needs {missing}, which is not installed ({fix})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
