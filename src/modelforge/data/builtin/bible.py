"""English–Spanish Bible verse pairs from Debian's SWORD modules, read through ``diatheke``.

English: ``engWEB2015eb`` (World English Bible, package ``sword-text-web``); Spanish: ``spaRV1909eb`` (Reina-Valera
1909, package ``sword-text-sparv``). Verses are aligned by reference (book, chapter, verse).

Why ``-f internal`` and not ``-f plain -o f``: the plain renderer of diatheke 4.8 (a) repeats the last psalm
superscription before every later verse ("A praise psalm by David." ahead of 10,901 verses, leaking raw ``<title>``
markup on 185 lines), (b) puts footnotes inline as ``[1:1 ...]`` brackets that nest, and (c) glues the 300-entry WEB
glossary onto Revelation 22:21. The internal (OSIS) output keeps one verse per line with every piece marked up, so
the cleaning is exact: text before the verse reference is the leaked heading and is dropped; ``<note>`` and
``<title>`` elements go with their content; everything after the closing tag of a book (the glossary) goes; all
other tags — Strong's numbers such as ``<w savlm="strong:G2316">`` or ``<H0430>``, poetry lines, quotes — lose the
tag and keep the words. Footnotes are not emitted at all without ``-o f``.

Known limits: WEB uses NRSVA versification and RV1909 KJV, so a handful of references (e.g. 3 John 1:14-15,
Revelation 12:18/13:1) pair slightly shifted text; English psalm superscriptions are dropped (they cannot be told
apart from the leaked ones) while RV1909 prints them inside verse 1. Verses empty in either text (Acts 8:37 in WEB)
and the deuterocanon (English only) are not paired; the English corpus keeps the deuterocanon.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from modelforge.core.atomic import atomic_write_json
from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.cache import cache_dir
from modelforge.data.splits import split_groups

ENGLISH_MODULE = "engWEB2015eb"
SPANISH_MODULE = "spaRV1909eb"
APT_HINT = "apt-get install -y diatheke sword-text-web sword-text-sparv (or run `make setup-system`)"
FULL_KEY = "Gen-Rev"
BOOK_SPLIT_FRACTIONS: dict[str, float] = {"train": 0.9, "val": 0.05, "test": 0.05}
_PREPARATION_VERSION = 1  # bump when parsing changes, so old caches are rebuilt
_TIMEOUT_S = 600

# "Genesis 1:1: ", "I Samuel 3:4: ", "Song of Solomon 2:1: ", "Esther (Greek) 11:2: ", "Revelation of John 22:21: ".
# It must start the line or follow whitespace or a tag: leaked headings end with "<l .../>" right before it.
_VERSE_REF = re.compile(
    r"(?<![^\s>])(?P<book>(?:I{1,3}V? |IV )?[A-Z][A-Za-z]*(?: (?:of|and|the|[A-Z][A-Za-z]*|\([A-Z][a-z]+\)))*)"
    r" (?P<chapter>\d+):(?P<verse>\d+): "
)
_DROPPED_ELEMENTS = re.compile(r"<(note|title)\b[^>]*?(?:/>|>.*?</\1\s*>)", re.DOTALL)
_BOOK_END = re.compile(r"<div\b(?=[^>]*\beID=)(?=[^>]*\btype=\"book\")[^>]*>")
_TAG = re.compile(r"<[^<>]*>")
_SPACE = re.compile(r"\s+")


class Verse(NamedTuple):
    book: str
    chapter: int
    verse: int
    text: str


class VersePair(NamedTuple):
    book: str
    chapter: int
    verse: int
    en: str
    es: str


def clean_verse_markup(text: str) -> str:
    """OSIS verse body → plain text: notes, headings and the after-book material removed, tags unwrapped."""
    end = _BOOK_END.search(text)
    if end:
        text = text[: end.start()]
    text = _DROPPED_ELEMENTS.sub(" ", text)
    text = _TAG.sub("", text)
    return _SPACE.sub(" ", html.unescape(text)).strip()


def parse_diatheke(output: str, module: str) -> list[Verse]:
    """Parse ``diatheke -f internal`` output into verses in output order; empty verses are kept (text ``""``)."""
    verses: list[Verse] = []
    pending: list[str] = []
    for line in output.split("\n"):
        match = _VERSE_REF.search(line)
        if match is None:
            if line.strip() and line.strip() != f"({module})" and verses:
                pending.append(line)  # a verse continued on the next line (other SWORD builds wrap poetry)
            continue
        _flush(verses, pending)
        body = line[match.end() :]
        verses.append(Verse(match["book"], int(match["chapter"]), int(match["verse"]), body))
    _flush(verses, pending)
    return [v._replace(text=clean_verse_markup(v.text)) for v in verses]


def _flush(verses: list[Verse], pending: list[str]) -> None:
    if pending and verses:
        verses[-1] = verses[-1]._replace(text=verses[-1].text + " " + " ".join(pending))
    pending.clear()


def _diatheke_command(module: str, key: str) -> list[str]:
    return ["diatheke", "-b", module, "-f", "internal", "-l", "en", "-k", key]


def run_diatheke(modules: list[str], key: str) -> dict[str, str]:
    """Raw output for each module; the modules are read concurrently (they are CPU-bound, ~8 s and ~3 s)."""
    if shutil.which("diatheke") is None:
        raise MissingDependencyError(f"diatheke is not installed (needed for the Bible data): {APT_HINT}")
    # A fixed locale: diatheke localises book names and parses the key by the environment's language.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    processes = {
        m: subprocess.Popen(_diatheke_command(m, key), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for m in modules
    }
    outputs = {}
    try:
        for module, process in processes.items():
            stdout, stderr = process.communicate(timeout=_TIMEOUT_S)
            if process.returncode != 0:
                message = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                raise DataError(f"diatheke -b {module} failed (exit {process.returncode}: {message[0]}); {APT_HINT}")
            outputs[module] = stdout.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        raise DataError(f"diatheke did not finish within {_TIMEOUT_S} s reading {key!r}") from None
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def _read_module(output: str, module: str, key: str) -> list[Verse]:
    verses = parse_diatheke(output, module)
    if not verses:
        raise MissingDependencyError(
            f"diatheke returned no verses from module {module} for {key!r}: the module is not installed "
            f"or the key is not a valid reference; {APT_HINT}"
        )
    return verses


def _fingerprint(key: str) -> str:
    """Cache key: parser version, query and the installed modules' .conf files (their Version= lines)."""
    digest = hashlib.sha256(f"v{_PREPARATION_VERSION}|{key}".encode())
    roots = [os.environ.get("SWORD_PATH", ""), str(Path.home() / ".sword"), "/usr/share/sword"]
    for module in (ENGLISH_MODULE, SPANISH_MODULE):
        for root in filter(None, roots):
            conf = Path(root) / "mods.d" / f"{module}.conf"
            if conf.is_file():
                digest.update(conf.read_bytes())
                break
    return digest.hexdigest()[:16]


def _load(key: str) -> dict[str, list]:
    cache_path = cache_dir("bible") / f"bible-{_fingerprint(key)}.json"
    if cache_path.exists():
        try:
            cached = json.loads(cache_path.read_text(encoding="utf-8"))
            if cached.get("english") and "pairs" in cached:
                return cached
        except (OSError, ValueError, AttributeError):
            pass  # a corrupt cache entry is rebuilt, not trusted
    raw = run_diatheke([ENGLISH_MODULE, SPANISH_MODULE], key)
    english = _read_module(raw[ENGLISH_MODULE], ENGLISH_MODULE, key)
    spanish = {(v.book, v.chapter, v.verse): v.text for v in _read_module(raw[SPANISH_MODULE], SPANISH_MODULE, key)}
    pairs = [
        [v.book, v.chapter, v.verse, v.text, spanish[(v.book, v.chapter, v.verse)]]
        for v in english
        if v.text and spanish.get((v.book, v.chapter, v.verse))
    ]
    data = {"english": [list(v) for v in english if v.text], "pairs": pairs}
    atomic_write_json(cache_path, data)
    return data


def load_bible_en_es(key: str = FULL_KEY) -> list[VersePair]:
    """Aligned (book, chapter, verse, en, es) records in canonical order; ``key`` narrows the range (``"John 3"``)."""
    return [VersePair(b, int(c), int(v), en, es) for b, c, v, en, es in _load(key)["pairs"]]


def load_bible_english(key: str = FULL_KEY) -> list[Verse]:
    """Every non-empty English (WEB) verse, deuterocanon included, in canonical order."""
    return [Verse(b, int(c), int(v), text) for b, c, v, text in _load(key)["english"]]


def bible_english_corpus(key: str = FULL_KEY) -> str:
    """The English Bible as plain text, one verse per line (a corpus for word embeddings or language models)."""
    return "\n".join(v.text for v in load_bible_english(key)) + "\n"


def split_bible_by_book(
    pairs: list[VersePair], fractions: Mapping[str, float] = BOOK_SPLIT_FRACTIONS, seed: int = 0
) -> dict[str, list[VersePair]]:
    """Whole books per split (test books are never seen in training); sizes follow ``fractions`` by verse count."""
    if not pairs:
        raise DataError("no Bible verse pairs to split")
    indices = split_groups([p.book for p in pairs], fractions, seed)
    return {name: [pairs[i] for i in idx] for name, idx in indices.items()}
