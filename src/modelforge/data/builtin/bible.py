"""English–Spanish Bible verse pairs from Debian's SWORD modules, read through ``diatheke``.

English: ``engWEB2015eb`` (World English Bible, package ``sword-text-web``); Spanish: ``spaRV1909eb`` (Reina-Valera
1909, package ``sword-text-sparv``). Records are (book, chapter, verse, en, es) in canonical order.

Why ``-f internal`` and not ``-f plain -o f``: the plain renderer of diatheke 4.8 (a) repeats the last psalm
superscription before every later verse ("A praise psalm by David." ahead of 10,901 verses, leaking raw ``<title>``
markup on 185 lines), (b) puts footnotes inline as ``[1:1 ...]`` brackets that nest, and (c) glues the WEB
glossary onto Revelation 22:21. The internal (OSIS) output keeps one verse per line with every piece marked up, so
the cleaning is exact: text before the verse reference is a (mostly leaked) heading and is dropped; ``<note>`` and
``<title>`` elements go with their content; everything after the closing tag of a book (the glossary) goes; all
other tags — Strong's numbers such as ``<w savlm="strong:G2316">`` or ``<H0430>``, poetry lines, quotes — lose the
tag and keep the words. Footnotes are not emitted at all without ``-o f``.

Alignment: the modules number verses differently (WEB follows NRSVA; RV1909 sits in KJV slots but numbers some
chapters the Hebrew way, e.g. its Numbers 13:1 is WEB's 12:16), so pairing by reference alone would mismatch a few
hundred verses. Within each book the verses are aligned by length (Gale & Church 1993) with a bonus for equal
references: shifted chapters (Numbers 13, 1 Samuel 24, Job 38-39, Hosea 12, Jonah 2, ...) follow the text, and split
verses merge into 2-1 or 1-2 pairs that carry the first English reference. Verses empty in either text (WEB leaves
Acts 8:37 empty) and books only one side has (the deuterocanon) are not paired; the English corpus keeps the
deuterocanon. English psalm superscriptions are restored on verse 1 (RV1909 prints them there), except for a psalm
whose superscription equals the previous psalm's, which diatheke's repetition makes indistinguishable.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from modelforge.core.atomic import atomic_write_text
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
# (?=<) first: the engine rejects most positions on one character instead of trying the lookbehind everywhere.
_TAGS_BETWEEN_LETTERS = re.compile(r"(?=<)(?<=\w)((?:<[^<>]*>)+)(?=\w)")
_HEADING = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.DOTALL)


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


def _separate_words(match: re.Match[str]) -> str:
    """Tags between two letters: a space when they close one element and open the next (the filtered-out footnote
    stood there, so "God</w><w>created" is two words), or open a Strong's word; none inside a word ("preguntándo
    <transChange>le" is one Spanish word with an added enclitic)."""
    tags = _TAG.findall(match[1])
    closes = any(t.startswith("</") for t in tags)
    opens = [t for t in tags if not t.startswith("</")]
    boundary = (closes and opens) or (len(tags) == 1 and tags[0].startswith("<w"))
    return " " if boundary else ""


def clean_verse_markup(text: str) -> str:
    """OSIS verse body → plain text: notes, headings and the after-book material removed, tags unwrapped."""
    end = _BOOK_END.search(text)
    if end:
        text = text[: end.start()]
    text = _DROPPED_ELEMENTS.sub(" ", text)
    text = _TAGS_BETWEEN_LETTERS.sub(_separate_words, text)
    text = _TAG.sub("", text)
    return " ".join(html.unescape(text).split())


def parse_diatheke(output: str, module: str) -> list[Verse]:
    """Parse ``diatheke -f internal`` output into clean verses in output order; empty verses keep text ``""``.

    The text before a verse reference is a heading; diatheke repeats the last psalm superscription there for every
    later verse, so a heading is kept only where it is new: on verse 1 of a psalm whose heading differs from the
    previous verse's (a psalm with the same superscription as the one before loses it; RV1909 has them in verse 1).
    """
    raw: list[list] = []  # [book, chapter, verse, body, heading]
    for line in output.split("\n"):
        match = _VERSE_REF.search(line)
        if match is None:
            if line.strip() and line.strip() != f"({module})" and raw:
                raw[-1][3] += " " + line  # a verse continued on the next line (other SWORD builds wrap poetry)
            continue
        heading = " ".join(clean_verse_markup(t) for t in _HEADING.findall(line[: match.start()]))
        raw.append([match["book"], int(match["chapter"]), int(match["verse"]), line[match.end() :], heading])
    verses, previous_heading = [], ""
    for book, chapter, verse, body, heading in raw:
        text = clean_verse_markup(body)
        if book == "Psalms" and verse == 1 and heading and heading != previous_heading and text:
            text = f"{heading} {text}"
        previous_heading = heading
        verses.append(Verse(book, chapter, verse, text))
    return verses


def _diatheke_command(module: str, key: str) -> list[str]:
    return ["diatheke", "-b", module, "-f", "internal", "-l", "en", "-k", key]


def run_diatheke(modules: list[str], key: str) -> dict[str, str]:
    """Raw output for each module. The modules are read concurrently (both CPU-bound, ~8 s and ~3 s), each into its
    own temporary file: pipes would stall the second process once its pipe buffer filled."""
    if shutil.which("diatheke") is None:
        raise MissingDependencyError(f"diatheke is not installed (needed for the Bible data): {APT_HINT}")
    # A fixed locale: diatheke localises book names and parses the key by the environment's language.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    with contextlib.ExitStack() as stack:
        files = {
            m: (stack.enter_context(tempfile.TemporaryFile()), stack.enter_context(tempfile.TemporaryFile()))
            for m in modules
        }
        processes = {
            m: subprocess.Popen(_diatheke_command(m, key), stdout=out, stderr=err, env=env)
            for m, (out, err) in files.items()
        }
        try:
            for process in processes.values():
                process.wait(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"diatheke did not finish within {_TIMEOUT_S} s reading {key!r}") from None
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        outputs = {}
        for module, process in processes.items():
            out, err = files[module]
            if process.returncode != 0:
                err.seek(0)
                message = err.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                raise DataError(f"diatheke -b {module} failed (exit {process.returncode}: {message[0]}); {APT_HINT}")
            out.seek(0)
            outputs[module] = out.read().decode("utf-8", errors="replace")
    return outputs


def _read_module(output: str, module: str, key: str) -> list[Verse]:
    verses = parse_diatheke(output, module)
    if not verses:
        raise MissingDependencyError(
            f"diatheke returned no verses from module {module} for {key!r}: the module is not installed "
            f"or the key is not a valid reference; {APT_HINT}"
        )
    return verses


# Length-based verse alignment (Gale & Church 1993): a bead joins 1-1, 2-1, 1-2 verses or
# leaves one unmatched; the priors are theirs. Matching references earn a bonus, so only a sustained length
# disagreement (a versification shift) moves the alignment off the shared reference.
_MOVES = ((1, 1), (1, 0), (0, 1), (2, 1), (1, 2))
_MOVE_COST = [-math.log(p) for p in (0.89, 0.0099 / 2, 0.0099 / 2, 0.089 / 2, 0.089 / 2)]
_LENGTH_VARIANCE = 6.8  # variance of target characters per source character (Gale & Church)
_SAME_REFERENCE_BONUS = 1.0
_BAND = 6  # how far (in verses) beyond the two books' length difference the alignment may drift


def _bead_costs(english: list[Verse], spanish: list[Verse], band: int) -> tuple[np.ndarray, ...]:
    """Costs of the 1-1, 2-1 and 1-2 beads ending at English ``i``, Spanish ``j = i + k - band``; inf if invalid."""
    le = np.array([0.0] + [len(v.text) for v in english])
    ls = np.array([0.0, 0.0] + [len(v.text) for v in spanish])  # ls[j + 1] is the length of Spanish verse j
    ref_en = np.array([-1] + [v.chapter * 1000 + v.verse for v in english])
    ref_es = np.array([-2, -2] + [v.chapter * 1000 + v.verse for v in spanish])
    n, m = len(english), len(spanish)
    i = np.arange(n + 1)[:, None]
    j = i + np.arange(2 * band + 1)[None, :] - band
    jc = np.clip(j, 0, m)
    ratio = ls.sum() / max(le.sum(), 1.0)

    def length_cost(e: np.ndarray, s: np.ndarray) -> np.ndarray:
        # -log P(|delta|) = -log erfc(x), x = |delta|/sqrt(2), in log space (Abramowitz & Stegun 7.1.26) so that
        # large length mismatches get large finite costs instead of underflowing to log(0).
        x = np.abs(s - ratio * e) / np.sqrt(np.maximum(e, 1.0) * _LENGTH_VARIANCE) / math.sqrt(2.0)
        t = 1.0 / (1.0 + 0.3275911 * x)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        return x * x - np.log(poly)

    e1, e2 = le[i], le[i] + le[np.maximum(i - 1, 0)]
    s1, s2 = ls[jc + 1], ls[jc + 1] + ls[jc]
    valid = (i >= 1) & (j >= 1) & (j <= m)
    same = ref_en[i] == ref_es[jc + 1]
    one_one = np.where(valid, _MOVE_COST[0] + length_cost(e1, s1) - _SAME_REFERENCE_BONUS * same, np.inf)
    two_one = np.where(valid & (i >= 2), _MOVE_COST[3] + length_cost(e2, s1), np.inf)
    one_two = np.where(valid & (j >= 2), _MOVE_COST[4] + length_cost(e1, s2), np.inf)
    return one_one, two_one, one_two


def align_verses(english: list[Verse], spanish: list[Verse]) -> list[tuple[list[Verse], list[Verse]]]:
    """Align one book's English and Spanish verses; returns beads (english verses, spanish verses) in order."""
    n, m = len(english), len(spanish)
    band = abs(n - m) + _BAND
    width = 2 * band + 1
    one_one, two_one, one_two = _bead_costs(english, spanish, band)
    ks = np.arange(width)
    cost = np.full((n + 1, width), np.inf)
    move = np.full((n + 1, width), 2, dtype=np.int8)
    cost[0] = np.where(ks >= band, (ks - band) * _MOVE_COST[2], np.inf)
    edge = np.full(1, np.inf)
    for i in range(1, n + 1):
        up, up2 = cost[i - 1], cost[i - 2] if i >= 2 else np.full(width, np.inf)
        candidates = np.stack(
            [
                up + one_one[i],
                np.concatenate([up[1:], edge]) + _MOVE_COST[1],  # English verse unmatched
                np.full(width, np.inf),  # Spanish verse unmatched: handled along the row below
                np.concatenate([up2[1:], edge]) + two_one[i],
                np.concatenate([edge, up[:-1]]) + one_two[i],
            ]
        )
        best = candidates.argmin(axis=0)
        row = candidates[best, ks]
        j = i + ks - band
        row[(j < 0) | (j > m)] = np.inf
        # Chains of unmatched Spanish verses: row[k] = min(row[k], row[k-1] + cost), as one running minimum.
        chained = np.minimum.accumulate(row - ks * _MOVE_COST[2]) + ks * _MOVE_COST[2]
        skip = chained < row - 1e-9
        cost[i] = np.where(skip, chained, row)
        move[i] = np.where(skip, 2, best)
    beads, i, j = [], n, m
    while i > 0 or j > 0:
        di, dj = _MOVES[move[i, j - i + band]]
        beads.append((english[i - di : i], spanish[j - dj : j]))
        i, j = i - di, j - dj
    return beads[::-1]


def pair_verses(english: list[Verse], spanish: list[Verse]) -> list[VersePair]:
    """Pair the books both texts have; merged beads take the reference of their first English verse."""
    spanish_books: dict[str, list[Verse]] = {}
    for verse in spanish:
        if verse.text:
            spanish_books.setdefault(verse.book, []).append(verse)
    english_books: dict[str, list[Verse]] = {}
    for verse in english:
        if verse.text and verse.book in spanish_books:
            english_books.setdefault(verse.book, []).append(verse)
    pairs = []
    for book, verses in english_books.items():
        for en, es in align_verses(verses, spanish_books[book]):
            if en and es:
                first = en[0]
                text_en, text_es = " ".join(v.text for v in en), " ".join(v.text for v in es)
                pairs.append(VersePair(book, first.chapter, first.verse, text_en, text_es))
    return pairs


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
    spanish = _read_module(raw[SPANISH_MODULE], SPANISH_MODULE, key)
    data = {"english": [list(v) for v in english if v.text], "pairs": [list(p) for p in pair_verses(english, spanish)]}
    # Compact JSON: the indented form of atomic_write_json triples the file and its load time.
    atomic_write_text(cache_path, json.dumps(data, ensure_ascii=False, separators=(",", ":")))
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
