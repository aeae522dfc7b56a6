"""A CLIP-style dual encoder: a small CNN image tower and a BERT-layout text tower, projected into one space.

``encode_image(images)`` and ``encode_text(input_ids, attention_mask)`` return L2-normalised embeddings; ``forward``
returns the image–text similarity logits ``exp(logit_scale) · img @ txtᵀ`` (Radford et al., 2021), whose symmetric
cross-entropy is the contrastive loss. ``logit_scale`` is the learned inverse temperature, clamped at log 100 as in
CLIP so it cannot blow up.

The image tower keeps *where* things are: its last feature map is flattened into the projection instead of
average-pooled, so captions about left/right/above/below can be matched. The text tower is ``TransformerEncoder``,
shaped like all-MiniLM-L6-v2 by default so that checkpoint's weights fit (``models/hf.py``'s ``load_hf_bert``),
mean-pooled over the real tokens as sentence-transformers trained it. ``new_parameter_names`` lists everything
outside the text tower: with a LoRA ``adapter:`` (``training/lora.py``) those train fully while the text tower's
attention and feed-forward layers get the adapter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modelforge.core.errors import ConfigError
from modelforge.core.registry import register
from modelforge.models.transformer import TransformerConfig, TransformerEncoder, mean_pool

MAX_LOGIT_SCALE = math.log(100.0)


class ConvTower(nn.Module):
    """(conv3×3 → BatchNorm → ReLU → max-pool 2) per width, then flatten → linear to ``embed_dim``."""

    def __init__(self, in_channels: int, image_size: int, widths: list[int], embed_dim: int):
        super().__init__()
        side = image_size // 2 ** len(widths)
        if not widths or side < 1:
            raise ConfigError(f"image_size {image_size} is too small for {len(widths)} pooling stages (widths)")
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(channels * side * side, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images).flatten(1))


class DualEncoder(nn.Module):
    """Image tower + text tower + a learned temperature; ``forward`` gives the (images, texts) similarity logits."""

    def __init__(self, text_cfg: TransformerConfig, embed_dim: int, image_size: int, image_widths: list[int],
                 in_channels: int = 3, init_temperature: float = 0.07):
        super().__init__()
        self.image = ConvTower(in_channels, image_size, image_widths, embed_dim)
        self.text = TransformerEncoder(text_cfg)
        self.text_proj = nn.Linear(text_cfg.dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    @property
    def new_parameter_names(self) -> list[str]:
        """Parameters outside the (pretrained) text tower: they train fully beside a LoRA adapter."""
        return [name for name, _ in self.named_parameters() if not name.startswith("text.")]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(images), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text tower's mean-pooled output, before the projection."""
        return mean_pool(self.text(input_ids, attention_mask), attention_mask)

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled text features → normalised embeddings (what training with a frozen text tower runs)."""
        return F.normalize(self.text_proj(features), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.project_text(self.text_features(input_ids, attention_mask))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.scale() * self.encode_image(images) @ self.encode_text(input_ids, attention_mask).T


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss over (images, texts) logits whose matching pairs lie on the diagonal."""
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class ImageTowerGraph(nn.Module):
    """The image tower alone (normalised embeddings), as one ONNX graph."""

    def __init__(self, model: DualEncoder):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


class TextTowerGraph(nn.Module):
    """The text tower alone (normalised embeddings), as one ONNX graph."""

    def __init__(self, model: DualEncoder):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, attention_mask)


def _example() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (3, 9), generator=generator)
    mask = (torch.arange(9)[None] < torch.tensor([[9], [6], [4]])).long()
    return torch.rand(3, 3, 32, 32, generator=generator), ids, mask


_TINY = {"vocab_size": 64, "dim": 32, "num_layers": 2, "num_heads": 2, "mlp_hidden": 64, "dropout": 0.0,
         "embed_dim": 16, "image_size": 32, "image_widths": [8, 16]}


@register("model", "clip_dual_encoder", example=_example, tiny=_TINY)
def clip_dual_encoder(vocab_size: int = 30522, max_positions: int = 512, dim: int = 384, num_layers: int = 6,
                      num_heads: int = 12, mlp_hidden: int = 1536, dropout: float = 0.1, embed_dim: int = 256,
                      image_size: int = 64, image_widths: tuple[int, ...] = (32, 64, 128, 128), in_channels: int = 3,
                      init_temperature: float = 0.07) -> DualEncoder:
    """CLIP-style dual encoder: CNN image tower + BERT-layout text tower (MiniLM-L6's shape); similarity logits."""
    if not 0 < init_temperature <= 1:
        raise ConfigError(f"init_temperature must be in (0, 1], got {init_temperature}")
    text_cfg = TransformerConfig(
        vocab_size=vocab_size, max_positions=max_positions, dim=dim, num_layers=num_layers, num_heads=num_heads,
        mlp_hidden=mlp_hidden, dropout=dropout, attn_dropout=dropout, pre_norm=False, norm_eps=1e-12,
        activation="gelu", type_vocab_size=2, embedding_norm=True,
    )
    return DualEncoder(text_cfg, embed_dim, image_size, list(image_widths), in_channels, init_temperature)
