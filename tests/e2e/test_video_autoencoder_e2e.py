"""The video and autoencoder recipes through the real CLI: a few training steps each, prediction on a video file,
`modelforge video` on a short generated clip (frame count and size of the written video), and bad input."""

import json

import numpy as np
import pytest

from modelforge.data.formats.video import probe_video, read_video, write_video

TINY = ["train.max_steps=2", "train.batch_size=8", "train.progress=off"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 20-frame 48×64 RGB clip of a bright square moving right (a short stand-in for a real video)."""
    frames = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    for t in range(20):
        frames[t, 16:32, 2 + 2 * t : 18 + 2 * t] = 230
    return write_video(tmp_path_factory.mktemp("video") / "square.avi", frames, fps=8)


def test_moving_digits_trains_predicts_a_file_and_annotates_a_video(cli, tmp_path, clip, capsys):
    run_dir = tmp_path / "moving-digits"
    data = ["data.num_train=40", "data.num_val=10", "data.num_test=20"]
    result = cli("train", "moving-digits", *data, *TINY, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "test_accuracy:" in result.stdout and (run_dir / "model" / "model.safetensors").exists()

    # predict and video run in-process: the same CLI code (`main`), without paying another interpreter start-up
    from modelforge.cli import main

    assert main(["predict", str(run_dir), str(clip)]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    motions = json.loads((run_dir / "model" / "task.json").read_text())["labels"]
    assert out["input"] == str(clip) and out["label"] in motions and len(out["top"]) == 5

    target, snapshot = tmp_path / "annotated.mp4", tmp_path / "frame.png"
    assert main(["video", str(run_dir), str(clip), str(target), "--snapshot", str(snapshot)]) == 0
    # the default window is the 16-frame training clip: predictions from frame 16 to 20
    assert f"wrote {target} (20 frames, 64x48 at 8 fps; 5 predictions)" in capsys.readouterr().out
    info = probe_video(target)
    assert (info.frame_count, info.width, info.height) == (20, 64, 48)
    assert read_video(target).shape == (20, 48, 64, 3)
    from PIL import Image

    shot = np.asarray(Image.open(snapshot).convert("RGB"))  # frame 10, lossless: the banner's white text on black
    assert shot.shape == (48, 64, 3)
    assert ((shot > 200).all(-1) & (read_video(clip)[10] < 40).all(-1)).sum() > 30

    # a corrupt video is one line naming the file, exit 2
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    assert main(["predict", str(run_dir), str(junk)]) == 2
    assert main(["video", str(run_dir), str(junk), str(tmp_path / "never.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("junk.mp4: cannot open as a video" in line for line in err)
    assert not (tmp_path / "never.mp4").exists() and not list(tmp_path.glob(".never*"))


@pytest.mark.parametrize(("recipe", "extra"), [("mnist-autoencoder", []),
                                               ("mnist-denoising", ["data.noise=salt_pepper"])])
def test_autoencoder_recipes_train_through_cli(tmp_path, capsys, recipe, extra):
    # in-process `main` (the CLI's own entry point): a subprocess per recipe would spend ~10 s importing torch
    from modelforge.cli import main

    run_dir = tmp_path / recipe
    data = ["data.limit=64", "data.eval_limit=32", "data.val_size=32"]
    assert main(["train", recipe, *data, *extra, *TINY, "--run-dir", str(run_dir)]) == 0
    stdout = capsys.readouterr().out
    for key in ("test_psnr:", "test_ssim:", "test_pca_psnr:", "test_pca_ssim:"):
        assert key in stdout
    assert ("test_noisy_psnr:" in stdout) == (recipe == "mnist-denoising")
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert 0 < metrics["test_pca_psnr"] < 100 and -1 <= metrics["test_ssim"] <= 1
    assert (run_dir / "plots" / "sample_predictions.png").stat().st_size > 1000

    # predict on an image file: the reconstruction is written beside it as a PNG, its path printed
    from PIL import Image

    digit = tmp_path / "digit.png"
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)).save(digit)
    assert main(["predict", str(run_dir), str(digit)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["reconstruction"] == str(tmp_path / "digit.reconstruction.png")
    with Image.open(tmp_path / "digit.reconstruction.png") as img:
        assert img.size == (28, 28)
