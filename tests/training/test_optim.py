import math

import pytest
import torch

from modelforge.core.config import TrainConfig
from modelforge.training.optim import build_optimizer, lr_at


def _torch_lrs(scheduler_factory, steps: int, lr: float = 0.1) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = scheduler_factory(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_matches_torch():
    cfg = TrainConfig(lr=0.1, schedule="cosine")
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50), 50)
    assert [lr_at(s, 50, cfg) for s in range(50)] == pytest.approx(ref, rel=1e-9)


def test_step_matches_torch():
    cfg = TrainConfig(lr=0.1, schedule="step", step_size=7, gamma=0.5)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 40)
    assert [lr_at(s, 40, cfg) for s in range(40)] == pytest.approx(ref, rel=1e-9)


def test_onecycle_matches_torch():
    cfg = TrainConfig(lr=0.1, schedule="onecycle", pct_start=0.3, div_factor=25, final_div_factor=1e4)
    ref = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.1, total_steps=100, pct_start=0.3, cycle_momentum=False, anneal_strategy="cos"
        ),
        100,
    )
    assert [lr_at(s, 100, cfg) for s in range(100)] == pytest.approx(ref, rel=1e-6)


def test_linear_with_warmup():
    cfg = TrainConfig(lr=1.0, schedule="linear", warmup_steps=4, min_lr_ratio=0.0)
    lrs = [lr_at(s, 24, cfg) for s in range(24)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[14] == pytest.approx(0.5) and lrs[23] == pytest.approx(0.05)


def test_constant_with_warmup_and_cosine_floor():
    cfg = TrainConfig(lr=0.2, schedule="constant", warmup_steps=2)
    assert [lr_at(s, 10, cfg) for s in range(4)] == pytest.approx([0.1, 0.2, 0.2, 0.2])
    cfg = TrainConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(10, 10, cfg) == pytest.approx(0.1) and lr_at(5, 10, cfg) == pytest.approx(0.55)


@pytest.mark.parametrize(
    "kind,cls,extra",
    [
        ("sgd", torch.optim.SGD, {}),
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        ("adam", torch.optim.Adam, {}),
        ("adamw", torch.optim.AdamW, {"weight_decay": 0.01}),
    ],
)
def test_optimizers_are_built_as_configured(kind, cls, extra):
    cfg = TrainConfig(optimizer=kind, lr=0.05, **extra)
    param = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([param], cfg)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.05
    for key, value in extra.items():
        assert opt.param_groups[0][key] == value
    (param**2).sum().backward()
    opt.step()
    assert not torch.equal(param.detach(), torch.ones(3))
    assert math.isfinite(param.sum().item())


def test_warmup_ratio_is_a_fraction_of_any_run_length():
    cfg = TrainConfig(lr=1.0, schedule="linear", warmup_ratio=0.1, warmup_steps=60)  # the ratio wins over steps
    short = [lr_at(s, 20, cfg) for s in range(20)]
    assert short[:2] == pytest.approx([0.5, 1.0]) and max(short) == pytest.approx(1.0)  # peaks inside a 20-step run
    long = [lr_at(s, 2000, cfg) for s in range(2000)]
    assert long[199] == pytest.approx(1.0) and long[99] == pytest.approx(0.5)


def test_min_steps_adds_epochs_only_when_the_data_is_small(tmp_path):
    from modelforge.training.trainer import Trainer

    trainer = Trainer.__new__(Trainer)  # only the sizing arithmetic, no model
    trainer.cfg = TrainConfig(epochs=3, batch_size=32, min_steps=100)
    assert trainer.planned_epochs(200) == 15 and trainer.total_steps(200) == 105  # 7 steps an epoch
    assert trainer.planned_epochs(200_000) == 3 and trainer.total_steps(200_000) == 3 * 6250
    trainer.cfg = TrainConfig(epochs=3, batch_size=32, min_steps=100, max_steps=50)
    assert trainer.total_steps(200) == 50
