"""Shared fixtures: a digits CNN trained long enough to read digits (with the recipe's explain: gallery), and a tiny
LSTM text classifier trained on a generated review table. Both are trained once per session, in-process."""

import numpy as np
import pytest

WORDS = {"fresh": ["great", "wonderful", "moving", "brilliant", "fun"],
         "rotten": ["awful", "boring", "dull", "terrible", "mess"]}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    import modelforge

    run_dir = tmp_path_factory.mktemp("explain") / "digits-cnn"
    overrides = ["train.max_steps=150", "train.progress=off", "explain.samples=4", "explain.steps=32"]
    return modelforge.train("digits-cnn", overrides, run_dir=run_dir)


@pytest.fixture(scope="session")
def digits_predictor(digits_run):
    from modelforge.explain.predictor import ExplainingPredictor

    return ExplainingPredictor(digits_run.directory)


def digit_images(count: int, size: int = 16) -> tuple[list[np.ndarray], list[int]]:
    """scikit-learn digits spread over the set, as (1, size, size) uint8 arrays (white ink on black), and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    picks = np.linspace(0, len(digits.images) - 1, count).astype(int)
    images = []
    for i in picks:
        raw = Image.fromarray(np.uint8(np.clip(np.rint(digits.images[i] * 255 / 16), 0, 255)))
        images.append(np.asarray(raw.resize((size, size), Image.BILINEAR))[None])
    return images, [int(digits.target[i]) for i in picks]


@pytest.fixture(scope="session")
def reviews_file(tmp_path_factory):
    """A CSV of short reviews whose label is decided by one sentiment word among neutral filler."""
    rng = np.random.default_rng(0)
    filler = ["the", "film", "was", "a", "plot", "and", "actors", "story", "really", "quite"]
    rows = ["text,label"]
    for i in range(160):
        label = "fresh" if i % 2 else "rotten"
        words = list(rng.choice(filler, size=5)) + [str(rng.choice(WORDS[label]))]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, reviews_file):
    """sentiment-transformer shrunk to one layer of two heads, trained on the generated reviews."""
    import modelforge

    overrides = [f"data.path={reviews_file}", "data.source=file", "model.dim=16", "model.num_layers=1",
                 "model.num_heads=2", "model.mlp_hidden=32", "model.dropout=0.0", "model.classifier_dropout=0.0",
                 "train.max_steps=60", "train.batch_size=16", "train.lr=0.01", "train.warmup_steps=0",
                 "train.progress=off", "train.early_stopping=null"]
    run_dir = tmp_path_factory.mktemp("explain") / "reviews-transformer"
    return modelforge.train("sentiment-transformer", overrides, run_dir=run_dir)
