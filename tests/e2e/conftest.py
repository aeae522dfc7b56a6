"""Shared pieces of the end-to-end tests: a private data cache, and training a recipe through the real CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A MODELFORGE_CACHE of this test alone; the CLI subprocesses inherit it, so the user's cache is never touched."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELFORGE_CACHE", str(cache))
    return cache


@pytest.fixture
def train_cli(cli: Callable[..., subprocess.CompletedProcess]) -> Callable[..., subprocess.CompletedProcess]:
    """``train_cli(recipe, run_dir, overrides, files)`` runs ``modelforge train RECIPE *OVERRIDES --run-dir RUN_DIR``
    in a subprocess, asserts that it succeeded and wrote each of ``files`` (paths inside the run), and returns the
    finished process."""

    def train(recipe: str, run_dir: Path, overrides: Iterable[str] = (),
              files: Iterable[str] = ()) -> subprocess.CompletedProcess:
        result = cli("train", recipe, *overrides, "--run-dir", str(run_dir))
        assert result.returncode == 0, result.stderr
        for name in files:
            assert (run_dir / name).exists(), name
        return result

    return train
