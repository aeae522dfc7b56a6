"""Speech data given by the user: a folder of WAVs with ``transcripts.tsv``, or a JSONL manifest.

- ``transcripts.tsv``: one ``file<TAB>text`` per line; ``file`` is relative to the TSV's folder (or absolute). An
  optional first line ``file<TAB>text`` (or ``audio``/``path`` for the first column) is a header and skipped.
- JSONL: one object per line with ``"audio"`` (path, relative to the manifest's folder or absolute) and ``"text"``;
  optional ``"speaker"`` (or ``"voice"``) and ``"split"`` (``train``/``val``/``test``); other keys are kept in
  ``meta``.

Every problem is reported with the manifest path and line number; only paths and transcripts are checked here —
the audio itself is decoded (and its errors reported) when it is loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge.core.errors import DataError

TRANSCRIPTS_NAME = "transcripts.tsv"
SPLITS = ("train", "val", "test")
_HEADER_FIRST_COLUMNS = {"file", "audio", "path"}


@dataclass(frozen=True)
class SpeechRecord:
    """One utterance: an audio file and its transcript; ``voice`` is the speaker (for speaker-disjoint splits)."""

    path: Path
    text: str
    voice: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"audio": str(self.path), "text": self.text}
        if self.voice is not None:
            row["voice"] = self.voice
        if self.split is not None:
            row["split"] = self.split
        return {**row, **{k: v for k, v in self.meta.items() if k != "line"}}


def read_speech_manifest(path: str | Path, check_files: bool = True) -> list[SpeechRecord]:
    """A folder holding ``transcripts.tsv``, a ``.tsv`` file, or a ``.jsonl`` manifest → records, in file order."""
    path = Path(path)
    if path.is_dir():
        tsv = path / TRANSCRIPTS_NAME
        if not tsv.exists():
            raise DataError(f"{path}: no {TRANSCRIPTS_NAME} in this folder; add one with lines `file<TAB>text`, "
                            f"or point data at a .jsonl manifest")
        path = tsv
    if not path.exists():
        raise DataError(f"speech manifest {path} does not exist")
    if path.suffix.lower() in (".jsonl", ".json"):
        records = _read_jsonl(path)
    elif path.suffix.lower() in (".tsv", ".txt"):
        records = _read_tsv(path)
    else:
        raise DataError(f"{path}: unknown manifest type {path.suffix!r}; use a .tsv (`file<TAB>text`) or a .jsonl "
                        f"manifest ({{\"audio\": ..., \"text\": ...}} per line)")
    if not records:
        raise DataError(f"{path}: manifest lists no utterances")
    if check_files:
        _check_files_exist(path, records)
    return records


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM spreadsheet programs write
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_tsv(path: Path) -> list[SpeechRecord]:
    records = []
    for index, (number, line) in enumerate(_lines(path)):
        if "\t" not in line:
            raise DataError(f"{path} line {number}: expected `file<TAB>text`, found no tab in {line[:60]!r}")
        name, text = line.split("\t", 1)
        if index == 0 and name.strip().lower() in _HEADER_FIRST_COLUMNS and text.strip().lower() == "text":
            continue
        records.append(_record(path, number, name.strip(), text, None, None, {}))
    return records


def _read_jsonl(path: Path) -> list[SpeechRecord]:
    records = []
    for number, line in _lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict) or not isinstance(row.get("audio"), str):
            raise DataError(f"{path} line {number}: expected an object with \"audio\" (a path) and \"text\"")
        text = row.get("text")
        if not isinstance(text, str):
            raise DataError(f"{path} line {number}: \"text\" must be a string, got {type(text).__name__}")
        voice = row.get("speaker", row.get("voice"))
        split = row.get("split")
        if split is not None and split not in SPLITS:
            raise DataError(f"{path} line {number}: split {split!r} is not one of {', '.join(SPLITS)}")
        meta = {k: v for k, v in row.items() if k not in ("audio", "text", "speaker", "voice", "split")}
        records.append(_record(path, number, row["audio"], text, None if voice is None else str(voice), split, meta))
    return records


def _record(manifest: Path, number: int, name: str, text: str, voice: str | None, split: str | None,
            meta: dict[str, Any]) -> SpeechRecord:
    if not name:
        raise DataError(f"{manifest} line {number}: empty audio file name")
    text = " ".join(text.split())
    if not text:
        raise DataError(f"{manifest} line {number}: empty transcript for {name!r}; write the spoken words or drop "
                        f"the line")
    audio = Path(name)
    audio = audio if audio.is_absolute() else manifest.parent / audio
    return SpeechRecord(path=audio, text=text, voice=voice, split=split, meta={"line": number, **meta})


def _check_files_exist(manifest: Path, records: list[SpeechRecord]) -> None:
    missing = [r for r in records if not r.path.is_file()]
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DataError(f"{manifest} line {first.meta['line']}: audio file {first.path} not found{more}; "
                        f"paths are relative to {manifest.parent}")


def write_speech_manifest(path: Path, records: list[SpeechRecord]) -> None:
    """Records → a JSONL manifest with audio paths relative to its folder, written atomically."""
    lines = []
    for record in records:
        row = record.to_json()
        try:
            row["audio"] = str(record.path.relative_to(path.parent))
        except ValueError:
            row["audio"] = str(record.path)
        lines.append(json.dumps(row, ensure_ascii=False))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
