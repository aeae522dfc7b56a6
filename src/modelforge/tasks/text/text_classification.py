"""Text classification: Rotten Tomatoes, BBC News or the user's CSV/TSV/JSONL → any registered text classifier.

Texts are tokenized once into a memory-mapped row token file (``tasks/text/text_rows.py``) that later runs on the
same data and tokenizer reuse; a split's item is its ids padded to the split's longest text (at most
``max_length``), its length and its label, read from the file batch by batch. Each batch is trimmed to its own
longest text before the model sees it, so a batch of short reviews never pays for the corpus's longest article.
The classifier gets what its ``forward`` asks for: ``attention_mask`` (Transformers), ``lengths`` (packed RNNs) or
the ids alone.

The tokenizer is trained on the training texts (word, char, BPE or WordPiece) or loaded from a ``tokenizer.json``
(``pretrained``, e.g. MiniLM's own), saved in the artifact as ``tokenizer.json`` and read back from there, so a
loaded model needs no training data.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from tokenizers import Tokenizer
from torch import nn

from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import get, register
from modelforge.data.class_splits import check_classifier_splits
from modelforge.data.row_tokens import TokenRows
from modelforge.data.split_config import FractionSplitConfig
from modelforge.data.text_encoding import (
    TOKENIZER_FILE,
    TokenizerArtifact,
    TokenizerConfig,
    encode_padded,
    minilm_dir,
    pad_id_of,
)
from modelforge.models.layers.masks import length_mask
from modelforge.tasks.base import ReportSamples, ServedText, Splits, StepOutput, Task
from modelforge.tasks.baselines import baseline_rows
from modelforge.tasks.metrics import classifier_evaluation, ranked_labels
from modelforge.tasks.text.record_texts import Pairs, SourceTexts, labels_and_keys, record_pairs
from modelforge.tasks.text.text_method import METHODS, MethodChoice, choose_method, stack_model_settings
from modelforge.tasks.text.text_rows import (
    Parts,
    ReadRows,
    RowSource,
    TextRows,
    content_identity,
    prepare_text_rows,
    settings_key,
    texts_at,
)

log = logging.getLogger("modelforge.data")
# tokens that are no words of the text: the stack's TF-IDF never counts them
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "<pad>", "<s>", "</s>", "<mask>")


class TextDataConfig(FractionSplitConfig):
    source: Literal["rotten_tomatoes", "bbc_news", "file"] = "rotten_tomatoes"
    path: Optional[str] = Field(
        None, description="file source: a CSV/TSV/JSONL table (training data), a Hugging Face dataset or .tar shards")
    val_path: Optional[str] = Field(None, description="file source: validation table (default: split off path)")
    test_path: Optional[str] = Field(None, description="file source: test table (default: split off path)")
    text_column: Optional[str] = Field(None, description="default: the table's one text-like column")
    label_column: Optional[str] = Field(None, description="default: the table's one column of few distinct values")
    format: Optional[Literal["csv", "tsv", "jsonl", "hf", "webdataset"]] = Field(
        None, description="default: from the file suffix, or what data.path holds (a Hugging Face dataset, shards)")
    encoding: str = "utf-8"
    val_min: int = Field(50, ge=0, description="file source without val_path: at least this many validation rows "
                                              "(stratified; at most a quarter of the training rows)")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_length: Union[int, Literal["auto"]] = Field(
        256, description="tokens kept per text (longer texts are truncated); auto: the training texts' 95th "
                         "percentile, at most max_length_cap")
    max_length_cap: int = Field(256, ge=8, description="max_length=auto: the most tokens kept")
    init_encoder: Optional[str] = Field(
        None, description="start the classifier's encoder from a Hugging Face BERT folder or 'minilm'"
    )


def _spread(count: int, limit: int | None) -> list[int] | None:
    """``limit`` rows evenly spaced over a split of ``count`` (files sorted by label, as BBC News is, still give every
    label); None: all of them."""
    if not limit or count <= limit:
        return None
    return [round(i * (count - 1) / max(limit - 1, 1)) for i in range(limit)]


def _baseline_of(parts: Parts) -> dict[str, list[str]]:
    """The texts the TF-IDF baseline reads (tasks/baselines.py, baseline_rows): only these are kept."""
    return {split: [texts[i] for i in baseline_rows(len(texts))] for split, (texts, _) in parts.items()}


def _forward_params(model: nn.Module) -> set[str]:
    """The parameters of the network's own forward, through wrappers whose forward takes ``*args, **kwargs`` (DDP's
    ``module``, an Opacus GradSampleModule's ``_module``): read off the wrapper, the lengths or attention mask were
    left out and padding changed the logits of a text classifier trained under torchrun."""
    for wrapped in ("module", "_module"):
        inner = getattr(model, wrapped, None)
        if isinstance(inner, nn.Module):
            return _forward_params(inner)
    return set(inspect.signature(model.forward).parameters)


@register("task", "text_classification")
class TextClassification(TokenizerArtifact, Task):
    """Classify texts into labels (Rotten Tomatoes sentiment, BBC News topics, or a CSV/TSV/JSONL table)."""

    name = "text_classification"
    explain_kind = "text"
    validation_metric = ("val_accuracy", "maximize")
    evaluation_gathers_ranks = True  # evaluate goes only through classifier_evaluation: a rank may take a share
    DataConfig = TextDataConfig
    input_kind = "text"
    baseline = "text"
    model_methods = METHODS  # model.method: tasks/text/text_method.py

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._tokenizer: Tokenizer | None = None
        self._loaded: tuple[Parts, list[str]] | None = None  # a built-in set, read before its key (its content)
        self._source_rows: dict[str, tuple[str, np.ndarray]] = {}  # split → (its source, each row's place there)
        self._origins: dict[str, str] = {}
        self._used: dict[str, Any] = {}  # data settings the reading decided (recorded in the recipe)
        self._rows: TextRows | None = None
        self._baseline: dict[str, list[str]] | None = None

    # ---- data -------------------------------------------------------------------------------------------------
    def _load_tables(self) -> tuple[Parts, list[str]]:
        """{split: (texts, labels)} and the label names."""
        cfg = self.data_cfg
        if cfg.source == "rotten_tomatoes":
            from modelforge.data.builtin.rotten_tomatoes import load_rotten_tomatoes

            tables = load_rotten_tomatoes()
            parts, names = {k: (t.texts, t.labels) for k, t in tables.items()}, tables["train"].label_names
        elif cfg.source == "bbc_news":
            from modelforge.data.builtin.bbc_news import TOPICS, load_bbc_news

            articles = load_bbc_news()
            parts, names = {k: ([a.text for a in v], [a.topic for a in v]) for k, v in articles.items()}, list(TOPICS)
        else:
            return self._load_files()
        self._source_rows = {split: (split, np.arange(len(texts))) for split, (texts, _) in parts.items()}
        return parts, names

    def _resolve(self, **values: Any) -> None:
        """Record settings the reading decided, in the recipe and in the token file (a reused file reads nothing)."""
        self.record_used(**values)
        self._used.update(values)

    def _record_format(self) -> str | None:
        from modelforge.data.formats.records import RECORD_FORMATS, detect_format

        cfg = self.data_cfg
        if not cfg.path:
            raise ConfigError("data.source=file needs data.path=FILE (a CSV, TSV or JSONL table of text and label)")
        return cfg.format if cfg.format in RECORD_FORMATS else None if cfg.format else detect_format(cfg.path)

    def _own_files(self) -> list[str]:
        """The held-out splits given as files of their own, in a fixed order."""
        return [split for split in ("val", "test") if getattr(self.data_cfg, f"{split}_path")]

    def _row_source(self) -> RowSource:
        """Where the rows come from, named without reading a row of the user's files (a built-in set is small: it is
        read here, and its content is its identity)."""
        cfg = self.data_cfg
        if cfg.source != "file":
            self._loaded = self._limited(*self._load_tables())
            return RowSource([], None, content_identity(self._loaded[0]))
        record_format = self._record_format()
        if record_format:
            from modelforge.data.formats.records import source_files

            files = source_files(cfg.path, record_format)
            return RowSource(files, files[0].parent if record_format == "webdataset" else Path(cfg.path).expanduser())
        files = [self._table_path(source) for source in ("train", *self._own_files())]
        for file in files:
            if not file.is_file():
                problem = "is a directory, expected a file" if file.is_dir() else (
                    f"file not found; check the path (relative paths start at {Path.cwd()})")
                raise DataError(f"{file}: {problem}")
        return RowSource(files, files[0])

    def _table_path(self, source: str) -> Path:
        return Path(getattr(self.data_cfg, "path" if source == "train" else f"{source}_path")).expanduser()

    def _load_files(self) -> tuple[Parts, list[str]]:
        """A CSV/TSV/JSONL table (and its own val/test tables), streamed as a record source is: the columns are
        inferred from the first rows, one checked pass keeps the labels, and the texts are read again as streams."""
        from modelforge.data.formats.table_columns import check_inferred_label, infer_columns
        from modelforge.data.formats.text_table import checked_text_rows, stream_text_rows

        cfg = self.data_cfg
        record_format = self._record_format()
        if record_format:
            return self._load_records(record_format)
        text_column, label_column = infer_columns(Path(cfg.path).expanduser(), cfg.text_column, cfg.label_column,
                                                  cfg.format, cfg.encoding)
        own = self._own_files()
        # the recipe saved with the run says what was used: the columns found, no share held out for a given file
        self._resolve(text_column=text_column, label_column=label_column, **{f"{s}_fraction": 0.0 for s in own})
        labels: list[str] = []  # the training rows' labels, filled by the first pass over the training table

        def pairs(split: str, first: bool = False) -> Pairs:
            path, read = self._table_path(split), (text_column, label_column, cfg.format, cfg.encoding)
            if first:  # read_text_table's checks; a given val/test table may hold only the training labels
                known = None if split == "train" else sorted(set(labels))
                return lambda: checked_text_rows(path, *read, known_labels=known)
            return lambda: stream_text_rows(path, *read)

        name, inferred = Path(cfg.path).name, cfg.label_column is None
        parts, label_names = self._streamed_parts(pairs, labels, name, own)
        if inferred:  # the columns were inferred from the table's head: the label column must hold over all of it
            check_inferred_label(cfg.path, label_column, len(label_names), len(labels))
        self._origins.update({split: Path(getattr(cfg, f"{split}_path")).name for split in own})
        self._read_what = f"{name} (text column {text_column!r}, label column {label_column!r})"
        return parts, label_names

    def _streamed_parts(self, pairs: Callable[[str, bool], Pairs], labels: list[str], name: str, own: list[str]
                        ) -> tuple[Parts, list[str]]:
        """The splits of a source whose ``pairs(split, first)`` streams (text, label) rows (``first``: the checked
        first pass): val/test held out of the training rows by their labels and text hashes alone (``labels`` is
        filled as they pass), the ``own`` splits read for their labels; every split's texts stay a stream."""
        rows = self._held_out_rows(labels_and_keys(pairs("train", True)(), labels), labels, name, set(own))
        parts: Parts = {split: (SourceTexts(pairs("train", False), self._source_rows[split][1], len(picked)),
                                [labels[i] for i in picked.tolist()]) for split, picked in rows.items()}
        for split in own:
            own_labels = [label for _, label in pairs(split, True)()]
            parts[split] = (SourceTexts(pairs(split, False), None, len(own_labels)), own_labels)
            self._source_rows[split] = (split, np.arange(len(own_labels)))
        return parts, sorted(set(labels))

    def _held_out_rows(self, keys: Iterable[str], labels: list[str], name: str, own: set[str]
                       ) -> dict[str, np.ndarray]:
        """The training rows' places in each split: ``keys`` (the texts, iterated once: they may fill ``labels`` as
        they pass) are hashed for the test rows; the validation rows are stratified by label."""
        from modelforge.data.splits import split_by_hash, stratified_holdout

        cfg = self.data_cfg
        self._origins = {"train": name}
        if "test" not in own and cfg.test_fraction > 0:  # by hash: duplicates never straddle train and test
            fractions = {"train": 1 - cfg.test_fraction, "test": cfg.test_fraction}
            rows = {k: np.asarray(v, dtype=np.int64) for k, v in split_by_hash(keys, fractions, cfg.split_seed).items()}
            self._origins["test"] = f"{cfg.test_fraction:.0%} split off {name} by hash"
        else:
            rows = {"train": np.arange(sum(1 for _ in keys), dtype=np.int64)}
        if "val" not in own and cfg.val_fraction > 0:
            train = rows["train"]
            size = max(round(cfg.val_fraction * len(train)), min(cfg.val_min, len(train) // 4))
            keep, held = stratified_holdout([labels[i] for i in train.tolist()], size, cfg.split_seed)
            rows["train"], rows["val"] = (train[np.asarray(part, dtype=np.int64)] for part in (keep, held))
            self._origins["val"] = f"split off {name}, stratified"
        if len(rows["train"]) == 0:
            raise DataError(f"{cfg.path}: no training rows left after holding out val/test; lower the fractions")
        self._source_rows = {split: ("train", picked) for split, picked in rows.items()}
        return rows

    def _load_records(self, record_format: str) -> tuple[Parts, list[str]]:
        """A Hugging Face dataset or WebDataset shards: its own splits, the rest held out as for a table. Only the
        labels are kept in memory; each split's texts are a stream of the two columns (``record_texts.py``)."""
        from modelforge.data.formats.records import infer_text_label, open_records

        splits = open_records(self.data_cfg.path, record_format)
        text_column, label_column = infer_text_label(splits["train"], self.data_cfg.text_column,
                                                     self.data_cfg.label_column)
        own = [split for split in ("val", "test") if split in splits]
        self._resolve(text_column=text_column, label_column=label_column, **{f"{s}_fraction": 0.0 for s in own})

        def pairs(split: str, first: bool = False) -> Pairs:  # warnings of skipped rows on the first pass only
            return lambda: record_pairs(splits[split], text_column, label_column, warn=first)

        name = Path(self.data_cfg.path).name
        parts, label_names = self._streamed_parts(pairs, [], name, own)
        self._origins.update({split: f"{name} ({split})" for split in own})
        self._read_what = f"{name} ({record_format}; text column {text_column!r}, label column {label_column!r})"
        return parts, label_names

    def _limited(self, parts: Parts, label_names: list[str]) -> tuple[Parts, list[str]]:
        """``data.limit`` rows of every split, evenly spaced (their places in the source follow)."""
        for split, (texts, labels) in list(parts.items()):
            picks = _spread(len(texts), self.data_cfg.limit)
            if picks is not None:
                kept = texts.subset(picks) if isinstance(texts, SourceTexts) else [texts[i] for i in picks]
                parts[split] = (kept, [labels[i] for i in picks])
                source, rows = self._source_rows[split]
                self._source_rows[split] = (source, rows[picks])
        return parts, label_names

    def _read_rows(self) -> ReadRows:
        """The splits, read (on the first run only; later runs take all of this from the token file)."""
        cfg = self.data_cfg
        parts, label_names = self._loaded or self._limited(*self._load_tables())
        check_classifier_splits({k: labels for k, (_, labels) in parts.items()}, label_names,
                                cfg.path or f"data.source={cfg.source}")
        if all(isinstance(texts, list) for texts, _ in parts.values()):  # a record source's are streams: read later
            self._baseline = _baseline_of(parts)
        origins = {split: self._origins.get(split, f"{cfg.source} {split} split") for split in parts}
        meta = {"read_what": getattr(self, "_read_what", f"the built-in {cfg.source} data"), "origins": origins,
                "used": self._used}
        return ReadRows(parts, label_names, meta, self._source_rows)

    @property
    def baseline_texts(self) -> dict[str, list[str]]:
        """The TF-IDF baseline's texts (at most MAX_TRAIN evenly spaced rows a split): kept when the rows were read,
        else read again from the source as a stream, keeping only those."""
        if self._baseline is None:
            if self._loaded is not None:
                self._baseline = _baseline_of(self._loaded[0])
            elif self._rows is not None:
                self._baseline = self._reread_baseline(self._rows)
            else:
                raise RuntimeError("baseline_texts is known once datasets() has run")
        return self._baseline

    def _source_stream(self, source: str) -> Iterator[tuple[str, str]]:
        """The (text, label) rows of one source (the table or record split a split was read from), streamed."""
        cfg = self.data_cfg
        record_format = self._record_format()
        if record_format:
            from modelforge.data.formats.records import open_records

            return record_pairs(open_records(cfg.path, record_format)[source], cfg.text_column, cfg.label_column,
                                warn=False)
        from modelforge.data.formats.text_table import stream_text_rows

        return stream_text_rows(self._table_path(source), cfg.text_column, cfg.label_column, cfg.format, cfg.encoding)

    def _reread_baseline(self, rows: TextRows) -> dict[str, list[str]]:
        wanted = {split: rows.source_rows(split, baseline_rows(rows.size(split))) for split in rows.splits}
        texts = {}
        for source in dict.fromkeys(source for source, _ in wanted.values()):  # each source read once
            mine = {split: places for split, (origin, places) in wanted.items() if origin == source}
            every = np.unique(np.concatenate(list(mine.values())))
            found = dict(zip(every.tolist(), texts_at(self._source_stream(source), every)))
            texts.update({split: [found[p] for p in places.tolist()] for split, places in mine.items()})
        return {split: texts[split] for split in wanted}

    @staticmethod
    def _found(rows: TextRows, train_labels: torch.Tensor, detail: str | None = None) -> str:
        from modelforge.data.found import found_line

        names = rows.meta["classes"]
        counts = torch.bincount(train_labels, minlength=len(names)).tolist()
        splits = {split: (rows.size(split), rows.meta["origins"][split]) for split in rows.splits}
        return found_line(rows.meta["read_what"], dict(zip(names, counts)), splits, detail)

    def _choose_method(self, rows: int) -> MethodChoice | None:
        """Resolve ``model.method`` (auto | finetune | stack) for ``rows`` training texts at the chosen max_length and
        write the method used into the recipe (the stack: model text_stack). None: the recipe names no method."""
        from modelforge.core.config import ModelConfig

        settings = self.recipe.model.model_dump()
        if settings.get("method") is None:
            return None
        gradient_only = "adapter" if self.recipe.adapter is not None else "privacy" if self.recipe.privacy else None
        choice = choose_method(settings["method"], settings["name"], bool(self.data_cfg.init_encoder),
                               self.recipe.train, rows, self.data_cfg.max_length, gradient_only)
        if choice.method == "stack":
            settings = stack_model_settings(settings)
        model = ModelConfig(**{**settings, "method": choice.method})
        self.recipe = self.recipe.model_copy(update={"model": model})
        return choice

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        settings = settings_key(cfg)  # as the recipe gives them: a reused file's key needs no row
        from modelforge.models.hf_auto import checkpoint_tokenizer  # model.name=hf brings its own tokenizer

        # a loaded hf run re-reads its data with the artifact's copy of the checkpoint's tokenizer
        loaded_hf = self.artifact_dir is not None and self.recipe.model.name == "hf"
        given = self.tokenizer if loaded_hf else checkpoint_tokenizer(self.recipe.model)
        rows = self._rows = prepare_text_rows(cfg, settings, given, self._row_source(), self._read_rows)
        self._source_rows = {}  # kept in the file
        if not rows.built and rows.meta["used"]:
            self.record_used(**rows.meta["used"])  # what the first run's reading decided
        tok = self._tokenizer = rows.tokenizer
        if cfg.max_length == "auto":
            self.record_used(max_length=rows.max_length)
        rows.alias_as(settings_key(self.data_cfg))  # a loaded run's recipe names what this run resolved
        label_names = list(rows.meta["classes"])
        choice = self._choose_method(rows.size("train"))
        pad_id = pad_id_of(tok)
        datasets, summary = {}, {}
        for split in rows.splits:
            entry = rows.meta["splits"][split]
            datasets[split] = TokenRows(rows.tokens, split, torch.from_numpy(rows.labels(split)), pad_id)
            summary.update({f"{split}_size": rows.size(split), f"{split}_truncated": entry["truncated"],
                            f"{split}_mean_tokens": entry["mean_tokens"]})
        self.state_dict_ = {
            "labels": label_names,
            "max_length": rows.max_length,
            "pad_id": pad_id,
            "vocab_size": tok.get_vocab_size(),
            "tokenizer": TOKENIZER_FILE,
            "special_ids": sorted({tok.token_to_id(t) for t in SPECIAL_TOKENS} - {None}),
        }
        detail = f"method {choice.method} ({choice.reason})" if choice else None
        summary.update(classes=len(label_names), vocab_size=tok.get_vocab_size(),
                       found=self._found(rows, datasets["train"].targets, detail))
        if choice:
            summary["method"] = choice.record()
        return Splits(train=datasets["train"], val=datasets.get("val"), test=datasets.get("test"), summary=summary)

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.state_dict_["vocab_size"], "num_classes": len(self.labels),
                "pad_id": self.state_dict_["pad_id"], "ignored_ids": self.state_dict_.get("special_ids", [])}

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
    def fit_directly(self, model: nn.Module, splits: Splits) -> dict[str, Any] | None:
        """The stack (model.method=stack) is fitted by logistic regression on its own features, not by steps."""
        from modelforge.models.text_stack import TextStackClassifier

        if not isinstance(model, TextStackClassifier):
            return None
        from modelforge.tasks.text.stack_fit import fit_stack

        return fit_stack(model, splits)

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
        from modelforge.render import samples

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
