"""The tasks beyond the classifiers that declare ``evaluation_gathers_ranks`` (language modelling, translation,
image captioning, speech recognition with its own model and through a checkpoint's path, word embeddings, image–text
retrieval), each evaluated as shares in one real 2-process gloo group inside ``gathering_ranks()``: every rank returns
what one process evaluating every batch returns (the same floats, the same texts in the same order), with
``eval_share``'s uneven shares and with a rank whose share is empty, gathering exactly once. Tiny untrained models on
tiny data, seeded alike in every process. Summarization runs translation's evaluate (only its text metrics, computed
from the gathered texts, differ): it is left out, as importing rouge_score in every process costs seconds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from captioning_data import caption_folder
from PIL import Image

from modelforge.tasks.metrics import gathering_ranks
from modelforge.tasks.recipes import load_recipe
from modelforge.training.batches import eval_loader

SHARES = 3  # batches per evaluated split: eval_share gives rank 0 two of them, rank 1 one


def _write_data(root: Path) -> None:
    """Every task's files under ``root`` (written once, by the parent, before the ranks start)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.txt").write_text("".join(f"LINE {i}: To be, or not to be, that is the question.\n"
                                             for i in range(120)), encoding="utf-8")
    words, spanish = ["red house", "blue sky", "big dog", "small cat", "green tree"], \
        ["casa roja", "cielo azul", "perro grande", "gato pequeño", "árbol verde"]
    (root / "pairs.tsv").write_text("".join(f"the {words[i % 5]} and the {words[(i + 2) % 5]} {i}\t"
                                            f"el {spanish[i % 5]} y el {spanish[(i + 2) % 5]} {i}\n"
                                            for i in range(60)), encoding="utf-8")
    caption_folder(root / "captions")
    (root / "royal.txt").write_text("the king and the queen walk in the garden\nthe man and the woman walk home\n\n"
                                    * 30)
    (root / "relations.tsv").write_text("both\tpair\tking queen\nboth\tanalogy\tman king woman queen\n")
    colours = root / "colours"
    colours.mkdir(exist_ok=True)
    rng, rows = np.random.default_rng(0), ["image,caption"]
    for name, rgb in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}.items():
        for i in range(5):
            pixels = np.clip(np.asarray(rgb) + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(colours / f"{name}{i}.png")
            rows += [f"{name}{i}.png,a {name} picture", f"{name}{i}.png,{name}"]
    (colours / "captions.csv").write_text("\n".join(rows) + "\n")


# ---- the tasks: each builder gives (task, untrained model, the evaluated split) -----------------------------------


def _built(raw: dict[str, Any] | Any) -> tuple[Any, Any]:
    from modelforge.tasks import get_task

    recipe = raw if not isinstance(raw, dict) else load_recipe(raw)
    task = get_task(recipe.task)(recipe)
    return task, task.datasets()


def _showing_texts(task: Any, metrics_of: str) -> Any:
    """``task`` whose text metrics (``metrics_of``) also return the texts they were computed from: the comparison
    then covers every decoded row, not only the figures (an untrained model's BLEU is 0 whatever it outputs)."""
    computed = getattr(task, metrics_of)
    setattr(task, metrics_of, lambda *texts: {**computed(*texts), "texts": [list(t) for t in texts]})
    return task


def _model(task: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return task.build_model().eval()


def _language_modeling(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    task, splits = _built({"name": "lm", "task": "language_modeling",
                           "data": {"source": "file", "path": str(root / "corpus.txt"), "block_size": 16,
                                    "val_fraction": 0.2},
                           "model": {"name": "gpt", "dim": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0}})
    return task, _model(task), splits.val


SEQ2SEQ_MODEL = {"name": "seq2seq_gru_bahdanau", "embed_dim": 16, "hidden_size": 16, "dropout": 0.0}


def _translation(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    # the test split: the configured beam search, and greedy decoding beside it (compare_greedy)
    task, splits = _built({"name": "t", "task": "translation", "model": SEQ2SEQ_MODEL,
                           "data": {"source": "parallel", "path": str(root / "pairs.tsv"), "val_fraction": 0.1,
                                    "test_fraction": 0.2, "tokenizer": {"vocab_size": 300, "min_frequency": 1},
                                    "decoding": {"beam_size": 2, "max_new_tokens": 5}}})
    return _showing_texts(task, "text_metrics"), _model(task), splits.test


def _image_captioning(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    recipe = load_recipe("scenes-captioner", [
        f"data.path={root / 'captions' / 'captions.csv'}", "data.image_size=16", "data.val_fraction=0.2",
        "data.test_fraction=0.3", "model.widths=[4,8]", "model.dim=16", "model.num_heads=2", "model.mlp_hidden=32",
        "data.decoding.beam_size=2", "data.max_caption_tokens=8"])
    task, splits = _built(recipe)
    return _showing_texts(task, "caption_metrics"), _model(task), splits.test


ASR = {"name": "tiny-asr", "task": "speech_recognition",
       "data": {"source": "manifest", "path": "unused", "noise_snr": None, "decoding": "beam", "beam_width": 2,
                "features": {"n_mels": 16, "max_seconds": 2.0}},
       "model": {"name": "asr_bigru", "channels": 4, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}}
SPOKEN = ["turn on the light", "play music", "stop", "go left", "yes", "no no"]


def _speech_recognition(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    from modelforge.data.speech import WaveformDataset
    from modelforge.tasks.speech.ctc_decoding import DEFAULT_CHARS
    from modelforge.tasks.speech.speech_recognition import SpeechRecognition

    task = SpeechRecognition(load_recipe(ASR), state={"vocab": DEFAULT_CHARS, "n_features": 16, "lexicon": None})
    rng = np.random.default_rng(0)
    waves = [(rng.normal(0, 3000, 2000 + 700 * i)).astype(np.int16) for i in range(len(SPOKEN))]
    dataset = WaveformDataset(waves, [torch.tensor(task.vocab.encode(text)) for text in SPOKEN])
    return task, _model(task), dataset


class OwnModelAsCheckpoint:
    """What ``_evaluate_checkpoint`` asks of a ``model.name=hf`` checkpoint (its loss, its references' decoding and
    its transcripts), answered by the toolkit's own CTC model: the checkpoint path's gathering without loading
    transformers in every process."""

    def __init__(self, task: Any):
        self.task = task

    def loss(self, model, waves, wave_lengths, targets, target_lengths, reduction="mean"):
        from modelforge.data.speech import speech_features

        log_probs, out_lengths = self.task.log_probs(model, *speech_features(self.task.data_cfg, waves, wave_lengths))
        return F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=self.task.vocab.blank,
                          zero_infinity=True, reduction=reduction)

    def decode_reference(self, ids: list[int]) -> str:
        return self.task.vocab.decode(ids)

    def transcribe(self, model, waves, wave_lengths, beams: int) -> list[str]:
        from modelforge.data.speech import speech_features

        log_probs, out_lengths = self.task.log_probs(model, *speech_features(self.task.data_cfg, waves, wave_lengths))
        return self.task.decode(log_probs, out_lengths, "greedy")


def _speech_checkpoint(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    task, model, dataset = _speech_recognition(root)
    task.pretrained, task._checkpoint_speech = True, OwnModelAsCheckpoint(task)
    return task, model, dataset


def _word_embeddings(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    recipe = load_recipe("skipgram-shakespeare", [
        "data.source=file", f"data.path={root / 'royal.txt'}", "data.min_count=2", "data.window=2",
        "data.val_fraction=0.2", "data.subsample=0", "model.dim=8", f"data.relations={root / 'relations.tsv'}"])
    task, splits = _built(recipe)
    return task, _model(task), splits.val


def _image_text_retrieval(root: Path) -> tuple[Any, torch.nn.Module, Any]:
    task, splits = _built({
        "name": "r", "task": "image_text_retrieval",
        "data": {"source": "files", "path": str(root / "colours"), "image_size": 16, "tokenizer": {"kind": "word"},
                 "max_length": 8, "val_fraction": 0.0, "test_fraction": 0.4},
        "model": {"name": "clip_dual_encoder", "dim": 32, "num_layers": 1, "num_heads": 2, "mlp_hidden": 64,
                  "dropout": 0.0, "embed_dim": 16, "image_widths": [8, 16]}})
    return task, _model(task), splits.test


CASES: dict[str, Callable[[Path], tuple[Any, torch.nn.Module, Any]]] = {
    "language_modeling": _language_modeling, "translation": _translation,
    "image_captioning": _image_captioning, "speech_recognition": _speech_recognition,
    "speech_checkpoint": _speech_checkpoint, "word_embeddings": _word_embeddings,
    "image_text_retrieval": _image_text_retrieval,
}


def _batches(task: Any, dataset: Any, rank: int = 0, world_size: int = 1) -> list[Any]:
    """Rank ``rank``'s share of the split's SHARES batches, as the Trainer hands them out."""
    return list(eval_loader(dataset, math.ceil(len(dataset) / SHARES), task.collate, rank=rank,
                            world_size=world_size))


def _evaluated(task: Any, model: torch.nn.Module, batches: list[Any]) -> dict[str, Any]:
    with torch.no_grad():
        return json.loads(json.dumps(task.evaluate(model, iter(batches))))  # as JSON: tuples become lists


# ---- the ranks -------------------------------------------------------------------------------------------------


def _rank(rank: int, world_size: int, init_file: str, root: str, out: str) -> None:
    torch.set_num_threads(1)  # tiny models; the parent evaluates with one thread too
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        results = {}
        for name, build in CASES.items():
            task, model, dataset = build(Path(root))
            everything = _batches(task, dataset)
            for case, mine in (("even", _batches(task, dataset, rank, world_size)),
                               ("empty", everything if rank == 0 else [])):
                with gathering_ranks() as gather:
                    metrics = _evaluated(task, model, mine)
                results[f"{name}/{case}"] = {"metrics": metrics, "gathers": gather.gathers, "batches": len(mine)}
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_rank_of_a_sharded_evaluation_returns_the_whole_splits_metrics(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))  # the ranks inherit it: token files built once
    root = tmp_path / "data"
    _write_data(root)
    whole = {}
    for name, build in CASES.items():
        task, model, dataset = build(root)
        assert type(task).evaluation_gathers_ranks, name
        batches = _batches(task, dataset)
        assert len(batches) == SHARES, name
        whole[name] = _evaluated(task, model, batches)
    # spawned, not forked: a fork of a process whose OpenMP threads already ran (the forwards above) can hang
    mp.start_processes(_rank, args=(2, str(tmp_path / "init"), str(root), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for name, expected in whole.items():
        assert [r[f"{name}/even"]["batches"] for r in ranks] == [2, 1]
        assert [r[f"{name}/empty"]["batches"] for r in ranks] == [SHARES, 0]
        for rank, results in enumerate(ranks):
            for case in ("even", "empty"):
                found = results[f"{name}/{case}"]
                assert found["gathers"] == 1, (name, case, rank)
                assert _same(found["metrics"], expected), (name, case, rank, found["metrics"], expected)
    _assert_samples_are_the_whole_splits(whole)


def _assert_samples_are_the_whole_splits(whole: dict[str, dict[str, Any]]) -> None:
    """What the comparison covers: sample lists taken from the first rows of the split (rank 0's) and figures of
    rows on both ranks (decoded outputs beside a greedy comparison, recall over every image)."""
    sources, references, outputs = whole["translation"]["texts"]
    assert len(sources) == len(references) == len(outputs) == len(whole["translation"]["texts_greedy"][2]) > 5
    assert whole["translation"]["samples"][0]["source"] == sources[0] and "bleu_greedy" in whole["translation"]
    assert len(whole["image_captioning"]["texts"][1]) == len(whole["image_captioning"]["texts_greedy"][1]) > 5
    assert "cider_greedy" in whole["image_captioning"]
    assert whole["speech_recognition"]["examples"][0]["reference"] == SPOKEN[0]
    assert "greedy_wer" in whole["speech_recognition"] and "wer" in whole["speech_checkpoint"]
    assert whole["word_embeddings"]["relations_scored"] == 2
    assert {"loss", "mean_recall", "t2i_r@1"} <= set(whole["image_text_retrieval"])


def _same(found: Any, expected: Any) -> bool:
    """Equal texts, ints and structure; floats within 1e-9 (relative)."""
    if isinstance(expected, dict):
        return found.keys() == expected.keys() and all(_same(found[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(found) == len(expected) and all(_same(f, e) for f, e in zip(found, expected))
    if isinstance(expected, float):
        return isinstance(found, float) and found == pytest.approx(expected, rel=1e-9, nan_ok=True)
    return type(found) is type(expected) and found == expected
