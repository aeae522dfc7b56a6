"""Autoencoding task: PSNR/SSIM against scikit-image and a hand-computed case, the two noise kinds, fixed noisy
evaluation copies, the PCA baseline's code size, the reconstruction grid, ONNX parity and bad configuration."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from modelforge.core.errors import ConfigError, DataError
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.vision.autoencoding import Autoencoding, corrupt
from modelforge.tasks.vision.image_metrics import PSNR_CAP, psnr_ssim


def _pair() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    reference = 0.1 + 0.8 * (0.5 * xx + 0.5 * np.sin(6 * yy) ** 2)  # in [0.1, 0.9]: +0.1 never clips
    return reference, reference + 0.1


def test_psnr_and_ssim_equal_scikit_image_on_a_known_pair():
    reference, shifted = _pair()
    psnr, ssim = psnr_ssim(reference[None, None], shifted[None, None])
    assert psnr == pytest.approx(20.0)  # a constant error of 0.1: MSE 0.01 → 10·log10(1 / 0.01) = 20 dB
    assert psnr == pytest.approx(peak_signal_noise_ratio(reference, shifted, data_range=1.0))
    assert ssim == pytest.approx(structural_similarity(reference, shifted, data_range=1.0))
    assert 0.5 < ssim < 1.0

    # a batch is the mean of per-image scores; an exact copy gets the cap instead of inf
    noisy = np.clip(reference + np.random.default_rng(0).normal(0, 0.2, reference.shape), 0, 1)
    batch_psnr, batch_ssim = psnr_ssim(np.stack([reference] * 3), np.stack([shifted, noisy, reference]))
    expected = [peak_signal_noise_ratio(reference, img, data_range=1.0) for img in (shifted, noisy)] + [PSNR_CAP]
    assert batch_psnr == pytest.approx(np.mean(expected))
    ssims = [structural_similarity(reference, img, data_range=1.0) for img in (shifted, noisy, reference)]
    assert batch_ssim == pytest.approx(np.mean(ssims)) and ssims[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal"):
        psnr_ssim(reference[None], shifted[None, None])


def test_noise_kinds():
    clean = torch.full((4, 1, 28, 28), 0.5)
    generator = torch.Generator().manual_seed(0)
    gaussian = corrupt(clean, "gaussian", 0.1, 0.0, generator)
    assert gaussian.std().item() == pytest.approx(0.1, rel=0.05) and gaussian.min() >= 0 and gaussian.max() <= 1
    salt_pepper = corrupt(clean, "salt_pepper", 0.0, 0.3, torch.Generator().manual_seed(0))
    changed = salt_pepper != 0.5
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert set(salt_pepper[changed].unique().tolist()) == {0.0, 1.0}
    again = corrupt(clean, "salt_pepper", 0.0, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(salt_pepper, again)
    assert corrupt(clean, "none", 0.5, 0.5) is clean


def _task(**data) -> Autoencoding:
    raw = {"name": "ae", "task": "autoencoding",
           "data": {"source": "digits", "val_size": 100, "test_size": 200, **data},
           "model": {"name": "conv_autoencoder", "channels": [4, 8], "latent_dim": 6}}
    return Autoencoding(load_recipe(raw))


def test_denoising_splits_evaluation_and_pca_baseline():
    task = _task(noise="salt_pepper", noise_amount=0.25)
    splits = task.datasets()
    noisy, clean = splits.test.get_batch(range(len(splits.test)))
    assert noisy.shape == clean.shape == (200, 1, 8, 8) and not torch.equal(noisy, clean)
    again = _task(noise="salt_pepper", noise_amount=0.25).datasets().test.tensors[0]
    assert torch.equal(noisy, again)  # the evaluation noise is fixed, so evaluations are repeatable

    torch.manual_seed(0)
    model = task.build_model().eval()
    metrics = task.evaluate(model, [splits.test.get_batch(range(0, 100)), splits.test.get_batch(range(100, 200))])
    assert {"loss", "psnr", "ssim", "pca_psnr", "pca_ssim", "noisy_psnr", "noisy_ssim"} <= set(metrics)
    assert task._pca_baseline().n_components_ == 6 == task.code_size()
    # the PCA figures are those of scikit-learn's PCA(6) fitted on the clean training images
    from sklearn.decomposition import PCA

    train = splits.train.tensors[1].reshape(len(splits.train), -1).numpy() / 255
    pca = PCA(6, svd_solver="full").fit(train)
    x = noisy.reshape(200, -1).numpy() / 255
    expected = np.clip(pca.inverse_transform(pca.transform(x)), 0, 1).reshape(200, 1, 8, 8)
    ref = clean.numpy() / 255
    assert metrics["pca_psnr"] == pytest.approx(psnr_ssim(ref, expected)[0], abs=1e-3)
    assert metrics["noisy_psnr"] == pytest.approx(psnr_ssim(ref, noisy.numpy() / 255)[0])

    view = task.report_samples(model, splits, 6)
    assert view.png.startswith(b"\x89PNG")


def test_training_step_corrupts_inputs_but_targets_the_clean_image():
    task = _task(noise="gaussian", noise_std=0.5)
    splits = task.datasets()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.zeros_like(x)

    batch = splits.train.get_batch(range(8))
    out = task.training_step(Spy(), batch)
    clean = batch[1].float() / 255
    assert not torch.equal(seen[0], clean)
    assert out.loss.item() == pytest.approx(float((clean**2).mean()))  # the loss is against the clean image


def test_autoencoder_onnx_parity(tmp_path):
    import onnxruntime as ort

    from modelforge.artifacts.export import export_onnx
    from modelforge.artifacts.model_dir import save_artifact

    task = _task()
    splits = task.datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    save_artifact(tmp_path / "model", task.recipe, task, model)
    result = export_onnx(tmp_path)
    assert list(result.inputs) == ["image"] and result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = task.preprocess(list(splits.test.tensors[1][:5].numpy()))
    with torch.no_grad():
        expected = model(x).numpy()
    (actual,) = session.run(None, {"image": x.numpy()})
    assert actual.shape == (5, 1, 8, 8)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
    # serving: each reconstruction comes back as a PNG of the input's size
    (result,) = task.postprocess(torch.from_numpy(actual[:1]))
    assert (result["width"], result["height"]) == (8, 8) and len(result["reconstruction_png"]) > 20


def test_bad_configuration_and_inputs_are_one_line_errors():
    raw = {"name": "ae", "task": "autoencoding", "data": {"source": "digits"}, "model": {"name": "seed_cnn"}}
    with pytest.raises(ConfigError, match="has no latent_dim"):
        Autoencoding(load_recipe(raw)).code_size()
    with pytest.raises(ConfigError, match="data.noise"):
        load_recipe({**raw, "data": {"noise": "speckle"}, "model": {"name": "conv_autoencoder"}})
    task = _task()
    task.datasets()
    with pytest.raises(DataError, match=r"nope\.png: no such image file"):
        task.preprocess(["nope.png"])
    with pytest.raises(DataError, match="not a readable image"):
        task.preprocess([b"not an image"])
