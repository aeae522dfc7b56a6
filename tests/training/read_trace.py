"""Which items each process of a run decodes from disk, observed from outside the product code.

A test writes a ``sitecustomize.py`` that calls ``install()`` into a folder on the run's PYTHONPATH and sets
``READ_TRACE_DIR``. Every Python process of the run (the CLI, torchrun's ranks; DataLoader workers inherit the
patches when they fork) then wraps, as soon as the modules are imported:

- ``ImageFileDataset.__getitem__`` / ``__getitems__`` and the language model's ``TokenWindows.__getitem__`` /
  ``get_batch``: one JSON line per item read — rank, phase, index, pid;
- ``Trainer._run_epoch`` / ``Trainer.evaluate`` / ``lazy_images.channel_statistics`` / ``touch_sample``: the phase
  (``train:<epoch>``, ``evaluate``, ``statistics``, ``touch``; ``other`` outside them: data set-up, the baseline,
  the report).

Each line is appended with one ``write`` to a file per process (O_APPEND), so forked workers never share a buffer.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

ENV = "READ_TRACE_DIR"
_phase = ["other"]


def _record(indices) -> None:
    rank, phase = int(os.environ.get("RANK", 0)), _phase[0]
    line = "".join(json.dumps({"rank": rank, "phase": phase, "index": int(i), "pid": os.getpid()}) + "\n"
                   for i in indices)
    fd = os.open(Path(os.environ[ENV]) / f"reads-{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _in_phase(name, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        label = name(*args) if callable(name) else name
        previous, _phase[0] = _phase[0], label
        try:
            return function(*args, **kwargs)
        finally:
            _phase[0] = previous

    return wrapper


def _trace_reads(cls) -> None:
    """Record every item ``cls`` reads: one by one (``__getitem__``) or gathered (``get_batch``, or
    ``__getitems__``, which reads its items without calling ``__getitem__``)."""
    getitem, get_batch, get_items = cls.__getitem__, getattr(cls, "get_batch", None), getattr(cls, "__getitems__", None)

    def traced_item(self, index):
        _record([index])
        return getitem(self, index)

    def traced_batch(self, indices):
        _record(list(indices))
        return get_batch(self, indices)

    def traced_items(self, indices):
        _record(list(indices))
        return get_items(self, indices)

    cls.__getitem__ = traced_item
    if get_batch is not None:
        cls.get_batch = traced_batch
    if get_items is not None:
        cls.__getitems__ = traced_items


def _patch_lazy_images(module) -> None:
    _trace_reads(module.ImageFileDataset)
    module.channel_statistics = _in_phase("statistics", module.channel_statistics)
    module.touch_sample = _in_phase("touch", module.touch_sample)


def _patch_language_modeling(module) -> None:
    _trace_reads(module.TokenWindows)


def _patch_trainer(module) -> None:
    trainer = module.Trainer
    trainer._run_epoch = _in_phase(lambda self, *a: f"train:{self.epoch}", trainer._run_epoch)
    trainer.evaluate = _in_phase("evaluate", trainer.evaluate)


PATCHES = {"modelforge.data.lazy_images": _patch_lazy_images, "modelforge.training.trainer": _patch_trainer,
           "modelforge.tasks.text.language_modeling": _patch_language_modeling}


class _PatchAfterImport:
    """A meta-path finder that lets the real finder load a watched module, then patches it."""

    def find_spec(self, name, path, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if os.environ.get(ENV):
        sys.meta_path.insert(0, _PatchAfterImport())


def write_sitecustomize(folder: Path) -> Path:
    """``folder/sitecustomize.py`` that installs the trace from this file's folder; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parent)
    (folder / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {here!r})\nimport read_trace\nsys.path.remove({here!r})\n"
        "read_trace.install()\n")
    return folder


def reads(trace_dir: Path) -> dict[tuple[int, str], list[int]]:
    """(rank, phase) → the indices decoded, in no particular order (each worker has its own file)."""
    found: dict[tuple[int, str], list[int]] = defaultdict(list)
    for file in sorted(trace_dir.glob("reads-*.jsonl")):
        for line in file.read_text().splitlines():
            row = json.loads(line)
            found[row["rank"], row["phase"]].append(row["index"])
    return dict(found)
