"""Multi-optimiser tasks (the GAN) in the one Trainer: alternating steps, per-group checkpoints, exact resume."""

import json

import pytest
import torch

from modelforge.core.errors import ConfigError, TrainingError
from modelforge.core.seed import seed_everything
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.training.callbacks import Callback
from modelforge.training.trainer import Trainer

TINY = ["data.limit=128", "data.val_size=32", "data.eval_samples=16",
        "model.width=4", "model.latent_dim=8", "train.batch_size=16", "train.progress=off", "train.log_every_steps=1"]


def _trainer(tmp_path, overrides=()):
    recipe = load_recipe("mnist-dcgan", [*TINY, *overrides])
    seed_everything(recipe.train.seed)
    task = get_task(recipe.task)(recipe)
    splits = task.datasets()
    return Trainer(task, task.build_model(), recipe.train, tmp_path), splits


def _params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _all_changed(module, before):
    return all(not torch.equal(p, before[name]) for name, p in module.named_parameters())


def _none_changed(module, before):
    return all(torch.equal(p, before[name]) for name, p in module.named_parameters())


def test_one_gan_step_updates_both_networks_and_the_d_step_leaves_g_alone(tmp_path, monkeypatch):
    trainer, splits = _trainer(tmp_path, ["train.max_steps=1"])
    model = trainer.model
    g0, d0 = _params(model.generator), _params(model.discriminator)
    seen = {}
    original = trainer.task.training_steps

    def spy(net, batch):
        steps = original(net, batch)
        yield next(steps)  # the discriminator's loss: the trainer steps its optimiser before resuming us
        seen["d_step_changed_d"] = _all_changed(net.discriminator, d0)
        seen["d_step_left_g"] = _none_changed(net.generator, g0)
        seen["d_after_d_step"] = _params(net.discriminator)
        yield from steps

    monkeypatch.setattr(trainer.task, "training_steps", spy)
    trainer.fit(splits)
    assert trainer.step == 1
    assert seen["d_step_changed_d"] and seen["d_step_left_g"]
    assert _all_changed(model.generator, g0)  # the generator step moved every generator weight …
    assert _none_changed(model.discriminator, seen["d_after_d_step"])  # … and no discriminator weight


def test_each_group_has_its_own_optimiser_and_logged_loss(tmp_path):
    trainer, splits = _trainer(tmp_path, ["train.max_steps=2", "train.checkpoint_every_steps=1"])
    assert set(trainer.optimizers) == {"discriminator", "generator"}
    trainer.fit(splits)
    files = sorted(p.name for p in (tmp_path / "checkpoints" / "step-0000002").glob("*.safetensors"))
    assert files == ["model.safetensors", "optimizer-discriminator.safetensors", "optimizer-generator.safetensors"]
    train_logs = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
                  if r["event"] == "train"]
    assert len(train_logs) == 2
    for record in train_logs:
        assert record["loss"] == pytest.approx(record["loss_discriminator"] + record["loss_generator"])


class _Crash(Exception):
    pass


class _CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, info):
        if trainer.step == self.step:
            raise _Crash


def _state(trainer):
    model = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optimizers = {name: opt.state_dict()["state"] for name, opt in trainer.optimizers.items()}
    return model, optimizers


# the generator's weight average and the spectral norm's power-iteration vectors are resumed too
@pytest.mark.parametrize(("ema_decay", "spectral_norm"), [(0.0, False), (0.9, True)])
def test_killed_and_resumed_gan_run_equals_an_uninterrupted_one(tmp_path, ema_decay, spectral_norm):
    args = ["train.epochs=2", "train.max_steps=12", "train.checkpoint_every_steps=3", f"model.ema_decay={ema_decay}",
            f"model.spectral_norm={spectral_norm}"]
    full, splits = _trainer(tmp_path / "full", args)
    full.fit(splits)

    crashed, _ = _trainer(tmp_path / "crashed", args)
    crashed.callbacks.append(_CrashAt(7))  # dies one step after the step-6 checkpoint: step 7 must be redone
    with pytest.raises(_Crash):
        crashed.fit(splits)
    resumed, _ = _trainer(tmp_path / "crashed", args)
    with torch.no_grad():  # wrong weights and another RNG state: only the checkpoint can make this run match
        for p in resumed.model.parameters():
            p.add_(1.0)
    torch.manual_seed(999)
    resumed.fit(splits, resume=True)
    assert resumed.step == full.step == 12 and resumed.epoch == full.epoch
    logged = [json.loads(line) for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["event"] == "train"] == list(range(1, 13))

    (model_a, opt_a), (model_b, opt_b) = _state(full), _state(resumed)
    assert any(name.startswith("generator_ema.") for name in model_a) == (ema_decay > 0)
    assert any(name.endswith("_u") for name in model_a) == spectral_norm
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name
    for group in opt_a:
        for index, slots in opt_a[group].items():
            for slot, value in slots.items():
                assert torch.equal(value, opt_b[group][index][slot]), (group, index, slot)


@pytest.mark.parametrize(("override", "message"), [
    ("train.grad_accum=2", "train.grad_accum=2 is not supported"),
    ("train.strategy=fsdp", "train.strategy=fsdp is not supported"),
    ("privacy.target_epsilon=3", "several optimisers"),
])
def test_unsupported_settings_are_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _trainer(tmp_path, [override])


def test_a_step_for_an_unknown_group_is_an_error(tmp_path, monkeypatch):
    trainer, splits = _trainer(tmp_path, ["train.max_steps=1"])
    monkeypatch.setattr(trainer.task, "training_steps", lambda net, batch: iter([("critic", None)]))
    with pytest.raises(TrainingError, match="group 'critic'"):
        trainer.fit(splits)
