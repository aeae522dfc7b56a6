"""Bad input on the command line, as a table: every case exits 2 with exactly one line on stderr (no traceback, no
warning), and creates or changes no file — neither in the working directory nor in the run it points at.

Cases run in-process through ``modelforge.cli.main`` (a subprocess per case would cost seconds of imports each);
``test_a_few_cases_through_a_real_process`` checks that the in-process harness sees what a user's terminal sees.
Cases that would train fail while loading the recipe or the data, before training starts.
"""

from __future__ import annotations

import logging
import socket
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelforge.cli import main

TINY_TEXT = ["data.source=file", "data.text_column=text", "data.label_column=label", "train.max_steps=2",
             "train.progress=off"]
TINY_TRAIN = ["model.name=mlp", "model.hidden=[8]", "data.limit=64", "train.max_steps=2", "train.progress=off"]


# ---- files the cases make ------------------------------------------------------------------------------------------
def _png(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(path)


def _bomb_png(path: Path) -> None:
    """A valid 20000x20000 PNG header (400 M pixels, over Pillow's 179 M bomb limit) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))


def _folder(root: Path, classes: list[str], per_class: int = 10) -> None:
    for name in classes:
        for i in range(per_class):
            _png(root / name / f"{i}.png")


FILES: dict[str, Callable[[Path], None]] = {
    "afile": lambda t: (t / "afile").write_text("not a folder"),
    "empty": lambda t: (t / "empty").mkdir(),
    "bad.yaml": lambda t: (t / "bad.yaml").write_text("name: [unclosed\n"),
    "list.yaml": lambda t: (t / "list.yaml").write_text("- a\n- b\n"),
    "task.yaml": lambda t: (t / "task.yaml").write_text("name: x\ntask: nope\nmodel: {name: mlp}\n"),
    "explain.yaml": lambda t: (t / "explain.yaml").write_text(
        "name: x\ntask: image_classification\ndata: {source: digits}\nmodel: {name: mlp}\nexplain: {steps: 1}\n"),
    "ok.png": lambda t: _png(t / "ok.png"),
    "fake.png": lambda t: (t / "fake.png").write_text("this is text, not a PNG"),
    "huge.png": lambda t: _bomb_png(t / "huge.png"),
    "one": lambda t: _folder(t / "one", ["cat"]),
    "corrupt": lambda t: (_folder(t / "corrupt", ["a", "b"]), (t / "corrupt/a/bad.png").write_bytes(b"\x89PNG")),
    "one.csv": lambda t: (t / "one.csv").write_text("text,label\n" + "".join(f"film {i},pos\n" for i in range(20))),
    "nolabel.csv": lambda t: (t / "nolabel.csv").write_text("text,category\nfine film,pos\nbad film,neg\n"),
    "clip.avi": lambda t: (t / "clip.avi").write_bytes(b"RIFF\0\0\0\0AVI LIST"),
}

# (id, argv with {tmp} = the working directory and {run} = a trained tiny run, files made in {tmp} first, text the
# error line must contain: the case fails for the reason it is about, not an earlier one)
CASES: list[tuple[str, list[str], list[str], str]] = [
    # train: recipe and overrides
    ("unknown-recipe", ["train", "mnist-cn"], [], "unknown recipe 'mnist-cn'"),
    ("override-bad-type", ["train", "digits-cnn", *TINY_TRAIN, "train.lr=fast"], [],
     "train.lr: Input should be a valid number"),
    ("override-unknown-key", ["train", "digits-cnn", *TINY_TRAIN, "train.lrr=0.1"], [], "Did you mean train.lr?"),
    ("override-without-equals", ["train", "digits-cnn", *TINY_TRAIN, "train.lr"], [], "bad override 'train.lr'"),
    ("lr-inf", ["train", "digits-cnn", *TINY_TRAIN, "train.lr=inf"], [], "train.lr: Input should be a finite number"),
    ("lr-nan", ["train", "digits-cnn", *TINY_TRAIN, "train.lr=nan"], [], "train.lr: Input should be a finite number"),
    ("epochs-zero", ["train", "digits-cnn", *TINY_TRAIN, "train.epochs=0"], [], "train.epochs:"),
    ("batch-size-negative", ["train", "digits-cnn", *TINY_TRAIN, "train.batch_size=-1"], [], "train.batch_size:"),
    ("optimizer-unknown", ["train", "digits-cnn", *TINY_TRAIN, "train.optimizer=rmsprop"], [], "train.optimizer:"),
    ("model-keyword-unknown", ["train", "digits-cnn", *TINY_TRAIN, "model.widht=3"], [], "takes no keyword 'widht'"),
    ("model-dropout-nan", ["train", "digits-cnn", *TINY_TRAIN, "model.dropout=nan"], [],
     "model.dropout: Input should be a finite number"),
    ("recipe-file-missing", ["train", "{tmp}/missing.yaml"], [], "missing.yaml does not exist"),
    ("recipe-file-bad-yaml", ["train", "{tmp}/bad.yaml"], ["bad.yaml"], "not valid YAML"),
    ("recipe-file-not-mapping", ["train", "{tmp}/list.yaml"], ["list.yaml"], "must be a YAML mapping"),
    ("recipe-unknown-task", ["train", "{tmp}/task.yaml"], ["task.yaml"], "unknown task 'nope'"),
    ("recipe-explain-steps-1", ["train", "{tmp}/explain.yaml"], ["explain.yaml"], "explain.steps:"),
    # train: run directory and resume
    ("run-dir-is-a-file", ["train", "digits-cnn", *TINY_TRAIN, "--run-dir", "{tmp}/afile"], ["afile"], "--run-dir"),
    ("resume-nothing", ["train", "digits-cnn", *TINY_TRAIN, "--resume"], [], "has a checkpoint"),
    ("resume-run-dir-without-checkpoint", ["train", "digits-cnn", *TINY_TRAIN, "--resume", "--run-dir", "{tmp}/empty"],
     ["empty"], "holds no checkpoint"),
    ("resume-run-dir-is-a-file", ["train", "digits-cnn", "--resume", "--run-dir", "{tmp}/afile"], ["afile"],
     "a file of that name exists"),
    # train: data that cannot train a classifier
    ("folder-without-path", ["train", "image-classifier", *TINY_TRAIN], [], "needs data.path"),
    ("folder-missing", ["train", "image-classifier", *TINY_TRAIN, "data.path={tmp}/nope"], [], "does not exist"),
    ("folder-empty", ["train", "image-classifier", *TINY_TRAIN, "data.path={tmp}/empty"], ["empty"],
     "no class folders"),
    ("folder-one-class", ["train", "image-classifier", *TINY_TRAIN, "data.path={tmp}/one"], ["one"],
     "at least 2 classes, found 1 ('cat')"),
    ("folder-corrupt-on-error-fail", ["train", "image-classifier", *TINY_TRAIN, "data.path={tmp}/corrupt",
                                      "data.on_error=fail"], ["corrupt"], "bad.png: not a readable image"),
    ("val-size-1.5", ["train", "digits-cnn", *TINY_TRAIN, "data.val_size=1.5"], [], "neither a share"),
    ("val-size-holds-out-none", ["train", "digits-cnn", *TINY_TRAIN, "data.val_size=0.0001"], [], "holds out none"),
    ("test-size-above-data", ["train", "digits-cnn", *TINY_TRAIN, "data.test_size=5000"], [], "cannot hold out 5000"),
    ("val-size-negative", ["train", "digits-cnn", *TINY_TRAIN, "data.val_size=-1"], [], "data.val_size:"),
    ("text-one-label", ["train", "sentiment-lstm", *TINY_TEXT, "data.path={tmp}/one.csv"], ["one.csv"],
     "at least 2 classes, found 1 ('pos')"),
    ("text-missing-label-column", ["train", "sentiment-lstm", *TINY_TEXT, "data.path={tmp}/nolabel.csv"],
     ["nolabel.csv"], "no column 'label'"),
    ("text-file-missing", ["train", "sentiment-lstm", *TINY_TEXT, "data.path={tmp}/missing.csv"], [],
     "missing.csv: file not found"),
    # predict, eval
    ("predict-no-run", ["predict", "{tmp}/norun", "{tmp}/ok.png"], ["ok.png"], "is not a run or model directory"),
    ("predict-not-a-run", ["predict", "{tmp}/empty", "{tmp}/ok.png"], ["empty", "ok.png"], "is missing"),
    ("predict-missing-input", ["predict", "{run}", "{tmp}/missing.png"], [], "missing.png"),
    ("predict-not-an-image", ["predict", "{run}", "{tmp}/fake.png"], ["fake.png"], "fake.png: not a readable image"),
    ("predict-decompression-bomb", ["predict", "{run}", "{tmp}/huge.png"], ["huge.png"], "decompression-bomb"),
    ("predict-output-is-a-file", ["predict", "{run}", "{tmp}/ok.png", "--output", "{tmp}/afile"], ["ok.png", "afile"],
     "--output"),
    ("eval-no-run", ["eval", "{tmp}/norun"], [], "is not a run or model directory"),
    ("eval-bad-split", ["eval", "{run}", "--split", "nope"], [], "argument --split"),
    # serve (each fails before a socket is served)
    ("serve-port-above-65535", ["serve", "{run}", "--port", "99999"], [], "a TCP port is 0–65535, got 99999"),
    ("serve-port-negative", ["serve", "{run}", "--port", "-1"], [], "a TCP port is 0–65535, got -1"),
    ("serve-port-in-use", ["serve", "{run}", "--port", "{busy_port}"], [], "Address already in use"),
    ("serve-batch-size-zero", ["serve", "{run}", "--max-batch-size", "0"], [], "--max-batch-size"),
    ("serve-no-run", ["serve", "{tmp}/norun", "--port", "{free_port}"], [], "is not a run or model directory"),
    # explain
    ("explain-steps-negative", ["explain", "{run}", "{tmp}/ok.png", "--steps", "-1"], ["ok.png"], "--steps"),
    ("explain-steps-one", ["explain", "{run}", "{tmp}/ok.png", "--steps", "1"], ["ok.png"], "explain.steps:"),
    ("explain-no-input", ["explain", "{run}"], [], "at least one INPUT"),
    ("explain-unknown-method", ["explain", "{run}", "{tmp}/ok.png", "--method", "nope"], ["ok.png"],
     "argument --method"),
    ("explain-unknown-target", ["explain", "{run}", "{tmp}/ok.png", "--target", "no-such-label"], ["ok.png"],
     "unknown label 'no-such-label'"),
    # export, report, compare
    ("export-opset-zero", ["export", "{run}", "--opset", "0"], [], "--opset"),
    ("export-no-run", ["export", "{tmp}/norun"], [], "is not a run or model directory"),
    ("report-no-run", ["report", "{tmp}/norun"], [], "is not a run directory"),
    ("compare-no-run", ["compare", "{tmp}/norun"], [], "is not a run directory"),
    # commands for other kinds of run
    ("generate-on-a-classifier", ["generate", "{run}"], [], "needs a language_modeling run"),
    ("transcribe-on-a-classifier", ["transcribe", "{run}", "{tmp}/missing.wav"], [], "needs a speech_recognition run"),
    ("translate-on-a-classifier", ["translate", "{run}", "hello"], [], "translation run"),
    ("neighbors-on-a-classifier", ["neighbors", "{run}", "word"], [], "needs a word_embeddings run"),
    ("neighbors-without-word", ["neighbors", "{run}"], [], "give either a WORD"),
    ("sample-on-a-classifier", ["sample", "{run}"], [], "image_generation run"),
    ("search-on-a-classifier", ["search", "{run}", "--text", "a 7", "--images", "{tmp}"], [],
     "search needs a image_text_retrieval run"),
    ("predict-labels-on-a-classifier", ["predict", "{run}", "{tmp}/ok.png", "--labels", "a 3"], ["ok.png"],
     "takes no option labels per call"),
    ("sample-n-zero", ["sample", "{run}", "--n", "0"], [], "argument --n"),
    ("video-missing-input", ["video", "{run}", "{tmp}/missing.avi", "{tmp}/out.mp4"], [], "no such video file"),
    ("video-not-a-video", ["video", "{run}", "{tmp}/clip.avi", "{tmp}/out.mp4"], ["clip.avi"],
     "cannot open as a video"),
    ("video-every-zero", ["video", "{run}", "{tmp}/clip.avi", "{tmp}/out.mp4", "--every", "0"], ["clip.avi"],
     "argument --every"),
    # the command line itself
    ("recipes-show-unknown", ["recipes", "show", "nope"], [], "unknown recipe 'nope'"),
    ("unknown-command", ["trian", "digits-cnn"], [], "invalid choice: 'trian'"),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    import modelforge

    return modelforge.train("digits-cnn", TINY_TRAIN, run_dir=tmp_path_factory.mktemp("bad-input") / "run").directory


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in sorted(root.rglob("*"))}


def _argv(template: list[str], values: dict[str, object]) -> list[str]:
    return [part.format(**values) for part in template]


def _run(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """Exit code, stderr and the warnings a user would also see on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code
    shown = [str(w.message) for w in caught if not issubclass(w.category, (DeprecationWarning,
                                                                         PendingDeprecationWarning))]
    return code, capsys.readouterr().err, shown


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "files", "expected"), [pytest.param(a, f, e, id=i) for i, a, f, e in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, files, expected, tiny_run, busy_port, tmp_path,
                                                         monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)  # default runs/ and outputs land here, where the snapshot can see them
    for name in files:
        FILES[name](tmp_path)
    values = {"tmp": tmp_path, "run": tiny_run, "busy_port": busy_port, "free_port": _free_port()}
    before = _snapshot(tmp_path, tiny_run)
    caplog.set_level(logging.WARNING)
    code, err, shown = _run(_argv(argv, values), capsys)
    lines = err.strip().splitlines() + shown + [r.getMessage() for r in caplog.records]
    assert code == 2, err
    assert len(lines) == 1, lines
    assert lines[0].startswith("modelforge: error: ") and "Traceback" not in err
    assert expected in lines[0]
    assert _snapshot(tmp_path, tiny_run) == before


@pytest.mark.parametrize("case_id", ["predict-decompression-bomb", "serve-port-in-use", "lr-inf", "run-dir-is-a-file"])
def test_a_few_cases_through_a_real_process(case_id, tiny_run, busy_port, tmp_path, cli):
    argv, files, expected = next((a, f, e) for i, a, f, e in CASES if i == case_id)
    for name in files:
        FILES[name](tmp_path)
    values = {"tmp": tmp_path, "run": tiny_run, "busy_port": busy_port, "free_port": _free_port()}
    before = _snapshot(tmp_path, tiny_run)
    result = cli(*_argv(argv, values), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert _snapshot(tmp_path, tiny_run) == before
