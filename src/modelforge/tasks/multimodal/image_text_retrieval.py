"""Image–text retrieval (CLIP-style): an image tower and a text tower trained with the symmetric contrastive loss.

Data: the generated ``scenes-captions`` set (``data/builtin/caption_scenes.py``: its test split names colour–kind
pairs never drawn in training; held in memory) or the user's image–caption files (``data/formats/image_captions.py``;
images decoded per item, ``retrieval_data.RetrievalSet``). Each training step pairs every image of the batch with
one of its captions, drawn from the global torch RNG (so a resumed run draws the same ones). Metrics: recall@1/5/10
image→text and text→image over every caption of the split (``retrieval_metrics.py``).

Predictions take an image each and answer, by the per-call options:

- ``labels=[...]``: zero-shot classification — the image against each label prompt, softmax over
  ``logit_scale · cos``: ``{label, probability, top}`` as a classifier answers;
- ``labels=[...], templates=[...]``: the same with prompt ensembling (Radford et al., 2021, §3.1.4): each label is
  put into every template ("a {}", "a white {}"), and a label's text embedding is the normalised mean of its
  prompts' embeddings;
- ``query="..."``: the posted images ranked against one text: ``{score, rank}`` per image (rank 1 = best);
- neither: the image's normalised embedding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import register
from modelforge.data.caption_pixels import caption_pixels
from modelforge.data.caption_text import encode_for_encoder
from modelforge.data.captions import CaptionedImages, read_rgb, resize_rgb
from modelforge.data.padding import pad_rows
from modelforge.data.text_encoding import (
    TokenizerArtifact,
    TokenizerConfig,
    build_tokenizer,
    minilm_dir,
    pad_id_of,
)
from modelforge.models.clip import contrastive_loss
from modelforge.models.layers.masks import length_mask
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import across_ranks, ranked_labels
from modelforge.tasks.multimodal import retrieval_data
from modelforge.tasks.multimodal.caption_files_config import CaptionFilesConfig
from modelforge.tasks.multimodal.retrieval_data import RetrievalSet, collate_pairs
from modelforge.tasks.multimodal.retrieval_metrics import recall_at_k

MAX_PROMPTS = 64  # label prompts per zero-shot call
MAX_TEMPLATES = 16  # prompt templates per zero-shot call (each label is encoded once per template)


class RetrievalDataConfig(CaptionFilesConfig):
    limit: Optional[int] = Field(None, ge=1, description="use only the first N images of every split (quick runs)")
    source: Literal["scenes", "files"] = Field("scenes", description="generated scenes-captions, or your files")
    scenes_train: int = Field(3000, ge=1, description="scenes: generated training images")
    scenes_val: int = Field(300, ge=1, description="scenes: generated validation images (seen pairings)")
    scenes_test: int = Field(300, ge=1, description="scenes: generated test images (unseen colour–kind pairings)")
    scenes_seed: int = Field(0, description="scenes: generator seed")
    scenes_single_share: float = Field(
        0.0, ge=0, lt=1, description="scenes: share of train/val scenes holding one object alone, captioned 'a white "
        "3' / 'a 3' (what zero-shot label prompts say); the test split never holds any")
    image_size: int = Field(64, ge=16, le=512, description="square side the images are resized to")
    max_captions: int = Field(5, ge=1, le=64, description="captions kept per image (the first N)")
    tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(kind="pretrained", path="minilm"))
    max_length: int = Field(32, ge=4, le=512, description="tokens per caption, special tokens included")
    init_text_encoder: Optional[str] = Field(
        None, description="start the text tower from a Hugging Face BERT folder or 'minilm' (all-MiniLM-L6-v2)")
    text_tower: Literal["train", "frozen"] = Field(
        "train", description="frozen: the pretrained text tower keeps its weights and each caption's pooled features "
        "are computed once before training; the projection above them trains (a fraction of the cost on a CPU)")


@register("task", "image_text_retrieval")
class ImageTextRetrieval(TokenizerArtifact, Task):
    """Match images and captions (CLIP-style dual encoder); recall@K both ways, zero-shot labels, text search."""

    name = "image_text_retrieval"
    DataConfig = RetrievalDataConfig
    input_kind = "image"
    capabilities = frozenset({"search"})
    call_options = frozenset({"labels", "query", "templates"})
    # what a client may give in the predict request's query string (serve/inputs.py): repeated texts or one text
    query_options = {"labels": "texts", "query": "text", "templates": "texts"}
    validation_metric = ("val_mean_recall", "maximize")
    evaluation_gathers_ranks = True  # evaluate gathers its embeddings once (across_ranks): a rank may take a share

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._tokenizer = None

    # ---- data -------------------------------------------------------------------------------------------------
    def datasets(self) -> Splits:
        cfg = self.data_cfg
        self._check_text_tower()
        parts, summary = retrieval_data.load_splits(cfg)
        texts = [caption for caps in parts["train"].captions for caption in caps[: cfg.max_captions]]
        self._tokenizer = build_tokenizer(cfg.tokenizer, texts)
        self.state_dict_ = {"image_size": cfg.image_size, "max_length": cfg.max_length,
                            "vocab_size": self._tokenizer.get_vocab_size(), "pad_id": pad_id_of(self._tokenizer),
                            "max_captions": cfg.max_captions, "tokenizer": "tokenizer.json"}
        tensors = {name: self._tensors(data) for name, data in parts.items()}
        summary.update({f"{name}_size": len(data) for name, data in parts.items()},
                       train_captions=parts["train"].num_captions, vocab_size=self.state_dict_["vocab_size"])
        return Splits(tensors["train"], tensors.get("val"), tensors.get("test"), summary)

    def collate(self, items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        return collate_pairs(items)

    def _check_text_tower(self) -> None:
        cfg = self.data_cfg
        if cfg.text_tower == "frozen" and not cfg.init_text_encoder:
            raise ConfigError("data.text_tower=frozen keeps a pretrained text tower: set data.init_text_encoder "
                              "(e.g. minilm)")
        if cfg.text_tower == "frozen" and self.recipe.adapter is not None:
            raise ConfigError("adapter: adapts the text tower, which data.text_tower=frozen never trains; drop one")

    def _tensors(self, data: CaptionedImages) -> RetrievalSet:
        """(uint8 images (N, 3, S, S) — read per item from the user's files —, caption ids (N, K, L), caption
        lengths (N, K), caption counts (N,)[, the frozen tower's pooled features (N, K, D)]); an image with fewer
        than K captions repeats its first one in the unused slots (never drawn: counts say so)."""
        k = self.state_dict_["max_captions"]
        kept = [caps[:k] for caps in data.captions]
        flat = [caps[i] if i < len(caps) else caps[0] for caps in kept for i in range(k)]
        ids, lengths = encode_for_encoder(self.tokenizer, flat, self.state_dict_["max_length"])
        counts = torch.tensor([len(caps) for caps in kept])
        tensors = [ids.view(len(data), k, -1), lengths.view(len(data), k), counts]
        if self.data_cfg.text_tower == "frozen":
            tensors.append(self._frozen_features(ids, lengths).view(len(data), k, -1))
        return RetrievalSet(caption_pixels(data, self.state_dict_["image_size"]), *tensors)

    @torch.no_grad()
    def _frozen_features(self, ids: torch.Tensor, lengths: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """The pretrained text tower's pooled features of every caption (each distinct one computed once)."""
        from modelforge.models.hf import load_hf_bert
        from modelforge.models.transformer import mean_pool

        if getattr(self, "_tower", None) is None:
            source = self.data_cfg.init_text_encoder
            self._tower = load_hf_bert(minilm_dir() if source == "minilm" else Path(source).expanduser()).eval()
        rows = [tuple(row[: int(n)].tolist()) for row, n in zip(ids, lengths)]
        distinct = sorted(set(rows))
        found: dict[tuple[int, ...], torch.Tensor] = {}
        for start in range(0, len(distinct), chunk):
            part = distinct[start : start + chunk]
            part_ids, part_lengths = pad_rows(part, self.state_dict_["pad_id"])
            mask = length_mask(part_lengths, part_ids.shape[1]).long()
            found.update(zip(part, mean_pool(self._tower(part_ids, mask), mask)))
        return torch.stack([found[row] for row in rows])

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.state_dict_["vocab_size"], "image_size": self.state_dict_["image_size"]}

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if self.data_cfg.init_text_encoder:
            self._init_text_tower(model, self.data_cfg.init_text_encoder)
        if self.data_cfg.text_tower == "frozen":
            model.text.requires_grad_(False)
        return model

    def _init_text_tower(self, model: nn.Module, source: str) -> None:
        from modelforge.models.hf import load_hf_bert

        tower = getattr(model, "text", None)
        if tower is None or not hasattr(tower, "embeddings"):
            raise ConfigError(f"data.init_text_encoder needs a dual encoder with a BERT text tower, not "
                              f"{self.recipe.model.name}")
        folder = minilm_dir() if source == "minilm" else Path(source).expanduser()
        weights = load_hf_bert(folder).state_dict()
        target = tower.state_dict()
        misfit = [k for k in target if k not in weights or weights[k].shape != target[k].shape]
        if misfit:
            raise ConfigError(f"{folder}: the checkpoint does not fit the text tower ({misfit[:2]}); set model.dim/"
                              "num_layers/num_heads/mlp_hidden/max_positions to the checkpoint's config.json")
        tower.load_state_dict({k: weights[k] for k in target})

    # ---- training and evaluation ------------------------------------------------------------------------------
    @staticmethod
    def _pixels(images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255

    @staticmethod
    def _text_inputs(ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        longest = int(lengths.max())
        return ids[:, :longest], length_mask(lengths, longest).long()

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        images, ids, lengths, counts = batch[:4]
        rows = torch.arange(len(counts), device=counts.device)
        pick = (torch.rand(len(counts)).to(counts.device) * counts).long()  # one of each image's captions
        core = getattr(model, "module", model)
        if len(batch) == 5:  # a frozen text tower: its pooled features were computed once
            logits = core.scale() * core.encode_image(self._pixels(images)) @ core.project_text(batch[4][rows, pick]).T
        else:
            logits = model(self._pixels(images), *self._text_inputs(ids[rows, pick], lengths[rows, pick]))
        return StepOutput(contrastive_loss(logits), {"temperature": float(1 / core.scale().detach())})

    @torch.no_grad()
    def embed(self, model: nn.Module, loader: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """Image embeddings, the embeddings of every caption, each caption's image index, and the mean contrastive
        loss of the batches' first captions."""
        return _embedded(*self._embedding_rows(model, loader))

    def _embedding_rows(self, model: nn.Module, loader: Any) -> tuple[list, list, np.ndarray, np.ndarray]:
        """Per batch, its image and caption embeddings (tensors); per image, how many captions it has; per batch, the
        contrastive loss of its first captions: what ``_embedded`` assembles."""
        core = getattr(model, "module", model)
        image_emb, text_emb, captions, losses = [], [], [], []
        for images, ids, lengths, counts, *features in loader:
            img = core.encode_image(self._pixels(images))
            keep = torch.arange(ids.shape[1], device=counts.device)[None] < counts[:, None]  # (B, K) real captions
            if features:  # a frozen text tower: its pooled features were computed once
                txt, first = core.project_text(features[0][keep]), core.project_text(features[0][:, 0])
            else:
                txt = core.encode_text(*self._text_inputs(ids[keep], lengths[keep]))
                first = core.encode_text(*self._text_inputs(ids[:, 0], lengths[:, 0]))
            losses.append(float(contrastive_loss(core.scale() * img @ first.T)))
            image_emb.append(img)
            text_emb.append(txt)
            captions.append(keep.sum(1).cpu().numpy())
        per_image = np.concatenate(captions) if captions else np.empty(0, dtype=np.int64)
        return image_emb, text_emb, per_image, np.array(losses, dtype=np.float64)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        # recall@k ranks every caption against every image of the split: the embeddings are gathered first
        image_emb, text_emb, captions, losses = self._embedding_rows(model, loader)
        rows = across_ranks([e.cpu() for e in image_emb], [e.cpu() for e in text_emb], captions, losses)
        image_emb, text_emb, text_image, loss = _embedded(*rows)
        return {"loss": loss, **recall_at_k(image_emb, text_emb, text_image)}

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        from modelforge.tasks.multimodal.retrieval_report import retrieval_samples

        return retrieval_samples(self, model, splits, count)

    # ---- serving ----------------------------------------------------------------------------------------------
    def _image(self, item: Any) -> np.ndarray:
        size = self.state_dict_["image_size"]
        if isinstance(item, np.ndarray):
            return resize_rgb(item, size)
        if isinstance(item, (bytes, bytearray)):
            return read_rgb(bytes(item), size)
        path = Path(str(item))
        if not path.is_file():
            raise DataError(f"{str(item)[:200]}: no such image file")
        return read_rgb(path, size)

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self._image(item).transpose(2, 0, 1) for item in inputs]))

    def encode_texts(self, model: nn.Module, texts: list[str]) -> torch.Tensor:
        """Normalised text embeddings of ``texts`` (label prompts, a query)."""
        ids, lengths = encode_for_encoder(self.tokenizer, texts, self.state_dict_["max_length"])
        device = next(model.parameters()).device
        return model.encode_text(*self._text_inputs(ids.to(device), lengths.to(device)))

    def label_embeddings(self, model: nn.Module, labels: list[str], templates: list[str] | None) -> torch.Tensor:
        """Normalised embeddings of the label prompts; with ``templates``, each label's ensemble over them."""
        if not templates:
            return self.encode_texts(model, labels)
        prompts = [template.replace("{}", label) for template in templates for label in labels]
        return ensemble_prompts(self.encode_texts(model, prompts).view(len(templates), len(labels), -1))

    def forward(self, model: nn.Module, batch: torch.Tensor, labels: list[str] | None = None,
                query: str | None = None, templates: list[str] | None = None) -> dict[str, Any]:
        texts = check_texts(labels, query)
        check_templates(templates, labels)
        image_emb = model.encode_image(self._pixels(batch.to(next(model.parameters()).device)))
        if texts is None:
            return {"embedding": image_emb}
        if labels:
            sims = image_emb @ self.label_embeddings(model, texts, templates).T
        else:
            sims = image_emb @ self.encode_texts(model, texts).T
        return {"labels": labels, "logits": model.scale() * sims} if labels else {"query": query, "sims": sims[:, 0]}

    def postprocess(self, outputs: dict[str, Any]) -> list[Any]:
        if "embedding" in outputs:
            return [{"embedding": [round(v, 6) for v in row]} for row in outputs["embedding"].tolist()]
        if "labels" in outputs:
            return ranked_labels(outputs["logits"].cpu(), outputs["labels"], top_k=len(outputs["labels"]))
        sims = outputs["sims"].cpu()
        ranks = torch.empty_like(sims, dtype=torch.long)
        ranks[sims.argsort(descending=True, stable=True)] = torch.arange(1, len(sims) + 1)
        return [{"score": round(float(s), 6), "rank": int(r)} for s, r in zip(sims, ranks)]

    def input_spec(self) -> dict[str, Any]:
        return {"kind": "image", "image_size": self.state_dict_.get("image_size"),
                "options": {"labels": "label prompts (repeat the key): zero-shot probabilities per image",
                            "templates": "with labels: prompt templates holding {} (repeat the key), e.g. 'a {}'; "
                                         "each label scores by the mean of its prompts' embeddings",
                            "query": "one text: the posted images ranked by similarity to it"}}

    # ---- export -----------------------------------------------------------------------------------------------
    def export_graphs(self, model: nn.Module):
        from modelforge.tasks.multimodal.retrieval_export import retrieval_graphs

        return retrieval_graphs(model, self.state_dict_)


def _embedded(image_emb: list[torch.Tensor], text_emb: list[torch.Tensor], captions: np.ndarray,
              losses: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``embed``'s answer from its rows: the embeddings concatenated, each caption's image index (every image's
    captions follow one another, in image order) and the mean of the batches' losses."""
    text_image = torch.repeat_interleave(torch.arange(len(captions)), torch.from_numpy(captions))
    return torch.cat(image_emb), torch.cat(text_emb), text_image, float(np.mean(losses))


def check_texts(labels: list[str] | None, query: str | None) -> list[str] | None:
    """The texts a prediction compares images with: the label prompts or the query (never both); None: neither."""
    if labels is not None and query is not None:
        raise ConfigError("give label prompts (zero-shot) or a text query (ranking), not both")
    if labels is not None:
        if isinstance(labels, str) or not labels or len(labels) > MAX_PROMPTS:
            raise ConfigError(f"labels must be a list of 1 to {MAX_PROMPTS} label prompts")
        if any(not isinstance(label, str) or not label.strip() for label in labels):
            raise ConfigError("every label prompt must be a non-empty text")
        if len(set(labels)) != len(labels):
            raise ConfigError("label prompts must differ from one another")
        return list(labels)
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("the text query must be a non-empty text")
        return [query]
    return None


def check_templates(templates: list[str] | None, labels: list[str] | None) -> None:
    """Prompt templates come with label prompts, 1 to MAX_TEMPLATES distinct texts, each holding one ``{}``."""
    if templates is None:
        return
    if labels is None:
        raise ConfigError("prompt templates fill in label prompts: give labels with them")
    if isinstance(templates, str) or not templates or len(templates) > MAX_TEMPLATES:
        raise ConfigError(f"templates must be a list of 1 to {MAX_TEMPLATES} prompt templates")
    if any(not isinstance(t, str) or t.count("{}") != 1 for t in templates):
        raise ConfigError("every prompt template must hold {} once, where the label goes (e.g. 'a photo of a {}')")
    if len(set(templates)) != len(templates):
        raise ConfigError("prompt templates must differ from one another")


def ensemble_prompts(embeddings: torch.Tensor) -> torch.Tensor:
    """(templates, labels, D) normalised prompt embeddings → (labels, D): each label's mean, normalised again."""
    return torch.nn.functional.normalize(embeddings.mean(dim=0), dim=-1)
