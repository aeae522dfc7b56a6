"""Audio classification: one label per utterance — keyword spotting over the generated ``spoken-commands`` set.

The label of an utterance is its transcript (a command phrase), so the same sources serve as for speech recognition:
the generated sets (test voices never heard in training) or a user manifest whose texts are the class names. Data
loading, augmentation and feature extraction are shared with ``speech_recognition``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.registry import register
from modelforge.data.class_splits import check_classifier_splits
from modelforge.data.padding import pad_rows
from modelforge.data.speech import (
    SPLIT_NAMES,
    SpeechDataConfig,
    audio_input_spec,
    augment_waveforms,
    check_split_sizes,
    collate_speech,
    example_features,
    load_records,
    read_input_audio,
    speech_features,
    speech_split,
)
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import classifier_evaluation, ranked_labels


class AudioClassificationDataConfig(SpeechDataConfig):
    source: Literal["spoken-commands", "spoken-digits", "manifest"] = Field(
        "spoken-commands", description="utterances labelled by their transcript (a command phrase)"
    )


def _label_of(text: str) -> str:
    return " ".join(text.split())


@register("task", "audio_classification")
class AudioClassification(Task):
    """Classify whole utterances into labels (keyword spotting over spoken commands, or your labelled WAVs)."""

    name = "audio_classification"
    explain_kind = "audio"
    validation_metric = ("val_accuracy", "maximize")
    evaluation_gathers_ranks = True  # evaluate goes only through classifier_evaluation: a rank may take a share
    DataConfig = AudioClassificationDataConfig
    input_kind = "audio"
    baseline = "audio"

    # ---- data -------------------------------------------------------------------------------------------------
    def datasets(self) -> Splits:
        cfg = self.data_cfg
        parts = load_records(cfg)
        check_split_sizes(parts)
        labels = sorted({_label_of(r.text) for r in parts["train"]})
        # a split the source does not have is an empty list here, not an error
        check_classifier_splits({split: [_label_of(r.text) for r in parts[split]] for split in SPLIT_NAMES
                                 if split == "train" or parts[split]}, labels, cfg.path or f"data.source={cfg.source}")
        index = {label: i for i, label in enumerate(labels)}
        built, summary = {}, {"source": cfg.source, "classes": len(labels)}
        for split in SPLIT_NAMES:
            # a held-out utterance of a label never trained on cannot be scored: it is dropped and counted
            records = [r for r in parts[split] if _label_of(r.text) in index]
            if len(records) < len(parts[split]):
                summary[f"{split}_unknown_labels"] = len(parts[split]) - len(records)
            if not records:
                continue
            built[split], kept, skipped = speech_split(
                cfg, records, split, lambda r: torch.tensor(index[_label_of(r.text)], dtype=torch.long))
            summary[f"{split}_size"] = len(kept)
            if skipped:
                summary["skipped_files"] = len(skipped)
                summary["first_skipped"] = skipped[0]
        self.state_dict_ = {"labels": labels, "n_features": cfg.features.n_features}
        summary["found"] = self._found(parts, labels, summary)
        return Splits(built["train"], built.get("val"), built.get("test"), summary)

    def _found(self, parts: dict[str, list], labels: list[str], summary: dict[str, Any]) -> str:
        from modelforge.data.found import class_counts, found_line

        cfg = self.data_cfg
        if cfg.source != "manifest":
            read, origin = f"the generated {cfg.source} utterances", "generated voices of its own"
        else:
            from modelforge.data.speech import manifest_origin

            read = f"{cfg.path} ({sum(map(len, parts.values()))} WAV files listed)"
            origin = manifest_origin(parts)
        sizes = {split: (summary[f"{split}_size"], origin) for split in SPLIT_NAMES if f"{split}_size" in summary}
        return found_line(read, class_counts([_label_of(r.text) for r in parts["train"]], labels), sizes)

    def collate(self, items: list[Any]) -> Any:
        return collate_speech(items)

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        n_features = self.state_dict_.get("n_features", self.data_cfg.features.n_features)
        return {"n_features": n_features, "n_mels": n_features, "num_classes": len(self.labels)}

    # ---- training and evaluation --------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        waves, wave_lengths, labels = batch
        waves, wave_lengths = augment_waveforms(self.data_cfg, waves, wave_lengths)
        feats, frames = speech_features(self.data_cfg, waves, wave_lengths, train=True)
        return StepOutput(F.cross_entropy(model(feats.transpose(1, 2), frames).float(), labels))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for waves, wave_lengths, labels in loader:
                feats, frames = speech_features(self.data_cfg, waves, wave_lengths)
                yield model(feats.transpose(1, 2), frames), labels

        return classifier_evaluation(batches(), len(self.labels))

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
        """Held-out utterances with the predicted and the true label."""
        from modelforge.render import samples

        split, dataset = samples.held_out(splits)
        if dataset is None:
            return ReportSamples(note="the recipe has no test or validation split")
        waves, wave_lengths, labels = self.collate([dataset[i] for i in samples.spread(len(dataset), count)])
        results = self.postprocess(self.forward(model, speech_features(self.data_cfg, waves, wave_lengths)))
        truths = [self.labels[int(y)] for y in labels]
        right = [r["label"] == t for r, t in zip(results, truths, strict=True)]
        seconds = (wave_lengths.float() / self.data_cfg.features.sample_rate).tolist()
        rows = [(t, r["label"], r["probability"], round(s, 2)) for t, r, s in zip(truths, results, seconds)]
        return ReportSamples(
            html=samples.table(["true label", "predicted", "probability", "seconds"], rows, right),
            note=f"{sum(right)} of {len(right)} right; evenly spaced over the {split} split",
        )

    # ---- serving and export -----------------------------------------------------------------------------------
    def input_spec(self) -> dict[str, Any]:
        return audio_input_spec(self.data_cfg.features)

    def example_inputs(self, batch_size: int = 2, length: int = 40) -> dict[str, torch.Tensor]:
        """Features (B, F, T) + frame counts → class logits (B, classes)."""
        n_features = self.state_dict_.get("n_features", self.data_cfg.features.n_features)
        return example_features(n_features, batch_size, length)

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"features": {0: "batch", 2: "frames"}, "lengths": {0: "batch"}, "output": {0: "batch"}}

    def preprocess(self, inputs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        waves = [read_input_audio(item, self.data_cfg.features, i) for i, item in enumerate(inputs)]
        return speech_features(self.data_cfg, *pad_rows(waves))

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        feats, frames = batch
        return model(feats.transpose(1, 2), frames)  # audio models take (B, F, T), as models/asr.py

    def postprocess(self, outputs: torch.Tensor, top_k: int = 5) -> list[dict[str, Any]]:
        return ranked_labels(outputs, self.labels, top_k)
