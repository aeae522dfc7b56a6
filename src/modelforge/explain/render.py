"""Pictures and text from attributions: heat-map overlays, coloured tokens (terminal and HTML), attention grids,
spectrogram overlays. Everything returns PNG bytes or strings; nothing is written here.

Colour convention (as Captum's own visualisations): red/warm = evidence for the target label, blue/cool = evidence
against it, scaled by the largest absolute attribution of that input so each picture uses its full range.
Figures use ``matplotlib.figure.Figure`` with the Agg canvas, never ``pyplot``, so no global backend is touched.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

POSITIVE = (214, 39, 40)  # red: supports the target label
NEGATIVE = (31, 119, 180)  # blue: speaks against it


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def normalized(values: np.ndarray) -> np.ndarray:
    """Attributions scaled into [-1, 1] by their largest magnitude (all zeros stay zeros)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    peak = float(np.abs(values).max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def _colour(signed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RGB of the sign, opacity = magnitude) for values already in [-1, 1]."""
    rgb = np.where(signed[..., None] >= 0, np.array(POSITIVE), np.array(NEGATIVE)).astype(np.float64)
    return rgb, np.abs(signed)[..., None]


def overlay(image: np.ndarray, attribution: np.ndarray, scale: int | None = None) -> np.ndarray:
    """An RGB uint8 picture: the input image in grey, the attribution over it in red/blue, enlarged ``scale``×
    with square pixels (a 28×28 digit becomes 224×224, so single pixels stay visible)."""
    image = np.asarray(image)
    grey = image.astype(np.float64).mean(axis=0) if image.ndim == 3 else image.astype(np.float64)
    heat = normalized(attribution.reshape(grey.shape))
    rgb, alpha = _colour(heat)
    base = np.repeat(grey[..., None] * 0.6 + 40, 3, axis=-1)  # dimmed so the colours stand out on white ink
    picture = (base * (1 - alpha) + rgb * alpha).clip(0, 255).astype(np.uint8)
    scale = scale or max(1, 224 // max(grey.shape))
    return picture.repeat(scale, axis=0).repeat(scale, axis=1)


def overlay_png(image: np.ndarray, attribution: np.ndarray, scale: int | None = None) -> bytes:
    return _png(overlay(image, attribution, scale))


def image_panel_png(images: Sequence[np.ndarray], attributions: Sequence[np.ndarray], titles: Sequence[str],
                    columns: int = 4) -> bytes:
    """Input and heat-map side by side for several images, in a grid: the gallery / docs figure."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig = _figure(2.4 * min(count, columns), 1.35 * rows + 0.2)
    grid = fig.subplots(rows, 2 * min(count, columns), squeeze=False)
    for ax in grid.flat:
        ax.axis("off")
    for i, (image, attribution, title) in enumerate(zip(images, attributions, titles)):
        row, col = divmod(i, columns)
        image = np.asarray(image)
        shown = image[0] if image.ndim == 3 and image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        grid[row, 2 * col].imshow(shown, cmap="gray", interpolation="nearest")
        grid[row, 2 * col].set_title(title, fontsize=8)
        grid[row, 2 * col + 1].imshow(overlay(image, attribution, 1), interpolation="nearest")
    return figure_png(fig)


# ---- text ---------------------------------------------------------------------------------------------------------
def _blend(signed: float) -> tuple[int, int, int]:
    """A background colour for a token: white at 0, full red/blue at ±1."""
    target = POSITIVE if signed >= 0 else NEGATIVE
    a = min(1.0, abs(signed))
    return tuple(int(round(255 * (1 - a) + c * a)) for c in target)  # type: ignore[return-value]


def terminal_tokens(tokens: Sequence[str], scores: Sequence[float], color: bool = True) -> str:
    """Tokens on one line with a 24-bit background colour per attribution; without colour, ``token(+0.12)``."""
    signed = normalized(np.asarray(scores, dtype=np.float64))
    if not color:
        return " ".join(f"{tok}({score:+.3f})" for tok, score in zip(tokens, scores))
    parts = []
    for tok, value in zip(tokens, signed):
        r, g, b = _blend(float(value))
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{tok}\x1b[0m")
    return " ".join(parts)


def html_tokens(tokens: Sequence[str], scores: Sequence[float], caption: str = "") -> str:
    """A self-contained HTML snippet: each token a span shaded by its attribution, the score in its tooltip."""
    signed = normalized(np.asarray(scores, dtype=np.float64))
    spans = []
    for tok, value, raw in zip(tokens, signed, scores):
        r, g, b = _blend(float(value))
        spans.append(f'<span class="mf-token" title="{float(raw):+.4f}" style="background:rgb({r},{g},{b});'
                     f'padding:1px 3px;margin:1px;border-radius:3px;display:inline-block">{html.escape(tok)}</span>')
    head = f'<div class="mf-caption" style="font-size:90%;color:#555">{html.escape(caption)}</div>' if caption else ""
    return f'<div class="mf-explanation" style="line-height:1.9;font-family:sans-serif">{head}{"".join(spans)}</div>'


def attention_grid_png(maps: np.ndarray, tokens: Sequence[str], max_labels: int = 24) -> bytes:
    """One heat-map per layer (rows) and head (columns): row = query token, column = key token."""
    layers, heads, length, _ = maps.shape
    cell = 1.6 if length <= max_labels else 1.3
    fig = _figure(cell * heads + 0.6, cell * layers + 0.4)
    grid = fig.subplots(layers, heads, squeeze=False)
    labels = [t[:10] for t in tokens] if length <= max_labels else None
    peak = float(maps.max()) or 1.0  # one scale for all panels, so heads compare; not 0..1, or flat maps look empty
    for layer in range(layers):
        for head in range(heads):
            ax = grid[layer, head]
            ax.imshow(maps[layer, head], cmap="viridis", vmin=0, vmax=peak, interpolation="nearest")
            ax.set_title(f"layer {layer + 1} · head {head + 1}", fontsize=7)
            if labels and layer == layers - 1:
                ax.set_xticks(range(length), labels, rotation=90, fontsize=5)
            else:
                ax.set_xticks([])
            if labels and head == 0:
                ax.set_yticks(range(length), labels, fontsize=5)
            else:
                ax.set_yticks([])
    return figure_png(fig, dpi=110)


# ---- audio ----------------------------------------------------------------------------------------------------
def spectrogram_png(features: np.ndarray, attribution: np.ndarray, title: str = "") -> bytes:
    """The ``(time, feature)`` spectrogram above, the attribution over it below (red = for, blue = against)."""
    feats = np.asarray(features, dtype=np.float64).T  # (feature, time): time runs left to right
    heat = normalized(np.asarray(attribution, dtype=np.float64).T)
    fig = _figure(7.0, 4.2)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.imshow(feats, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
    top.set_ylabel("feature band")
    top.set_title(title or "input features", fontsize=9)
    bottom.imshow(feats, origin="lower", aspect="auto", cmap="gray", interpolation="nearest")
    bottom.imshow(heat, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, alpha=0.75,
                  interpolation="nearest")
    bottom.set_ylabel("feature band")
    bottom.set_xlabel("frame (10 ms)")
    bottom.set_title("attribution", fontsize=9)
    return figure_png(fig)
