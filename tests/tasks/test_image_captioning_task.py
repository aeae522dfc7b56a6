"""Image captioning: the captioner's cached step decoding equals its teacher-forced decoder, beam search over image
memory reorders its caches correctly, the metrics are the libraries' own, the nearest-caption baseline copies the
closest training image's caption, and the task trains, evaluates, saves and captions a tiny set of files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from captioning_data import caption_folder, square_picture

from modelforge.core.errors import DataError
from modelforge.core.registry import build
from modelforge.tasks.baselines import nearest_caption, verdict
from modelforge.tasks.beam_search import CachedStepDecoder, SearchSettings, beam_search, greedy_search
from modelforge.tasks.multimodal.captioning_metrics import caption_scores, normalise_caption

TINY = {"vocab_size": 30, "image_size": 16, "widths": [4, 8], "dim": 16, "num_layers": 1, "num_decoder_layers": 2,
        "num_heads": 2, "mlp_hidden": 32, "dropout": 0.0, "max_positions": 12}
SETTINGS = SearchSettings(bos_id=2, eos_id=3, banned_ids=(0, 1, 2))


@pytest.fixture(scope="module")
def captioner():
    torch.manual_seed(0)
    return build("model", "image_captioner", **TINY).eval()


def _images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


class UncachedDecoder:
    """Reference step decoder: re-runs the whole prefix through ``decode`` each step (no caches to reorder)."""

    def __init__(self, model, memory):
        self.model, self.memory, self.prefix = model, memory, None

    def step(self, tokens):
        column = tokens.unsqueeze(1)
        self.prefix = column if self.prefix is None else torch.cat([self.prefix, column], dim=1)
        return self.model.decode(self.prefix, self.memory)[:, -1]

    def select(self, index, within_source=False):
        self.memory = self.memory.index_select(0, index)
        if self.prefix is not None:
            self.prefix = self.prefix.index_select(0, index)


@torch.no_grad()
def test_cached_steps_give_the_teacher_forced_logits(captioner):
    images = _images(3)
    tokens = torch.randint(4, 30, (3, 6), generator=torch.Generator().manual_seed(1))
    full = captioner(images, tokens)
    decoder = CachedStepDecoder(captioner, captioner.encode(images), None, max_steps=6)
    stepped = torch.stack([decoder.step(tokens[:, t]) for t in range(6)], dim=1)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    owner = torch.tensor([2, 0, 0, 1])  # several captions of one image decode against one encoding of it
    shared = captioner(images, tokens[[0, 1, 2, 0]], owner)
    torch.testing.assert_close(shared, captioner(images[owner], tokens[[0, 1, 2, 0]]), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_beam_search_over_image_memory_matches_an_uncached_reference(captioner):
    images = _images(4, seed=2)
    memory = captioner.encode(images)
    greedy = greedy_search(CachedStepDecoder(captioner, memory, None, 11), 4, SETTINGS, 11)
    assert beam_search(CachedStepDecoder(captioner, memory, None, 11), 4, SETTINGS, 11) == greedy  # one beam
    wide = SearchSettings(bos_id=2, eos_id=3, banned_ids=(0, 1, 2), beam_size=3, length_penalty=0.6)
    cached = beam_search(CachedStepDecoder(captioner, memory, None, 11), 4, wide, 11)
    assert cached == beam_search(UncachedDecoder(captioner, memory), 4, wide, 11)
    assert all(0 < len(row) <= 11 and not {0, 1, 2, 3} & set(row) for row in cached)


def test_caption_scores_are_sacrebleu_and_pycocoevalcap_on_normalised_words():
    refs = [["A red square left of a 7.", "a red square to the left of a 7"], ["two circles above a blue 3"]]
    perfect = caption_scores(refs, ["a red square left of a 7", "two circles above a blue 3"])
    wrong = caption_scores(refs, ["a green circle", "a white 9 below"])
    assert perfect["bleu4"] == pytest.approx(100.0) and wrong["bleu4"] < 20
    assert perfect["cider"] > wrong["cider"] >= 0
    assert normalise_caption("A Red square, left.") == "a red square left"
    from pycocoevalcap.cider.cider import Cider

    library, _ = Cider().compute_score({0: ["a red square left", "a square"]}, {0: ["a red square"]})
    assert caption_scores([["A red square, left.", "A square"]], ["a red Square"])["cider"] == pytest.approx(library)
    with pytest.raises(ValueError, match="2 outputs but 1 reference"):
        caption_scores([["a"]], ["a", "b"])


def test_nearest_caption_baseline_copies_the_closest_training_images_first_caption(monkeypatch):
    from modelforge.tasks import baselines

    train_images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 100, 250)])
    test_images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (240, 10, 90)])
    seen = {}

    def metrics(references, outputs):
        seen.update(references=references, outputs=outputs)
        return {"bleu4": 12.0, "cider": 0.5}

    def split(images, captions):
        return SimpleNamespace(pixels=lambda indices: images[list(indices)], captions=captions)

    splits = SimpleNamespace(train=split(train_images, [["dark", "black"], ["grey"], ["white", "bright"]]),
                             test=split(test_images, [["w"], ["d"], ["g"]]))
    result = nearest_caption(SimpleNamespace(caption_metrics=metrics), splits)
    assert seen["outputs"] == ["white", "dark", "grey"] and seen["references"] == [["w"], ["d"], ["g"]]
    monkeypatch.setattr(baselines, "NEAREST_CHUNK_BYTES", 4 * 3 * 4 * 4)  # one training image per chunk
    nearest_caption(SimpleNamespace(caption_metrics=metrics), splits)
    assert seen["outputs"] == ["white", "dark", "grey"]
    tied = split(torch.stack([train_images[1], train_images[1], train_images[0]]), [["first"], ["second"], ["x"]])
    nearest_caption(SimpleNamespace(caption_metrics=metrics), SimpleNamespace(train=tied, test=splits.test))
    assert seen["outputs"][2] == "first"  # equally near across chunks: the first, as one argmin would pick
    assert result["test_cider"] == 0.5 and result["test_bleu4"] == 12.0 and result["train_rows"] == 3
    assert result["compared"] == ["test_cider", "test_bleu4"]
    assert verdict({"test_cider": 0.8}, result).startswith("the model beats the baseline (caption of the nearest")
    assert "LOSES" in verdict({"test_cider": 0.2}, result) and "no test_cider" in verdict({}, result)


def test_nearest_caption_compares_at_most_max_train_candidates_each_decoded_once_per_query_chunk(monkeypatch):
    from modelforge.tasks import baselines

    train_images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 60, 120, 180, 240)])
    decoded: list[int] = []

    def pixels(indices):
        decoded.extend(indices)
        return train_images[list(indices)]

    train = SimpleNamespace(pixels=pixels, captions=[[f"v{v}"] for v in (0, 60, 120, 180, 240)])
    test = SimpleNamespace(pixels=lambda i: train_images[[4, 1, 0]][list(i)], captions=[["a"], ["b"], ["c"]])
    seen = {}
    monkeypatch.setattr(baselines, "MAX_TRAIN", 3)  # candidates: training images 0, 2 and 4
    monkeypatch.setattr(baselines, "NEAREST_QUERIES", 2)  # two query chunks
    result = nearest_caption(SimpleNamespace(caption_metrics=lambda r, o: seen.update(outputs=o) or {"cider": 0.1}),
                             SimpleNamespace(train=train, test=test))
    assert result["train_rows"] == 3 and seen["outputs"] == ["v240", "v0", "v0"]  # image 1 (60) is no candidate
    assert sorted(decoded) == [0, 0, 0, 2, 2, 4, 4]  # the probe of image 0, then each candidate once per chunk


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    root = tmp_path_factory.mktemp("captions")
    csv = caption_folder(root)
    recipe = load_recipe("scenes-captioner", [f"data.path={csv}", "data.image_size=16", "data.val_fraction=0.2",
                                              "data.test_fraction=0.2", "model.widths=[4,8]", "model.dim=16",
                                              "model.num_heads=2", "model.mlp_hidden=32", "data.decoding.beam_size=2"])
    task = get_task(recipe.task)(recipe)
    splits = task.datasets()
    torch.manual_seed(0)
    model = task.build_model()
    return root, recipe, task, splits, model


def test_the_task_reads_files_trains_with_teacher_forcing_and_evaluates(trained):
    _, recipe, task, splits, model = trained
    assert recipe.data.source == "files" and "captions.csv" in splits.summary["found"]
    total = sum(len(getattr(splits, s).captions) for s in ("train", "val", "test"))
    assert total == 24 and len(splits.train) == len(splits.train.captions)  # a row is an image
    batch = splits.train.get_batch([3, 0, 1, 2])
    assert batch["images"].dtype == torch.uint8 and batch["tgt"][:, 0].eq(task.state()["bos_id"]).all()
    assert batch["owner"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # every caption of each image, after its image
    words = task.decode_captions(batch["tgt"][:, 1:].tolist())
    assert words[:2] == [" ".join(c.lower().split()) for c in splits.train.captions[3]]
    held = splits.test.get_batch([1, 0])
    assert held["owner"].tolist() == [0, 1] and held["references"] == [splits.test.captions[1], splits.test.captions[0]]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = task.training_step(model, batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    metrics = task.evaluate(model.eval(), [splits.test.get_batch(list(range(len(splits.test))))])
    assert {"loss", "bleu4", "cider", "bleu4_greedy", "cider_greedy"} <= set(metrics)
    assert metrics["samples"] and all(isinstance(s["output"], str) for s in metrics["samples"])
    report = task.report_samples(model, splits, 3)
    assert report.png.startswith(b"\x89PNG") and report.html.count("<tr>") == 4


def test_a_saved_captioner_captions_paths_bytes_and_refuses_bad_inputs(trained, tmp_path):
    from modelforge.artifacts.model_dir import save_artifact
    from modelforge.artifacts.predictor import Predictor

    root, recipe, task, _, model = trained
    save_artifact(tmp_path / "model", recipe, task, model.eval())
    loaded = Predictor(tmp_path)
    picture = root / "images" / "000.png"
    by_path = loaded.predict([str(picture)])[0]["caption"]
    assert by_path == task.forward(model, task.preprocess([picture]))[0]
    assert loaded.predict([picture.read_bytes()])[0]["caption"] == by_path
    assert loaded.predict([square_picture("red", True, size=48)], beam_size=1)[0]["caption"] == \
        loaded.predict([square_picture("red", True, size=48)], beam_size=1, length_penalty=0.0)[0]["caption"]
    with pytest.raises(DataError, match="not an image file"):
        loaded.predict([str(root / "missing.png")])
    with pytest.raises(DataError, match="not a readable image"):
        loaded.predict([b"not a png"])
    with pytest.raises(DataError, match="give an image"):
        loaded.predict([3])


def test_export_writes_encoder_and_decoder_graphs_that_caption_like_pytorch(trained, tmp_path):
    from modelforge.artifacts.model_dir import save_artifact
    from modelforge.artifacts.predictor import Predictor

    _, recipe, task, _, model = trained
    save_artifact(tmp_path / "model", recipe, task, model.eval())
    result = Predictor(tmp_path).export()
    assert {Path(g.path).name for g in result.graphs} == {"model.encoder.onnx", "model.decoder.onnx"}
    assert all(Path(g.path).exists() for g in result.graphs) and result.max_abs_diff < 1e-4
    assert any("greedy captions with onnxruntime equal PyTorch's" in note for note in result.notes)


def test_data_limit_takes_an_even_spread_of_every_split(trained):
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    root = trained[0]
    recipe = load_recipe("scenes-captioner", [f"data.path={root / 'captions.csv'}", "data.image_size=16",
                                              "data.val_fraction=0.2", "data.test_fraction=0.2", "data.limit=2"])
    splits = get_task(recipe.task)(recipe).datasets()
    assert [len(getattr(splits, s).captions) for s in ("train", "val", "test")] == [2, 2, 2]


def test_train_and_val_folders_without_test_hold_the_test_split_out_of_train(tmp_path):
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    caption_folder(tmp_path / "photos" / "train", count=20)
    caption_folder(tmp_path / "photos" / "val", count=6)
    recipe = load_recipe("scenes-captioner", [f"data.path={tmp_path / 'photos'}", "data.image_size=16",
                                              "data.test_fraction=0.25"])
    splits = get_task(recipe.task)(recipe).datasets()
    assert len(splits.val) == 6 and splits.test is not None and len(splits.train) + len(splits.test) == 20
    assert splits.summary["val_origin"] == "photos/val" and splits.summary["test_origin"].startswith("split off")
