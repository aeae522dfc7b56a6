"""Any Hugging Face checkpoint through ``transformers``' own Auto* classes: ``model.name=hf model.checkpoint=DIR``.

``models/hf.py`` maps BERT and GPT-2 weights into this toolkit's own networks; this module does not re-implement
anything: the network is ``AutoModelForSequenceClassification`` (a text classification run: ``num_classes`` comes
from the data) or ``AutoModelForCausalLM`` (a language modeling run), wrapped so that the tasks see the same
``forward(input_ids, attention_mask)`` → logits contract as every other model, and causal LMs generate through
``forward_with_state`` with transformers' KV cache (``tasks/generation.py``). Encoder–decoders
(``AutoModelForSeq2SeqLM``: T5, BART, Marian …) take the toolkit's ``TransformerSeq2Seq`` contract
``forward(src_ids, tgt_ids, src_mask)`` with the same ``encode``/``decode`` split (the ONNX graphs) and search
through transformers' own ``generate``; speech models are ``AutoModelForCTC`` (wav2vec2 …: waveform → per-frame
logits) or ``AutoModelForSpeechSeq2Seq`` (Whisper: log-mel features → teacher-forced logits, ``generate``).

The artifact stays pickle-free and offline: ``artifact_kwargs`` puts the checkpoint's ``config.json`` inline in the
artifact's model keywords with ``pretrained=False``, so ``load`` rebuilds the network with ``from_config`` and reads
the trained weights from ``model.safetensors``; the hub is never asked. ``transformers`` is imported only when such
a model is built (extra ``modelforge[hf]``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from modelforge.core.errors import ArtifactError, ConfigError, MissingDependencyError
from modelforge.core.registry import register

HEADS = ("auto", "sequence_classification", "causal_lm", "image_classification", "seq2seq_lm", "speech", "ctc",
         "speech_seq2seq")  # "speech": CTC or speech seq2seq, as the checkpoint's config is an encoder–decoder or not
# Tokenizer settings copied from the checkpoint into the artifact beside the task's tokenizer.json, so that
# transformers' AutoTokenizer reads the artifact folder as the checkpoint's own tokenizer.
TOKENIZER_SETTINGS = ("tokenizer_config.json", "special_tokens_map.json")


def transformers_module() -> Any:
    """``transformers`` with its per-load reports and progress bars silenced (the CLI prints its own)."""
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("model.name=hf needs transformers: pip install 'modelforge[hf]'") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def checkpoint_dir(checkpoint: str | None) -> Path:
    """The local checkpoint folder of ``model.checkpoint``, checked for its config.json."""
    if not checkpoint:
        raise ConfigError("model.name=hf needs model.checkpoint=DIR (a Hugging Face checkpoint folder)")
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model.checkpoint={checkpoint}: no such folder; give a local Hugging Face checkpoint "
                          "directory (config.json + model.safetensors + tokenizer.json)")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.checkpoint={checkpoint}: {path / 'config.json'} is missing; not a Hugging Face "
                          "checkpoint folder")
    return path


def checkpoint_config(model_cfg: Any) -> Any:
    """The transformers config of the recipe's ``model.checkpoint`` folder, or a one-line ConfigError."""
    folder = checkpoint_dir(model_cfg.kwargs().get("checkpoint"))
    try:
        return transformers_module().AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model.checkpoint={folder}: transformers cannot read its config.json "
                          f"({str(exc).splitlines()[0][:200]})") from None


def weights_sha256(checkpoint: str | Path) -> str:
    """sha256 over the checkpoint's weight files (sorted by name): what an adapter-only artifact was trained on."""
    path = Path(checkpoint)
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        raise ArtifactError(f"{path}: no *.safetensors or *.bin weights to hash")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class HFModel(nn.Module):
    """A transformers ``PreTrainedModel`` (``self.net``) behind the toolkit's model contract."""

    def __init__(self, net: nn.Module, checkpoint: str | None, new_parameters: list[str] | None = None,
                 tokenizer_settings: dict[str, bytes] | None = None):
        super().__init__()
        self.net = net
        self.checkpoint = checkpoint
        # parameters the checkpoint did not have (a fresh classification head): what LoRA trains besides the adapter
        self.new_parameter_names = [f"net.{name}" for name in (new_parameters or [])]
        self.tokenizer_settings = dict(tokenizer_settings or {})

    def artifact_files(self) -> dict[str, bytes]:
        """Files of the checkpoint that travel with the artifact (its tokenizer settings)."""
        return dict(self.tokenizer_settings)

    def artifact_kwargs(self) -> dict[str, Any]:
        """Builder keywords that rebuild this network offline from the artifact alone."""
        return {"hf_config": json.loads(self.net.config.to_json_string(use_diff=False)), "pretrained": False}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # An explicit all-ones mask when none is given: without one, transformers probes position ids for packed
        # sequences (an op the ONNX exporter lacks); with one the computation is the same.
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
        return self.net(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


class HFSequenceClassifier(HFModel):
    """``AutoModelForSequenceClassification``: (input_ids, attention_mask) → class logits."""


class HFCausalLM(HFModel):
    """``AutoModelForCausalLM``: input_ids → next-token logits per position; generation reuses the KV cache."""

    def positions(self) -> int | None:
        config = self.net.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def forward_with_state(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits of the new tokens given the state of the earlier ones (KV cache, ids so far), and the new state.

        Past the checkpoint's positions the model conditions on the last window of them, the cache refilled from
        that window (as the toolkit's own GPT does): learned positions would index out of range otherwise."""
        cache, seen = state if state is not None else (None, input_ids[:, :0])
        seen = torch.cat([seen, input_ids], dim=1)
        window = self.positions()
        if window and seen.shape[1] > window:
            cache, input_ids = None, seen[:, -window:]
        if cache is None:
            out = self.net(input_ids=input_ids, use_cache=True)
        else:
            out = self.net(input_ids=input_ids, use_cache=True, **{_cache_keyword(self.net): cache})
        return out.logits, (_cache_of(out), seen if window else seen[:, :0])


class HFImageClassifier(HFModel):
    """``AutoModelForImageClassification``: normalised images (batch, channels, height, width) → class logits."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        size = getattr(self.net.config, "image_size", None)
        resize = {"interpolate_pos_encoding": True} if size and images.shape[-1] != size and \
            "interpolate_pos_encoding" in inspect.signature(self.net.forward).parameters else {}
        return self.net(pixel_values=images, **resize).logits


class HFSeq2SeqLM(HFModel):
    """``AutoModelForSeq2SeqLM``: (src_ids, tgt_ids, src_mask) → teacher-forced logits (batch, tgt_time, vocab)."""

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states (batch, src_time, dim); ``src_mask`` is True/1 on real source tokens."""
        return self.net.get_encoder()(input_ids=src_ids, attention_mask=_mask(src_ids, src_mask)).last_hidden_state

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every target position given the encoder states (no cache: the ONNX decoder graph)."""
        encoded = transformers_module().modeling_outputs.BaseModelOutput(last_hidden_state=memory)
        mask = torch.ones(memory.shape[:2], dtype=torch.long, device=memory.device) if src_mask is None \
            else src_mask.long()
        return self.net(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=tgt_ids,
                        use_cache=False).logits

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor,  # type: ignore[override]
                src_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids=src_ids, attention_mask=_mask(src_ids, src_mask), decoder_input_ids=tgt_ids,
                        use_cache=False).logits

    @torch.no_grad()
    def generate_ids(self, src_ids: torch.Tensor, src_mask: torch.Tensor, search: dict[str, Any]) -> torch.Tensor:
        """transformers' ``generate`` (greedy or beam search): (batch, 1 + generated) ids, the start token first."""
        return _generate(self.net, {"input_ids": src_ids, "attention_mask": src_mask.long()}, search)


class HFCTC(HFModel):
    """``AutoModelForCTC`` (wav2vec2, HuBERT …): normalised waveforms (batch, samples) → per-frame logits."""

    def forward(self, input_values: torch.Tensor,  # type: ignore[override]
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_values=input_values, attention_mask=attention_mask).logits

    def output_lengths(self, samples: torch.Tensor) -> torch.Tensor:
        """Valid output frames of waveforms ``samples`` long (the convolutional front end's strides)."""
        return self.net._get_feat_extract_output_lengths(samples).long()


class HFSpeechSeq2Seq(HFModel):
    """``AutoModelForSpeechSeq2Seq`` (Whisper): (input_features, decoder ids) → teacher-forced logits."""

    def forward(self, input_features: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(input_features=input_features, decoder_input_ids=tgt_ids, use_cache=False).logits

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, frames / 2, dim) of a window of log-mel features (the ONNX encoder graph)."""
        return self.net.get_encoder()(input_features=input_features).last_hidden_state

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Logits of every decoder position given the encoder states (no cache: the ONNX decoder graph)."""
        encoded = transformers_module().modeling_outputs.BaseModelOutput(last_hidden_state=memory)
        # an all-ones decoder mask, as HFModel.forward: without one transformers probes for packed sequences
        # (torch.diff, which the ONNX exporter lacks); with one the computation is the same
        return self.net(encoder_outputs=encoded, decoder_input_ids=tgt_ids, decoder_attention_mask=torch.ones_like(
            tgt_ids), use_cache=False).logits

    @torch.no_grad()
    def generate_ids(self, input_features: torch.Tensor, prompt: torch.Tensor, search: dict[str, Any]) -> torch.Tensor:
        """The prompt (start, language, task tokens) and what transformers' ``generate`` continues it with."""
        return _generate(self.net, {"input_features": input_features, "decoder_input_ids": prompt}, search)


def _mask(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(ids) if mask is None else mask.long()


def _generate(net: nn.Module, inputs: dict[str, torch.Tensor], search: dict[str, Any]) -> torch.Tensor:
    """``GenerationMixin.generate`` with exactly ``search``'s settings (num_beams, length_penalty, max_new_tokens,
    the special ids …) over the model config's defaults: the artifact keeps no generation_config.json, so nothing
    else may steer the search. Whisper's own ``generate`` (language detection, timestamps, 30-s windows) is passed
    over for the plain one, which continues the given decoder prompt."""
    transformers = transformers_module()
    config = transformers.GenerationConfig(do_sample=False, **search)
    return transformers.GenerationMixin.generate(net, **inputs, generation_config=config)


def image_statistics(model_cfg: Any) -> dict[str, Any] | None:
    """The checkpoint image processor's mean and std, for a ``model.name=hf`` image classifier (the images are
    resized to ``data.image_size``: set it to the checkpoint's size; ViT-style models interpolate otherwise)."""
    if model_cfg.name != "hf":
        return None
    path = checkpoint_dir(model_cfg.kwargs().get("checkpoint"))
    try:
        processor = transformers_module().AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.checkpoint={path}: AutoImageProcessor cannot read its preprocessor_config.json "
                          f"({str(exc).splitlines()[0][:200]})") from None
    return {"mean": list(processor.image_mean), "std": list(processor.image_std)}


def _cache_keyword(net: nn.Module) -> str:
    """transformers 5 calls the KV cache argument ``cache``; earlier releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(net.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    return out["cache"] if "cache" in out else out["past_key_values"]


def _auto_class(transformers: Any, head: str, num_classes: int | None, image_size: int | None,
                config: Any = None) -> tuple[Any, type[HFModel]]:
    if head not in HEADS:
        raise ConfigError(f"model.head={head!r} is not known; valid: {', '.join(HEADS)}")
    if head == "auto":  # the task decides: images → image classifier, labels → text classifier, else a causal LM
        head = "image_classification" if image_size else "sequence_classification" if num_classes else "causal_lm"
    if head == "speech":  # the checkpoint decides: an encoder–decoder (Whisper) or an encoder with a CTC head
        head = "speech_seq2seq" if getattr(config, "is_encoder_decoder", False) else "ctc"
    if head == "image_classification":
        return transformers.AutoModelForImageClassification, HFImageClassifier
    if head == "sequence_classification":
        if not num_classes:
            raise ConfigError("model.head=sequence_classification needs a text_classification task (num_classes)")
        return transformers.AutoModelForSequenceClassification, HFSequenceClassifier
    special = {"seq2seq_lm": (transformers.AutoModelForSeq2SeqLM, HFSeq2SeqLM),
               "ctc": (transformers.AutoModelForCTC, HFCTC),
               "speech_seq2seq": (transformers.AutoModelForSpeechSeq2Seq, HFSpeechSeq2Seq)}
    return special.get(head, (transformers.AutoModelForCausalLM, HFCausalLM))


def _freeze_unsaved(net: nn.Module) -> nn.Module:
    """Freeze the parameters the architecture never saves (``_keys_to_ignore_on_save``: Marian's sinusoidal position
    tables are Parameters that transformers recomputes on load): they are fixed by definition, and training them
    would give a network that transformers' own ``save_pretrained`` → ``from_pretrained`` no longer reproduces."""
    unsaved = set(getattr(net, "_keys_to_ignore_on_save", None) or ())
    for name, param in net.named_parameters():
        if name in unsaved:
            param.requires_grad_(False)
    return net


def _checkpoint_config(transformers: Any, path: Path) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model.checkpoint={path}: transformers cannot read its config.json "
                          f"({str(exc).splitlines()[0][:300]})") from None


def _config_from_dict(transformers: Any, hf_config: dict[str, Any]) -> Any:
    settings = dict(hf_config)
    model_type = settings.pop("model_type", None)
    if not model_type:
        raise ArtifactError("the artifact's hf_config has no model_type; it was not written by model.name=hf")
    return transformers.AutoConfig.for_model(model_type, **settings)


def _hf_example(vocab: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    return ids, (torch.arange(10) < torch.tensor([[10], [7]])).long()


# The registry sweep builds a one-layer Llama from its config alone (no checkpoint, no download).
_TINY_LLAMA = {"pretrained": False, "hf_config": {
    "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}}


@register("model", "hf", example=_hf_example, tiny=_TINY_LLAMA)
def hf(checkpoint: Optional[str] = None, num_classes: Optional[int] = None, head: str = "auto",
       pad_id: Optional[int] = None, image_size: Optional[int] = None, pretrained: bool = True,
       hf_config: Optional[dict] = None) -> HFModel:
    """Any Hugging Face checkpoint folder via transformers' Auto* classes (classifier, causal/seq2seq LM, speech)."""
    transformers = transformers_module()
    if not pretrained:
        if hf_config is None:
            raise ArtifactError("model.name=hf with pretrained=false needs hf_config (the artifact's network config)")
        config = _config_from_dict(transformers, hf_config)
        auto, wrapper = _auto_class(transformers, head, num_classes, image_size, config)
        return wrapper(_freeze_unsaved(auto.from_config(config)), checkpoint)
    path = checkpoint_dir(checkpoint)
    config = _checkpoint_config(transformers, path) if head == "speech" else None
    auto, wrapper = _auto_class(transformers, head, num_classes, image_size, config)
    # a classifier gets a fresh head for the task's labels (ignore_mismatched_sizes: a head trained for others)
    labels = {"num_labels": num_classes, "ignore_mismatched_sizes": True} \
        if wrapper in (HFSequenceClassifier, HFImageClassifier) else {}
    try:
        net, info = auto.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                         dtype=torch.float32, **labels)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model.checkpoint={checkpoint}: transformers cannot load it as {auto.__name__} "
                          f"({str(exc).splitlines()[0][:300]})") from None
    if wrapper is HFSequenceClassifier and net.config.pad_token_id is None and pad_id is not None:
        # decoder classifiers (GPT-2, Llama) find each row's last token through the pad id
        net.config.pad_token_id = pad_id
    _freeze_unsaved(net)
    settings = {name: (path / name).read_bytes() for name in TOKENIZER_SETTINGS if (path / name).is_file()}
    mismatched = {key if isinstance(key, str) else key[0] for key in info.get("mismatched_keys", ())}
    fresh = set(info.get("missing_keys", ())) | mismatched
    return wrapper(net, str(path), sorted(fresh), settings)


def _tokenizer_from_json(text: str, source: str) -> Any:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # the tokenizers library raises a bare Exception for malformed JSON
        raise ConfigError(f"{source} is not a valid tokenizer.json ({str(exc)[:200]})") from None
    tok.no_padding()  # the text tasks pad and truncate themselves
    tok.no_truncation()
    return tok


def checkpoint_tokenizer(model_cfg: Any) -> Any:
    """The checkpoint's own tokenizer (a ``tokenizers.Tokenizer``) when the recipe's model is ``hf``, else None.

    ``tokenizer.json`` is read as it is; a checkpoint with only the slow files (vocab.txt, a sentencepiece model …)
    is converted by ``AutoTokenizer`` (offline) and its fast backend taken. The text tasks save it in the artifact
    as ``tokenizer.json``, so a loaded model needs no checkpoint."""
    if model_cfg.name != "hf":
        return None
    path = checkpoint_dir(model_cfg.kwargs().get("checkpoint"))
    file = path / "tokenizer.json"
    if file.is_file():
        return _tokenizer_from_json(file.read_text(encoding="utf-8"), str(file))
    transformers = transformers_module()
    try:
        auto = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.checkpoint={path}: no tokenizer.json and AutoTokenizer cannot read its tokenizer "
                          f"files ({str(exc).splitlines()[0][:200]})") from None
    backend = getattr(auto, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"model.checkpoint={path}: its tokenizer has no fast (tokenizers) version; save one as "
                          "tokenizer.json in the folder")
    return _tokenizer_from_json(backend.to_str(), str(path))


def checkpoint_or_artifact(model_cfg: Any, artifact_dir: Path | None) -> Path:
    """Where a ``model.name=hf`` run reads its tokenizer/processor: the artifact's copy once trained, else the
    checkpoint folder."""
    return artifact_dir if artifact_dir is not None else checkpoint_dir(model_cfg.kwargs().get("checkpoint"))


def _auto_preprocessor(folder: Path, auto_class: str, files: str) -> Any:
    """transformers' ``auto_class`` (AutoTokenizer, AutoFeatureExtractor) of a checkpoint (or artifact) folder,
    offline; one-line error naming ``files`` otherwise."""
    try:
        return getattr(transformers_module(), auto_class).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"model.checkpoint={folder}: {auto_class} cannot read its {files} "
                          f"({str(exc).splitlines()[0][:200]})") from None


def auto_tokenizer(folder: Path) -> Any:
    return _auto_preprocessor(folder, "AutoTokenizer", "tokenizer files")


def auto_feature_extractor(folder: Path) -> Any:
    return _auto_preprocessor(folder, "AutoFeatureExtractor", "preprocessor_config.json")


def saved_files(*parts: Any) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for tokenizers / feature extractors (JSON, vocabularies, sentencepiece
    models — never pickles), as {name: bytes} for the artifact."""
    import tempfile

    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            part.save_pretrained(tmp)
        for file in sorted(Path(tmp).iterdir()):
            if file.is_file():
                files[file.name] = file.read_bytes()
    return files
