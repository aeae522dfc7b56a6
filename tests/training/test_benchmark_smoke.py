import math
import re
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
    # the CPU has no listed peak: it is measured, so MFU is a number on every device, not nan
    assert "(measured bf16 512x512 matmul)" in result.stdout
    mfus = [float(m) for m in re.findall(r"mfu: (\S+)", result.stdout)]
    assert len(mfus) == 2 and all(math.isfinite(m) and m > 0 for m in mfus), result.stdout


def test_gpu_gpt2_uses_the_listed_peak_for_a_known_gpu():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_gpt2
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert gpu_gpt2.device_peak(gpu_gpt2.torch.device("cuda"), "NVIDIA H200") == (989e12, "listed")


def test_bench_rejects_unknown_benchmark(cli):
    result = cli("bench", "no_such_bench")
    assert result.returncode == 2 and "available:" in result.stderr and "trainer_overhead" in result.stderr


def test_user_tables_benchmark_builds_real_tables_and_folders(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import user_tables
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    debates = user_tables.text_tables("debates", (None, None))
    assert len(debates["train"]) + len(debates["test"]) == 1122
    assert {label for _, label in debates["train"]} == {"Republican", "Democratic", "Moderator"}
    assert not {t for t, _ in debates["train"]} & {t for t, _ in debates["test"]}  # hash split: no shared text
    photos = user_tables.image_folder("photos", tmp_path / "photos")
    assert sorted(p.name for p in (photos / "test").iterdir()) == ["astronaut", "cat", "coffee"]
    assert len(list((photos / "train").rglob("*.png"))) == 600
