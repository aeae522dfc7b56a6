"""Video clips read from disk item by item (the user's ``root/<class>/<clip>`` folders): the probed clip list in
memory, ``num_frames`` frames sampled, converted and squashed to ``size``² pixels in ``__getitem__`` — the same uint8
``(frames, channels, size, size)`` clip the task used to hold in memory, now decoded in DataLoader workers.

Items are a pure function of the index (no random transform happens here), so the batches are identical with any
number of workers and a resumed run sees exactly the data of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.core.errors import DataError
from modelforge.data.formats.video import sample_clip_frames

STATISTICS_SAMPLE = 256  # clips decoded to estimate the training mean/std (all of them in a smaller folder)


def frames_to_clip(frames: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 frames (T, H, W) or (T, H, W, 3) RGB → uint8 (T, channels, size, size): grey or RGB, squashed square."""
    import cv2

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] not in (1, 3)):
        raise DataError(f"a clip must be uint8 (T, H, W) or (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    out = np.empty((len(frames), channels, size, size), dtype=np.uint8)
    for t, frame in enumerate(frames):
        if frame.ndim == 3 and frame.shape[-1] == 1:
            frame = frame[..., 0]
        if channels == 1 and frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        elif channels == 3 and frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        if frame.shape[:2] != (size, size):
            shrinking = frame.shape[0] > size or frame.shape[1] > size
            frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        out[t] = frame[None] if channels == 1 else frame.transpose(2, 0, 1)
    return out


class ClipFileDataset(Dataset):
    """``(uint8 (num_frames, C, size, size) clip, int64 label)`` per item, decoded from ``paths[i]`` when asked."""

    loads_from_disk = True  # the trainer gives such datasets DataLoader workers by default (train.num_workers)

    def __init__(self, paths: Sequence[Path] | np.ndarray, labels: Sequence[int] | np.ndarray, num_frames: int,
                 channels: int, size: int):
        if len(paths) != len(labels):
            raise ValueError("ClipFileDataset needs as many labels as paths")
        # one bytes array, not a list of Path objects: forked workers share it without copy-on-write
        self.paths = paths if isinstance(paths, np.ndarray) else np.asarray(
            [str(p).encode("utf-8", "surrogateescape") for p in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_frames, self.channels, self.size = num_frames, channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return Path(self.paths[index].decode("utf-8", "surrogateescape"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            frames = sample_clip_frames(self.path(index), self.num_frames)
        except DataError as exc:
            raise DataError(f"{exc}; remove the file, or leave data.check_clips=decode to find such clips before "
                            f"training (skipped and counted)") from None
        return torch.from_numpy(frames_to_clip(frames, self.channels, self.size)), torch.tensor(self.labels[index])

    @property
    def targets(self) -> torch.Tensor:
        return torch.from_numpy(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ClipFileDataset:
        picked = np.asarray(indices, dtype=np.int64)
        return ClipFileDataset(self.paths[picked], self.labels[picked], self.num_frames, self.channels, self.size)

    def get_batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[int(i)] for i in indices]
        return torch.stack([clip for clip, _ in items]), torch.stack([label for _, label in items])


def clip_statistics(dataset: ClipFileDataset, sample: int = STATISTICS_SAMPLE) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels / 255 over up to ``sample`` evenly spaced clips, decoded one at a time —
    the figures the in-memory path computed over the whole split when the folder holds no more clips than that. Under
    torchrun each rank decodes only its share of the sample (lazy_images.pixel_statistics: exact integer sums, so the
    same figures on every rank)."""
    from modelforge.data.lazy_images import pixel_statistics

    # a clip is (frames, channels, size, size): channels first for the statistics
    return pixel_statistics(lambda index: dataset[index][0].transpose(0, 1), len(dataset), dataset.channels, sample)
