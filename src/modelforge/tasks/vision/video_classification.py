"""Video classification: generated ``moving-digits`` clips or the user's clips in class folders → a video network.

Every clip becomes ``num_frames`` frames sampled uniformly over its length (OpenCV decodes, see
``data/formats/video.py``), converted to the wanted channels and squashed to ``image_size``² pixels: uint8
``(frames, channels, H, W)``. The user's clips are indexed (each one opened and its first frame decoded, so an
unreadable video is found before training starts and reported by path and reason: skipped and counted, or fatal with
``data.on_error=fail``; with ``data.check_clips=decode``, the default, every clip's frames are sampled once too, so a
truncated clip is found as well) and decoded per item in DataLoader workers (``data/lazy_video.py``). The generated
moving-digits clips are held in memory. The network sees float clips
``(batch, channels, frames, H, W)`` normalised with the training split's per-channel mean/std (saved in task.json).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.errors import DataError
from modelforge.core.registry import register
from modelforge.data.class_splits import check_classifier_splits
from modelforge.data.formats.video import clip_problems, sample_clip_frames
from modelforge.data.lazy_video import frames_to_clip
from modelforge.data.split_config import HeldOutSplitConfig
from modelforge.data.splits import holdout_split
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import classifier_evaluation, ranked_labels

log = logging.getLogger("modelforge.data")


def _holdout(n: int, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return holdout_split(n, size, seed, "clips")


class VideoDataConfig(HeldOutSplitConfig):
    source: Literal["moving-digits", "folder"] = "moving-digits"
    path: Optional[str] = Field(None, description="folder source: root/<class>/<clip> or root/{train,val,test}/…")
    num_frames: int = Field(8, ge=1, description="frames sampled uniformly from each clip")
    image_size: Optional[int] = Field(None, ge=8, description="square frame side after resizing (default: source's)")
    channels: Optional[Literal[1, 3]] = Field(None, description="1 = grayscale, 3 = RGB (default: source's own)")
    # moving-digits generation (see data/builtin/moving_digits.py)
    num_train: int = Field(5000, ge=1, description="moving-digits: generated training clips")
    num_val: int = Field(500, ge=0, description="moving-digits: generated validation clips")
    num_test: int = Field(500, ge=1, description="moving-digits: generated test clips")
    clip_frames: int = Field(16, ge=2, description="moving-digits: frames per generated clip")
    clip_size: Literal[32, 64] = Field(32, description="moving-digits: generated frame side in pixels")
    noise: float = Field(0.0, ge=0, description="moving-digits: Gaussian pixel noise (grey levels)")
    # folder splits
    # split_seed also seeds the generated clips of moving-digits
    on_error: Literal["skip", "fail"] = Field("skip", description="unreadable videos: skip (counted) or fail")
    check_clips: Literal["decode", "header"] = Field(
        "decode", description="folder source: 'decode' samples every clip's frames once while indexing (none kept), so "
        "truncated clips are skipped and counted before training; 'header' only opens each clip and decodes its "
        "first frame (a large folder starts at once; a clip truncated further on stops the run when first read)")


@register("task", "video_classification")
class VideoClassification(Task):
    """Classify video clips (moving-digits motions or a folder of clips per class)."""

    name = "video_classification"
    validation_metric = ("val_accuracy", "maximize")
    evaluation_gathers_ranks = True  # evaluate goes only through classifier_evaluation: a rank may take a share
    DataConfig = VideoDataConfig
    # served: the server decodes an uploaded video into frames (serve.inputs.check_video), which reach preprocess
    # as an array; `modelforge predict RUN clip.avi` and `modelforge video` read files
    input_kind = "video"
    frame_result = "label"

    def frames_per_prediction(self) -> int:
        data = self.data_cfg
        if data.source == "moving-digits":  # the classifier saw num_frames sampled from clip_frames-long clips
            return int(data.clip_frames)
        return int(self.state_dict_["num_frames"])

    # ---- data -------------------------------------------------------------------------------------------------
    def _moving_digits(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
        from modelforge.data.builtin.moving_digits import MOTION_CLASSES, ClipParams, moving_digits
        from modelforge.data.formats.video import sample_indices

        cfg = self.data_cfg
        params = ClipParams(num_train=cfg.num_train, num_val=cfg.num_val, num_test=cfg.num_test,
                            frames=cfg.clip_frames, size=cfg.clip_size, noise=cfg.noise, seed=cfg.split_seed)
        picks = sample_indices(cfg.clip_frames, cfg.num_frames)
        channels, size = cfg.channels or 1, cfg.image_size or cfg.clip_size
        parts = {}
        for split in ("train", "val", "test"):
            if split == "val" and cfg.num_val == 0:
                continue
            arrays = moving_digits(split, params)
            clips = arrays["clips"][:, picks]  # (N, T, S, S)
            if (channels, size) == (1, cfg.clip_size):
                clips = clips[:, :, None]
            else:
                clips = np.stack([frames_to_clip(c, channels, size) for c in clips])
            parts[split] = (np.ascontiguousarray(clips), arrays["labels"])
        return parts, list(MOTION_CLASSES)

    def _folder(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
        """The folder's index: per split, clip paths (bytes) and labels — each clip probed (opened, first frame
        decoded), none read whole; the frames are decoded per item (``data/lazy_video.py``)."""
        from modelforge.data.formats.video import read_video_folder

        cfg = self.data_cfg
        if not cfg.path:
            raise DataError("data.source=folder needs data.path=DIR (a folder of <class>/<video> sub-folders)")
        root = Path(cfg.path).expanduser()
        split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
        if "train" not in split_dirs:
            split_dirs = {"all": root}
        parts, classes = {}, None
        for split, directory in split_dirs.items():
            folder = read_video_folder(directory, classes=classes, on_error=cfg.on_error)
            classes = classes or folder.classes
            clips = self._decodable(folder.clips) if cfg.check_clips == "decode" else folder.clips
            paths = np.asarray([str(p).encode("utf-8", "surrogateescape") for p, _ in clips], dtype=np.bytes_)
            parts[split] = (paths, np.asarray([label for _, label in clips], dtype=np.int64))
            self._skipped += folder.skipped
        if self._skipped:
            log.warning("%d video(s) skipped as unreadable (data.on_error=fail stops instead)", len(self._skipped))
        return parts, list(classes or [])

    def _decodable(self, clips: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
        """data.check_clips=decode: the clips whose frames all sample (decoded one at a time, none kept); the others
        skipped and counted, or the first one fatal with data.on_error=fail. Under torchrun each rank samples only its
        share of the clips and every rank goes on with the gathered outcomes (``clip_problems``)."""
        num_frames, on_error = self.data_cfg.num_frames, self.data_cfg.on_error
        problems = clip_problems([path for path, _ in clips], lambda path: sample_clip_frames(path, num_frames),
                                 on_error)
        kept = []
        for (path, label), problem in zip(clips, problems):
            if problem is None:
                kept.append((path, label))
                continue
            if on_error == "fail":
                raise DataError(problem)
            self._skipped.append((str(path), problem.removeprefix(f"{path}: ")))
            log.warning("skipped %s: %s", path, self._skipped[-1][1])
        if not kept:
            raise DataError(f"no readable videos among {len(clips)} files")
        return kept

    def _lazy_splits(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Splits, list[int], Any]:
        """Folder splits decoded per item; the mean/std from a spread sample of the training clips."""
        from modelforge.data.lazy_video import ClipFileDataset, clip_statistics

        cfg = self.data_cfg
        channels, size = cfg.channels or 3, cfg.image_size or 64
        sets = {k: ClipFileDataset(paths, labels, cfg.num_frames, channels, size) for k, (paths, labels) in
                parts.items()}
        return Splits(sets["train"], sets.get("val"), sets.get("test")), [cfg.num_frames, channels, size, size], \
            clip_statistics(sets["train"])

    def _memory_splits(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Splits, list[int], Any]:
        """The generated clips, held in memory; the mean/std over the whole training split."""
        tensors = {k: (torch.from_numpy(c), torch.from_numpy(y)) for k, (c, y) in parts.items()}
        train_x = tensors["train"][0]
        _, frames, channels, size, _ = train_x.shape
        stats = train_x.float().div(255).transpose(1, 2).reshape(len(train_x), channels, -1)
        mean = stats.mean(dim=(0, 2)).tolist()
        std = stats.std(dim=(0, 2)).clamp_min(1e-6).tolist() if stats.numel() > 1 else [1.0] * channels
        return Splits.from_tensors(tensors, {}), list(train_x.shape[1:]), (mean, std)

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        self._skipped: list[tuple[str, str]] = []
        parts, classes = self._moving_digits() if cfg.source == "moving-digits" else self._folder()
        read_splits = list(parts)
        if "all" in parts:
            parts["train"] = parts.pop("all")
        if cfg.source == "folder" and "test" not in parts:  # no test/ folder (train/ + val/ too): a share of train
            clips, labels = parts["train"]
            keep, test = _holdout(len(clips), cfg.test_size, cfg.split_seed)
            parts["train"] = (clips[keep], labels[keep])
            if len(test):  # data.test_size=0: no test split
                parts["test"] = (clips[test], labels[test])
        if cfg.source == "folder" and "val" not in parts and cfg.val_size > 0:
            clips, labels = parts["train"]
            keep, val = _holdout(len(clips), cfg.val_size, cfg.split_seed + 1)
            parts["train"], parts["val"] = (clips[keep], labels[keep]), (clips[val], labels[val])
        if cfg.limit:
            parts["train"] = tuple(a[: cfg.limit] for a in parts["train"])
        check_classifier_splits({k: v[1] for k, v in parts.items()}, classes, cfg.path or f"data.source={cfg.source}")
        build = self._memory_splits if cfg.source == "moving-digits" else self._lazy_splits
        splits, shape, (mean, std) = build(parts)
        frames, channels, size = shape[0], shape[1], shape[-1]
        self.state_dict_ = {"labels": classes, "channels": int(channels), "image_size": int(size),
                            "num_frames": int(frames), "mean": mean, "std": std}
        summary: dict[str, Any] = {f"{k}_size": len(v[0]) for k, v in parts.items()}
        summary.update(classes=len(classes), clip_shape=shape, skipped=len(self._skipped))
        if cfg.source == "folder":
            from modelforge.data.found import class_counts, split_folders_found

            counts = class_counts([classes[i] for i in parts["train"][1]], classes)
            summary["found"] = split_folders_found(f"{cfg.path} (one folder per class)", cfg.path, read_splits,
                                                   {k: len(v[0]) for k, v in parts.items()}, counts)
        splits.summary = summary
        return splits

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        s = self.state_dict_
        return {"num_classes": len(s["labels"]), "in_channels": s["channels"], "image_size": s["image_size"],
                "num_frames": s["num_frames"]}

    def normalize(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, C, H, W) → normalised float (B, C, T, H, W), the Conv3d layout."""
        mean = torch.tensor(self.state_dict_["mean"], device=clips.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.state_dict_["std"], device=clips.device).view(1, -1, 1, 1, 1)
        return (clips.float().div(255).transpose(1, 2) - mean) / std

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        clips, labels = batch
        return StepOutput(F.cross_entropy(model(self.normalize(clips)), labels))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        batches = ((model(self.normalize(clips)), labels) for clips, labels in loader)
        return classifier_evaluation(batches, len(self.labels))

    # ---- inputs -----------------------------------------------------------------------------------------------
    def clip_from_frames(self, frames: np.ndarray) -> np.ndarray:
        """Any number of uint8 frames (T, H, W[, 3]) → this model's (num_frames, C, S, S) clip, sampled uniformly."""
        from modelforge.data.formats.video import sample_indices

        s = self.state_dict_
        frames = np.asarray(frames)
        if len(frames) != s["num_frames"]:
            frames = frames[sample_indices(len(frames), s["num_frames"])]
        return frames_to_clip(frames, s["channels"], s["image_size"])

    def _clip(self, item: Any) -> np.ndarray:
        s = self.state_dict_
        if isinstance(item, np.ndarray):
            if item.shape == (s["num_frames"], s["channels"], s["image_size"], s["image_size"]):
                return item.astype(np.uint8)  # already a prepared clip (as the datasets hold them)
            return self.clip_from_frames(item)
        if isinstance(item, (str, Path)):
            if not Path(item).is_file():
                raise DataError(f"{item}: no such video file (give a video path such as clip.avi)")
            return frames_to_clip(sample_clip_frames(item, s["num_frames"]), s["channels"], s["image_size"])
        raise DataError(f"cannot read video input {str(item)[:80]!r}: give a video file path or a frame array")

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        return self.normalize(torch.from_numpy(np.stack([self._clip(item) for item in inputs])))

    def postprocess(self, outputs: torch.Tensor, top_k: int = 5) -> list[dict[str, Any]]:
        return ranked_labels(outputs, self.labels, top_k)

    def input_spec(self) -> dict[str, Any]:
        s = self.state_dict_
        return {"kind": "video", "channels": s["channels"], "image_size": s["image_size"],
                "num_frames": s["num_frames"]}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        s = self.state_dict_
        return {"clip": torch.randn(batch_size, s["channels"], s["num_frames"], s["image_size"], s["image_size"])}

    # ---- report -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        dataset = splits.test if splits.test is not None else splits.val
        if dataset is None or len(dataset) == 0:
            return ReportSamples(note="the recipe has no test or validation split")
        picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset), 8)).astype(int))
        clips, labels = dataset.get_batch(picks)
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            results = self.postprocess(model(self.normalize(clips.to(device))))
        finally:
            model.train(was_training)
        truths = [self.labels[int(y)] for y in labels]
        return ReportSamples(png=clip_strip_png(clips.numpy(), results, truths))


def clip_strip_png(clips: np.ndarray, results: list[dict[str, Any]], truths: list[str]) -> bytes:
    """One row per clip: its sampled frames left to right, titled "predicted p (true …)" — green right, red wrong."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows, frames = clips.shape[:2]
    fig = Figure(figsize=(1.1 * frames + 0.2, 1.25 * rows + 0.2), dpi=80)
    for r, (clip, result, truth) in enumerate(zip(clips, results, truths)):
        for t in range(frames):
            ax = fig.add_subplot(rows, frames, r * frames + t + 1)
            frame = clip[t]
            ax.imshow(frame[0] if frame.shape[0] == 1 else frame.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            ax.axis("off")
            if t == 0:
                ok = result["label"] == truth
                ax.set_title(f"{result['label']} {result['probability']:.2f} (true {truth})", fontsize=8,
                             loc="left", color="tab:green" if ok else "tab:red")
    fig.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
