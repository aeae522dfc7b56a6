"""Under torchrun each rank reads only its own share of the data: 2-process DDP runs of the real CLI
(`modelforge train RECIPE --nproc 2`, gloo on CPU) with every item read recorded per rank — an image folder decoded
from disk per item, and the language model's windows gathered from its memory-mapped token file.

The trace comes from the test side only (read_trace.py, installed by a ``sitecustomize`` on the run's PYTHONPATH):
it wraps the datasets' item reads in every process, DataLoader workers included, and labels each read with the
phase it happened in (training, evaluation, the image statistics, anything else).

Asserted for the training split: each rank reads exactly its contiguous share of every planned batch (the
single-process plan of ``epoch_order`` with the run's seed), nothing twice; the two ranks' sets are disjoint and
together exactly the items of the steps trained (with DataLoader workers, plus at most the batches they prefetched
after the last step — still each rank its own share); neither rank reads the whole split. The image folder's
mean/std sample is split between the ranks too (disjoint, together the whole sample).

Evaluation (of a task that declares ``Task.evaluation_gathers_ranks``: the classifier and the language model here)
is sharded too: at every evaluation each rank reads only its contiguous share of the validation batches (rank 0 the
first, rank 1 the second), the shares are disjoint and together every validation item once, and the logged
validation metrics equal a single-process evaluation of the saved model over the whole split.

The other formats read from disk — COCO detection, segmentation folders (pictures and DICOM scans), video folders —
split their statistics sample the same way; no training is needed to see it, so a spawned 2-process gloo group (not
torchrun) loads their data with the same trace on the datasets' item reads: each rank decodes its contiguous share,
and every rank gets the statistics one process computes, bit for bit. The image captioner's statistics sample of
the user's files is split the same way. In the same group the checks that open every file while a dataset loads
(COCO's ``check_images=header|decode``, a segmentation folder's pairs, a video folder's probe and
``check_clips=decode``, a speech manifest's WAV headers, the caption images' headers) are run on folders with bad
files in both ranks' shares, with the functions that open the files recorded: each rank opens only its contiguous
share (with ``on_error=fail`` up to its first bad file), and both ranks keep, skip and fail with exactly the files
and messages one process gives; an error raised while reading one rank's share is raised on every rank.
"""

import contextlib
import functools
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from PIL import Image

from modelforge import api
from modelforge.core.errors import DataError
from modelforge.data.lazy_images import STATISTICS_SAMPLE, spread
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.training.batches import PREFETCH_BATCHES, epoch_order

sys.path.insert(0, str(Path(__file__).parent))
import read_trace  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGES, VAL_SIZE, BATCH, STEPS, EVAL_EVERY = 200, 0.2, 32, 4, 2  # 160 training images: 5 batches an epoch


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        label, value = ("light", 190) if i % 2 else ("dark", 60)
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(np.clip(rng.normal(value, 30, (16, 16, 3)), 0, 255).astype(np.uint8)).save(
            root / label / f"{i:03d}.png")
    return root


def _traced_ddp_run(tmp_path, recipe, *overrides):
    """`modelforge train RECIPE ... --nproc 2` with the read trace on; returns (reads by (rank, phase), summary,
    the run's train.seed, the run directory)."""
    trace, run_dir = tmp_path / "trace", tmp_path / "run"
    trace.mkdir()
    hook = read_trace.write_sitecustomize(tmp_path / "hook")
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, read_trace.ENV: str(trace), "PYTHONUNBUFFERED": "1"}
    args = ["train", recipe, *overrides, f"train.max_steps={STEPS}", f"train.eval_every_steps={EVAL_EVERY}",
            "train.strategy=ddp", "train.progress=off", "--run-dir", str(run_dir), "--nproc", "2"]
    result = subprocess.run([sys.executable, "-m", "modelforge", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "results.json").read_text())["summary"]
    assert summary["steps"] == STEPS and summary["world_size"] == 2
    seed = yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["seed"]
    return read_trace.reads(trace), summary, seed, run_dir


def _check_training_shares(reads, plan, workers=0):
    """Each rank read exactly its share of the first STEPS planned batches (with workers, of up to the batches
    they prefetch after the last step), nothing twice; the ranks' sets are disjoint and together the steps' items."""
    assert len(plan) > STEPS  # the run stops inside the first epoch: some of the split is never trained on
    phases = {phase for _, phase in reads}
    assert {p for p in phases if p.startswith("train")} == {"train:0"}, phases
    trained = [reads.get((rank, "train:0"), []) for rank in (0, 1)]
    total = sum(len(b) for b in plan)
    for rank, mine in enumerate(trained):
        assert len(mine) == len(set(mine)), f"rank {rank} read an item twice"
        # each worker keeps PREFETCH_BATCHES batches decoded ahead: a stop mid-epoch may leave those decoded
        ahead = min(len(plan), STEPS + workers * PREFETCH_BATCHES)
        shares = [sorted(i for b in plan[:k] for i in _share(b, rank)) for k in range(STEPS, ahead + 1)]
        assert sorted(mine) in shares, f"rank {rank} read items outside its share of the planned batches"
        assert len(mine) < total, f"rank {rank} read the whole training split"
    assert not set(trained[0]) & set(trained[1]), "the ranks read overlapping items"
    steps_items = {i for b in plan[:STEPS] for i in b.tolist()}
    union = set(trained[0]) | set(trained[1])
    assert steps_items <= union and (workers or union == steps_items)


def _share(batch, rank):
    return batch.tensor_split(2)[rank].tolist()


def test_each_rank_decodes_a_disjoint_share_of_an_image_folder(photos, tmp_path):
    """Decoded by two DataLoader workers per rank (the default for large folders); the path without workers is the
    language model's below. The model has BatchNorm, whose running statistics each rank updates from its own share
    of a batch: the evaluation must still score the saved model's (rank 0's)."""
    workers = 2
    reads, summary, seed, run_dir = _traced_ddp_run(
        tmp_path, "image-classifier", f"data.path={photos}", "data.image_size=16", f"data.val_size={VAL_SIZE}",
        "data.test_size=0", "model.name=resnet20", "model.width=4", f"train.batch_size={BATCH}",
        "train.early_stopping=null", f"train.num_workers={workers}")
    n_train, n_val = summary["data"]["train_size"], summary["data"]["val_size"]
    _check_training_shares(reads, epoch_order(n_train, BATCH, seed, 0), workers)

    sampled = [reads.get((rank, "statistics"), []) for rank in (0, 1)]
    assert sampled[0] and sampled[1] and not set(sampled[0]) & set(sampled[1]), sampled
    assert sorted(sampled[0] + sampled[1]) == spread(n_train, STATISTICS_SAMPLE).tolist()
    task = get_task("image_classification")(load_recipe(str(run_dir / "recipe.yaml")))
    task.datasets()  # one process: the whole sample decoded here
    saved = json.loads((run_dir / "model" / "task.json").read_text())
    assert (saved["mean"], saved["std"]) == (task.state_dict_["mean"], task.state_dict_["std"])  # bit for bit

    touched = [reads.get((rank, "touch"), []) for rank in (0, 1)]  # the validation images checked at start-up
    assert not set(touched[0]) & set(touched[1]) and sorted(touched[0] + touched[1]) == list(range(n_val))

    _check_evaluation_shares(reads, run_dir, n_val)
    assert not reads.get((1, "other")), "rank 1 decoded items outside training, evaluation and statistics"


def _check_evaluation_shares(reads, run_dir, n_val):
    """Each rank read its own run of whole validation batches at every evaluation (two batches: one each), and the
    metrics logged at the last evaluation (of the final weights) are those of one process over the whole split."""
    assert n_val == IMAGES * VAL_SIZE and BATCH < n_val < 2 * BATCH  # batches of 32 and 8 rows
    evaluations = STEPS // EVAL_EVERY
    shares = [range(0, BATCH), range(BATCH, n_val)]
    for rank in (0, 1):
        assert Counter(reads[rank, "evaluate"]) == {i: evaluations for i in shares[rank]}, f"rank {rank}"
    logged = [row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if row["event"] == "eval"]
    assert [row["step"] for row in logged] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    single = api.evaluate(run_dir, split="val")  # this process: no process group, the whole split
    last = logged[-1]
    assert last["val_accuracy"] == single["val_accuracy"] and last["val_accuracy_se"] == single["val_accuracy_se"]
    for key in ("val_loss", "val_loss_se", "val_macro_f1"):
        assert last[key] == pytest.approx(single[key], rel=1e-5), key


def test_each_rank_reads_a_disjoint_share_of_the_language_models_token_windows(tmp_path):
    """The corpus is tokenized once into a memory-mapped token file; each rank gathers only its windows from it."""
    words = np.random.default_rng(0).choice(["the", "rank", "reads", "its", "own", "share", "of", "windows"], 4000)
    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10)) + "\n")
    block, batch = 16, 8
    reads, summary, seed, run_dir = _traced_ddp_run(
        tmp_path, "language-model", f"data.path={corpus}", "data.tokenizer.kind=char", f"data.block_size={block}",
        "data.eval_windows=8", "data.test_fraction=0", "model.dim=16", "model.num_layers=1", "model.num_heads=2",
        f"train.batch_size={batch}", "train.eval_batch_size=4")
    _check_training_shares(reads, epoch_order(summary["data"]["train_windows"], batch, seed, 0))
    assert summary["data"]["val_windows"] == 8  # two evaluation batches: one each
    evaluations = STEPS // EVAL_EVERY
    for rank, share in enumerate((range(0, 4), range(4, 8))):
        assert Counter(reads[rank, "evaluate"]) == {i: evaluations for i in share}, f"rank {rank}"
    last = [row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if row["event"] == "eval"][-1]
    single = api.evaluate(run_dir, split="val")  # this process: no process group, the whole split
    for key in ("val_loss", "val_perplexity", "val_bits_per_char"):
        assert last[key] == pytest.approx(single[key], rel=1e-5), key
    assert not reads.get((1, "other")), "rank 1 read windows outside training and evaluation"


def _statistics_folders(root: Path) -> dict[str, Path]:
    """Small folders of each format whose statistics are sampled from disk: 5 training images (COCO), 7 training
    pairs (segmentation pictures), 4 training scans (DICOM), 4 training clips (video)."""
    from modelforge.data.builtin.moving_digits import ClipParams, render_clip
    from modelforge.data.builtin.phantoms import write_dicom
    from modelforge.data.formats.segmentation_folder import write_mask, write_segmentation_folder
    from modelforge.data.formats.video import write_video

    rng = np.random.default_rng(0)
    (root / "coco" / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)).save(root / "coco" / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 30})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 16, 12], "area": 192})
    (root / "coco" / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}))
    masks = [(rng.random((20, 24)) < 0.3).astype(np.uint8) for _ in range(9)]
    write_segmentation_folder(root / "pictures", [rng.integers(0, 256, (20, 24, 3)).astype(np.uint8) for _ in masks],
                              masks, class_names=["background", "spot"])
    (root / "scans").mkdir()
    for i, peak in enumerate([900, 2500, 1200, 700, 1800, 1500]):
        write_dicom(root / "scans" / f"{i}.dcm", rng.integers(0, peak, (20, 20)).astype(np.uint16), uid_seed="reads",
                    instance_number=i + 1)
        write_mask(root / "scans" / f"{i}_mask.png", masks[i][:, :20])
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 8:20] = 255
    for label, name in ((2, "right"), (9, "static")):
        for i in range(3):
            write_video(root / "clips" / name / f"clip_{i}.mkv",
                        render_clip(np.random.default_rng(i), digit, label, ClipParams(frames=8, size=24)))
    from captioning_data import caption_folder

    return {"detection": root / "coco", "segmentation": root / "pictures", "dicom": root / "scans",
            "video": root / "clips", "captioner": caption_folder(root / "captions", count=7)}


def _statistics_tasks(folders: dict[str, Path]) -> dict[str, object]:
    held_out = ["data.val_size=1", "data.test_size=1"]
    recipes = {
        "detection": load_recipe("detector", [f"data.annotations={folders['detection'] / 'instances.json'}",
                                              "data.image_size=32", *held_out]),
        "segmentation": load_recipe("segmenter", [f"data.path={folders['segmentation']}", "data.image_size=16",
                                                  *held_out]),
        "dicom": load_recipe("segmenter", [f"data.path={folders['dicom']}", "data.image_size=16", *held_out]),
        "video": load_recipe("video-classifier", [f"data.path={folders['video']}", "data.num_frames=4",
                                                  "data.image_size=16", "data.val_size=0", "data.test_size=2"]),
        "captioner": load_recipe("scenes-captioner", [f"data.path={folders['captioner']}", "data.image_size=16",
                                                      "data.val_fraction=0", "data.test_fraction=0"]),
    }
    return {name: get_task(recipe.task)(recipe) for name, recipe in recipes.items()}


def _check_folders(root: Path) -> dict[str, Path]:
    """Six files of each format whose loading checks every file, with bad ones placed in either rank's share.

    COCO: 1.png is truncated (its header reads, its pixels do not), the JSON gives 4.png the wrong size. Segmentation:
    pair 1's mask has another size, pair 4's holds a class index past the classes. Video (a/clip_0..2, b/clip_0..2):
    a/clip_1 is cut in half (it opens, its later frames do not decode), b/clip_1 is not a video. Captions (headers
    only): image 004 is not a picture. Speech (WAV headers): 1.wav and 4.wav are not WAV files."""
    from captioning_data import caption_folder

    from modelforge.data.audio import write_wav
    from modelforge.data.builtin.moving_digits import ClipParams, render_clip
    from modelforge.data.formats.segmentation_folder import write_mask, write_segmentation_folder
    from modelforge.data.formats.video import write_video

    rng = np.random.default_rng(1)
    (root / "coco" / "images").mkdir(parents=True)
    images = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)).save(root / "coco" / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 12, "height": 10 + 2 * (i == 4)})
    truncated = root / "coco" / "images" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "coco" / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": [], "categories": [{"id": 1, "name": "box"}]}))
    masks = [(rng.random((10, 12)) < 0.3).astype(np.uint8) for _ in range(6)]
    write_segmentation_folder(root / "pairs", [rng.integers(0, 256, (10, 12, 3)).astype(np.uint8) for _ in masks],
                              masks, class_names=["background", "spot"])
    write_mask(root / "pairs" / "00001_mask.png", masks[1][:, :8])
    write_mask(root / "pairs" / "00004_mask.png", masks[4] * 3)
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 8:20] = 255
    for name in ("a", "b"):
        for i in range(3):
            write_video(root / "clips" / name / f"clip_{i}.mkv",
                        render_clip(np.random.default_rng(i), digit, 2, ClipParams(frames=8, size=24)))
    cut = root / "clips" / "a" / "clip_1.mkv"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (root / "clips" / "b" / "clip_1.mkv").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    captions = caption_folder(root / "captions", count=6)
    (root / "captions" / "images" / "004.png").write_bytes(b"not a picture")
    (root / "speech").mkdir()
    for i in range(6):
        write_wav(root / "speech" / f"{i}.wav", np.sin(np.arange(1600 + 100 * i) / 5).astype(np.float32), 16000)
    for i in (1, 4):
        (root / "speech" / f"{i}.wav").write_bytes(b"RIFF but no wave")
    return {"coco_checks": root / "coco", "pair_checks": root / "pairs", "clip_checks": root / "clips",
            "caption_checks": captions, "speech_checks": root / "speech"}


def _stem(path) -> str:
    """A checked file as folder/stem (an image and its mask are one pair)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name.split('.')[0].removesuffix('_mask')}"


def _traced(read, *functions) -> tuple[dict, list[str]]:
    """(what ``read()`` gives: kept files and skipped (path, reason) pairs, or the one-line error; the files that
    each (module, function name) of ``functions`` was given while it ran, in order)."""
    seen: list[str] = []

    def recording(function):
        def wrapper(path, *args, **kwargs):
            seen.append(_stem(path)) if _stem(path) not in seen else None
            return function(path, *args, **kwargs)
        return wrapper

    with contextlib.ExitStack() as patches:
        for module, name in functions:
            patches.enter_context(mock.patch.object(module, name, recording(getattr(module, name))))
        try:
            outcome = read()
        except DataError as exc:
            outcome = {"error": str(exc)}
    return outcome, seen


def _load_checks(folders: dict[str, Path]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Every whole-folder check of ``_check_folders`` with on_error skip and fail: the outcomes, and per check the
    files this process opened for it. A collective under a process group: every rank runs the same checks."""
    from modelforge.data import lazy_speech
    from modelforge.data.audio import FeatureConfig
    from modelforge.data.formats import coco, image_captions, segmentation_folder, video
    from modelforge.data.formats.speech_manifest import SpeechRecord
    from modelforge.tasks.vision import video_classification

    def coco_check(mode, on_error):
        found = coco.read_coco(folders["coco_checks"] / "instances.json", on_error=on_error, check_images=mode)
        return {"kept": [image.file_name for image in found.images], "skipped": [list(s) for s in found.skipped]}

    def pair_check(on_error):
        found = segmentation_folder.read_segmentation_folder(folders["pair_checks"], on_error=on_error)
        return {"kept": [_stem(image) for image, _ in found.pairs], "skipped": [list(s) for s in found.skipped]}

    def clip_header_check(on_error):
        found = video.read_video_folder(folders["clip_checks"], on_error=on_error)
        return {"kept": [_stem(path) for path, _ in found.clips], "skipped": [list(s) for s in found.skipped]}

    def clip_decode_check(on_error):  # data.check_clips=decode over the clips the header check kept
        task = get_task("video_classification")(load_recipe("video-classifier", [
            f"data.path={folders['clip_checks']}", "data.num_frames=4", f"data.on_error={on_error}"]))
        task._skipped = []
        kept = task._decodable(video.read_video_folder(folders["clip_checks"], on_error="skip").clips)
        return {"kept": [_stem(path) for path, _ in kept], "skipped": [list(s) for s in task._skipped]}

    def caption_check(on_error):
        found = image_captions.read_caption_table(folders["caption_checks"], on_error=on_error)
        return {"kept": [_stem(path) for path in found.images], "captions": found.num_captions}

    def speech_check(on_error):
        records = [SpeechRecord(folders["speech_checks"] / f"{i}.wav", "a tone") for i in range(6)]
        kept, lengths, skipped = lazy_speech.index_recordings(records, FeatureConfig(), skip=on_error == "skip")
        return {"kept": [_stem(record.path) for record in kept], "lengths": lengths, "skipped": skipped}

    found = {}
    for on_error in ("skip", "fail"):
        found[f"captions {on_error}"] = _traced(functools.partial(caption_check, on_error),
                                                (image_captions, "image_size"))
        found[f"speech {on_error}"] = _traced(functools.partial(speech_check, on_error),
                                              (lazy_speech, "read_wav_header"))
        for mode, opens in (("header", "image_size"), ("decode", "load_image")):
            found[f"coco {mode} {on_error}"] = _traced(functools.partial(coco_check, mode, on_error), (coco, opens))
        found[f"pairs {on_error}"] = _traced(functools.partial(pair_check, on_error),
                                             (segmentation_folder, "image_size"))
        found[f"clips header {on_error}"] = _traced(functools.partial(clip_header_check, on_error),
                                                    (video, "probe_video"))
        found[f"clips decode {on_error}"] = _traced(functools.partial(clip_decode_check, on_error),
                                                    (video_classification, "sample_clip_frames"))
    return {name: outcome for name, (outcome, _) in found.items()}, {name: seen for name, (_, seen) in found.items()}


def _first_failures() -> list[list[str]]:
    """The errors rows_over_ranks raises over six items when items 1 and 4 cannot be read (one in each rank's share),
    then when item 4 alone cannot: every rank must raise the first one, as one process does, and none may wait in the
    gather for a rank that failed."""
    from modelforge.data.lazy_images import rows_over_ranks

    def row(index: int, bad: tuple[int, ...]) -> list[int]:
        if index in bad:
            raise DataError(f"item {index}: unreadable")
        return [index]

    found = []
    for bad in ((1, 4), (4,)):
        try:
            rows_over_ranks(np.arange(6), functools.partial(row, bad=bad))
            found.append(["no error"])
        except DataError as exc:
            found.append([type(exc).__name__, str(exc)])
    return found


def _opened_share(files: list[str], bad: set[str], rank: int, fail: bool) -> list[str]:
    """The files a rank checks: its contiguous share; with on_error=fail up to the first bad one of it."""
    share = np.array_split(np.array(files), 2)[rank].tolist()
    first_bad = next((at for at, file in enumerate(share) if file in bad), None)
    return share[: first_bad + 1] if fail and first_bad is not None else share


def _statistics_rank(rank: int, world_size: int, init_file: str, folders: dict[str, Path], trace: str) -> None:
    from modelforge.data.caption_pixels import FilePixels
    from modelforge.data.lazy_segmentation import SegmentationFileSet
    from modelforge.data.lazy_video import ClipFileDataset
    from modelforge.tasks.vision.detection import CocoImageSet

    os.environ.update({"RANK": str(rank), read_trace.ENV: trace})
    for dataset_class in (CocoImageSet, SegmentationFileSet, ClipFileDataset):
        read_trace._trace_reads(dataset_class)
    one = FilePixels.one  # the captioner's store decodes one image at a time
    FilePixels.one = lambda self, index: read_trace._record([index]) or one(self, index)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        states = {}
        for name, task in _statistics_tasks(folders).items():
            read_trace._phase[0] = name  # the only items datasets() decodes are its statistics sample's
            splits = task.datasets()
            states[name] = {**task.state_dict_, "train_size": len(splits.train)}
        states["checks"], states["opened"] = _load_checks(folders)
        states["failures"] = _first_failures()
        (Path(trace) / f"states{rank}.json").write_text(json.dumps(states))
    finally:
        dist.destroy_process_group()


def test_each_rank_reads_a_disjoint_share_of_the_statistics_samples_and_whole_folder_checks_of_every_format(tmp_path):
    folders = {**_statistics_folders(tmp_path / "data"), **_check_folders(tmp_path / "checks")}
    trace = tmp_path / "trace"
    trace.mkdir()
    # spawned, not forked: a fork of a process whose OpenMP threads already ran (an earlier test's forward) can hang
    group = mp.start_processes(_statistics_rank, args=(2, str(tmp_path / "init"), folders, str(trace)), nprocs=2,
                               join=False, start_method="spawn")
    try:  # one process, no process group: the whole sample decoded here
        single = {}
        for name, task in _statistics_tasks(folders).items():
            splits = task.datasets()
            single[name] = {**task.state_dict_, "train_size": len(splits.train)}
        checks = _load_checks(folders)[0]
        failures = _first_failures()
    finally:
        while not group.join():
            pass
    reads = read_trace.reads(trace)
    assert {name: state["train_size"] for name, state in single.items()} == {
        "detection": 5, "segmentation": 7, "dicom": 4, "video": 4, "captioner": 7}
    for name, state in single.items():
        sample = spread(state["train_size"], STATISTICS_SAMPLE)  # every training item: the folders are small
        for rank in (0, 1):
            assert sorted(reads[rank, name]) == np.array_split(sample, 2)[rank].tolist(), (name, rank)
            assert json.loads((trace / f"states{rank}.json").read_text())[name] == state, (name, rank)  # bit for bit
    assert single["dicom"]["value_max"] == 2499.0 and single["segmentation"]["channels"] == 3
    ranks = [json.loads((trace / f"states{rank}.json").read_text()) for rank in (0, 1)]
    _check_load_checks(checks, ranks)
    assert failures == [["DataError", "item 1: unreadable"], ["DataError", "item 4: unreadable"]]
    assert [state["failures"] for state in ranks] == [failures, failures]


def _check_load_checks(single: dict[str, dict], ranks: list[dict]) -> None:
    """Each rank opened only its contiguous share of the files of every whole-folder check, and both ranks kept,
    skipped and failed exactly as one process — with a bad file in the other rank's share."""
    coco_files, pair_files = [f"images/{i}" for i in range(6)], [f"pairs/{i:05d}" for i in range(6)]
    captions, speech = [f"images/{i:03d}" for i in range(6)], [f"speech/{i}" for i in range(6)]
    clips = [f"{name}/clip_{i}" for name in "ab" for i in range(3)]
    decodable = [clip for clip in clips if clip != "b/clip_1"]  # what the header check kept
    for on_error in ("skip", "fail"):
        fail = on_error == "fail"
        files = {f"coco header {on_error}": (coco_files, {"images/4"}), f"coco decode {on_error}": (coco_files, {
            "images/1", "images/4"}), f"pairs {on_error}": (pair_files, {"pairs/00001", "pairs/00004"}),
            f"clips header {on_error}": (clips, {"b/clip_1"}), f"clips decode {on_error}": (decodable, {"a/clip_1"}),
            f"captions {on_error}": (captions, {"images/004"}),
            f"speech {on_error}": (speech, {"speech/1", "speech/4"})}
        for name, (listed, bad) in files.items():
            for rank, state in enumerate(ranks):
                assert state["checks"][name] == single[name], (name, rank)
                assert state["opened"][name] == _opened_share(listed, bad, rank, fail), (name, rank)
    # what one process finds: the bad files of both shares, the first of them fatal under on_error=fail
    assert [Path(where).name for where, _ in single["coco decode skip"]["skipped"]] == ["1.png", "4.png"]
    assert [Path(where).name for where, _ in single["coco header skip"]["skipped"]] == ["4.png"]
    assert "4.png: image is 12x10 but the COCO file says 12x12" in single["coco header fail"]["error"]  # rank 1's
    assert "1.png" in single["coco decode fail"]["error"]
    assert single["pairs skip"]["kept"] == ["pairs/00000", "pairs/00002", "pairs/00003", "pairs/00005"]
    assert "00001_mask.png: mask is 8x10" in single["pairs fail"]["error"]  # rank 0's: rank 1 stops at 00004
    assert single["clips header skip"]["kept"] == decodable and "b/clip_1.mkv" in single["clips header fail"]["error"]
    assert [Path(where).name for where, _ in single["clips decode skip"]["skipped"]] == ["clip_1.mkv"]
    assert "a/clip_1.mkv: truncated video" in single["clips decode fail"]["error"]  # rank 0's, raised on rank 1 too
    assert single["captions skip"]["kept"] == [name for name in captions if name != "images/004"]
    assert "004.png" in single["captions fail"]["error"]  # found by rank 1 alone, raised by rank 0 too
    assert single["speech skip"]["kept"] == ["speech/0", "speech/2", "speech/3", "speech/5"]
    assert single["speech skip"]["lengths"] == [1600, 1800, 1900, 2100] and len(single["speech skip"]["skipped"]) == 2
    assert "1.wav" in single["speech fail"]["error"]
