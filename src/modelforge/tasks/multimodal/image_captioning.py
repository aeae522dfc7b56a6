"""Image captioning: an image in, a sentence describing it out.

Data: the generated ``scenes-captions`` set (CLEVR-style scenes of coloured digits and shapes whose test split names
colour–kind pairs never drawn in training, so a model must compose words rather than recall them), or the user's
``files`` (a captions CSV/TSV/JSONL beside the images, or COCO ``captions_*.json``; with ``train/ val/ test/``
subfolders, or one set split by a hash of each image's name). Readers and the caption vocabulary live in
``data/captions.py``, ``data/formats/image_captions.py`` and ``data/caption_text.py``. The user's images are
decoded per item from disk (``data/caption_pixels.py``; DataLoader workers by default), the generated scenes are
held in memory.

Model: ``image_captioner`` (``models/captioner.py``), trained with teacher forcing: the cross-entropy of each caption
word given the image and the words before it; a training batch of images decodes every caption of each image
against one encoding of it (``train.batch_size`` counts images). Decoding is the seq2seq family's search
(``tasks/beam_search.py``): greedy during validation, the configured beam search for test, ``predict``, serving
and ``modelforge caption``.
Metrics: BLEU-4 (sacreBLEU) and CIDEr (pycocoevalcap) against every reference caption of an image
(``captioning_metrics.py``), next to a nearest-neighbour baseline that returns the caption of the training image
closest in pixels (``tasks/baselines.py``, ``baseline = "nearest_caption"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.config import StrictConfig
from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import register
from modelforge.data.caption_pixels import caption_pixels
from modelforge.data.text_encoding import TOKENIZER_FILE, TokenizerArtifact
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.beam_search import CachedStepDecoder, SearchSettings, next_token_loss, search
from modelforge.tasks.export_graphs import GraphSet
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.multimodal.caption_files_config import CaptionFilesConfig
from modelforge.tasks.multimodal.captioning_data import caption_dataset, collate_captions, training_stats
from modelforge.tasks.multimodal.captioning_metrics import caption_scores


class CaptionDecodingConfig(StrictConfig):
    beam_size: int = Field(3, ge=1, description="beams kept per image (1 = greedy) for test, predict and serving")
    length_penalty: float = Field(0.6, ge=0, description="GNMT alpha: 0 ranks by total log-probability")
    compare_greedy: bool = Field(True, description="test: also report greedy-decoding metrics (suffix _greedy)")


class CaptioningDataConfig(CaptionFilesConfig):
    source: Literal["scenes-captions", "files"] = "scenes-captions"
    num_train: int = Field(3000, ge=1, description="scenes-captions: generated training scenes")
    num_val: int = Field(300, ge=1, description="scenes-captions: generated validation scenes")
    num_test: int = Field(300, ge=1, description="scenes-captions: generated test scenes (unseen pairings)")
    scene_seed: int = Field(0, description="scenes-captions: seed of the generator")
    image_size: int = Field(64, ge=8, description="images are resized to image_size × image_size")
    max_caption_tokens: int = Field(24, ge=3, description="caption tokens kept, [BOS]/[EOS] included")
    min_word_frequency: int = Field(1, ge=1, description="training-caption words seen fewer times become [UNK]")
    val_limit: Optional[int] = Field(200, ge=1, description="evaluate on N evenly spaced validation images")
    test_limit: Optional[int] = Field(None, ge=1, description="evaluate on N evenly spaced test images (None: all)")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    decoding: CaptionDecodingConfig = Field(default_factory=CaptionDecodingConfig)


def _spread(count: int, keep: int | None) -> list[int]:
    if keep is None or count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(keep - 1, 1)) for i in range(keep)})


@register("task", "image_captioning")
class ImageCaptioning(TokenizerArtifact, Task):
    """Describe an image in a sentence: CNN encoder + Transformer decoder; BLEU-4/CIDEr vs nearest-neighbour."""

    name = "image_captioning"
    DataConfig = CaptioningDataConfig
    input_kind = "image"
    capabilities = frozenset({"caption"})
    call_options = frozenset({"beam_size", "length_penalty"})
    baseline = "nearest_caption"
    validation_metric = ("val_cider", "maximize")
    evaluation_gathers_ranks = True  # evaluate gathers its rows once (across_ranks): a rank may take a share

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._tokenizer = None

    # ---- data -------------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        """{split: CaptionedImages}; the user's single set is cut into train/val/test by image-name hash."""
        cfg = self.data_cfg
        if cfg.source == "scenes-captions":
            from modelforge.data.builtin.caption_scenes import caption_scenes

            return caption_scenes(num_train=cfg.num_train, num_val=cfg.num_val, num_test=cfg.num_test,
                                  image_size=cfg.image_size, seed=cfg.scene_seed)
        if not cfg.path:
            raise ConfigError("data.source=files needs data.path=captions.csv|.jsonl|captions_*.json or a folder")
        from modelforge.data.captions import hold_out_missing
        from modelforge.data.formats.image_captions import read_caption_splits

        parts = read_caption_splits(cfg.path, images_dir=cfg.images_dir, on_error=cfg.on_error,
                                    image_column=cfg.image_column, caption_column=cfg.caption_column)
        self._read_splits = list(parts)  # what the found line says each split came from
        if "all" in parts:
            parts = {"train": parts.pop("all"), **parts}
        # each split the files do not bring (a train/ + val/ folder too) is a share of the training images
        shares = {name: getattr(cfg, f"{name}_fraction") for name in ("val", "test")}
        parts = hold_out_missing(parts, shares, cfg.split_seed, Path(cfg.path).name)
        return {name: part for name, part in parts.items() if len(part)}

    def _found(self, parts: dict[str, Any]) -> str:
        """The found line of a run on the user's files, in the words every task uses (data/found.py)."""
        from modelforge.data.found import split_folders_found

        sizes = {split: len(parts[split]) for split in ("train", "val", "test") if split in parts}
        what = (f"{sum(p.num_captions for p in parts.values())} captions of {sum(sizes.values())} images in "
                f"{Path(self.data_cfg.path).name}")
        return split_folders_found(what, self.data_cfg.path, self._read_splits, sizes)

    def datasets(self) -> Splits:
        from modelforge.data.caption_text import build_caption_vocabulary

        cfg = self.data_cfg
        parts = self._load()
        if "train" not in parts:
            raise DataError("no training images with captions; check the data source")
        summary: dict[str, Any] = {}
        if cfg.source == "files":
            summary["found"] = self._found(parts)
        if cfg.limit:  # a quick run: an even spread of every split
            parts = {name: part.subset(_spread(len(part), cfg.limit)) for name, part in parts.items()}
        for name, keep in (("val", cfg.val_limit), ("test", cfg.test_limit)):
            if name in parts and keep:
                summary[f"{name}_images_total"] = len(parts[name])
                parts[name] = parts[name].subset(_spread(len(parts[name]), keep))
        self._tokenizer = build_caption_vocabulary(parts["train"].all_captions(), cfg.min_word_frequency)
        stores = {name: caption_pixels(p, cfg.image_size) for name, p in parts.items()}  # files: decoded per item
        mean, std = training_stats(stores["train"])
        self._set_state(mean, std)
        datasets = {name: caption_dataset(name, stores[name], p.captions, self.encode_captions, name == "train")
                    for name, p in parts.items()}
        for name, p in parts.items():
            summary[f"{name}_images"] = len(p)
            summary[f"{name}_captions"] = p.num_captions
            summary[f"{name}_origin"] = p.origin
        summary["vocab_size"] = self.state_dict_["vocab_size"]
        return Splits(datasets["train"], datasets.get("val"), datasets.get("test"), summary)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_captions(items)

    def _set_state(self, mean: list[float], std: list[float]) -> None:
        from modelforge.data.caption_text import BOS, EOS
        from modelforge.data.text_encoding import PAD, UNK

        tok = self.tokenizer
        self.state_dict_ = {
            "tokenizer": TOKENIZER_FILE, "vocab_size": tok.get_vocab_size(),
            "pad_id": tok.token_to_id(PAD), "unk_id": tok.token_to_id(UNK),
            "bos_id": tok.token_to_id(BOS), "eos_id": tok.token_to_id(EOS),
            "image_size": self.data_cfg.image_size, "mean": mean, "std": std,
            "max_caption_tokens": self.data_cfg.max_caption_tokens,
        }

    def encode_captions(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from modelforge.data.caption_text import encode_captions

        return encode_captions(self.tokenizer, texts, self.state_dict_["max_caption_tokens"])

    def decode_captions(self, rows: list[list[int]]) -> list[str]:
        from modelforge.data.caption_text import decode_caption

        return [decode_caption(self.tokenizer, row) for row in rows]

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        state = self.state_dict_
        return {"vocab_size": state["vocab_size"], "image_size": state["image_size"], "in_channels": 3,
                "max_positions": state["max_caption_tokens"]}

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) → float, standardised with the training split's per-channel statistics."""
        mean = torch.tensor(self.state_dict_["mean"], device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.state_dict_["std"], device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std

    def _teacher_forced(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(self.normalise(batch["images"]), batch["tgt"][:, :-1], batch["owner"])

    # ---- training and evaluation --------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> StepOutput:
        return StepOutput(next_token_loss(self._teacher_forced(model, batch), batch["tgt"], self.state_dict_["pad_id"],
                                          self.data_cfg.label_smoothing))

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return len(batch["images"])

    def search_settings(self, beam_size: int | None = None, length_penalty: float | None = None) -> SearchSettings:
        dcfg, state = self.data_cfg.decoding, self.state_dict_
        return SearchSettings(bos_id=state["bos_id"], eos_id=state["eos_id"],
                              banned_ids=(state["pad_id"], state["unk_id"], state["bos_id"]),
                              beam_size=dcfg.beam_size if beam_size is None else beam_size,
                              length_penalty=dcfg.length_penalty if length_penalty is None else length_penalty)

    @torch.no_grad()
    def generate(self, model: nn.Module, images: torch.Tensor, settings: SearchSettings) -> list[str]:
        """Captions of uint8 images (B, 3, S, S): encode once, then search token by token with KV caches."""
        net = getattr(model, "module", model)
        was_training = net.training
        net.eval()
        try:
            limit = self.state_dict_["max_caption_tokens"] - 1  # BOS takes a position; EOS counts as generated
            decoder = CachedStepDecoder(net, net.encode(self.normalise(images)), None, limit)
            ids = search(decoder, len(images), settings, limit)
        finally:
            net.train(was_training)
        return self.decode_captions(ids)

    def caption_metrics(self, references: list[list[str]], outputs: list[str]) -> dict[str, float]:
        """BLEU-4 and CIDEr of ``outputs`` against each image's references (also scores the baseline)."""
        return caption_scores(references, outputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        nll, tokens, references, outputs, greedy_outputs = across_ranks(*self._evaluation_rows(model, loader))
        loss = summed_in_order(nll) / max(int(tokens.sum()), 1)
        metrics: dict[str, Any] = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        metrics.update(self.caption_metrics(references, outputs))
        if greedy_outputs:
            metrics.update({f"{k}_greedy": v for k, v in self.caption_metrics(references, greedy_outputs).items()})
        metrics["samples"] = [{"references": r, "output": o} for r, o in list(zip(references, outputs))[:5]]
        return metrics

    def _evaluation_rows(self, model: nn.Module, loader: Any) -> tuple[Any, ...]:
        """What ``evaluate`` reads from its batches: the summed loss and the caption tokens of each batch (arrays),
        then every image's references, its caption and (test with ``compare_greedy``) its greedy caption."""
        pad = self.state_dict_["pad_id"]
        settings, greedy = self.search_settings(), self.search_settings(beam_size=1)
        nll: list[float] = []
        tokens: list[int] = []
        references: list[list[str]] = []
        outputs: list[str] = []
        greedy_outputs: list[str] = []
        for batch in loader:
            targets = batch["tgt"][:, 1:]
            logits = self._teacher_forced(model, batch).float()
            nll.append(float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum",
                                             ignore_index=pad)))
            tokens.append(int((targets != pad).sum()))
            test = batch["split"] == "test"  # validation runs every epoch: greedy keeps it cheap
            outputs += self.generate(model, batch["images"], settings if test else greedy)
            if test and settings.beam_size > 1 and self.data_cfg.decoding.compare_greedy:
                greedy_outputs += self.generate(model, batch["images"], greedy)
            references += batch["references"]
        return (np.array(nll, dtype=np.float64), np.array(tokens, dtype=np.int64), references, outputs,
                greedy_outputs)

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        from modelforge.render.samples import held_out, spread, table

        name, dataset = held_out(splits)
        if dataset is None or count <= 0:
            return ReportSamples(note="no held-out split to show samples from")
        picks = spread(len(dataset.captions), count)
        images = dataset.pixels(picks)
        device = next(model.parameters()).device
        outputs = self.generate(model, images.to(device), self.search_settings())
        rows = [[f"#{i}", output, " | ".join(dataset.captions[i])] for i, output in zip(picks, outputs)]
        settings = self.search_settings()
        note = f"{name} images, beam {settings.beam_size}; the pictures in the order of the table"
        return ReportSamples(png=_caption_grid(images.numpy(), outputs), note=note,
                             html=table(["image", "model caption", "reference captions"], rows))

    # ---- serving ----------------------------------------------------------------------------------------------
    def preprocess(self, inputs: list[Any]) -> dict[str, Any]:
        """Image paths (command line), uploaded bytes (server) or uint8 arrays → uint8 (B, 3, S, S)."""
        from modelforge.data.captions import read_rgb, resize_rgb

        if not inputs:
            raise DataError(f"no inputs given; pass at least one image for {self.name}")
        size = self.state_dict_["image_size"]
        rows = []
        for i, item in enumerate(inputs, start=1):
            if isinstance(item, np.ndarray):
                rows.append(resize_rgb(item, size))
            elif isinstance(item, (bytes, bytearray)):
                rows.append(read_rgb(bytes(item), size))
            elif isinstance(item, (str, Path)):
                path = Path(item).expanduser()
                if not path.is_file():
                    raise DataError(f"input {i}: {path} is not an image file")
                rows.append(read_rgb(path, size))
            else:
                raise DataError(f"input {i} is a {type(item).__name__}; give an image file, its bytes or an array")
        return {"images": torch.from_numpy(np.stack([row.transpose(2, 0, 1) for row in rows]))}

    def forward(self, model: nn.Module, batch: dict[str, Any], beam_size: int | None = None,
                length_penalty: float | None = None) -> list[str]:
        """Captions; ``beam_size``/``length_penalty`` replace the recipe's decoding for this call."""
        device = next(model.parameters()).device
        return self.generate(model, batch["images"].to(device), self.search_settings(beam_size, length_penalty))

    def postprocess(self, outputs: list[str]) -> list[dict[str, Any]]:
        return [{"caption": text} for text in outputs]

    def input_spec(self) -> dict[str, Any]:
        return {"kind": self.input_kind, "image_size": self.state_dict_.get("image_size")}

    # ---- export -----------------------------------------------------------------------------------------------
    def export_graphs(self, model: nn.Module) -> GraphSet:
        """ONNX as an image-encoder graph and a decoder graph (the search runs outside; captioning_export.py)."""
        from modelforge.tasks.multimodal.captioning_export import captioning_graphs

        return captioning_graphs(self, model)


def _caption_grid(images: np.ndarray, captions: list[str], columns: int = 4) -> bytes:
    """The sample images with the model's caption under each (wrapped), as one PNG."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from modelforge.render.plots import to_png

    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(2.4 * columns, 2.9 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image.transpose(1, 2, 0))
        ax.set_title("\n".join(textwrap.wrap(caption or "(empty)", 26)), fontsize=8)
    return to_png(fig)
