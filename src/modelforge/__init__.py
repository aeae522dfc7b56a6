"""modelforge: build, train, evaluate, explain, privately train, export and serve deep-learning models on PyTorch.

The top-level names are imported lazily so that ``import modelforge`` (and ``modelforge --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "tune", "load", "evaluate", "Run", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("train", "load", "evaluate", "Run"):
        from modelforge import api

        return getattr(api, name)
    if name == "tune":  # the search sits above the API (it calls api.train), so it is not part of api.py
        from modelforge.tuning import tune

        return tune
    raise AttributeError(f"module 'modelforge' has no attribute {name!r}")
