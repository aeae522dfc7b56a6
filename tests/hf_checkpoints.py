"""Tiny random Hugging Face checkpoints built from transformers config classes (no downloads), with a WordPiece
tokenizer trained here and saved as tokenizer.json; and a tiny labelled text table to fine-tune them on."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

POSITIVE = ["a good film", "great acting and a fine story", "a warm and funny movie", "lovely and clever and bright"]
NEGATIVE = ["a bad film", "terrible plot and boring", "a dull and silly movie", "awful and slow and empty"]


def labelled_texts(path: Path, copies: int = 6) -> Path:
    """A CSV of text,label rows (positive/negative), ``copies`` rounds of the phrases with a number each."""
    rows = ["text,label"]
    for i in range(copies):
        rows += [f"{text} {i},positive" for text in POSITIVE] + [f"{text} {i},negative" for text in NEGATIVE]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def corpus(path: Path, copies: int = 30) -> Path:
    path.write_text("\n".join(f"{t} {i}." for i in range(copies) for t in POSITIVE + NEGATIVE) + "\n")
    return path


def wordpiece_tokenizer(bos_eos: bool = False) -> Tokenizer:
    texts = POSITIVE + NEGATIVE + [str(i) for i in range(100)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials,
                                                             show_progress=False))
    if not bos_eos:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                     ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def _save(model: torch.nn.Module, tok: Tokenizer, folder: Path) -> Path:
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(folder)
    return folder


def tiny_bert(folder: Path) -> Path:
    """A random 2-layer, 16-wide BertModel checkpoint (no classification head: a fine-tune adds one)."""
    from transformers import BertConfig, BertModel

    tok = wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, pad_token_id=0)
    return _save(BertModel(config), tok, folder)


def tiny_llama(folder: Path) -> Path:
    """A random 2-layer, 16-wide LlamaForCausalLM checkpoint (no pad token in its config)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = wordpiece_tokenizer(bos_eos=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=None, bos_token_id=2, eos_token_id=3)
    return _save(LlamaForCausalLM(config), tok, folder)


def tiny_vit(folder: Path) -> Path:
    """A random 2-layer, 16-wide ViT image classifier for 16×16 RGB images, with its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, num_labels=5)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6],
                      image_std=[0.2, 0.3, 0.4]).save_pretrained(folder)
    return folder


def translation_pairs(path: Path, copies: int = 4) -> Path:
    """A TSV of source<TAB>target pairs: each phrase and its words in reverse order (a task a seq2seq model learns)."""
    rows = [f"{text} {i}\t{i} {' '.join(reversed(text.split()))}"
            for i in range(copies) for text in POSITIVE + NEGATIVE]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _seq2seq_tokenizer(folder: Path) -> int:
    """The WordPiece vocabulary with ``[SEP]`` appended as end-of-sequence (as T5/Marian tokenizers append
    ``</s>``), saved in ``folder``; its size."""
    from transformers import PreTrainedTokenizerFast

    tok = wordpiece_tokenizer(bos_eos=True)
    tok.post_processor = processors.TemplateProcessing(single="$A [SEP]",
                                                       special_tokens=[("[SEP]", tok.token_to_id("[SEP]"))])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                            eos_token="[SEP]").save_pretrained(folder)
    return tok.get_vocab_size()


def tiny_t5(folder: Path) -> Path:
    """A random 1+1-layer, 16-wide T5ForConditionalGeneration (start token = pad = 0, end = [SEP] = 3)."""
    from transformers import T5Config, T5ForConditionalGeneration

    vocab = _seq2seq_tokenizer(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=0, eos_token_id=3, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def tiny_marian(folder: Path) -> Path:
    """A random 1+1-layer, 16-wide MarianMTModel (its tokenizer: the fast WordPiece one, not sentencepiece)."""
    from transformers import MarianConfig, MarianMTModel

    vocab = _seq2seq_tokenizer(folder)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=0, eos_token_id=3, decoder_start_token_id=0,
                          forced_eos_token_id=None)
    MarianMTModel(config).save_pretrained(folder)
    return folder


SPOKEN = ["yes", "no", "stop", "go", "left", "right"]


def tiny_wav2vec2(folder: Path) -> Path:
    """A random 1-layer, 16-wide Wav2Vec2ForCTC over lower-case letters (``|`` between words, ``<pad>`` = blank),
    with its Wav2Vec2CTCTokenizer and feature extractor (16 kHz, normalised waveforms)."""
    import json
    import string

    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "|", *string.ascii_lowercase, "'"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                         word_delimiter_token="|").save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4),
                            conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            mask_time_prob=0.0, pad_token_id=0, ctc_loss_reduction="mean")
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def tiny_whisper(folder: Path) -> Path:
    """A random 1+1-layer, 16-wide WhisperForConditionalGeneration for 1-second windows of 16 log-mel bands, with a
    byte-level BPE WhisperTokenizer (start/language/task/no-timestamps prefix) and WhisperFeatureExtractor."""
    import json
    import tempfile

    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(SPOKEN * 3, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        bpe.model.save(tmp)
        vocab = json.loads((Path(tmp) / "vocab.json").read_text())
        merges = [tuple(line.split()) for line in (Path(tmp) / "merges.txt").read_text().splitlines()[1:] if line]
    tok = WhisperTokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                                          "<|notimestamps|>"]})
    tok.set_prefix_tokens(language="english", task="transcribe", predict_timestamps=False)
    tok.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=1,
                            n_fft=400).save_pretrained(folder)
    torch.manual_seed(0)
    eot, sot = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(vocab_size=len(tok), num_mel_bins=16, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=50, max_target_positions=12, pad_token_id=eot,
                           bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=None,
                           begin_suppress_tokens=None)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    return folder
