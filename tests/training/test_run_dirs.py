"""Run directories: nothing is written before training starts; ``--resume`` continues only a run with a checkpoint,
says which and from where, refuses when there is none, and leaves a finished run untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelforge.cli import main

TINY = ["model.name=mlp", "model.hidden=[8]", "data.limit=64", "train.batch_size=16", "train.progress=off",
        "data.val_size=16", "data.test_size=32"]


def _train(capsys, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["train", "digits-cnn", *TINY, f"train.output_dir={tmp_path / 'runs'}", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("bad", ["data.source=folder", f"data.path={Path('/nonexistent/images')}",
                                 "data.val_size=100000"])
def test_a_run_that_fails_before_training_leaves_no_directory(capsys, tmp_path, bad):
    extra = ["data.source=folder", bad] if bad.startswith("data.path") else [bad]
    code, _, err = _train(capsys, tmp_path, *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_resume_with_nothing_to_resume_refuses(capsys, tmp_path):
    leftover = tmp_path / "runs" / "digits-cnn"
    leftover.mkdir(parents=True)
    (leftover / "recipe.yaml").write_text("name: digits-cnn\n")  # what a failed run used to leave behind
    code, _, err = _train(capsys, tmp_path, "--resume")
    assert code == 2 and err.count("\n") == 1 and "no run of recipe 'digits-cnn'" in err and "checkpoint" in err
    assert sorted(p.name for p in leftover.iterdir()) == ["recipe.yaml"]
    code, _, err = _train(capsys, tmp_path, "--resume", "--run-dir", str(leftover))
    assert code == 2 and err.count("\n") == 1 and "holds no checkpoint" in err


def test_resume_skips_folders_without_a_checkpoint_and_says_where_it_resumes(capsys, tmp_path):
    code, _, _ = _train(capsys, tmp_path, "train.max_steps=2")
    assert code == 0
    real = tmp_path / "runs" / "digits-cnn"
    newer = tmp_path / "runs" / "digits-cnn-2"  # newer, but nothing to resume in it
    newer.mkdir()
    (newer / "recipe.yaml").write_text("name: digits-cnn\n")
    code, out, _ = _train(capsys, tmp_path, "train.max_steps=4", "--resume")
    assert code == 0
    assert f"resuming {real} from step 2" in out
    assert (real / "checkpoints" / "step-0000004").is_dir()
    assert sorted(p.name for p in newer.iterdir()) == ["recipe.yaml"]


def test_resume_of_a_finished_run_changes_nothing(capsys, tmp_path):
    code, _, _ = _train(capsys, tmp_path, "train.max_steps=2")
    assert code == 0
    run = tmp_path / "runs" / "digits-cnn"
    before = _files(run)
    code, out, err = _train(capsys, tmp_path, "train.max_steps=2", "--resume")
    assert code == 0, err
    assert "already finished" in out and "nothing changed" in out and "resuming" not in out
    assert _files(run) == before
    assert (run / "metrics.jsonl").read_text().count('"event": "test"') == 1


def _checkpoint(run: Path, step: int, state: str | None = None) -> None:
    target = run / "checkpoints" / f"step-{step:07d}"
    target.mkdir(parents=True)
    (target / "state.json").write_text(state or f'{{"step": {step}, "epoch": 0, "stop_reason": null}}')


def test_run_dir_choice_without_training(tmp_path):
    import os

    from modelforge.core.errors import ArtifactError
    from modelforge.training.run_dirs import latest_resumable, new_run_dir

    (tmp_path / "x").write_text("a file, not a run")
    assert new_run_dir(tmp_path, "x") == tmp_path / "x-2"
    _checkpoint(tmp_path / "x-2", 4)
    _checkpoint(tmp_path / "x-3", 2)
    _checkpoint(tmp_path / "x-other", 9)  # another recipe's name that starts alike
    os.utime(tmp_path / "x-2" / "checkpoints" / "step-0000004", ns=(1, 1))  # x-3 holds the newest checkpoint
    point = latest_resumable(tmp_path, "x")
    assert point.directory == tmp_path / "x-3" and point.step == 2
    _checkpoint(tmp_path / "x-4", 6, state="{not json")
    with pytest.raises(ArtifactError, match="step-0000006 cannot be read"):
        latest_resumable(tmp_path, "x")


def test_claiming_a_new_run_dir_never_shares_a_folder(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from modelforge.training.run_dirs import claim_new_run_dir

    (tmp_path / "x-2").mkdir()  # empty, but another run may hold it: not shared
    assert claim_new_run_dir(tmp_path / "x-2", "x") == tmp_path / "x-3"
    (tmp_path / "m-2").mkdir()  # a recipe whose own name ends in -N counts on from its own name
    assert claim_new_run_dir(tmp_path / "m-2", "m-2") == tmp_path / "m-2-2"
    with ThreadPoolExecutor(8) as pool:  # eight runs that all chose "y" before any had created it
        claimed = list(pool.map(lambda _: claim_new_run_dir(tmp_path / "y", "y"), range(8)))
    assert len(set(claimed)) == 8 and tmp_path / "y" in claimed


def test_a_run_whose_chosen_folder_was_taken_while_its_data_loaded_moves_on(capsys, tmp_path, monkeypatch):
    from modelforge.training import run_dirs

    taken = tmp_path / "runs" / "digits-cnn"
    # the choice made before the data loaded: the folder was still free then, another run has taken it since
    monkeypatch.setattr(run_dirs, "new_run_dir", lambda output_dir, name: taken)
    taken.mkdir(parents=True)
    (taken / "recipe.yaml").write_text("name: the other run\n")
    code, _, err = _train(capsys, tmp_path, "train.max_steps=1")
    assert code == 0, err
    assert (taken / "recipe.yaml").read_text() == "name: the other run\n"
    assert (tmp_path / "runs" / "digits-cnn-2" / "model").is_dir()
