"""A self-contained HTML page: inline CSS, PNGs embedded as base64 data URLs, every text escaped."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2330; max-width: 1000px; margin: 2rem auto; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #e5e7eb; padding-bottom: 0.2rem; margin-top: 2rem; }
.muted { color: #6b7280; }
table { border-collapse: collapse; margin: 0.5rem 0; }
td, th { border: 1px solid #e5e7eb; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f6f7f9; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f7f9; padding: 0.8rem; overflow-x: auto; font-size: 13px; }
figure { margin: 1rem 0; } img { max-width: 100%; }
table.samples td { white-space: pre-wrap; } tr.right td:first-child { border-left: 4px solid #2e7d32; }
tr.wrong td:first-child { border-left: 4px solid #b42318; }
"""


@dataclass
class Section:
    heading: str
    body: str  # HTML, built with the helpers below


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def key_value_table(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td class=\"num\">{escape(format_value(v))}</td></tr>" for k, v in pairs
    )
    return f"<table>{rows}</table>" if rows else "<p class=\"muted\">nothing recorded</p>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(format_value(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{escape(alt)}\"></figure>"


def preformatted(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def paragraph(text: str) -> str:
    return f"<p class=\"muted\">{escape(text)}</p>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    body = "".join(f"<section><h2>{escape(s.heading)}</h2>{s.body}</section>" for s in sections)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><p class=\"muted\">{escape(subtitle)}</p>{body}</body></html>\n"
    )
