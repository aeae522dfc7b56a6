"""``modelforge explain RUN INPUT...``: explanations of a trained run, written as files and printed.

- images → ``<output>/<NN>-<name>.png`` (heat-map overlay) and ``.npy`` (raw attributions, (C, H, W));
- text → the tokens printed with colour (red = for the target, blue = against) and ``<NN>-text.html``; a Transformer
  also gets ``<NN>-text-attention.png``, its own attention weights per layer (rows) and head (columns);
- audio → ``<NN>-<name>.png`` (attribution over the spectrogram) and ``.npy`` ((frames, features)).

``--gallery`` (re)writes the run's ``explanations/`` gallery from its recipe's held-out data instead.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from modelforge.core.atomic import atomic_write_bytes, atomic_write_text
from modelforge.core.errors import ConfigError


def _stem(item: str, index: int, kind: str) -> str:
    if kind == "text" and not (item.endswith(".txt") and Path(item).is_file()):
        name = "text"
    else:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(item).stem)[:40] or "input"
    return f"{index + 1:02d}-{name}"


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    return buffer.getvalue()


def use_colour(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def explain_command(run: str, inputs: list[str], method: str | None, target: str | None, output: str | None,
                    baseline: str | None = None, steps: int | None = None, colour: str = "auto",
                    gallery: bool = False) -> list[str]:
    """Explain ``inputs`` with the run's model; returns the lines to print."""
    from modelforge.api import load
    from modelforge.core.config import ExplainConfig, validate
    from modelforge.explain import check_config, explain

    predictor = load(run)
    run_dir = predictor.directory.parent  # the Predictor holds RUN/model
    recipe_cfg = predictor.recipe.explain.model_dump() if predictor.recipe.explain else {}
    updates = {k: v for k, v in {"method": method, "target": target, "baseline": baseline, "steps": steps}.items()
               if v is not None}
    cfg = validate(ExplainConfig, {**recipe_cfg, **updates}, prefix="explain.")  # CLI values get the recipe's checks
    check_config(cfg, predictor.task)
    if gallery:
        from modelforge.explain.gallery import write_gallery

        return [f"wrote {write_gallery(run_dir, predictor.task, predictor.model, predictor.task.datasets(), cfg)}"]
    if not inputs:
        raise ConfigError("give at least one INPUT to explain (image/WAV path or text), or --gallery")
    out_dir = Path(output) if output else run_dir / "explained"
    found = explain(predictor.task, predictor.model, list(inputs), cfg.method, cfg.target,
                    baseline=cfg.baseline, steps=cfg.steps)
    lines: list[str] = []
    for i, (item, result) in enumerate(zip(inputs, found)):
        stem = _stem(item, i, result.kind)
        head = (f"{item if result.kind != 'text' else repr(item[:60])}: predicted {result.label} "
                f"(p={result.probability:.3f}); {cfg.method} for {result.target!r}")
        if result.convergence_delta is not None:
            head += f"; convergence delta {result.convergence_delta:+.2e}"
        lines.append(head)
        written: list[Path] = []
        if result.kind == "text":
            lines.append("  " + _terminal(result, use_colour(colour)))
            written.append(out_dir / f"{stem}.html")
            atomic_write_text(written[-1], result.html() or "")
            picture = result.attention_png()
            if picture is not None:
                written.append(out_dir / f"{stem}-attention.png")
                atomic_write_bytes(written[-1], picture)
        else:
            written.append(out_dir / f"{stem}.png")
            atomic_write_bytes(written[-1], result.png() or b"")
            written.append(out_dir / f"{stem}.npy")
            atomic_write_bytes(written[-1], _npy(result.attributions))
        lines.append("  wrote " + ", ".join(str(p) for p in written))
    return lines


def _terminal(result: Any, colour: bool) -> str:
    from modelforge.explain.render import terminal_tokens

    return terminal_tokens(result.view, result.attributions.tolist(), colour)

