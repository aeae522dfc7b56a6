"""Decorator registries: ``@register("model", "gpt")`` on a builder, ``build("model", "gpt", **kwargs)``.

A registry entry keeps its builder, a one-line description (the first docstring line) and, for models, an optional
``example`` callable returning positional inputs for a tiny forward pass (used by the registry sweep test).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelforge.core.errors import RegistryError

# Modules that register entries when imported; ``ensure_loaded`` imports them on first use so that
# ``import modelforge`` (and the CLI's --help) stays light.
_PROVIDERS: dict[str, list[str]] = {
    "model": ["modelforge.models"],
    "task": ["modelforge.tasks.catalog"],
}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    builder: Callable[..., Any]
    description: str
    example: Callable[[], tuple] | None = None
    tiny: dict[str, Any] | None = None

    def parameters(self) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(self.builder)
        return {
            k: p for k, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }


_REGISTRY: dict[str, dict[str, Entry]] = {}


def register(
    kind: str, name: str, *, example: Callable[[], tuple] | None = None, tiny: dict[str, Any] | None = None
) -> Callable:
    """Register ``fn`` under ``kind``/``name``; a second registration of the same name is an error.

    ``example`` returns the positional inputs of a tiny forward pass; ``tiny`` holds builder keywords that shrink a
    large variant for that pass (the registry sweep test builds ``builder(**tiny)`` and calls it on ``example()``).
    """

    def decorator(fn: Callable) -> Callable:
        table = _REGISTRY.setdefault(kind, {})
        if name in table:
            raise RegistryError(
                f"{kind} {name!r} is already registered (by {table[name].builder.__module__}); pick another name"
            )
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        table[name] = Entry(kind, name, fn, doc[0] if doc else "", example, tiny)
        return fn

    return decorator


def ensure_loaded(kind: str) -> None:
    for module in _PROVIDERS.get(kind, []):
        importlib.import_module(module)


def find(kind: str, name: str) -> Entry | None:
    """The entry registered so far as ``kind``/``name``, without importing the providers (None if absent)."""
    return _REGISTRY.get(kind, {}).get(name)


def entries(kind: str) -> dict[str, Entry]:
    ensure_loaded(kind)
    return dict(sorted(_REGISTRY.get(kind, {}).items()))


def get(kind: str, name: str) -> Entry:
    table = entries(kind)
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown {kind} {name!r}.{hint} Valid: {', '.join(table) or '(none)'}")
    return table[name]


def check_kwargs(kind: str, name: str, kwargs: dict[str, Any]) -> None:
    """Raise if ``kwargs`` holds a keyword the builder does not accept, listing the valid ones."""
    params = get(kind, name).parameters()
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        valid = ", ".join(params) or "(none)"
        bad = unknown[0]
        close = difflib.get_close_matches(bad, list(params), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RegistryError(f"{kind} {name!r} takes no keyword {bad!r}.{hint} Valid keywords: {valid}")


def build(kind: str, name: str, **kwargs: Any) -> Any:
    """Build ``name`` with ``kwargs``; unknown names and keywords are errors listing the valid ones."""
    check_kwargs(kind, name, kwargs)
    return get(kind, name).builder(**kwargs)
