"""`loss.aggregator`: torchjd's aggregation of one gradient row per supervised task (posepart.engine.aggregation)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from posepart.data.synth import write_synth
from posepart.engine.aggregation import aggregate_task_gradients
from posepart.engine.config import load_config
from posepart.engine.data import PosePartDataModule
from posepart.engine.module import PosePartModule
from posepart.engine.train import train

SIZE = 64
TINY = ["model.name=joint_vgg16", "model.stages=1", "model.width=0.125", "model.fc_width=32", "model.batch_norm=true",
        f"data.input_size={SIZE}", "data.batch_size=4", "data.workers=0", "loss.weighting=uncertainty",
        "train.accelerator=cpu", "train.devices=1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synth(tmp_path_factory.mktemp("agg") / "train", n=4, seed=0, size=SIZE)


def _setup(root, *overrides: str) -> tuple[PosePartModule, dict[str, torch.Tensor]]:
    config = load_config(None, [*TINY, f"data.train={root}", *overrides])
    datamodule = PosePartDataModule(config)
    datamodule.setup("fit")
    batch = default_collate([datamodule.train_mapped[(0, i)] for i in range(4)])
    torch.manual_seed(0)
    return PosePartModule(config, datamodule.schema), batch


def _step(module: PosePartModule, batch, name: str, *, present: dict | None = None) -> dict[str, torch.Tensor]:
    """The parameters' gradients after one aggregated (or, for "sum", plain) backward."""
    module.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks (the FCN head's fc layers) in every call
    result = module.loss_fn(module.model(batch["image"]), batch, keep_tasks=True)
    if present is not None:
        result.present = present
    params = [p for p in module.model.parameters() if p.requires_grad]
    if name == "sum":
        result.total.backward()
    else:
        aggregate_task_gradients(result, name, params, list(module.loss_fn.parameters()))
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in module.model.named_parameters()}


@pytest.mark.parametrize("name", ["mgda", "upgrad"])
def test_a_task_the_batch_lacks_gives_no_row(root, name):
    """A batch without part labels: the pose rows alone decide, and MGDA does not collapse onto the zero row."""
    module, batch = _setup(root)
    batch["has_parts"] = torch.zeros_like(batch["has_parts"])
    result = module.loss_fn(module.model(batch["image"]), batch, keep_tasks=True)
    assert not bool(result.present["seg"]) and float(result.tasks["seg"].detach()) == 0.0
    aggregated = _step(module, batch, name)
    assert all(not g.any() for n, g in aggregated.items() if n.startswith("seg_head"))
    pose = [g for n, g in aggregated.items() if n.startswith("pose_head")]
    assert sum(float(g.abs().sum()) for g in pose) > 0
    # with the zero seg row counted, MGDA's min-norm point of the rows is (close to) the zero update
    everything = {task: torch.tensor(True) for task in result.tasks}
    if name == "mgda":
        collapsed = _step(module, batch, name, present=everything)
        assert sum(float(g.abs().sum()) for g in collapsed.values()) < 1e-6 * sum(
            float(g.abs().sum()) for g in aggregated.values())


def test_one_supervised_task_is_the_plain_gradient(root):
    module, batch = _setup(root)
    batch["has_pose"] = torch.zeros_like(batch["has_pose"])  # parts only: one row
    plain = _step(module, batch, "sum")
    for name in ("upgrad", "mgda", "pcgrad"):
        aggregated = _step(module, batch, name)
        for key, grad in plain.items():
            torch.testing.assert_close(aggregated[key], grad, rtol=1e-5, atol=1e-7)


def test_upgrad_conflicts_with_no_task(root):
    """UPGrad's update d has d . g_t >= 0 for every task's gradient g_t (it descends every task)."""
    module, batch = _setup(root)
    torch.manual_seed(0)
    result = module.loss_fn(module.model(batch["image"]), batch, keep_tasks=True)
    params = [p for p in module.model.parameters() if p.requires_grad]
    rows = []
    for task in result.tasks:
        grads = torch.autograd.grad(result.tasks[task], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]))
    update = torch.cat([g.flatten() for g in _step(module, batch, "upgrad").values()])
    assert len(rows) == 3 and update.abs().sum() > 0
    for row in rows:
        assert float(update @ row) >= -1e-6 * float(update.norm() * row.norm())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16: the demo configs' precision
def test_training_with_an_aggregator(root, tmp_path, precision):
    config = load_config(None, [*TINY, f"data.train={root}", "loss.aggregator=upgrad", "train.max_steps=2",
                                "train.max_epochs=-1", "train.log_every_steps=1", f"train.precision={precision}"])
    result = train(config, tmp_path / "run", enable_progress_bar=False, enable_model_summary=False)
    assert result.last is not None and result.last.is_file()
