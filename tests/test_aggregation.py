"""Multi-task optimisers: `loss.aggregator` (torchjd's aggregation of one gradient row per supervised task,
posepart.engine.aggregation) and the adaptive task weightings `loss.weighting: dwa | gradnorm`."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from posepart.data.synth import write_synth
from posepart.engine.aggregation import aggregate_task_gradients
from posepart.engine.checkpoint import load_checkpoint
from posepart.engine.config import ConfigError, load_config
from posepart.engine.data import PosePartDataModule
from posepart.engine.builders import last_shared_layer
from posepart.engine.module import PosePartModule
from posepart.engine.train import train
from posepart.losses import DynamicWeightAverage, GradNormWeighting

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
    collapsed = _step(module, batch, name, present=everything)
    size = {key: sum(float(g.abs().sum()) for g in grads.values()) for key, grads in (("rows", aggregated),
                                                                                        ("all", collapsed))}
    if name == "mgda":
        assert size["all"] < 1e-6 * size["rows"]
    else:  # UPGrad averages the rows' projections: the zero row would dilute the update
        assert size["all"] < 0.9 * size["rows"]


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
def test_training_with_an_aggregator(root, tmp_path, precision, monkeypatch):
    import posepart.engine.aggregation as aggregation

    calls = []
    real = aggregation.aggregate_task_gradients

    def counted(result, name, *args, **kwargs):  # the step's gradients go through UPGrad, once per step
        calls.append(name)
        return real(result, name, *args, **kwargs)

    monkeypatch.setattr(aggregation, "aggregate_task_gradients", counted)
    config = load_config(None, [*TINY, f"data.train={root}", "loss.aggregator=upgrad", "train.max_steps=2",
                                "train.max_epochs=-1", "train.log_every_steps=1", f"train.precision={precision}"])
    result = train(config, tmp_path / "run", enable_progress_bar=False, enable_model_summary=False)
    assert result.last is not None and result.last.is_file()
    assert calls == ["upgrad", "upgrad"] and result.global_step == 2


# -- task weightings that adapt: DWA and GradNorm ----------------------------------------------------------------------
def test_dwa_weights_by_hand():
    dwa = DynamicWeightAverage(["a", "b"], period=2, temperature=2.0)
    yes, no = torch.tensor(True), torch.tensor(False)
    for a, b in ((4.0, 2.0), (4.0, 2.0)):  # period 1: means 4, 2
        terms = dwa({"a": torch.tensor(a), "b": torch.tensor(b)})
        assert float(terms) == pytest.approx(a + b)  # weights 1 until two periods are complete
    dwa({"a": torch.tensor(2.0), "b": torch.tensor(2.0)})
    dwa({"a": torch.tensor(2.0), "b": torch.tensor(9.0)}, present={"a": yes, "b": no})  # b absent: not counted
    # the step that ends period 2 was weighted 1, 1 and logs so (before: the next step's weights, one step early)
    assert {k: float(v) for k, v in dwa.log_terms().items()} == {"weight/a": 1.0, "weight/b": 1.0}
    # period 2: means a 2, b 2 -> w = (2/4, 2/2) -> lambda = 2 softmax((0.25, 0.5))
    expected = 2 * torch.softmax(torch.tensor([0.25, 0.5]), 0)
    torch.testing.assert_close(dwa.weights(), expected)
    terms = dwa.terms({"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    assert float(terms["b"]) == pytest.approx(float(expected[1]))
    dwa.eval()  # validation steps do not count
    state = {k: v.clone() for k, v in dwa.state_dict().items()}
    dwa({"a": torch.tensor(100.0), "b": torch.tensor(100.0)})
    for key, value in dwa.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_gradnorm_moves_the_weights_towards_equal_gradient_norms_by_hand():
    shared = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    gradnorm = GradNormWeighting(["a", "b"], alpha=1.5)
    yes = torch.tensor(True)

    def step(scale_a: float, scale_b: float) -> torch.Tensor:
        gradnorm.weights.grad = None
        terms = gradnorm.terms({"a": scale_a * shared[0] * 3.0, "b": scale_b * shared[0]})
        gradnorm.balance(terms, {"a": yes, "b": yes}, [shared])
        return gradnorm.weights.grad.clone()

    # G = (3, 1) at w = (1, 1); first step: L(0) = L, so r = 1 and both targets are mean(G) = 2
    torch.testing.assert_close(step(1.0, 1.0), torch.tensor([3.0, -1.0]))  # sign(G - 2) * G / w
    torch.testing.assert_close(gradnorm.initial, torch.tensor([3.0, 1.0]))
    # task b's loss has not moved, a's halved: r = (0.5, 1) / 0.75, targets mean(G') * r^1.5 with G' = (1.5, 1)
    g = torch.tensor([1.5, 1.0])
    target = g.mean() * (torch.tensor([0.5, 1.0]) / 0.75) ** 1.5
    torch.testing.assert_close(step(0.5, 1.0), torch.sign(g - target) * g)
    with torch.no_grad():
        gradnorm.weights.copy_(torch.tensor([3.0, 1.0]))
    gradnorm.renormalise()
    torch.testing.assert_close(gradnorm.weights.detach(), torch.tensor([1.5, 0.5]))  # sum K = 2


def test_gradnorm_names_a_task_that_does_not_reach_the_shared_layer():
    """A trunk of one's own whose last conv serves one task (an API walkthrough): before, torch.sqrt of the int 0."""
    shared, other = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    gradnorm = GradNormWeighting(["pose", "parts"], alpha=1.5)
    yes = torch.tensor(True)
    terms = gradnorm.terms({"pose": shared.sum(), "parts": other.sum()})
    with pytest.raises(ValueError, match="task 'parts' sends no gradient through the shared layer"):
        gradnorm.balance(terms, {"pose": yes, "parts": yes}, [shared])


def test_gradnorm_gives_a_task_the_batch_lacks_no_weight_gradient(root):
    module, batch = _setup(root, "loss.weighting=gradnorm")
    weighting = module.loss_fn.weighting
    result = module.loss_fn(module.model(batch["image"]), batch, keep_tasks=True)
    weighting.balance(result.tasks, result.present, last_shared_layer(module.model))
    assert (weighting.weights.grad != 0).all()  # every task's gradient reaches the last shared layer
    weighting.weights.grad, weighting.initial[:] = None, float("nan")
    batch["has_parts"] = torch.zeros_like(batch["has_parts"])
    result = module.loss_fn(module.model(batch["image"]), batch, keep_tasks=True)
    weighting.balance(result.tasks, result.present, last_shared_layer(module.model))
    grad = dict(zip(weighting.tasks, weighting.weights.grad.tolist()))
    assert grad["seg"] == 0.0 and grad["heatmap"] != 0.0 and grad["paf"] != 0.0
    assert torch.isnan(weighting.initial[weighting.tasks.index("seg")])  # no L(0) for a task never seen
    # the network's loss does not reach the weights: they learn from GradNorm alone
    result.total.backward()
    assert weighting.weights.grad.tolist() == list(grad.values())


@pytest.mark.parametrize("weighting", ["dwa", "gradnorm"])
def test_training_with_an_adaptive_weighting_logs_and_resumes(root, tmp_path, weighting):
    settings = [*TINY, f"data.train={root}", f"loss.weighting={weighting}", "loss.dwa_period=1", "train.max_epochs=2",
                "train.log_every_steps=1", "train.max_steps=-1"]
    quiet = {"enable_progress_bar": False, "enable_model_summary": False}
    full = train(load_config(None, settings), tmp_path / "full", **quiet)
    assert "train/weight/heatmap" in full.metrics
    state = load_checkpoint(full.last)["state_dict"]
    if weighting == "gradnorm":
        assert float(state["loss_fn.weighting.weights"].sum()) == pytest.approx(3.0)  # renormalised to K
    else:
        assert int(state["loss_fn.weighting.steps"]) == 2 and bool((state["loss_fn.weighting.means"] > 0).all())
    first = train(load_config(None, settings), tmp_path / "cut", max_epochs=1, **quiet)
    resumed = train(load_config(None, settings), tmp_path / "cut", resume=first.last, **quiet)
    other = load_checkpoint(resumed.last)["state_dict"]
    for key in state:
        torch.testing.assert_close(state[key], other[key], rtol=0, atol=1e-6, msg=key)


def test_gradnorm_config_conflicts_are_errors():
    with pytest.raises(ConfigError, match="gradnorm learns the task weights"):
        load_config(None, ["loss.weighting=gradnorm", "loss.weights.seg=2"])
    with pytest.raises(ConfigError, match="does not combine"):
        load_config(None, ["loss.weighting=gradnorm", "loss.aggregator=upgrad"])


def test_an_aggregator_whose_solver_is_missing_is_refused_before_training(monkeypatch):
    """UPGrad needs quadprog (torchjd's extra, which an old pip left out): before, an ImportError's traceback at the
    first training step, after the sanity check."""
    import posepart.engine.aggregation as aggregation

    def missing(name: str) -> None:
        raise ImportError("QuadprogProjector requires ['qpsolvers', 'quadprog']")

    monkeypatch.setattr(aggregation, "make_aggregator", missing)
    with pytest.raises(ConfigError, match=r"'upgrad' needs .*quadprog.*: pip install 'torchjd\[quadprog-projector\]'$"):
        load_config(None, ["loss.aggregator=upgrad", "train.max_steps=2"])  # as `train` reads its config
    assert load_config(None, ["train.max_steps=2"]).loss.aggregator == "sum"  # nothing to import
