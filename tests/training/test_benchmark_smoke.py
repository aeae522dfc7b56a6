import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_gpt2_benchmark_smoke_configuration_runs_on_cpu():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_gpt2.py"), "--smoke"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "plain_tokens_per_s" in result.stdout and "modelforge_tokens_per_s" in result.stdout
    assert "table: gpt2 train tokens/s (cpu)" in result.stdout


def test_bench_rejects_unknown_benchmark(cli):
    result = cli("bench", "no_such_bench")
    assert result.returncode == 2 and "available:" in result.stderr and "trainer_overhead" in result.stderr
