"""WordPiece training gives the same vocabulary in every process (the library's trainer alone numbers its ``##``
pieces in a per-process random hash order, which breaks ties between merges differently run to run), and the pieces
named up front for that stay plain vocabulary entries, not special tokens."""

import subprocess
import sys

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from modelforge.data.wordpiece_training import continuation_pieces, train_wordpiece

# many equally frequent words: ties between merges, where the pieces' numbers decide
TRAIN = """
import hashlib, json
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from modelforge.data.wordpiece_training import train_wordpiece
texts = [f"the quick brown fox {i} jumps over lazy dogs number {i * 7} again and unbelievably again"
         for i in range(500)]
tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
tok.normalizer = normalizers.BertNormalizer(lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tok = train_wordpiece(tok, iter(texts), ["[PAD]", "[UNK]"], vocab_size=120, show_progress=False)
print(hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest())
"""


def test_every_process_trains_the_same_vocabulary():
    runs = [subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, text=True, check=True).stdout
            for _ in range(4)]
    assert len(set(runs)) == 1, runs


def _backend() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def test_the_pieces_are_those_inside_words_and_stay_plain_vocabulary():
    texts = ["Cats, dogs!", "cat dog"]
    assert continuation_pieces(_backend(), texts) == ["##a", "##g", "##o", "##s", "##t"]  # not "##," nor "##c"
    tok = train_wordpiece(_backend(), texts, ["[PAD]", "[UNK]"], vocab_size=40, show_progress=False)
    assert [t.content for t in tok.get_added_tokens_decoder().values()] == ["[PAD]", "[UNK]"]
    assert tok.token_to_id("##s") is not None
    assert tok.encode("##s").tokens != ["##s"]  # not matched verbatim as a special token would be
    assert tok.encode("dogt").tokens == ["dog", "##t"]  # an unseen word: a word piece, then a continuation
