"""Benchmarks measure their peer in the same run, or say in one line why not. benchmarks/seed_cnn_vs_keras.py (called
by train_speed.py) at one step per side: with Keras importable both epoch times, accuracies and the ratio print;
without it one line says so and modelforge's figures still print. serve_load.py finds the BentoML peer's Python
without options (as `modelforge bench` runs it)."""

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def benchmark(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def bench():
    return benchmark("seed_cnn_vs_keras")


def figure(name: str, out: str) -> tuple[float, float]:
    found = re.search(rf"^{name}_epoch_s: ([\d.]+) .*test_accuracy: ([\d.]+)", out, re.M)
    assert found, out
    return float(found.group(1)), float(found.group(2))


def test_without_keras_one_line_says_so_and_modelforge_still_prints(bench, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras", None)  # `import keras` raises ImportError, as when it is absent
    results = bench.compare(samples=64, epochs=1, batch_size=64, test_rows=64, recipe_too=False)
    out = capsys.readouterr().out
    seconds, accuracy = figure("modelforge", out)
    assert seconds > 0 and 0 <= accuracy <= 1 and len(results["plain"]["epochs"]) == 1
    notes = [line for line in out.splitlines() if line.startswith("keras:")]
    assert len(notes) == 1 and "not importable" in notes[0] and "not measured" in notes[0], out
    assert "keras_epoch_s" not in out and "ratio_" not in out and "table:" not in out


def test_with_keras_both_sides_and_the_ratio_print(bench, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    results = bench.compare(samples=64, epochs=1, batch_size=64, test_rows=64, recipe_too=False)
    out = capsys.readouterr().out
    figure("modelforge", out)
    figure("keras", out)
    assert "backend torch" in out and results["keras"]["backend"] == "torch"
    assert len(results["keras"]["epochs"]) == 1  # one epoch of one batch: one step
    ratio = re.search(r"^ratio_modelforge_over_keras: ([\d.]+)", out, re.M)
    expected = results["plain"]["epochs"][0] / results["keras"]["epochs"][0]  # unrounded: the printed times are not
    assert ratio and float(ratio.group(1)) == pytest.approx(expected, abs=6e-4), out
    assert re.search(r"^table: seed_cnn epoch s vs Keras [\d.]+ \(torch\) \| [\d.]+ \| [\d.]+ \| [\d.]+$", out, re.M)


def test_serve_load_finds_the_bentoml_python_without_options(monkeypatch, tmp_path):
    serve_load = benchmark("serve_load")
    monkeypatch.setenv("MODELFORGE_BENTOML_PYTHON", "/opt/bento/bin/python")
    assert serve_load.default_bentoml_python() == "/opt/bento/bin/python"
    monkeypatch.delenv("MODELFORGE_BENTOML_PYTHON")
    made = tmp_path / ".venv-bentoml" / "bin" / "python"  # what `make bench-peers` makes
    made.parent.mkdir(parents=True)
    made.write_text("")
    monkeypatch.setattr(serve_load, "PEER_VENV", made)
    assert serve_load.default_bentoml_python() == str(made)
    monkeypatch.setattr(serve_load, "PEER_VENV", tmp_path / "absent")
    here = sys.executable if importlib.util.find_spec("bentoml") else None
    assert serve_load.default_bentoml_python() == here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bentoml" else object())
    assert serve_load.default_bentoml_python() is None  # then the one-line "bentoml: not found" and no BentoML mode


def test_epoch_turns_run_one_side_at_a_time_epoch_by_epoch(bench):
    log = []

    def loop(name, fail_at=None):
        def train(turns):
            for epoch in range(3):
                turns.begin()
                if epoch == fail_at:
                    raise ValueError(f"{name} broke")
                log.append((name, epoch))
                turns.end()
            turns.begin()
            log.append((name, "after"))
            return {"accuracy": 1.0}
        return train

    a, b = bench.EpochTurns(loop("a")), bench.EpochTurns(loop("b"))
    assert log == []  # both parked before their first epoch
    for _ in range(3):
        a.turn()
        b.turn()
    assert log == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert len(a.finish()["epochs"]) == 3 and log[-1] == ("a", "after")
    assert b.finish()["accuracy"] == 1.0
    broken = bench.EpochTurns(loop("c", fail_at=1))
    broken.turn()
    with pytest.raises(ValueError, match="c broke"):
        broken.turn()
