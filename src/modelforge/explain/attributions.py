"""The four attribution methods, on Captum, behind one call.

``attribute`` takes a forward function returning class scores (logits), the tensor to attribute, a baseline of the
same shape, and the class index per input. For text, ``layer`` names the token-embedding module: Captum's layer
variants then attribute to the embedding output (ids are integers, so gradients cannot reach them), and the result
is one row per token after ``token_scores`` folds the embedding dimension.

Why logits and not probabilities: a logit is closer to linear in the input, so integrated gradients' Riemann/Gauss
sum converges in fewer steps (completeness is checked against the logit difference), and softmax saturation would
hide the evidence of a very confident prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modelforge.core.errors import ConfigError

METHODS = ("integrated_gradients", "saliency", "occlusion", "gradient_shap")


@dataclass
class Attribution:
    values: torch.Tensor  # shaped as the attributed input (or, for a layer, as its output)
    delta: torch.Tensor | None = None  # integrated gradients: sum(attr) − (f(x) − f(baseline)) per input


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; valid: {', '.join(METHODS)}")
    return method


def attribute(
    forward: Callable[..., torch.Tensor],
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    method: str,
    *,
    layer: nn.Module | None = None,
    extra_args: tuple[Any, ...] = (),
    steps: int = 64,
    window: tuple[int, ...] | None = None,
    shap_samples: int = 16,
    internal_batch_size: int | None = 256,
    seed: int = 0,
) -> Attribution:
    """Attributions of ``forward(inputs, *extra_args)[i, target[i]]`` by ``method``.

    ``window`` is the occlusion patch (image/spectrogram; its stride is half of it); text occludes one token at a
    time by replacing it with the baseline id. ``seed`` fixes GradientSHAP's random baselines and path points.
    """
    check_method(method)
    if layer is None and inputs.is_floating_point():
        inputs = inputs.detach().requires_grad_()  # Captum would do it too, with a warning on every call
    args = tuple(extra_args) or None
    common = {"target": target, "additional_forward_args": args}
    if method == "integrated_gradients":
        from captum.attr import IntegratedGradients, LayerIntegratedGradients

        explainer = LayerIntegratedGradients(forward, layer) if layer is not None else IntegratedGradients(forward)
        values, delta = explainer.attribute(inputs, baselines=baseline, n_steps=steps, method="gausslegendre",
                                            internal_batch_size=internal_batch_size, return_convergence_delta=True,
                                            **common)
        return Attribution(values.detach(), delta.detach())
    if method == "saliency":
        if layer is not None:
            from captum.attr import LayerGradientXActivation

            grads = LayerGradientXActivation(forward, layer, multiply_by_inputs=False).attribute(inputs, **common)
            return Attribution(grads.detach().abs())
        from captum.attr import Saliency

        return Attribution(Saliency(forward).attribute(inputs, abs=True, **common).detach())
    if method == "occlusion":
        if layer is not None:  # text: drop one token at a time (replace its id by the baseline's)
            from captum.attr import FeatureAblation

            values = FeatureAblation(forward).attribute(inputs, baselines=baseline, **common)
            return Attribution(values.detach().float())
        from captum.attr import Occlusion

        shape = window or tuple(max(1, s // 7) for s in inputs.shape[1:])
        strides = tuple(max(1, w // 2) for w in shape)
        values = Occlusion(forward).attribute(inputs, sliding_window_shapes=shape, strides=strides,
                                              baselines=baseline, **common)
        return Attribution(values.detach())
    # gradient_shap: expected gradients over random baselines near ``baseline`` and random points on each path
    from captum.attr import GradientShap, LayerGradientShap

    generator = torch.Generator(device="cpu").manual_seed(seed)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # Captum draws its path points from the global RNG: keep runs reproducible
    try:
        if layer is not None:
            # ids cannot take noise: the randomness is in the points drawn on each path from [PAD] to the text
            values = LayerGradientShap(forward, layer).attribute(inputs, baselines=baseline[:1], n_samples=shap_samples,
                                                                 stdevs=0.0, **common)
        else:
            spread = inputs.detach().std().clamp_min(1e-6) * 0.1
            noise = torch.randn((shap_samples, *inputs.shape[1:]), generator=generator) * spread
            baselines = baseline[:1].cpu() + noise
            values = GradientShap(forward).attribute(inputs, baselines=baselines.to(inputs.device),
                                                     n_samples=shap_samples, stdevs=float(spread), **common)
    finally:
        torch.random.set_rng_state(state)
    return Attribution(values.detach())


def token_scores(values: torch.Tensor) -> torch.Tensor:
    """Per-token scores from embedding-layer attributions ``(B, T, D)``: the sum over the embedding dimension, so
    the scores of a sequence still add up to the integrated-gradients total; occlusion already gives ``(B, T)``."""
    return values if values.dim() == 2 else values.sum(dim=-1)
