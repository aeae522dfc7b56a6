"""Video classification task: clip folders with bad files (skip-with-count or fail), the same clip through training
and prediction, the Conv3d layout, report samples, ONNX parity, and the motion overlay of `modelforge video`."""

import logging

import numpy as np
import pytest
import torch

from modelforge.core.errors import DataError
from modelforge.data.builtin.moving_digits import ClipParams, render_clip
from modelforge.data.formats.video import read_video, write_video
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.vision.video_classification import VideoClassification, frames_to_clip

CLASSES = {"right": 2, "static": 9}


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """root/<class>/clip_i.mkv (lossless FFV1) of a bright square moving right or standing still, plus one corrupt
    and one truncated video."""
    root = tmp_path_factory.mktemp("clips")
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 8:20] = 255
    for name, label in CLASSES.items():
        for i in range(4):
            clip = render_clip(np.random.default_rng(i), digit, label, ClipParams(frames=12, size=32))
            write_video(root / name / f"clip_{i}.mkv", clip)
    (root / "static" / "junk.avi").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    good = (root / "right" / "clip_0.mkv").read_bytes()
    (root / "right" / "cut.mkv").write_bytes(good[: len(good) // 3])
    return root


def _task(root, **data):
    """The folder's clips, every one sampled while indexing (check_clips=decode, the default), so the truncated one is
    skipped."""
    raw = {"name": "v", "task": "video_classification",
           "data": {"source": "folder", "path": str(root), "num_frames": 4, "image_size": 16, "channels": 1,
                    "val_size": 0, "test_size": 2, **data},
           "model": {"name": "video_cnn", "channels": [4, 8]}}
    return VideoClassification(load_recipe(raw))


def test_folder_clips_skip_bad_files_with_a_count(clip_folder, caplog):
    task = _task(clip_folder)
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        splits = task.datasets()
    # junk.avi cannot be opened; cut.mkv (a third of a file) either fails to open or yields no frames
    assert splits.summary["skipped"] == 2
    assert "junk.avi" in caplog.text and "cut.mkv" in caplog.text
    assert len(splits.train) + len(splits.test) == 8 and splits.summary["classes"] == 2
    clips, labels = splits.train.get_batch(range(len(splits.train)))
    assert clips.shape[1:] == (4, 1, 16, 16) and clips.dtype == torch.uint8
    assert task.labels == ["right", "static"] and set(labels.tolist()) <= {0, 1}
    pixels = clips.float().div(255).transpose(1, 2).reshape(len(clips), 1, -1)  # what the in-memory path computed
    assert task.state_dict_["mean"] == pytest.approx(pixels.mean(dim=(0, 2)).tolist(), abs=1e-6)
    assert task.state_dict_["std"] == pytest.approx(pixels.std(dim=(0, 2)).tolist(), abs=1e-6)
    batch = task.normalize(clips[:2])
    assert batch.shape == (2, 1, 4, 16, 16)  # (B, C, T, H, W): what Conv3d takes
    model = task.build_model()
    assert model(batch).shape == (2, 2)


def test_header_check_leaves_a_truncated_clip_to_its_first_read_which_stops_with_one_line(clip_folder, monkeypatch):
    from modelforge.data.formats.video import read_video_folder
    from modelforge.data.lazy_video import ClipFileDataset
    from modelforge.tasks.vision import video_classification
    from modelforge.training.batches import epoch_order, iterate

    monkeypatch.setattr(video_classification, "sample_clip_frames", lambda *a: pytest.fail("indexing sampled a clip"))
    with pytest.raises(DataError) as info:  # the training statistics are its first read
        _task(clip_folder, check_clips="header", test_size=0).datasets()
    assert "cut.mkv: truncated video" in str(info.value) and "data.check_clips=decode" in str(info.value)
    folder = read_video_folder(clip_folder, on_error="skip")  # what the header check lets through
    assert "cut.mkv" in {path.name for path, _ in folder.clips} and len(folder.clips) == 9
    dataset = ClipFileDataset([p for p, _ in folder.clips], [y for _, y in folder.clips], 4, 1, 16)
    assert not [v for v in vars(dataset).values() if isinstance(v, np.ndarray) and v.dtype == np.uint8]
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            list(iterate(dataset, epoch_order(9, 3, 0, 0, shuffle=False), torch.utils.data.default_collate, workers))
        message = str(info.value)
        assert "cut.mkv: truncated video" in message and "data.check_clips=decode" in message and "\n" not in message


def test_folder_fails_on_the_first_bad_file_when_asked(clip_folder):
    with pytest.raises(DataError, match=r"(junk\.avi|cut\.mkv): "):
        _task(clip_folder, on_error="fail").datasets()


def test_prediction_reads_a_video_file_like_training_did(clip_folder):
    task = _task(clip_folder)
    splits = task.datasets()
    path = clip_folder / "right" / "clip_1.mkv"
    clip = frames_to_clip(read_video(path), 1, 16)[[1, 4, 7, 10]]  # sample_indices(12, 4)
    stored = torch.cat([part.get_batch(range(len(part)))[0] for part in (splits.train, splits.test)]).numpy()
    assert sum(np.array_equal(clip, c) for c in stored) == 1  # the clip as training stored it
    model = task.build_model().eval()
    with torch.no_grad():
        from_path = task.postprocess(model(task.preprocess([str(path)])))
        from_frames = task.postprocess(model(task.preprocess([clip])))
    assert from_path == from_frames and from_path[0]["label"] in task.labels
    with pytest.raises(DataError, match=r"junk\.avi: cannot open as a video"):
        task.preprocess([str(clip_folder / "static" / "junk.avi")])
    with pytest.raises(DataError, match=r"missing\.avi: no such video file"):
        task.preprocess([str(clip_folder / "missing.avi")])


def test_report_samples_and_onnx_parity(clip_folder, tmp_path):
    import onnxruntime as ort

    from modelforge.artifacts.export import export_onnx
    from modelforge.artifacts.model_dir import save_artifact

    task = _task(clip_folder)
    splits = task.datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    view = task.report_samples(model, splits, 4)
    assert view.png.startswith(b"\x89PNG")

    save_artifact(tmp_path / "model", task.recipe, task, model)
    result = export_onnx(tmp_path)
    assert list(result.inputs) == ["clip"] and result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = task.normalize(splits.train.get_batch(range(5))[0])
    with torch.no_grad():
        expected = model(x).numpy()
    (actual,) = session.run(None, {"clip": x.numpy()})
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_motion_overlay_boxes_the_moving_square():
    from modelforge.video_annotate import MotionOverlay

    overlay = MotionOverlay(min_area=0.001)
    frame = np.full((120, 160, 3), 90, dtype=np.uint8)
    for _ in range(30):  # learn the empty background
        heat, boxes = overlay.update(frame)
    assert boxes == [] and heat.max() == 0
    moved = frame.copy()
    moved[40:70, 100:130] = 250
    heat, boxes = overlay.update(moved)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert abs(x - 100) <= 3 and abs(y - 40) <= 3 and abs(w - 30) <= 6 and abs(h - 30) <= 6
    assert heat[55, 115] == 1.0 and heat[10, 10] == 0.0
    drawn = overlay.draw(moved, heat, boxes)
    assert drawn.shape == moved.shape and not np.array_equal(drawn, moved)



def test_train_and_val_folders_without_test_hold_the_test_split_out_of_train(clip_folder, tmp_path):
    import shutil

    for split, picks in (("train", range(3)), ("val", range(3, 4))):
        for name in CLASSES:
            for i in picks:
                (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(clip_folder / name / f"clip_{i}.mkv", tmp_path / split / name)
    splits = _task(tmp_path).datasets()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 2)  # data.test_size=2 of train/
