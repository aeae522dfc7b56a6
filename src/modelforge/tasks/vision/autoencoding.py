"""Autoencoding: reconstruct (or denoise) MNIST digits, scored with PSNR/SSIM next to PCA of the same code size.

Pixels are floats in [0, 1] (no mean/std normalisation: the reconstruction is compared with the image itself) and
the loss is the mean squared error against the *clean* image. With ``data.noise`` set, training inputs are corrupted
afresh every step (global torch RNG, so resume stays exact) and every split also holds one fixed noisy copy, drawn
once from ``data.noise_seed``, so evaluations are repeatable. The baseline is PCA (scikit-learn) with as many
components as the network's code (``model.latent_dim``), fitted on the clean training images in the same run; on
noisy inputs it reconstructs from the projection of the noisy image, as the network does.
"""

from __future__ import annotations

import base64
import inspect
import io
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import get, register
from modelforge.data.split_config import HeldOutSplitConfig, ValSize
from modelforge.data.splits import holdout_split
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.vision.image_metrics import psnr_ssim

PCA_FIT_LIMIT = 20000  # training images the PCA baseline is fitted on (enough for 784-pixel covariance; seconds)


def _holdout(n: int, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return holdout_split(n, size, seed, "images")


class AutoencoderDataConfig(HeldOutSplitConfig):
    source: Literal["mnist", "digits"] = "mnist"
    val_size: ValSize = 5000
    eval_limit: Optional[int] = Field(None, ge=1, description="use only the first N validation and test images")
    noise: Literal["none", "gaussian", "salt_pepper"] = Field("none", description="input corruption (denoising)")
    noise_std: float = Field(0.3, ge=0, le=1, description="gaussian: standard deviation, pixels in [0, 1]")
    noise_amount: float = Field(0.2, ge=0, le=1, description="salt_pepper: share of pixels set to 0 or 1")
    noise_seed: int = Field(0, description="seed of the fixed noisy copies used for evaluation")


def corrupt(x: torch.Tensor, kind: str, std: float, amount: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Float images in [0, 1] → noisy images in [0, 1]: additive Gaussian noise (clipped) or salt-and-pepper (a share
    ``amount`` of pixels set to 0 or 1 with equal odds)."""
    if kind == "none":
        return x
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + std * noise).clamp(0, 1)
    if kind == "salt_pepper":
        draw = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        salt, pepper = draw < amount / 2, (draw >= amount / 2) & (draw < amount)
        return x.masked_fill(pepper, 0.0).masked_fill(salt, 1.0)
    raise ConfigError(f"data.noise must be none, gaussian or salt_pepper, got {kind!r}")


@register("task", "autoencoding")
class Autoencoding(Task):
    """Reconstruct or denoise images with a convolutional autoencoder; PSNR/SSIM next to PCA of the same size."""

    name = "autoencoding"
    DataConfig = AutoencoderDataConfig
    input_kind = "image"
    evaluation_gathers_ranks = True  # evaluate gathers its images and batch sums once (across_ranks)

    # ---- data -------------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, np.ndarray]:
        cfg = self.data_cfg
        if cfg.source == "mnist":
            from modelforge.data.builtin.mnist import load_mnist

            arrays = load_mnist()
            return {"train": arrays["train_images"][:, None], "test": arrays["test_images"][:, None]}
        from sklearn.datasets import load_digits

        images = np.clip(np.rint(load_digits().images * 255 / 16), 0, 255).astype(np.uint8)[:, None]
        return {"all": images}

    def _noisy_copy(self, clean: torch.Tensor, salt: int) -> torch.Tensor:
        """The split's fixed noisy inputs (uint8, like the clean ones), drawn once from ``noise_seed``."""
        cfg = self.data_cfg
        if cfg.noise == "none":
            return clean
        generator = torch.Generator().manual_seed(cfg.noise_seed * 1009 + salt)
        noisy = corrupt(clean.float() / 255, cfg.noise, cfg.noise_std, cfg.noise_amount, generator)
        return (noisy * 255).round().to(torch.uint8)

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        parts = self._load()
        if "all" in parts:
            keep, test = _holdout(len(parts["all"]), cfg.test_size, cfg.split_seed)
            parts = {"train": parts["all"][keep], "test": parts["all"][test]}
        if cfg.val_size > 0:
            keep, val = _holdout(len(parts["train"]), cfg.val_size, cfg.split_seed + 1)
            parts["train"], parts["val"] = parts["train"][keep], parts["train"][val]
        if cfg.limit:
            parts["train"] = parts["train"][: cfg.limit]
        if cfg.eval_limit:
            parts.update({k: v[: cfg.eval_limit] for k, v in parts.items() if k != "train"})
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in parts.items()}
        self._train_images = tensors["train"]  # what the PCA baseline is fitted on
        self._pca = None
        self.state_dict_ = {"channels": int(tensors["train"].shape[1]), "image_size": int(tensors["train"].shape[-1]),
                            "noise": cfg.noise, "noise_std": cfg.noise_std, "noise_amount": cfg.noise_amount}
        salts = {"train": 0, "val": 1, "test": 2}
        splits = {k: TensorDataset(self._noisy_copy(v, salts[k]), v) for k, v in tensors.items()}
        summary: dict[str, Any] = {f"{k}_size": len(v) for k, v in tensors.items()}
        summary.update(image_shape=list(tensors["train"].shape[1:]), code_size=self.code_size(), noise=cfg.noise)
        return Splits(train=splits["train"], val=splits.get("val"), test=splits.get("test"), summary=summary)

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"in_channels": self.state_dict_["channels"], "image_size": self.state_dict_["image_size"]}

    def code_size(self) -> int:
        """The network's code length (``latent_dim``: the recipe's value or the builder's default)."""
        value = self.recipe.model.kwargs().get("latent_dim")
        if value is None:
            parameter = get("model", self.recipe.model.name).parameters().get("latent_dim")
            if parameter is None or parameter.default is inspect.Parameter.empty:
                raise ConfigError(f"model {self.recipe.model.name!r} has no latent_dim: autoencoding needs an "
                                  "autoencoder (conv_autoencoder, denoising_autoencoder)")
            value = parameter.default
        return int(value)

    # ---- training and evaluation ------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        _, clean = batch
        target = clean.float() / 255
        cfg = self.data_cfg
        inputs = corrupt(target, cfg.noise, cfg.noise_std, cfg.noise_amount)  # fresh noise every step
        return StepOutput(F.mse_loss(model(inputs).float(), target))

    def _pca_baseline(self):
        from sklearn.decomposition import PCA

        if getattr(self, "_pca", None) is None:
            images = getattr(self, "_train_images", None)
            if images is None:
                raise DataError("the PCA baseline needs the training images: call datasets() first")
            flat = images[:PCA_FIT_LIMIT].reshape(min(len(images), PCA_FIT_LIMIT), -1).numpy() / 255.0
            components = min(self.code_size(), *flat.shape)
            self._pca = PCA(n_components=components, svd_solver="randomized", random_state=0).fit(flat)
        return self._pca

    def pca_reconstruct(self, inputs: np.ndarray) -> np.ndarray:
        """PCA with the code size of the network: project and reconstruct float images (N, C, H, W) in [0, 1]."""
        pca = self._pca_baseline()
        flat = inputs.reshape(len(inputs), -1)
        return np.clip(pca.inverse_transform(pca.transform(flat)), 0, 1).reshape(inputs.shape)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        """MSE ``loss`` per pixel, PSNR/SSIM of the reconstructions and of the PCA baseline (inside
        ``gathering_ranks()``: every rank's images and batch sums gathered first)."""
        noisy_all, clean_all, recon_all, sq_errors, counts = [], [], [], [], []
        for noisy, clean in loader:
            x, target = noisy.float() / 255, clean.float() / 255
            recon = model(x).float().clamp(0, 1)
            sq_errors.append(float(F.mse_loss(recon, target, reduction="sum")))
            counts.append(target.numel())
            noisy_all.append(x.cpu().numpy())
            clean_all.append(target.cpu().numpy())
            recon_all.append(recon.cpu().numpy())
        side = self.state_dict_["image_size"]  # an empty share still sends arrays of the images' shape
        none = np.empty((0, self.state_dict_["channels"], side, side), dtype=np.float32)
        *images, sq_error, count = across_ranks(
            *(np.concatenate(a) if a else none for a in (noisy_all, clean_all, recon_all)),
            np.array(sq_errors, dtype=np.float64), np.array(counts, dtype=np.int64))
        inputs, clean, recon = (a.astype(np.float64) for a in images)
        psnr, ssim = psnr_ssim(clean, recon)
        pca_psnr, pca_ssim = psnr_ssim(clean, self.pca_reconstruct(inputs))
        metrics = {"loss": summed_in_order(sq_error) / int(count.sum()), "psnr": psnr, "ssim": ssim,
                   "pca_psnr": pca_psnr, "pca_ssim": pca_ssim}
        if self.data_cfg.noise != "none":
            metrics["noisy_psnr"], metrics["noisy_ssim"] = psnr_ssim(clean, inputs)  # doing nothing scores this
        return metrics

    # ---- report -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        dataset = splits.test if splits.test is not None else splits.val
        if dataset is None or len(dataset) == 0:
            return ReportSamples(note="the recipe has no test or validation split")
        if getattr(self, "_train_images", None) is None:  # a task loaded from an artifact: fit PCA on these splits
            fit_on = range(min(len(splits.train), PCA_FIT_LIMIT))
            self._train_images, self._pca = splits.train.get_batch(fit_on)[1], None
        picks = np.unique(np.linspace(0, len(dataset) - 1, max(1, min(count, len(dataset)))).astype(int))
        noisy, clean = (t.float().numpy() / 255 for t in dataset.get_batch(picks))
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            recon = model(torch.from_numpy(noisy).to(device)).float().clamp(0, 1).cpu().numpy()
        finally:
            model.train(was_training)
        rows = [("original", clean)]
        if self.data_cfg.noise != "none":
            rows.append((f"noisy ({self.data_cfg.noise})", noisy))
        rows += [(f"autoencoder (code {self.code_size()})", recon),
                 (f"PCA ({self._pca_baseline().n_components_} comp.)", self.pca_reconstruct(noisy))]
        return ReportSamples(png=reconstruction_grid_png(rows))

    # ---- serving ----------------------------------------------------------------------------------------------
    def _decode(self, item: Any) -> np.ndarray:
        from modelforge.tasks.vision.image_inputs import resized_from_bytes

        channels, size = self.state_dict_["channels"], self.state_dict_["image_size"]
        if isinstance(item, np.ndarray):
            if item.size != channels * size * size:
                raise DataError(f"an image array must hold {channels}×{size}×{size} values, got shape {item.shape}")
            return item.reshape(channels, size, size).astype(np.uint8)
        if isinstance(item, (str, Path)) and not (isinstance(item, str) and len(item) > 256):
            path = Path(item)
            if not path.is_file():
                raise DataError(f"{path}: no such image file")
            raw = path.read_bytes()
        elif isinstance(item, (bytes, bytearray, str)):
            try:
                raw = base64.b64decode(item, validate=True) if isinstance(item, str) else bytes(item)
            except ValueError:
                raise DataError("image input is neither a file path nor base64 image bytes") from None
        else:
            raise DataError(f"cannot read image input of type {type(item).__name__}: give a PNG/JPEG path or bytes")
        return resized_from_bytes(raw, channels, size)

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self._decode(item) for item in inputs])).float() / 255

    def postprocess(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        """Each reconstruction as a base64 PNG (and its size), so JSON clients can show it."""
        from PIL import Image

        results = []
        for image in (outputs.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy():
            picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            results.append({"reconstruction_png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                            "width": picture.width, "height": picture.height})
        return results

    def input_spec(self) -> dict[str, Any]:
        s = self.state_dict_
        return {"kind": "image", "channels": s["channels"], "image_size": s["image_size"], "output": "image"}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        s = self.state_dict_
        return {"image": torch.rand(batch_size, s["channels"], s["image_size"], s["image_size"])}


def reconstruction_grid_png(rows: list[tuple[str, np.ndarray]]) -> bytes:
    """Rows of float images (N, C, H, W) in [0, 1], one labelled row per kind (original, noisy, reconstructions)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    columns = len(rows[0][1])
    fig = Figure(figsize=(0.9 * columns + 1.6, 1.0 * len(rows) + 0.2), dpi=80)
    for r, (title, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = fig.add_subplot(len(rows), columns, r * columns + c + 1)
            ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(left=1.5 / (0.9 * columns + 1.6), right=0.99, top=0.98, bottom=0.02, wspace=0.05, hspace=0.05)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
