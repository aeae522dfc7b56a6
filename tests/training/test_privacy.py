"""DP-SGD (training/privacy.py): accounting against Opacus, enforcement, resume, refusals and the clipping itself."""

import json
import math

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

import modelforge
from modelforge.core.errors import ConfigError
from modelforge.core.seed import seed_everything
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.training.privacy import poisson_plan
from modelforge.training.trainer import Trainer

TINY = ["data.limit=192", "data.image_size=12", "model.name=lenet5", "train.progress=off", "train.optimizer=sgd",
        "train.lr=0.5", "train.batch_size=32", "train.log_every_steps=5", "privacy.max_grad_norm=1.0"]


def _trainer(tmp_path, overrides, model=None):
    recipe = load_recipe("digits-cnn", TINY + overrides)
    seed_everything(recipe.train.seed)
    task = get_task(recipe.task)(recipe)
    splits = task.datasets()
    return Trainer(task, model or task.build_model(), recipe.train, tmp_path), splits


def _records(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


def test_reported_epsilon_equals_an_independent_opacus_accountant(tmp_path):
    run = modelforge.train("digits-cnn", TINY + ["privacy.noise_multiplier=0.9", "train.epochs=2"], run_dir=tmp_path)
    report = run.summary["privacy"]
    n_train = run.summary["data"]["train_size"]
    steps_per_epoch = math.ceil(n_train / 32)
    assert report["steps"] == run.summary["steps"] == 2 * steps_per_epoch
    independent = RDPAccountant()
    for _ in range(report["steps"]):
        independent.step(noise_multiplier=0.9, sample_rate=1 / steps_per_epoch)
    expected = independent.get_epsilon(delta=1e-5)
    assert report["epsilon"] == pytest.approx(expected, rel=1e-5)
    logged = _records(tmp_path, "privacy")
    assert [r["epoch"] for r in logged] == [1, 2]
    assert logged[0]["epsilon"] < logged[1]["epsilon"] == pytest.approx(expected, rel=1e-9)
    card = json.loads((tmp_path / "model" / "task.json").read_text())["privacy"]
    assert card["epsilon"] == report["epsilon"] and card["delta"] == 1e-5
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["privacy"]["epsilon"] == report["epsilon"]
    assert f"ε = {report['epsilon']:.3f}" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_noise_computed_from_the_target_keeps_epsilon_under_it(tmp_path):
    trainer, splits = _trainer(tmp_path, ["privacy.target_epsilon=4", "train.epochs=2"])
    summary = trainer.fit(splits)
    report = trainer.privacy.report()
    assert summary["stop_reason"] is None and report["steps"] == summary["steps"] == trainer.privacy.planned_steps
    assert 3.9 <= report["epsilon"] <= 4.0  # calibrated to the planned steps, within Opacus' 0.01 tolerance


def test_fixed_noise_stops_before_the_step_that_would_exceed_the_target(tmp_path):
    trainer, splits = _trainer(tmp_path, ["privacy.noise_multiplier=0.7", "privacy.target_epsilon=6",
                                          "train.epochs=20"])
    summary = trainer.fit(splits)
    steps = trainer.privacy.steps_accounted
    assert summary["stop_reason"].startswith("privacy budget") and summary["steps"] == steps < 20 * 6
    assert trainer.privacy.epsilon() <= 6.0
    one_more = RDPAccountant()
    one_more.history = [(0.7, trainer.privacy.sample_rate, steps + 1)]
    assert one_more.get_epsilon(delta=1e-5) > 6.0


def test_resumed_run_has_the_same_epsilon_and_weights(tmp_path):
    # momentum: a stateless SGD cannot be resumed at all yet (torch.distributed.checkpoint refuses its empty state)
    common = ["privacy.noise_multiplier=1.0", "train.epochs=2", "train.schedule=constant", "train.momentum=0.5"]
    whole, splits = _trainer(tmp_path / "whole", common)
    whole.fit(splits)
    killed, _ = _trainer(tmp_path / "split", common + ["train.max_steps=7"])
    killed.fit(splits)
    assert killed.privacy.steps_accounted == 7
    resumed, _ = _trainer(tmp_path / "split", common)
    resumed.fit(splits, resume=True)
    assert resumed.privacy.steps_accounted == whole.privacy.steps_accounted == whole.step > 7
    assert resumed.privacy.epsilon() == whole.privacy.epsilon()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same Poisson batches and the same noise draws
    logged = [r["epsilon"] for r in _records(tmp_path / "split", "privacy")]
    assert logged == [r["epsilon"] for r in _records(tmp_path / "whole", "privacy")]


def test_batchnorm_model_is_refused_naming_the_layer(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ConfigError, match=r"layer '1' is BatchNorm2d"):
        _trainer(tmp_path, ["privacy.noise_multiplier=1.0"], model=model)


@pytest.mark.parametrize(("override", "message"), [
    ("train.grad_accum=2", "train.grad_accum"),
    ("train.grad_clip=1.0", "train.grad_clip"),
    ("train.precision=fp16", "fp16"),
])
def test_incompatible_training_settings_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _trainer(tmp_path, ["privacy.noise_multiplier=1.0", override])


def test_bad_privacy_config_is_one_line_error(cli, tmp_path):
    result = cli("train", "digits-cnn", "privacy.delta=2", "--run-dir", str(tmp_path / "a"))
    assert result.returncode == 2 and "privacy.delta" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="set target_epsilon .* or noise_multiplier"):
        load_recipe("digits-cnn", ["privacy.max_grad_norm=1.0"])
    with pytest.raises(ConfigError, match="privacy.noise_multipler.*Did you mean privacy.noise_multiplier"):
        load_recipe("digits-cnn", ["privacy.noise_multipler=1.0"])


def test_a_dp_step_is_the_clipped_per_example_gradient_sum(tmp_path):
    """With the noise at 0, one DP-SGD step must move the weights by lr · Σ clip(g_i, C) / B, where the g_i come
    from separate backward passes per example (not from Opacus) — and clipping must actually bite."""
    clip = 0.05
    trainer, splits = _trainer(tmp_path, ["privacy.noise_multiplier=1.0", f"privacy.max_grad_norm={clip}"])
    trainer.privacy.setup(len(splits.train), 10)
    trainer.optimizer.noise_multiplier = 0.0
    model, task = trainer.model, trainer.task
    batch = splits.train.get_batch(torch.arange(6))
    params = [p for p in model.parameters() if p.requires_grad]
    clipped_sum = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(6):
        single = tuple(t[i : i + 1] for t in batch)
        grads = torch.autograd.grad(task.training_step(model, single).loss, params)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        norms.append(float(norm))
        for acc, g in zip(clipped_sum, grads):
            acc += g * min(1.0, clip / (float(norm) + 1e-6))
    for p in params:  # the per-example passes above must leave nothing behind for the DP step
        p.grad_sample, p.grad = None, None
    assert min(norms) > clip  # every example gets clipped: the test would catch a missing clip
    before = [p.detach().clone() for p in params]
    task.training_step(model, batch).loss.backward()
    assert all(p.grad_sample.shape[0] == 6 for p in params)
    trainer.optimizer.step()
    for p, old, acc in zip(params, before, clipped_sum):
        torch.testing.assert_close(old - p.detach(), 0.5 * acc / 32, rtol=1e-4, atol=1e-7)


def test_poisson_plan_is_deterministic_and_an_empty_batch_still_adds_noise(tmp_path):
    plan = poisson_plan(1000, 50, 0.002, seed=3, epoch=1)
    assert [b.tolist() for b in plan] == [b.tolist() for b in poisson_plan(1000, 50, 0.002, seed=3, epoch=1)]
    assert any(len(b) == 0 for b in plan) and sum(len(b) for b in plan) > 0
    assert [b.tolist() for b in poisson_plan(1000, 50, 0.002, seed=3, epoch=2)] != [b.tolist() for b in plan]
    trainer, splits = _trainer(tmp_path, ["privacy.noise_multiplier=1.0"])
    trainer.privacy.setup(len(splits.train), 10)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.privacy.empty_step().loss.backward()
    trainer.optimizer.step()
    moved = sum(float((p.detach() - b).norm()) for p, b in zip(trainer.model.parameters(), before))
    assert moved > 0 and trainer.privacy.steps_accounted == 1


class _Skipping(nn.Module):
    """``b`` is not used this step, as wav2vec2's LayerDrop skips a layer; ``pos`` is a position table."""

    def __init__(self, positions: str = "none"):
        super().__init__()
        self.a, self.b, self.pos, self.positions = nn.Linear(3, 3), nn.Linear(3, 3), nn.Embedding(4, 3), positions

    def forward(self, x):
        if self.positions == "indexed":  # read outside its layer's forward: no hook sees it
            x = x + self.pos.weight[: x.shape[0]]
        elif self.positions == "by_position":  # its layer called on positions, not examples (T5's attention bias)
            x = x + self.pos(torch.arange(x.shape[0] - 1) % 4).sum(0)
        else:
            self.pos.weight.requires_grad_(False)
        return self.a(x)


def _dp_step(model):
    from opacus import GradSampleModule

    from modelforge.training.privacy import _DPOptimizer

    GradSampleModule(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _DPOptimizer(torch.optim.SGD(trainable, lr=0.1), noise_multiplier=0.0, max_grad_norm=1.0,
                             expected_batch_size=4)
    optimizer.parameter_names = {id(p): name for name, p in model.named_parameters()}
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()


def test_a_layer_unused_in_a_step_gets_zero_per_example_gradients():
    model = _Skipping()
    before = model.b.weight.detach().clone()
    _dp_step(model)  # Opacus alone: "Per sample gradient is not initialized. Not updated in backward pass?"
    assert torch.equal(model.b.weight, before) and model.a.weight.grad is not None


@pytest.mark.parametrize(("positions", "message"), [
    ("indexed", "Opacus gives pos.weight no per-example gradient"),
    ("by_position", "Opacus gives pos.weight a per-example gradient over 3 rows, not the batch's 4"),
])
def test_a_weight_without_per_example_gradients_is_a_one_line_error_naming_it(positions, message):
    with pytest.raises(ConfigError, match=f"privacy: {message} .*add adapter:") as caught:
        _dp_step(_Skipping(positions))
    assert "\n" not in str(caught.value)
