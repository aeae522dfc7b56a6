"""The report's "Final metrics" are the figures of the model that was saved: with early stopping's restore_best,
the best evaluation's, not the last epoch's."""

from __future__ import annotations

import pytest

import modelforge
from modelforge.report import read_run


def test_final_metrics_are_those_of_the_restored_best_model(tmp_path):
    # mode=max on val_loss makes the *first* evaluation the best one (the loss falls as training goes on), so the
    # restored model is epoch 1's while the last logged evaluation is epoch 3's
    run = modelforge.train("digits-cnn", [
        "model.name=mlp", "model.hidden=[16]", "data.limit=200", "train.batch_size=20", "train.epochs=3",
        "train.lr=0.01", "train.progress=off", "train.early_stopping.metric=val_loss",
        "train.early_stopping.mode=max", "train.early_stopping.patience=5"], run_dir=tmp_path / "run")
    evals = [r for r in read_run(run.directory).records if r.get("event") == "eval"]
    assert len(evals) == 3 and evals[0]["val_loss"] != evals[-1]["val_loss"]
    restored = run.summary["restored_best"]
    assert restored["step"] == evals[0]["step"] and restored["val_loss"] == evals[0]["val_loss"]

    saved_model_val = modelforge.evaluate(run.directory, split="val")
    final = read_run(run.directory).final_metrics()
    assert final["val_loss"] == pytest.approx(saved_model_val["val_loss"], rel=1e-5)
    assert final["val_accuracy"] == pytest.approx(saved_model_val["val_accuracy"])
    page = (run.directory / "report.html").read_text()
    assert f"step {evals[0]['step']}" in page  # the overview says which evaluation's weights were kept
