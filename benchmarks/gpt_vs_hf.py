"""GPT training and generation speed: our GPT vs Hugging Face ``GPT2LMHeadModel``, same config and same weights.

The HF model is built from a ``GPT2Config`` (default: 6 layers, 384 wide, 6 heads, 256 context, GPT-2's 50257-token
vocabulary, no dropout), saved, and loaded into ours through ``models.hf``, so both hold identical weights (the
script checks their logits agree). Prints:

- training tokens/s of each (forward, cross-entropy, backward, AdamW step on batch × context tokens; rounds
  alternate between the two and the best counts) and their ratio (target ≥ 1.2 for ours);
- model FLOPs utilisation of each against this machine's fp32 matmul peak, measured here with a large matmul
  (FLOPs per token: 6 × matmul parameters + 12 × layers × context × width, the PaLM formula);
- greedy generation of 256 tokens at batch 1 with KV cache, ours vs ``generate``, tokens/s and the ratio
  (target ≥ 2), and whether both produced the same tokens.

    python benchmarks/gpt_vs_hf.py [--quick] [--batch 4] [--steps 3] [--new-tokens 256] [--vocab 50257] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from modelforge.models.hf import load_hf_gpt2  # noqa: E402


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best observed fp32 FLOP/s of a size×size matmul on this machine, with the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def train_step_fn(model, optimizer, tokens: torch.Tensor, hf: bool):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> float:
        logits = model(inputs).logits if hf else model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def best_time(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def flops_per_token(n_layer: int, width: int, context: int, vocab: int) -> float:
    matmul_params = n_layer * 12 * width * width + vocab * width  # blocks + output projection
    return 6 * matmul_params + 12 * n_layer * context * width


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 layers, 128 wide, 64 context, 32 tokens")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model (after one warm-up)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.layers, args.width, args.heads, args.context, args.vocab = 2, 128, 4, 64, 1000
        args.batch, args.steps, args.new_tokens = 2, 1, 32
    return args


def same_weight_models(args: argparse.Namespace):
    """An HF GPT2LMHeadModel and ours holding the same weights (saved by HF, loaded through models.hf)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=args.context, n_embd=args.width, n_layer=args.layers,
                        n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=args.vocab - 1, eos_token_id=args.vocab - 1)
    hf = GPT2LMHeadModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_hf_gpt2(tmp)
    return ours, hf


def training_times(ours, hf, tokens: torch.Tensor, steps: int) -> dict[str, float]:
    """Best seconds per training step of each; rounds alternate so that load changes hit both alike."""
    ours.train(), hf.train()
    fns = {
        "ours": train_step_fn(ours, torch.optim.AdamW(ours.parameters(), lr=1e-4), tokens, hf=False),
        "hf": train_step_fn(hf, torch.optim.AdamW(hf.parameters(), lr=1e-4), tokens, hf=True),
    }
    for fn in fns.values():
        fn()  # warm-up
    times = {"ours": float("inf"), "hf": float("inf")}
    for _ in range(steps):
        for name, fn in fns.items():
            times[name] = min(times[name], best_time(fn, 1))
    return times


def generation_times(ours, hf, prompt: torch.Tensor, new_tokens: int, rounds: int = 2):
    """Best seconds for ``new_tokens`` greedy tokens at batch 1 with KV cache, and whether both agree."""
    ours.eval(), hf.eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0

    def hf_generate(count: int) -> torch.Tensor:
        with torch.no_grad():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=count,
                               min_new_tokens=count, do_sample=False, use_cache=True)

    def ours_generate(count: int) -> torch.Tensor:
        return ours.generate(prompt, count, use_cache=True)

    hf_generate(8), ours_generate(8)  # warm-up
    times, outputs = {"hf": float("inf"), "ours": float("inf")}, {}
    for _ in range(rounds):
        for name, fn in (("hf", hf_generate), ("ours", ours_generate)):
            start = time.perf_counter()
            outputs[name] = fn(new_tokens)
            times[name] = min(times[name], time.perf_counter() - start)
    return times, torch.equal(outputs["hf"], outputs["ours"])


def main() -> None:
    args = parse_args()
    ours, hf = same_weight_models(args)
    tokens = torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours.eval()(tokens[:, :-1]) - hf.eval()(tokens[:, :-1]).logits).abs().max().item()
    train_time = training_times(ours, hf, tokens, args.steps)
    step_tokens = args.batch * args.context
    peak = matmul_peak_flops()
    per_token = flops_per_token(args.layers, args.width, args.context, args.vocab)
    gen_time, same_tokens = generation_times(ours, hf, tokens[:1, :1], args.new_tokens)

    print(f"config: layers={args.layers} width={args.width} heads={args.heads} context={args.context} "
          f"vocab={args.vocab} batch={args.batch}")
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"max_abs_logit_diff: {diff:.3g}")
    for name in ("ours", "hf"):
        print(f"{name}_train_tokens_per_s: {step_tokens / train_time[name]:.0f}")
    print(f"train_ratio_ours_over_hf: {train_time['hf'] / train_time['ours']:.3f}")
    print(f"matmul_peak_gflops: {peak / 1e9:.1f}")
    for name in ("ours", "hf"):
        print(f"{name}_mfu: {per_token * step_tokens / train_time[name] / peak:.3f}")
    for name in ("ours", "hf"):
        print(f"{name}_generate_tokens_per_s: {args.new_tokens / gen_time[name]:.1f}")
    print(f"generate_ratio_ours_over_hf: {gen_time['hf'] / gen_time['ours']:.3f}")
    print(f"generate_same_tokens: {same_tokens}")


if __name__ == "__main__":
    main()
