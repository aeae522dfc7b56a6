"""benchmarks/gpt_vs_hf.py's generation section at a tiny size: every variant, its ceiling and the ratios print."""

import argparse
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("transformers")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpt_vs_hf
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return gpt_vs_hf


def test_generation_report_prints_ceiling_fractions_and_ratios(bench, capsys):
    args = argparse.Namespace(layers=1, width=32, heads=2, context=16, vocab=300, new_tokens=6, bandwidth_mb=4)
    ours, hf = bench.same_weight_models(args)
    bench.report_generation(args, ours, hf, bench.torch.tensor([[7]]))
    out = capsys.readouterr().out
    for variant in ("ours_fp32", "ours_bf16", "ours_int8", "hf_fp32"):
        line = re.search(rf"^{variant}_generate_tokens_per_s: ([\d.]+) .*ceiling_fraction: ([\d.e-]+)$", out, re.M)
        assert line and float(line.group(1)) > 0 and float(line.group(2)) > 0, out
    assert "generate_same_tokens_as_hf_fp32: True" in out  # same weights, same greedy tokens
    assert re.search(r"^table: gpt generate tok/s \(int8 vs hf fp32\) \| [\d.]+ \| [\d.]+ \| [\d.]+$", out, re.M)
    assert "int8_head_matvec_ms_dynamic_per_channel:" in out


def test_bytes_per_token_counts_weights_once_and_the_cache(bench):
    from modelforge.core.registry import build

    model = build("model", "gpt", vocab_size=100, max_positions=8, dim=16, num_layers=1, num_heads=2, dropout=0.0)
    weights = bench.weight_bytes(model)
    assert bench.bytes_per_token(model, 2, 4) == weights + 2 * 1 * 16 * (2 + 4 / 2) * 4
