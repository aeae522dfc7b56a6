"""Word embeddings: word2vec skip-gram or CBOW with negative sampling on Shakespeare, the English Bible or .txt files.

The corpus is cut into blank-line-separated segments (windows never cross one); its end is held out contiguously,
``val_fraction`` of the words then ``test_fraction``, as in language modelling. The vocabulary (words seen at least
``min_count`` times in the training part) is saved in the artifact as ``vocab.tsv``. The model decides the
objective (``WordEmbeddings.objective``): skip-gram models (``forward(center, context, negatives)``) train on (centre,
context) pairs, CBOW models (``forward(context, center, negatives, context_mask)``) on a centre's whole padded
window. Both come from ``word_pairs`` (subsampling, dynamic windows) seeded with ``train.seed``; the negatives of each
batch are drawn inside ``training_step`` from the global torch RNG, which checkpoints capture, so a resumed run is
exact. The held-out examples get fixed negatives, so validation losses are comparable between evaluations.

Evaluation reports the held-out loss and the accuracy on a relation file (``word_relations``: related pairs within
the top ``eval_k`` neighbours, 3CosAdd analogies). Prediction maps a word to its nearest neighbours.
"""

from __future__ import annotations

import difflib
import inspect
import json
import typing
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.config import StrictConfig
from modelforge.core.errors import ArtifactError, ConfigError, DataError
from modelforge.core.registry import get, register
from modelforge.data.split_config import TestFraction, ValFraction
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.embeddings.word_pairs import (
    Vocabulary,
    corpus_pairs,
    corpus_windows,
    noise_distribution,
    segments,
)
from modelforge.tasks.embeddings.word_relations import (
    BUILTIN,
    for_corpus,
    read_relations,
    relation_hits,
    score_relations,
)
from modelforge.tasks.export_graphs import GraphSet, OnnxGraph, Verification
from modelforge.tasks.metrics import across_ranks, summed_in_order

VOCAB_FILE = "vocab.tsv"
# The objective, by the first parameter of the network's forward: what the model predicts from.
OBJECTIVES = {"center": "skipgram", "context": "cbow"}


class EmbeddingDataConfig(StrictConfig):
    source: Literal["shakespeare", "bible", "file"] = "shakespeare"
    path: Optional[str] = Field(None, description="file source: a .txt file or a folder of them")
    pattern: str = Field("*.txt", description="file source with a folder: which files to read")
    encoding: str = "utf-8"
    bible_key: str = Field("Gen-Rev", description="bible source: the range to read (e.g. 'John' for a quick run)")
    # characters, not items as the shared Limit counts (hence its own bound)
    limit: Optional[int] = Field(None, ge=100, description="use only the first N characters of the corpus")
    lowercase: bool = True
    min_count: int = Field(5, ge=1, description="drop words seen fewer times than this in the training part")
    max_vocab: Optional[int] = Field(None, ge=2, description="keep at most this many of the most frequent words")
    window: int = Field(5, ge=1, description="largest distance to a context word (each centre draws 1..window)")
    subsample: float = Field(1e-3, ge=0, description="word2vec's frequent-word subsampling threshold t (0: off)")
    negatives: int = Field(5, ge=1, description="noise words per (centre, context) pair or CBOW window")
    noise_power: float = Field(0.75, ge=0, description="negatives are drawn from unigram counts ** this")
    val_fraction: ValFraction = 0.02  # the words after the training part
    test_fraction: TestFraction = 0.02  # the words at the very end
    eval_pairs: int = Field(20000, ge=1, description="held-out pairs (CBOW: windows) evaluated (evenly spaced)")
    relations: Optional[str] = Field(BUILTIN, description="relation file for accuracy ('builtin', a TSV, or null)")
    eval_k: int = Field(10, ge=1, description="a related word counts as found within this many nearest neighbours")


@register("task", "word_embeddings")
class WordEmbeddings(Task):
    """Learn word vectors (word2vec skip-gram or CBOW, negative sampling) from Shakespeare, the Bible or .txt files."""

    name = "word_embeddings"
    capabilities = frozenset({"neighbors"})
    DataConfig = EmbeddingDataConfig
    input_kind = "text"
    evaluation_gathers_ranks = True  # evaluate gathers its loss sums once (across_ranks): a rank may take a share

    def __init__(self, recipe: Any, state: dict[str, Any] | None = None):
        super().__init__(recipe, state)
        self._vocab: Vocabulary | None = None
        self._relations: list | None = None

    # ---- data -------------------------------------------------------------------------------------------------
    def _corpus(self) -> str:
        cfg = self.data_cfg
        if cfg.source == "shakespeare":
            from modelforge.data.builtin.shakespeare import load_shakespeare

            text = load_shakespeare()
        elif cfg.source == "bible":
            from modelforge.data.builtin.bible import bible_english_corpus

            text = bible_english_corpus(cfg.bible_key)
        else:
            from modelforge.data.formats.text_corpus import read_text_corpus

            if not cfg.path:
                raise ConfigError("data.source=file needs data.path=FILE_OR_FOLDER (plain .txt text)")
            text = read_text_corpus(Path(cfg.path).expanduser(), cfg.encoding, cfg.pattern).join()
        return text[: cfg.limit] if cfg.limit else text

    @staticmethod
    def _cut(blocks: list[list[str]], cut: int) -> tuple[list[list[str]], list[list[str]]]:
        """The segments before and after word number ``cut`` (the segment holding it is cut in two)."""
        seen = 0
        for i, block in enumerate(blocks):
            if seen + len(block) > cut:
                head, tail = block[: cut - seen], block[cut - seen :]
                return blocks[:i] + ([head] if head else []), [tail, *blocks[i + 1 :]]
            seen += len(block)
        return blocks, []

    def _split(self, blocks: list[list[str]]) -> dict[str, list[list[str]]]:
        """Contiguous parts: training words, then ``val_fraction`` of them, then ``test_fraction`` at the end."""
        cfg = self.data_cfg
        if cfg.val_fraction + cfg.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction leave no training text; lower them")
        total = sum(len(b) for b in blocks)
        train, rest = self._cut(blocks, int(total * (1 - cfg.val_fraction - cfg.test_fraction)))
        val, test = self._cut(rest, int(total * cfg.val_fraction))
        return {"train": train, "val": val, "test": test}

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        blocks = segments(self._corpus(), cfg.lowercase)
        if not blocks:
            raise DataError(f"the {cfg.source} corpus has no words; give a text corpus with some words in it")
        parts = self._split(blocks)
        counts = Counter(w for block in parts["train"] for w in block)
        vocab = Vocabulary.build(counts, cfg.min_count, cfg.max_vocab)
        self._vocab = vocab
        rng = np.random.default_rng(self.recipe.train.seed)
        arrays, kept = self._examples(parts["train"], vocab, rng)
        if len(arrays[0]) == 0:
            raise DataError("the training corpus gives no (word, context) pairs; give more text or lower min_count")
        train = TensorDataset(*map(torch.from_numpy, arrays))
        held = {split: self._held_out(parts[split], vocab, rng) for split in ("val", "test")}
        self.state_dict_ = {"vocab_size": len(vocab), "vocab": VOCAB_FILE, "lowercase": cfg.lowercase}
        unit = "pairs" if self.objective == "skipgram" else "windows"
        summary = {
            "words": sum(len(b) for b in blocks), "train_words": sum(counts.values()), "vocab_size": len(vocab),
            "train_tokens_after_subsampling": kept, f"train_{unit}": len(train),
            **{f"{split}_{unit}": len(data) if data else 0 for split, data in held.items()},
        }
        if cfg.source == "file":
            from modelforge.data.found import files_found

            sizes = {split: sum(len(b) for b in part) for split, part in parts.items()}
            summary["found"] = files_found(cfg.path, sizes, Path(cfg.path).name, how=", from its end",
                                           detail=f"vocabulary {len(vocab)} words; split sizes in words")
        return Splits(train=train, val=held["val"], test=held["test"], summary=summary)

    def _held_out(self, blocks: list[list[str]], vocab: Vocabulary, rng: np.random.Generator) -> TensorDataset | None:
        """Up to ``eval_pairs`` evenly spaced examples of held-out text, each with fixed negatives; None if none."""
        cfg = self.data_cfg
        arrays, _ = self._examples(blocks, vocab, rng)
        count = len(arrays[0])
        if not count:
            return None
        pick = np.unique(np.linspace(0, count - 1, min(cfg.eval_pairs, count)).round()).astype(np.int64)
        noise = noise_distribution(np.asarray(vocab.counts), cfg.noise_power)
        negatives = rng.choice(len(vocab), size=(len(pick), cfg.negatives), p=noise).astype(np.int64)
        return TensorDataset(*(torch.from_numpy(a[pick]) for a in arrays), torch.from_numpy(negatives))

    # ---- vocabulary -------------------------------------------------------------------------------------------
    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            if self.artifact_dir is None:
                raise ArtifactError("the vocabulary is not built yet: call datasets() or load a trained artifact")
            file = self.artifact_dir / self.state_dict_.get("vocab", VOCAB_FILE)
            if not file.is_file():
                raise ArtifactError(f"{file} is missing; the artifact is incomplete")
            self._vocab = Vocabulary.from_tsv(file.read_text(encoding="utf-8"), str(file))
        return self._vocab

    def extra_files(self) -> dict[str, bytes]:
        return {VOCAB_FILE: self.vocab.to_tsv().encode("utf-8")}

    def word_id(self, word: Any, position: int = 1) -> int:
        """The id of ``word``; an unknown word is a one-line error suggesting close vocabulary words."""
        if not isinstance(word, str) or not word.strip():
            raise DataError(f"input {position}: give a word (a non-empty string), got {word!r}")
        key = word.strip().lower() if self.state_dict_.get("lowercase", True) else word.strip()
        found = self.vocab.index.get(key)
        if found is None:
            close = difflib.get_close_matches(key, self.vocab.words, n=5)
            hint = f"; close words: {', '.join(close)}" if close else ""
            raise DataError(f"{word!r} is not in the vocabulary of {len(self.vocab)} words{hint}")
        return found

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.state_dict_["vocab_size"]}

    def _unsupported(self) -> ConfigError:
        return ConfigError(f"word_embeddings trains word2vec models; model.name must be skipgram or cbow, not "
                           f"{self.recipe.model.name!r}")

    @cached_property
    def objective(self) -> Literal["skipgram", "cbow"]:
        """What the recipe's network learns from, read off its class (the builder's return annotation) before it is
        built: ``skipgram`` when ``forward`` starts with ``center``, ``cbow`` when it starts with ``context``."""
        network = typing.get_type_hints(get("model", self.recipe.model.name).builder).get("return")
        if not isinstance(network, type) or not hasattr(network, "nearest"):
            raise self._unsupported()
        first = next((p for p in inspect.signature(network.forward).parameters if p != "self"), None)
        if first not in OBJECTIVES:
            raise self._unsupported()
        return OBJECTIVES[first]

    def build_model(self) -> nn.Module:
        self.objective  # noqa: B018 -- raises the one-line ConfigError for a network that is not word2vec
        return super().build_model()

    # ---- the objective: the only place skip-gram and CBOW differ --------------------------------------------------
    def _examples(self, blocks: list[list[str]], vocab: Vocabulary,
                  rng: np.random.Generator) -> tuple[tuple[np.ndarray, ...], int]:
        """The training examples of ``blocks`` as aligned arrays, and the tokens kept after subsampling: skip-gram
        ``(centres, contexts)``, CBOW ``(contexts (n, 2·window), context mask, centres)``."""
        cfg = self.data_cfg
        if self.objective == "skipgram":
            centres, contexts, kept = corpus_pairs(blocks, vocab, cfg.window, cfg.subsample, rng)
            return (centres, contexts), kept
        contexts, mask, centres, kept = corpus_windows(blocks, vocab, cfg.window, cfg.subsample, rng)
        return (contexts, mask, centres), kept

    def _logits(self, model: nn.Module, examples: tuple[torch.Tensor, ...], negatives: torch.Tensor) -> torch.Tensor:
        """The model's (batch, 1 + negatives) scores for a batch of ``_examples``."""
        if self.objective == "skipgram":
            centres, contexts = examples
            return model(centres, contexts, negatives)
        contexts, mask, centres = examples
        return model(contexts, centres, negatives, context_mask=mask)

    @staticmethod
    def _plain(model: nn.Module) -> nn.Module:
        """The network itself under DDP (``module``) or torch.compile (``_orig_mod``) wrappers."""
        for attr in ("module", "_orig_mod"):
            model = getattr(model, attr, model)
        return model

    # ---- training ---------------------------------------------------------------------------------------------
    @staticmethod
    def _loss(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Negative-sampling loss per pair: −log σ(true) − Σ log σ(−noise)."""
        logits = logits.float()
        per_pair = -(F.logsigmoid(logits[:, 0]) + F.logsigmoid(-logits[:, 1:]).sum(1))
        return per_pair.mean() if reduction == "mean" else per_pair.sum()

    def _noise(self, device: torch.device) -> torch.Tensor:
        noise = getattr(self, "_noise_probs", None)
        if noise is None or noise.device != device:
            probs = noise_distribution(np.asarray(self.vocab.counts), self.data_cfg.noise_power)
            noise = self._noise_probs = torch.tensor(probs, dtype=torch.float64, device=device)
        return noise

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        size, device = len(batch[0]), batch[0].device
        draws = torch.multinomial(self._noise(device), size * self.data_cfg.negatives, True)
        return StepOutput(self._loss(self._logits(model, tuple(batch), draws.view(size, -1))))

    def relations(self) -> list:
        if self._relations is None:
            source = self.data_cfg.relations
            items = read_relations(source) if source else []
            builtin_corpus = self.data_cfg.source if self.data_cfg.source != "file" else None
            self._relations = for_corpus(items, builtin_corpus if source == BUILTIN else None)
        return self._relations

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        sums, counts = [], []  # per batch: summed negative-sampling loss, examples
        for *examples, negatives in loader:
            sums.append(float(self._loss(self._logits(model, tuple(examples), negatives), reduction="sum")))
            counts.append(len(negatives))
        sums, counts = across_ranks(np.array(sums, dtype=np.float64), np.array(counts, dtype=np.int64))
        count = int(counts.sum())
        metrics: dict[str, Any] = {"loss": summed_in_order(sums) / count} if count else {}
        # the relation scores read the word vectors, the same on every rank: only the loss comes from the batches
        vectors = self._plain(model).vectors
        metrics.update(score_relations(vectors, self.vocab.index, self.relations(), self.data_cfg.eval_k))
        return metrics

    # ---- export -----------------------------------------------------------------------------------------------
    def export_graphs(self, model: nn.Module) -> GraphSet:
        """The word vectors as ``model.embeddings.onnx``: ``word_ids`` (batch) → ``vectors`` (batch, dim), the input
        embeddings word2vec keeps; the words, in id order, are in the ``modelforge.vocabulary`` metadata (JSON)."""
        network = self._plain(model).eval()
        lookup = network.in_vectors
        axes = {"word_ids": {0: "batch"}, "vectors": {0: "batch"}}
        example = torch.arange(min(3, len(self.vocab)), dtype=torch.long)

        def verify(files: dict[str, Path]) -> Verification:
            import onnxruntime as ort

            session = ort.InferenceSession(str(files["embeddings"]), providers=["CPUExecutionProvider"])
            ids = torch.arange(len(self.vocab), dtype=torch.long)  # every word: the table is small
            (actual,) = session.run(None, {"word_ids": ids.numpy()})
            diff = float(np.abs(actual - lookup.weight.detach().numpy()).max())
            if not diff <= 1e-6:
                raise ArtifactError(f"ONNX word vectors differ from PyTorch's by {diff:.3g}")
            return Verification(diff, [f"all {len(self.vocab)} word vectors equal PyTorch's"])

        graph = OnnxGraph("embeddings", lookup, {"word_ids": example}, ["vectors"], axes)
        return GraphSet([graph], {"modelforge.vocabulary": json.dumps(self.vocab.words)}, verify)

    # ---- report -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
        """Relation items (evenly spread over the scored ones) with the model's nearest words, marked found or
        missed as the relation accuracy counts them; without a relation file, the neighbours of a few words."""
        from modelforge.render import samples

        k, index = self.data_cfg.eval_k, self.vocab.index
        hits = relation_hits(self._plain(model).vectors, index, self.relations(), k)
        if not hits:
            ranks = samples.spread(min(len(self.vocab), 1000) - 20, count)  # skip the 20 most frequent words
            words = [self.vocab.words[20 + i] for i in ranks] if len(self.vocab) > 40 else self.vocab.words[:count]
            rows = [(w, ", ".join(n["word"] for n in self.neighbors(model, w, 5))) for w in words]
            return ReportSamples(html=samples.table(["word", "nearest words"], rows),
                                 note="no relation file scored: the neighbours of words spread over the vocabulary")
        shown = [hits[i] for i in samples.spread(len(hits), count)]
        rows = []
        for hit in shown:
            words = hit.relation.words
            asked = f"{words[0]} – {words[1]}" if hit.relation.kind == "pair" else "{} : {} :: {} : ?".format(*words)
            rows.append((asked, ", ".join(self.vocab.words[i] for i in hit.nearest[:5]), words[-1]))
        found = [hit.found for hit in shown]
        return ReportSamples(
            html=samples.table(["relation", "nearest (top 5)", "expected"], rows, found),
            note=f"{sum(found)} of {len(found)} found within the top {k}; evenly spread over the {len(hits)} scored "
                 "relation items",
        )

    # ---- neighbours and serving -------------------------------------------------------------------------------
    def _k(self) -> int:
        return int((self.recipe.serve or {}).get("k", 10))

    def neighbors(self, model: nn.Module, word: str, k: int | None = None) -> list[dict[str, Any]]:
        """The ``k`` words most cosine-similar to ``word`` (itself excluded)."""
        ids, sims = self._plain(model).nearest([self.word_id(word)], min(k or self._k(), len(self.vocab) - 1))
        return [{"word": self.vocab.words[i], "similarity": round(s, 4)} for i, s in zip(ids[0].tolist(),
                                                                                       sims[0].tolist())]

    def analogy(self, model: nn.Module, a: str, b: str, c: str, k: int | None = None) -> list[dict[str, Any]]:
        """a is to b as c is to …? (3CosAdd over unit vectors, a, b and c excluded)."""
        ids = [self.word_id(w, i + 1) for i, w in enumerate((a, b, c))]
        k = min(k or self._k(), len(self.vocab) - 3)
        found, sims = self._plain(model).analogy(*ids, k=k)
        return [{"word": self.vocab.words[i], "similarity": round(s, 4)} for i, s in zip(found.tolist(),
                                                                                        sims.tolist())]

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        if not inputs:
            raise DataError("no inputs given; pass at least one word")
        return torch.tensor([self.word_id(w, i + 1) for i, w in enumerate(inputs)], dtype=torch.long)

    def forward(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._plain(model).nearest(batch, min(self._k(), len(self.vocab) - 1))

    def postprocess(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> list[dict[str, Any]]:
        ids, sims = outputs
        return [{"neighbors": [{"word": self.vocab.words[i], "similarity": round(s, 4)}
                               for i, s in zip(row_i, row_s)]}
                for row_i, row_s in zip(ids.tolist(), sims.tolist())]
