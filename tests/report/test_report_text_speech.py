"""Sample predictions in the report of text and speech runs: each task's ``report_samples`` view (texts with
predicted/true labels, generated continuations, transcripts with WER, keyword labels), and the report's wiring of the
hook. Tiny runs of two optimiser steps on small user files, trained in-process."""

from __future__ import annotations

import html
import json
import re

import jiwer
import numpy as np
import pytest

import modelforge
from modelforge.api import generate
from modelforge.data.audio import write_wav
from modelforge.report import write_report
from modelforge.tasks.base import ReportSamples, Task

QUICK = ["train.max_steps=2", "train.progress=off", "train.warmup_steps=0"]
WORDS = "a witty moving film dull overlong muddled pointless remake good cast saved never story".split()
COMMANDS = {"yes": 330.0, "no": 550.0, "stop": 880.0}


def samples_section(page: str) -> str:
    start = page.index("<h2>Sample predictions</h2>")
    return page[start : page.index("</section>", start)]


def table_rows(section: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cell texts per row, row classes) of the sample table."""
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", section, re.S)]
    rows = re.findall(r"<tr( class=\"(\w+)\")?>(.*?)</tr>", section, re.S)
    body = [(cls, re.findall(r"<td>(.*?)</td>", cells, re.S)) for _, cls, cells in rows if "<td>" in cells]
    return header, [[html.unescape(c) for c in cells] for _, cells in body], [cls for cls, _ in body]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-text")
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(60)]
    (root / "reviews.csv").write_text("text,label\n" + "".join(f"{t},{'fresh' if i % 3 else 'rotten'}\n"
                                                               for i, t in enumerate(texts)))
    run = modelforge.train("sentiment-lstm", [*QUICK, "data.source=file", f"data.path={root / 'reviews.csv'}",
                                              "data.test_fraction=0.3", "model.embed_dim=8", "model.hidden_size=8"],
                           run_dir=root / "run")
    return run, set(texts)


@pytest.fixture(scope="module")
def speech_manifest(tmp_path_factory):
    """Chirps named by a command word: 4 per word to train, 1 per word to test (a JSONL manifest with splits)."""
    root = tmp_path_factory.mktemp("report-speech")
    lines = []
    for word, freq in COMMANDS.items():
        for i in range(5):
            seconds = 0.3 + 0.1 * i
            t = np.arange(int(seconds * 16000)) / 16000
            write_wav(root / f"{word}{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t * (1 + 0.2 * i))).astype(np.float32),
                      16000)
            lines.append(json.dumps({"audio": f"{word}{i}.wav", "text": word, "split": "test" if i == 4 else "train"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return ["data.source=manifest", f"data.path={root / 'manifest.jsonl'}", "data.noise_snr=null",
            "data.features.n_mels=16", "train.batch_size=4"]


def test_text_classification_report_shows_texts_with_predicted_and_true_labels(text_run):
    run, texts = text_run
    section = samples_section((run.directory / "report.html").read_text())
    header, rows, marks = table_rows(section)
    assert header == ["text", "predicted", "probability", "true label"]
    test_size = run.summary["data"]["test_size"]
    assert len(rows) == min(12, test_size) >= 5
    assert {row[0] for row in rows} <= texts  # the held-out texts themselves (every word is in the vocabulary)
    assert all(row[1] in ("fresh", "rotten") and row[3] in ("fresh", "rotten") for row in rows)
    assert marks == ["right" if row[1] == row[3] else "wrong" for row in rows]
    right = sum(mark == "right" for mark in marks)
    assert f"{right} of {len(rows)} right; evenly spaced over the test split" in section


def test_language_model_report_shows_seeded_continuations(tmp_path):
    overrides = [*QUICK, "data.limit=3000", "data.block_size=64", "data.test_fraction=0.2", "model.dim=16",
                 "model.num_layers=1", "model.num_heads=2", "serve.max_new_tokens=12"]
    run = modelforge.train("shakespeare-char", overrides, run_dir=tmp_path / "lm")
    section = samples_section((run.directory / "report.html").read_text())
    header, rows, _ = table_rows(section)
    assert header == ["prompt", "generated continuation", "actual continuation"]
    assert len(rows) == 3 and all(prompt.strip() and actual for prompt, _, actual in rows)
    assert "temperature 0.8, top_k 50, top_p None, seed 0" in section and "up to 12 new tokens" in section
    for prompt, generated, _ in rows:  # seed 0: the same text as generating by hand
        assert len(generated) == 12
        assert generate(run.directory, prompt, 12, 0.8, 50, None, seed=0) == prompt + generated


def test_speech_recognition_report_shows_transcripts_with_wer(speech_manifest, tmp_path):
    overrides = [*QUICK, *speech_manifest, "model.channels=4", "model.hidden_size=8", "model.num_layers=1",
                 "data.decoding=greedy"]
    run = modelforge.train("asr-digits", overrides, run_dir=tmp_path / "asr")
    section = samples_section((run.directory / "report.html").read_text())
    header, rows, marks = table_rows(section)
    assert header == ["reference", "transcript", "WER", "seconds"]
    assert sorted(row[0] for row in rows) == sorted(COMMANDS)
    for reference, transcript, wer, seconds in rows:
        assert float(wer) == pytest.approx(jiwer.wer(reference, transcript), abs=1e-3)
        assert float(seconds) == pytest.approx(0.7)
    assert marks == ["right" if r[0] == r[1] else "wrong" for r in rows]
    corpus = jiwer.wer([r[0] for r in rows], [r[1] for r in rows])
    assert f"WER of these 3: {corpus:.3f} (greedy decoding)" in section


def test_audio_classification_report_shows_labels(speech_manifest, tmp_path):
    overrides = [*QUICK, *speech_manifest, "model.channels=[8,8]", "model.strides=[1,2]"]
    run = modelforge.train("keyword-spotting", overrides, run_dir=tmp_path / "kws")
    header, rows, marks = table_rows(samples_section((run.directory / "report.html").read_text()))
    assert header == ["true label", "predicted", "probability", "seconds"]
    assert sorted(row[0] for row in rows) == sorted(COMMANDS) and all(row[1] in COMMANDS for row in rows)
    assert marks == ["right" if r[0] == r[1] else "wrong" for r in rows]


def test_report_calls_the_task_hook_and_survives_its_failure(text_run, monkeypatch):
    """The report shows whatever the task's hook gives (HTML, note); no hook and a failing hook become notes."""
    from modelforge.report import _sample_predictions
    from modelforge.tasks.text.text_classification import TextClassification

    run, _ = text_run
    seen = []

    def hook(self, model, splits, count):
        seen.append(count)
        return ReportSamples(html="<p id=\"from-the-hook\">hook</p>", note="a <note>")

    monkeypatch.setattr(TextClassification, "report_samples", hook)
    section = samples_section(write_report(run.directory, samples=5).read_text())
    assert seen == [5] and '<p id="from-the-hook">hook</p>' in section and "a &lt;note&gt;" in section
    assert _sample_predictions(run.directory, 0, None).note == "sample predictions were not asked for"

    monkeypatch.setattr(TextClassification, "report_samples", Task.report_samples)
    assert _sample_predictions(run.directory, 5, None).note == "no sample view for task 'text_classification' yet"

    def broken(self, model, splits, count):
        raise RuntimeError("boom")

    monkeypatch.setattr(TextClassification, "report_samples", broken)
    with pytest.warns(UserWarning, match="boom"):
        view = _sample_predictions(run.directory, 5, None)
    assert view.png is None and view.note == "the sample predictions could not be made (RuntimeError: boom)"
