"""Mixing datasets: a source seen in the run's target schema, and the weighted epoch plan over sources.

`SourceMapping` says how one source's labels read in the target schema (`posepart.data.label_maps`) and which tasks it
supervises; `MappedSource` is that source as a `PosePartDataset` in the target schema (records with target keypoints,
part maps through one lookup table), so the `Mapper`, the `Evaluator` and `evaluate_model` use it unchanged.
`SourcePlan` draws an epoch: a fixed number of samples per source (by weight), each source walked in random order
(a fresh permutation per pass when a source is drawn more often than it has samples), the whole shuffled; a pure
function of the torch generator it is given, so an epoch is a function of (seed, epoch).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from posepart.data.format import ImageRecord, PosePartDataset
from posepart.data.label_maps import JointMap, PartLabelSpace, PartMapError, part_sets
from posepart.errors import PosepartError, PosepartWarning
from posepart.schema import Schema

if TYPE_CHECKING:  # torch only for drawing epochs: mapping datasets stays usable without it
    import torch

TASKS: tuple[str, ...] = ("pose", "parts")


def trained_tasks(sources: Sequence[Mapping[str, Any]]) -> tuple[str, ...] | None:
    """The tasks a run's weights learn, from its sources as `Source.describe` gives them (and checkpoints record):
    those of the labelled sources it draws from. A weight-0 source feeds nothing, an unlabelled one only the
    teacher's pseudo-labels of what the others taught; the weights a run started from (`model.init`, an entry with
    "init") taught the heads they gave. None when no source is recorded (older checkpoints)."""
    if not sources:
        return None
    learnt = {task for source in sources
              if source.get("init") or (not source.get("unlabelled") and source.get("draws_per_epoch", 1) > 0)
              for task in source.get("tasks", [])}
    return tuple(task for task in TASKS if task in learnt)


class SourceError(PosepartError, ValueError):
    """A source cannot feed the run as configured (a declared task it lacks, an unmapped class, ...); `source`
    names it where the message's text is not the only place that does; `unmapped_parts`: its part classes have no
    target class (what a dataset read for its pose alone can leave unscored), not a mistake in a part table."""

    def __init__(self, message: str, *, source: str | None = None, unmapped_parts: bool = False) -> None:
        super().__init__(message)
        self.source = source
        self.unmapped_parts = unmapped_parts


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class SourceMapping:
    """One source read in the target schema: joint map, part lookup table and the tasks it supervises.

    `part_lut` (256,) uint8 turns a source label map into target label values with one `np.take` (None when the
    source feeds no parts). `pose` / `parts` are the tasks this source supervises in training.
    """

    name: str
    source: Schema
    target: Schema
    joints: JointMap
    part_lut: np.ndarray | None
    label_flip_perm: tuple[int, ...]
    pose: bool
    parts: bool
    passthrough: bool = False  # same schema, the tasks the data has, plain labels: nothing to map

    @classmethod
    def build(
        cls,
        name: str,
        source: Schema,
        target: Schema,
        space: PartLabelSpace,
        *,
        tasks: Sequence[str] | None = None,
        part_map: Mapping[str, Sequence[str]] | None = None,
        ignore_parts: Sequence[str] = (),
        source_has_parts: bool | None = None,
    ) -> SourceMapping:
        """Map `source` into `target`, registering its set-valued labels in `space`.

        `tasks` None: whatever the source labels and the target has. A declared task the source or the target lacks
        is a SourceError. `source_has_parts` (default: the schema has part classes) lets a dataset without part maps
        count as pose-only.
        """
        joints = JointMap.build(source.keypoints, target.keypoints)
        can_pose = source.has_pose and target.has_pose and bool(joints.present.any())
        labels_parts = source.has_parts if source_has_parts is None else source_has_parts
        can_parts = labels_parts and target.has_parts
        if tasks is None:
            pose, parts = can_pose, can_parts
        else:
            unknown = [t for t in tasks if t not in TASKS]
            if unknown:
                raise SourceError(f"source {name!r}: unknown tasks {unknown}; known: {list(TASKS)}", source=name)
            pose, parts = "pose" in tasks, "parts" in tasks
            if pose and not can_pose:
                why = ("it has no keypoints" if not source.has_pose else
                       "the target schema has no joints" if not target.has_pose else
                       f"none of its joints {list(source.keypoints)} maps to {list(target.keypoints)}")
                raise SourceError(f"source {name!r} declares task 'pose' but {why}", source=name)
            if parts and not can_parts:
                why = "it has no part labels" if not labels_parts else "the target schema has no part classes"
                raise SourceError(f"source {name!r} declares task 'parts' but {why}", source=name)
        lut = None
        if parts:
            try:
                sets = part_sets(source.part_classes, target.part_classes, part_map, ignore_parts, source_name=name)
            except PartMapError as err:
                raise SourceError(str(err), source=name, unmapped_parts=err.unmapped) from None
            lut = space.lookup(sets)
        elif part_map or ignore_parts:
            why = (f"the target schema {target.describe()} has no part classes (choose one that has them: "
                   f"data.schema)" if labels_parts and not target.has_parts else "it feeds no parts")
            raise SourceError(f"source {name!r}: part_map / ignore_parts given but {why}", source=name)
        k = target.num_parts
        plain = lut is None or bool((lut[:k] == np.arange(k)).all())
        passthrough = source == target and pose == can_pose and parts == can_parts and plain
        flip = space.flip_perm if target.has_parts else ()
        return cls(name, source, target, joints, lut, flip, pose, parts, passthrough)

    @property
    def joint_mask(self) -> np.ndarray:
        """(Kt,) bool: the target joints whose channels this source supervises (none when it feeds no pose)."""
        return self.joints.present & self.pose

    def tasks(self) -> list[str]:
        return [t for t, on in zip(TASKS, (self.pose, self.parts)) if on]

    def map_keypoints(self, keypoints: np.ndarray) -> np.ndarray:
        return self.joints.apply(keypoints)

    def map_parts(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) uint8 source labels -> target label values (plain classes, set values, 255)."""
        assert self.part_lut is not None
        return np.take(self.part_lut, labels)

    def map_record(self, record: ImageRecord) -> ImageRecord:
        """The record in the target schema (see `MappedSource`)."""
        if not self.pose:
            return dataclasses.replace(record, keypoints=self.map_keypoints(record.keypoints), pose_labeled=False,
                                       parts_path=record.parts_path if self.parts else None)
        kp = self.map_keypoints(record.keypoints)  # (N, Kt, 3)
        keep = (kp[..., 2] > 0).any(1)  # people left without any target joint become ignore regions
        # PCKh's head size as the source measures it (LIP's head top to upper neck): the target's neck may be another
        # joint (LIP's thorax stands in for PASCAL's neck), 1.6-2.1x farther from the head (before: PCKh 0.44, not
        # 0.19). A person the source cannot measure gets 0, which PCKh skips, as it does in the source's own schema.
        head_sizes = record.head_sizes
        if self.source.measures_head_size:
            head_sizes = np.where(np.isfinite(head_sizes), head_sizes, self.source.head_neck_sizes(record.keypoints))
            head_sizes = np.where(np.isfinite(head_sizes) & (head_sizes > 0), head_sizes, 0.0).astype(np.float32)
        lost = tuple([float(v) for v in box] for box in record.boxes[~keep])
        k = len(self.source.keypoints)
        annotations = tuple(self._map_annotation(a, k) for a in record.annotations)
        return dataclasses.replace(
            record, keypoints=kp[keep], boxes=record.boxes[keep],
            head_sizes=head_sizes[keep], ignore_regions=record.ignore_regions + lost,
            parts_path=record.parts_path if self.parts else None, annotations=annotations)

    def _map_annotation(self, ann: dict[str, Any], k: int) -> dict[str, Any]:
        raw = ann.get("keypoints") or []  # as read: the joints past the border already dropped (no neck between a
        if len(raw) != 3 * k or not k:  # dropped shoulder and a kept one)
            return ann
        kp = self.map_keypoints(np.asarray(raw, np.float32).reshape(1, k, 3))[0]
        return {**ann, "keypoints": [float(v) for v in kp.reshape(-1)], "num_keypoints": int((kp[:, 2] > 0).sum())}

    def describe(self) -> dict[str, Any]:
        """Plain dict of what the source feeds (for logs, checkpoints and reports)."""
        joints = {t: rule for t, rule in zip(self.target.keypoints, self.joints.rules) if rule and self.pose}
        return {"name": self.name, "tasks": self.tasks(), "joints": joints,
                "missing_joints": [t for t, rule in zip(self.target.keypoints, self.joints.rules)
                                   if self.pose and not rule]}


class _MappedRecords(SequenceABC):
    """The source's records mapped on access (cheap, and nothing is held twice for large sources)."""

    def __init__(self, records: Sequence[ImageRecord], mapping: SourceMapping) -> None:
        self._records, self._mapping = records, mapping

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._mapping.map_record(r) for r in self._records[index]]
        return self._mapping.map_record(self._records[index])

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self._mapping.map_record(r) for r in self._records)


@dataclass
class MappedSource(PosePartDataset):
    """A dataset read in another schema: a `PosePartDataset` whose `schema` is the target.

    Records carry target keypoints (people left without any target joint become pose ignore regions, as unlabelled
    people are in the format), `pose_labeled` False unless the source feeds pose, `parts_path` None unless it feeds
    parts; `load_parts` returns target label values (set-valued ones >= P); `label_flip_perm` covers those values.
    """

    source: PosePartDataset | None = None
    mapping: SourceMapping | None = field(default=None, repr=False)

    @classmethod
    def wrap(cls, dataset: PosePartDataset, mapping: SourceMapping) -> MappedSource:
        return cls(mapping.target, _MappedRecords(dataset.records, mapping), dataset.annotation_file,  # type: ignore
                   dataset.image_dir, dataset.parts_dir, dataset.skipped, dataset.skipped_examples,
                   category_id=dataset.category_id, source=dataset, mapping=mapping)

    @property
    def has_parts(self) -> bool:
        return bool(self.mapping and self.mapping.parts and self.source is not None and self.source.has_parts)

    @property
    def label_flip_perm(self) -> tuple[int, ...]:
        return self.mapping.label_flip_perm if self.mapping is not None else self.schema.part_flip_perm

    @functools.cached_property
    def labelled_joints(self) -> np.ndarray:
        # the source's people mapped all at once (mapping each record would also map its annotations)
        if self.mapping is None or self.source is None or not self.mapping.pose:
            return np.zeros(self.schema.num_joints, bool)
        people = [r.keypoints for r in self.source.records if r.pose_labeled]
        if not people:
            return np.zeros(self.schema.num_joints, bool)
        return (self.mapping.map_keypoints(np.concatenate(people))[..., 2] > 0).any(0)

    @property
    def annotated_joints(self) -> np.ndarray:
        labelled = self.labelled_joints
        if labelled.any() or self.mapping is None:
            return labelled
        return self.mapping.joint_mask  # no person labels any: the joints its schema maps (none if it feeds no pose)

    @property
    def scoring_schema(self) -> Schema:
        """The target schema with the OKS sigmas the source's file gives (`sigmas` in its category), by the joint
        each target joint copies; the target's where the file gives none (`Schema.sigmas_given`) or a joint is not a
        copy. Before, an evaluation file's own sigmas were silently replaced by the model's."""
        source = self.mapping.source if self.mapping is not None else None
        if source is None or not source.sigmas_given:
            return self.schema
        copied = self.mapping.joints.copied
        sigmas = [source.sigmas[c] if c >= 0 else own for c, own in zip(copied.tolist(), self.schema.sigmas)]
        return dataclasses.replace(self.schema, sigmas=tuple(sigmas))

    @property
    def labelable_parts(self) -> np.ndarray:
        out = np.zeros(self.schema.num_parts, bool)
        lut = self.mapping.part_lut if self.mapping is not None else None
        if lut is not None and self.has_parts:
            out[lut[lut < self.schema.num_parts]] = True  # the target classes some source class maps to alone
        return out

    def load_parts(self, record: ImageRecord) -> np.ndarray | None:
        if record.parts_path is None or self.source is None or self.mapping is None:
            return None
        labels = self.source.load_parts(record)  # validated against the SOURCE classes
        return None if labels is None else self.mapping.map_parts(labels)


def unmatched_joints(dataset: PosePartDataset) -> tuple[list[str], list[str]] | None:
    """For a dataset read in another schema (`map_dataset`'s view): (the target joints its own schema gives none of
    by name, its own joints that give none of the target's), where some but not all target joints are given; else
    None (every one or none given, read in its own schema, or no pose). Both lists at once usually mean the same
    joints named otherwise, or a typo."""
    if not isinstance(dataset, MappedSource) or dataset.mapping is None or dataset.source is None \
            or not (dataset.source.schema.has_pose and dataset.schema.has_pose):
        return None
    joints = dataset.mapping.joints
    missing = [joint for joint, rule in zip(dataset.schema.keypoints, joints.rules) if not rule]
    if not missing or len(missing) == dataset.schema.num_joints:
        return None
    read = {int(i) for level in joints.levels for i in level[1:].reshape(-1)}
    return missing, [name for i, name in enumerate(dataset.source.schema.keypoints) if i not in read]


def unscored_joints(dataset: PosePartDataset) -> str | None:
    """What a dataset read in another schema cannot score (`unmatched_joints`), said in words; None where it scores
    every joint or none (a dataset whose pose cannot be scored at all is refused where it is used). Why: OKS and
    PCKh then score a model's other joints only, and its people look easier than they are."""
    unmatched = unmatched_joints(dataset)
    if unmatched is None:
        return None
    (missing, unread), k = unmatched, dataset.schema.num_joints
    return (f"no joint of it is named as the model's {', '.join(missing)} ({len(missing)} of its {k} joints), so "
            f"OKS and PCKh score the other {k - len(missing)} only" +
            (f"; its own {', '.join(unread)} are not read (if they are the same joints, named otherwise, name them "
             f"as the model's in categories[0].keypoints)" if unread else ""))


def map_dataset(dataset: PosePartDataset, target: Schema, mapping: SourceMapping | None = None,
                name: str = "data", *, part_map: Mapping[str, Sequence[str]] | None = None,
                ignore_parts: Sequence[str] = ()) -> PosePartDataset:
    """`dataset` in the `target` schema: itself when nothing needs mapping, else a `MappedSource`. Without a
    `mapping`, one is built from the built-in part tables extended by `part_map` / `ignore_parts` (a training
    source's own, `SourceConfig`), which apply when the dataset has part labels; where its part classes do not map
    and its pose does, it is read for its pose alone, with a warning saying why (evaluation scores what it can:
    before, a model could not be scored on a pose dataset whose part maps were in other classes)."""
    if mapping is None:
        tables = dict(part_map=part_map, ignore_parts=ignore_parts) if dataset.has_parts else {}
        space = PartLabelSpace(target)
        try:
            mapping = SourceMapping.build(name, dataset.schema, target, space, source_has_parts=dataset.has_parts,
                                          **tables)
        except SourceError as err:
            if not (err.unmapped_parts and dataset.has_people):  # a part table's mistake, or nothing else to score
                raise
            # read for what maps of its pose, if anything (before: tasks=["pose"], refused where no joint maps with a
            # message that advised a part table; a dataset that gives nothing is "nothing to score" where it is used)
            mapping = SourceMapping.build(name, dataset.schema, target, space, source_has_parts=False)
            if mapping.pose:
                warnings.warn(f"{err}: its parts are not scored, its pose is", PosepartWarning, stacklevel=2)
    return dataset if mapping.passthrough else MappedSource.wrap(dataset, mapping)


# -- sampling --------------------------------------------------------------------------------------------------------
def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` draws in proportion to `weights` (largest remainder; ties to the earlier source)."""
    w = np.asarray(weights, np.float64)
    if total < 0 or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"need total >= 0 and non-negative weights with a positive sum, got {total}, {list(w)}")
    quota = total * w / w.sum()
    counts = np.floor(quota).astype(np.int64)
    order = sorted(range(len(w)), key=lambda i: (-(quota[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


@dataclass(frozen=True)
class SourcePlan:
    """Which samples an epoch draws from sources of `sizes` samples: `counts[s]` from source s.

    A draw is a virtual index v = offset[s] + i + r * total (sample i of source s on its r-th pass; total =
    sum(sizes)), so repeated draws of one sample get distinct augmentation streams and `locate(v)` finds it again.
    """

    sizes: tuple[int, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.counts) or any(c and not n for n, c in zip(self.sizes, self.counts)):
            raise ValueError(f"cannot draw {self.counts} samples from sources of sizes {self.sizes}")

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def epoch_size(self) -> int:
        return sum(self.counts)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def draws(self, generator: torch.Generator) -> list[int]:
        """The epoch's virtual indices in training order (deterministic given the generator's state)."""
        import torch

        chunks = []
        for offset, n, count in zip(self.offsets().tolist(), self.sizes, self.counts):
            passes = -(-count // n) if count else 0
            walk = [torch.randperm(n, generator=generator) + r * self.total for r in range(passes)]
            if walk:
                chunks.append(torch.cat(walk)[:count] + offset)
        order = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
        return order[torch.randperm(len(order), generator=generator)].tolist()

    def locate(self, v: int) -> tuple[int, int]:
        """Virtual index -> (source, index within the source)."""
        g = int(v) % self.total
        s = int(np.searchsorted(np.cumsum(self.sizes), g, side="right"))
        return s, g - int(self.offsets()[s])
