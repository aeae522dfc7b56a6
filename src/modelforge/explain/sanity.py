"""Sanity checks for attributions: integrated-gradients completeness and the model-parameter randomisation test.

- Completeness (Sundararajan et al. 2017, axiom): the attributions of integrated gradients add up to
  ``f(x) − f(baseline)``. Captum's convergence delta is exactly the shortfall; ``completeness_errors`` gives it
  relative to the score difference, so "within 1 %" is a number one can assert.
- Model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): if an explanation
  explains the *model*, re-initialising the model's weights must change it. ``randomization_check`` compares the
  attributions of a trained model with those of a copy whose every layer is re-initialised, by Spearman rank
  correlation per input (as the paper does); a method that passes gives correlations near zero.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


def completeness_errors(explanations: Sequence[Any]) -> list[float]:
    """``|sum(attr) − (f(x) − f(baseline))| / |f(x) − f(baseline)|`` per integrated-gradients explanation."""
    errors = []
    for item in explanations:
        if item.convergence_delta is None or item.score_difference is None:
            raise ValueError(f"completeness needs integrated gradients, not {item.method}")
        errors.append(abs(item.convergence_delta) / max(abs(item.score_difference), 1e-12))
    return errors


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters re-initialised (PyTorch's own ``reset_parameters``;
    parameters of modules without one are redrawn from a normal distribution of their current scale)."""
    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in clone.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
            else:
                for param in module.parameters(recurse=False):
                    with torch.no_grad():
                        param.normal_(0.0, float(param.std()) if param.numel() > 1 else 0.02)
    finally:
        torch.random.set_rng_state(state)
    return clone


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two attribution maps (flattened); 0 when either is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


@dataclass
class RandomizationResult:
    correlations: list[float]  # per input: trained vs randomised
    absolute: list[float]  # the same on |attribution| (the paper reports both)

    @property
    def mean(self) -> float:
        return float(np.mean(self.correlations))

    @property
    def mean_absolute(self) -> float:
        return float(np.mean(self.absolute))


def randomization_check(task: Any, model: nn.Module, batch: Any, method: str = "integrated_gradients",
                        seed: int = 0, **options: Any) -> RandomizationResult:
    """Attributions of ``model`` and of its randomised copy on the same batch, for the trained model's predicted
    labels (the same targets for both, so only the weights differ)."""
    from modelforge.explain import explain_batch

    trained = explain_batch(task, model, batch, method, **options)
    random_model = randomized_copy(model, seed)
    rows, absolute = [], []
    for i, item in enumerate(trained):
        (other,) = explain_batch(task, random_model, _select(batch, i), method, item.label, **options)
        rows.append(spearman(item.attributions, other.attributions))
        absolute.append(spearman(np.abs(item.attributions), np.abs(other.attributions)))
    return RandomizationResult(rows, absolute)


def _select(batch: Any, index: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[index : index + 1]
    return type(batch)(part[index : index + 1] for part in batch)
