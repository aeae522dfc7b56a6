"""Sanity checks of the attributions themselves: completeness of integrated gradients and the model-parameter
randomisation test of Adebayo et al. (2018)."""

import numpy as np
import pytest
import torch
from conftest import digit_images

from modelforge.explain import explain_batch
from modelforge.explain.sanity import completeness_errors, randomization_check, randomized_copy, spearman


@pytest.fixture(scope="module")
def digits_batch(digits_predictor):
    images, labels = digit_images(8)
    return digits_predictor.task.preprocess(images), labels


def test_integrated_gradients_completeness_within_one_percent(digits_predictor, digits_batch):
    task, model = digits_predictor.task, digits_predictor.model
    batch, _ = digits_batch
    found = explain_batch(task, model, batch, "integrated_gradients", steps=128)
    # independently of Captum's delta: the attributions add up to f(x) − f(black image) of the explained logit
    with torch.no_grad():
        black = ((0 - torch.tensor(task.state()["mean"])) / torch.tensor(task.state()["std"])).view(1, -1, 1, 1)
        f_x, f_black = model(batch), model(black.expand_as(batch))
    for i, item in enumerate(found):
        target = task.state()["labels"].index(item.target)
        difference = float(f_x[i, target] - f_black[i, target])
        assert abs(difference) > 1.0  # a trained model separates a digit from a black image
        assert abs(item.attributions.sum() - difference) <= 0.01 * abs(difference), (i, item.attributions.sum())
    assert max(completeness_errors(found)) < 0.01


def test_completeness_holds_for_token_attributions(text_run):
    from modelforge.explain.predictor import ExplainingPredictor

    predictor = ExplainingPredictor(text_run.directory)
    texts = ["the film was brilliant and fun", "a dull plot and boring actors"]
    found = explain_batch(predictor.task, predictor.model, predictor.task.preprocess(texts), steps=128)
    assert [len(item.attributions) for item in found] == [6, 6]
    assert max(completeness_errors(found)) < 0.01


def test_model_parameter_randomisation_changes_the_attributions(digits_predictor, digits_batch):
    """Adebayo et al. 2018: re-initialising every layer must change an explanation that explains the model.

    The statistic is the Spearman rank correlation of the *signed* maps per input. Threshold 0.3 — the usual bound of
    a "weak" correlation: measured, trained-vs-randomised is about 0.0 ± 0.15 per digit, while the control below
    (the same trained model with 1 % weight noise) stays above 0.9, so the check can fail. On absolute values the
    correlation stays high (about 0.9) for integrated gradients, as the paper reports for Gradient⊙Input and IG:
    the (x − baseline) factor keeps the digit's silhouette whatever the weights; that is why the signed maps are
    compared."""
    task, model = digits_predictor.task, digits_predictor.model
    batch, _ = digits_batch
    result = randomization_check(task, model, batch, "integrated_gradients", steps=32)
    assert abs(result.mean) < 0.3, result.correlations

    noisy = randomized_copy(model)  # reuse the copy machinery, then overwrite with slightly perturbed weights
    with torch.no_grad():
        for param, original in zip(noisy.parameters(), model.parameters()):
            param.copy_(original + 0.01 * original.std() * torch.randn_like(original))
    trained = explain_batch(task, model, batch, steps=32)
    perturbed = [explain_batch(task, noisy, batch[i : i + 1], target=item.label, steps=32)[0]
                 for i, item in enumerate(trained)]
    control = [spearman(a.attributions, b.attributions) for a, b in zip(trained, perturbed)]
    assert np.mean(control) > 0.9, control


def test_randomized_copy_changes_every_layer_and_leaves_the_original(digits_predictor):
    model = digits_predictor.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = randomized_copy(model, seed=3)
    for (name, param), original in zip(clone.named_parameters(), model.parameters()):
        assert not torch.equal(param, original), name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
