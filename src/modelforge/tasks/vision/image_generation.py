"""Image generation with a GAN (DCGAN): MNIST or scikit-learn digits → a generator of new digit images.

The task declares two optimiser groups (discriminator, generator) and a ``training_steps`` generator that yields
the discriminator's loss, then — after the Trainer has stepped the discriminator — the generator's loss against the
updated discriminator, so the alternating updates run through the one Trainer loop. Training images are kept as
uint8 in memory and scaled to [-1, 1] (the generator's tanh range) per batch.

Evaluation on held-out real images reports how well the discriminator tells real from generated images. With
``data.judge`` (the run directory of a trained digit classifier such as ``mnist-cnn``) it also reports the quality
figure: the share of generated samples the judge classifies with confidence ≥ ``data.judge_confidence``, and the
entropy of the judge's predicted-class histogram (diversity; log2(10) ≈ 3.32 bits when all ten digits are equally
frequent).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.errors import ArtifactError, ConfigError, DataError
from modelforge.core.registry import register
from modelforge.data.split_config import SplitConfig, ValSize
from modelforge.data.splits import holdout_split
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.export_graphs import GraphSet, OnnxGraph, Verification
from modelforge.tasks.metrics import across_ranks, summed_in_order

EXPORT_TOLERANCE = 1e-4  # as artifacts/export.py: largest |onnxruntime − PyTorch| accepted
EVAL_SEED = 1234  # fixed latents for evaluation: every evaluation scores the same points of the latent space


def _holdout(n: int, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return holdout_split(n, size, seed, "images")


class GenerationDataConfig(SplitConfig):
    source: Literal["mnist", "digits"] = "mnist"
    image_size: Optional[int] = Field(None, ge=8, description="square side the GAN generates (default: source's)")
    val_size: ValSize = 1000  # real images the judge compares against; the test share is fixed (0.2)
    eval_samples: int = Field(1000, ge=1, description="generated images scored at each evaluation")
    judge: Optional[str] = Field(None, description="run dir of a trained image classifier (e.g. mnist-cnn) that "
                                                   "scores generated samples at evaluation")
    judge_confidence: float = Field(0.9, gt=0, le=1, description="a judged sample counts as confident at ≥ this")


def _sampler(model: nn.Module) -> nn.Module:
    """The network that draws samples: DCGAN's weight-averaged generator when it keeps one."""
    sampler = getattr(model, "sampler", None)
    return sampler if sampler is not None else model.generator


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] → uint8 pixels."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] → one uint8 (rows·H, columns·W[, C]) picture, tiles separated by black lines."""
    n, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = torch.zeros(channels, rows * (height + padding) + padding, columns * (width + padding) + padding,
                       dtype=torch.uint8)
    pixels = to_uint8(images.detach().cpu())
    for i in range(n):
        top, left = padding + (i // columns) * (height + padding), padding + (i % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = pixels[i]
    array = grid.numpy()
    return array[0] if channels == 1 else array.transpose(1, 2, 0)


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def judge_probabilities(images: torch.Tensor, judge: Any) -> torch.Tensor:
    """Class probabilities (N, classes) that a trained image-classification Predictor (the "judge") gives generated
    images in [-1, 1], converted to the judge's channels and size."""
    if judge.recipe.task != "image_classification":
        raise ConfigError(f"data.judge must be an image_classification run; {judge.directory} is a run of task "
                          f"{judge.recipe.task!r}")
    state = judge.task.state_dict_
    pixels = to_uint8(images).float()
    if pixels.shape[1] != state["channels"]:
        pixels = pixels.mean(1, keepdim=True) if state["channels"] == 1 else pixels.expand(-1, 3, -1, -1)
    size = state["image_size"]
    if pixels.shape[-1] != size:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 255)
    with torch.no_grad():
        return judge.model(judge.task.normalize(pixels.round())).float().softmax(-1)


def judge_scores(images: torch.Tensor, judge: Any, threshold: float = 0.9) -> dict[str, float]:
    """The share of images the judge classifies with confidence ≥ ``threshold``, the entropy in bits of its
    predicted-class histogram, and how many classes occur among its predictions."""
    confidence, predicted = judge_probabilities(images, judge).max(-1)
    counts = torch.bincount(predicted, minlength=10).float()
    share = counts[counts > 0] / counts.sum()
    return {
        "judge_confident": float((confidence >= threshold).float().mean()),
        "judge_class_entropy": float(-(share * share.log2()).sum()) + 0.0,  # + 0.0: no "-0.0" for one class
        "judge_classes_present": float((counts > 0).sum()),
    }


@register("task", "image_generation")
class ImageGeneration(Task):
    """Generate images with a GAN (DCGAN on MNIST digits); the Trainer alternates discriminator/generator steps."""

    name = "image_generation"
    evaluation_gathers_ranks = True  # evaluate gathers its real-image batch sums once (across_ranks)
    capabilities = frozenset({"sample"})
    DataConfig = GenerationDataConfig

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._judge: Any = None

    # ---- data -------------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, np.ndarray]:
        if self.data_cfg.source == "mnist":
            from modelforge.data.builtin.mnist import load_mnist

            arrays = load_mnist()
            return {"train": arrays["train_images"][:, None], "test": arrays["test_images"][:, None]}
        from sklearn.datasets import load_digits

        images = np.clip(np.rint(load_digits().images * 255 / 16), 0, 255).astype(np.uint8)[:, None]
        keep, test = _holdout(len(images), 0.2, self.data_cfg.split_seed)
        return {"train": images[keep], "test": images[test]}

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images))
        size = self.data_cfg.image_size
        if size and x.shape[-1] != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        parts = self._load()
        if cfg.val_size > 0:
            keep, val = _holdout(len(parts["train"]), cfg.val_size, cfg.split_seed + 1)
            parts["train"], parts["val"] = parts["train"][keep], parts["train"][val]
        if cfg.limit:
            parts["train"] = parts["train"][: cfg.limit]
        tensors = {k: self._to_tensor(v) for k, v in parts.items()}
        train = tensors["train"]
        self.state_dict_ = {"channels": int(train.shape[1]), "image_size": int(train.shape[-1])}
        if cfg.judge:
            self.judge()  # a missing or wrong judge run fails now, not at the first evaluation
        summary = {f"{k}_size": len(v) for k, v in tensors.items()}
        summary["image_shape"] = list(train.shape[1:])
        return Splits(
            train=TensorDataset(train),
            val=TensorDataset(tensors["val"]) if "val" in tensors else None,
            test=TensorDataset(tensors["test"]),
            summary=summary,
        )

    def judge(self) -> Any:
        """The judge classifier's Predictor (loaded once)."""
        if self._judge is None:
            try:
                self._judge = self.load_run(Path(self.data_cfg.judge).expanduser())
            except ArtifactError as exc:
                raise DataError(f"data.judge: {exc}") from None
        return self._judge

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"image_size": self.state_dict_["image_size"], "channels": self.state_dict_["channels"]}

    @staticmethod
    def scale(images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels → [-1, 1], the range of the generator's tanh."""
        return images.float() / 127.5 - 1

    # ---- training: two optimisers -------------------------------------------------------------------------------
    def optimizer_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(model.discriminator.parameters()),
                "generator": list(model.generator.parameters())}

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        raise NotImplementedError("image_generation trains through training_steps (two optimisers)")

    def training_steps(self, model: nn.Module, batch: Any) -> Iterator[tuple[str, StepOutput]]:
        """The DCGAN update (Radford et al.; Goodfellow's non-saturating generator loss).

        One batch of fakes serves both steps: the discriminator learns real → 1, fake → 0 on detached fakes (its
        step leaves the generator untouched); the generator then learns to make the *updated* discriminator say 1.
        """
        real = self.scale(batch[0])
        fake = model.generator(model.sample_latent(len(real)))
        real_logits, fake_logits = model.discriminator(real), model.discriminator(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        yield "discriminator", StepOutput(d_loss)
        logits = model.discriminator(fake)
        yield "generator", StepOutput(F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)))
        if hasattr(model, "update_ema"):  # runs after the generator's optimiser step
            model.update_ema()

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    # ---- evaluation -------------------------------------------------------------------------------------------
    def generate(self, model: nn.Module, n: int, seed: int) -> torch.Tensor:
        """n images in [-1, 1] from latents drawn with ``seed`` (the global RNG is left alone, so resume stays
        exact); generated in chunks to bound memory."""
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(n, model.cfg.latent_dim, generator=generator)
        device = next(model.parameters()).device
        with torch.no_grad():
            return torch.cat([_sampler(model)(chunk.to(device)) for chunk in latents.split(256)])

    def sample_grid(self, model: nn.Module, n: int, seed: int, columns: int | None = None) -> bytes:
        """``generate``'s n images tiled ``columns`` wide (default ⌈√n⌉) as one PNG (``modelforge sample``)."""
        return png_bytes(image_grid(self.generate(model, n, seed), columns))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        """The discriminator on the held-out real images (inside ``gathering_ranks()``: every rank's batch sums
        gathered first) and on ``eval_samples`` generated ones — drawn from EVAL_SEED, so the same on every rank."""
        correct, losses, sizes = [], [], []  # per batch of real images
        for (images,) in loader:
            logits = model.discriminator(self.scale(images)).float()
            correct.append(float((logits > 0).sum()))
            losses.append(float(F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="sum")))
            sizes.append(len(images))
        real_correct, real_loss, n_real = across_ranks(*(np.array(v, dtype=np.float64) for v in (correct, losses)),
                                                       np.array(sizes, dtype=np.int64))
        real_correct, real_loss, n_real = summed_in_order(real_correct), summed_in_order(real_loss), int(n_real.sum())
        fakes = self.generate(model, self.data_cfg.eval_samples, EVAL_SEED)
        fake_logits = torch.cat([model.discriminator(chunk) for chunk in fakes.split(256)]).float()
        metrics = {
            "d_real_accuracy": real_correct / max(1, n_real),
            "d_fake_accuracy": float((fake_logits < 0).float().mean()),
            "loss_d": real_loss / max(1, n_real)
            + float(F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))),
            "loss_g": float(F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))),
        }
        if self.data_cfg.judge:
            metrics.update(judge_scores(fakes.cpu(), self.judge(), self.data_cfg.judge_confidence))
        return metrics

    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        if count <= 0:
            return None
        was_training = model.training
        model.eval()
        try:
            images = self.generate(model, count, EVAL_SEED)
        finally:
            model.train(was_training)
        return ReportSamples(png=png_bytes(image_grid(images.cpu())), note=f"{count} generated samples")

    # ---- export -----------------------------------------------------------------------------------------------
    def export_graphs(self, model: nn.Module) -> GraphSet:
        """The generator alone (latents → images in [-1, 1]) as ``model.generator.onnx``: the discriminator only
        matters for training. Verified with onnxruntime at two batch sizes other than the traced one."""
        network = getattr(model, "module", model)
        generator, latent_dim = _sampler(network).eval(), int(network.cfg.latent_dim)
        axes = {"latent": {0: "batch"}, "images": {0: "batch"}}
        meta = {"latent_dim": latent_dim, "latent": "standard normal", "output_range": [-1.0, 1.0],
                "image_size": self.state_dict_.get("image_size"), "channels": self.state_dict_.get("channels")}

        def verify(files: dict[str, Path]) -> Verification:
            import onnxruntime as ort

            session = ort.InferenceSession(str(files["generator"]), providers=["CPUExecutionProvider"])
            diff = 0.0
            for batch in (3, 5):
                latents = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(batch))
                with torch.no_grad():
                    expected = generator(latents).numpy()
                (actual,) = session.run(None, {"latent": latents.numpy()})
                if actual.shape != expected.shape:
                    raise ArtifactError(f"ONNX generator gives {actual.shape}, PyTorch {expected.shape}")
                diff = max(diff, float(np.abs(actual - expected).max()))
            if not diff <= EXPORT_TOLERANCE:
                raise ArtifactError(f"ONNX generator differs from PyTorch by {diff:.3g} (> {EXPORT_TOLERANCE:g})")
            return Verification(diff)

        graph = OnnxGraph("generator", generator, {"latent": torch.randn(2, latent_dim)}, ["images"], axes)
        return GraphSet([graph], {"modelforge.generator": json.dumps(meta)}, verify)

    # ---- serving ----------------------------------------------------------------------------------------------
    # A served generator's inputs are integer seeds: each draws one latent vector, so a seed always gives the same
    # image. (`modelforge sample --seed S` draws a whole grid from one seed instead.)
    input_kind = "seed"

    def input_spec(self) -> dict[str, Any]:
        return {"kind": "seed", "channels": self.state_dict_.get("channels"),
                "image_size": self.state_dict_.get("image_size")}

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        seeds = []
        for item in inputs:
            text = str(item).strip()
            if isinstance(item, bool) or not (isinstance(item, int) or text.isdigit()):
                raise DataError(f"an image_generation run takes integer seeds as inputs (one image each), got "
                                f"{text[:40]!r}; `modelforge sample RUN` draws a grid")
            seeds.append(int(text))
        return torch.tensor(seeds, dtype=torch.int64)

    def forward(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        latent_dim = model.cfg.latent_dim
        latents = torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(seed)))
                               for seed in batch])
        return _sampler(model)(latents.to(next(model.parameters()).device)).cpu()

    def postprocess(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        """Each image as a base64 PNG (``image_png``), as the segmentation and autoencoder tasks return theirs."""
        results = []
        for image in to_uint8(outputs):
            array = image.permute(1, 2, 0).numpy()
            array = array[..., 0] if array.shape[-1] == 1 else array
            results.append({"image_png": base64.b64encode(png_bytes(array)).decode("ascii"),
                            "width": int(array.shape[1]), "height": int(array.shape[0])})
        return results
