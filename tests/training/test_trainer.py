import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import modelforge
from modelforge.core.errors import TrainingError
from modelforge.core.seed import seed_everything
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.training.optim import lr_at
from modelforge.training.trainer import Trainer

TINY = ["data.limit=256", "train.log_every_steps=1", "train.progress=off"]


def _trainer(tmp_path, overrides):
    recipe = load_recipe("digits-cnn", TINY + overrides)
    seed_everything(recipe.train.seed)
    task = get_task(recipe.task)(recipe)
    splits = task.datasets()
    model = task.build_model()
    return Trainer(task, model, recipe.train, tmp_path), splits


def test_grad_accumulation_equals_large_batch(tmp_path):
    big, splits = _trainer(tmp_path / "a", ["train.batch_size=32", "train.max_steps=1", "train.optimizer=sgd",
                                            "train.lr=0.1"])
    small, _ = _trainer(tmp_path / "b", ["train.batch_size=8", "train.grad_accum=4", "train.max_steps=1",
                                         "train.optimizer=sgd", "train.lr=0.1"])
    small.model.load_state_dict(big.model.state_dict())
    big.fit(splits)
    small.fit(splits)
    for (name, a), b in zip(big.model.state_dict().items(), small.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert big.step == small.step == 1


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "linear", "onecycle"])
def test_trainer_applies_the_schedule(tmp_path, schedule):
    trainer, splits = _trainer(
        tmp_path, [f"train.schedule={schedule}", "train.max_steps=12", "train.warmup_steps=2", "train.step_size=4",
                   "train.batch_size=16"]
    )
    trainer.fit(splits)
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if r["event"] == "train"]
    assert logged == pytest.approx([lr_at(s, 12, trainer.cfg) for s in range(12)])
    assert len(set(round(v, 12) for v in logged)) > (1 if schedule == "constant" else 3)


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    with pytest.raises(TrainingError) as info:
        modelforge.train("digits-cnn", TINY + ["train.optimizer=sgd", "train.lr=1e25", "train.checkpoint_every_steps=1",
                                               "train.batch_size=16"], run_dir=tmp_path)
    message = str(info.value)
    assert "loss became" in message and "last good checkpoint" in message
    checkpoints = sorted((tmp_path / "checkpoints").glob("step-*"))
    assert checkpoints and str(checkpoints[-1]) in message
    weights = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_early_stopping_stops_and_restores_best(tmp_path):
    run = modelforge.train(
        "digits-cnn",
        TINY + ["train.epochs=30", "train.lr=0.003", "train.early_stopping.metric=val_loss",
                "train.early_stopping.patience=1", "train.early_stopping.min_delta=1.0"],
        run_dir=tmp_path,
    )
    assert run.summary["stop_reason"].startswith("early stopping")
    assert run.summary["epochs"] == 2  # epoch 1 sets the best; epoch 2 cannot improve by min_delta=1.0


def test_early_stopping_never_fires_inside_min_steps(tmp_path):
    trainer, splits = _trainer(tmp_path, ["train.epochs=30", "train.batch_size=64", "train.min_steps=12",
                                          "train.early_stopping.metric=val_loss", "train.early_stopping.patience=1",
                                          "train.early_stopping.min_delta=1.0"])
    summary = trainer.fit(splits)  # 4 steps an epoch: the noise-level stop may come only after step 12
    assert summary["stop_reason"].startswith("early stopping") and summary["steps"] == 16


def test_bf16_autocast_trains(tmp_path):
    run = modelforge.train("digits-cnn", TINY + ["train.precision=bf16", "train.max_steps=5"], run_dir=tmp_path)
    assert run.summary["steps"] == 5 and 0 <= run.metrics["test_accuracy"] <= 1


def _weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_sigkill_resume_is_bit_identical(tmp_path):
    # dropout + random-shift augmentation make the result depend on the RNG state, not only on the data order
    args = ["train", "digits-cnn", "model.name=mlp", "model.hidden=[64]", "model.dropout=0.3", "data.shift=1",
            "data.limit=400", "train.epochs=3", "train.batch_size=16", "train.checkpoint_every_steps=3",
            "train.progress=off", "train.eval_every_steps=10"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = tmp_path / "full"
    done = subprocess.run([sys.executable, "-m", "modelforge", *args, "--run-dir", str(full)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "modelforge", *args, "--run-dir", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if len(list((killed / "checkpoints").glob("step-*"))) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model").exists()

    resumed = subprocess.run([sys.executable, "-m", "modelforge", *args, "--run-dir", str(killed), "--resume"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = _weights(full), _weights(killed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    full_log = (full / "metrics.jsonl").read_text()
    assert (killed / "metrics.jsonl").read_text() == full_log or len(full_log) > 0


def _kill_after_checkpoints(args, run_dir, env, count=2):
    proc = subprocess.Popen([sys.executable, "-m", "modelforge", *args, "--run-dir", str(run_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if len(list((run_dir / "checkpoints").glob("step-*"))) >= count or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_sigkill_resume_of_a_lazy_image_folder_with_other_worker_count_is_bit_identical(tmp_path):
    """Images decoded from disk by 2 DataLoader workers, killed, resumed in the main process (0 workers): the
    batches, dropout and random shifts must be those of the uninterrupted run."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, value in (("dark", 60), ("light", 190)):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(48):
            pixels = np.clip(rng.normal(value, 30, (10, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.png")
    overrides = [f"data.path={tmp_path / 'photos'}", "data.image_size=8", "data.shift=1", "model.name=mlp",
                 "model.hidden=[32]", "model.dropout=0.3", "train.max_steps=30", "train.batch_size=8",
                 "train.early_stopping=null", "train.checkpoint_every_steps=3", "train.progress=off"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    modelforge.train("image-classifier", [*overrides, "train.num_workers=2"], run_dir=full)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    _kill_after_checkpoints(["train", "image-classifier", *overrides, "train.num_workers=2"], killed, env)
    modelforge.train("image-classifier", [*overrides, "train.num_workers=0"], run_dir=killed, resume=True)
    expected, actual = _weights(full), _weights(killed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def _resume_matches_across_worker_counts(tmp_path, recipe, overrides):
    """Trained with 2 DataLoader workers uninterrupted; killed after two checkpoints and resumed with 0 workers: the
    weights must be bit-identical."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    quick = {"report": False, "baseline": False}  # only the weights are compared
    modelforge.train(recipe, [*overrides, "train.num_workers=2"], run_dir=full, **quick)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    _kill_after_checkpoints(["train", recipe, *overrides, "train.num_workers=2"], killed, env)
    modelforge.train(recipe, [*overrides, "train.num_workers=0"], run_dir=killed, resume=True, **quick)
    expected, actual = _weights(full), _weights(killed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_sigkill_resume_of_webdataset_shards_with_other_worker_count_is_bit_identical(tmp_path, monkeypatch):
    """Images read from tar shards at their indexed offsets, in the random batch plan; shifts and dropout come from
    the restored RNG."""
    from image_records_data import encoded_images, write_shards

    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    shards = write_shards(tmp_path / "shards", encoded_images(64), count=3)
    _resume_matches_across_worker_counts(tmp_path, "image-classifier", [
        f"data.path={shards}", "data.image_size=8", "data.shift=1", "model.name=mlp", "model.hidden=[32]",
        "model.dropout=0.3", "train.max_steps=12", "train.batch_size=8", "train.early_stopping=null",
        "train.checkpoint_every_steps=2", "train.progress=off"])


def test_sigkill_resume_of_wavs_read_from_disk_with_other_worker_count_is_bit_identical(tmp_path):
    """WAVs decoded per item; the batch's noise, speed perturbation, SpecAugment and dropout come from the restored
    RNG."""
    from modelforge.data.audio import write_wav

    root = tmp_path / "sounds"
    root.mkdir()
    lines = []
    for i in range(32):
        label, pitch = ("low", 220) if i % 2 else ("high", 880)
        t = np.arange(1600 + 160 * (i % 5)) / 16000
        write_wav(root / f"{i}.wav", (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), 16000)
        lines.append(f"{i}.wav\t{label}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    _resume_matches_across_worker_counts(tmp_path, "audio-classifier", [
        f"data.path={root}", "data.speed_perturb=[0.9,1.1]", "model.channels=[4,4]", "model.strides=[1,2]",
        "train.max_steps=12", "train.batch_size=4", "train.early_stopping=null", "train.checkpoint_every_steps=2",
        "train.progress=off"])


def test_sigkill_resume_of_clips_read_from_disk_with_other_worker_count_is_bit_identical(tmp_path):
    """Video clips sampled per item; dropout comes from the restored RNG."""
    from modelforge.data.formats.video import write_video

    rng = np.random.default_rng(0)
    for label, value in (("dark", 60), ("light", 190)):
        for i in range(12):
            frames = np.clip(rng.normal(value, 30, (5, 12, 12, 3)), 0, 255).astype(np.uint8)
            write_video(tmp_path / "clips" / label / f"{i}.mkv", frames)
    _resume_matches_across_worker_counts(tmp_path, "video-classifier", [
        f"data.path={tmp_path / 'clips'}", "data.num_frames=3", "data.image_size=8", "model.channels=[4]",
        "model.dropout=0.3", "train.max_steps=12", "train.batch_size=4", "train.early_stopping=null",
        "train.checkpoint_every_steps=2", "train.progress=off"])


def test_sigkill_resume_of_caption_files_read_from_disk_with_other_worker_count_is_bit_identical(tmp_path):
    """Retrieval on the user's caption files, images decoded per item; each step's caption pick and dropout come
    from the restored RNG."""
    from captioning_data import caption_folder

    _resume_matches_across_worker_counts(tmp_path, "scenes-clip", [
        f"data.path={caption_folder(tmp_path / 'photos')}", "data.image_size=16", "data.tokenizer.kind=word",
        "data.init_text_encoder=null", "data.text_tower=train", "model.dim=16", "model.num_layers=1",
        "model.num_heads=2", "model.mlp_hidden=32", "model.embed_dim=8", "model.image_widths=[4,8]",
        "model.dropout=0.3", "train.max_steps=12", "train.batch_size=4", "train.early_stopping=null",
        "train.checkpoint_every_steps=2", "train.progress=off"])


def test_plain_sgd_run_resumes_like_an_uninterrupted_one(tmp_path):
    """SGD without momentum keeps no optimiser state; resuming it must still work and end identical."""
    common = ["train.optimizer=sgd", "train.momentum=0", "train.lr=0.05", "train.batch_size=32",
              "train.schedule=constant"]
    whole, splits = _trainer(tmp_path / "whole", common + ["train.max_steps=6"])
    whole.fit(splits)
    first, splits = _trainer(tmp_path / "cut", common + ["train.max_steps=3"])
    first.fit(splits)
    second, splits = _trainer(tmp_path / "cut", common + ["train.max_steps=6"])
    second.fit(splits, resume=True)
    assert second.step == 6
    for (name, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name


def _accuracy_eval(correct: int, rows: int) -> dict:
    """A validation evaluation as classifier_evaluation reports it: accuracy and its standard error."""
    from modelforge.tasks.metrics import standard_error

    hits = [1] * correct + [0] * (rows - correct)
    return {"val_accuracy": correct / rows, "val_accuracy_se": standard_error(hits)}


@pytest.mark.parametrize("allowance, stops", [("1", False), ("0", True)])
def test_early_stopping_does_not_fire_on_one_row_flips_of_a_small_val_set(tmp_path, allowance, stops):
    trainer, _ = _trainer(tmp_path, ["train.early_stopping.metric=val_accuracy", "train.early_stopping.mode=max",
                                     "train.early_stopping.patience=2",
                                     f"train.early_stopping.noise_allowance={allowance}"])
    for correct in (36, 35, 35):  # 50 validation rows: 72 %, then one row flips back twice (70 %, 70 %)
        trainer._after_eval(_accuracy_eval(correct, 50))
    assert (trainer.stop_reason is not None) is stops  # an allowance of 1 standard error (6.4 points) waits
    if not stops:
        for correct in (25, 25):  # a real fall (50 %) stops it
            trainer._after_eval(_accuracy_eval(correct, 50))
        assert trainer.stop_reason.startswith("early stopping") and trainer.best == 0.72


def test_the_text_classifier_recipe_allows_one_standard_error_of_noise():
    assert load_recipe("text-classifier", ["data.path=t.csv"]).train.early_stopping.noise_allowance == 1.0


def test_a_task_that_fits_directly_skips_the_gradient_loop(tmp_path):
    """Task.fit_directly (the text classifier's stack): no optimiser step, one validation evaluation, a step-0
    checkpoint holding the fitted weights, and what the fit chose in the summary."""
    trainer, splits = _trainer(tmp_path, ["train.epochs=3"])

    def fit_directly(model, splits):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.01)
        return {"how": "filled", "rows": len(splits.train)}

    trainer.task.fit_directly = fit_directly
    summary = trainer.fit(splits)
    assert summary["steps"] == 0 and summary["fitted"] == {"how": "filled", "rows": len(splits.train)}
    events = [r["event"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
    assert events == ["eval"]
    saved = load_file(str(next((tmp_path / "checkpoints").glob("step-*")) / "model.safetensors"))
    assert all(torch.all(t == 0.01) for name, t in saved.items() if t.is_floating_point() and "running" not in name)
