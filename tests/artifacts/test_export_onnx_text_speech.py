"""ONNX export of the text and speech tasks: onnxruntime equals PyTorch within 1e-4 on what the task's own
``preprocess`` makes of real inputs, at batch sizes and sequence lengths other than the traced ones.

The artifacts hold freshly initialised (seeded) weights: parity does not depend on training, and building the task
and model directly keeps each case to about a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modelforge.artifacts.export import TOLERANCE, export_onnx
from modelforge.artifacts.model_dir import load_artifact, save_artifact
from modelforge.core.errors import ArtifactError
from modelforge.core.seed import seed_everything
from modelforge.data.audio import write_wav
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.speech.ctc_decoding import DEFAULT_CHARS

TEXTS = ["A witty, moving film.", "Dull.", "An overlong, muddled and ultimately pointless remake of a film that "
         "was never very good to begin with, saved only by its cast."]
SPEECH = ["data.features.n_mels=16", "data.features.max_seconds=3.0"]
TINY_ASR = ["model.channels=4", "model.hidden_size=16", "model.num_layers=2", "model.dropout=0.0"]

# recipe, overrides, expected ONNX input names with their dynamic axes
TEXT_CASES = {
    "sentiment-lstm": (["model.embed_dim=16", "model.hidden_size=8"],
                       {"input_ids": ["batch", "time"], "lengths": ["batch"]}),
    "sentiment-transformer": (["model.dim=32", "model.num_layers=1", "model.num_heads=2", "model.mlp_hidden=64"],
                              {"input_ids": ["batch", "time"], "attention_mask": ["batch", "time"]}),
    "seed-rnn": (["data.max_length=24", "model.hidden_size=8"], {"input_ids": ["batch", 24], "lengths": ["batch"]}),
}
WORDS = "a witty moving film dull overlong muddled pointless remake good cast saved never story".split()


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """A small labelled CSV standing in for Rotten Tomatoes (loading the real set costs seconds per case)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 12)))},{'fresh' if i % 2 else 'rotten'}" for i in range(40)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return ["data.source=file", f"data.path={path}"]


def _save(recipe, task, root):
    seed_everything(0)
    model = task.build_model().eval()
    save_artifact(root / "model", recipe, task, model)
    return root


def _text_artifact(name: str, overrides: list[str], root):
    recipe = load_recipe(name, overrides)
    task = get_task(recipe.task)(recipe)
    task.datasets()
    return _save(recipe, task, root)


def _speech_artifact(recipe_name: str, overrides: list[str], root, state: dict):
    """The task built from its saved state (no data generated): what a loaded artifact holds."""
    recipe = load_recipe(recipe_name, [*SPEECH, *overrides])
    task = get_task(recipe.task)(recipe, state=state)
    return _save(recipe, task, root)


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(session, feeds: dict[str, torch.Tensor], expected: torch.Tensor) -> None:
    (actual,) = session.run(None, {k: v.numpy() for k, v in feeds.items()})
    assert actual.shape == tuple(expected.shape)
    np.testing.assert_allclose(actual, expected.numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", list(TEXT_CASES))
def test_text_classifiers_export_with_dynamic_batch_and_time(name, reviews, tmp_path):
    overrides, inputs = TEXT_CASES[name]
    run = _text_artifact(name, [*reviews, *overrides], tmp_path / name)
    result = export_onnx(run)
    assert result.inputs == inputs and result.max_abs_diff <= TOLERANCE

    loaded = load_artifact(run)
    session = _session(result.path)
    fixed = name == "seed-rnn"  # its Python loop over time is unrolled: inputs are padded to max_length
    for texts in (TEXTS[:1], TEXTS):  # 1 then 3 rows, each batch as long as its longest text
        ids, lengths = loaded.task.preprocess(texts)
        if fixed:
            ids = torch.nn.functional.pad(ids, (0, 24 - ids.shape[1]), value=loaded.task.state()["pad_id"])
        with torch.no_grad():
            expected = loaded.task.forward(loaded.model, (ids, lengths))  # the serving path
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        feeds = {"input_ids": ids, "lengths": lengths, "attention_mask": mask}
        _check(session, {k: feeds[k] for k in inputs}, expected)

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["modelforge.task"] == "text_classification"
    assert json.loads(meta["modelforge.task_state"])["labels"] == loaded.task.labels


def test_a_time_axis_traced_as_a_constant_is_caught(reviews, tmp_path, monkeypatch):
    """Exporting the seed RNN (a Python loop over time) with a dynamic time axis gives a graph that silently reads
    only the traced number of steps; the second verification length exposes it."""
    from modelforge.tasks.text.text_classification import TextClassification

    overrides, _ = TEXT_CASES["seed-rnn"]
    run = _text_artifact("seed-rnn", [*reviews, *overrides], tmp_path / "seed")
    monkeypatch.setattr(TextClassification, "_unrolled_in_python", lambda self: False)
    with pytest.raises(ArtifactError, match=r"ONNX outputs differ from PyTorch .* on input_ids\[3, 13\]"):
        export_onnx(run)
    assert not (run / "model.onnx").exists()


def test_gpt_exports_whole_sequence_logits(tmp_path):
    overrides = ["data.limit=4000", "data.block_size=32", "model.dim=32", "model.num_layers=2", "model.num_heads=2"]
    run = _text_artifact("shakespeare-char", overrides, tmp_path / "gpt")
    result = export_onnx(run)
    assert result.inputs == {"input_ids": ["batch", "time"]} and result.max_abs_diff <= TOLERANCE

    loaded = load_artifact(run)
    session = _session(result.path)
    vocab = loaded.task.state()["vocab_size"]
    for batch, length in ((1, 5), (4, 32)):  # up to the block size, the model's last position
        ids = torch.tensor([loaded.task.encode_text("ROMEO:\nIs the day so young?")[:length]] * batch)
        with torch.no_grad():
            expected = loaded.model(ids)
        assert expected.shape == (batch, ids.shape[1], vocab)
        _check(session, {"input_ids": ids}, expected)

    # opset 9 has no slice with a dynamic end (the learned positions): one short line, not the traced graph
    with pytest.raises(ArtifactError) as info:
        export_onnx(run, output=tmp_path / "old.onnx", opset=9)
    message = str(info.value)
    assert message.startswith("ONNX export (opset 9) failed: Unsupported") and "\n" not in message
    assert len(message) < 400 and not (tmp_path / "old.onnx").exists()


@pytest.mark.parametrize("model_name", ["asr_bigru", "asr_transformer"])
def test_ctc_acoustic_model_exports_log_probs(model_name, tmp_path):
    overrides = [f"model.name={model_name}", *TINY_ASR] + (["model.num_heads=2"] if "transformer" in model_name
                                                            else [])
    state = {"vocab": DEFAULT_CHARS, "n_features": 16, "lexicon": None}
    run = _speech_artifact("asr-digits", overrides, tmp_path / model_name, state)
    result = export_onnx(run)
    assert result.inputs == {"features": ["batch", 16, "frames"], "lengths": ["batch"]}
    assert result.max_abs_diff <= TOLERANCE

    loaded = load_artifact(run)
    session = _session(result.path)
    waves = [_tone(tmp_path / f"{i}.wav", seconds) for i, seconds in enumerate((0.4, 1.3, 0.9))]
    for files in (waves[:1], waves):
        feats, frames = loaded.task.preprocess(files)
        with torch.no_grad():
            expected = loaded.model(feats.transpose(1, 2), frames)
        assert expected.shape[1] == int((frames.max() - 1) // 2 + 1)  # stride-2 subsampling, as documented
        _check(session, {"features": feats.transpose(1, 2), "lengths": frames}, expected)


def test_keyword_spotter_exports_logits(tmp_path):
    state = {"labels": ["lights on", "lights off", "stop"], "n_features": 16}
    overrides = ["data.source=manifest", "data.path=unused", "model.channels=[8,8]", "model.strides=[1,2]"]
    run = _speech_artifact("keyword-spotting", overrides, tmp_path / "kws", state)
    result = export_onnx(run)
    assert result.inputs == {"features": ["batch", 16, "frames"], "lengths": ["batch"]}

    loaded = load_artifact(run)
    session = _session(result.path)
    files = [_tone(tmp_path / f"{i}.wav", seconds) for i, seconds in enumerate((1.1, 0.3))]
    feats, frames = loaded.task.preprocess(files)
    with torch.no_grad():
        expected = loaded.task.forward(loaded.model, (feats, frames))
    assert expected.shape == (2, 3)
    _check(session, {"features": feats.transpose(1, 2), "lengths": frames}, expected)


def _tone(path, seconds: float, rate: int = 16000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    write_wav(path, (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t))).astype(np.float32), rate)
    return str(path)
