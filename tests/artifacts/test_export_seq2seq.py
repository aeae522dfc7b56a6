"""ONNX export of translation/summarization runs as an encoder graph and a decoder graph: both files written with
the decoding contract in their metadata, teacher-forced logits equal to PyTorch's, and the onnxruntime + NumPy
greedy loop (``tasks/seq2seq/onnx_decoding.py``) giving exactly the token ids of the task's own greedy decoding.

Each run trains a few steps on a small parallel TSV through ``modelforge.api.train`` (seconds on one thread).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_corpora import parallel_pairs

from modelforge.artifacts.export import TOLERANCE, export_onnx
from modelforge.artifacts.model_dir import load_artifact
from modelforge.core.errors import ArtifactError
from modelforge.tasks.seq2seq.onnx_decoding import META_KEY, greedy_decode, open_session, teacher_forced_logits

TINY = {"train.max_steps": 3, "train.batch_size": 8, "train.progress": "off", "train.eval_every_steps": None,
        "train.early_stopping": None, "data.tokenizer.vocab_size": 300, "data.tokenizer.min_frequency": 1,
        "data.val_limit": 2, "data.test_limit": 2, "data.decoding.max_new_tokens": 30, "data.source": "parallel"}
MODELS = {
    "gru": ("translation", {"model.name": "seq2seq_gru_luong", "model.embed_dim": 16, "model.hidden_size": 16,
                            "data.tokenizer.shared": False}),
    "transformer": ("summarization", {"model.name": "transformer_seq2seq_small", "model.dim": 32,
                                      "model.num_layers": 1, "model.num_decoder_layers": 1, "model.num_heads": 2,
                                      "model.mlp_hidden": 64, "data.tokenizer.shared": True,
                                      "model.share_embeddings": True}),
}
TEXTS = ["the red house and the blue sky", "a green tree", "the small cat number 7 and the big dog"]


_RUNS: dict[str, object] = {}


def _trained(family, tmp_path_factory):
    """The run of ``family``, trained once per test module."""
    if family not in _RUNS:
        from modelforge.api import train

        task, overrides = MODELS[family]
        root = tmp_path_factory.mktemp(family)
        recipe = "bbc-headline" if task == "summarization" else "seq2seq-attention"
        pairs = parallel_pairs(root / "pairs.tsv", 48)
        settings = {**TINY, **overrides, "data.path": str(pairs), "train.output_dir": str(root)}
        train(recipe, [f"{k}={'null' if v is None else v}" for k, v in settings.items()], run_dir=root / "run")
        _RUNS[family] = root / "run"
    return _RUNS[family]


@pytest.fixture(scope="module", params=list(MODELS))
def run(request, tmp_path_factory):
    return _trained(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def exported(run):
    return export_onnx(run)


def test_both_graphs_are_written_beside_the_run_with_the_decoding_contract(run, exported):
    assert exported.files == [run / "model.encoder.onnx", run / "model.decoder.onnx"]
    assert exported.path == run / "model.encoder.onnx" and all(p.is_file() for p in exported.files)
    assert not list(run.glob(".*.tmp-*")) and not (run / "model.onnx").exists()
    assert [g.role for g in exported.graphs] == ["encoder", "decoder"]
    assert exported.inputs == {"src_ids": ["batch", "src_len"], "src_lengths": ["batch"]}
    assert exported.max_abs_diff is not None and exported.max_abs_diff <= TOLERANCE
    assert any("greedy decoding" in note for note in exported.notes)

    state = load_artifact(run).task.state()
    for graph in exported.graphs:
        session = open_session(graph.path)
        meta = session.get_modelmeta().custom_metadata_map
        assert meta["modelforge.graph"] == graph.role
        assert json.loads(meta["modelforge.graph_files"]) == {"encoder": "model.encoder.onnx",
                                                               "decoder": "model.decoder.onnx"}
        assert json.loads(meta["modelforge.task_state"]) == state
        contract = json.loads(meta[META_KEY])
        assert (contract["bos_id"], contract["eos_id"], contract["pad_id"]) == (
            state["bos_id"], state["eos_id"], state["pad_id"])
        assert contract["max_new_tokens"] == 30 and contract["max_target_tokens"] == state["max_target_tokens"]
        assert contract["graphs"]["encoder"]["inputs"] == ["src_ids", "src_lengths"]
        names = [i.name for i in session.get_inputs()]  # the exporter may drop an input the graph never reads
        assert names == [n for n in contract["graphs"][graph.role]["inputs"] if n in names]
        assert [o.name for o in session.get_outputs()] == contract["graphs"][graph.role]["outputs"]


def test_onnx_logits_equal_pytorch_at_other_batch_sizes_and_lengths(run, exported):
    loaded = load_artifact(run)
    encoder, decoder = exported.files
    for texts, tgt_len in ((TEXTS[:1], 3), (TEXTS, 9)):
        batch = loaded.task.preprocess(texts)
        tgt = torch.randint(4, loaded.task.state()["tgt_vocab_size"], (len(texts), tgt_len),
                            generator=torch.Generator().manual_seed(tgt_len))
        tgt[:, 0] = loaded.task.state()["bos_id"]
        with torch.no_grad():
            expected = loaded.task._teacher_forced(
                loaded.model, {**batch, "tgt": torch.cat([tgt, tgt[:, :1]], dim=1)}).numpy()
        actual = teacher_forced_logits(encoder, decoder, batch["src"].numpy(), batch["src_lengths"].numpy(),
                                       tgt.numpy())
        assert actual.shape == expected.shape == (len(texts), tgt_len, loaded.task.state()["tgt_vocab_size"])
        np.testing.assert_allclose(actual, expected, atol=TOLERANCE, rtol=0)


def test_onnxruntime_greedy_loop_equals_the_tasks_greedy_decoding(run, exported):
    loaded = load_artifact(run)
    task = loaded.task
    batch = task.preprocess(TEXTS)
    greedy = task.search_settings(beam_size=1)
    from modelforge.tasks.seq2seq.decoding import decode_ids

    expected = decode_ids(loaded.model, batch["src"], batch["src_lengths"], greedy,
                          task.decode_limits(batch["src_lengths"]))
    encoder, decoder = exported.files
    ids = greedy_decode(encoder, decoder, batch["src"].numpy(), batch["src_lengths"].numpy())
    assert ids == expected and any(ids)
    assert task.decode_targets(ids) == task.forward(loaded.model, batch, beam_size=1)  # the texts `--beam 1` prints
    # one row alone decodes as it does in the batch (padding never leaks), and max_new caps the length
    assert greedy_decode(encoder, decoder, batch["src"][1:2, : int(batch["src_lengths"][1])].numpy(),
                         batch["src_lengths"][1:2].numpy()) == ids[1:2]
    assert all(len(row) <= 2 for row in greedy_decode(encoder, decoder, batch["src"].numpy(),
                                                      batch["src_lengths"].numpy(), max_new=2))


def test_output_option_names_both_files_and_cli_prints_them(cli, tmp_path, tmp_path_factory):
    run = _trained("gru", tmp_path_factory)  # the CLI path is the same for both families
    result = cli("export", str(run), "--format", "onnx", "--output", str(tmp_path / "x.onnx"))
    assert result.returncode == 0, result.stderr
    for name in ("x.encoder.onnx", "x.decoder.onnx"):
        assert (tmp_path / name).is_file()
        assert f"wrote {tmp_path / name} (" in result.stdout
    assert "verified: greedy decoding with onnxruntime equals PyTorch's" in result.stdout


def test_graphs_of_different_exports_are_refused_together(run, exported, tmp_path):
    again = export_onnx(run, output=tmp_path / "again.onnx")
    batch = load_artifact(run).task.preprocess(TEXTS)
    src_ids, src_lengths = batch["src"].numpy(), batch["src_lengths"].numpy()
    assert greedy_decode(again.files[0], again.files[1], src_ids, src_lengths)  # one export: fine
    with pytest.raises(ValueError, match="different exports"):
        greedy_decode(exported.files[0], again.files[1], src_ids, src_lengths)


def test_a_wrong_decoder_fails_verification_and_writes_nothing(run, tmp_path, monkeypatch):
    from modelforge.tasks.seq2seq import seq2seq_export

    real = seq2seq_export.seq2seq_graphs

    def broken(task, model):
        graphs = real(task, model)
        decoder = graphs.graphs[1].module
        forward = decoder.forward
        decoder.forward = lambda *args: tuple(t * 1.01 if t.is_floating_point() else t for t in _tuple(forward(*args)))
        return graphs

    monkeypatch.setattr(seq2seq_export, "seq2seq_graphs", broken)
    with pytest.raises(ArtifactError, match="differ from PyTorch"):
        export_onnx(run, output=tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())


def _tuple(value):
    return value if isinstance(value, tuple) else (value,)
