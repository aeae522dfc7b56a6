"""``modelforge bench`` without a repository checkout: the scripts ship as ``modelforge.benchmarks``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _installed_layout(root: Path, benchmarks: dict[str, str] | None) -> Path:
    """A site-packages-like folder holding only the package (no repository around it), optionally with scripts."""
    site = root / "site"
    shutil.copytree(REPO / "src" / "modelforge", site / "modelforge", ignore=IGNORE)
    if benchmarks is not None:
        (site / "modelforge" / "benchmarks").mkdir()
        for name, code in benchmarks.items():
            (site / "modelforge" / "benchmarks" / name).write_text(code)
    return site


def _bench(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "modelforge", "bench", *args], capture_output=True, text=True,
                          cwd=site.parent, env=env, timeout=120)


def test_bench_runs_the_scripts_shipped_inside_an_installed_package(tmp_path):
    site = _installed_layout(tmp_path, {
        "echo_table.py": "import sys\nprint('table: echo |', 'quick' if '--quick' in sys.argv else 'full', '|2|.5')\n",
        "gpu_gpt2.py": "raise SystemExit('a GPU-only script must not run')\n",
        "_helper.py": "raise SystemExit('a helper module is not a benchmark')\n",
    })
    result = _bench(site, "--quick")
    assert result.returncode == 0, result.stderr
    assert f"{site / 'modelforge' / 'benchmarks' / 'echo_table.py'} --quick" in result.stdout
    assert "echo" in result.stdout and "quick" in result.stdout and "gpu" not in result.stdout
    unknown = _bench(site, "gpt_vs_hf")  # the checkout's scripts are not used by an install
    assert unknown.returncode == 2 and "available: echo_table" in unknown.stderr


def test_bench_without_scripts_says_so_in_one_line(tmp_path):
    result = _bench(_installed_layout(tmp_path, None))
    assert result.returncode == 2 and "no benchmark scripts found" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_the_build_puts_every_benchmark_script_into_the_package(tmp_path):
    for item in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / item, tmp_path / item)
    for folder in ("src", "benchmarks"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=IGNORE)
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", "out"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    shipped = {p.name for p in (tmp_path / "out" / "modelforge" / "benchmarks").glob("*.py")}
    assert shipped == {p.name for p in (REPO / "benchmarks").glob("*.py")} and "gpu_gpt2.py" in shipped
    assert (tmp_path / "out" / "modelforge" / "serve" / "static").is_dir()  # package data still ships
    assert (tmp_path / "out" / "modelforge" / "models" / "decode_precision.py").is_file()


def test_bench_runs_a_companion_script_once_by_default_and_on_its_own_when_named(monkeypatch, capsys):
    import subprocess

    from modelforge import benchmarks_runner

    ran: list[str] = []

    def fake_run(command, **_):
        ran.append(command[1].rsplit("/", 1)[-1])
        return subprocess.CompletedProcess(command, 0, stdout="table: x | 1 | 1 | 1.0\n", stderr="")

    monkeypatch.setattr(benchmarks_runner.subprocess, "run", fake_run)
    assert benchmarks_runner.run_benchmarks([], quick=True) == 0
    assert "train_speed.py" in ran and "seed_cnn_vs_keras.py" not in ran  # train_speed runs the Keras comparison
    ran.clear()
    assert benchmarks_runner.run_benchmarks(["seed_cnn_vs_keras"]) == 0 and ran == ["seed_cnn_vs_keras.py"]
    capsys.readouterr()
