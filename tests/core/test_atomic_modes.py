"""Atomic writes leave files with the modes an ordinary write would (not mkstemp's private 0600)."""

import os
import stat

from modelforge.core.atomic import atomic_directory, atomic_write_text


def test_atomic_files_and_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "a.txt"
        atomic_write_text(target, "x")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        with atomic_directory(tmp_path / "d") as folder:
            (folder / "f").write_text("y")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    finally:
        os.umask(old)
