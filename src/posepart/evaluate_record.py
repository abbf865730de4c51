"""What `posepart evaluate` records of an evaluation and says about the data it scores: the files by digest
(metrics.json's `evaluated`), notes on data the model trained on or cannot fully score, and the advice for part
classes that do not map. Apart from evaluate_cli so that the verb reads in one sitting."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Collection, Sequence

from posepart.data.format import PosePartDataset


def what_was_scored(checkpoint: Path, dataset: PosePartDataset, batch_size: int, *, training_data: bool
                    ) -> dict[str, Any]:
    """metrics.json's `evaluated`: the model file and the data, by path and by digest (a later --resume rewrites a
    run's last.ckpt, so the path alone may name other weights then), the images' folder, the batch size, the
    code that scored (`posepart.files.code_digest`) and, where it is, that the data is the model's training data
    (`note_training_data`)."""
    from posepart.files import code_digest, file_sha1

    return {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha1": file_sha1(checkpoint),
            "data": str(dataset.annotation_file.resolve()), "data_sha1": file_sha1(dataset.annotation_file),
            "images": str(dataset.image_dir.resolve()), "batch_size": batch_size, "code": code_digest(),
            **({"training_data": True} if training_data else {})}


def note_training_data(where: str, dataset: PosePartDataset, config: Any) -> bool:
    """Whether `dataset` is one the model trained on (its config's `data.train` or a source's, `training_files`),
    said in a note: an easy mistake to make unseen, and its scores measure the fit. metrics.json records it too."""
    from posepart.engine.data import training_files

    if config is None or dataset.annotation_file.resolve() not in training_files(config):
        return False
    print(f"note: {where}: {dataset.annotation_file} is the model's training data: its scores measure the fit, not "
          f"how the model does on images it has not seen", file=sys.stderr)
    return True


def note_unscored(where: str, dataset: PosePartDataset, tasks: Collection[str] | None) -> None:
    """A note naming the model's joints a dataset read in its schema cannot score (`unscored_joints`): before, its
    OKS AP was over the other joints without a word (a walkthrough's 0.86 where the model scores 0.51)."""
    from posepart.data.mixing import unscored_joints

    if "pose" in (tasks or ("pose",)) and (unscored := unscored_joints(dataset)):
        print(f"note: {where}: {unscored}", file=sys.stderr)


def part_table_hint(sources: Sequence[Any], name: str | None = None) -> str:
    """What to do when a dataset's part classes do not map into the checkpoint's: the error's advice (part_map,
    ignore_parts) is a training config's; evaluate applies a training source's own when the source is named.
    `sources`: the model's training sources (its config's `data.sources`, an export's from the record it carries)."""
    named = [s.name for s in sources if s.part_map or s.ignore_parts]
    if name is not None and name not in named:
        return (f"; --source {name}=... is not one of the checkpoint's training sources with a part table "
                f"({named or 'none'}), whose part_map / ignore_parts evaluate would apply")
    own = "--part-map CLASS=TARGET[,TARGET] for each class (--ignore-parts CLASS,... for those to leave unscored)"
    if named:
        return (f"; to score it with the part table of the training source it was, name it: --source NAME=ROOT "
                f"(NAME one of {named}); or give its table: {own}")
    return f"; give its part table: {own}, as a training source's part_map and ignore_parts"
