"""modelforge: build, train, evaluate, explain, privately train, export and serve deep-learning models on PyTorch.

The top-level names are imported lazily so that ``import modelforge`` (and ``modelforge --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "load", "evaluate", "Run", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("train", "load", "evaluate", "Run"):
        from modelforge import api

        return getattr(api, name)
    raise AttributeError(f"module 'modelforge' has no attribute {name!r}")
