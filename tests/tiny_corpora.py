"""Tiny generated corpora shared by test modules (a plain module: tests/ is on sys.path through its conftest)."""

from pathlib import Path


def parallel_pairs(path: Path, count: int = 40) -> Path:
    """A tab-separated English–Spanish parallel file of ``count`` lines: enough text for the byte-level BPE
    tokenizers of the translation and summarization tasks."""
    words = ["red house", "blue sky", "big dog", "small cat", "green tree"]
    spanish = ["casa roja", "cielo azul", "perro grande", "gato pequeño", "árbol verde"]
    lines = [f"the {words[i % 5]} and the {words[(i + 2) % 5]} number {i}\tel {spanish[i % 5]} y el "
             f"{spanish[(i + 2) % 5]} número {i}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
