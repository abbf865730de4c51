"""`PosePartDataModule`: datasets, mappers and loaders of a training run, built from a `Config`.

A run reads one dataset (`data.train` / `data.val`) or mixes several (`data.sources`, docs/training.md "Mixing
datasets"): every source is opened, mapped into the run's target schema (`posepart.data.mixing`) and drawn by weight.
One dataset is the degenerate mix: same order, same augmentation, same batches as before mixing existed. The order
and the indexing of the samples (reproducible, resumable) are `posepart.engine.sampling`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from posepart.data.format import (ANNOTATIONS_FILE, DatasetError, ImageRecord, PosePartDataset, person_category,
                                  read_json)
from posepart.data.images import READ_AS_STORED, tagged_as_stored
from posepart.data.label_maps import PartLabelSpace
from posepart.data.mixing import (MappedSource, SourceError, SourceMapping, SourcePlan, allocate, map_dataset,
                                  unmatched_joints, unscored_joints)
from posepart.engine.config import ConfigError
from posepart.engine.launch import first_process
from posepart.engine.sampling import EpochSampler, MixedDataset, ShardSampler, ValidationSet
from posepart.engine.workers import StartsWorkers, share_inherited_objects
from posepart.engine.settings import (RESERVED_SOURCE_NAMES, Config, DatasetPaths, SelfTrainingConfig,
                                      SourceConfig)
from posepart.errors import PosepartWarning
from posepart.heads import HeadMeta
from posepart.schema import BUILTIN_SCHEMAS, Schema
from posepart.targets.mapper import MappedDataset, Mapper, TargetConfig, collate


EXIF_SAMPLE = 100  # images whose EXIF tags a run reads before training (headers only: `inspect` reads them all)


def _open(where: DatasetPaths | Path | str, key: str, schema: Schema | None = None, *, summarised: bool = False
          ) -> PosePartDataset:
    """A source's dataset; a folder of images alone (an unlabelled source) is read in `schema`, the run's. Its
    `label_concerns` are warned of; `summarised`: the run's summary names the joints it lacks (a mixed run's
    training source), so they are not warned of again."""
    if not isinstance(where, DatasetPaths) and (hint := _coco_file_hint(Path(where), key)) is not None:
        raise ConfigError(hint)
    try:
        if isinstance(where, DatasetPaths) and where.images_only:
            assert schema is not None
            dataset = PosePartDataset.from_images(where.images, schema)  # type: ignore[arg-type]
        elif isinstance(where, DatasetPaths):
            dataset = PosePartDataset.open(where.root, annotations=where.annotations, images=where.images,
                                           parts=where.parts, quiet=not first_process())
        else:
            dataset = PosePartDataset.open(where, quiet=not first_process())
    except DatasetError as err:
        raise DatasetError(f"{key} ({where}): {err}") from None
    for reason, n in dataset.skipped.items():  # as `posepart inspect` and `evaluate` say it (the README's promise)
        rank_zero_info(f"{key} ({where}): skipped {n} x {reason} (first: {dataset.skipped_examples[reason]})")
    for concern in dataset.label_concerns(unlabelled_joints=not summarised):
        rank_zero_warn(f"{key} ({where}): {concern}", category=PosepartWarning)  # before: trained on without a word
    unlabelled = isinstance(where, DatasetPaths) and where.images_only  # its photos are turned upright when read
    tagged = [str(r.image_path) for r in dataset.records[:EXIF_SAMPLE] if tagged_as_stored(r.image_path, r.orientation)
              ] if first_process() and not unlabelled else []
    if tagged:  # before: trained on as stored without a word (`inspect` counts them all)
        rank_zero_warn(f"{key} ({where}): {len(tagged)} of its first {min(EXIF_SAMPLE, len(dataset))} images carry "
                       f"an EXIF orientation tag (first: {tagged[0]}): {READ_AS_STORED}", category=PosepartWarning)
    return dataset


def _coco_file_hint(path: Path, key: str) -> str | None:
    """How a run takes a COCO file given where a dataset root goes (`--train x.json`), or a folder that holds one
    JSON beside its images (Roboflow's `_annotations.coco.json`); None for anything else. Why: the dataset's own
    error names evaluate's and inspect's flags, which `train` does not have."""
    jsons = sorted(path.glob("*.json")) if path.is_dir() and not (path / ANNOTATIONS_FILE).exists() else []
    if path.is_file() and path.suffix.lower() == ".json":
        what, annotations, images = "a COCO file", path, "IMAGES"
    elif len(jsons) == 1:
        what, annotations, images = f"images beside a COCO file ({jsons[0].name})", jsons[0], path
    else:
        return None
    return (f"{key} ({path}): {what}, not a dataset root: give the file and its image folder as --set "
            f"{key}.annotations={annotations} --set {key}.images={images}, and its part folder, if it has part maps, "
            f"as --set {key}.parts=DIR (in a config, {key}: {{annotations: FILE, images: DIR, parts: DIR}}); a file "
            f"of a dataset ROOT (`posepart split`'s) as --set {key}.root=ROOT --set {key}.annotations=FILE")


@dataclass
class Source:
    """One source of a run, opened and read in the target schema."""

    name: str
    weight: float
    mapping: SourceMapping | None  # of the training data (None: validation only)
    train: PosePartDataset | None  # target-schema views
    val: PosePartDataset | None
    unlabelled: bool = False  # training labels ignored: pseudo-labelled by self-training

    def describe(self, draws: int) -> dict[str, Any]:
        """What the source feeds: tasks, weight, sizes, draws per epoch, target joints it lacks (plain values)."""
        about = self.mapping.describe() if self.mapping is not None else {"tasks": [], "missing_joints": []}
        missing = about["missing_joints"]
        if "pose" in about["tasks"] and self.train is not None:  # also those no person of it labels (not annotated)
            missing = [name for name, annotated in zip(self.train.schema.keypoints, self.train.annotated_joints)
                       if not annotated]
        return {"name": self.name, "tasks": about["tasks"], "unlabelled": self.unlabelled, "weight": self.weight,
                "train_images": len(self.train) if self.train is not None else 0, "draws_per_epoch": draws,
                "val_images": len(self.val) if self.val is not None else 0, "missing_joints": missing,
                "images_without_labels": self._without_labels(about["tasks"])}

    def _without_labels(self, tasks: Sequence[str]) -> int:
        """Training images of a labelled source that carry none of its tasks' labels (drawn, and fully masked)."""
        if self.train is None or self.unlabelled or self.mapping is None:
            return 0
        dataset = self.train.source if isinstance(self.train, MappedSource) else self.train
        labels = dataset.record_labels  # the source's own records: the mapping's flags are `tasks`
        return int((~((labels.pose & ("pose" in tasks)) | (labels.parts & ("parts" in tasks)))).sum())


def _legacy_name(train: DatasetPaths | Path) -> str:
    """The source name of a run given one `data.train`: its folder's name where that is a valid source name, else
    "train" (a folder named `loss` or `weight` is a fine dataset, not a fine metric prefix)."""
    folder = (train.root or train.images) if isinstance(train, DatasetPaths) else train
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(folder)).name).strip("._-")
    return name if name and name not in RESERVED_SOURCE_NAMES else "train"


def _specs(config: Config) -> list[SourceConfig]:
    """The run's sources: `data.sources`, or `data.train` (+ `data.val`) as one source."""
    data = config.data
    if data.sources:
        if data.train is not None:
            raise ConfigError("data.train: give either data.train (one dataset) or data.sources (a mixed run), not "
                              "both (--train sets data.train)")
        specs = list(data.sources)
        if data.val is not None:
            if any(s.name == "val" for s in specs):
                raise ConfigError("data.val: a source is already named 'val'")
            specs.append(SourceConfig(name="val", val=data.val, weight=0.0))
        return specs
    if data.train is None:
        raise ConfigError("data.train: no training dataset given (set it in the config or pass --train ROOT)")
    return [SourceConfig(name=_legacy_name(data.train), train=data.train, val=data.val)]


def training_files(config: Config) -> list[Path]:
    """The annotation files a run's config trains on (`data.train`, each `data.sources[i].train`), resolved: so that
    `posepart evaluate` can say when it scores a model on its own training data. An unreadable config gives none."""
    try:
        specs = _specs(config)
    except ConfigError:
        return []
    files = []
    for spec in specs:
        where = spec.train if spec.weight > 0 else None  # a source of weight 0 is drawn from never
        if isinstance(where, DatasetPaths) and not where.images_only:
            files.append(Path(where.annotations or Path(where.root or "") / ANNOTATIONS_FILE).resolve())
        elif isinstance(where, (str, Path)):
            files.append((Path(where) / ANNOTATIONS_FILE if Path(where).is_dir() else Path(where)).resolve())
    return files


def _key(config: Config, spec: SourceConfig, split: str) -> str:
    """The config key a source's `split` ("train" / "val") was given by, as the user wrote it: `data.train` /
    `data.val` (what --train / --val set), or `data.sources[i].train`."""
    sources = list(config.data.sources)
    return f"data.sources[{sources.index(spec)}].{split}" if spec in sources else f"data.{split}"


def _check_self_training(config: Config, specs: Sequence[SourceConfig]) -> None:
    """Unlabelled sources and `train.self_training` come together: one without the other is a ConfigError."""
    unlabelled = [s.name for s in specs if s.unlabelled]
    if unlabelled and config.train.self_training is None:
        raise ConfigError(f"data.sources: {unlabelled} unlabelled, but train.self_training is not set (nothing "
                          f"would supervise them)")
    if config.train.self_training is not None and not unlabelled:
        raise ConfigError("train.self_training: no source is unlabelled (mark one with unlabelled: true)")


def target_schema(value: str | Path) -> Schema:
    """`data.schema`: a built-in schema by name, or the one a file gives (a dataset root's annotations.json, a COCO
    JSON: its people's category, `person_category`; or a JSON object that is a category itself). A file lets a run
    mix custom sources that each label part of it (a pose-only source and a parts-only one, where neither's own
    schema has both)."""
    if isinstance(value, str):  # a built-in's name (the config types every other value as a Path)
        return BUILTIN_SCHEMAS[value]()
    if not value.exists():  # "cocoo" (made absolute with the run's paths): a mistyped name, or a missing file
        names = ", ".join(BUILTIN_SCHEMAS)
        raise ConfigError(f"data.schema: {value.name!r} is neither a built-in schema ({names}) nor an existing file "
                          f"or folder ({value})")
    path = value / ANNOTATIONS_FILE if value.is_dir() else value
    try:
        data = read_json(path, expected="a JSON object: a COCO file with categories, or a category")
    except DatasetError as err:
        raise ConfigError(f"data.schema: {err}") from None
    categories = data.get("categories")
    category = categories[person_category(categories)] if isinstance(categories, list) and categories else data
    if not isinstance(category, dict) or not ({"keypoints", "part_classes"} & set(category)):
        raise ConfigError(f"data.schema: {path} names no keypoints or part_classes (in a COCO file's categories, or "
                          f"a category object)")
    try:
        return Schema.from_category(category)
    except ValueError as err:
        raise ConfigError(f"data.schema: {path}: {err}") from None


def check_min_joints(settings: SelfTrainingConfig, schema: Schema) -> None:
    """`train.self_training.min_joints` above the joints a person of `schema` has: no pseudo-labelled person could
    be kept (a ConfigError)."""
    if schema.has_pose and settings.min_joints > schema.num_joints:
        raise ConfigError(f"train.self_training.min_joints: {settings.min_joints}, but a person has "
                          f"{schema.num_joints} joints: no pseudo-labelled person could be kept")


class PosePartDataModule(pl.LightningDataModule):
    """Opens and maps every source at construction, so `schema` and `allowed_sets` are known before the model."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        data = config.data
        self.targets = TargetConfig(input_size=data.input_size)  # the model's head geometry comes with `bind`
        self.augment = data.augment
        self.resume_inside: tuple[int, int] | None = None  # (epoch, batches done) of a checkpoint saved inside it
        specs = _specs(config)
        _check_self_training(config, specs)
        folder = [isinstance(s.train, DatasetPaths) and s.train.images_only for s in specs]  # read in the target
        opened = [(s, _open(s.train, _key(config, s, "train"), summarised=bool(data.sources))
                   if s.train is not None and not f else None,
                   _open(s.val, _key(config, s, "val")) if s.val is not None else None)
                  for s, f in zip(specs, folder)]
        # data.val in another schema (another category name, its own sigmas, joints named otherwise, no part maps) is
        # read in the run's by name and part table, as a source's val is and as `posepart evaluate` reads a dataset
        # in the checkpoint's (before: refused, "has a different schema", whatever differed)
        first = next((ds for _, train, val in opened for ds in (train, val) if ds is not None), None)
        if first is None and not data.schema:
            raise ConfigError("data.schema: every source is a folder of images; name the run's schema")
        self.target: Schema = target_schema(data.schema) if data.schema else first.schema  # type: ignore
        opened = [(s, _open(s.train, _key(config, s, "train"), self.target), val) if f else (s, train, val)
                  for (s, train, val), f in zip(opened, folder)]
        for spec, *datasets in opened:  # before: a COCO file's part classes went untrained, unsaid (evaluate and
            # inspect said it); not where its labels are ignored (unlabelled) or its parts are not wanted (tasks)
            if spec.unlabelled or spec.tasks is not None and "parts" not in spec.tasks:
                continue
            for split, dataset in zip(("train", "val"), datasets):
                given, key = getattr(spec, split), _key(config, spec, split)
                if (dataset is not None and isinstance(given, DatasetPaths) and given.root is None
                        and given.annotations is not None and (unread := dataset.unread_parts(f"{key}.parts=DIR"))):
                    rank_zero_warn(f"{key}: {unread}", category=PosepartWarning)
        self.label_space = PartLabelSpace(self.target)
        empty = next((s for s, train, _ in opened if train is not None and not len(train) and s.weight > 0), None)
        if empty is not None:  # before mapping: an empty source "has" no labels of any kind
            raise ConfigError(f"{_key(config, empty, 'train')} ({empty.train}): no training images")  # it named a
            # 'data.sources' the user had not written (`--train`)
        empty = next((s for s, _, val in opened if val is not None and not len(val)), None)
        if empty is not None:  # (a walkthrough: Lightning's warning on a monitored key never logged, and a summary
            # that said no validation data was given)
            raise ConfigError(f"{_key(config, empty, 'val')} ({empty.val}): no validation images: give a validation "
                              f"set that has some, or none")
        try:
            self.sources = self._map(opened)
        except SourceError as err:
            raise ConfigError(f"data.sources: {err}" if data.sources else f"data: {err}") from None
        trains_pose = any(s.mapping is not None and s.mapping.pose for s in self.sources)
        for source, (_, _, val) in zip(self.sources, opened):  # validation data that validates none of the joints
            view = source.val
            if (trains_pose and val is not None and isinstance(view, MappedSource) and view.mapping is not None
                    and val.schema.has_pose and not view.mapping.joints.present.any()):
                where = f"source {source.name!r}: val" if data.sources else "data.val"
                raise ConfigError(f"{where} ({val.annotation_file}): none of its joints {list(val.schema.keypoints)} "
                                  f"maps to the run's {list(self.target.keypoints)} (by name, docs/training.md): its "
                                  f"pose could not be validated")
            if trains_pose and view is not None and (unscored := unscored_joints(view)):  # before: without a word
                if data.sources:  # a mixing plan that knows what its sources lack: a line of its summary
                    rank_zero_info(f"source {source.name}: val ({view.annotation_file}): {unscored}")
                else:
                    rank_zero_warn(f"data.val ({view.annotation_file}): {unscored}", category=PosepartWarning)
        training = [s for s in self.sources if s.train is not None and s.weight > 0]
        for source in training:  # before: a joint named otherwise (a typo in data.schema) was dropped without a word
            unmatched = unmatched_joints(source.train) if source.mapping.pose else None  # type: ignore[arg-type]
            if unmatched is None:
                continue
            missing, unread = unmatched
            # its own joints named like a missing one: the same joints, one name mistyped ('lft_wrist'); not a
            # dataset's other joints (COCO's eyes and ears, read into PASCAL, which lacks them: a mix's summary
            # names the head they do not give)
            alike = sorted({j for m in missing for j in difflib.get_close_matches(m, unread, n=1, cutoff=0.75)})
            if alike or not data.sources:
                where = f"source {source.name!r}" if data.sources else "data.train"
                own = (f"; its own {', '.join(alike)} are not read (the same joints, named otherwise? name them alike "
                       f"in its categories[0].keypoints and the run's schema)" if alike else "")
                rank_zero_warn(f"{where} ({source.train.annotation_file}): no joint of it is named as the run's "
                               f"{', '.join(missing)}, so they are not trained on it{own}", category=PosepartWarning)
        if not training:
            raise ConfigError("data.sources: no source has training data with a positive weight")
        self._check_self_training_data(training)
        idle = next((s for s in training if not s.unlabelled and not (s.mapping.pose or s.mapping.parts)), None)
        if idle is not None:  # it would take its share of every epoch and teach nothing
            raise ConfigError(f"data.sources: source {idle.name!r} trains nothing: none of its labels (schema "
                              f"{idle.mapping.source.describe()}) maps into the target schema "  # type: ignore
                              f"{self.target.describe()}; train in a schema that has them (data.schema) or leave "
                              f"it out")
        sizes = [len(s.train) for s in training]  # type: ignore[arg-type]
        counts = allocate(data.epoch_size or sum(sizes), [s.weight for s in training])
        self.plan = SourcePlan(tuple(sizes), tuple(counts))
        self._draws = {s.name: c for s, c in zip(training, counts)}
        self.mixed = len(training) > 1 or data.epoch_size is not None
        seed = config.train.seed
        views = config.train.self_training is not None
        self.train_mapped = MixedDataset(
            [MappedDataset(Mapper(s.train, self.targets, self.augment, views=views,  # type: ignore[arg-type]
                                  unlabelled=s.unlabelled), seed=seed) for s in training], self.plan)
        self.val_sources = [s for s in self.sources if s.val is not None]
        validation = [Mapper(s.val, self.targets, None, original=True) for s in self.val_sources]  # type: ignore
        self.val_mapped = (ValidationSet([MappedDataset(m, seed=seed, split="val") for m in validation])
                           if validation else None)
        self.train_set = training[0].train  # the first training source (as the one dataset of a plain run)
        self.val_set = self.val_sources[0].val if self.val_sources else None

    def _check_self_training_data(self, training: Sequence[Source]) -> None:
        """Refuse a self-training run that could learn nothing from it: no unlabelled draw (every unlabelled source
        at weight 0), no labelled draw (nothing would correct the teacher, the student's own average), or
        `min_joints` above the joints a person has (no pseudo-labelled person could be kept)."""
        settings = self.config.train.self_training
        if settings is None:
            return
        if not any(s.unlabelled for s in training):
            raise ConfigError("train.self_training: every unlabelled source has weight 0: no image would be "
                              "pseudo-labelled")
        if all(s.unlabelled for s in training):
            raise ConfigError("train.self_training: no labelled source trains (weight > 0): the student would learn "
                              "its own average's pseudo-labels alone, from its random start or its model.init weights, "
                              "with nothing to correct them; add a labelled source")
        check_min_joints(settings, self.target)

    def bind(self, head: HeadMeta) -> None:
        """Build every target with the model's `HeadMeta` (grid, sigma, PAF width): `train` calls this once the model
        exists, so targets and outputs cannot disagree. Unbound, targets use `HeadMeta`'s defaults."""
        if head.schema != self.target:
            raise ConfigError(f"the model's schema {head.schema.describe()} is not the run's target schema "
                              f"{self.target.describe()}")
        self.targets = TargetConfig(input_size=self.config.data.input_size, head=head)
        for mapped in [*self.train_mapped.parts, *(self.val_mapped.parts if self.val_mapped else [])]:
            mapped.mapper.targets = self.targets

    def _map(self, opened: list[tuple[SourceConfig, PosePartDataset | None, PosePartDataset | None]]) -> list[Source]:
        """Map training data first (declared tasks), then validation data (whatever it labels), in config order, so
        the set-valued label rows are the same in every process and on resume."""
        mappings = []
        for spec, train, _ in opened:
            tasks = [] if spec.unlabelled else spec.tasks  # an unlabelled source supervises nothing itself
            mappings.append(None if train is None else SourceMapping.build(
                spec.name, train.schema, self.target, self.label_space, tasks=tasks, part_map=spec.part_map,
                ignore_parts=spec.ignore_parts, source_has_parts=train.has_parts))
        sources = []
        for (spec, train, val), mapping in zip(opened, mappings):
            val_view = None
            if val is not None:
                extra = dict(part_map=spec.part_map, ignore_parts=spec.ignore_parts) if val.has_parts else {}
                label = f"{spec.name} (val)" if self.config.data.sources else f"data.val ({val.annotation_file})"
                try:
                    val_map = SourceMapping.build(label, val.schema, self.target, self.label_space,
                                                  source_has_parts=val.has_parts, **extra)
                except SourceError as err:
                    if spec.tasks is None or "parts" in spec.tasks or spec.unlabelled or not err.unmapped_parts:
                        raise
                    # a source declared without parts, whose val's part classes do not map into the run's: scored
                    # on its other tasks (before: refused, and a part table for them refused as feeding no parts)
                    val_map = SourceMapping.build(label, val.schema, self.target, self.label_space, tasks=spec.tasks,
                                                  source_has_parts=val.has_parts)
                    rank_zero_info(f"source {spec.name}: val ({val.annotation_file}): {err}: validated on "
                                   f"{', '.join(spec.tasks)} alone, as it is declared")
                val_view = map_dataset(val, self.target, val_map)
            train_view = map_dataset(train, self.target, mapping) if train is not None else None
            sources.append(Source(spec.name, spec.weight, mapping, train_view, val_view, spec.unlabelled))
        return sources

    @property
    def schema(self) -> Schema:
        """The run's target schema (the model's heads and every target are sized from it)."""
        return self.target

    @property
    def has_val(self) -> bool:
        return self.val_mapped is not None

    @property
    def allowed_sets(self) -> torch.Tensor | None:
        """(S, P) bool for the segmentation loss: the set-valued labels of coarser sources (None when none)."""
        table = self.label_space.allowed_sets
        return None if table is None else torch.from_numpy(table)

    def describe(self) -> list[dict[str, Any]]:
        """One plain dict per source: what it feeds (tasks), its weight, sizes and draws per epoch."""
        return [s.describe(self._draws.get(s.name, 0)) for s in self.sources]

    def val_item(self, index: int) -> tuple[int, ImageRecord]:
        """(validation source, record) of a validation sample's `index`; the record's image_id becomes index + 1,
        unique over all validation sources (pooled COCO evaluation needs unique ids)."""
        assert self.val_mapped is not None
        s, i = self.val_mapped.locate(index)
        record = self.val_sources[s].val.records[i]  # type: ignore[union-attr]
        return s, dataclasses.replace(record, image_id=int(index) + 1)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: Dataset, sampler: Sampler, *, drop_last: bool = False, prefetch: int = 2
                ) -> DataLoader:
        workers = self.config.data.workers
        # Workers are started anew every epoch (no persistent_workers): cheap next to an epoch where they are forked
        # (Linux), and never stale; spawned (macOS, Windows), each starts an interpreter (about 2 s) and unpickles
        # its copy of the records.
        return StartsWorkers(dataset, batch_size=self.config.data.batch_size, sampler=sampler, num_workers=workers,
                             collate_fn=collate, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                             persistent_workers=False, prefetch_factor=prefetch if workers else None,
                             worker_init_fn=share_inherited_objects if workers else None)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = EpochSampler(len(self.train_mapped), seed=self.config.train.seed, num_replicas=world, rank=rank,
                               plan=self.plan if self.mixed else None)
        # The epoch the loop is at, now: a resumed run's first loader iterator is made before Lightning's set_epoch,
        # and loader workers draw their first indices when it is made (before: a run resumed with data.workers > 0
        # replayed epoch 0's order, and was not exact)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        if self.resume_inside is not None:  # (epoch, batches done): the rest of that epoch, in its order
            epoch, batches = self.resume_inside
            sampler.set_epoch(epoch)
            sampler.resume_at = (epoch, batches * self.config.data.batch_size)
        return self._loader(self.train_mapped, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_mapped is None:
            return []
        world, rank = self._world()
        # one batch ahead per worker: validation batches carry their full-size images and part maps (`original`)
        return self._loader(self.val_mapped, ShardSampler(len(self.val_mapped), world, rank), prefetch=1)
