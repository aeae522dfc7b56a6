"""The seq2seq tasks' sentence pairs as a row token file (``data/row_tokens.py``): the source and target ids of
every split tokenized once, reused by later runs, read batch by batch — never one padded tensor in memory — and the
raw texts beside them (``keep_texts``: the metrics read texts, never detokenised ids), read per batch too.

Columns ``SPLIT/source`` and ``SPLIT/target`` hold the ids ``encode_sources`` / ``encode_targets`` give (truncated,
``<bos> … <eos>``) and the untruncated texts. The cache key is the tokenizer (the BPE settings it is trained with, or
a checkpoint's tokenizer files and special ids), a hash of the pairs of every split (after ``limit``, ``val_limit``,
``test_limit``: the pairs are read into memory to cut the splits, then dropped) and the two truncation lengths.
A file built before texts were stored beside the ids is rebuilt. Trained BPE tokenizers are
kept beside the ids (``K.tokenizer.json``, ``K.tokenizer_target.json``), so a second run trains nothing. The
``max_train_tokens`` filter is applied when the datasets are made (from the lengths in the file), not in the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.core.atomic import atomic_write_text
from modelforge.data.row_tokens import RowView, TextRows, open_row_tokens, write_rows
from modelforge.data.token_file import TokenFile, build_lock, cache_key, token_folder
from modelforge.data.tokenizers import Tokenizer

log = logging.getLogger("modelforge.data")
Pairs = tuple[list[str], list[str]]  # (sources, targets)


class PairDataset(Dataset):
    """Encoded pairs of one split; ``get_batch`` gathers a dict batch trimmed to its longest source and target, with
    the raw source and reference texts (the metrics read texts, never detokenised ids). ``sources`` / ``targets``
    read the split's texts from the file like lists; pickling (DataLoader workers) carries paths only."""

    def __init__(self, split: str, src: RowView, tgt: RowView, sources: TextRows, targets: TextRows, pad_id: int):
        if not len(src) == len(tgt) == len(sources) == len(targets):
            raise ValueError(f"split {split!r}: {len(src)}/{len(tgt)} id rows for {len(sources)}/{len(targets)} texts")
        self.split, self.sources, self.targets, self.pad_id = split, sources, targets, pad_id
        self.src_view, self.tgt_view = src, tgt

    def __len__(self) -> int:
        return len(self.src_view)

    @property
    def src_lengths(self) -> torch.Tensor:
        return torch.from_numpy(self.src_view.lengths())

    @property
    def tgt_lengths(self) -> torch.Tensor:
        return torch.from_numpy(self.tgt_view.lengths())

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_batch([index])

    def get_batch(self, indices: Any) -> dict[str, Any]:
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        src, src_lengths = self.src_view.gather(index, self.pad_id, trim=True)
        tgt, _ = self.tgt_view.gather(index, self.pad_id, trim=True)
        return {"src": src, "src_lengths": src_lengths, "tgt": tgt,
                "sources": self.sources.take(index), "references": self.targets.take(index), "split": self.split}


def _digest(parts: Mapping[str, Pairs]) -> str:
    digest = hashlib.sha256()
    for split, (sources, targets) in sorted(parts.items()):
        for value in (split, *sources, "\0target", *targets):
            digest.update(value.encode("utf-8", errors="surrogatepass") + b"\0")
    return digest.hexdigest()


def _tokenizer_files(folder: Path, key: str, shared: bool) -> dict[str, Path]:
    files = {"source": folder / f"{key}.tokenizer.json"}
    files["target"] = files["source"] if shared else folder / f"{key}.tokenizer_target.json"
    return files


def prepare_pair_rows(task: Any, parts: Mapping[str, Pairs]) -> TokenFile:
    """The row token file of ``parts`` for ``task`` (a Translation), built on the first run and opened from then
    on; ``task``'s tokenizers and state are set (trained, loaded from the cache or the checkpoint's)."""
    cfg = task.data_cfg
    if task.pretrained:
        task.build_tokenizers(*parts["train"])  # the checkpoint's: nothing to train
        identity = json.dumps([hashlib.sha256(b"".join(task.checkpoint_text().files().values())).hexdigest(),
                               task.state()], sort_keys=True)
    else:
        identity = cfg.tokenizer.model_dump_json()
    key = cache_key("pairs", identity, _digest(parts), f"{cfg.max_source_tokens}|{cfg.max_target_tokens}")
    folder = token_folder(Path(cfg.path).expanduser() if cfg.path else None)
    path = folder / f"{key}.tokens"
    files = _tokenizer_files(folder, key, cfg.tokenizer.shared)
    with build_lock(path):  # under torchrun one rank tokenizes; the others wait, then map the finished file
        found = open_row_tokens(path)
        if found is not None and "texts" not in found.meta:
            found = None  # built before the texts were stored beside the ids
        if found is not None and (task.pretrained or all(f.is_file() for f in files.values())):
            if not task.pretrained:
                task.set_tokenizers(Tokenizer.load(files["source"]), Tokenizer.load(files["target"]))
            log.info("token ids of the pairs: %s (reused)", path)
            return found
        if not task.pretrained:
            task.build_tokenizers(*parts["train"])
            for side, file in files.items():  # before the ids: the sidecar, written last, vouches for them all
                atomic_write_text(file, task.tokenizer(side).backend.to_str())
        return _write(task, parts, path)


def _write(task: Any, parts: Mapping[str, Pairs], path: Path) -> TokenFile:
    def encoder(encode: Any) -> Any:
        return lambda texts: (encode(texts), 0)  # truncation is counted nowhere for pairs

    columns: dict[str, tuple[Sequence[str], Any]] = {}
    for split, (sources, targets) in parts.items():
        columns[f"{split}/source"] = (sources, encoder(task.encode_sources))
        columns[f"{split}/target"] = (targets, encoder(task.encode_targets))
    state = task.state()
    tokens = write_rows(path, max(state["src_vocab_size"], state["tgt_vocab_size"]), columns,
                        {"pairs_of": sorted(parts)}, keep_texts=True)
    log.info("token ids of the pairs: %s (%d rows)", path, tokens.meta["row_count"])
    return tokens


def pair_datasets(task: Any, splits: Sequence[str], tokens: TokenFile, summary: dict[str, Any]
                  ) -> dict[str, PairDataset]:
    """One PairDataset per split, ids and texts read from ``tokens``; ``data.max_train_tokens`` drops long
    training pairs here. Fills ``summary``'s pair counts and mean token counts (targets without ``<bos>``/``<eos>``)."""
    from modelforge.core.errors import DataError

    most, pad_id, datasets = task.data_cfg.max_train_tokens, task.state()["pad_id"], {}
    for split in splits:
        src, tgt = RowView(tokens, f"{split}/source"), RowView(tokens, f"{split}/target")
        sources, targets = TextRows(tokens, f"{split}/source"), TextRows(tokens, f"{split}/target")
        if split == "train" and most:
            keep = np.flatnonzero((src.lengths() <= most) & (tgt.lengths() - 2 <= most))
            if not len(keep):
                raise DataError(f"data.max_train_tokens={most} drops every training pair")
            summary["train_dropped_long"] = len(src) - len(keep)
            src, tgt = src.subset(keep), tgt.subset(keep)
            sources, targets = sources.subset(keep), targets.subset(keep)
        datasets[split] = PairDataset(split, src, tgt, sources, targets, pad_id)
        summary[f"{split}_pairs"] = len(src)
        summary[f"{split}_mean_source_tokens"] = round(int(src.lengths().sum()) / len(src), 1)
        summary[f"{split}_mean_target_tokens"] = round(int(tgt.lengths().sum()) / len(tgt) - 2, 1)
    return datasets
