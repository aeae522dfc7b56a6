"""The user's recordings read from disk item by item: an index of WAV paths, targets (a label or transcript token
ids) and lengths taken from the WAV headers in memory; each waveform is decoded and resampled in ``__getitem__`` —
so memory stays flat however many hours the manifest lists, and DataLoader workers decode while the model trains.

Items are a pure function of the index. Noise, speed perturbation, features and SpecAugment run on the padded batch
inside the task's step with the trainer's RNG (as for the utterances held in memory), so the batches are identical
with any number of workers and a resumed run hears exactly what an uninterrupted one does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.core.errors import DataError
from modelforge.data.audio import FeatureConfig, read_wav, read_wav_header
from modelforge.data.formats.speech_manifest import SpeechRecord
from modelforge.data.lazy_images import rows_over_ranks
from modelforge.data.padding import collate_speech

log = logging.getLogger("modelforge.data")


def _encode_paths(paths: Sequence[Path]) -> np.ndarray:
    # one bytes array, not a list of Path objects: forked workers share it without copy-on-write
    return np.asarray([str(p).encode("utf-8", "surrogateescape") for p in paths], dtype=np.bytes_)


class WavFileDataset(Dataset):
    """``(float32 waveform at the configured rate, target)`` per item, read from ``paths[i]`` when asked.

    A target is a 0-d int64 label or a 1-d int64 row of token ids; all of them live in one flat array with offsets.
    ``lengths`` are the decoded lengths in samples, known from the headers (``WavHeader.length_at``).
    """

    loads_from_disk = True  # the trainer gives such datasets DataLoader workers by default (train.num_workers)

    def __init__(self, paths: Sequence[Path] | np.ndarray, targets: Sequence[torch.Tensor], lengths: Sequence[int],
                 sample_rate: int, max_seconds: float | None):
        if not len(paths) == len(targets) == len(lengths):
            raise ValueError("WavFileDataset needs one target and one length per path")
        if not len(paths):
            raise DataError("a speech split holds no utterances; enlarge the manifest")
        self.paths = paths if isinstance(paths, np.ndarray) else _encode_paths(paths)
        self.scalar_targets = targets[0].dim() == 0
        sizes = np.asarray([t.numel() for t in targets], dtype=np.int64)
        self.target_offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.target_ids = np.concatenate([t.reshape(-1).numpy() for t in targets]).astype(np.int64)
        self.lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        self.sample_rate, self.max_seconds = sample_rate, max_seconds

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return Path(self.paths[index].decode("utf-8", "surrogateescape"))

    def target(self, index: int) -> torch.Tensor:
        row = torch.from_numpy(self.target_ids[self.target_offsets[index]:self.target_offsets[index + 1]].copy())
        return row[0] if self.scalar_targets else row

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        wave = read_wav(self.path(index), self.sample_rate, self.max_seconds)
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), self.target(index)

    @property
    def targets(self) -> list[torch.Tensor]:
        return [self.target(i) for i in range(len(self))]

    def get_batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
        return collate_speech([self[int(i)] for i in indices])

    def subset(self, indices: Sequence[int] | np.ndarray) -> WavFileDataset:
        picked = np.asarray(indices, dtype=np.int64)
        return WavFileDataset(self.paths[picked], [self.target(int(i)) for i in picked],
                              self.lengths[torch.from_numpy(picked)].tolist(), self.sample_rate, self.max_seconds)

    def seconds(self, sample_rate: int) -> float:
        return float(self.lengths.sum()) / sample_rate


def index_recordings(records: Sequence[SpeechRecord], features: FeatureConfig, skip: bool
                     ) -> tuple[list[SpeechRecord], list[int], list[str]]:
    """Check every record's WAV header (no samples read): the kept records, their decoded lengths in samples and the
    messages of the files skipped (``skip``), or the first bad file's one-line DataError (not ``skip``).

    Under torchrun each rank reads only its contiguous share of the headers and the (length, problem) rows are
    gathered (``lazy_images.rows_over_ranks``), so every rank keeps, skips and fails as one process; not skipping, a
    rank stops at the first bad file of its share (only the first counts)."""

    def header(index: int) -> tuple[int | None, str | None]:
        try:
            found = read_wav_header(records[index].path, features.max_seconds)
        except DataError as exc:
            return None, str(exc)
        return found.length_at(features.sample_rate), None

    rows = rows_over_ranks(np.arange(len(records)), header, None if skip else (lambda row: row[1] is not None))
    kept, lengths, skipped = [], [], []
    for record, row in zip(records, rows, strict=True):
        length, problem = row  # a row left None by a stopped rank lies past the first problem: never reached
        if problem is not None:
            if not skip:
                raise DataError(problem)
            skipped.append(problem)
            log.warning("skipped %s", problem)
            continue
        kept.append(record)
        lengths.append(length)
    if skipped:
        log.warning("%d audio file(s) skipped (set data.on_error=fail to stop instead)", len(skipped))
    return kept, lengths, skipped
