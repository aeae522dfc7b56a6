"""The HTTP API for the text and speech tasks: text classification (text in JSON or a form field), language
modeling (prompt → generated text, with the token and prompt caps), speech recognition and audio classification
(base64 WAV or a multipart upload), word vectors (word → nearest words), with every limit answered by a 4xx JSON
error; and the web page for them, in a real browser where Chromium is installed.

The artifacts hold seeded, untrained weights: the API is under test, not the models.
"""

from __future__ import annotations

import base64
import functools
import io
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, served

from modelforge.artifacts.model_dir import save_artifact
from modelforge.artifacts.predictor import Predictor
from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.speech.ctc_decoding import DEFAULT_CHARS

WORDS = "a witty moving film dull overlong muddled pointless remake good cast saved never story".split()
SPEECH = ["data.features.n_mels=16", "data.features.max_seconds=3.0"]
SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=5), max_audio_seconds=2.0,
                         max_text_chars=200, max_new_tokens=6, max_prompts=2)


def _save(root: Path, recipe, task) -> Path:
    torch.manual_seed(0)
    save_artifact(root / "model", recipe, task, task.build_model().eval())
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-speech-serve")
    rng = np.random.default_rng(0)
    csv = root / "reviews.csv"
    rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))},{'fresh' if i % 2 else 'rotten'}" for i in range(30)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")

    built = {}
    recipe = load_recipe("sentiment-lstm", ["data.source=file", f"data.path={csv}", "model.embed_dim=16",
                                            "model.hidden_size=8"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    built["sentiment"] = _save(root / "sentiment", recipe, task)

    # serve: asks for 50 new tokens; the server's cap (6) wins. seed: the same prompt gives the same text.
    recipe = load_recipe("shakespeare-char", ["data.limit=3000", "data.block_size=16", "model.dim=16",
                                              "model.num_layers=1", "model.num_heads=2", "serve.max_new_tokens=50",
                                              "serve.seed=0"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    built["poet"] = _save(root / "poet", recipe, task)

    recipe = load_recipe("asr-digits", [*SPEECH, "model.channels=4", "model.hidden_size=8", "model.num_layers=1",
                                        "data.lexicon=null", "data.decoding=greedy"])
    task = get_task(recipe.task)(recipe, state={"vocab": DEFAULT_CHARS, "n_features": 16, "lexicon": None})
    built["asr"] = _save(root / "asr", recipe, task)

    recipe = load_recipe("keyword-spotting", [*SPEECH, "model.channels=[8,8]", "model.strides=[1,2]"])
    task = get_task(recipe.task)(recipe, state={"labels": ["lights on", "stop", "play music"], "n_features": 16})
    built["kws"] = _save(root / "kws", recipe, task)

    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(rng.choice(WORDS, 400)) + "\n")
    recipe = load_recipe("cbow-shakespeare", ["data.source=file", f"data.path={corpus}", "data.min_count=2",
                                              "data.window=2", "data.val_fraction=0.1", "data.test_fraction=0.1",
                                              "data.relations=null", "model.dim=8", "serve.k=4"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    built["words"] = _save(root / "words", recipe, task)
    return built


@pytest.fixture(scope="module")
def client(runs):
    with TestClient(create_app([f"{name}={path}" for name, path in runs.items()], SETTINGS)) as test_client:
        yield test_client


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(samples.tobytes())
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


def reference(path: Path) -> Predictor:
    """The same run loaded outside the server (with the server's generation cap), to compare answers with."""
    predictor = Predictor(path)
    if "generate" in predictor.task.capabilities:  # as the server's batcher calls it
        predictor.predict = functools.partial(predictor.predict, max_new_tokens_cap=SETTINGS.max_new_tokens)
    return predictor


# ---- endpoints --------------------------------------------------------------------------------------------------
def test_models_describe_text_and_audio_inputs(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert {name: m["task"] for name, m in models.items()} == {
        "sentiment": "text_classification", "poet": "language_modeling", "asr": "speech_recognition",
        "kws": "audio_classification", "words": "word_embeddings"}
    assert models["sentiment"]["input"] == {"kind": "text"} and models["sentiment"]["labels"] == ["fresh", "rotten"]
    assert models["poet"]["generation"]["max_new_tokens"] == 6 and models["poet"]["generation"]["seed"] == 0
    assert "generation" not in models["sentiment"]
    for name in ("asr", "kws"):
        assert models[name]["input"] == {"kind": "audio", "format": "wav", "sample_rate": 16000, "max_seconds": 3.0}
    assert models["kws"]["labels"] == ["lights on", "stop", "play music"]


def test_text_classification_from_json_and_form_fields(client, runs):
    texts = ["a witty moving film", "dull overlong remake"]
    response = client.post("/models/sentiment/predict", json={"inputs": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == reference(runs["sentiment"]).predict(texts)
    assert all(p["label"] in ("fresh", "rotten") and len(p["top"]) == 2 for p in predictions)
    form = client.post("/models/sentiment/predict", data={"text": texts})
    assert form.status_code == 200, form.text
    assert form.json()["predictions"] == predictions


def test_a_served_text_is_never_read_as_a_file_path(client, runs, tmp_path):
    """The command line may name a .txt file to classify; a client must not make the server read its files."""
    from modelforge.tasks.base import ServedText

    secret = tmp_path / "secret.txt"
    secret.write_text("dull overlong muddled pointless remake\n")
    predictor = reference(runs["sentiment"])
    from_file = predictor.predict([str(secret)])  # what `modelforge predict RUN secret.txt` does
    assert from_file == predictor.predict(["dull overlong muddled pointless remake"])
    served = client.post("/models/sentiment/predict", json={"inputs": [str(secret)]}).json()["predictions"]
    assert served == predictor.predict([ServedText(str(secret))]) != from_file


def test_language_model_continues_a_prompt_within_the_token_cap(client, runs):
    response = client.post("/models/poet/predict", json={"inputs": ["ROMEO:", "To be"]})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["text"] == "ROMEO:" + first["continuation"] and second["text"].startswith("To be")
    assert 0 < len(first["continuation"]) <= 6  # character tokens: at most the server's 6, not the recipe's 50
    assert [first, second] == reference(runs["poet"]).predict(["ROMEO:", "To be"])  # seeded: reproducible


def test_generation_and_text_limits_are_4xx(client):
    assert_error(client.post("/models/poet/predict", json={"inputs": ["a", "b", "c"]}), 413, "3 prompts",
                 "limit of 2")
    assert_error(client.post("/models/poet/predict", json={"inputs": ["   "]}), 422, "empty")
    assert_error(client.post("/models/sentiment/predict", json={"inputs": ["x" * 201]}), 413, "201 characters",
                 "200 character limit")
    assert_error(client.post("/models/sentiment/predict", json={"inputs": [3]}), 422, "must be a string")
    assert_error(client.post("/models/sentiment/predict", files={"file": ("t.txt", b"\xff\xfe\x00bad")}), 422,
                 "not UTF-8")


def test_speech_recognition_from_base64_and_upload(client, runs):
    audio = wav_bytes(0.8)
    response = client.post("/models/asr/predict", json={"inputs": [b64(audio), "data:audio/wav;base64," + b64(audio)]})
    assert response.status_code == 200, response.text
    (first, second) = response.json()["predictions"]
    assert first == second == reference(runs["asr"]).predict([audio])[0]
    assert set(first) == {"text"} and set(first["text"]) <= set(DEFAULT_CHARS)
    upload = client.post("/models/asr/predict", files=[("file", ("a.wav", audio, "audio/wav"))])
    assert upload.status_code == 200, upload.text
    assert upload.json()["predictions"] == [first]


def test_audio_classification_from_upload(client, runs):
    clips = [wav_bytes(0.5), wav_bytes(1.2, rate=8000)]  # another sample rate is resampled
    files = [("file", (f"{i}.wav", clip, "application/octet-stream")) for i, clip in enumerate(clips)]
    response = client.post("/models/kws/predict", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == reference(runs["kws"]).predict(clips)
    assert all(p["label"] in ("lights on", "stop", "play music") for p in predictions)


def test_audio_limits_and_bad_audio_are_4xx(client):
    assert_error(client.post("/models/asr/predict", json={"inputs": [b64(wav_bytes(2.5))]}), 413, "2.5 s long",
                 "2 s limit")
    assert_error(client.post("/models/kws/predict", files={"file": ("a.mp3", b"ID3 not a wav")}), 422,
                 "not a readable WAV")
    assert_error(client.post("/models/kws/predict", json={"inputs": ["play some music"]}), 422, "base64")
    assert_error(client.post("/models/asr/predict", content=wav_bytes(0.2), headers={"content-type": "audio/mpeg"}),
                 415, "application/json or multipart/form-data")


def test_word_vectors_answer_with_nearest_words(client):
    response = client.post("/models/words/predict", json={"inputs": ["Film", "cast"]})
    assert response.status_code == 200, response.text
    film, cast = response.json()["predictions"]
    assert len(film["neighbors"]) == 4 and "film" not in [n["word"] for n in film["neighbors"]]
    assert all(n["word"] in WORDS and -1 <= n["similarity"] <= 1 for n in film["neighbors"] + cast["neighbors"])
    assert_error(client.post("/models/words/predict", json={"inputs": ["filmz"]}), 422, "not in the vocabulary")


# ---- the web page -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_page_classifies_and_explains_text_generates_and_transcribes_an_upload(runs, tmp_path):
    wav = tmp_path / "clip.wav"
    wav.write_bytes(wav_bytes(0.8))
    app = create_app([f"{name}={path}" for name, path in runs.items()], SETTINGS)
    with served(app) as url, browser_page(url, "poet") as page:
        page.select_option("#model", "sentiment")
        page.fill("#text", "a witty moving film")
        page.click("#predict-text")
        page.wait_for_selector("#result:not([hidden])")
        assert page.text_content("#label") in ("fresh", "rotten")
        assert page.locator("#predictions tr").count() == 2
        # the explanation: one coloured span per token, as the API attributes them
        with page.expect_response("**/models/sentiment/explain") as answered:
            page.click("#explain")
        tokens = answered.value.json()["explanations"][0]["tokens"]
        page.wait_for_selector("#token-view:not([hidden])")
        spans = page.locator("#token-view span")
        assert spans.count() == len(tokens) > 0
        assert [spans.nth(i).text_content() for i in range(spans.count())] == [t["token"] for t in tokens]
        assert page.is_hidden("#heatmap")

        page.select_option("#model", "words")  # nearest words as ranked rows with their cosine similarity
        page.fill("#text", "film")
        with page.expect_response("**/models/words/predict") as answered:
            page.click("#predict-text")
        neighbors = answered.value.json()["predictions"][0]["neighbors"]
        page.wait_for_selector("#predictions tr")
        rows = page.locator("#predictions tr")
        assert rows.count() == len(neighbors) == 4 and page.is_hidden("#raw")
        assert rows.nth(0).locator("td").nth(0).text_content() == neighbors[0]["word"]
        assert rows.nth(0).locator("td").nth(2).text_content() == f"{neighbors[0]['similarity']:.3f}"

        page.select_option("#model", "poet")
        assert page.text_content("#predict-text") == "Generate"
        page.fill("#text", "ROMEO:")
        page.click("#predict-text")
        page.wait_for_selector("#output-text:not([hidden])")
        assert page.text_content("#output-text").startswith("ROMEO:") and page.is_hidden("#label")

        page.select_option("#model", "asr")
        assert page.get_attribute("#file", "accept") == ".wav,audio/wav" and page.is_hidden("#text-input")
        with page.expect_response("**/models/asr/predict"):
            page.set_input_files("#file", str(wav))
        page.wait_for_selector("#output-text:not([hidden])")
        expected = reference(runs["asr"]).predict([wav.read_bytes()])[0]["text"]
        assert page.text_content("#output-text") == expected
        assert page.text_content("#status") == ""
