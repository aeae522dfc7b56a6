"""MLP: the analytic gradient agrees with finite differences (float64 gradcheck) for each activation."""

import pytest
import torch

from modelforge.core.registry import build
from modelforge.models.mlp import ACTIVATIONS


@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"relu", "leaky_relu"}))
def test_gradcheck_smooth_activations(activation: str) -> None:
    torch.manual_seed(0)
    model = build("model", "mlp", in_features=6, hidden=[5, 4], num_classes=3, activation=activation).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_gradcheck_piecewise_linear_activations(activation: str) -> None:
    # Finite differences are only valid away from the kink at 0; with these seeds no pre-activation is within eps.
    torch.manual_seed(1)
    model = build("model", "mlp", in_features=6, hidden=[5], num_classes=3, activation=activation).double()
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    pre = model.net[1](x)
    assert pre.abs().min() > 1e-3
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-6)
