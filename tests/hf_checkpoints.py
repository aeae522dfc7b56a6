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
