"""The classical baseline fits on the model's training split and scores its test split."""

import numpy as np
import pytest
import torch

from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import Splits
from modelforge.tasks.baselines import run_baseline, verdict


class _TextTask:
    baseline = "text"
    labels = ["bad", "good"]

    def __init__(self, texts):
        self.baseline_texts = texts


def _ids(labels):
    return TensorDataset(torch.zeros(len(labels), 1), torch.tensor(labels))


def test_tfidf_baseline_learns_words_that_decide_the_label_and_picks_c_on_val():
    words = {0: ["awful", "boring", "dull"], 1: ["superb", "moving", "witty"]}
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 2, n).tolist()
        return [f"a {words[y][i % 3]} film, {i}" for i, y in enumerate(labels)], labels

    texts, labels = zip(*(split(n) for n in (60, 20, 30)))
    task = _TextTask(dict(zip(("train", "val", "test"), texts)))
    splits = Splits(_ids(labels[0]), _ids(labels[1]), _ids(labels[2]))
    result = run_baseline(task, splits)
    assert result["test_accuracy"] == 1.0 and result["train_rows"] == 60 and result["C"] in (0.01, 0.1, 1, 10, 100)
    assert run_baseline(task, Splits(_ids(labels[0]))) is None  # no test split, nothing to compare


def test_pixel_baseline_separates_bright_from_dark_images():
    class Images:
        baseline, labels = "pixels", ["dark", "bright"]

    def images(n, seed):
        labels = torch.arange(n) % 2
        pixels = (labels[:, None, None, None] * 150 + torch.randint(0, 60, (n, 1, 4, 4), generator=torch.Generator()
                                                                    .manual_seed(seed))).to(torch.uint8)
        return TensorDataset(pixels, labels)

    result = run_baseline(Images(), Splits(images(40, 0), None, images(10, 1)))
    assert result["test_accuracy"] == 1.0 and result["C"] == 1.0 and result["method"].startswith("logistic")


def test_verdict_says_in_words_when_the_model_loses():
    baseline = {"method": "TF-IDF + LR", "test_accuracy": 0.75}
    assert verdict({"test_accuracy": 0.80}, baseline).startswith("the model beats the baseline (TF-IDF + LR) by 5.0")
    assert "LOSES to the baseline (TF-IDF + LR) by 6.0 points" in verdict({"test_accuracy": 0.69}, baseline)
    assert "ties" in verdict({"test_accuracy": 0.75}, baseline)


@pytest.mark.parametrize("kind", ["text", "pixels", "audio"])
def test_every_classification_task_declares_its_baseline(kind):
    from modelforge.tasks.speech.audio_classification import AudioClassification
    from modelforge.tasks.text.text_classification import TextClassification
    from modelforge.tasks.vision.image_classification import ImageClassification

    declared = {"text": TextClassification, "pixels": ImageClassification, "audio": AudioClassification}
    assert declared[kind].baseline == kind
