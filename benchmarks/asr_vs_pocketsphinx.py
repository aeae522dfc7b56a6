"""Our CTC recogniser vs pocketsphinx on the same held-out spoken digits: WER/CER (one jiwer call) and real-time factor.

Both systems decode exactly the audio a trained run is tested on: the test split of its recipe (voices never heard in
training, with the same fixed background noise), so the WER of modelforge printed here equals the run's test_wer.
pocketsphinx uses its bundled US-English acoustic model and dictionary, restricted by a JSGF grammar to digit
strings (``<digit>+`` over zero/oh/one…nine), i.e. it gets the same closed vocabulary as our lexicon decoding; it
runs offline (the model files ship inside the wheel).
The real-time factor is decoding seconds / audio seconds on one thread (features included for both).

    python benchmarks/asr_vs_pocketsphinx.py RUN [--limit N] [--threads 1] [--clean]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelforge.artifacts.predictor import Predictor
from modelforge.data.builtin.spoken import DIGIT_WORDS
from modelforge.data.speech import load_records, read_split
from modelforge.tasks.speech.speech_recognition import speech_metrics

GRAMMAR = """#JSGF V1.0;
grammar digits;
public <utterance> = <digit>+;
<digit> = {words};
"""


def held_out_audio(predictor: Predictor, limit: int | None, clean: bool) -> tuple[list[np.ndarray], list[str]]:
    cfg = predictor.task.data_cfg
    if cfg.source != "spoken-digits":
        raise SystemExit(f"{predictor.directory}: trained on {cfg.source}; this benchmark needs a spoken-digits run")
    if clean:
        cfg = cfg.model_copy(update={"noise_snr": None})
    records = load_records(cfg)["test"][:limit]
    audio, kept, _ = read_split(cfg, records, "test")
    return audio, [predictor.task.vocab.normalize(r.text) for r in kept]


def decode_modelforge(predictor: Predictor, audio: list[np.ndarray], batch_size: int = 16) -> tuple[list[str], float]:
    texts: list[str] = []
    started = time.perf_counter()
    for i in range(0, len(audio), batch_size):
        waves = [a.astype(np.float32) / 32768.0 for a in audio[i : i + batch_size]]
        texts += [r["text"] for r in predictor.predict(waves)]
    return texts, time.perf_counter() - started


def decode_pocketsphinx(audio: list[np.ndarray], sample_rate: int) -> tuple[list[str], float]:
    from pocketsphinx import Decoder

    with tempfile.TemporaryDirectory() as tmp:
        grammar = Path(tmp) / "digits.jsgf"
        grammar.write_text(GRAMMAR.format(words=" | ".join(("oh", *DIGIT_WORDS))))
        # dither: espeak-ng writes exact digital silence, whose log energy hurts pocketsphinx (WER 62 % → 52 % on
        # 80 clean test utterances with it; on noisy audio it changes little)
        decoder = Decoder(jsgf=str(grammar), samprate=sample_rate, dither=True, loglevel="FATAL")
    texts: list[str] = []
    started = time.perf_counter()
    for samples in audio:
        decoder.start_utt()
        decoder.process_raw(samples.astype("<i2").tobytes(), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        texts.append(" ".join(hypothesis.hypstr.split()) if hypothesis is not None else "")
    return texts, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained speech_recognition run on spoken-digits (e.g. runs/asr-digits)")
    parser.add_argument("--limit", type=int, default=None, help="decode only the first N test utterances")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pocketsphinx is single-threaded)")
    parser.add_argument("--clean", action="store_true", help="decode the test voices without background noise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    predictor = Predictor(args.run)
    sample_rate = predictor.task.data_cfg.features.sample_rate
    audio, references = held_out_audio(predictor, args.limit, args.clean)
    seconds = sum(len(a) for a in audio) / sample_rate
    ours, ours_time = decode_modelforge(predictor, audio)
    theirs, theirs_time = decode_pocketsphinx(audio, sample_rate)
    rows = {
        "modelforge": {**speech_metrics(references, ours), "rtf": ours_time / seconds},
        "pocketsphinx": {**speech_metrics(references, theirs), "rtf": theirs_time / seconds},
    }
    decoding = predictor.task.data_cfg
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}")
    print(f"run: {args.run}")
    print(f"modelforge_decoding: {decoding.decoding}" + (f" (beam {decoding.beam_width})" if decoding.decoding == "beam"
                                                        else ""))
    print(f"utterances: {len(audio)}")
    print(f"audio_seconds: {seconds:.1f}")
    print(f"noise: {'none' if args.clean else decoding.noise_snr}")
    for name, row in rows.items():
        for key in ("wer", "cer", "utterance_accuracy", "rtf"):
            print(f"{name}_{key}: {row[key]:.4f}")
    ratio = rows["pocketsphinx"]["wer"] / rows["modelforge"]["wer"] if rows["modelforge"]["wer"] else float("inf")
    print(f"wer_ratio_pocketsphinx_over_modelforge: {ratio:.2f}")
    print(f"rtf_ratio_pocketsphinx_over_modelforge: {rows['pocketsphinx']['rtf'] / rows['modelforge']['rtf']:.2f}")
    print()
    print(f"{'':<14}{'WER':>8}{'CER':>8}{'utt acc':>9}{'RTF':>8}")
    for name, row in rows.items():
        print(f"{name:<14}{row['wer']:>8.2%}{row['cer']:>8.2%}{row['utterance_accuracy']:>9.2%}{row['rtf']:>8.3f}")
    print()
    for ref, a, b in list(zip(references, ours, theirs, strict=True))[:5]:
        print(f"ref: {ref!r}\n  modelforge:   {a!r}\n  pocketsphinx: {b!r}")


if __name__ == "__main__":
    main()
