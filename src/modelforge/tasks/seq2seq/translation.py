"""Translation: source sentence → target sentence with an encoder–decoder (GRU + attention, or a Transformer).

Data: the English–Spanish Bible (``bible-en-es``; whole books are held out, so test verses come from books the model
never saw) or the user's parallel text (``parallel``: a TSV of ``source<TAB>target``, or line-aligned files
``PATH.SRC`` / ``PATH.TGT`` with ``source_lang``/``target_lang``). Byte-level BPE is trained on the training pairs
with HF ``tokenizers``: one vocabulary for both languages (``tokenizer.shared``, which lets a Transformer share one
embedding table), or one per side. Targets are ``<bos> … <eos>``; sources and targets are truncated to
``max_source_tokens``/``max_target_tokens``, and ``max_train_tokens`` may drop long training pairs (a speed knob).

Each split is a ``PairDataset`` (``pair_rows.py``) whose ids and raw texts come from a memory-mapped row token file,
built once and reused by later runs; its batches are dicts: id tensors trimmed to the batch's longest row, plus the
raw source and reference texts (read per batch), which the metrics use (never detokenised ids). Evaluation reports the
token-level loss of the references and metrics of decoded outputs: sacreBLEU and chrF (the ``sacrebleu`` library)
here, ROUGE in the summarization subclass. Validation decodes greedily (cheap, once per epoch); test, ``predict`` and
``modelforge translate`` use the configured decoding (beam size, length penalty). ``val_limit``/``test_limit``
evaluate an evenly spaced subset of a split, to keep decoding time bounded on a CPU.

With ``model.name=hf`` (a T5/BART/Marian checkpoint) no BPE is trained: ``checkpoint_text.py`` supplies the
checkpoint's tokenizer and transformers' ``generate`` replaces the toolkit's search; everything else is shared.
"""

from __future__ import annotations

import html
import inspect
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.config import StrictConfig
from modelforge.core.errors import ArtifactError, ConfigError, DataError
from modelforge.core.registry import register
from modelforge.data.padding import pad_rows
from modelforge.data.split_config import FractionSplitConfig, TestFraction, ValFraction
from modelforge.data.tokenizers import Tokenizer, train_bpe
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.beam_search import next_token_loss
from modelforge.tasks.export_graphs import GraphSet
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.seq2seq.decoding import SearchSettings, decode_ids
from modelforge.tasks.seq2seq.pair_rows import Pairs, pair_datasets, prepare_pair_rows

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
TOKENIZER_FILE = "tokenizer.json"
TARGET_TOKENIZER_FILE = "tokenizer_target.json"


class Seq2SeqTokenizerConfig(StrictConfig):
    vocab_size: int = Field(8000, ge=300, description="byte-level BPE vocabulary size (per side unless shared)")
    min_frequency: int = Field(2, ge=1, description="drop merges seen fewer times than this")
    shared: bool = Field(True, description="one vocabulary for source and target (needed to share embeddings)")


class DecodingConfig(StrictConfig):
    beam_size: int = Field(4, ge=1, description="beams kept per source (1 = greedy) for test, predict and serving")
    length_penalty: float = Field(0.6, ge=0, description="GNMT alpha: 0 ranks by total log-probability")
    max_length_ratio: float = Field(1.5, gt=0, description="generate at most ratio × source tokens + offset")
    max_length_offset: int = Field(10, ge=1)
    max_new_tokens: int = Field(200, ge=1, description="hard cap on generated tokens")
    compare_greedy: bool = Field(True, description="test: also report greedy-decoding metrics (suffix _greedy)")


class Seq2SeqDataConfig(FractionSplitConfig):
    """Fields shared by translation and summarization (the source names and defaults differ)."""

    path: Optional[str] = Field(
        None, description="parallel: a TSV (source<TAB>target), a .jsonl, or PATH of PATH.SRC/PATH.TGT (or WMT .sgm); "
                          "or a Hugging Face dataset or .tar shards")
    format: Optional[Literal["hf", "webdataset"]] = Field(
        None, description="parallel: read data.path as a Hugging Face dataset or WebDataset shards (default: detected)")
    source_lang: Optional[str] = Field(None, description="parallel files: suffix of the source file (e.g. en)")
    target_lang: Optional[str] = Field(None, description="parallel files: suffix of the target file (e.g. es)")
    source_field: Optional[str] = Field(None, description="parallel JSONL: source field (default: inferred)")
    target_field: Optional[str] = Field(None, description="parallel JSONL: target field (default: inferred)")
    val_path: Optional[str] = Field(None, description="parallel: validation data (default: split off path)")
    test_path: Optional[str] = Field(None, description="parallel: test data (default: split off path)")
    encoding: str = "utf-8"
    val_fraction: ValFraction = 0.05  # split by hash of the source text, or by book
    test_fraction: TestFraction = 0.05
    tokenizer: Seq2SeqTokenizerConfig = Field(default_factory=Seq2SeqTokenizerConfig)
    max_source_tokens: int = Field(128, ge=2, description="source tokens kept (longer sources are truncated)")
    max_target_tokens: int = Field(128, ge=3, description="target tokens kept, <bos>/<eos> included")
    max_train_tokens: Optional[int] = Field(
        None, ge=2, description="drop training pairs with more tokens than this on either side (faster epochs)"
    )
    val_limit: Optional[int] = Field(200, ge=1, description="evaluate on N evenly spaced validation pairs")
    test_limit: Optional[int] = Field(None, ge=1, description="evaluate on N evenly spaced test pairs (None: all)")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)


class TranslationDataConfig(Seq2SeqDataConfig):
    source: Literal["bible-en-es", "parallel"] = "bible-en-es"
    bible_range: str = Field("Gen-Rev", description="bible-en-es: diatheke key of the books to use (e.g. Ruth-Job)")
    reverse: bool = Field(False, description="translate target → source (bible-en-es: Spanish → English)")


def evenly_spaced(count: int, keep: int | None) -> list[int]:
    if keep is None or count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(keep - 1, 1)) for i in range(keep)})


def _subset(pairs: Pairs, keep: int | None) -> Pairs:
    picks = evenly_spaced(len(pairs[0]), keep)
    return [pairs[0][i] for i in picks], [pairs[1][i] for i in picks]


def _read_parallel(cfg: Seq2SeqDataConfig, path: str, where: str) -> Pairs:
    from modelforge.data.formats.parallel_text import read_parallel

    text = read_parallel(Path(path).expanduser(), cfg.source_lang, cfg.target_lang, encoding=cfg.encoding,
                         source_field=cfg.source_field, target_field=cfg.target_field)
    if not text.sources:
        raise DataError(f"{where}={path}: no sentence pairs")
    return text.sources, text.targets


def load_parallel_splits(cfg: Seq2SeqDataConfig) -> dict[str, Pairs]:
    """``parallel`` source: train from ``path``; val/test from their paths or split off by a hash of the source."""
    from modelforge.data.splits import split_by_hash

    if not cfg.path:
        raise ConfigError("data.source=parallel needs data.path=FILE.tsv (source<TAB>target), or data.path=PREFIX "
                          "with data.source_lang/data.target_lang for PREFIX.SRC and PREFIX.TGT files")
    from modelforge.data.formats.records import detect_format

    record_format = cfg.format or detect_format(cfg.path)
    if record_format:
        return _record_pairs(cfg, record_format)
    train = _read_parallel(cfg, cfg.path, "data.path")
    parts = {"train": train}
    held = {"val": (cfg.val_path, cfg.val_fraction), "test": (cfg.test_path, cfg.test_fraction)}
    fractions = {name: share for name, (path, share) in held.items() if not path and share > 0}
    if fractions:
        fractions = {"train": 1 - sum(fractions.values()), **fractions}
        for name, idx in split_by_hash(train[0], fractions, cfg.split_seed).items():
            parts[name] = ([train[0][i] for i in idx], [train[1][i] for i in idx])
        if not parts["train"][0]:
            raise DataError(f"{cfg.path}: no training pairs left after holding out val/test; lower the fractions")
    for name, (path, _) in held.items():
        if path:
            parts[name] = _read_parallel(cfg, path, f"data.{name}_path")
    return parts


def _record_pairs(cfg: Seq2SeqDataConfig, record_format: str) -> dict[str, Pairs]:
    """A Hugging Face dataset or WebDataset shards: its own splits; val/test it lacks split off by hash."""
    from modelforge.data.formats.records import open_records, read_pairs
    from modelforge.data.splits import split_by_hash

    splits = open_records(cfg.path, record_format)
    read = {name: read_pairs(records, cfg.source_field, cfg.target_field, cfg.source_lang, cfg.target_lang)
            for name, records in splits.items()}
    train = read["train"]
    fractions = {name: getattr(cfg, f"{name}_fraction") for name in ("val", "test") if name not in read}
    fractions = {name: share for name, share in fractions.items() if share > 0}
    if fractions:
        fractions = {"train": 1 - sum(fractions.values()), **fractions}
        for name, idx in split_by_hash(train[0], fractions, cfg.split_seed).items():
            read[name] = ([train[0][i] for i in idx], [train[1][i] for i in idx])
    return read


def parallel_found(cfg: Seq2SeqDataConfig, sizes: dict[str, int]) -> str:
    """The found line of a ``parallel`` run: the file(s), the pair count and where each split came from."""
    from modelforge.data.formats.parallel_text import parallel_paths
    from modelforge.data.formats.records import detect_format, open_records
    from modelforge.data.found import files_found

    name = Path(cfg.path).name
    record_format = cfg.format or detect_format(cfg.path)
    if record_format:
        read = f"{cfg.path} ({record_format})"
        own = {split: f"{name} ({split})" for split in open_records(cfg.path, record_format) if split != "train"}
    else:
        read = cfg.path
        if cfg.source_lang:  # the two files actually read: PREFIX.SRC + PREFIX.TGT, or WMT's .sgm source and reference
            source, target = parallel_paths(cfg.path, cfg.source_lang, cfg.target_lang)
            read = f"{source} + {target.name}"
        own = {split: Path(path).name for split, path in (("val", cfg.val_path), ("test", cfg.test_path)) if path}
    return files_found(read, sizes, name, own, " by hash of the source", detail=f"{sum(sizes.values())} pairs")


def split_fractions(cfg: Seq2SeqDataConfig) -> dict[str, float]:
    """The ``{train, val, test}`` shares of a built-in corpus: val and test as configured, train the rest."""
    return {"train": 1 - cfg.val_fraction - cfg.test_fraction, "val": cfg.val_fraction, "test": cfg.test_fraction}


@register("task", "translation")
class Translation(Task):
    """Translate text with an encoder–decoder (Bible EN→ES or your parallel text); greedy or beam search."""

    name = "translation"
    capabilities = frozenset({"translate"})
    call_options = frozenset({"beam_size", "length_penalty"})
    DataConfig = TranslationDataConfig
    input_kind = "text"
    output_key: ClassVar[str] = "translation"
    evaluation_gathers_ranks = True  # evaluate gathers its rows once (across_ranks): a rank may take a share

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._tokenizers: dict[str, Tokenizer] = {}
        # model.name=hf: a T5/BART/Marian checkpoint with its own tokenizer and transformers' search
        self.pretrained = recipe.model.name == "hf"
        self._checkpoint_text: Any = None

    def checkpoint_text(self) -> Any:
        """The checkpoint's tokenizer (``checkpoint_text.CheckpointText``) of a ``model.name=hf`` run."""
        if self._checkpoint_text is None:
            from modelforge.tasks.seq2seq.checkpoint_text import CheckpointText

            self._checkpoint_text = CheckpointText(self.recipe.model, self.artifact_dir)
        return self._checkpoint_text

    # ---- data -------------------------------------------------------------------------------------------------
    def load_pairs(self) -> dict[str, Pairs]:
        """{split: (sources, targets)} of raw texts."""
        cfg = self.data_cfg
        if cfg.source == "parallel":
            return load_parallel_splits(cfg)
        from modelforge.data.builtin.bible import load_bible_en_es, split_bible_by_book

        splits = split_bible_by_book(load_bible_en_es(cfg.bible_range), split_fractions(cfg), cfg.split_seed)
        out = {}
        for name, verses in splits.items():
            en, es = [v.en for v in verses], [v.es for v in verses]
            out[name] = (es, en) if cfg.reverse else (en, es)
        return out

    def split_summary(self, parts: dict[str, Pairs]) -> dict[str, Any]:
        return {}

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        parts = {k: v for k, v in self.load_pairs().items() if v[0]}
        if "train" not in parts:
            raise DataError("no training pairs; check the data source")
        summary = self.split_summary(parts)
        if cfg.source == "parallel":
            summary["found"] = parallel_found(cfg, {k: len(v[0]) for k, v in parts.items()})
        if cfg.limit:
            parts = {k: _subset(v, cfg.limit) for k, v in parts.items()}
        for name, keep in (("val", cfg.val_limit), ("test", cfg.test_limit)):
            if name in parts and keep:
                summary[f"{name}_pairs_total"] = len(parts[name][0])
                parts[name] = _subset(parts[name], keep)
        datasets = pair_datasets(self, list(parts), prepare_pair_rows(self, parts), summary)
        summary.update(src_vocab_size=self.state_dict_["src_vocab_size"],
                       tgt_vocab_size=self.state_dict_["tgt_vocab_size"])
        return Splits(train=datasets["train"], val=datasets.get("val"), test=datasets.get("test"), summary=summary)

    # ---- tokenizers -------------------------------------------------------------------------------------------
    def build_tokenizers(self, sources: list[str], targets: list[str]) -> None:
        """The tokenizers and state: BPE trained on the training pairs, or the checkpoint's (model.name=hf)."""
        if self.pretrained:  # the checkpoint's tokenizer; a loaded run keeps its decoder start token
            from modelforge.tasks.seq2seq.checkpoint_text import decoder_start

            start = self.state_dict_["bos_id"] if self.artifact_dir is not None else decoder_start(self.recipe.model)
            self.state_dict_ = self.checkpoint_text().state(start, self.data_cfg.max_source_tokens,
                                                            self.data_cfg.max_target_tokens)
            return
        tcfg = self.data_cfg.tokenizer
        if tcfg.shared:
            source_tok = target_tok = train_bpe([*sources, *targets], tcfg.vocab_size, tcfg.min_frequency, SPECIALS)
        else:
            source_tok = train_bpe(sources, tcfg.vocab_size, tcfg.min_frequency, SPECIALS)
            target_tok = train_bpe(targets, tcfg.vocab_size, tcfg.min_frequency, SPECIALS)
        self.set_tokenizers(source_tok, target_tok)

    def set_tokenizers(self, source_tok: Tokenizer, target_tok: Tokenizer) -> None:
        """Use these BPE tokenizers (trained, or an earlier run's from the token-file cache) and their state."""
        self._tokenizers = {"source": source_tok, "target": target_tok}
        ids = {token: target_tok.token_to_id(token) for token in SPECIALS}
        self.state_dict_ = {
            "tokenizer": TOKENIZER_FILE,
            "target_tokenizer": None if self.data_cfg.tokenizer.shared else TARGET_TOKENIZER_FILE,
            "src_vocab_size": source_tok.vocab_size,
            "tgt_vocab_size": target_tok.vocab_size,
            "pad_id": ids["<pad>"], "unk_id": ids["<unk>"], "bos_id": ids["<bos>"], "eos_id": ids["<eos>"],
            "max_source_tokens": self.data_cfg.max_source_tokens,
            "max_target_tokens": self.data_cfg.max_target_tokens,
        }

    def tokenizer(self, side: str) -> Tokenizer:
        if side not in self._tokenizers:
            if self.artifact_dir is None:
                raise ArtifactError("the tokenizer is not built yet: call datasets() or load a trained artifact")
            name = self.state_dict_.get("target_tokenizer") if side == "target" else None
            file = self.artifact_dir / (name or self.state_dict_.get("tokenizer", TOKENIZER_FILE))
            if not file.is_file():
                raise ArtifactError(f"{file} is missing; the artifact is incomplete")
            self._tokenizers[side] = Tokenizer.load(file)
        return self._tokenizers[side]

    def extra_files(self) -> dict[str, bytes]:
        if self.pretrained:
            return self.checkpoint_text().files()
        files = {TOKENIZER_FILE: self.tokenizer("source").backend.to_str().encode("utf-8")}
        if self.state_dict_.get("target_tokenizer"):
            files[TARGET_TOKENIZER_FILE] = self.tokenizer("target").backend.to_str().encode("utf-8")
        return files

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        """Source ids truncated to max_source_tokens; an empty encoding becomes one <unk>."""
        keep, unk = self.state_dict_["max_source_tokens"], self.state_dict_["unk_id"]
        if self.pretrained:
            return self.checkpoint_text().encode_sources(texts, keep, unk)
        rows = self.tokenizer("source").backend.encode_batch(list(texts))
        return [row.ids[:keep] or [unk] for row in rows]

    def encode_targets(self, texts: list[str]) -> list[list[int]]:
        state = self.state_dict_
        if self.pretrained:
            return self.checkpoint_text().encode_targets(texts, state["max_target_tokens"], state["bos_id"])
        keep = state["max_target_tokens"] - 2
        rows = self.tokenizer("target").backend.encode_batch(list(texts))
        return [[state["bos_id"], *row.ids[:keep], state["eos_id"]] for row in rows]

    def decode_targets(self, rows: list[list[int]]) -> list[str]:
        if self.pretrained:
            return self.checkpoint_text().decode(rows)
        return [text.strip() for text in self.tokenizer("target").decode_batch(rows)]

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        state = self.state_dict_
        if self.pretrained:
            return {"head": "seq2seq_lm"}
        return {"src_vocab_size": state["src_vocab_size"], "tgt_vocab_size": state["tgt_vocab_size"],
                "max_positions": max(state["max_source_tokens"], state["max_target_tokens"])}

    @staticmethod
    def _teacher_forced(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Logits for every target position given the previous ones, whichever family ``model`` is."""
        net = getattr(model, "module", model)
        src, lengths, tgt_in = batch["src"], batch["src_lengths"], batch["tgt"][:, :-1]
        if "src_lengths" in inspect.signature(net.forward).parameters:
            return model(src, lengths, tgt_in)
        mask = torch.arange(src.shape[1], device=src.device).unsqueeze(0) < lengths.unsqueeze(1)
        return model(src, tgt_in, mask)

    # ---- training and evaluation --------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> StepOutput:
        return StepOutput(next_token_loss(self._teacher_forced(model, batch), batch["tgt"], self.state_dict_["pad_id"],
                                          self.data_cfg.label_smoothing))

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return len(batch["src"])

    def search_settings(self, beam_size: int | None = None, length_penalty: float | None = None) -> SearchSettings:
        """The configured decoding, with optional overrides (``modelforge translate --beam/--length-penalty``)."""
        dcfg, state = self.data_cfg.decoding, self.state_dict_
        if self.pretrained:
            from modelforge.tasks.seq2seq.checkpoint_text import banned_ids

            banned = banned_ids(state)
        else:
            banned = (state["pad_id"], state["unk_id"], state["bos_id"])
        return SearchSettings(
            bos_id=state["bos_id"], eos_id=state["eos_id"], banned_ids=banned,
            beam_size=dcfg.beam_size if beam_size is None else beam_size,
            length_penalty=dcfg.length_penalty if length_penalty is None else length_penalty,
        )

    def generate(self, model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                 settings: SearchSettings) -> list[str]:
        """Decoded target texts for a padded source batch."""
        limits = self.decode_limits(src_lengths)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                ids = self.search_ids(model, src, src_lengths, settings, limits)
        finally:
            model.train(was_training)
        return self.decode_targets(ids)

    def search_ids(self, model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, settings: SearchSettings,
                   limits: torch.Tensor) -> list[list[int]]:
        """Generated ids per source (no start/end token): the toolkit's search for its own models, transformers'
        ``generate`` for a checkpoint's."""
        if self.pretrained:
            from modelforge.tasks.seq2seq.checkpoint_text import generated_rows

            return generated_rows(model, src, src_lengths, self.state_dict_, limits, settings.beam_size,
                                  settings.length_penalty)
        return decode_ids(model, src, src_lengths, settings, limits)

    def decode_limits(self, src_lengths: torch.Tensor) -> torch.Tensor:
        """Most tokens generated per row (EOS included): ratio × source length + offset, within the caps."""
        dcfg = self.data_cfg.decoding
        limits = (src_lengths.float() * dcfg.max_length_ratio + dcfg.max_length_offset).ceil().long()
        return limits.clamp(max=min(dcfg.max_new_tokens, self.state_dict_["max_target_tokens"] - 1))

    def text_metrics(self, sources: list[str], references: list[str], outputs: list[str]) -> dict[str, float]:
        """Corpus BLEU and chrF from sacrebleu (its default 13a tokenisation, cased)."""
        from sacrebleu.metrics import BLEU, CHRF

        return {"bleu": BLEU().corpus_score(outputs, [references]).score,
                "chrf": CHRF().corpus_score(outputs, [references]).score}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        nll, tokens, sources, references, outputs, greedy_outputs = across_ranks(*self._evaluation_rows(model, loader))
        loss = summed_in_order(nll) / max(int(tokens.sum()), 1)
        metrics: dict[str, Any] = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        metrics.update(self.text_metrics(sources, references, outputs))
        if greedy_outputs:
            greedy_metrics = self.text_metrics(sources, references, greedy_outputs)
            metrics.update({f"{k}_greedy": v for k, v in greedy_metrics.items() if not k.startswith("lead_")})
        metrics["samples"] = [{"source": s, "reference": r, "output": o}
                              for s, r, o in list(zip(sources, references, outputs))[:5]]
        return metrics

    def _evaluation_rows(self, model: nn.Module, loader: Any) -> tuple[Any, ...]:
        """What ``evaluate`` reads from its batches: the summed loss and the reference tokens of each batch (arrays),
        then the sources, references, outputs and (test with ``compare_greedy``) greedy outputs of every row."""
        settings, greedy, pad = self.search_settings(), self.search_settings(beam_size=1), self.state_dict_["pad_id"]
        nll, tokens = [], []
        sources, references, outputs, greedy_outputs = [], [], [], []
        for batch in loader:
            logits = self._teacher_forced(model, batch).float()
            targets = batch["tgt"][:, 1:]
            nll.append(float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum",
                                             ignore_index=pad)))
            tokens.append(int((targets != pad).sum()))
            # Validation runs every epoch: greedy keeps it cheap. Test uses the configured search.
            chosen = greedy if batch["split"] != "test" else settings
            outputs += self.generate(model, batch["src"], batch["src_lengths"], chosen)
            if batch["split"] == "test" and chosen.beam_size > 1 and self.data_cfg.decoding.compare_greedy:
                greedy_outputs += self.generate(model, batch["src"], batch["src_lengths"], greedy)
            sources += batch["sources"]
            references += batch["references"]
        return (np.array(nll, dtype=np.float64), np.array(tokens, dtype=np.int64), sources, references, outputs,
                greedy_outputs)

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        dataset = splits.test if splits.test is not None else splits.val
        if dataset is None or count <= 0:
            return ReportSamples(note="no held-out split to show samples from")
        batch = dataset.get_batch(evenly_spaced(len(dataset), count))
        device = next(model.parameters()).device
        outputs = self.generate(model, batch["src"].to(device), batch["src_lengths"].to(device),
                                self.search_settings())
        rows = "".join(
            f"<tr><td>{html.escape(s)}</td><td>{html.escape(r)}</td><td>{html.escape(o)}</td></tr>"
            for s, r, o in zip(batch["sources"], batch["references"], outputs)
        )
        settings = self.search_settings()
        caption = f"{dataset.split} items, beam {settings.beam_size}, length penalty {settings.length_penalty}"
        table = (f"<table class=\"samples\"><caption>{html.escape(caption)}</caption>"
                 f"<tr><th>source</th><th>reference</th><th>output</th></tr>{rows}</table>")
        return ReportSamples(html=table)

    # ---- serving ----------------------------------------------------------------------------------------------
    def preprocess(self, inputs: list[Any]) -> dict[str, Any]:
        if not inputs:
            raise DataError(f"no inputs given; pass at least one text for {self.name}")
        for i, item in enumerate(inputs, start=1):
            if not isinstance(item, str):
                raise DataError(f"input {i} is a {type(item).__name__}; give text (a string)")
            if not item.strip():
                raise DataError(f"input {i} is empty; give some text for {self.name}")
        texts = [" ".join(item.split()) for item in inputs]
        src, lengths = pad_rows(self.encode_sources(texts), self.state_dict_["pad_id"], min_width=1)
        return {"src": src, "src_lengths": lengths, "sources": texts}

    def forward(self, model: nn.Module, batch: dict[str, Any], beam_size: int | None = None,
                length_penalty: float | None = None) -> list[str]:
        """Decoded texts; ``beam_size``/``length_penalty`` replace the recipe's decoding for this call."""
        device = next(model.parameters()).device
        return self.generate(model, batch["src"].to(device), batch["src_lengths"].to(device),
                             self.search_settings(beam_size, length_penalty))

    def postprocess(self, outputs: list[str]) -> list[dict[str, Any]]:
        return [{self.output_key: text} for text in outputs]

    # ---- export -----------------------------------------------------------------------------------------------
    def export_graphs(self, model: nn.Module) -> GraphSet:
        """ONNX as an encoder graph and a decoder graph (the decoding loop runs outside; see tasks/seq2seq_export)."""
        from modelforge.tasks.seq2seq.seq2seq_export import seq2seq_graphs

        return seq2seq_graphs(self, model)
