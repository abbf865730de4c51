"""`posepart study`: the source report's thesis as one experiment. Do cheap pose labels stand in for scarce part labels?

One architecture (the joint network of a shipped config, `demo_cpu_joint` by default) and one budget (training images
per model, the learning-rate schedule planned over them). For each seed and label fraction f, a seeded fraction f of
the training images is the part-labelled subset (the fractions are nested: the 5 % subset lies inside the 20 % one),
and these arms train:
- `parts@f`: parts only, on the part-labelled subset;
- `joint@f`: parts on the subset and pose on every image (the report's proposal; the rest of the images carry pose
  labels alone); at f = 1 this is the joint model on all labels, `joint`;
- `pose` (once per seed): pose only, on every image;
- `joint@f+st` (with `--self-train`): `joint@f` plus self-training (`train.self_training`) on the images that carry
  no labels at all: a seeded share `--unlabelled` of the training images, held out of every arm's labels (the other
  arms then train on the labelled rest). The arm sees the labelled images as often as `joint@f` does, and the
  unlabelled ones besides (each image equally often), as semi-supervised methods add unlabelled batches.
Single-task arms are the joint network with the other task masked (`data.sources` tasks), so a difference between
arms is the sharing, not the head. Every arm is scored on the whole validation set, for the tasks it trains.

The report gives mean +- sd over seeds per arm and fraction, and the multi-task gain of each joint arm,
Delta_m = mean over tasks of (M_joint - M_single) / M_single (Maninis et al. 2019, Vandenhende et al. 2021) with mean
IU against `parts@f` and OKS AP against `pose`, per seed then averaged; a plot against f; metrics.json.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from posepart.arguments import at_least
from posepart.data.format import ANNOTATIONS_FILE, PosePartDataset, read_json
from posepart.data.synth import DEMO_SIZE, DEMO_TRAIN_SCENES, DEMO_VAL_SCENES
from posepart.data.split import image_order, write_subset  # fraction f labels the first ceil(f * n)
from posepart.errors import UsageError
from posepart.files import read_earlier_json, write_json_atomic
from posepart.study_report import arm_label, plot_study, summarise, write_study_report

QUICK = {"fractions": (0.1, 1.0), "seeds": 3, "train_images": 6000}  # `--quick`: about 28 minutes on 2 CPU cores
DEFAULTS = {"fractions": (0.05, 0.2, 1.0), "seeds": 3, "train_images": 12000}


@dataclass(frozen=True)
class Split:
    """The part-labelled subset of one seed and fraction: image ids, and the annotation files of both halves; with
    an unlabelled share, the labelled pool (what pose is learned from) and the images without any label."""

    seed: int
    fraction: float
    labelled: tuple[int, ...]
    rest: tuple[int, ...]
    labelled_file: Path
    rest_file: Path | None  # None at f = 1 (no image without part labels)
    pool_file: Path | None = None  # every labelled image (None: the whole training set)
    unlabelled: tuple[int, ...] = ()
    unlabelled_file: Path | None = None


def subset_size(n: int, fraction: float) -> int:
    """Images in the part-labelled subset: ceil(f * n), at least one."""
    return max(1, math.ceil(fraction * n - 1e-9))


def unlabelled_count(share: float, n: int) -> int:
    """Training images without any label: floor(share * n), the last of each seed's order."""
    return math.floor(share * n + 1e-9)


def make_splits(dataset: PosePartDataset, fractions: Sequence[float], seeds: Sequence[int], folder: Path,
                unlabelled_share: float = 0.0) -> dict[tuple[int, float], Split]:
    """Every (seed, fraction) split, with its annotation files under `folder`, and folder/splits.json recording the
    order of each seed (so any subset can be rebuilt). With `unlabelled_share` u, the last floor(u * n) images of a
    seed's order carry no label in any arm, and the fractions are of the labelled rest."""
    splits: dict[tuple[int, float], Split] = {}
    record: dict[str, Any] = {"dataset": str(dataset.annotation_file), "unlabelled_share": unlabelled_share,
                              "seeds": {}}
    data = read_json(dataset.annotation_file)  # once for every subset
    for seed in seeds:
        order = image_order(dataset, seed)
        n_unlabelled = unlabelled_count(unlabelled_share, len(order))
        pool, unlabelled = order[: len(order) - n_unlabelled], tuple(order[len(order) - n_unlabelled :])
        record["seeds"][str(seed)] = {"order": order, "unlabelled": len(unlabelled), "sizes": {}}
        extra: dict[str, Any] = {}
        if unlabelled:
            extra = {"pool_file": write_subset(data, pool, folder / f"seed{seed}_pool.json"),
                     "unlabelled": unlabelled,
                     "unlabelled_file": write_subset(data, unlabelled, folder / f"seed{seed}_unlabelled.json")}
        for f in fractions:
            k = subset_size(len(pool), f)
            labelled, rest = tuple(pool[:k]), tuple(pool[k:])
            record["seeds"][str(seed)]["sizes"][f"{f:g}"] = k
            labelled_file = write_subset(data, labelled, folder / f"seed{seed}_f{f:g}_labelled.json")
            rest_file = write_subset(data, rest, folder / f"seed{seed}_f{f:g}_rest.json") if rest else None
            splits[(seed, f)] = Split(seed, f, labelled, rest, labelled_file, rest_file, **extra)
    write_json_atomic(folder / "splits.json", record)
    return splits


def arm_sources(arm: str, split: Split, train_root: Path, val_root: Path, labelled_share: float | None = None
                ) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """(`data.sources` entries, trained tasks) of an arm ("pose", "parts", "joint", "joint+st"). In the joint arms
    the part-labelled subset gets `labelled_share` of the labelled draws (None: its size's share, so every training
    image is drawn equally often); in `joint+st` the unlabelled images are drawn by their share of the images."""
    def subset(name: str, file: Path, tasks: list[str] | None, n: float, val: bool) -> dict[str, Any]:
        entry = {"name": name, "train": {"root": str(train_root), "annotations": str(file)}, "weight": n,
                 **({"tasks": tasks} if tasks is not None else {"unlabelled": True})}
        return {**entry, "val": str(val_root)} if val else entry

    if arm == "pose":
        if split.pool_file is None:
            return [{"name": "all", "train": str(train_root), "val": str(val_root), "tasks": ["pose"]}], ("pose",)
        pool = len(split.labelled) + len(split.rest)
        return [subset("all", split.pool_file, ["pose"], pool, True)], ("pose",)
    if arm == "parts":
        return [subset("labelled", split.labelled_file, ["parts"], len(split.labelled), True)], ("parts",)
    n, rest = float(len(split.labelled)), float(len(split.rest))
    if labelled_share is not None and rest:
        n, rest = labelled_share * (n + rest), (1.0 - labelled_share) * (n + rest)
    sources = [subset("labelled", split.labelled_file, ["parts", "pose"], n, True)]
    if split.rest_file is not None:
        sources.append(subset("rest", split.rest_file, ["pose"], rest, False))
    if arm == "joint+st":
        assert split.unlabelled_file is not None, "self-training needs images without labels (--unlabelled)"
        sources.append(subset("unlabelled", split.unlabelled_file, None, len(split.unlabelled), False))
    return sources, ("parts", "pose")


def study_arms(self_train: bool) -> tuple[str, ...]:
    """The arms trained at every fraction."""
    return ("parts", "joint", "joint+st") if self_train else ("parts", "joint")


def run_study(out: Path, *, train_root: Path, val_root: Path, fractions: Sequence[float], seeds: int,
              train_images: int, size: int, config: str = "demo_cpu_joint", jobs: int = 3,
              labelled_share: float | None = None, self_train: bool = False, unlabelled: float = 0.0,
              overrides: Sequence[str] = (), only: Sequence[str] | None = None, overwrite: bool = False,
              settings: dict[str, Any] | None = None) -> Path:
    """Train and score every arm (or the arms named in `only`; the others an earlier run finished stay in the
    report) for every seed (`posepart.jobs.run_jobs`), write metrics.json, the plot and report.md under `out`;
    returns the report's path.

    An arm already trained and scored under `out` with the same settings (its run folder's score.json: a study
    interrupted, or run again with more arms) is reused, not trained again; one trained with other settings is
    refused unless `overwrite` (it would be replaced). `settings`: the command line's, written to OUT/study.json
    once the checks pass (`check_study_folder` compares a later run's with them)."""
    from posepart.jobs import TrainJob, finished_score, job_threads, run_jobs, score_inputs, scored_checkpoint

    start = time.perf_counter()
    train = PosePartDataset.open(train_root)
    if self_train and unlabelled_count(unlabelled, len(train)) < 1:
        raise UsageError(f"study --unlabelled {unlabelled:g}: none of the {len(train)} training images would be "
                         f"without labels, and self-training learns from those (give at least "
                         f"{math.ceil(1e4 / len(train)) / 1e4:g})")
    common, st_overrides = split_overrides(overrides, self_train)
    if self_train:  # a setting every +st arm would fail on only after the other arms have trained
        from posepart.engine.config import load_config, shipped_config
        from posepart.engine.data import check_min_joints

        teacher = load_config(shipped_config(config), ["train.self_training={}", *st_overrides]).train.self_training
        if teacher is not None:
            check_min_joints(teacher, train.schema)
    fractions = sorted(set(float(f) for f in fractions))
    splits = make_splits(train, fractions, range(seeds), out / "splits", unlabelled)
    jobs_by_label: dict[str, TrainJob] = {}  # every arm of the design: those not asked for join when finished
    arms: dict[str, tuple[str, float | None, int]] = {}  # job label -> (arm label, fraction, seed)
    wanted: set[str] = set()  # the jobs asked for (`only`)
    for seed in range(seeds):
        plan: list[tuple[str, float | None]] = [("pose", None)] + [(arm, f) for f in fractions
                                                                  for arm in study_arms(self_train)]
        for arm, f in plan:
            split = splits[(seed, f if f is not None else fractions[0])]  # the pose arm uses only the pool
            sources, tasks = arm_sources(arm, split, train_root, val_root, labelled_share)
            label = arm_label(arm, f)
            job = f"{label} seed {seed}"
            folder = out / "runs" / f"{label.replace('@', '_f').replace('+', '_')}_seed{seed}"
            # no validation during training (the arms are scored once, at the end), the seed of the split
            extra = (f"train.seed={seed}", "train.val_every_epochs=1000000",
                     *(("train.self_training={}", *st_overrides) if arm == "joint+st" else ()), *common)
            # self-training adds its unlabelled draws to the same labelled ones (as FixMatch adds unlabelled batches)
            budget = (round(train_images * (1 + len(split.unlabelled) / (len(split.labelled) + len(split.rest))))
                      if arm == "joint+st" else None)
            jobs_by_label[job] = TrainJob(folder, config, tasks, tuple(sources), extra, budget)
            arms[job] = (label, f, seed)
            if only is None or arm in only:
                wanted.add(job)
    scores: dict[str, dict[str, Any]] = {}  # job label -> metrics of an arm finished by an earlier run
    for job, spec in jobs_by_label.items():
        saved = finished_score(spec.out)
        if saved is None:
            continue
        inputs = score_inputs(spec.config, train_root, val_root, train_size=len(train), size=size,
                              images=spec.images or train_images, extra=spec.extra, tasks=spec.tasks,
                              sources=None if spec.sources is None else list(spec.sources),
                              threads=job_threads(jobs))
        unchanged = scored_checkpoint(spec.out, saved)
        if saved["inputs"] == inputs and unchanged:
            scores[job] = saved["metrics"]
        elif not overwrite and job in wanted:  # one not asked for is neither trained nor reported
            what = _differences(saved["inputs"], inputs) + ([] if unchanged else ["checkpoint than it scored"])
            raise UsageError(f"study --out {out}: {spec.out} holds the arm {job!r} trained with another "
                             f"{' and '.join(what)}; give another --out or --overwrite to train it again")
    if settings is not None:
        write_json_atomic(out / STUDY_FILE, settings)
    if scores:
        print(f"reusing {len(scores)} arm(s) trained and scored by an earlier run of this study: "
              f"{', '.join(scores)}", flush=True)
    # the arms not asked for stay in the report when an earlier run finished them (before: `--arms pose` run again
    # rewrote report.md and metrics.json with the pose row alone)
    todo = {job: spec for job, spec in jobs_by_label.items() if job in wanted and job not in scores}
    results = {job: (metrics, [], None) for job, metrics in scores.items()}
    if todo:
        results.update(run_jobs(todo, train_root, val_root, train_size=len(train), size=size, images=train_images,
                                minutes=None, parallel=jobs))
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for job, (metrics, _, _) in sorted(results.items(), key=lambda item: list(jobs_by_label).index(item[0])):
        label, _, seed = arms[job]
        runs.setdefault(label, {})[str(seed)] = {k: v for k, v in metrics.items() if k != "per_stage"}
    summary = summarise(runs, fractions, seeds, study_arms(self_train))
    record = {"config": config, "train": str(train_root), "val": str(val_root), "train_images": train_images,
              "size": size, "fractions": fractions, "seeds": seeds, "labelled_share": labelled_share,
              "unlabelled": unlabelled, "arms": list(study_arms(self_train)), "overrides": list(common),
              "self_training_overrides": list(st_overrides),
              "splits": str(out / "splits" / "splits.json"), "runs": runs, "summary": summary,
              "seconds": round(time.perf_counter() - start, 1)}
    write_json_atomic(out / "metrics.json", record)
    figure = plot_study(summary, fractions, out / "study.png", study_arms(self_train))
    return write_study_report(out, record, figure)


# What differs between two `score_inputs`, in the words of the study's options.
_INPUT_NAMES = {"config": "--config", "train": "--data", "val": "--data",
                "train_size": "training set (--data, --n-train)",
                "size": "--size", "images": "--train-images", "extra": "--set", "minutes": "time cap",
                "sources": "split (--unlabelled, --labelled-share)", "tasks": "arm", "flip": "flip scoring",
                "config file": "config file's contents", "annotations": "annotation file (the data changed)",
                "posepart code": "posepart version (its code changed)",
                "files set": "file named by --set (model.init, model.pretrained, data.schema)",
                "threads": "thread count per model (--jobs, or this machine's cores)"}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = [k for k in new if k != "digests" and old.get(k) != new[k]]
    keys += [k for k, v in new.get("digests", {}).items() if (old.get("digests") or {}).get(k) != v]
    return sorted({_INPUT_NAMES.get(k, k) for k in keys})


STUDY_FILE = "study.json"  # OUT/study.json: the settings of the study in OUT (`check_study_folder`)


def check_study_folder(out: Path, settings: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse, before anything is written, an --out holding a study of other settings (OUT/study.json, which
    `run_study` writes once its checks pass): its data, splits and arms would be replaced. More fractions, seeds or
    arms are the same study."""
    path = out / STUDY_FILE
    earlier = read_earlier_json(path)
    if isinstance(earlier, dict) and earlier != settings and not overwrite:
        changed = sorted(k for k in settings.keys() | earlier.keys() if earlier.get(k) != settings.get(k))
        data = earlier.get("--data") or out / "data"  # its own scenes, or the --data it was given
        raise UsageError(f"study --out {out}: it holds a study with another {', '.join(changed)} ({path}); give "
                         f"another --out (with --data {data} for the same scenes) or --overwrite to replace it")


def split_overrides(overrides: Sequence[str], self_train: bool) -> tuple[list[str], list[str]]:
    """(--set strings for every arm, those of `train.self_training`: for the +st arms alone, the only ones with an
    unlabelled source to self-train on; before, they reached every arm, and the others failed on them)."""
    st = [o for o in overrides if o.partition("=")[0].strip().startswith("train.self_training")]
    if st and not self_train:
        raise UsageError(f"study --set {' '.join(st)}: self-training settings apply to the +st arms, which "
                         f"--self-train adds")
    return [o for o in overrides if o not in st], st


# -- command line ----------------------------------------------------------------------------------------------------
def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.05,0.2,1.0, got {text!r}") from None
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 1], got {text!r}")
    return values


def _arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = sorted(set(arms) - {"pose", "parts", "joint", "joint+st"})
    if not arms or unknown:
        raise argparse.ArgumentTypeError(f"arms are pose, parts, joint, joint+st; got {text!r}")
    return arms


def cmd_study(args: argparse.Namespace) -> int:
    from posepart.data.dataset_args import with_images
    from posepart.data.synth import SceneConfig
    from posepart.demo import demo_size, synth_split
    from posepart.errors import output_folder

    setting = QUICK if args.quick else DEFAULTS
    args.data = args.data.resolve() if args.data is not None else None
    fractions = args.label_fractions or list(setting["fractions"])
    seeds = args.seeds or int(setting["seeds"])  # 0 and below are refused by the parser (`at_least`)
    images = args.train_images or int(setting["train_images"])
    size = demo_size(args.size)
    from posepart.engine.config import load_config, shipped_config

    common, st_overrides = split_overrides(args.set, args.self_train)
    config = load_config(shipped_config(args.config), common)  # a bad --set fails here, not in every process
    if args.self_train:
        load_config(shipped_config(args.config), ["train.self_training={}", *st_overrides])
    if config.model.name != "joint_vgg16":  # before: trained every arm, then failed to score the masked task
        raise UsageError(f"study --config {args.config}: every arm is the joint network (model.name joint_vgg16, "
                         f"the single-task arms with the other task masked), not {config.model.name}")
    unlabelled = args.unlabelled if args.unlabelled is not None else (0.5 if args.self_train else 0.0)
    if args.labelled_share is not None and not 0.0 < args.labelled_share < 1.0:
        raise UsageError(f"study --labelled-share must lie in (0, 1), got {args.labelled_share}")
    if args.arms and "joint+st" in args.arms and not args.self_train:
        raise UsageError("study --arms joint+st needs --self-train")
    if not 0.0 <= unlabelled < 1.0 or (args.self_train and unlabelled == 0.0):
        raise UsageError(f"study --unlabelled must lie in [0, 1) (and above 0 with --self-train), got {unlabelled}")
    if args.data is not None:
        for root in (args.data / "train", args.data / "val"):
            if not (root / ANNOTATIONS_FILE).is_file():
                raise UsageError(f"study --data {args.data}: expected {root / ANNOTATIONS_FILE} (ROOT/train and "
                                 f"ROOT/val in the posepart format, as `posepart demo` writes them)")
    out = output_folder(args.out).resolve()  # the options are sound: claim --out, then write into it; resolved, as
    # the data and split files its arms name are compared (the same study given by another path is the same)
    settings = {"--config": args.config, "--size": size, "--train-images": images, "--unlabelled": unlabelled,
                "--labelled-share": args.labelled_share, "--set": list(args.set),
                "--data": str(args.data) if args.data is not None else None,
                **({} if args.data is not None else {"--n-train": args.n_train, "--n-val": args.n_val})}
    check_study_folder(out, settings, overwrite=args.overwrite)
    if args.data is not None:  # ROOT/train and ROOT/val in the posepart format
        train_root, val_root = args.data / "train", args.data / "val"
        with_images(PosePartDataset.open(train_root), f"--data {args.data} (train)")
    else:
        scene = SceneConfig.easy()
        train_root, val_root = (synth_split(out / "data", split, n=n, seed=0, size=size, scene=scene).annotation_file
                                .parent for split, n in (("train", args.n_train), ("val", args.n_val)))
    report = run_study(out, train_root=train_root, val_root=val_root, fractions=fractions, seeds=seeds,
                       train_images=images, size=size, config=args.config, jobs=args.jobs,
                       labelled_share=args.labelled_share, self_train=args.self_train, unlabelled=unlabelled,
                       overrides=args.set, only=args.arms, overwrite=args.overwrite, settings=settings)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report}")
    return 0


def add_study_parser(verbs: Any) -> None:
    p = verbs.add_parser("study", help="the report's thesis: parts on a fraction of the images, pose on all, against "
                                       "single-task arms (mean ± sd over seeds)")
    p.add_argument("--out", type=Path, required=True, help="folder: data, splits, runs, metrics.json, report.md (an "
                                                          "arm already trained there with the same settings is reused)")
    p.add_argument("--overwrite", action="store_true",
                   help="train again an arm that --out holds with other settings (refused otherwise)")
    p.add_argument("--data", type=Path, help="ROOT with ROOT/train and ROOT/val in the posepart format (default: the "
                                             "demo's synthetic scenes, generated under OUT/data)")
    p.add_argument("--label-fractions", type=_fractions, metavar="F[,F...]",
                   help="fractions of the training images with part labels (default 0.05,0.2,1.0; --quick 0.1,1.0)")
    p.add_argument("--seeds", type=at_least(1),
                   help="seeds per arm: model initialisation, data order and the subset (default 3)")
    p.add_argument("--train-images", type=at_least(1), metavar="N",
                   help="training budget per model in images (default 12000; --quick 6000)")
    p.add_argument("--quick", action="store_true",
                   help="the small setting (0.1,1.0; 3 seeds; 6000 images): about 28 minutes on 2 CPU cores with "
                        "native bfloat16, 2.5x that in float32 on an AVX2-only CPU")
    p.add_argument("--labelled-share", type=float, metavar="S",
                   help="share of each epoch drawn from the part-labelled images in joint@f (default: f, every image "
                        "drawn equally often; 0.5: half of every epoch has part labels)")
    p.add_argument("--self-train", action="store_true",
                   help="add joint@f+st: joint@f plus self-training on the images without labels (--unlabelled)")
    p.add_argument("--unlabelled", type=float, metavar="U",
                   help="share of the training images without any label in every arm (default 0.5 with --self-train, "
                        "else 0)")
    p.add_argument("--arms", type=_arms, metavar="ARM[,ARM...]",
                   help="train only these arms (pose, parts, joint, joint+st; default all): e.g. to compare one arm "
                        "under another --set with an earlier study's, in another --out with --data EARLIER_OUT/data "
                        "(the same scenes; the splits follow the seeds)")
    p.add_argument("--jobs", type=at_least(1), default=3, help="models trained at once, in separate processes")
    p.add_argument("--config", default="demo_cpu_joint", help="the shipped config of the joint network")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every arm (repeatable), e.g. loss.aggregator=upgrad")
    p.add_argument("--size", type=at_least(1), help=f"network input side (default: the demo's {DEMO_SIZE})")
    p.add_argument("--n-train", type=at_least(1), default=DEMO_TRAIN_SCENES,
                   help="synthetic training images (without --data)")
    p.add_argument("--n-val", type=at_least(1), default=DEMO_VAL_SCENES,
                   help="synthetic validation images (without --data)")
    p.set_defaults(run=cmd_study)
