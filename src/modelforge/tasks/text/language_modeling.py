"""Language modeling: next-token prediction on Shakespeare or the user's plain-text corpus, and text generation.

The corpus is cut contiguously: the first part trains, the next ``val_fraction`` validates, the last
``test_fraction`` tests, so no evaluated text was seen (or half-seen, through an overlapping window) in training.
The tokenizer (characters or byte-level BPE) is trained on the training part only (its first
``tokenizer.sample_chars`` characters). The corpus is streamed from disk and tokenized once into a memory-mapped token
file (``tasks/text/lm_corpus.py``, ``data/token_file.py``) that later runs reuse, so memory stays far below the
corpus size: batches read only the windows they take.

Training windows tile the training ids every ``block_size`` tokens; with ``random_offsets`` each window is shifted by
a random 0…block_size-1 tokens inside ``training_step``, drawn from the global torch RNG that checkpoints capture —
the random windows of nanoGPT, with the Trainer's exact resume. Evaluation uses fixed, non-overlapping windows
(evenly spaced, at most ``eval_windows`` of them) and reports loss, perplexity and bits per character.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from tokenizers import Tokenizer
from torch import nn
from torch.utils.data import Dataset

from modelforge.core.config import StrictConfig
from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import register
from modelforge.data.split_config import TestFraction
from modelforge.data.text_encoding import (
    PAD,
    TOKENIZER_FILE,
    UNK,
    TokenizerArtifact,
    TokenizerConfig,
)
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.text.generation import SamplingConfig, TextStreamer, generate_ids

_CHUNK = re.compile(r"[^\n]*(?:\n+|$)")  # lines with their newlines: the unit the corpus is encoded in


class LMTokenizerConfig(StrictConfig):
    kind: Literal["char", "bpe"] = Field("char", description="characters, or byte-level BPE trained on the corpus")
    vocab_size: int = Field(4096, ge=8, description="bpe: vocabulary size (char: an upper bound, rarely reached)")
    min_frequency: int = Field(1, ge=1, description="bpe: drop merges seen fewer times than this")
    lowercase: bool = Field(False, description="lower-case the corpus first")
    sample_chars: Optional[int] = Field(
        10_000_000, ge=1000, description="train the tokenizer on the first N characters of training text (None: all)"
    )

    def as_tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(**self.model_dump(exclude={"sample_chars"}))


class LMDataConfig(StrictConfig):
    source: Literal["shakespeare", "file"] = "shakespeare"
    path: Optional[str] = Field(
        None, description="file source: a .txt file or a folder of them, a Hugging Face dataset or WebDataset shards")
    format: Optional[Literal["text", "hf", "webdataset"]] = Field(
        None, description="file source: plain text, a local Hugging Face dataset or .tar shards (default: detected)")
    text_column: Optional[str] = Field(
        None, description="hf/webdataset: the column of text (default: 'text', or the only string column)")
    pattern: str = Field("*.txt", description="file source with a folder: which files to read")
    encoding: str = "utf-8"
    tokenizer: LMTokenizerConfig = Field(default_factory=LMTokenizerConfig)
    block_size: int = Field(256, ge=2, description="tokens of context per training window")
    # > 0, unlike the shared ValFraction: the validation windows come only from this contiguous part
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the corpus (after train) for validation")
    test_fraction: TestFraction = 0.0
    random_offsets: bool = Field(True, description="shift each training window by a random 0..block_size-1")
    eval_windows: Optional[int] = Field(
        256, ge=1, description="evaluate on at most N evenly spaced windows per split (None: all)"
    )
    # characters, not items as the shared Limit counts (hence its own bound)
    limit: Optional[int] = Field(None, ge=100, description="use only the first N characters of the corpus")


class TokenWindows(Dataset):
    """Windows of ``length`` ids starting every ``stride`` ids (optionally only the chosen ``starts``) of a token
    array — usually a memory-mapped token file split, read only where a batch takes its windows."""

    def __init__(self, ids: Any, length: int, stride: int, starts: torch.Tensor | None = None):
        if len(ids) < length:
            raise DataError(
                f"a split has {len(ids)} tokens, fewer than one window of {length}; use a larger corpus or fraction, "
                "or a smaller data.block_size"
            )
        self.ids = ids.numpy() if isinstance(ids, torch.Tensor) else ids
        self.length, self.stride = length, stride
        self.count = (len(ids) - length) // stride + 1  # starts 0, stride, …: computed, never materialised
        self._starts = None if starts is None else torch.as_tensor(starts, dtype=torch.long)
        self.offsets = np.arange(length)

    @property
    def starts(self) -> torch.Tensor:
        return self._starts if self._starts is not None else torch.arange(0, self.count * self.stride, self.stride)

    def __len__(self) -> int:
        return self.count if self._starts is None else len(self._starts)

    def _start_of(self, indices: torch.Tensor) -> np.ndarray:
        return (indices * self.stride if self._starts is None else self._starts[indices]).numpy()

    def __getitem__(self, index: int) -> torch.Tensor:
        start = int(self._start_of(torch.tensor([index]))[0])
        return torch.from_numpy(np.asarray(self.ids[start : start + self.length], dtype=np.int64))

    def get_batch(self, indices: Any) -> torch.Tensor:
        starts = self._start_of(torch.as_tensor(indices, dtype=torch.long).reshape(-1))
        return torch.from_numpy(np.asarray(self.ids[starts[:, None] + self.offsets], dtype=np.int64))


def _evenly_spaced(count: int, keep: int | None) -> torch.Tensor | None:
    if keep is None or count <= keep:
        return None
    return torch.linspace(0, count - 1, keep).round().long().unique()


def _prompt_and_rest(text: str, longest: int = 120) -> tuple[str, str]:
    """A held-out window cut for a report sample: the prompt starts at a line start when the first half has one and
    ends at a space (never mid-word), at most ``longest`` characters; the rest is the text that really follows."""
    first_line = text.find("\n", 0, len(text) // 2) + 1
    end = first_line + min((len(text) - first_line) // 2, longest)
    space = text.rfind(" ", first_line + 1, end + 1)
    end = space if space > first_line else end
    return text[first_line:end], text[end:]


@register("task", "language_modeling")
class LanguageModeling(TokenizerArtifact, Task):
    """Predict the next token of a text corpus (Shakespeare or your .txt files); generate continuations."""

    name = "language_modeling"
    capabilities = frozenset({"generate"})
    call_options = frozenset({"max_new_tokens_cap"})
    DataConfig = LMDataConfig
    input_kind = "text"
    evaluation_gathers_ranks = True  # evaluate gathers its per-batch sums once (across_ranks): a rank may take a share

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._tokenizer: Tokenizer | None = None

    # ---- data -------------------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """The corpus encoding: line by line, ids concatenated (what the token file holds for the same text)."""
        chunks = [c for c in _CHUNK.findall(text) if c]
        return [i for enc in self.tokenizer.encode_batch(chunks) for i in enc.ids]

    def _corpus(self) -> Any:
        """The corpus's memory-mapped token file (built once, then reused) and the tokenizer it was encoded with."""
        from modelforge.models.hf_auto import checkpoint_tokenizer
        from modelforge.tasks.text.lm_corpus import prepare_corpus

        # an hf checkpoint brings its own tokenizer (a loaded hf run: the artifact's copy of it)
        loaded_hf = self.artifact_dir is not None and self.recipe.model.name == "hf"
        pretrained = self.tokenizer if loaded_hf else checkpoint_tokenizer(self.recipe.model)
        corpus = prepare_corpus(self.data_cfg, pretrained)
        self._tokenizer = corpus.tokenizer
        if corpus.used:
            self.record_used(**corpus.used)
        return corpus

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        corpus = self._corpus()
        ids = {split: corpus.tokens.split(split) for split in ("train", "val", "test")
               if split in corpus.tokens.meta["splits"]}
        window = cfg.block_size + 1  # inputs and their next-token targets
        extra = cfg.block_size if cfg.random_offsets else 0
        train = TokenWindows(ids["train"], window + extra, cfg.block_size)
        held = {}
        for split in ("val", "test"):
            if split in ids:
                full = TokenWindows(ids[split], window, cfg.block_size)
                keep = _evenly_spaced(len(full), cfg.eval_windows)
                held[split] = full if keep is None else TokenWindows(ids[split], window, cfg.block_size,
                                                                     full.starts[keep])
        self.state_dict_ = {
            "block_size": cfg.block_size,
            "vocab_size": self._tokenizer.get_vocab_size(),
            "tokenizer": TOKENIZER_FILE,
            # characters per token of the held-out text, to turn a per-token loss into bits per character
            "chars_per_token": sum(corpus.characters(k) for k in held) / max(sum(len(ids[k]) for k in held), 1),
        }
        n = sum(corpus.characters(k) for k in ids)
        summary = {f"{k}_tokens": len(v) for k, v in ids.items()}
        summary.update({f"{k}_windows": len(v) for k, v in {"train": train, **held}.items()})
        summary.update(vocab_size=self._tokenizer.get_vocab_size(), characters=n, token_file=str(corpus.tokens.path))
        if cfg.source == "file":
            from modelforge.data.found import files_found

            name = Path(cfg.path).name
            own = {split: f"{name} ({split})" for split in corpus.own_splits if split != "train"}
            summary["found"] = files_found(
                cfg.path, {k: len(v) for k, v in ids.items()}, name, own, how=", from its end",
                detail=f"{n} characters, vocabulary {summary['vocab_size']}; split sizes in tokens")
        return Splits(train=train, val=held.get("val"), test=held.get("test"), summary=summary)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.state_dict_["vocab_size"], "max_positions": self.state_dict_["block_size"]}

    def example_inputs(self, batch_size: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
        """Token ids for the exported network: the whole-sequence forward (no KV cache) → logits per position;
        ``length`` is capped at the block size, the model's last learned position."""
        vocab, length = self.state_dict_["vocab_size"], min(length, self.state_dict_["block_size"])
        generator = torch.Generator().manual_seed(length)
        return {"input_ids": torch.randint(0, vocab, (batch_size, length), generator=generator)}

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input_ids": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"}}

    # ---- training ---------------------------------------------------------------------------------------------
    def _shifted(self, windows: torch.Tensor) -> torch.Tensor:
        """Training windows of block_size + 1 tokens, each starting at a random offset inside its tile."""
        block = self.data_cfg.block_size
        if windows.shape[1] == block + 1:
            return windows
        offsets = torch.randint(0, windows.shape[1] - block, (windows.shape[0], 1))  # global RNG: resumable
        index = offsets.to(windows.device) + torch.arange(block + 1, device=windows.device)
        return windows.gather(1, index)

    @staticmethod
    def _loss(model: nn.Module, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = model(windows[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten(), reduction=reduction)

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        return StepOutput(self._loss(model, self._shifted(batch)))

    def batch_size_of(self, batch: Any) -> int:
        return len(batch)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        sums, counts = [], []  # per batch: summed next-token loss, predicted tokens
        for windows in loader:
            sums.append(float(self._loss(model, windows, reduction="sum")))
            counts.append(windows[:, 1:].numel())
        sums, counts = across_ranks(np.array(sums, dtype=np.float64), np.array(counts, dtype=np.int64))
        loss = summed_in_order(sums) / max(int(counts.sum()), 1)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        ratio = self.state_dict_.get("chars_per_token")
        if ratio:
            metrics["bits_per_char"] = loss / math.log(2) / ratio
        return metrics

    # ---- generation and serving ---------------------------------------------------------------------------------
    def encode_prompt(self, prompt: Any, position: int = 1) -> list[int]:
        if not isinstance(prompt, str):
            raise DataError(f"input {position} is a {type(prompt).__name__}; give a text prompt to continue")
        if not prompt.strip():
            raise DataError(f"input {position} is an empty prompt; give some text to continue (e.g. 'ROMEO:')")
        ids = self.tokenizer.encode(prompt).ids
        if not ids:
            raise DataError(f"input {position}: nothing of the prompt {prompt[:40]!r} is in the model's vocabulary")
        return ids

    def sampling(self, max_new_tokens_cap: int | None = None) -> SamplingConfig:
        """Generation settings for ``predict``: the recipe's ``serve:`` section over the defaults, with at most
        ``max_new_tokens_cap`` new tokens (the server's cap) when given."""
        serve = dict(self.recipe.serve or {})
        known = set(SamplingConfig.__dataclass_fields__)
        unknown = sorted(set(serve) - known)
        if unknown:
            raise ConfigError(f"serve: unknown keys {unknown} for language_modeling; valid: {', '.join(sorted(known))}")
        cfg = SamplingConfig(**serve)
        limit = max_new_tokens_cap
        return cfg if limit is None or cfg.max_new_tokens <= limit else replace(cfg, max_new_tokens=limit)

    def generate(self, model: nn.Module, prompt: str, cfg: SamplingConfig, on_text: Any = None) -> str:
        """The continuation of ``prompt`` as text; ``on_text`` receives it piece by piece as it is generated."""
        ids = self.encode_prompt(prompt)
        on_token = TextStreamer(self.decode, on_text) if on_text is not None else None
        specials = [i for i in (self.tokenizer.token_to_id(t) for t in (PAD, UNK)) if i is not None]
        return self.decode(generate_ids(model, ids, cfg, on_token=on_token, banned_ids=specials))

    # ---- report -----------------------------------------------------------------------------------------------
    REPORT_PROMPTS, REPORT_NEW_TOKENS = 3, 200  # generation is the costly part of a report: keep it short

    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
        """Continuations of prompts cut from held-out text (seed 0, the recipe's ``serve:`` sampling), beside the
        text that really follows."""
        from modelforge.render import samples

        split, dataset = samples.held_out(splits)
        if dataset is None:
            return ReportSamples(note="the recipe has no validation or test text")
        base = self.sampling()
        cfg = replace(base, max_new_tokens=min(base.max_new_tokens, self.REPORT_NEW_TOKENS), seed=0)
        rows = []
        for index in samples.spread(len(dataset), min(count, self.REPORT_PROMPTS)):
            prompt, actual = _prompt_and_rest(self.decode(dataset[index].tolist()))
            if prompt.strip():
                rows.append((prompt, self.generate(model, prompt, cfg), actual))
        if not rows:
            return ReportSamples(note=f"the {split} text gave no usable prompt")
        sampling = f"temperature {cfg.temperature}, top_k {cfg.top_k}, top_p {cfg.top_p}, seed {cfg.seed}"
        return ReportSamples(
            html=samples.table(["prompt", "generated continuation", "actual continuation"], rows),
            note=f"prompts cut from the {split} split; up to {cfg.max_new_tokens} new tokens, {sampling}",
        )

    def preprocess(self, inputs: list[Any]) -> list[str]:
        if not inputs:
            raise DataError("no inputs given; pass at least one prompt")
        for i, item in enumerate(inputs):
            self.encode_prompt(item, i + 1)  # fail on a bad prompt before generating for any
        return list(inputs)

    def forward(self, model: nn.Module, batch: list[str], max_new_tokens_cap: int | None = None
                ) -> list[tuple[str, str]]:
        cfg = self.sampling(max_new_tokens_cap)
        return [(prompt, self.generate(model, prompt, cfg)) for prompt in batch]

    def postprocess(self, outputs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [{"continuation": text, "text": prompt + text} for prompt, text in outputs]
