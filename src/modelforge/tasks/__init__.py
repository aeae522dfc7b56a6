"""Tasks: the ``TASKS`` table maps a recipe's ``task:`` name to its class (imported lazily)."""

from __future__ import annotations

import importlib

from modelforge.core.errors import ConfigError

# name → "module:Class"; importing a task module pulls in torch, so the table stays strings until asked.
_TASKS: dict[str, str] = {
    "image_classification": "modelforge.tasks.vision.image_classification:ImageClassification",
    "text_classification": "modelforge.tasks.text.text_classification:TextClassification",
    "language_modeling": "modelforge.tasks.text.language_modeling:LanguageModeling",
    "translation": "modelforge.tasks.seq2seq.translation:Translation",
    "summarization": "modelforge.tasks.seq2seq.summarization:Summarization",
    "speech_recognition": "modelforge.tasks.speech.speech_recognition:SpeechRecognition",
    "audio_classification": "modelforge.tasks.speech.audio_classification:AudioClassification",
    "word_embeddings": "modelforge.tasks.embeddings.word_embeddings:WordEmbeddings",
    "image_generation": "modelforge.tasks.vision.image_generation:ImageGeneration",
    "video_classification": "modelforge.tasks.vision.video_classification:VideoClassification",
    "autoencoding": "modelforge.tasks.vision.autoencoding:Autoencoding",
    "detection": "modelforge.tasks.vision.detection:Detection",
    "segmentation": "modelforge.tasks.vision.segmentation:Segmentation",
}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> type:
    if name not in _TASKS:
        import difflib

        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(task_names())}")
    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
