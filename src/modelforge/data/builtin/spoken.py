"""Generated speech: ``spoken-digits`` and ``spoken-commands``, synthesised with espeak-ng (Debian ``espeak-ng``).

Each utterance is ``espeak-ng -w out.wav -v VOICE -s SPEED -p PITCH "text"`` with VOICE = an English espeak-ng voice
(those ``espeak-ng --voices=en`` lists, minus MBROLA ones, which need separate voice packages) crossed with the
speaker variants ``+f1..f5`` and ``+m1..m7``; SPEED is 120–200 words per minute and PITCH 20–80. Background noise
is not baked in: ``load_spoken_audio`` adds it at load time, so each epoch can hear different noise.

Splits are by voice: every voice (base + variant) belongs to exactly one of train/val/test, chosen by a stable hash
of its name, so the test figure is measured on speakers the model never heard. Within a split, texts, speeds and
pitches come from a generator seeded by (set, split, seed): the test set does not change when ``n_train`` does,
and a smaller set is a prefix of a larger one.

Audio is resampled once to 16 kHz mono 16-bit and cached under ``cache_dir("spoken", set)`` as ``<hash>.wav``
(the hash covers voice, speed, pitch, text and generator version), each written atomically; a manifest JSONL keyed
by the generation parameters makes a repeated call free (no espeak-ng process at all).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.audio import add_background_noise, read_wav, write_wav
from modelforge.data.cache import cache_dir
from modelforge.data.formats.speech_manifest import SpeechRecord, read_speech_manifest, write_speech_manifest

INSTALL_HINT = "sudo apt-get install espeak-ng (or run `make setup-system`)"
DATASETS = ("spoken-digits", "spoken-commands")
SPLITS = ("train", "val", "test")
VARIANTS = tuple(f"f{i}" for i in range(1, 6)) + tuple(f"m{i}" for i in range(1, 8))
SPEED_WPM = (120, 200)
PITCH = (20, 80)
SAMPLE_RATE = 16000
GENERATOR_VERSION = 1  # bump when synthesis or post-processing changes, so cached audio is rebuilt
VAL_VOICE_SHARE = 0.10
TEST_VOICE_SHARE = 0.15

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = (
    "turn on the light", "turn off the light", "turn on the kitchen lights", "turn off the bedroom lights",
    "dim the lights", "play music", "pause the music", "stop the music", "next song", "previous song",
    "volume up", "volume down", "mute", "what time is it", "what's the weather today",
    "set a timer for five minutes", "cancel the timer", "set an alarm for seven", "snooze the alarm", "call mom",
    "read my messages", "add milk to the shopping list", "what's on my calendar", "lock the front door",
    "open the garage door", "turn up the heat", "turn down the temperature", "start the vacuum",
    "tell me a joke", "good night",
)


@dataclass(frozen=True)
class Utterance:
    """One planned synthesis: what to say, with which voice, how fast and how high."""

    text: str
    voice: str
    speed: int
    pitch: int
    split: str

    @property
    def file_name(self) -> str:
        key = f"{GENERATOR_VERSION}|{SAMPLE_RATE}|{self.voice}|{self.speed}|{self.pitch}|{self.text}"
        return hashlib.sha1(key.encode()).hexdigest()[:20] + ".wav"


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise MissingDependencyError(f"espeak-ng is not installed (needed to generate spoken data): {INSTALL_HINT}")
    return binary


def base_voices(binary: str | None = None) -> list[str]:
    """English espeak-ng voices usable without MBROLA, by language code (e.g. ``en-gb``, ``en-us``, ``en-029``)."""
    binary = binary or espeak_binary()
    listing = subprocess.run([binary, "--voices=en"], capture_output=True, text=True, check=False, timeout=60)
    voices: list[str] = []
    for line in listing.stdout.splitlines()[1:]:
        cols = line.split()
        # columns: Pty Language Age/Gender VoiceName File [Other Languages]
        if len(cols) < 5 or cols[1] == "variant" or cols[4].startswith("mb/") or not cols[1].startswith("en"):
            continue
        if cols[1] not in voices:
            voices.append(cols[1])
    if not voices:
        raise MissingDependencyError(f"espeak-ng lists no English voices (`{binary} --voices=en`); reinstall it: "
                                     f"{INSTALL_HINT}")
    return sorted(voices)


def list_voices(binary: str | None = None) -> list[str]:
    """Every voice used for generation: base voice × speaker variant, e.g. ``en-gb-scotland+f3``."""
    return [f"{base}+{variant}" for base in base_voices(binary) for variant in VARIANTS]


def split_voices(voices: list[str]) -> dict[str, list[str]]:
    """Voice-disjoint train/val/test pools, ordered by a stable hash of the voice name (no seed, no randomness)."""
    if len(set(voices)) < 3:
        raise DataError(f"spoken data needs at least 3 distinct voices to hold some out, got {sorted(set(voices))}")
    ranked = sorted(set(voices), key=lambda v: hashlib.sha1(v.encode()).hexdigest())
    n_test = max(1, round(TEST_VOICE_SHARE * len(ranked)))
    n_val = max(1, round(VAL_VOICE_SHARE * len(ranked)))
    return {"test": ranked[:n_test], "val": ranked[n_test : n_test + n_val], "train": ranked[n_test + n_val :]}


def digit_words(rng: random.Random) -> str:
    """1–7 random digits as spoken words; 0 is said "zero" or "oh" with equal odds."""
    words = []
    for _ in range(rng.randint(1, 7)):
        digit = rng.randrange(10)
        words.append(rng.choice(("zero", "oh")) if digit == 0 else DIGIT_WORDS[digit])
    return " ".join(words)


def plan_utterances(name: str, sizes: dict[str, int], seed: int, voices: list[str]) -> list[Utterance]:
    """Deterministic list of utterances: per split, voices round-robin over that split's shuffled pool."""
    if name not in DATASETS:
        raise DataError(f"unknown spoken dataset {name!r}; choose one of {', '.join(DATASETS)}")
    pools = split_voices(voices)
    plan = []
    for split in SPLITS:
        rng = random.Random(f"{name}/{split}/{seed}")
        pool = list(pools[split])
        rng.shuffle(pool)
        for i in range(sizes.get(split, 0)):
            text = digit_words(rng) if name == "spoken-digits" else rng.choice(COMMANDS)
            speed, pitch = rng.randint(*SPEED_WPM), rng.randint(*PITCH)
            plan.append(Utterance(text, pool[i % len(pool)], speed, pitch, split))
    return plan


def generate_spoken(
    name: str,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 400,
    seed: int = 0,
    voices: list[str] | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> list[SpeechRecord]:
    """Generate (or reuse from the cache) a spoken dataset; returns records with path, text, voice and split.

    ``voices`` defaults to every English voice × variant espeak-ng offers; ``workers`` (default: CPU count) espeak-ng
    processes run at once; ``progress`` None = a progress bar only when stderr is a terminal.
    """
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if min(sizes.values()) < 0:
        raise DataError(f"spoken dataset sizes must be >= 0, got {sizes}")
    folder = cache_dir("spoken", name)
    key = json.dumps({"sizes": sizes, "seed": seed, "voices": voices, "version": GENERATOR_VERSION}, sort_keys=True)
    manifest = folder / f"manifest-{hashlib.sha1(key.encode()).hexdigest()[:16]}.jsonl"
    if manifest.exists():
        try:
            return read_speech_manifest(manifest)
        except DataError:
            pass  # a cached file went missing: regenerate what is absent below
    binary = espeak_binary()
    plan = plan_utterances(name, sizes, seed, voices if voices is not None else list_voices(binary))
    todo = {u.file_name: u for u in plan if not (folder / u.file_name).exists()}
    _synthesize_all(binary, folder, list(todo.values()), workers or os.cpu_count() or 1, progress)
    records = [
        SpeechRecord(path=folder / u.file_name, text=u.text, voice=u.voice, split=u.split,
                     meta={"speed": u.speed, "pitch": u.pitch})
        for u in plan
    ]
    write_speech_manifest(manifest, records)
    return read_speech_manifest(manifest)


def _synthesize_all(binary: str, folder: Path, todo: list[Utterance], workers: int, progress: bool | None) -> None:
    if not todo:
        return
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress_bar() if show else None
    task = bar.add_task(f"espeak-ng → {folder.name}", total=len(todo)) if bar else None
    # Threads suffice: each job waits on an espeak-ng subprocess, and torch's resampling releases the GIL.
    # The parallelism is across utterances, so torch's own threads would only oversubscribe the cores.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if bar:
            bar.start()
        try:
            futures = {pool.submit(_synthesize, binary, folder, u) for u in todo}
            while futures:
                done, futures = wait(futures, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # re-raises the first failure; pending jobs are cancelled below
                    if bar:
                        bar.advance(task)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            torch.set_num_threads(torch_threads)
            if bar:
                bar.stop()


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def _synthesize(binary: str, folder: Path, utterance: Utterance) -> None:
    """espeak-ng → temp WAV (22.05 kHz) → 16 kHz 16-bit WAV renamed into place, so no half file is ever visible."""
    fd, raw = tempfile.mkstemp(dir=folder, prefix=".espeak-", suffix=".wav")
    os.close(fd)
    try:
        command = [binary, "-w", raw, "-v", utterance.voice, "-s", str(utterance.speed), "-p", str(utterance.pitch),
                   utterance.text]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0 or os.path.getsize(raw) <= 44:
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}, no audio"])[-1]
            raise DataError(f"espeak-ng failed for voice {utterance.voice} saying {utterance.text!r}: {reason}")
        write_wav(folder / utterance.file_name, read_wav(raw, SAMPLE_RATE), SAMPLE_RATE)
    finally:
        os.unlink(raw)


def load_spoken_audio(
    record: SpeechRecord, seed: int | None = 0, snr_db: tuple[float, float] = (10.0, 30.0)
) -> torch.Tensor:
    """The 16 kHz waveform of a generated utterance with background noise (white/pink/brown at a random SNR).

    The noise is a function of (file, seed): pass a fixed seed for a reproducible val/test set, a different seed per
    epoch for fresh training noise, or ``seed=None`` for the clean recording.
    """
    waveform = torch.from_numpy(read_wav(record.path, SAMPLE_RATE))
    if seed is None:
        return waveform
    digest = hashlib.sha1(f"{record.path.name}|{seed}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return add_background_noise(waveform, generator, snr_db).to(torch.float32)
