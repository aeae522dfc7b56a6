"""GPT training and generation speed: our GPT vs Hugging Face ``GPT2LMHeadModel``, same config and same weights.

The HF model is built from a ``GPT2Config`` (default: 6 layers, 384 wide, 6 heads, 256 context, GPT-2's 50257-token
vocabulary, no dropout), saved, and loaded into ours through ``models.hf``, so both hold identical weights (the
script checks their logits agree). Prints:

- training tokens/s of each (forward, cross-entropy, backward, AdamW step on batch × context tokens; rounds
  alternate between the two and the best counts) and their ratio (target ≥ 1.2 for ours); skipped by --no-train;
- model FLOPs utilisation of each against this machine's fp32 matmul peak, measured here with a large matmul
  (FLOPs per token: 6 × matmul parameters + 12 × layers × context × width, the PaLM formula);
- greedy generation of ``--new-tokens`` tokens at batch 1 with KV cache: ours with fp32, bf16 and int8 weights
  (``models/decode_precision.py``) and HF ``generate`` in fp32 and bf16, tokens/s, the ratios (targets: ≥ 2× HF at
  equal precision, int8 ≥ 3× HF fp32) and whether ours (fp32) and HF produced the same tokens;
- the bandwidth ceiling of each: batch-1 decoding reads every weight once per token, so tokens/s cannot exceed
  memory bandwidth ÷ bytes read per token (weights + the KV cache). The bandwidth is measured in the same run with
  a large fp32 matrix-vector product; each variant prints its ceiling and the fraction of it reached (target ≥ 0.8);
- the time of one output-head-sized int8 matrix-vector product, weights read from memory, by each int8 kernel
  PyTorch has on CPU (why ``int8`` uses the one it does);
- with --quality-steps N (or --quality-run RUN): perplexity on held-out Shakespeare (the shakespeare-char recipe's
  test split) and greedy token agreement with fp32 for each dtype, for a small char-level GPT trained here for N
  steps (or the given trained language-modelling run). Target: int8 perplexity within 2 % of fp32.

    python benchmarks/gpt_vs_hf.py [--quick] [--no-train] [--threads N] [--new-tokens 256] [--quality-steps 300]
        [--quality-run RUN] [--batch 4] [--steps 3] [--vocab 50257] [--bandwidth-mb 256]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from modelforge.models.decode_precision import DECODE_DTYPES, for_decoding, weight_bytes  # noqa: E402
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
    parser.add_argument("--no-train", action="store_true", help="measure generation only")
    parser.add_argument("--bandwidth-mb", type=int, default=256, help="size of the bandwidth-measuring matrix")
    parser.add_argument("--quality-steps", type=int, default=0,
                        help="train a small char-level GPT on Shakespeare this many steps and compare dtypes on it")
    parser.add_argument("--quality-run", default=None, help="a trained language-modelling run to compare dtypes on")
    parser.add_argument("--quality-tokens", type=int, default=64, help="greedy tokens per prompt for agreement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.layers, args.width, args.heads, args.context, args.vocab = 2, 128, 4, 64, 1000
        args.batch, args.steps, args.new_tokens, args.bandwidth_mb = 2, 1, 32, 32
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


def bandwidth_bytes_per_s(megabytes: int, repeats: int = 5) -> float:
    """Best observed read bandwidth of a large fp32 matrix-vector product (the access pattern of batch-1 decoding)."""
    width = 1024
    matrix = torch.randn(megabytes * 2**20 // (4 * width), width)
    vector = torch.randn(width)
    matrix @ vector
    seconds = best_time(lambda: matrix @ vector, repeats)
    return matrix.numel() * 4 / seconds


def bytes_per_token(model, prompt_len: int, new_tokens: int) -> float:
    """Weights read by one decoding step plus the average KV cache read (keys and values of every layer)."""
    cfg = model.cfg
    cache_dtype = model.embeddings.tokens.weight.dtype
    average_length = prompt_len + new_tokens / 2
    cache = 2 * cfg.num_layers * cfg.dim * average_length * torch.finfo(cache_dtype).bits / 8
    return weight_bytes(model) + cache


def int8_kernel_seconds(width: int, vocab: int, stream_mb: int = 128, rounds: int = 3) -> dict[str, float]:
    """Seconds per output-head-sized int8 matrix-vector product by each int8 kernel PyTorch has on CPU.

    The products cycle through enough distinct matrices (about ``stream_mb`` of int8 weights) that each one reads
    its weights from memory rather than from cache, as a decoding step does.
    """
    copies = max(2, min(16, stream_mb * 2**20 // (width * vocab)))
    x = torch.randn(1, width)
    x16 = x.bfloat16()
    dynamic, packed = [], []
    for _ in range(copies):
        head = torch.nn.Linear(width, vocab, bias=False)
        torch.nn.init.normal_(head.weight, std=0.02)
        dynamic.append(for_decoding(torch.nn.Sequential(head), "int8"))
        scale = head.weight.detach().abs().amax(dim=1) / 127
        packed.append(((head.weight.detach() / scale[:, None]).round().to(torch.int8), scale.bfloat16()))

    def cycle(fn) -> float:
        return best_time(lambda: [fn(i) for i in range(copies)], rounds) / copies

    times = {"dynamic_per_channel": cycle(lambda i: dynamic[i](x))}
    try:  # weight-only: int8 weights dequantized inside the matmul, bf16 activations
        torch._weight_int8pack_mm(x16, *packed[0])
        times["weight_only_int8pack_bf16"] = cycle(lambda i: torch._weight_int8pack_mm(x16, *packed[i]))
    except (AttributeError, RuntimeError, NotImplementedError):
        pass
    return times


def decoding_variants(ours, hf) -> dict:
    """name → (generate(prompt, count) → ids, the model whose bytes it streams, or None for HF's)."""
    ours.eval(), hf.eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    hf16 = copy.deepcopy(hf).to(torch.bfloat16)

    def hf_generate(model):
        def run(prompt, count):
            with torch.no_grad():
                return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=count,
                                      min_new_tokens=count, do_sample=False, use_cache=True)
        return run

    variants = {f"ours_{d}": for_decoding(ours, d) for d in DECODE_DTYPES}
    runs = {name: (lambda m: lambda prompt, count: m.generate(prompt, count, use_cache=True))(model)
            for name, model in variants.items()}
    runs.update(hf_fp32=hf_generate(hf), hf_bf16=hf_generate(hf16))
    return {name: (fn, variants.get(name, ours if name == "hf_fp32" else variants["ours_bf16"]))
            for name, fn in runs.items()}


def generation_results(ours, hf, prompt: torch.Tensor, new_tokens: int, rounds: int = 2) -> dict:
    """Best seconds for ``new_tokens`` greedy tokens at batch 1 with KV cache for every variant, and their tokens."""
    variants = decoding_variants(ours, hf)
    working = {}
    for name, (fn, model) in variants.items():
        try:
            fn(prompt, 4)  # warm-up; a peer that cannot run a precision is reported, not fatal
            working[name] = (fn, model)
        except (RuntimeError, TypeError, NotImplementedError) as exc:
            print(f"{name}: does not run here ({str(exc).splitlines()[0][:100]})")
    times, outputs = dict.fromkeys(working, float("inf")), {}
    for _ in range(rounds):  # rounds alternate between the variants, so load changes hit all alike
        for name, (fn, _) in working.items():
            start = time.perf_counter()
            outputs[name] = fn(prompt, new_tokens)
            times[name] = min(times[name], time.perf_counter() - start)
    return {name: {"seconds": times[name], "ids": outputs[name], "model": working[name][1]} for name in working}


def agreement(ids: torch.Tensor, reference: torch.Tensor, prompt_len: int) -> float:
    """Fraction of generated positions where ``ids`` holds the same token as ``reference``."""
    return (ids[:, prompt_len:] == reference[:, prompt_len:]).float().mean().item()


def shakespeare_quality(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per decoding dtype: perplexity on held-out Shakespeare (the shakespeare-char recipe's test split) and greedy
    token agreement with fp32, for a run given by ``--quality-run`` or a small model trained here for a few steps."""
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    if args.quality_run:
        from modelforge.api import load

        predictor = load(args.quality_run)
        task, model = predictor.task, predictor.model
    else:
        recipe = load_recipe("shakespeare-char", ["data.block_size=64", "data.eval_windows=64", "model.name=gpt",
                                                  "model.dim=128", "model.num_layers=2", "model.num_heads=4",
                                                  "model.dropout=0.0"])
        task = get_task(recipe.task)(recipe)
        task.datasets()
        torch.manual_seed(0)  # the same small model every run
        model = task.build_model()
        train_briefly(task, model, args.quality_steps)
    test = task.datasets().test
    windows = torch.stack([test[i] for i in range(len(test))])
    prompts = windows[:8, :16]
    results = {}
    with torch.no_grad():
        for dtype in DECODE_DTYPES:
            decoder = for_decoding(model.eval(), dtype)
            loss = task._loss(decoder, windows).item()
            ids = decoder.generate(prompts, args.quality_tokens)
            results[dtype] = {"perplexity": math.exp(loss), "ids": ids}
    for dtype in DECODE_DTYPES:
        results[dtype]["agreement"] = agreement(results[dtype]["ids"], results["fp32"]["ids"], prompts.shape[1])
    return results


def train_briefly(task, model, steps: int, batch: int = 16) -> None:
    """A few AdamW steps of the task's own training step on its training windows (enough for a sensible model)."""
    train = task.datasets().train
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        indices = torch.randint(0, len(train), (batch,), generator=generator)
        loss = task.training_step(model, torch.stack([train[int(i)] for i in indices])).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()

def report_training(args, ours, hf, tokens) -> None:
    train_time = training_times(ours, hf, tokens, args.steps)
    step_tokens = args.batch * args.context
    peak = matmul_peak_flops()
    per_token = flops_per_token(args.layers, args.width, args.context, args.vocab)
    for name in ("ours", "hf"):
        print(f"{name}_train_tokens_per_s: {step_tokens / train_time[name]:.0f}")
    ratio = train_time["hf"] / train_time["ours"]
    print(f"train_ratio_ours_over_hf: {ratio:.3f}")
    print(f"matmul_peak_gflops: {peak / 1e9:.1f}")
    for name in ("ours", "hf"):
        print(f"{name}_mfu: {per_token * step_tokens / train_time[name] / peak:.3f}")
    print(f"table: gpt train tokens/s | {step_tokens / train_time['ours']:.0f} | "
          f"{step_tokens / train_time['hf']:.0f} | {ratio:.3f}")


def report_generation(args, ours, hf, prompt: torch.Tensor) -> None:
    bandwidth = bandwidth_bytes_per_s(args.bandwidth_mb)
    print(f"bandwidth_gb_per_s (fp32 matrix-vector, {args.bandwidth_mb} MB): {bandwidth / 1e9:.2f}")
    for kernel, seconds in int8_kernel_seconds(args.width, args.vocab).items():
        print(f"int8_head_matvec_ms_{kernel}: {seconds * 1e3:.3f}")
    results = generation_results(ours, hf, prompt, args.new_tokens)
    rate = {name: args.new_tokens / r["seconds"] for name, r in results.items()}
    for name, r in results.items():
        streamed = bytes_per_token(r["model"], prompt.shape[1], args.new_tokens)
        ceiling = bandwidth / streamed
        print(f"{name}_generate_tokens_per_s: {rate[name]:.1f}  bytes_per_token_mb: {streamed / 1e6:.1f}  "
              f"ceiling_tokens_per_s: {ceiling:.1f}  ceiling_fraction: {rate[name] / ceiling:.3g}")
    fp32 = results["ours_fp32"]["ids"]
    if "hf_fp32" in results:
        print(f"generate_same_tokens_as_hf_fp32: {torch.equal(results['hf_fp32']['ids'], fp32)}")
    for dtype in ("bf16", "int8"):
        print(f"ours_{dtype}_token_agreement_with_fp32: {agreement(results[f'ours_{dtype}']['ids'], fp32, 1):.3f}")
    pairs = [("fp32", "ours_fp32", "hf_fp32"), ("bf16", "ours_bf16", "hf_bf16"), ("int8 vs hf fp32", "ours_int8",
                                                                                  "hf_fp32")]
    for label, mine, peer in pairs:
        if mine in rate and peer in rate:
            print(f"generate_ratio_{mine}_over_{peer}: {rate[mine] / rate[peer]:.3f}")
            print(f"table: gpt generate tok/s ({label}) | {rate[mine]:.1f} | {rate[peer]:.1f} | "
                  f"{rate[mine] / rate[peer]:.3f}")


def report_quality(args) -> None:
    quality = shakespeare_quality(args)
    base = quality["fp32"]["perplexity"]
    for dtype, q in quality.items():
        print(f"shakespeare_test_perplexity_{dtype}: {q['perplexity']:.4f}  change: {q['perplexity'] / base - 1:+.2%}"
              f"  greedy_token_agreement_with_fp32: {q['agreement']:.3f}")


def main() -> None:
    args = parse_args()
    ours, hf = same_weight_models(args)
    tokens = torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours.eval()(tokens[:, :-1]) - hf.eval()(tokens[:, :-1]).logits).abs().max().item()
    print(f"config: layers={args.layers} width={args.width} heads={args.heads} context={args.context} "
          f"vocab={args.vocab} batch={args.batch} new_tokens={args.new_tokens}")
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"max_abs_logit_diff: {diff:.3g}")
    if not args.no_train:
        report_training(args, ours, hf, tokens)
    report_generation(args, ours, hf, tokens[:1, :1])
    if args.quality_steps or args.quality_run:
        report_quality(args)


if __name__ == "__main__":
    main()
